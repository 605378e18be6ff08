"""softmax(q k^T / sqrt(d) + key bias) with dropout on the probabilities, times v, without writing the
probabilities: FlashAttention's scheme (Dao et al., 2022; its second version's loop order).

The forward kernel takes one block of queries of one head and walks the keys block by block, keeping a running
maximum and normaliser; it writes the output and one log-sum-exp per query. The backward pass recomputes the
probabilities from those: one kernel per key block accumulates dK and dV over the queries, one per query block
accumulates dQ over the keys. Dropout decisions come from `hashed_dropout`, so the three kernels and the
reference agree on every element's mask without storing it.

Sequences are padded with keys the bias masks out (and cut back after) to a multiple of 16, Triton's smallest
matrix tile, or of 32 past 64 tokens (130 tokens become 160 in blocks of 32 rather than 144 in blocks of 16: a
tensor core does little with 16 x 16 tiles). Shapes the kernel does not take (fewer than 16 queries, as in the
last layer of a [CLS]-only encoder, or a head width that is not a power of two) run the reference.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from herberta_jax.model.kernels import hashed_dropout
from herberta_jax.model.kernels.launch import over_batch, pallas_call, row_block

_TILE = 16  # Triton's smallest dot operand side
_BLOCK = 64
_STAGES = 2  # blocks of k and v (or q and dout) loaded ahead in the kernels' loops
# Padding keys: -inf, not the attention mask's finfo.min, so that a row whose every real key is masked (a padding
# row of the batch) still averages over its real keys as the reference does. Its log-sum-exp rounds to finfo.min,
# so its recomputed gradient is only right where its output's gradient is zero, as for the rows a loss ignores.
_PADDING = -float("inf")


def padded_length(n: int) -> int:
  """The length a sequence of `n` is padded to: a multiple of 16, or of 32 past 64."""
  tile = _TILE if n <= 64 else 2 * _TILE
  return -(-n // tile) * tile


def reference(q, k, v, key_bias, seed, *, rate: float):
  """The op in plain JAX. q: [B, H, Lq, d]; k, v: [B, H, Lk, d]; key_bias: [B, Lk] float32, added to every
  query's scores (0 where attended, very negative where masked). The mask of probability (b, h, i, j) is
  keep(seed, ((b H + h) Lq + i) Lk + j)."""
  batch, heads, lq, d = q.shape
  lk = k.shape[2]
  scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32) / math.sqrt(d)
  probs = jax.nn.softmax(scores + key_bias[:, None, None, :].astype(jnp.float32), axis=-1)
  if rate > 0.0:
    index = jnp.arange(batch * heads * lq * lk, dtype=jnp.uint32).reshape(probs.shape)
    probs = hashed_dropout.dropped(probs, hashed_dropout.keep(seed[0], index, rate), rate)
  return jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32).astype(q.dtype)


def fits(query_length: int, head_dim: int) -> bool:
  """Whether the kernel takes these shapes (else `attention` runs the reference)."""
  return query_length >= _TILE and head_dim >= _TILE and head_dim & (head_dim - 1) == 0


def attention(q, k, v, key_bias, seed, *, rate: float, impl: str, mesh=None):
  """`reference`'s result; `impl` "pallas" or "interpret" runs the kernels where `fits`. `mesh`: the mesh the
  batch axis is split over, if any (`launch.over_batch`)."""
  if impl == "reference" or not fits(q.shape[2], q.shape[3]):
    return reference(q, k, v, key_bias, seed, rate=rate)
  return over_batch(functools.partial(_padded, rate=rate, impl=impl), mesh, (q, k, v, key_bias), (seed,),
                    rows_per_item=q.shape[1])


def _padded(q, k, v, key_bias, seed, offset, *, rate, impl):
  """The kernels on one device's batch, its sequences padded to their tiles; `offset`: its first (batch x head)
  row in the global batch."""
  batch, heads, lq, d = q.shape
  lk = k.shape[2]
  lq_pad, lk_pad = padded_length(lq), padded_length(lk)

  def rows(x, length, padded):
    x = x.reshape(batch * heads, length, d)
    return jnp.pad(x, ((0, 0), (0, padded - length), (0, 0))) if padded > length else x

  bias = key_bias.astype(jnp.float32)
  if lk_pad > lk:
    bias = jnp.pad(bias, ((0, 0), (0, lk_pad - lk)), constant_values=_PADDING)
  shape = _Shape(heads=heads, lq=lq, lk=lk, block_q=row_block(lq_pad, _BLOCK), block_k=row_block(lk_pad, _BLOCK),
                 scale=1.0 / math.sqrt(d))
  out = _fused(rate, impl, shape, rows(q, lq, lq_pad), rows(k, lk, lk_pad), rows(v, lk, lk_pad),
               lax.stop_gradient(bias), jnp.concatenate([seed, offset]))
  return out[:, :lq].reshape(batch, heads, lq, d)


@dataclasses.dataclass(frozen=True)
class _Shape:
  """The static facts every kernel needs (hashable, for custom_vjp's static arguments)."""
  heads: int
  lq: int  # the real lengths, which the dropout positions count in
  lk: int
  block_q: int
  block_k: int
  scale: float


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fused(rate, impl, shape, q, k, v, bias, seed):
  return _forward(rate, impl, shape, q, k, v, bias, seed)[0]


def _scores(q, k, bias, shape):
  """A block's q k^T / sqrt(d) + key bias (one per key), float32."""
  scores = lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  return scores * shape.scale + bias[None, :]


def _recomputed(q, k, v, bias, do, lse, delta, rows, cols, bh, seed_ref, *, rate, shape):
  """What both backward kernels recompute of a block: its probabilities (from the saved log-sum-exp), its dropout
  mask (None at rate 0) and the gradient of its scores."""
  probs = jnp.exp(_scores(q, k, bias, shape) - lse[:, None])
  keep = _keep(rows, cols, bh, seed_ref, rate=rate, shape=shape)
  dprobs = hashed_dropout.dropped(lax.dot_general(do, v, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32),
                                  keep, rate)
  return probs, keep, probs * (dprobs - delta[:, None])


def _keep(rows, cols, bh, seed_ref, *, rate, shape):
  """The dropout mask of a block: `seed_ref` holds the seed and the global number of this call's first
  (batch x head) row, which `bh`, the grid's, counts from."""
  if rate == 0.0:
    return None
  bh = seed_ref[1] + bh.astype(jnp.uint32)
  index = (bh * jnp.uint32(shape.lq) + rows.astype(jnp.uint32)) * jnp.uint32(shape.lk) + cols.astype(jnp.uint32)
  return hashed_dropout.keep(seed_ref[0], index, rate)


def _forward_kernel(seed_ref, q_ref, k_ref, v_ref, bias_ref, o_ref, lse_ref, *, rate, shape):
  bh, q_block = pl.program_id(0), pl.program_id(1)
  bq, bk = shape.block_q, shape.block_k
  q = q_ref[...]
  rows = q_block * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
  base_cols = lax.broadcasted_iota(jnp.int32, (bq, bk), 1)

  def step(j, carry):
    acc, running_max, normaliser = carry
    start = pl.multiple_of(j * bk, bk)
    k, v = k_ref[pl.ds(start, bk), :], v_ref[pl.ds(start, bk), :]
    scores = _scores(q, k, bias_ref[pl.ds(start, bk)], shape)
    new_max = jnp.maximum(running_max, jnp.max(scores, axis=1))
    correction = jnp.exp(running_max - new_max)
    probs = jnp.exp(scores - new_max[:, None])
    normaliser = normaliser * correction + jnp.sum(probs, axis=1)
    probs = hashed_dropout.dropped(probs, _keep(rows, start + base_cols, bh, seed_ref, rate=rate, shape=shape), rate)
    acc = acc * correction[:, None] + lax.dot_general(probs.astype(v.dtype), v, (((1,), (0,)), ((), ())),
                                                      preferred_element_type=jnp.float32)
    return acc, new_max, normaliser

  d = q.shape[-1]
  acc, running_max, normaliser = lax.fori_loop(
      0, k_ref.shape[0] // bk, step,
      (jnp.zeros((bq, d), jnp.float32), jnp.full((bq,), -jnp.inf, jnp.float32), jnp.zeros((bq,), jnp.float32)))
  o_ref[...] = (acc / normaliser[:, None]).astype(o_ref.dtype)
  lse_ref[...] = running_max + jnp.log(normaliser)


def _specs(shape, lq_pad, lk_pad, d, *, by_keys: bool):
  """Block specs over the grid (batch x heads, query or key blocks): this program's block of the axis it owns,
  the whole of the other (walked inside the kernel)."""
  bq, bk = shape.block_q, shape.block_k
  heads = shape.heads
  if by_keys:
    queries = pl.BlockSpec((None, lq_pad, d), lambda bh, i: (bh, 0, 0))
    keys = pl.BlockSpec((None, bk, d), lambda bh, i: (bh, i, 0))
    per_query = pl.BlockSpec((None, lq_pad), lambda bh, i: (bh, 0))
    bias = pl.BlockSpec((None, bk), lambda bh, i: (bh // heads, i))
  else:
    queries = pl.BlockSpec((None, bq, d), lambda bh, i: (bh, i, 0))
    keys = pl.BlockSpec((None, lk_pad, d), lambda bh, i: (bh, 0, 0))
    per_query = pl.BlockSpec((None, bq), lambda bh, i: (bh, i))
    bias = pl.BlockSpec((None, lk_pad), lambda bh, i: (bh // heads, 0))
  return queries, keys, per_query, bias, pl.BlockSpec((2,), lambda bh, i: (0,))


def _forward(rate, impl, shape, q, k, v, bias, seed):
  bh, lq_pad, d = q.shape
  queries, keys, per_query, bias_spec, seed_spec = _specs(shape, lq_pad, k.shape[1], d, by_keys=False)
  out, lse = pallas_call(
      functools.partial(_forward_kernel, rate=rate, shape=shape), impl=impl, num_stages=_STAGES,
      grid=(bh, lq_pad // shape.block_q),
      in_specs=[seed_spec, queries, keys, keys, bias_spec], out_specs=[queries, per_query],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((bh, lq_pad), jnp.float32)],
      name="attention")(seed, q, k, v, bias)
  return out, (q, k, v, bias, seed, out, lse)


def _key_grads_kernel(seed_ref, q_ref, k_ref, v_ref, bias_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, rate,
                      shape):
  bh, k_block = pl.program_id(0), pl.program_id(1)
  bq, bk = shape.block_q, shape.block_k
  k, v, bias = k_ref[...], v_ref[...], bias_ref[...]
  cols = k_block * bk + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
  base_rows = lax.broadcasted_iota(jnp.int32, (bq, bk), 0)

  def step(i, carry):
    dk, dv = carry
    start = pl.multiple_of(i * bq, bq)
    q, do = q_ref[pl.ds(start, bq), :], do_ref[pl.ds(start, bq), :]
    probs, keep, dscores = _recomputed(q, k, v, bias, do, lse_ref[pl.ds(start, bq)], delta_ref[pl.ds(start, bq)],
                                       start + base_rows, cols, bh, seed_ref, rate=rate, shape=shape)
    dv = dv + lax.dot_general(hashed_dropout.dropped(probs, keep, rate).astype(do.dtype), do,
                              (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    dk = dk + lax.dot_general(dscores.astype(q.dtype), q, (((0,), (0,)), ((), ())),
                              preferred_element_type=jnp.float32)
    return dk, dv

  d = k.shape[-1]
  zeros = jnp.zeros((bk, d), jnp.float32)
  dk, dv = lax.fori_loop(0, q_ref.shape[0] // bq, step, (zeros, zeros))
  dk_ref[...] = (dk * shape.scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _query_grads_kernel(seed_ref, q_ref, k_ref, v_ref, bias_ref, do_ref, lse_ref, delta_ref, dq_ref, *, rate, shape):
  bh, q_block = pl.program_id(0), pl.program_id(1)
  bq, bk = shape.block_q, shape.block_k
  q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
  rows = q_block * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
  base_cols = lax.broadcasted_iota(jnp.int32, (bq, bk), 1)

  def step(j, dq):
    start = pl.multiple_of(j * bk, bk)
    k, v = k_ref[pl.ds(start, bk), :], v_ref[pl.ds(start, bk), :]
    _, _, dscores = _recomputed(q, k, v, bias_ref[pl.ds(start, bk)], do, lse, delta, rows, start + base_cols, bh,
                                seed_ref, rate=rate, shape=shape)
    return dq + lax.dot_general(dscores.astype(k.dtype), k, (((1,), (0,)), ((), ())),
                                preferred_element_type=jnp.float32)

  dq = lax.fori_loop(0, k_ref.shape[0] // bk, step, jnp.zeros(q.shape, jnp.float32))
  dq_ref[...] = (dq * shape.scale).astype(dq_ref.dtype)


def _backward(rate, impl, shape, saved, dout):
  q, k, v, bias, seed, out, lse = saved
  bh, lq_pad, d = q.shape
  lk_pad = k.shape[1]
  # Each query's sum over keys of probability x d(probability), which is dout . out (dropout included).
  delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
  inputs = (seed, q, k, v, bias, dout, lse, delta)
  queries, keys, per_query, bias_spec, seed_spec = _specs(shape, lq_pad, lk_pad, d, by_keys=True)
  dk, dv = pallas_call(
      functools.partial(_key_grads_kernel, rate=rate, shape=shape), impl=impl, num_stages=_STAGES,
      grid=(bh, lk_pad // shape.block_k),
      in_specs=[seed_spec, queries, keys, keys, bias_spec, queries, per_query, per_query], out_specs=[keys, keys],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      name="attention_key_grads")(*inputs)
  queries, keys, per_query, bias_spec, seed_spec = _specs(shape, lq_pad, lk_pad, d, by_keys=False)
  dq = pallas_call(
      functools.partial(_query_grads_kernel, rate=rate, shape=shape), impl=impl, num_stages=_STAGES,
      grid=(bh, lq_pad // shape.block_q),
      in_specs=[seed_spec, queries, keys, keys, bias_spec, queries, per_query, per_query], out_specs=queries,
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype), name="attention_query_grads")(*inputs)
  return dq, dk, dv, jnp.zeros_like(bias), np.zeros(seed.shape, jax.dtypes.float0)


_fused.defvjp(_forward, _backward)
