"""A BERT / RoBERTa encoder in Flax that reproduces HuggingFace's `BertModel` and `XLMRobertaModel` numerically.

Module and parameter names mirror HuggingFace's (`encoder/layer_3/attention/self/query/kernel` is
`encoder.layer.3.attention.self.query.weight` transposed), so checkpoint conversion is a rename, not a table.

Written with Flax Linen: its pure `init`/`apply` functions are exactly what our jitted, sharded train steps,
`lax.scan` gradient accumulation and Orbax checkpoints of plain pytrees want; NNX would add a split/merge at every
one of those boundaries for no gain here.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from herberta_jax.model import kernels
from herberta_jax.model.dropout import Dropout
from herberta_jax.model.kernels import attention as fused_attention
from herberta_jax.model.kernels import bias_gelu, hashed_dropout, residual_norm

ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")
SUPPORTED_TYPES = ("bert",) + ROBERTA_TYPES


def _gelu(x):
  """HF's "gelu", the exact form, written as HF writes it: x/2 (1 + erf(x/sqrt 2)). `jax.nn.gelu(approximate=False)`
  computes it through erfc, which XLA's CPU backend evaluates about 3x slower than erf (bench/cpu_kernels.py): 5%
  of the two-stage inference function (bench/model_rewrites.py; both in `git show 78d3b3b:bench`)."""
  return x * 0.5 * (1.0 + jax.lax.erf(x * np.sqrt(0.5).astype(x.dtype)))


_ACTIVATIONS = {
    "gelu": _gelu,
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The encoder's shape. Field names are ours; `from_hf_dict`/`to_hf_dict` translate HF's `config.json`."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  model_type: str = "bert"
  dtype: str = "float32"  # compute dtype; parameters stay float32
  # How the encoder runs, not what it is (left out of `checkpoint_fields`): fused kernels (model/kernels) in place
  # of XLA's code for these ops; kernel_impl "auto" runs them on a GPU and their pure-JAX references elsewhere (the
  # same math, dropout masks included); kernel_mesh, the mesh a training batch is split over, which the kernels
  # run per device on (kernels/launch.py: over_batch).
  kernels: tuple[str, ...] = ()
  kernel_impl: str = "auto"
  kernel_mesh: Any = dataclasses.field(default=None, compare=False, repr=False)

  def __post_init__(self):
    names = kernels.parse(self.kernels)  # a JSON list or "a,b" becomes a tuple
    if "bias_gelu" in names and self.hidden_act != "gelu":
      if self.kernels != "all":
        raise ValueError(f"the bias_gelu kernel computes the exact GELU; this encoder's hidden_act is "
                         f"{self.hidden_act!r}: leave bias_gelu out of kernels")
      names = tuple(name for name in names if name != "bias_gelu")  # "all" means all that apply
    object.__setattr__(self, "kernels", names)
    kernels.resolve(self.kernel_impl)  # refuses an unknown impl
    if self.model_type not in SUPPORTED_TYPES:
      raise ValueError(f"model_type {self.model_type!r} is not supported: use one of {', '.join(SUPPORTED_TYPES)}")
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(f"hidden_act {self.hidden_act!r} is not supported: use one of {', '.join(_ACTIVATIONS)}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")

  @property
  def is_roberta(self) -> bool:
    return self.model_type in ROBERTA_TYPES

  def replace(self, **changes) -> BertConfig:
    return dataclasses.replace(self, **changes)

  def checkpoint_fields(self) -> dict:
    """The fields that describe the trained encoder (what a workdir's model_config.json keeps)."""
    return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
            if field.name not in ("kernels", "kernel_impl", "kernel_mesh")}

  @classmethod
  def from_hf_dict(cls, hf: dict, *, source: str = "config.json") -> BertConfig:
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_TYPES:
      raise ValueError(f"{source}: model_type {model_type!r} is not a BERT or RoBERTa encoder; herberta_jax "
                       f"loads {', '.join(SUPPORTED_TYPES)}")
    try:
      return cls(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
                 num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
                 hidden_act=hf.get("hidden_act", "gelu"), hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
                 attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                 max_position_embeddings=hf.get("max_position_embeddings", 512),
                 type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                 pad_token_id=hf.get("pad_token_id") if hf.get("pad_token_id") is not None else 0,
                 model_type=model_type)
    except KeyError as e:
      raise ValueError(f"{source}: missing field {e.args[0]!r} of a {model_type} config") from e

  def to_hf_dict(self) -> dict:
    return {
        "model_type": self.model_type, "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
        "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
        "intermediate_size": self.intermediate_size, "hidden_act": self.hidden_act,
        "hidden_dropout_prob": self.hidden_dropout, "attention_probs_dropout_prob": self.attention_dropout,
        "max_position_embeddings": self.max_position_embeddings, "type_vocab_size": self.type_vocab_size,
        "layer_norm_eps": self.layer_norm_eps, "pad_token_id": self.pad_token_id, "initializer_range": 0.02,
    }


