"""`cpu_devices`: how many devices a CPU host is split into, and that JAX gets them only where the user did not
choose and its backends are not up yet."""

import os
import subprocess
import sys

import pytest
from tiny_run import REPO

from herberta_jax import cpu_devices


@pytest.mark.parametrize("batch_size, cores, expected", [(64, 2, 2), (64, 6, 4), (64, 16, 16), (60, 16, 15),
                                                         (7, 4, 1), (2, 8, 2), (1, 8, 1)])
def test_per_core_count_is_the_most_devices_that_split_the_batch_evenly(batch_size, cores, expected):
  assert cpu_devices.per_core_count(batch_size, cores) == expected


def _devices_after_split(count: int | None, xla_flags: str | None, touch_jax_first: bool = False) -> str:
  code = ("import jax; from herberta_jax import cpu_devices; "
          + ("jax.devices(); " if touch_jax_first else "")
          + f"print(cpu_devices.split_host(batch_size=6, count={count}), len(jax.devices()))")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **({"XLA_FLAGS": xla_flags} if xla_flags else {}))
  result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout.split("\n")[-2]


def test_split_host_gives_jax_the_devices_asked_for():
  assert _devices_after_split(3, None) == "True 3"
  assert _devices_after_split(None, None) == f"True {cpu_devices.per_core_count(6)}"  # one per core dividing 6


def test_split_host_keeps_the_users_xla_flags():
  assert _devices_after_split(3, "--xla_force_host_platform_device_count=5") == "False 5"


def test_split_host_leaves_a_process_that_already_ran_jax_as_it_is():
  assert _devices_after_split(3, None, touch_jax_first=True) == "False 1"
