"""Dropout that spends 16 random bits per decision instead of 32.

flax's `nn.Dropout` draws a float32 uniform (one 32-bit word) per element. Dropout's random bits are a large
share of a BERT train step (the attention probabilities alone have batch x heads x length^2 elements per layer),
and 16 bits are plenty to decide one element: each 32-bit word is split into two 16-bit halves, each compared
with `round((1 - rate) * 65536)`. The kept fraction is that threshold / 65536 (within 1/131072 of `1 - rate`),
and kept elements are scaled by its inverse in float32, so the expected output equals the input up to one
rounding to the input's dtype. The words are drawn in the input's shape with the last axis halved, so with a
threefry key a batch axis split over devices splits the random bits too (XLA's partitioner does not split rbg's:
on 4 simulated CPU devices every device drew the whole batch's words).
`bench/bench_rng.py` timed it against flax's on the MiniLM train step (`git show 78d3b3b:bench/bench_rng.py`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

LEVELS = 1 << 16  # a keep decision compares 16 random bits with `threshold(rate)`
_RBG_IMPLS = ("rbg", "unsafe_rbg")


def threshold(rate: float) -> int:
  """The 16-bit keep threshold of a dropout rate: round((1 - rate) * LEVELS), at least 1; LEVELS keeps all."""
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
  return max(1, round((1.0 - rate) * LEVELS))


def scale(rate: float) -> float:
  """What a kept element is multiplied by: the inverse of the kept fraction."""
  return LEVELS / threshold(rate)


def random_words(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32 random words of `shape` from `key`. An rbg-family key on the CPU draws them with XLA's threefry bit
  generator instead of its default Philox (what `jax.random.bits` uses), much the cheaper there
  (`78d3b3b:bench/bench_rng.py --masks ours,philox`). Elsewhere, and for threefry2x32 keys, `jax.random.bits`."""
  if str(jax.random.key_impl(key)) in _RBG_IMPLS and jax.default_backend() == "cpu":
    _, words = lax.rng_bit_generator(jax.random.key_data(key), shape, jnp.uint32,
                                     algorithm=lax.RandomAlgorithm.RNG_THREE_FRY)
    return words
  return jax.random.bits(key, shape, jnp.uint32)


class Dropout(nn.Module):
  """Zeroes each element with probability `rate` (quantised to 1/65536) when not `deterministic`; draws from
  the "dropout" rng collection, as flax's does."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep_below = threshold(self.rate)
    *leading, last = x.shape or (1,)
    words = random_words(self.make_rng("dropout"), (*leading, (last + 1) // 2))
    halves = lax.bitcast_convert_type(words, jnp.uint16).reshape(*leading, 2 * words.shape[-1])
    halves = halves[..., :last].reshape(x.shape)  # an odd last axis leaves its last half unused
    keep = halves < jnp.asarray(keep_below, jnp.uint16) if keep_below < LEVELS else jnp.ones(x.shape, bool)
    scaled = (x.astype(jnp.float32) * scale(self.rate)).astype(x.dtype)
    return jnp.where(keep, scaled, jnp.zeros((), x.dtype))
