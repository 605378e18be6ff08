"""AdamW with linear warm-up and decay, as BERT fine-tuning does it."""

from __future__ import annotations

import flax.traverse_util
import jax
import optax


def learning_rate_schedule(peak: float, total_steps: int, warmup_fraction: float) -> optax.Schedule:
  """Linear warm-up from 0 to `peak` over the first `warmup_fraction` of the steps, then linear decay to 0."""
  warmup = max(1, int(round(total_steps * warmup_fraction)))
  decay = max(1, total_steps - warmup)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), optax.linear_schedule(peak, 0.0, decay)], boundaries=[warmup])


def decay_mask(params):
  """True for the weights that get weight decay: matrices and embeddings, not biases or LayerNorm."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({
      path: not (path[-1] == "bias" or any("layernorm" in part.lower() for part in path))
      for path in flat
  })


def make_optimizer(cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer of one stage from its config block (learning_rate, warmup_fraction, weight_decay, ...)."""
  schedule = learning_rate_schedule(cfg.learning_rate, total_steps, cfg.warmup_fraction)
  chain = []
  if cfg.max_grad_norm:
    chain.append(optax.clip_by_global_norm(cfg.max_grad_norm))
  chain.append(optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=cfg.weight_decay, mask=decay_mask))
  return optax.chain(*chain), schedule


def global_norm(tree) -> jax.Array:
  return optax.tree.norm(tree)
