"""`pallas_call` as every kernel here calls it (Triton's lowering on a GPU, or Pallas' interpreter), and over a mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton
from jax.sharding import PartitionSpec


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


def load_vector(ref, width: int) -> jax.Array:
  """A vector block a power of two long (as Triton needs) of a `width`-long vector, as float32, zero past `width`."""
  padded = pl.next_power_of_2(width)
  return pl_triton.load(ref, mask=jnp.arange(padded) < width, other=0.0).astype(jnp.float32)


def column_sums_spec(width: int) -> pl.BlockSpec:
  """The block of a [grid, width] output into which program i writes its rows' column sums (`store_column_sums`);
  the caller sums the grid's rows: a reduction over blocks without atomics."""
  return pl.BlockSpec((1, pl.next_power_of_2(width)), lambda i: (i, 0))


def store_column_sums(ref, values: jax.Array, width: int) -> None:
  """Stores the column sums of a [rows, padded width] block into `ref` (`column_sums_spec`), the real columns only."""
  real = lax.broadcasted_iota(jnp.int32, (1, values.shape[1]), 1) < width
  pl_triton.store(ref, jnp.sum(values, axis=0)[None, :], mask=real)


def over_batch(fn, mesh, batched: tuple, shared: tuple, *, rows_per_item: int):
  """fn(*batched, *shared, offset) run on each device's rows of a batch split over `mesh`'s axes.

  A `pallas_call` is one custom call that XLA's partitioner cannot split, so under a plain `jit` with a
  batch-sharded input every device would gather the whole batch and run the kernel on all of it. With a mesh of
  several devices this runs `fn` under `shard_map` instead, each device on its own rows. `offset` (uint32, shape
  (1,)) numbers this device's first row in the global batch, in the kernel's rows (`rows_per_item` per batch
  item): the kernels add it to the positions their dropout masks hash, so the masks do not depend on how the batch
  is split. Inside a `shard_map` over the same axes (a stage's dev evaluation) `fn` runs on the local
  rows directly.
  """
  if mesh is None or mesh.size == 1:
    return fn(*batched, *shared, jnp.zeros((1,), jnp.uint32))
  axes = tuple(mesh.axis_names)

  def local(*args):
    items = args[0].shape[0]
    offset = lax.axis_index(axes).astype(jnp.uint32) * jnp.uint32(items * rows_per_item)
    return fn(*args, offset.reshape(1))

  if set(axes) <= set(jax.sharding.get_abstract_mesh().manual_axes):
    return local(*batched, *shared)
  rows, whole = PartitionSpec(axes), PartitionSpec()
  return jax.shard_map(local, mesh=mesh, in_specs=(rows,) * len(batched) + (whole,) * len(shared), out_specs=rows,
                       check_vma=False)(*batched, *shared)
