"""Fused GPU kernels for the encoder's memory-bound parts, each beside a pure-JAX reference of the same math.

On a GPU, a BERT train step spends about half its time outside the matmuls, in elementwise and reduction kernels
that read and write the activations several times (docs/performance.md, "Fused kernels"). Each kernel here does
one such stretch in a single pass over memory:

- `residual_norm.dropout_add_layer_norm`: LayerNorm(dropout(h) + residual), the tail of every block;
- `bias_gelu.bias_gelu`: the exact GELU of the intermediate matmul's output plus its bias;
- `attention.attention`: softmax(q k^T / sqrt(d) + key bias) with dropout on the probabilities, times v,
  computed block by block without writing the probabilities (FlashAttention's scheme).

Each has a forward and a backward kernel (a `jax.custom_vjp`) written in Pallas for the Triton lowering. Dropout
inside a kernel cannot draw from JAX's generators, so it hashes each element's position with a seed
(`hashed_dropout`): the backward kernel recomputes the forward's mask instead of storing it, and the reference
makes the identical mask, so the kernels are tested element for element against it.

`impl` picks how an op runs: "pallas" compiles the kernel (GPU), "interpret" runs the same kernel in Pallas'
interpreter (any backend: the tests), "reference" runs the pure-JAX math (what "auto" picks off a GPU, where the
Triton lowering does not exist).
"""

from __future__ import annotations

import jax

NAMES = ("layer_norm", "bias_gelu", "attention")
IMPLS = ("auto", "pallas", "interpret", "reference")


def parse(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
  """The kernel names of a config value: "" (none), "all", or a comma-separated subset of `NAMES`."""
  if isinstance(names, str):
    names = NAMES if names.strip() == "all" else tuple(n.strip() for n in names.split(",") if n.strip())
  unknown = [n for n in names if n not in NAMES]
  if unknown:
    raise ValueError(f"unknown kernel {unknown[0]!r}: use \"all\" or a comma-separated subset of {', '.join(NAMES)}")
  return tuple(n for n in NAMES if n in names)


def resolve(impl: str) -> str:
  """"auto" becomes "pallas" on a GPU and "reference" elsewhere; other values are returned as they are."""
  if impl not in IMPLS:
    raise ValueError(f"kernel impl {impl!r}: use one of {', '.join(IMPLS)}")
  if impl == "auto":
    return "pallas" if jax.default_backend() == "gpu" else "reference"
  return impl
