"""LayerNorm(dropout(h) + residual) in one pass: the tail of BERT's attention and feed-forward blocks.

Unfused, XLA writes the dropped-out `h`, the sum and the normalised rows in separate kernels (and the backward
pass reads them back). The kernel reads `h` and `residual` once and writes the output and two floats per row
(mean and 1/std); the backward kernel recomputes the mask and the normalised rows from those. Arithmetic is
float32 whatever the input dtype; outputs take `h`'s dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from herberta_jax.model.kernels import hashed_dropout
from herberta_jax.model.kernels.launch import (
  column_sums_spec,
  load_vector,
  over_batch,
  pallas_call,
  row_block,
  store_column_sums,
)

_BLOCK_ROWS = 16


def reference(h, residual, gamma, beta, seed, *, rate: float, eps: float):
  """The op in plain JAX: the mask of element (row, col) of the [rows, width] view is keep(seed, row * width + col)."""
  width = h.shape[-1]
  x = h.reshape(-1, width).astype(jnp.float32)
  if rate > 0.0:
    index = (lax.broadcasted_iota(jnp.uint32, x.shape, 0) * jnp.uint32(width)
             + lax.broadcasted_iota(jnp.uint32, x.shape, 1))
    x = hashed_dropout.dropped(x, hashed_dropout.keep(seed[0], index, rate), rate)
  z = x + residual.reshape(x.shape).astype(jnp.float32)
  centred = z - z.mean(-1, keepdims=True)
  normed = centred * lax.rsqrt((centred * centred).mean(-1, keepdims=True) + eps)
  y = normed * gamma.astype(jnp.float32) + beta.astype(jnp.float32)
  return y.astype(h.dtype).reshape(h.shape)


def dropout_add_layer_norm(h, residual, gamma, beta, seed, *, rate: float, eps: float, impl: str, mesh=None):
  """LayerNorm(dropout(h) + residual) over the last axis. `seed`: uint32 of shape (1,) (unused when rate is 0).
  `mesh`: the mesh `h`'s first axis is split over, if any (`launch.over_batch`)."""
  if impl == "reference":
    return reference(h, residual, gamma, beta, seed, rate=rate, eps=eps)

  def local(h, residual, gamma, beta, seed, offset):
    flat = (h.reshape(-1, h.shape[-1]), residual.reshape(-1, h.shape[-1]))
    return _fused(rate, eps, impl, *flat, gamma, beta, jnp.concatenate([seed, offset])).reshape(h.shape)

  return over_batch(local, mesh, (h, residual), (gamma, beta, seed), rows_per_item=int(np.prod(h.shape[1:-1])))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fused(rate, eps, impl, h, residual, gamma, beta, seed):
  return _forward(rate, eps, impl, h, residual, gamma, beta, seed)[0]


def _recomputed(seed_ref, h_ref, res_ref, *, rate, width, block_rows):
  """The block's dropout(h) + residual in float32 (zero past `width`), the keep mask (None without dropout) and
  the mask of real columns. Blocks are a power of two wide, as Triton needs, so loads past `width` are masked.
  `seed_ref` holds the seed and the global number of this call's first row (`launch.over_batch`)."""
  shape = (block_rows, pl.next_power_of_2(width))
  cols = lax.broadcasted_iota(jnp.int32, shape, 1)
  real = cols < width
  h = pl_triton.load(h_ref, mask=real, other=0.0).astype(jnp.float32)
  keep = None
  if rate > 0.0:
    rows = pl.program_id(0) * block_rows + lax.broadcasted_iota(jnp.int32, shape, 0)
    rows = seed_ref[1] + rows.astype(jnp.uint32)
    keep = hashed_dropout.keep(seed_ref[0], rows * jnp.uint32(width) + cols.astype(jnp.uint32), rate)
    h = hashed_dropout.dropped(h, keep, rate)
  return h + pl_triton.load(res_ref, mask=real, other=0.0).astype(jnp.float32), keep, real


def _forward_kernel(seed_ref, h_ref, res_ref, gamma_ref, beta_ref, y_ref, mean_ref, rstd_ref, *, rate, eps, width,
                    block_rows):
  z, _, real = _recomputed(seed_ref, h_ref, res_ref, rate=rate, width=width, block_rows=block_rows)
  mean = jnp.sum(z, axis=1) / width
  centred = jnp.where(real, z - mean[:, None], 0.0)
  rstd = lax.rsqrt(jnp.sum(centred * centred, axis=1) / width + eps)
  y = centred * rstd[:, None] * load_vector(gamma_ref, width) + load_vector(beta_ref, width)
  pl_triton.store(y_ref, y.astype(y_ref.dtype), mask=real)
  mean_ref[...] = mean
  rstd_ref[...] = rstd


