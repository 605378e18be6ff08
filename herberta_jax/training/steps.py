"""One pure, jittable train step per stage, and their evaluation steps.

Both train steps compute the loss as a weighted sum over rows divided by the batch's total weight, accumulated
over `accum_steps` micro-batches with `lax.scan`: accumulating gradients gives the same update as one large
batch, and the same result whatever the device count (the batch is sharded, the mean is global).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from herberta_jax.model import decoding
from herberta_jax.model import inputs as model_inputs
from herberta_jax.training.state import TrainState


def relation_loss_terms(model, params, batch, rng, deterministic: bool, entity_loss_weight: float = 0.0):
  """Sum of cross-entropies over the batch and the number of rows counted.

  `entity_loss_weight` > 0 adds, per row, that weight times the mean of the four entity-position
  cross-entropies of the auxiliary head (rows with a truncated entity add none).
  """
  rngs = None if deterministic else {"dropout": rng}
  weights = batch["valid"].astype(jnp.float32)
  with_entities = bool(entity_loss_weight)
  outputs = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                        deterministic=deterministic, rngs=rngs, with_entity_logits=with_entities)
  logits, entity_logits = outputs if with_entities else (outputs, None)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]) * weights
  if with_entities:
    targets = batch["spans"]  # already positions in the relation input
    entity_ce = optax.softmax_cross_entropy_with_integer_labels(jnp.swapaxes(entity_logits, 1, 2),
                                                                jnp.maximum(targets, 0)).mean(axis=-1)
    loss += entity_loss_weight * entity_ce * weights * jnp.all(targets >= 0, axis=-1)
  return jnp.sum(loss), jnp.sum(weights)


def tagger_loss_terms(model, build: Callable, params, batch, rng, deterministic: bool):
  """Mean of the four position cross-entropies, summed over rows; rows with a truncated entity get weight 0."""
  ids, mask, types, sentence_mask = build(batch["input_ids"], batch["attention_mask"], batch["label"])
  logits = model.apply({"params": params}, ids, mask, types, sentence_mask, deterministic=deterministic,
                       rngs=None if deterministic else {"dropout": rng})  # [B, L, 4]
  targets = model_inputs.shift_spans(batch["spans"])  # [B, 4]
  weights = (batch["valid"] & jnp.all(targets >= 0, axis=-1)).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(jnp.swapaxes(logits, 1, 2), jnp.maximum(targets, 0))
  return jnp.sum(ce.mean(axis=-1) * weights), jnp.sum(weights)


def make_train_step(loss_terms: Callable, schedule: optax.Schedule, accum_steps: int, *, rng_impl: str):
  """A train step `(state, batch) -> (state, metrics)` for a `loss_terms(params, batch, rng, deterministic)`.

  `state.rng` holds the raw data of a key of implementation `rng_impl` ("threefry2x32", "rbg", "unsafe_rbg").
  """

  def micro_batches(batch):
    def split(x):
      if x.shape[0] % accum_steps:
        raise ValueError(f"batch of {x.shape[0]} rows does not split into accum_steps={accum_steps} micro-batches")
      return x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:])
    return jax.tree.map(split, batch)

  def step(state: TrainState, batch):
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl=rng_impl), state.step)
    grad_fn = jax.value_and_grad(lambda p, b, r: loss_terms(p, b, r, False), has_aux=True)

    def accumulate(carry, indexed):
      index, micro = indexed
      loss_sum, weight_sum, grads = carry
      (loss, weight), g = grad_fn(state.params, micro, jax.random.fold_in(step_rng, index))
      return (loss_sum + loss, weight_sum + weight, jax.tree.map(jnp.add, grads, g)), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (loss_sum, weight_sum, grads), _ = jax.lax.scan(
        accumulate, (jnp.zeros(()), jnp.zeros(()), zeros), (jnp.arange(accum_steps), micro_batches(batch)))
    denominator = jnp.maximum(weight_sum, 1.0)
    grads = jax.tree.map(lambda g: g / denominator, grads)
    new_state = state.apply_gradients(grads)
    metrics = {
        "loss": loss_sum / denominator,
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": schedule(state.step),
    }
    return new_state, metrics

  return step


def relation_predictions(model, params, batch):
  """Predicted label ids [B] of the relation classifier."""
  logits = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], deterministic=True)
  return jnp.argmax(logits, axis=-1)


def relation_counts(model, params, batch, *, negative: int):
  """[true positives, predicted positives, gold positives] of the batch's relations, the negative label excluded
  (micro-F1 the TACRED way), summed on device over the batch's rows."""
  predicted, labels, valid = relation_predictions(model, params, batch), batch["label"], batch["valid"]
  predicted_positive = valid & (predicted != negative)
  gold_positive = valid & (labels != negative)
  hits = predicted_positive & gold_positive & (predicted == labels)
  return jnp.stack([hits.sum(), predicted_positive.sum(), gold_positive.sum()]).astype(jnp.int32)


def tagger_predictions(model, build: Callable, params, batch, *, max_span_len: int, disjoint: bool,
                       ordered: bool = False):
  """Best (e1, e2) token spans [B, 4] in relation-input positions, given each row's gold relation."""
  ids, mask, types, sentence_mask = build(batch["input_ids"], batch["attention_mask"], batch["label"])
  logits = model.apply({"params": params}, ids, mask, types, sentence_mask, deterministic=True)
  best = decoding.best_entity_pairs(logits, sentence_mask, max_span_len=max_span_len, top_m=1, disjoint=disjoint,
                                    ordered=ordered)
  predicted = jnp.stack([best["e1_start"][:, 0], best["e1_end"][:, 0], best["e2_start"][:, 0],
                         best["e2_end"][:, 0]], axis=-1)
  return predicted - model_inputs.TAGGER_SHIFT


def tagger_counts(model, build: Callable, params, batch, *, max_span_len: int, disjoint: bool, ordered: bool = False):
  """[exact entity-pair matches, rows, rows] of the valid rows: as Counts, F1 is then the exact-match rate."""
  predicted = tagger_predictions(model, build, params, batch, max_span_len=max_span_len, disjoint=disjoint,
                                 ordered=ordered)
  valid = batch["valid"]
  hits = valid & jnp.all(predicted == batch["spans"], axis=-1)
  return jnp.stack([hits.sum(), valid.sum(), valid.sum()]).astype(jnp.int32)
