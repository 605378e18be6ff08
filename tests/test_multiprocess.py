"""Real multi-process training on localhost: 2 processes x 2 CPU devices, gloo collectives, jax.distributed."""

import os
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
from tiny_run import REPO, losses, tiny_config, train_command, workdir_with_data

from herberta_jax.training import data_setup

pytestmark = pytest.mark.slow  # several JAX processes talking over gloo

# Every host reads the whole of each global batch and keeps its slice, so 2x2 and 1x4 see the same batches.
SAME_BATCHES = ["--config.data.host_reading=all", "--config.relation.num_epochs=1"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return data_setup.prepare_run_data(tiny_config(), tmp_path_factory.mktemp("prepared"))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def env_for(devices: int, **extra) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  env.update(extra)
  return env


def start_processes(workdir, count: int, *flags, heartbeat: int = 100, log_tag: str = "") -> list[subprocess.Popen]:
  port = free_port()
  procs = []
  for i in range(count):
    env = env_for(2, HERBERTA_COORDINATOR=f"localhost:{port}", HERBERTA_NUM_PROCESSES=str(count),
                  HERBERTA_PROCESS_ID=str(i), HERBERTA_HEARTBEAT_TIMEOUT=str(heartbeat))
    log = open(workdir.parent / f"process_{i}{log_tag}.log", "w")
    procs.append(subprocess.Popen(train_command(workdir, *flags), cwd=REPO, env=env, stdout=log,
                                  stderr=subprocess.STDOUT))
  return procs


def wait_all(procs, timeout: float) -> list[int]:
  deadline = time.time() + timeout
  codes = []
  for p in procs:
    try:
      codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise AssertionError(f"processes still running after {timeout}s: a hang") from None
  return codes


def run_single(workdir, *flags):
  result = subprocess.run(train_command(workdir, *flags), cwd=REPO, env=env_for(4), capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]


def log_of(workdir, i: int, log_tag: str = "") -> str:
  return (workdir.parent / f"process_{i}{log_tag}.log").read_text()


def test_two_processes_match_one_process_and_their_checkpoint_continues_in_one(tmp_path, prepared):
  multi = workdir_with_data(tmp_path / "multi", prepared)
  codes = wait_all(start_processes(multi, 2, *SAME_BATCHES), timeout=400)
  assert codes == [0, 0], log_of(multi, 0)[-3000:] + log_of(multi, 1)[-3000:]
  single = workdir_with_data(tmp_path / "single", prepared)
  run_single(single, *SAME_BATCHES)

  multi_losses, single_losses = losses(multi), losses(single)
  assert len(multi_losses) == len(single_losses) >= 20
  np.testing.assert_allclose(multi_losses, single_losses, rtol=1e-5)

  # The 2-process checkpoint restores in 1 process x 4 devices and continues exactly as the 1-process run does.
  more = ["--config.data.host_reading=all", "--config.relation.num_epochs=2"]
  run_single(multi, *more)
  run_single(single, *more)
  continued_multi, continued_single = losses(multi), losses(single)
  assert len(continued_multi) == 2 * len(multi_losses)
  np.testing.assert_allclose(continued_multi, continued_single, rtol=1e-5)


def test_a_killed_process_fails_the_others_promptly_and_the_job_resumes(tmp_path, prepared):
  workdir = workdir_with_data(tmp_path / "run", prepared)
  flags = ["--config.relation.num_epochs=6"]
  procs = start_processes(workdir, 2, *flags, heartbeat=10, log_tag="_killed")
  latest = workdir / "relation" / "checkpoints" / "latest"
  deadline = time.time() + 300
  while time.time() < deadline and not (latest.exists() and any(p.name.isdigit() for p in latest.iterdir())):
    assert all(p.poll() is None for p in procs), "a process ended before its first checkpoint"
    time.sleep(0.2)
  time.sleep(1.0)
  procs[1].send_signal(signal.SIGKILL)
  killed_at = time.time()
  code = wait_all(procs[:1], timeout=120)[0]
  procs[1].wait()
  assert code != 0, "the surviving process should fail, not finish alone"
  waited = time.time() - killed_at
  assert waited < 120
  # The survivor says why it stopped: either its collective fails (a Python traceback) or the coordination
  # service notices the missing heartbeat first and aborts the process with its own fatal line.
  survivor = log_of(workdir, 0, "_killed")
  reasons = ("Traceback", "Error", "JAX distributed service detected fatal errors")
  assert any(reason in survivor for reason in reasons), survivor[-2000:]

  steps_saved = sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit())
  assert steps_saved, "no complete checkpoint left behind"
  codes = wait_all(start_processes(workdir, 2, *flags), timeout=400)
  assert codes == [0, 0], log_of(workdir, 0)[-3000:]
  resumed = log_of(workdir, 0)
  assert f"resumed from step {steps_saved[-1]}" in resumed