def position_ids(input_ids, config: BertConfig):
  """BERT counts positions from 0. RoBERTa counts non-padding tokens from pad_id + 1 and gives padding pad_id."""
  if not config.is_roberta:
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
  not_pad = (input_ids != config.pad_token_id).astype(jnp.int32)
  return jnp.cumsum(not_pad, axis=1) * not_pad + config.pad_token_id


_init = nn.initializers.normal(stddev=0.02)


def _dense(features: int, config: BertConfig, name: str):
  return nn.Dense(features, dtype=jnp.dtype(config.dtype), kernel_init=_init, name=name)


def _layer_norm(config: BertConfig, name: str = "LayerNorm"):
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.dtype(config.dtype), name=name)


class _Table(nn.Module):
  """An embedding table stored as nn.Embed stores it (`<name>/embedding`), for lookups written without a gather."""

  num_embeddings: int
  features: int

  @nn.compact
  def __call__(self):
    return self.param("embedding", _init, (self.num_embeddings, self.features))


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, layer-normalised.

  The sum is taken in float32 and only the layer norm's output is in the compute dtype. A gather's gradient is a
  scatter-add, and a bfloat16 scatter-add into a table that every token hits (the 2 token types, the positions) is
  what made the bfloat16 train step slower than float32 on an H100. So positions are a slice of their table
  (BERT's are 0..L-1) and token types a one-hot product, whose gradients are plain sums; only the word lookup stays
  a gather, in float32.
  """

  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, deterministic: bool):
    cfg = self.config
    words = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=_init, dtype=jnp.float32,
                     name="word_embeddings")(input_ids)
    position_table = _Table(cfg.max_position_embeddings, cfg.hidden_size, name="position_embeddings")()
    if cfg.is_roberta:  # positions depend on the padding
      positions = jnp.take(position_table, position_ids(input_ids, cfg), axis=0)
    else:
      positions = position_table[None, :input_ids.shape[1]]
    type_table = _Table(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings")()
    types = jax.nn.one_hot(token_type_ids, cfg.type_vocab_size, dtype=jnp.float32) @ type_table
    x = _layer_norm(cfg)(words + positions + types)
    return Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)


class SelfAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool, queries=None):
    """`queries`: the rows that attend (default all of `x`); keys and values are always all of `x`."""
    cfg = self.config
    queries = x if queries is None else queries
    batch = x.shape[0]
    head_dim = cfg.hidden_size // cfg.num_heads

    def heads(name, rows):  # [B, heads, rows, head_dim]
      projected = _dense(cfg.hidden_size, cfg, name)(rows)
      return projected.reshape(batch, rows.shape[1], cfg.num_heads, head_dim).transpose(0, 2, 1, 3)

    # Heads-major operands: on the CPU, XLA fuses the softmax into a [B, L, heads, d] contraction and runs that
    # fusion at a tenth of matmul speed; with the heads moved ahead of the rows first, the two contractions are
    # plain batched matmuls and the whole inference function runs about a fifth faster
    # (bench/model_rewrites.py: `git show 78d3b3b:bench/model_rewrites.py`).
    q, k, v = heads("query", queries), heads("key", x), heads("value", x)
    if "attention" in cfg.kernels:
      rate = 0.0 if deterministic else cfg.attention_dropout
      attended = fused_attention.attention(q, k, v, bias[:, 0, 0, :], _kernel_seed(self, rate), rate=rate,
                                           impl=kernels.resolve(cfg.kernel_impl), mesh=cfg.kernel_mesh)
      attended = attended.transpose(0, 2, 1, 3)
      return attended.reshape(batch, queries.shape[1], cfg.hidden_size)
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
    # Softmax in float32 whatever the compute dtype: bfloat16 logits lose too much near the max.
    probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(v.dtype)
    probs = Dropout(cfg.attention_dropout)(probs, deterministic=deterministic)
    attended = jnp.einsum("bhqk,bhkd->bhqd", probs, v).transpose(0, 2, 1, 3)
    return attended.reshape(batch, queries.shape[1], cfg.hidden_size)


class Attention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool, queries=None):
    cfg = self.config
    queries = x if queries is None else queries
    attended = SelfAttention(cfg, name="self")(x, bias, deterministic, queries)
    return _Output(cfg, name="output")(attended, queries, deterministic)


class _Output(nn.Module):
  """dense -> dropout -> LayerNorm(+ residual): the tail of both attention and feed-forward blocks."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, residual, deterministic: bool):
    cfg = self.config
    if "layer_norm" in cfg.kernels:
      rate = 0.0 if deterministic else cfg.hidden_dropout
      gamma, beta = _NormParams(cfg.hidden_size, name="LayerNorm")()
      return residual_norm.dropout_add_layer_norm(
          _dense(cfg.hidden_size, cfg, "dense")(x), residual.astype(jnp.dtype(cfg.dtype)), gamma, beta,
          _kernel_seed(self, rate), rate=rate, eps=cfg.layer_norm_eps, impl=kernels.resolve(cfg.kernel_impl),
          mesh=cfg.kernel_mesh)
    out = Dropout(cfg.hidden_dropout)(_dense(cfg.hidden_size, cfg, "dense")(x), deterministic=deterministic)
    return _layer_norm(cfg)(out + residual)


class _NormParams(nn.Module):
  """nn.LayerNorm's parameters under its names and initialisers, returned for a fused kernel to apply."""
  features: int

  @nn.compact
  def __call__(self):
    return (self.param("scale", nn.initializers.ones_init(), (self.features,)),
            self.param("bias", nn.initializers.zeros_init(), (self.features,)))


class _DenseParams(nn.Module):
  """nn.Dense's parameters under its names and initialisers, returned for a fused kernel to apply."""
  features: int

  @nn.compact
  def __call__(self, in_features: int):
    return (self.param("kernel", _init, (in_features, self.features)),
            self.param("bias", nn.initializers.zeros_init(), (self.features,)))


def _kernel_seed(module: nn.Module, rate: float) -> jax.Array:
  """A fused kernel's dropout seed from the module's "dropout" rng; a constant when nothing is dropped."""
  if rate == 0.0:
    return jnp.zeros((1,), jnp.uint32)
  return hashed_dropout.seed_from(module.make_rng("dropout"))


class _Intermediate(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    if "bias_gelu" in cfg.kernels:
      kernel, bias = _DenseParams(cfg.intermediate_size, name="dense")(x.shape[-1])
      dtype = jnp.dtype(cfg.dtype)
      return bias_gelu.bias_gelu(jnp.dot(x.astype(dtype), kernel.astype(dtype)), bias,
                                 impl=kernels.resolve(cfg.kernel_impl), mesh=cfg.kernel_mesh)
    return _ACTIVATIONS[cfg.hidden_act](_dense(cfg.intermediate_size, cfg, "dense")(x))


class Layer(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool, queries=None):
    """`queries`: the rows of `x` this layer outputs (default all); they attend over all of `x`."""
    h = Attention(self.config, name="attention")(x, bias, deterministic, queries)
    return _Output(self.config, name="output")(_Intermediate(self.config, name="intermediate")(h), h, deterministic)


class _Layers(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool, first_token_only: bool = False):
    last = self.config.num_layers - 1
    for i in range(self.config.num_layers):
      # The last layer's other rows feed nothing when only [CLS] is read: it still attends over all of them.
      queries = x[:, :1] if first_token_only and i == last else None
      x = Layer(self.config, name=f"layer_{i}")(x, bias, deterministic, queries)
    return x


class _Pooler(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, first_token):
    return jnp.tanh(_dense(self.config.hidden_size, self.config, "dense")(first_token))


class BertEncoder(nn.Module):
  """Returns (sequence output [B, L, H], pooled output [B, H] or None). Outputs are float32."""
  config: BertConfig
  add_pooler: bool = True

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids=None, *, deterministic: bool = True,
               first_token_only: bool = False):
    """`first_token_only`: the last layer computes [CLS] alone (the sequence output is then [B, 1, H]), for a
    caller that reads only the pooled output: that layer's feed-forward and projections of the other rows are
    most of its cost."""
    cfg = self.config
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = Embeddings(cfg, name="embeddings")(input_ids, token_type_ids, deterministic)
    # Additive mask over keys, as HF builds it: 0 where attended, the dtype's lowest value where masked.
    bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
    x = _Layers(cfg, name="encoder")(x, bias, deterministic, first_token_only)
    sequence = x.astype(jnp.float32)
    if not self.add_pooler:
      return sequence, None
    pooled = _Pooler(cfg, name="pooler")(x[:, 0])
    return sequence, pooled.astype(jnp.float32)
