"""The fused kernels (herberta_jax/model/kernels) against their pure-JAX references, run in Pallas' interpreter on
the CPU: forward and gradients, with and without dropout, at awkward sizes; and each lowers to Triton for a GPU.

Tolerances per dtype: float32 1e-5 (both sides compute in float32 and differ in summation order only); bfloat16
outputs 2e-2 relative (one bfloat16 rounding of float32 results, 2^-8, plus the inputs' rounding in the matmuls).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from herberta_jax.model import bert, dropout
from herberta_jax.model.kernels import attention, bias_gelu, hashed_dropout, parse, residual_norm, resolve

TOLERANCE = {jnp.float32: dict(rtol=1e-5, atol=1e-5), jnp.bfloat16: dict(rtol=2e-2, atol=2e-2)}
SEED = jnp.array([20261205], jnp.uint32)


def _normal(seed, shape, dtype=jnp.float32, scale=1.0):
  return (scale * jax.random.normal(jax.random.PRNGKey(seed), shape)).astype(dtype)


def _close(actual, expected, dtype):
  np.testing.assert_allclose(np.asarray(actual, np.float32), np.asarray(expected, np.float32), **TOLERANCE[dtype])


def _value_and_grads(fn, args, weights):
  """fn(*args) and the gradients of sum(fn(*args) * weights) with respect to every argument."""
  loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32) * weights)  # noqa: E731
  return fn(*args), jax.grad(loss, argnums=tuple(range(len(args))))(*args)


def _compare(fn_of_impl, args, out_shape, dtype):
  weights = _normal(99, out_shape)
  expected, expected_grads = _value_and_grads(fn_of_impl("reference"), args, weights)
  actual, grads = _value_and_grads(fn_of_impl("interpret"), args, weights)
  _close(actual, expected, dtype)
  for got, want in zip(grads, expected_grads):
    _close(got, want, dtype)
  return expected


# ---------------------------------------------------------------------------------------------- hashed dropout


def test_hashed_dropout_keeps_the_rate_and_a_seed_decides_the_mask():
  index = jnp.arange(1 << 20, dtype=jnp.uint32)
  keep = hashed_dropout.keep(SEED[0], index, 0.1)
  assert abs(float(keep.mean()) - dropout.threshold(0.1) / dropout.LEVELS) < 2e-3
  assert bool(jnp.all(keep == hashed_dropout.keep(SEED[0], index, 0.1)))  # a pure function of (seed, index)
  other = hashed_dropout.keep(SEED[0] + 1, index, 0.1)
  # Independent masks agree on 0.9^2 + 0.1^2 = 82% of elements; a shifted or equal mask would not.
  assert abs(float((keep == other).mean()) - 0.82) < 3e-3
  assert abs(float((keep[1:] == keep[:-1]).mean()) - 0.82) < 3e-3  # neighbours are not correlated
  assert bool(hashed_dropout.keep(SEED[0], index, 0.0).all())


def test_kernel_names_are_parsed_and_checked():
  assert parse("all") == ("layer_norm", "bias_gelu", "attention")
  assert parse("attention, layer_norm") == ("layer_norm", "attention")
  assert parse("") == ()
  with pytest.raises(ValueError, match="unknown kernel 'gelu'"):
    parse("gelu")
  assert resolve("auto") == "reference"  # the tests run on the CPU
  with pytest.raises(ValueError, match="kernel impl 'triton'"):
    resolve("triton")


# ------------------------------------------------------------------------------------------ LayerNorm + residual


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("rate", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(2, 8, 96), (3, 5, 40)])  # 16 and 15 rows; widths not a power of two
def test_dropout_add_layer_norm_matches_its_reference(dtype, rate, shape):
  h, residual = _normal(0, shape, dtype), _normal(1, shape, dtype)
  gamma, beta = 1 + _normal(2, shape[-1:], scale=0.1), _normal(3, shape[-1:], scale=0.1)

  def fn(impl):
    return functools.partial(residual_norm.dropout_add_layer_norm, seed=SEED, rate=rate, eps=1e-12, impl=impl)

  _compare(fn, (h, residual, gamma, beta), shape, dtype)


def test_layer_norm_reference_without_dropout_is_the_models_layer_norm():
  h, residual = _normal(0, (2, 4, 48)), _normal(1, (2, 4, 48))
  gamma, beta = 1 + _normal(2, (48,), scale=0.1), _normal(3, (48,), scale=0.1)
  expected = nn.LayerNorm(epsilon=1e-12).apply({"params": {"scale": gamma, "bias": beta}}, h + residual)
  _close(residual_norm.reference(h, residual, gamma, beta, SEED, rate=0.0, eps=1e-12), expected, jnp.float32)


def test_layer_norm_dropout_drops_the_rate_and_scales_the_rest():
  h = jnp.ones((64, 256))
  # gamma 1 and beta 0 with a zero residual: the normalised dropped-out h is +a where kept and -b where dropped.
  out = residual_norm.reference(h, jnp.zeros_like(h), jnp.ones(256), jnp.zeros(256), SEED, rate=0.25, eps=1e-12)
  dropped = float((out < 0).mean())
  assert abs(dropped - 0.25) < 0.01


# ---------------------------------------------------------------------------------------------------- bias+GELU


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape", [(2, 8, 200), (3, 5, 64)])
def test_bias_gelu_matches_its_reference(dtype, shape):
  y, bias = _normal(0, shape, dtype, scale=2.0), _normal(1, shape[-1:])
  expected = _compare(lambda impl: functools.partial(bias_gelu.bias_gelu, impl=impl), (y, bias), shape, dtype)
  _close(expected, bert._gelu(y.astype(jnp.float32) + bias), dtype)  # the reference is the model's GELU


# ---------------------------------------------------------------------------------------------------- attention


def _key_bias(batch, length, padded_from):
  mask = np.ones((batch, length))
  mask[-1, padded_from:] = 0  # the last sequence is padded
  return jnp.where(jnp.asarray(mask) > 0, 0.0, np.finfo(np.float32).min)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("rate", [0.0, 0.1])
@pytest.mark.parametrize("length", [64, 40, 70])  # padded inside to 48 in blocks of 16, to 96 in blocks of 32
def test_attention_matches_its_reference(dtype, rate, length):
  batch, heads, d = 2, 2, 16
  q, k, v = (_normal(i, (batch, heads, length, d), dtype) for i in range(3))
  bias = _key_bias(batch, length, length - 9)

  def fn(impl):
    return lambda q, k, v: attention.attention(q, k, v, bias, SEED, rate=rate, impl=impl)

  _compare(fn, (q, k, v), q.shape, dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_attention_with_fewer_queries_than_keys_and_bert_base_heads_matches_its_reference(dtype):
  """32 queries over 70 keys (blocks of 32 each way, keys padded to 96), head width 64 as in BERT-base."""
  q = _normal(0, (2, 2, 32, 64), dtype)
  k, v = _normal(1, (2, 2, 70, 64), dtype), _normal(2, (2, 2, 70, 64), dtype)
  bias = _key_bias(2, 70, 50)

  def fn(impl):
    return lambda q, k, v: attention.attention(q, k, v, bias, SEED, rate=0.1, impl=impl)

  _compare(fn, (q, k, v), q.shape, dtype)


def test_attention_reference_without_dropout_is_the_models_attention():
  batch, heads, length, d = 2, 3, 20, 8
  q, k, v = (_normal(i, (batch, heads, length, d)) for i in range(3))
  bias = _key_bias(batch, length, 12)
  probs = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(d) + bias[:, None, None, :], axis=-1)
  expected = jnp.einsum("bhqk,bhkd->bhqd", probs, v)
  _close(attention.reference(q, k, v, bias, SEED, rate=0.0), expected, jnp.float32)


def test_attention_takes_the_reference_where_the_kernel_does_not_fit():
  q = _normal(0, (1, 2, 1, 16))  # one query: the last layer of a [CLS]-only encoder
  k = v = _normal(1, (1, 2, 24, 16))
  bias = jnp.zeros((1, 24))
  assert not attention.fits(1, 16) and not attention.fits(32, 24) and attention.fits(16, 64)
  np.testing.assert_array_equal(attention.attention(q, k, v, bias, SEED, rate=0.0, impl="pallas"),
                                attention.reference(q, k, v, bias, SEED, rate=0.0))


# ------------------------------------------------------------------------------------------ lowering for a GPU


def _triton_calls(fn, *args) -> int:
  """How many Triton kernels `fn`'s gradient program holds when lowered for CUDA (no GPU needed)."""
  def loss(*a):
    return fn(*a).astype(jnp.float32).sum()
  lowered = jax.jit(jax.grad(loss, argnums=tuple(range(len(args))))).trace(*args).lower(lowering_platforms=("cuda",))
  return lowered.as_text().count("xla.gpu.triton")