def _row_specs(block_rows, width):
  padded = pl.next_power_of_2(width)
  rows = pl.BlockSpec((block_rows, padded), lambda i: (i, 0))
  vector = pl.BlockSpec((padded,), lambda i: (0,))
  per_row = pl.BlockSpec((block_rows,), lambda i: (i,))
  seed = pl.BlockSpec((2,), lambda i: (0,))
  return rows, vector, per_row, seed


def _forward(rate, eps, impl, h, residual, gamma, beta, seed):
  n, width = h.shape
  block_rows = row_block(n, _BLOCK_ROWS)
  rows, vector, per_row, seed_spec = _row_specs(block_rows, width)
  y, mean, rstd = pallas_call(
      functools.partial(_forward_kernel, rate=rate, eps=eps, width=width, block_rows=block_rows), impl=impl,
      grid=(n // block_rows,), in_specs=[seed_spec, rows, rows, vector, vector],
      out_specs=[rows, per_row, per_row],
      out_shape=[jax.ShapeDtypeStruct(h.shape, h.dtype), jax.ShapeDtypeStruct((n,), jnp.float32),
                 jax.ShapeDtypeStruct((n,), jnp.float32)],
      name="dropout_add_layer_norm")(seed, h, residual, gamma, beta)
  return y, (h, residual, gamma, beta, seed, mean, rstd)


def _backward_kernel(seed_ref, dy_ref, h_ref, res_ref, gamma_ref, mean_ref, rstd_ref, dh_ref, dres_ref, dgamma_ref,
                     dbeta_ref, *, rate, width, block_rows):
  z, keep, real = _recomputed(seed_ref, h_ref, res_ref, rate=rate, width=width, block_rows=block_rows)
  rstd = rstd_ref[...]
  normed = jnp.where(real, (z - mean_ref[...][:, None]) * rstd[:, None], 0.0)
  dy = pl_triton.load(dy_ref, mask=real, other=0.0).astype(jnp.float32)
  g = dy * load_vector(gamma_ref, width)
  dz = rstd[:, None] * (g - (jnp.sum(g, axis=1) / width)[:, None]
                        - normed * (jnp.sum(g * normed, axis=1) / width)[:, None])
  pl_triton.store(dres_ref, dz.astype(dres_ref.dtype), mask=real)
  pl_triton.store(dh_ref, hashed_dropout.dropped(dz, keep, rate).astype(dh_ref.dtype), mask=real)
  store_column_sums(dgamma_ref, dy * normed, width)  # this block's share of the parameter gradients
  store_column_sums(dbeta_ref, dy, width)


def _backward(rate, eps, impl, saved, dy):
  h, residual, gamma, beta, seed, mean, rstd = saved
  n, width = h.shape
  block_rows = row_block(n, _BLOCK_ROWS)
  blocks = n // block_rows
  rows, vector, per_row, seed_spec = _row_specs(block_rows, width)
  partial = column_sums_spec(width)
  dh, dres, dgamma, dbeta = pallas_call(
      functools.partial(_backward_kernel, rate=rate, width=width, block_rows=block_rows), impl=impl,
      grid=(blocks,), in_specs=[seed_spec, rows, rows, rows, vector, per_row, per_row],
      out_specs=[rows, rows, partial, partial],
      out_shape=[jax.ShapeDtypeStruct(h.shape, h.dtype), jax.ShapeDtypeStruct(residual.shape, residual.dtype),
                 jax.ShapeDtypeStruct((blocks, width), jnp.float32),
                 jax.ShapeDtypeStruct((blocks, width), jnp.float32)],
      name="dropout_add_layer_norm_backward")(seed, dy, h, residual, gamma, mean, rstd)
  return (dh, dres, dgamma.sum(0).astype(gamma.dtype), dbeta.sum(0).astype(beta.dtype),
          np.zeros(seed.shape, jax.dtypes.float0))  # the seed and row offset are integers: no gradient


_fused.defvjp(_forward, _backward)
