"""Start-up before anything touches a device: jax.distributed only for a real multi-process job, then a device check.

`initialize()` reads the cluster from the environment (`detect_cluster`, a pure function of it):
- explicit: `HERBERTA_COORDINATOR` (host:port), `HERBERTA_NUM_PROCESSES`, `HERBERTA_PROCESS_ID`;
- `HERBERTA_HEARTBEAT_TIMEOUT` (seconds, default JAX's 100): how long the survivors wait for a process that
  died before they fail rather than hang;
- SLURM: only an srun step of more than one task is a cluster (JAX's SlurmCluster reads it). A bare allocation
  (`salloc`, or a batch script outside srun) and a one-task step (`srun --pty bash`) run as one plain process on
  all local GPUs: JAX would otherwise fail for want of a coordinator, or keep only GPU `SLURM_LOCALID`;
- TPU VMs: `TPU_WORKER_HOSTNAMES` / `MEGASCALE_COORDINATOR_ADDRESS`, or `HERBERTA_DISTRIBUTED=1` for a pod
  slice whose workers are found through the metadata server (`launch/tpu_pod.sh` sets it);
- none of these: a plain single-process run.
CPU-only runs use the gloo collectives, so several processes work without accelerators.

`check_devices()` then compares the devices JAX found with `HERBERTA_EXPECT_DEVICES` (this process's device count)
and `HERBERTA_EXPECT_PLATFORM` (gpu, tpu or cpu), which the launchers set, and fails when a GPU host's JAX runs on
the CPU. A mismatch raises `DeviceMismatchError`, whose message is one self-sufficient line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping

log = logging.getLogger(__name__)

# Step ids Slurm gives to what is not an srun step: the batch script's own step and the external (ssh) step.
_NOT_SRUN_STEPS = ("4294967294", "4294967295")
# What JAX's SlurmCluster.is_env_present requires (jax/_src/clusters/slurm_cluster.py).
_JAX_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


class DeviceMismatchError(RuntimeError):
  """The devices JAX found are not the ones expected; the message says what to do, in one line."""


@dataclasses.dataclass(frozen=True)
class Cluster:
  """How this process starts: `mode` is "single" (no jax.distributed), "explicit" (HERBERTA_* variables) or
  "auto" (JAX detects SLURM / TPU itself); `num_processes` is known for explicit and SLURM jobs; `reason` is
  for the log."""
  mode: str
  reason: str
  num_processes: int | None = None


def detect_cluster(env: Mapping[str, str]) -> Cluster:
  """Decides from the environment alone whether this is a multi-process job, and how JAX should join it."""
  if env.get("HERBERTA_COORDINATOR"):
    return Cluster("explicit", "HERBERTA_COORDINATOR is set", _int_var(env, "HERBERTA_NUM_PROCESSES"))
  if env.get("HERBERTA_DISTRIBUTED") == "1":
    return Cluster("auto", "HERBERTA_DISTRIBUTED=1")
  if "SLURM_JOB_ID" in env:
    return _slurm_cluster(env)
  for name in ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
    if name in env:
      return Cluster("auto", f"{name} is set")
  return Cluster("single", "no cluster in the environment")


def _slurm_cluster(env: Mapping[str, str]) -> Cluster:
  step = env.get("SLURM_STEP_ID")
  # srun exports the step's task count as SLURM_STEP_NUM_TASKS; SLURM_NTASKS may be the allocation's.
  tasks_text = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
  try:
    tasks = int(tasks_text)
  except ValueError:
    tasks = 1
  if step is None or step in _NOT_SRUN_STEPS:
    note = f" (the allocation has {tasks} tasks: start them with srun, e.g. launch/slurm.sbatch)" if tasks > 1 else ""
    return Cluster("single", f"SLURM allocation without an srun step{note}: one process on this host's devices")
  if tasks <= 1:
    return Cluster("single", "SLURM step of one task (e.g. srun --pty): one process on all local devices")
  missing = [name for name in _JAX_SLURM_VARS if name not in env]
  if missing:
    raise ValueError(f"SLURM step {step} has {tasks} tasks but lacks {', '.join(missing)}, which JAX needs to join "
                     "them: start the tasks with srun")
  return Cluster("auto", f"SLURM step {step} of {tasks} tasks", tasks)


def _int_var(env: Mapping[str, str], name: str) -> int:
  try:
    return int(env[name])
  except (KeyError, ValueError) as e:
    raise ValueError(f"HERBERTA_COORDINATOR is set, so {name} must be set to an integer too "
                     f"(got {env.get(name)!r})") from e


def initialize() -> None:
  """Starts jax.distributed when the environment describes a multi-process job, then checks the devices."""
  import jax  # here, not on import: the CLIs import this module before cli.run_cli may restart the process
  cluster = detect_cluster(os.environ)
  if cluster.mode != "single":
    if os.environ.get("JAX_PLATFORMS", "") == "cpu" or not _has_accelerator_plugin():
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if cluster.mode == "explicit":
      jax.distributed.initialize(coordinator_address=os.environ["HERBERTA_COORDINATOR"],
                                 num_processes=cluster.num_processes,
                                 process_id=_int_var(os.environ, "HERBERTA_PROCESS_ID"), **_timeouts())
    else:
      # num_processes=None lets JAX read it; for SLURM it is the step's count the decision was made on.
      jax.distributed.initialize(num_processes=cluster.num_processes, **_timeouts())
  log.info("start-up: %s; process %d of %d, %d local / %d global %s devices", cluster.reason,
           jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
           jax.default_backend())
  check_devices()


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


# -- start-up device check ------------------------------------------------------------------------------------

_PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu", "gpu": "gpu", "tpu": "tpu", "cpu": "cpu"}


def check_devices(env: Mapping[str, str] | None = None) -> None:
  """Raises DeviceMismatchError when this process's devices differ from the expected ones."""
  import jax
  env = os.environ if env is None else env
  platform = jax.default_backend()
  message = device_mismatch(env, platform, jax.local_device_count(),
                            host_gpus=_host_gpus(env) if platform == "cpu" else None)
  if message:
    raise DeviceMismatchError(message)


