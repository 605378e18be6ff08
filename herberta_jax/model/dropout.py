"""Dropout that spends 16 random bits per decision instead of 32.

flax's `nn.Dropout` draws a float32 uniform (one 32-bit word) per element. Dropout's random bits are a large
share of a BERT train step (the attention probabilities alone have batch x heads x length^2 elements per layer),
and 16 bits are plenty to decide one element: each 32-bit word is split into two 16-bit halves, each compared
with `round((1 - rate) * 65536)`. The kept fraction is that threshold / 65536 (within 1/131072 of `1 - rate`),
and kept elements are scaled by its inverse, so the expected output equals the input exactly.
`python bench/bench_rng.py` times it against flax's on the MiniLM train step.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_LEVELS = 1 << 16


class Dropout(nn.Module):
  """Zeroes each element with probability `rate` (quantised to 1/65536) when not `deterministic`; draws from
  the "dropout" rng collection, as flax's does."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    if not 0.0 <= self.rate < 1.0:
      raise ValueError(f"dropout rate must be in [0, 1), got {self.rate}")
    threshold = max(1, round((1.0 - self.rate) * _LEVELS))
    words = jax.random.bits(self.make_rng("dropout"), ((x.size + 1) // 2,), jnp.uint32)
    halves = lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:x.size].reshape(x.shape)
    keep = halves < jnp.asarray(threshold, jnp.uint16) if threshold < _LEVELS else jnp.ones(x.shape, bool)
    scale = jnp.asarray(_LEVELS / threshold, x.dtype)
    return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))