def test_every_kernel_lowers_to_triton_at_bert_base_shapes():
  """The first half of a GPU's compile, checked here: Pallas' Triton lowering refuses shapes and operations it
  cannot express (a block not a power of two, an erf). Triton's own compile (registers, shared memory) needs the
  GPU. BERT-base, bfloat16, batch 8, tagger length 130."""
  rows, hidden, ffn, heads = 8 * 130, 768, 3072, 12
  x = jnp.zeros((rows, hidden), jnp.bfloat16)
  norm = functools.partial(residual_norm.dropout_add_layer_norm, seed=SEED, rate=0.1, eps=1e-12, impl="pallas")
  assert _triton_calls(norm, x, x, jnp.ones(hidden), jnp.zeros(hidden)) == 2  # forward, backward
  gelu = functools.partial(bias_gelu.bias_gelu, impl="pallas")
  assert _triton_calls(gelu, jnp.zeros((rows, ffn), jnp.bfloat16), jnp.zeros(ffn)) == 2
  qkv = jnp.zeros((8, heads, 130, 64), jnp.bfloat16)
  attend = functools.partial(attention.attention, key_bias=jnp.zeros((8, 130)), seed=SEED, rate=0.1, impl="pallas")
  assert _triton_calls(attend, qkv, qkv, qkv) == 3  # forward; dK and dV; dQ


