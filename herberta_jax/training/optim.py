"""AdamW with linear warm-up and decay, as BERT fine-tuning does it, optionally with layer-wise decay."""

from __future__ import annotations

import re

import flax.traverse_util
import jax
import optax

_LAYER = re.compile(r"layer_(\d+)")


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


def _layer_index(path) -> int | None:
  """The encoder layer a parameter path belongs to (`.../encoder/layer_3/...` -> 3), None outside the layers."""
  for part in path:
    if (match := _LAYER.fullmatch(part)):
      return int(match.group(1))
  return None


def layer_scales(params, layer_decay: float):
  """Each parameter's learning-rate factor under layer-wise decay: 1 for the heads and the pooler, `layer_decay`
  for the top encoder layer, its square for the one below, ..., and `layer_decay ** (layers + 1)` for the
  embeddings. The pretrained lower layers hold general features a small dataset should move least."""
  flat = flax.traverse_util.flatten_dict(params)
  depth = {path: _layer_index(path) for path in flat}
  num_layers = max((d for d in depth.values() if d is not None), default=-1) + 1

  def scale(path) -> float:
    if depth[path] is not None:
      return layer_decay ** (num_layers - depth[path])
    if "embeddings" in path:
      return layer_decay ** (num_layers + 1)
    return 1.0

  return flax.traverse_util.unflatten_dict({path: scale(path) for path in flat})


def scale_by_layer(layer_decay: float) -> optax.GradientTransformation:
  """Multiplies each update by its `layer_scales` factor (constants: the tree's paths fix them at trace time)."""
  def scale(updates, params=None):
    del params
    return jax.tree.map(lambda u, f: u * f, updates, layer_scales(updates, layer_decay))
  return optax.stateless(scale)


def make_optimizer(cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer of one stage from its config block (learning_rate, warmup_fraction, weight_decay, ...)."""
  schedule = learning_rate_schedule(cfg.learning_rate, total_steps, cfg.warmup_fraction)
  chain = []
  if cfg.max_grad_norm:
    chain.append(optax.clip_by_global_norm(cfg.max_grad_norm))
  chain.append(optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=cfg.weight_decay, mask=decay_mask))
  if cfg.layer_decay != 1.0:  # after AdamW: its normalised step (and weight decay) is what a layer's rate scales
    chain.append(scale_by_layer(cfg.layer_decay))
  return optax.chain(*chain), schedule


def global_norm(tree) -> jax.Array:
  return optax.tree.norm(tree)
