"""Dropout masks made by hashing each element's position with a seed, the same inside a kernel and outside.

A kernel cannot call JAX's random generators, and storing the mask for the backward pass would cost the memory
traffic the kernels exist to save. So the mask is a pure function of (seed, flat index): the forward kernel, the
backward kernel and the pure-JAX reference all compute it, and agree bit for bit. The hash is two rounds of a
32-bit xorshift-multiply mixer (a bijection of uint32; its constants are from Chris Wellons' hash-prospector
search), first of the index and then of that xor the seed, so two seeds give unrelated masks rather than shifted
copies of one. Each decision compares 16 bits with `model.dropout`'s threshold and kept elements get its scale,
as `model.dropout.Dropout`'s do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from herberta_jax.model import dropout


def _mix(x: jax.Array) -> jax.Array:
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x21F0AAAD)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x735A2D97)
  return x ^ (x >> 15)


def keep(seed: jax.Array, index: jax.Array, rate: float) -> jax.Array:
  """Boolean keep-mask for uint32 flat indices `index` under a uint32 `seed` (a scalar or broadcastable)."""
  bits = _mix(_mix(index.astype(jnp.uint32)) ^ seed.astype(jnp.uint32))
  return (bits >> 16) < jnp.uint32(dropout.threshold(rate))


def dropped(x: jax.Array, keep_mask: jax.Array | None, rate: float) -> jax.Array:
  """`x` with the elements `keep_mask` drops zeroed and the others scaled up; `x` itself for a None mask."""
  return x if keep_mask is None else jnp.where(keep_mask, x * dropout.scale(rate), 0.0)


def seed_from(key: jax.Array) -> jax.Array:
  """A uint32 seed of shape (1,) from a JAX key (what a flax module's `make_rng` returns)."""
  return jax.random.bits(key, (1,), jnp.uint32)