# ------------------------------------------------------------------------------------------------ in the model


def _encoder_loss(config, params, ids, mask):
  module = bert.BertEncoder(config)

  def loss(p):
    sequence, pooled = module.apply(p, ids, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
    return jnp.sum(sequence ** 2) / sequence.size + jnp.sum(pooled ** 2)
  return jax.value_and_grad(loss)(params)


def test_an_encoder_with_every_kernel_trains_as_its_reference_and_keeps_its_parameters():
  """Dropout on: the interpreted kernels and the references draw the same masks, so loss and gradients agree.
  The parameter tree is the plain encoder's, so checkpoints and exports do not depend on the switch."""
  config = bert.BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(5, 100, (2, 24)), jnp.int32)
  mask = jnp.ones_like(ids).at[1, 17:].set(0)
  params = bert.BertEncoder(config).init(jax.random.PRNGKey(0), ids, mask)
  fused = config.replace(kernels="all", kernel_impl="interpret")
  fused_params = bert.BertEncoder(fused).init(jax.random.PRNGKey(0), ids, mask)
  assert jax.tree.structure(fused_params) == jax.tree.structure(params)
  loss, grads = _encoder_loss(fused, params, ids, mask)
  reference_loss, reference_grads = _encoder_loss(fused.replace(kernel_impl="reference"), params, ids, mask)
  _close(loss, reference_loss, jnp.float32)
  jax.tree.map(lambda a, b: _close(a, b, jnp.float32), grads, reference_grads)
  plain_loss, _ = _encoder_loss(config, params, ids, mask)
  assert abs(float(plain_loss) - float(loss)) > 1e-4  # other dropout draws: the switch did take effect
  # Without dropout the fused encoder computes what the plain one does.
  plain = bert.BertEncoder(config).apply(params, ids, mask)[0]
  _close(bert.BertEncoder(fused).apply(params, ids, mask)[0], plain, jnp.float32)


def test_unknown_kernels_are_refused_where_they_are_set():
  from configs import base
  from herberta_jax import api, config_check
  from herberta_jax.errors import ConfigError

  with pytest.raises(ValueError, match="unknown kernel 'flash'"):
    bert.BertConfig(kernels="flash")
  with pytest.raises(ValueError, match="bias_gelu kernel computes the exact GELU.*'relu'"):
    bert.BertConfig(kernels="bias_gelu", hidden_act="relu")
  with pytest.raises(api.ArgumentError, match="kernels='attention,flash': unknown kernel 'flash'"):
    api.load("/nowhere", kernels="attention,flash")
  config = base.get_base_config()
  config.model.kernels = "layernorm"
  with pytest.raises(ConfigError, match="model.kernels"):
    config_check.check_config(config)


def test_over_a_mesh_each_device_runs_the_kernels_on_its_rows_and_draws_the_masks_of_one_device():
  """A pallas_call is one custom call XLA cannot split: with a batch-sharded input every device would run it on
  the whole batch. Over a mesh the kernels run under shard_map on each device's rows, their dropout positions
  offset to the global batch's, so loss and gradients equal one device's."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
  config = bert.BertConfig(vocab_size=100, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                           kernels="all", kernel_impl="interpret")
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(5, 100, (4, 16)), jnp.int32)
  mask = jnp.ones_like(ids).at[3, 11:].set(0)
  params = bert.BertEncoder(config).init(jax.random.PRNGKey(0), ids, mask)
  loss, grads = _encoder_loss(config, params, ids, mask)
  sharded = config.replace(kernel_mesh=mesh)
  rows = NamedSharding(mesh, PartitionSpec("data"))
  sharded_ids, sharded_mask = jax.device_put(ids, rows), jax.device_put(mask, rows)
  split_loss, split_grads = jax.jit(lambda p, i, m: _encoder_loss(sharded, p, i, m))(params, sharded_ids,
                                                                                      sharded_mask)
  _close(split_loss, loss, jnp.float32)
  jax.tree.map(lambda a, b: _close(a, b, jnp.float32), split_grads, grads)
  program = str(jax.make_jaxpr(lambda p: _encoder_loss(sharded, p, sharded_ids, sharded_mask))(params))
  assert program.count("shard_map") >= 3  # each kernel, forward and backward, per device
  assert sharded.checkpoint_fields() == bert.BertConfig(**sharded.checkpoint_fields()).checkpoint_fields()
  assert "kernel_mesh" not in sharded.checkpoint_fields() and "kernels" not in sharded.checkpoint_fields()
