"""One JAX device per CPU core, which `predict` and `evaluate` ask for when the host has no accelerator.

JAX makes one device of a whole CPU, and XLA's CPU runtime splits each operation over the cores. The matrix
multiplications scale, but the many small operations between them (LayerNorm, softmax, transposes) leave cores
idle. As one device per core, each computing its share of every batch, the cores stay busy: on the 2-core CPU the
SemEval test set's two-stage pass took 16.5 s on two devices against 19.3 s on one (README, "Inference speed").

A GPU or TPU host is unaffected: its programs run on the accelerator, and the CPU devices stay unused.
"""

from __future__ import annotations

import os

FORCE_FLAG = "--xla_force_host_platform_device_count"


def usable_cores() -> int:
  """The cores this process may run on (its affinity mask, which containers and `taskset` narrow)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # macOS and Windows have no affinity mask
    return os.cpu_count() or 1


def per_core_count(batch_size: int, cores: int | None = None) -> int:
  """The most devices, at most one per core, that split `batch_size` rows evenly."""
  cores = cores or usable_cores()
  return max(n for n in range(1, min(cores, batch_size) + 1) if batch_size % n == 0)


def split_host(batch_size: int, count: int | None = None) -> bool:
  """Asks JAX for `count` CPU devices (None: `per_core_count(batch_size)`); True if it will have them.

  Left as it is (False) when the user chose already (XLA_FLAGS's --xla_force_host_platform_device_count, as the
  tests and the launch scripts set, or `jax_num_cpu_devices`) or when JAX's backends are up: the count can only be
  set before the first JAX operation, so a caller in a process that has run JAX keeps its devices.
  """
  import jax  # here, not at the top: the CLIs import this module before they load JAX

  if FORCE_FLAG in os.environ.get("XLA_FLAGS", "") or jax.config.jax_num_cpu_devices != -1:
    return False
  try:
    jax.config.update("jax_num_cpu_devices", count or per_core_count(batch_size))
  except RuntimeError:  # JAX refuses once its backends are initialized
    return False
  return True
