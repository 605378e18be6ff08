"""Multi-process start-up with JAX's own distributed runtime, before anything touches a device.

`initialize()` reads the cluster from the environment:
- explicit: `HERBERTA_COORDINATOR` (host:port), `HERBERTA_NUM_PROCESSES`, `HERBERTA_PROCESS_ID`;
- `HERBERTA_HEARTBEAT_TIMEOUT` (seconds, default JAX's 100): how long the survivors wait for a process that
  died before they fail rather than hang;
- SLURM and TPU VMs: JAX detects them itself (`jax.distributed.initialize()` with no arguments); a TPU pod
  slice's workers are found through the metadata server, so there `HERBERTA_DISTRIBUTED=1` asks for it
  (`launch/tpu_pod.sh` sets it);
- none of these: a plain single-process run.
CPU-only runs use the gloo collectives, so several processes work without accelerators.
"""

from __future__ import annotations

import logging
import os

import jax


def _cluster_detected() -> bool:
  if os.environ.get("HERBERTA_DISTRIBUTED") == "1":
    return True
  return any(name in os.environ for name in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"))


def initialize() -> None:
  """Starts jax.distributed when the environment describes a multi-process job; otherwise does nothing."""
  coordinator = os.environ.get("HERBERTA_COORDINATOR")
  if coordinator is None and not _cluster_detected():
    return
  if os.environ.get("JAX_PLATFORMS", "") == "cpu" or not _has_accelerator_plugin():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator is not None:
    try:
      num_processes = int(os.environ["HERBERTA_NUM_PROCESSES"])
      process_id = int(os.environ["HERBERTA_PROCESS_ID"])
    except (KeyError, ValueError) as e:
      raise ValueError("HERBERTA_COORDINATOR is set, so HERBERTA_NUM_PROCESSES and HERBERTA_PROCESS_ID must be "
                       f"set to integers too ({e})") from e
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, **_timeouts())
  else:
    jax.distributed.initialize(**_timeouts())
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _timeouts() -> dict:
  value = os.environ.get("HERBERTA_HEARTBEAT_TIMEOUT")
  if value is None:
    return {}
  try:
    return {"heartbeat_timeout_seconds": int(value)}
  except ValueError as e:
    raise ValueError(f"HERBERTA_HEARTBEAT_TIMEOUT={value!r}: must be an integer number of seconds") from e


def _has_accelerator_plugin() -> bool:
  """Whether a GPU or TPU backend is installed; without one the collectives must go through gloo."""
  import importlib.util
  plugins = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")
  return any(importlib.util.find_spec(name) is not None for name in plugins)
