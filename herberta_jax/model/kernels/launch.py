"""`pallas_call` as every kernel here calls it: Triton's lowering on a GPU, or Pallas' interpreter."""

from __future__ import annotations

from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton


def pallas_call(kernel, *, impl: str, num_warps: int = 4, num_stages: int = 1, **kwargs):
  """`impl` "pallas" or "interpret" (the reference never gets here). The Triton compiler parameters are named
  explicitly: without them JAX lowers a GPU `pallas_call` through Mosaic GPU, a different backend. `num_stages` > 1
  lets Triton load a loop's next blocks while it computes on these (the attention kernels' loops)."""
  if impl not in ("pallas", "interpret"):
    raise ValueError(f"pallas_call needs impl 'pallas' or 'interpret', got {impl!r}")
  return pl.pallas_call(kernel, interpret=impl == "interpret",
                        compiler_params=pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages), **kwargs)


def row_block(rows: int, most: int) -> int:
  """The largest power of two up to `most` that divides `rows`: blocks then tile the rows exactly."""
  return min(rows & -rows, most)