def device_mismatch(env: Mapping[str, str], platform: str, count: int, host_gpus: tuple[int, str] | None) -> str:
  """The one-line complaint about `count` local devices on `platform`, or "" when they are as expected.

  `host_gpus` is (number, where it was seen) of the GPUs this host shows outside JAX, or None when not looked for.
  """
  platform = _PLATFORM_ALIASES.get(platform, platform)
  found = f"found {count} {platform} device{'s' if count != 1 else ''}"
  expected_platform = env.get("HERBERTA_EXPECT_PLATFORM", "").strip().lower()
  if expected_platform:
    if expected_platform not in _PLATFORM_ALIASES:
      raise ValueError(f"HERBERTA_EXPECT_PLATFORM={expected_platform!r}: use gpu, tpu or cpu")
    expected_platform = _PLATFORM_ALIASES[expected_platform]
    if expected_platform != platform:
      return (f"device check: expected {expected_platform} devices (HERBERTA_EXPECT_PLATFORM), {found}; "
              f"{_platform_advice(expected_platform, platform)}")
  expected_count = env.get("HERBERTA_EXPECT_DEVICES", "").strip()
  if expected_count:
    if not expected_count.isdigit() or int(expected_count) < 1:
      raise ValueError(f"HERBERTA_EXPECT_DEVICES={expected_count!r}: must be a positive number of devices")
    if int(expected_count) != count:
      return (f"device check: expected {expected_count} {expected_platform or platform} devices in this process "
              f"(HERBERTA_EXPECT_DEVICES), {found}; check CUDA_VISIBLE_DEVICES / JAX_LOCAL_DEVICE_IDS / "
              "XLA_FLAGS, and under SLURM start the tasks with srun and request the GPUs (--gpus-per-node)")
  # Unprompted: a GPU host whose JAX fell back to the CPU. An explicit JAX_PLATFORMS is the user's choice.
  if platform == "cpu" and not env.get("JAX_PLATFORMS") and host_gpus and host_gpus[0] > 0:
    return (f"device check: this host has {host_gpus[0]} GPU{'s' if host_gpus[0] != 1 else ''} ({host_gpus[1]}) "
            f"but JAX {found}; {_platform_advice('gpu', 'cpu')}, or set JAX_PLATFORMS=cpu to train on the CPU")
  return ""


def _platform_advice(expected: str, platform: str) -> str:
  import jax
  if expected == "gpu":
    return (f"install JAX's GPU backend (pip install \"jax[cuda12]=={jax.__version__}\") and check that "
            "CUDA_VISIBLE_DEVICES lists the GPUs and nvidia-smi sees them")
  if expected == "tpu":
    return f"install JAX's TPU backend (pip install \"jax[tpu]=={jax.__version__}\") and run on a TPU VM"
  return f"set JAX_PLATFORMS=cpu to run on the CPU (JAX chose {platform})"


def _host_gpus(env: Mapping[str, str]) -> tuple[int, str] | None:
  """GPUs this host offers outside JAX: CUDA_VISIBLE_DEVICES when set (it is what CUDA would show), else
  `nvidia-smi -L`; None when neither says anything."""
  visible = env.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    entries = [v for v in visible.split(",") if v.strip() and v.strip() not in ("-1", "NoDevFiles")]
    return len(entries), f"CUDA_VISIBLE_DEVICES={visible}"
  nvidia_smi = shutil.which("nvidia-smi")
  if nvidia_smi is None:
    return None
  try:
    out = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  return sum(line.startswith("GPU ") for line in out.splitlines()), "nvidia-smi -L"
