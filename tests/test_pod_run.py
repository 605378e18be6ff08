"""A pod's run, on a local fake GCS server: `prepare` writes gs://BUCKET/data; two `jax.distributed` processes (2 CPU
devices each) train the tiny demo config with --workdir gs://BUCKET/run on that data; SIGTERM reaches both in the
middle of the relation stage; both exit with the requeue status after one save; the relaunch finishes, and its
final parameters and test metrics equal those of an uninterrupted run of the same two processes on local disk.
Nothing is written to local disk but caches.
"""

import json
import os
import signal
import subprocess
import sys

import fsspec
import jax
import numpy as np
import pytest
from test_multiprocess import free_port, wait_all
from test_preemption import wait_for
from tiny_run import REPO, TINY_FLAGS, tiny_config

from herberta_jax import storage
from herberta_jax.data import preparation
from herberta_jax.training import data_setup, loop, parallel, preemption

pytestmark = [pytest.mark.slow, pytest.mark.gcs]

RUN_FLAGS = [*TINY_FLAGS, "--config.stage=both", "--config.relation.num_epochs=3",
             "--config.relation.checkpoint_every_steps=10", "--config.data.host_reading=all"]


def local_files(folder) -> set[str]:
  return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def prepare(inputs, tokenizer, out, env, cwd) -> None:
  proc = subprocess.run([sys.executable, "-m", "herberta_jax.prepare", "--input", str(inputs), "--tokenizer",
                         str(tokenizer), "--out", str(out), "--max_seq_len", "64"], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]


def start_pair(workdir, data, env, logs) -> list[subprocess.Popen]:
  port, procs = free_port(), []
  for i in range(2):
    process_env = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
                   "HERBERTA_COORDINATOR": f"localhost:{port}", "HERBERTA_NUM_PROCESSES": "2",
                   "HERBERTA_PROCESS_ID": str(i)}
    command = [sys.executable, "-m", "herberta_jax.train", "--config", str(REPO / "configs" / "demo.py"),
               "--workdir", str(workdir), f"--config.data.prepared_dir={data}", *RUN_FLAGS]
    procs.append(subprocess.Popen(command, cwd=env["PWD"], env=process_env, stdout=open(logs / f"{i}.log", "a"),
                                  stderr=subprocess.STDOUT))
  return procs


def final_params(workdir, data) -> dict:
  """Both stages' last parameters, restored from the workdir's checkpoints."""
  manifest = preparation.load_manifest(storage.path(data))
  config = tiny_config()
  return {stage: loop.restore_stage_params(workdir, stage, config, manifest, parallel.make_mesh(1), best=False)[1]
          for stage in loop.STAGES}


def test_two_processes_on_a_bucket_stop_for_preemption_and_resume_as_an_unstopped_local_run(
    tmp_path, gcs_server, gcs_bucket):
  # The inputs: the tiny demo corpus and its WordPiece vocabulary, made once on local disk (the user's files).
  data_setup.prepare_run_data(tiny_config(), tmp_path / "seed")
  seed, tokenizer = tmp_path / "seed" / "demo_corpus", tmp_path / "seed" / "wordpiece"
  cwd, home, logs = tmp_path / "cwd", tmp_path / "home", tmp_path / "logs"
  for folder in (cwd, home, logs, tmp_path / "tmp"):
    folder.mkdir()
  env = {**os.environ, **gcs_server, "PYTHONPATH": str(REPO), "PWD": str(cwd), "HOME": str(home),
         "XDG_CACHE_HOME": str(home / ".cache"), "HERBERTA_CACHE": str(home / ".cache" / "herberta_jax"),
         "TMPDIR": str(tmp_path / "tmp"), "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
  given = {folder: local_files(folder) for folder in (seed, tokenizer)}

  # Uninterrupted, on local disk: the reference.
  local_data, local_run = tmp_path / "local_data", tmp_path / "local_run"
  prepare(seed, tokenizer, local_data, env, cwd)
  assert wait_all(start_pair(local_run, local_data, env, logs), timeout=600) == [0, 0], (logs / "0.log").read_text()

  # On the bucket, stopped by SIGTERM in the relation stage and relaunched.
  data, workdir = f"{gcs_bucket}/data", f"{gcs_bucket}/run"
  prepare(seed, tokenizer, data, env, cwd)
  procs = start_pair(workdir, data, env, logs)
  losses = storage.path(workdir) / "relation" / "losses.jsonl"
  wait_for(lambda: losses.exists() and len(losses.read_text().splitlines()) >= 12, procs[0], timeout=400)
  for proc in procs:
    proc.send_signal(signal.SIGTERM)
  assert wait_all(procs, timeout=300) == [preemption.EXIT_REQUEUE] * 2, (logs / "0.log").read_text()[-3000:]
  fsspec.filesystem("gcs", finalize_on_close=True).invalidate_cache()  # this process listed the bucket before
  latest = storage.path(workdir) / "relation" / "checkpoints" / "latest"
  saved = sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit())
  stopped = (logs / "0.log").read_text() + (logs / "1.log").read_text()
  # Both processes stopped at the same step, a logging window's, and saved it (a periodic save or one of its own).
  assert saved and stopped.count(f"stopped for preemption at step {saved[-1]}") == 2, (saved, stopped[-3000:])
  assert not (storage.path(workdir) / "tagger" / "losses.jsonl").exists(), "the tagger started before the relaunch"

  assert wait_all(start_pair(workdir, data, env, logs), timeout=600) == [0, 0], (logs / "0.log").read_text()[-3000:]
  fsspec.filesystem("gcs", finalize_on_close=True).invalidate_cache()
  resumed_log = (logs / "0.log").read_text()
  assert f"resumed from step {saved[-1]}" in resumed_log

  bucket_params, local_params = final_params(workdir, data), final_params(local_run, local_data)
  for x, y in zip(jax.tree.leaves(bucket_params), jax.tree.leaves(local_params), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
  bucket_metrics = json.loads((storage.path(workdir) / "metrics.json").read_text())
  local_metrics = json.loads((local_run / "metrics.json").read_text())
  for part in ("relation", "entity1", "entity2", "entity_pair", "combined"):
    for key in ("tp", "predicted", "gold", "f1"):
      assert bucket_metrics[part][key] == pytest.approx(local_metrics[part][key], abs=1e-6), (part, key)
  assert (storage.path(workdir) / "export" / "herberta.json").exists()

  # Nothing local but caches: the working directory is empty, the user's inputs untouched, HOME holds caches only.
  assert local_files(cwd) == set()
  assert {folder: local_files(folder) for folder in (seed, tokenizer)} == given
  assert all(name.startswith(".cache") for name in local_files(home)), local_files(home)
  assert not list((tmp_path / "tmp").iterdir())
  written = storage.files_under(storage.path(gcs_bucket))
  assert any(name.startswith("run/relation/checkpoints/latest/") for name in written)
  assert any(name.startswith("run/relation/tensorboard/events.out.tfevents.") for name in written)
  assert any(name.startswith("data/") and name.endswith("manifest.json") for name in written)
