"""The real training loop against the bare jitted train step, MiniLM shape, on this machine.

  python bench/bench_loop.py [--steps 100] [--json] [--restart]

Loop: `loop.train_stage` of the relation stage on the demo corpus (prepared records, the pipeline, the prefetch
thread, logging every 25 steps, checkpoints every 50, one dev evaluation at the end); sentences/s over the steps
after the first (summary.json's `seconds_after_first_step`). Bare: the same jitted step on the same batches
already on the device, timed after each bucket's compilation. The goal is a ratio loop / bare >= 0.95.

`--restart` also times start-to-first-step of a fresh training process with an empty compilation cache (killed
after a checkpoint), and of the same run restarted (resuming from that checkpoint) with the cache it left.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

import jax
import numpy as np

from configs import demo
from herberta_jax.data import preparation
from herberta_jax.training import (
  data_setup,
  feeding,
  loop,
  optim,
  parallel,
  stages,
  steps,
)
from herberta_jax.training.state import TrainState

MINILM = dict(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536)
LOG_EVERY, CHECKPOINT_EVERY, BATCH = 25, 50, 32
RESTART_STEPS = 3  # the cold run is killed after its checkpoint at this step; the restart resumes from it


def bench_config(steps_per_epoch: int | None, steps: int, cache_dir: str):
  config = demo.get_config()
  config.stage = "relation"
  config.data.bucket_boundaries = (32, 64)
  config.data.max_seq_len = 64
  config.model.scratch.update(MINILM)
  config.relation.batch_size = BATCH
  config.relation.checkpoint_every_steps = CHECKPOINT_EVERY
  config.relation.patience = 0
  config.log_every_steps = LOG_EVERY
  config.compilation_cache_dir = cache_dir
  config.export = False
  if steps_per_epoch:
    with config.ignore_type():  # a fraction of an epoch; the base config's value is an int
      config.relation.num_epochs = steps / steps_per_epoch
    config.relation.eval_every_steps = steps  # one dev evaluation, at the end
  return config


def bare_rate(config, data_dir, manifest, mesh, steps_total: int, batch_size: int = BATCH) -> float:
  """Sentences/s of the jitted step alone over the loop's first `steps_total` batches, resident on the device."""
  stage = stages.build("relation", config, manifest, mesh)
  feed = feeding.StageFeed(config, data_dir, "train", stage, mesh, batch_size=batch_size,
                           batch_flag="relation.batch_size", train=True)
  with feed.device_batches() as source:
    batches = [next(source) for _ in range(steps_total)]
  tx, schedule = optim.make_optimizer(config.relation, steps_total)
  replicated = parallel.replicated(mesh)
  state = jax.jit(lambda p: TrainState.create(p, tx, loop.dropout_key_data(config, 0)), out_shardings=replicated)(
      stage.initial_params(jax.random.key(0)))
  step = jax.jit(steps.make_train_step(stage.loss_terms(), schedule, 1, rng_impl=config.dropout_rng_impl),
                 donate_argnums=0, out_shardings=(replicated, replicated))
  seen = set()
  for batch in batches:  # compile every shape first, as the loop's rate excludes its first step only
    if batch["input_ids"].shape not in seen:
      seen.add(batch["input_ids"].shape)
      state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for batch in batches[1:]:
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  return (len(batches) - 1) * batch_size / (time.perf_counter() - start)


def _train_only_command(workdir: pathlib.Path, cache: pathlib.Path, steps: int) -> list[str]:
  return [sys.executable, str(pathlib.Path(__file__).resolve()), "--train_only", str(workdir), str(cache),
          "--steps", str(steps)]


