"""gelu(y + bias), the exact GELU, in one pass: the feed-forward's activation after its first matmul.

Unfused, autodiff keeps the biased input and the erf term for the backward pass (two tensors four times the
hidden width per token). The kernel reads `y` once and writes the activation; the backward kernel reads `y`
again and recomputes the derivative, so nothing else is stored. Arithmetic is float32; outputs take `y`'s dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from herberta_jax.model.kernels.launch import (
  column_sums_spec,
  load_vector,
  over_batch,
  pallas_call,
  row_block,
  store_column_sums,
)

_BLOCK_ELEMENTS = 1 << 14  # rows x padded width per program
_SQRT_HALF = float(np.sqrt(0.5))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))


# Abramowitz and Stegun's 7.1.26: erf(x) = 1 - t (a1 + t (a2 + ...)) exp(-x^2), t = 1 / (1 + p x), for x >= 0,
# within 1.5e-7 of erf. The kernels use it because Pallas' Triton lowering has no erf.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf(x):
  z = jnp.abs(x)
  t = 1.0 / (1.0 + _ERF_P * z)
  poly = _ERF_A[-1]
  for a in _ERF_A[-2::-1]:
    poly = poly * t + a
  magnitude = 1.0 - t * poly * jnp.exp(-z * z)
  return jnp.where(x < 0, -magnitude, magnitude)


def _gelu(x):
  return 0.5 * x * (1.0 + _erf(x * _SQRT_HALF))


def _gelu_derivative(x):
  return 0.5 * (1.0 + _erf(x * _SQRT_HALF)) + x * jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI


def reference(y, bias):
  """The op in plain JAX, with XLA's erf (the model's GELU, HuggingFace's "gelu")."""
  x = y.astype(jnp.float32) + bias.astype(jnp.float32)
  return (0.5 * x * (1.0 + lax.erf(x * _SQRT_HALF))).astype(y.dtype)


def bias_gelu(y, bias, *, impl: str, mesh=None):
  """gelu(y + bias) over the last axis of `y`. `mesh`: the mesh `y`'s first axis is split over, if any."""
  if impl == "reference":
    return reference(y, bias)

  def local(y, bias, offset):  # no dropout: the offset is not needed
    return _fused(impl, y.reshape(-1, y.shape[-1]), bias).reshape(y.shape)

  return over_batch(local, mesh, (y,), (bias,), rows_per_item=1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(impl, y, bias):
  return _forward(impl, y, bias)[0]


def _biased(y_ref, bias_ref, width, block_rows):
  padded = pl.next_power_of_2(width)
  real = lax.broadcasted_iota(jnp.int32, (block_rows, padded), 1) < width
  bias = load_vector(bias_ref, width)
  return pl_triton.load(y_ref, mask=real, other=0.0).astype(jnp.float32) + bias[None, :], real


def _forward_kernel(y_ref, bias_ref, out_ref, *, width, block_rows):
  x, real = _biased(y_ref, bias_ref, width, block_rows)
  pl_triton.store(out_ref, _gelu(x).astype(out_ref.dtype), mask=real)


def _specs(n, width):
  padded = pl.next_power_of_2(width)
  block_rows = row_block(n, max(1, _BLOCK_ELEMENTS // padded))
  return (block_rows, pl.BlockSpec((block_rows, padded), lambda i: (i, 0)),
          pl.BlockSpec((padded,), lambda i: (0,)))


def _forward(impl, y, bias):
  n, width = y.shape
  block_rows, rows, vector = _specs(n, width)
  out = pallas_call(functools.partial(_forward_kernel, width=width, block_rows=block_rows), impl=impl,
                    grid=(n // block_rows,), in_specs=[rows, vector], out_specs=rows,
                    out_shape=jax.ShapeDtypeStruct(y.shape, y.dtype), name="bias_gelu")(y, bias)
  return out, (y, bias)


def _backward_kernel(dout_ref, y_ref, bias_ref, dy_ref, dbias_ref, *, width, block_rows):
  x, real = _biased(y_ref, bias_ref, width, block_rows)
  dy = pl_triton.load(dout_ref, mask=real, other=0.0).astype(jnp.float32) * _gelu_derivative(x)
  pl_triton.store(dy_ref, dy.astype(dy_ref.dtype), mask=real)
  store_column_sums(dbias_ref, dy, width)


def _backward(impl, saved, dout):
  y, bias = saved
  n, width = y.shape
  block_rows, rows, vector = _specs(n, width)
  blocks = n // block_rows
  partial = column_sums_spec(width)
  dy, dbias = pallas_call(functools.partial(_backward_kernel, width=width, block_rows=block_rows), impl=impl,
                          grid=(blocks,), in_specs=[rows, rows, vector], out_specs=[rows, partial],
                          out_shape=[jax.ShapeDtypeStruct(y.shape, y.dtype),
                                     jax.ShapeDtypeStruct((blocks, width), jnp.float32)],
                          name="bias_gelu_backward")(dout, y, bias)
  return dy, dbias.sum(0).astype(bias.dtype)


_fused.defvjp(_forward, _backward)
