"""Data parallelism with the current JAX primitives: a 1-D device mesh, `jax.jit` and `NamedSharding`.

The global batch is split along its first axis over the mesh axis "data"; parameters and optimizer state are
replicated. Because the loss is a mean over the global batch, XLA's gradient all-reduce gives pmap's semantics
without pmap. Each process contributes its own rows (`make_array_from_process_local_data`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int = -1) -> Mesh:
  """A mesh over the first `num_devices` devices of all processes (-1: all)."""
  devices = jax.devices()
  if num_devices not in (-1, len(devices)):
    if jax.process_count() > 1:
      raise ValueError(f"config.mesh.num_devices={num_devices}: multi-process runs use every device "
                       f"({len(devices)}); set it to -1")
    if not 0 < num_devices <= len(devices):
      raise ValueError(f"config.mesh.num_devices={num_devices}, but only {len(devices)} devices are visible")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def summed_over_devices(fn: Callable, mesh: Mesh) -> Callable:
  """`fn(params, batch)` run by each device on its own rows of a batch-sharded `batch` (parameters replicated), the
  devices' results summed by one all-reduce. Left to XLA's partitioner, an operation it cannot split by rows, such
  as `lax.top_k` over each row's span scores, would gather the whole batch's inputs onto every device first."""
  per_device = lambda params, batch: jax.lax.psum(fn(params, batch), DATA_AXIS)
  return jax.shard_map(per_device, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(DATA_AXIS)),
                       out_specs=PartitionSpec())


def host_arrays(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The numeric fields of a pipeline batch (drops host-only metadata such as text)."""
  return {k: v for k, v in batch.items() if v.dtype != object}


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the global batch from every process's rows, sharded over the data axis."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in host_arrays(batch).items()}
