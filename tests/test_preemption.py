"""Preemption: SIGTERM saves at the next step boundary and exits 75; the rerun ends exactly as an unstopped run.

Every `slow` run here is the tiny relation stage of `tiny_run.train_command` (3 epochs, a checkpoint every 10 steps, a
dev evaluation per epoch), started as a subprocess and signalled mid-stage; the reference is one uninterrupted run.
"""

import json
import os
import signal
import subprocess
import sys
import time

import fsspec
import jax
import numpy as np
import pytest
from test_multiprocess import free_port, wait_all
from tiny_run import REPO, tiny_config, train_command, workdir_with_data

from herberta_jax import storage
from herberta_jax.data import preparation
from herberta_jax.errors import UserError
from herberta_jax.training import data_setup, loop, parallel, preemption

ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
           PYTHONPATH=str(REPO))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return data_setup.prepare_run_data(tiny_config(), tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def straight(prepared, tmp_path_factory):
  """The uninterrupted run every stopped one is compared with."""
  workdir = workdir_with_data(tmp_path_factory.mktemp("straight"), prepared)
  subprocess.run(train_command(workdir), cwd=REPO, env=ENV, check=True, capture_output=True)
  return workdir


def saved_steps(latest) -> set[int]:
  """Complete checkpoints in a `latest/` directory (local: a finished step has its number as its name)."""
  return {int(p.name) for p in latest.iterdir() if p.name.isdigit()} if latest.exists() else set()


def logged(workdir) -> bool:
  path = storage.path(workdir) / "relation" / "losses.jsonl"
  return path.exists() and bool(path.read_text().strip())


def saving(latest) -> bool:  # orbax writes a step into a temporary directory, renamed when complete
  return latest.exists() and any("tmp" in p.name for p in latest.iterdir())


def wait_for(condition, proc, timeout: float = 240) -> None:
  deadline = time.time() + timeout
  while not condition():
    assert proc.poll() is None, "the run ended before it could be signalled: make it longer"
    assert time.time() < deadline, "the run never got there"
    time.sleep(0.005)


def outcome(workdir) -> dict:
  """What an uninterrupted and a stopped-then-resumed run must share: every step's loss, the dev scores, the
  last and best steps, and the final parameters."""
  stage_dir = storage.path(workdir) / "relation"
  by_step = {}
  for line in (stage_dir / "losses.jsonl").read_text().splitlines():
    record = json.loads(line)
    by_step[record["step"]] = record["loss"]  # a resumed run rewrites the steps after its checkpoint
  summary = json.loads((stage_dir / "summary.json").read_text())
  manifest = preparation.load_manifest(data_dir_of(workdir))
  _, params = loop.restore_stage_params(workdir, "relation", tiny_config(), manifest, parallel.make_mesh(4),
                                        best=False)
  return {"losses": [by_step[s] for s in sorted(by_step)], "params": params,
          **{key: summary[key] for key in ("final_step", "best_step", "best_score", "stopped_early")}}


def data_dir_of(workdir):
  return storage.path(workdir) / "data" if storage.is_local(workdir) else DATA_DIRS[workdir]


DATA_DIRS = {}  # the local prepared data of a bucket workdir


def assert_same_run(resumed, reference) -> None:
  a, b = outcome(resumed), outcome(reference)
  assert len(a["losses"]) == len(b["losses"]) == b["final_step"]
  np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-6)
  for key in ("final_step", "best_step", "stopped_early"):
    assert a[key] == b[key], key
  assert a["best_score"] == pytest.approx(b["best_score"], abs=1e-6)
  for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"]), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