def restart_timings(workdir: pathlib.Path, cache: pathlib.Path) -> tuple[float, float]:
  """(cold, warm) seconds from the stage's start to its first step, each in a fresh process (`--train_only`).

  Cold: an empty compilation cache; the process is killed (SIGKILL) once its checkpoint at step RESTART_STEPS is
  complete. Warm: the same command again, which resumes from that checkpoint with the cache the first left: a
  restart of the same run (same config, so the same programs; a run with other total steps has another learning
  rate schedule baked into its step, and compiles anew).
  """
  total = 4 * RESTART_STEPS
  log = workdir / "cold.log"
  with open(log, "w") as stderr:
    process = subprocess.Popen(_train_only_command(workdir, cache, total), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=stderr)
    checkpoint = workdir / "relation" / "checkpoints" / "latest" / str(RESTART_STEPS)
    while process.poll() is None and not checkpoint.is_dir():
      time.sleep(0.05)
    process.kill()
    process.wait()
  if (workdir / "relation" / "summary.json").exists():
    raise RuntimeError("the cold run finished before it could be killed: raise RESTART_STEPS' multiple")
  text = log.read_text()
  cold = float(text.split("first step done ")[1].split(" s")[0])  # the loop's log line
  subprocess.run(_train_only_command(workdir, cache, total), cwd=REPO, check=True, capture_output=True)
  warm = json.loads((workdir / "relation" / "summary.json").read_text())["seconds_to_first_step"]
  return cold, warm


def train_only(workdir: pathlib.Path, cache: str, steps: int) -> None:
  """Trains (or resumes) the bench's relation stage in `workdir` for `steps` steps in all, cache in `cache`,
  checkpointing every RESTART_STEPS steps."""
  data_dir = workdir / "data"
  manifest = preparation.load_manifest(data_dir)
  steps_per_epoch = max(1, sum(i["count"] for i in manifest["splits"]["train"].values()) // BATCH)
  config = bench_config(steps_per_epoch, steps, cache)
  config.relation.checkpoint_every_steps = RESTART_STEPS
  config.log_every_steps = 1  # the step's loss is seen, so its checkpoint may be written
  loop.train_stage("relation", config, workdir, data_dir, manifest, parallel.make_mesh(1))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--json", action="store_true", help="write bench/results/loop_minilm.json")
  parser.add_argument("--restart", action="store_true", help="also time a cold and a warm-cache start")
  parser.add_argument("--train_only", nargs=2, metavar=("WORKDIR", "CACHE"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.train_only:
    logging.getLogger().setLevel(logging.INFO)  # the loop's "first step done" line is what the cold run reports
    train_only(pathlib.Path(args.train_only[0]), args.train_only[1], args.steps)
    return
  result = {"device": jax.devices()[0].device_kind, "platform": platform.platform(), "batch": BATCH,
            "buckets": [32, 64], "steps": args.steps, "shape": MINILM}
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    data_dir = data_setup.prepare_run_data(bench_config(None, args.steps, ""), tmp / "run")
    manifest = preparation.load_manifest(data_dir)
    mesh = parallel.make_mesh(1)
    steps_per_epoch = max(1, sum(i["count"] for i in manifest["splits"]["train"].values()) // BATCH)
    config = bench_config(steps_per_epoch, args.steps, str(tmp / "xla"))
    loop.train_stage("relation", config, tmp / "run", data_dir, manifest, mesh)
    summary = json.loads((tmp / "run" / "relation" / "summary.json").read_text())
    result["loop_sentences_per_second"] = (summary["steps_run"] - 1) * BATCH / summary["seconds_after_first_step"]
    result["bare_sentences_per_second"] = bare_rate(config, data_dir, manifest, mesh, summary["steps_run"])
    result["ratio"] = result["loop_sentences_per_second"] / result["bare_sentences_per_second"]
    # The median logging window: the loop's rate between its checkpoints and evaluation.
    result["median_window_ratio"] = float(np.median(summary["window_sentences_per_second"])) / \
        result["bare_sentences_per_second"]
    print(f"loop {result['loop_sentences_per_second']:.1f} sentences/s, bare step "
          f"{result['bare_sentences_per_second']:.1f} sentences/s: ratio {result['ratio']:.3f} (goal >= 0.95); "
          f"median logging window {result['median_window_ratio']:.3f}")
    if args.restart:
      restart_dir, cache = tmp / "restart", tmp / "xla_restart"
      restart_dir.mkdir()
      (restart_dir / "data").symlink_to(data_dir)
      result["cold_seconds_to_first_step"], result["warm_seconds_to_first_step"] = restart_timings(restart_dir, cache)
      print(f"start to first step: cold cache {result['cold_seconds_to_first_step']:.2f} s, restarted with a warm "
            f"cache {result['warm_seconds_to_first_step']:.2f} s "
            f"({result['warm_seconds_to_first_step'] / result['cold_seconds_to_first_step']:.2f} of cold)")
  if args.json:
    out = REPO / "bench" / "results" / "loop_minilm.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
  main()