def start(workdir, *flags, env=None) -> subprocess.Popen:
  return subprocess.Popen(train_command(workdir, *flags), cwd=REPO, env=env or ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def finish(proc, timeout: float = 240) -> tuple[int, str]:
  _, stderr = proc.communicate(timeout=timeout)
  return proc.returncode, stderr


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_exits_75_and_the_rerun_ends_as_if_never_stopped(tmp_path, prepared,
                                                                                          straight):
  workdir = workdir_with_data(tmp_path, prepared)
  latest = workdir / "relation" / "checkpoints" / "latest"
  proc = start(workdir)
  wait_for(lambda: logged(workdir), proc)  # the first logging window (step 20) is written: mid relation stage
  proc.send_signal(signal.SIGTERM)
  code, stderr = finish(proc)
  assert code == preemption.EXIT_REQUEUE, stderr[-3000:]
  stopped_at = max(saved_steps(latest))
  assert stopped_at % 10, f"step {stopped_at}: saved at the signal, not at a periodic checkpoint"
  assert f"preempted: the relation stage saved step {stopped_at}" in stderr
  assert "run the same command again to resume" in stderr
  assert not (workdir / "relation" / "summary.json").exists(), "a stopped stage is not finished"

  rerun = subprocess.run(train_command(workdir), cwd=REPO, env=ENV, capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert_same_run(workdir, straight)


@pytest.mark.slow
def test_sigterm_during_an_asynchronous_save_keeps_both_saves_and_resumes_exactly(tmp_path, prepared, straight):
  workdir = workdir_with_data(tmp_path, prepared)
  latest = workdir / "relation" / "checkpoints" / "latest"
  proc = start(workdir, "--config.relation.checkpoint_every_steps=1")
  wait_for(lambda: logged(workdir), proc)
  wait_for(lambda: saving(latest), proc)  # a save is being written right now
  proc.send_signal(signal.SIGTERM)
  code, stderr = finish(proc)
  assert code == preemption.EXIT_REQUEUE, stderr[-3000:]
  assert not saving(latest), "the save in flight and the preemption's save are both committed before the exit"
  rerun = subprocess.run(train_command(workdir), cwd=REPO, env=ENV, capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert_same_run(workdir, straight)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["second SIGTERM", "deadline"])
def test_a_second_sigterm_or_the_deadline_exits_at_once_and_the_last_complete_checkpoint_resumes(
    tmp_path, prepared, straight, how):
  workdir = workdir_with_data(tmp_path, prepared)
  latest = workdir / "relation" / "checkpoints" / "latest"
  # A save at every step: the forced exit lands in the middle of one (or of the step before it).
  env = {**ENV, preemption.DEADLINE_ENV: "0.001"} if how == "deadline" else ENV
  proc = start(workdir, "--config.relation.checkpoint_every_steps=1", env=env)
  wait_for(lambda: logged(workdir), proc)
  wait_for(lambda: saved_steps(latest) and saving(latest), proc)  # one save complete, the next in flight
  proc.send_signal(signal.SIGTERM)
  if how == "second SIGTERM":
    time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
  code, stderr = finish(proc)
  assert code == preemption.EXIT_REQUEUE, stderr[-3000:]
  reason = "a second SIGTERM" if how == "second SIGTERM" else "the run had not ended"
  assert f"{reason}: exiting at once with status 75" in stderr, stderr[-3000:]
  assert "preempted: the relation stage saved" not in stderr, "the forced exit came before the save's end"
  assert saved_steps(latest), "a complete checkpoint is left"
  rerun = subprocess.run(train_command(workdir), cwd=REPO, env=ENV, capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert_same_run(workdir, straight)


def local_files(folder) -> set[str]:
  return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.slow
@pytest.mark.gcs
def test_a_bucket_workdir_stops_and_resumes_exactly_and_writes_nothing_local_but_caches(
    tmp_path, prepared, straight, gcs_server, gcs_bucket):
  workdir = f"{gcs_bucket}/run"
  DATA_DIRS[workdir] = prepared
  cwd, home = tmp_path / "cwd", tmp_path / "home"
  cwd.mkdir()
  home.mkdir()
  env = {**ENV, **gcs_server, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
         "HERBERTA_CACHE": str(home / ".cache" / "herberta_jax"), "TMPDIR": str(tmp_path / "tmp")}
  (tmp_path / "tmp").mkdir()
  driver = [sys.executable, str(REPO / "tests" / "stage_driver.py"), workdir, str(prepared)]
  prepared_files = local_files(prepared)

  proc = subprocess.Popen(driver, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  wait_for(lambda: logged(workdir), proc)
  proc.send_signal(signal.SIGTERM)
  code, stderr = finish(proc)
  assert code == preemption.EXIT_REQUEUE, stderr[-3000:]
  latest = storage.path(workdir) / "relation" / "checkpoints" / "latest"
  committed = {int(p.name) for p in latest.iterdir() if (p / "commit_success.txt").exists()}
  assert max(committed) % 10, "saved at the signal"
  rerun = subprocess.run(driver, cwd=cwd, env=env, capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr[-3000:]

  # gcsfs caches the listings this process made (epath's instance: finalize_on_close), and the rerun has since
  # replaced what they list.
  fsspec.filesystem("gcs", finalize_on_close=True).invalidate_cache()
  assert_same_run(workdir, straight)
  written = storage.files_under(storage.path(workdir) / "relation")
  for expected in ("losses.jsonl", "summary.json", "model_config.json"):
    assert f"relation/{expected}"[len("relation/"):] in written
  assert any(name.startswith("tensorboard/events.out.tfevents.") for name in written)
  assert local_files(cwd) == set(), "the run wrote into its working directory"
  assert local_files(prepared) == prepared_files, "the prepared data is only read"
  assert all(name.startswith(".cache") for name in local_files(home)), local_files(home)


@pytest.mark.slow
def test_two_processes_stop_at_the_same_step_and_the_rerun_ends_as_if_never_stopped(tmp_path, prepared, straight):
  workdir = workdir_with_data(tmp_path, prepared)
  latest = workdir / "relation" / "checkpoints" / "latest"
  flags = ["--config.data.host_reading=all"]  # every host reads each global batch: the same batches as 1 process

  def start_two() -> list[subprocess.Popen]:
    port = free_port()
    procs = []
    for i in range(2):
      env = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "HERBERTA_COORDINATOR": f"localhost:{port}",
             "HERBERTA_NUM_PROCESSES": "2", "HERBERTA_PROCESS_ID": str(i)}
      log = open(tmp_path / f"process_{i}.log", "w")
      procs.append(subprocess.Popen(train_command(workdir, *flags), cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT))
    return procs

  procs = start_two()
  wait_for(lambda: logged(workdir), procs[0])
  for proc in procs:
    proc.send_signal(signal.SIGTERM)
  codes = wait_all(procs, timeout=240)
  logs = [(tmp_path / f"process_{i}.log").read_text() for i in range(2)]
  assert codes == [preemption.EXIT_REQUEUE] * 2, logs[0][-3000:] + logs[1][-3000:]
  stopped_at = max(saved_steps(latest))
  for text in logs:
    assert f"stopped for preemption at step {stopped_at}" in text, text[-3000:]

  codes = wait_all(start_two(), timeout=240)
  assert codes == [0, 0], (tmp_path / "process_0.log").read_text()[-3000:]
  assert_same_run(workdir, straight)


def test_the_watcher_hears_sigterm_in_one_process_and_restores_the_handler_after():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.Watcher(deadline_s=60) as watcher:
    assert signal.getsignal(signal.SIGTERM) != before
    assert not watcher.should_stop(agree=True) and not watcher.stopping
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.time() + 10
    while not watcher.stopping and time.time() < deadline:  # the handler runs at the next bytecode
      time.sleep(0.01)
    assert watcher.should_stop(agree=False) and watcher.stopping
    assert watcher._timer is not None and watcher._timer.is_alive()  # the forced exit is armed
  assert signal.getsignal(signal.SIGTERM) == before
  assert watcher._timer is None, "the forced exit is disarmed when the run ends"


def test_request_stop_and_the_deadline_setting(monkeypatch):
  with preemption.Watcher(deadline_s=60) as watcher:
    watcher.request_stop()
    assert watcher.should_stop(agree=False)
  monkeypatch.setenv(preemption.DEADLINE_ENV, "7.5")
  assert preemption.Watcher().deadline_s == 7.5
  monkeypatch.delenv(preemption.DEADLINE_ENV)
  assert preemption.deadline_from_env() == preemption.DEFAULT_DEADLINE_S == 25
  for bad in ("0", "-3", "soon"):
    with pytest.raises(UserError, match=f"{preemption.DEADLINE_ENV}=.*positive number of seconds"):
      preemption.deadline_from_env({preemption.DEADLINE_ENV: bad})
