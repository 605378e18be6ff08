"""The real training loop against the bare jitted train step, MiniLM shape, on this machine.

  python bench/bench_loop.py [--steps 100] [--rounds 3] [--json] [--restart | --restart_only] [--restart_runs 3]
                             [--compilation_cache_dir DIR] [--gcs] [--against REV [--pairs 3]]

Loop: `loop.train_stage` of the relation stage on the demo corpus (prepared records, the pipeline, the prefetch
thread, logging every 25 steps, checkpoints every 50, one dev evaluation at the end); sentences/s over the steps
after the first (summary.json's `seconds_after_first_step`). Bare: the same jitted step on the same batches
already on the device, timed after each bucket's compilation. The two take turns, bare first and last
(`--rounds` loops, each a fresh run, and one bare run more), so a burst of other work or a drift of the shared
machine lands on both: each loop is divided by the mean of the bare runs before and after it, and the goal is the
median of those ratios >= 0.95 (the ratio of the two sides' medians is printed too). Each loop starts with an
empty compilation cache unless `--compilation_cache_dir` names one a run before filled: then it reads its programs
instead of compiling them.

`--restart` also times start-to-first-step of a fresh training process with an empty compilation cache (killed
after a checkpoint), and of the same run restarted (resuming from that checkpoint) with the cache it left, each
from the stage's start (`train_stage`, what summary.json reports) and from the process's launch (adding imports,
the backend's start and reading the manifest); `--restart_runs` pairs, each figure printed and their medians.
The goal is warm / cold <= 1/3. `--restart_only` skips the loop against the bare step.

`--gcs`: the loop reads its prepared data from, and writes its workdir (checkpoints, losses, events) to, a bucket
on a local fake GCS server (tests/fake_gcs.py) started by the bench: the path layer's cost against the same bare
step. Its result goes to `loop_minilm_gcs.json`. A real bucket adds network latency this cannot show; the loop's
reads run ahead in the feeding thread and its saves in the background, which is what it measures.

`--against REV`: is this tree's loop slower than revision REV's? The bench runs `--pairs` times in this tree and in
a temporary git worktree of REV, one round each, taking turns (this tree first), and compares the two sides'
median loop rates and median loop / bare ratios, each side against its own bare step. `--json` adds the
comparison to `loop_minilm.json` under "against".
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

import jax
import numpy as np
from bench_prepare_memory import provenance  # when, on what CPU, from which commit

from configs import demo
from herberta_jax import storage
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
RESULT = REPO / "bench" / "results" / "loop_minilm.json"
GCS_RESULT = REPO / "bench" / "results" / "loop_minilm_gcs.json"


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
          "--steps", str(steps), "--launched_at", repr(time.time())]


def _seconds_to_first_step(log: str) -> dict:
  """From a `--train_only` run's log: seconds from the stage's start and from the process's launch."""
  stage = float(log.split("first step done ")[1].split(" s")[0])  # the loop's log line
  before_stage = float(log.split("stage starts ")[1].split(" s")[0])  # train_only's log line
  return {"stage": stage, "process": before_stage + stage}


def restart_timings(workdir: pathlib.Path, cache: pathlib.Path) -> dict:
  """Seconds to the first step, from the stage's start and from the process's launch, of a cold start and of its
  restart: {"cold": {"stage": s, "process": s}, "warm": {...}}, each a fresh process (`--train_only`).

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
  cold = _seconds_to_first_step(log.read_text())
  warm_run = subprocess.run(_train_only_command(workdir, cache, total), cwd=REPO, check=True, capture_output=True,
                            text=True)
  if "resumed from step" not in warm_run.stderr:
    raise RuntimeError(f"the restart did not resume:\n{warm_run.stderr[-2000:]}")
  (workdir / "warm.log").write_text(warm_run.stderr)
  return {"cold": cold, "warm": _seconds_to_first_step(warm_run.stderr)}


def restart_runs(data_dir: pathlib.Path, tmp: pathlib.Path, runs: int) -> dict:
  """`runs` cold/warm pairs, each in a fresh workdir with an empty cache; every figure and their medians."""
  pairs = []
  for run in range(runs):
    restart_dir, cache = tmp / f"restart{run}", tmp / f"xla_restart{run}"
    restart_dir.mkdir()
    (restart_dir / "data").symlink_to(data_dir)
    pair = restart_timings(restart_dir, cache)
    pair["ratio"] = {start: pair["warm"][start] / pair["cold"][start] for start in ("stage", "process")}
    pairs.append(pair)
    print(f"restart run {run + 1}/{runs}: start to first step, cold cache {pair['cold']['stage']:.2f} s, restarted "
          f"with a warm cache {pair['warm']['stage']:.2f} s, ratio {pair['ratio']['stage']:.2f} (from the stage's "
          f"start); from the process's launch {pair['cold']['process']:.2f} s, {pair['warm']['process']:.2f} s, "
          f"ratio {pair['ratio']['process']:.2f}", flush=True)
  median = {start: {kind: statistics.median(p[kind][start] for p in pairs) for kind in ("cold", "warm", "ratio")}
            for start in ("stage", "process")}
  for start, figures in median.items():
    print(f"median of {runs}, from the {start}'s start: cold {figures['cold']:.2f} s, warm {figures['warm']:.2f} s, "
          f"warm / cold {figures['ratio']:.2f} (goal <= 0.33)")
  return {"runs": pairs, "median": median, "date": datetime.date.today().isoformat(),
          "load_average_1min_at_end": os.getloadavg()[0]}


def train_only(workdir: pathlib.Path, cache: str, steps: int, launched_at: float | None) -> None:
  """Trains (or resumes) the bench's relation stage in `workdir` for `steps` steps in all, cache in `cache`,
  checkpointing every RESTART_STEPS steps."""
  data_dir = workdir / "data"
  manifest = preparation.load_manifest(data_dir)
  steps_per_epoch = max(1, sum(i["count"] for i in manifest["splits"]["train"].values()) // BATCH)
  config = bench_config(steps_per_epoch, steps, cache)
  config.relation.checkpoint_every_steps = RESTART_STEPS
  config.log_every_steps = 1  # the step's loss is seen, so its checkpoint may be written
  mesh = parallel.make_mesh(1)
  # Imports, the backend's start and the manifest: what a restart spends before the stage, from its launch.
  if launched_at is not None:
    logging.info("stage starts %.2f s after the process was launched", time.time() - launched_at)
  loop.train_stage("relation", config, workdir, data_dir, manifest, mesh)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--rounds", type=int, default=3, help="loops timed, each between two bare-step runs")
  parser.add_argument("--json", action="store_true",
                      help=f"write the figures measured into {RESULT.relative_to(REPO)}, keeping its other part")
  parser.add_argument("--restart", action="store_true", help="also time cold and warm-cache starts")
  parser.add_argument("--restart_only", action="store_true",
                      help="time only the cold and warm-cache starts (--json updates only their part of the file)")
  parser.add_argument("--restart_runs", type=int, default=3, help="cold/warm pairs timed (default 3)")
  parser.add_argument("--train_only", nargs=2, metavar=("WORKDIR", "CACHE"), help=argparse.SUPPRESS)
  parser.add_argument("--launched_at", type=float, help=argparse.SUPPRESS)
  parser.add_argument("--compilation_cache_dir", default="",
                      help="the loop's compilation cache (default: a new, empty one); the restarts keep their own")
  parser.add_argument("--gcs", action="store_true", help="data and workdirs in a bucket on a local fake GCS server")
  parser.add_argument("--against", metavar="REV", help="compare with git revision REV, the two taking turns")
  parser.add_argument("--pairs", type=int, default=3, help="with --against: runs on each side (default 3)")
  args = parser.parse_args()
  if args.gcs:
    gcs_loop(args)
    return
  if args.against:
    against(args.against, args.pairs, args.steps, args.json)
    return
  if args.train_only:
    # The loop's "first step done" line is what the runs report; an imported library may have set up logging.
    logging.basicConfig(level=logging.INFO, force=True)
    train_only(pathlib.Path(args.train_only[0]), args.train_only[1], args.steps, args.launched_at)
    return
  # --json replaces only the parts this run measured: the loop against the bare step, the restarts, or both.
  result = json.loads(RESULT.read_text()) if args.json and RESULT.exists() else {}
  kept_restart, kept_against = result.pop("restart", None), result.pop("against", None)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    data_dir = data_setup.prepare_run_data(bench_config(None, args.steps, ""), tmp / "run")
    if not args.restart_only:
      result = {"device": jax.devices()[0].device_kind, "platform": platform.platform(), "batch": BATCH,
                "buckets": [32, 64], "steps": args.steps, "shape": MINILM}
      result["compilation_cache"] = "given, possibly warm" if args.compilation_cache_dir else "empty"
      result.update(loop_against_bare(data_dir, tmp, args.steps, args.rounds, args.compilation_cache_dir))
    if args.restart or args.restart_only:
      result.pop("cold_seconds_to_first_step", None)  # the single figures of earlier versions of this file
      result.pop("warm_seconds_to_first_step", None)
      result["restart"] = {"device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
                           **restart_runs(data_dir, tmp, args.restart_runs)}
    elif kept_restart:
      result["restart"] = kept_restart
  if kept_against:
    result["against"] = kept_against
  if args.json:
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULT}")


def against(revision: str, pairs: int, steps: int, write_json: bool) -> None:
  """This tree's loop against revision `revision`'s, one round of this script per run, the two taking turns."""
  commit = subprocess.run(["git", "rev-parse", "--short", f"{revision}^{{commit}}"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout.strip()
  ran = provenance()
  head = ran.pop("commit")
  sides: dict[str, list[dict]] = {"this_tree": [], commit: []}
  with tempfile.TemporaryDirectory() as tmp:
    other = pathlib.Path(tmp) / commit
    subprocess.run(["git", "worktree", "add", "--detach", str(other), commit], cwd=REPO, check=True,
                   capture_output=True)
    try:
      for pair in range(pairs):
        for side, tree in (("this_tree", REPO), (commit, other)):
          sides[side].append(one_round(tree, steps))
          print(f"pair {pair + 1}/{pairs}, {side}: loop {sides[side][-1]['loop']:.1f} sentences/s, "
                f"loop / bare {sides[side][-1]['ratio']:.3f}", flush=True)
    finally:
      subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=REPO, capture_output=True)
  medians = {side: {key: statistics.median(run[key] for run in runs) for key in ("loop", "bare", "ratio")}
             for side, runs in sides.items()}
  this, base = medians["this_tree"], medians[commit]
  result = {"revision": commit, "this_tree": head, "pairs": pairs, "runs": sides, "medians": medians,
            "loop_rate_this_over_revision": this["loop"] / base["loop"], **ran}
  print(f"medians over {pairs} runs each: this tree ({head}) loop {this['loop']:.1f} sentences/s, loop / bare "
        f"{this['ratio']:.3f}; {commit} loop {base['loop']:.1f}, loop / bare {base['ratio']:.3f}; this tree's loop "
        f"rate / {commit}'s: {result['loop_rate_this_over_revision']:.3f}")
  if write_json:
    kept = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    RESULT.write_text(json.dumps({**kept, "against": result}, indent=2) + "\n")
    print(f"wrote {RESULT}")


def one_round(tree: pathlib.Path, steps: int) -> dict:
  """One loop between two bare runs by `tree`'s copy of this script (a fresh process), from its printed summary."""
  proc = subprocess.run([sys.executable, "bench/bench_loop.py", "--rounds", "1", "--steps", str(steps)], cwd=tree,
                        capture_output=True, text=True)
  summary = re.search(r"median ([\d.]+) \(goal.*Medians: loop ([\d.]+) sentences/s.*bare step ([\d.]+)",
                      proc.stdout)
  if proc.returncode != 0 or summary is None:
    raise SystemExit(f"bench_loop in {tree} failed (exit {proc.returncode}):\n"
                     f"{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
  ratio, loop_rate, bare_rate = map(float, summary.groups())
  return {"loop": loop_rate, "bare": bare_rate, "ratio": ratio}


def gcs_loop(args) -> None:
  """The loop against the bare step with the prepared data and the workdirs in a bucket on a local server."""
  sys.path.insert(0, str(REPO / "tests"))
  import fake_gcs
  server, environment = fake_gcs.start()
  os.environ.update(environment)
  try:
    with tempfile.TemporaryDirectory() as tmp:
      tmp = pathlib.Path(tmp)
      local_data = data_setup.prepare_run_data(bench_config(None, args.steps, ""), tmp / "run")
      root = storage.path(fake_gcs.make_bucket("bench-loop"))
      storage.copy_tree(local_data, root / "data")
      result = {"device": jax.devices()[0].device_kind, "platform": platform.platform(), "batch": BATCH,
                "buckets": [32, 64], "steps": args.steps, "shape": MINILM, "storage": "gs:// on a local fake-gcs-server",
                "compilation_cache": "given, possibly warm" if args.compilation_cache_dir else "empty"}
      result.update(loop_against_bare(root / "data", root, args.steps, args.rounds, args.compilation_cache_dir,
                                      cache_root=tmp))
  finally:
    server.stop()
  if args.json:
    GCS_RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {GCS_RESULT}")


def loop_against_bare(data_dir, tmp, steps: int, rounds: int, cache_dir: str, *, cache_root=None) -> dict:
  """The loop's and the bare step's sentences/s over `steps` steps, taking turns: bare, loop, bare, ..., loop,
  bare (`rounds` loops). Each loop is compared with the bare runs on either side of it, so a machine that speeds
  up or slows down during the bench moves both sides of a round alike. Each loop is a fresh run (with a fresh,
  empty cache unless `cache_dir` is given). `data_dir` and the workdirs' folder `tmp` may be URLs; the caches
  then go under `cache_root`."""
  cache_root = cache_root or tmp
  manifest = preparation.load_manifest(data_dir)
  mesh = parallel.make_mesh(1)
  steps_per_epoch = max(1, sum(i["count"] for i in manifest["splits"]["train"].values()) // BATCH)
  configs = [bench_config(steps_per_epoch, steps, cache_dir or str(cache_root / f"xla{index}")) for index in range(rounds)]
  bare = [bare_rate(configs[0], data_dir, manifest, mesh, steps)]
  runs = []
  for index, config in enumerate(configs):
    workdir = tmp / f"run{index}"
    loop.train_stage("relation", config, workdir, data_dir, manifest, mesh)
    summary = json.loads(storage.path(workdir / "relation" / "summary.json").read_text())
    bare.append(bare_rate(config, data_dir, manifest, mesh, steps))  # the same batches as the bare run before
    run = {"loop_sentences_per_second": (summary["steps_run"] - 1) * BATCH / summary["seconds_after_first_step"],
           "bare_sentences_per_second": (bare[-2] + bare[-1]) / 2, "bare_before_and_after": bare[-2:],
           "seconds_to_first_step": summary["seconds_to_first_step"],
           "seconds_after_first_step": summary["seconds_after_first_step"],
           "load_average_1min": os.getloadavg()[0]}
    run["ratio"] = run["loop_sentences_per_second"] / run["bare_sentences_per_second"]
    # The median logging window: the loop's rate between its checkpoints and evaluation.
    run["median_window_ratio"] = float(np.median(summary["window_sentences_per_second"])) / \
        run["bare_sentences_per_second"]
    runs.append(run)
    print(f"round {index + 1}/{rounds}: loop {run['loop_sentences_per_second']:.1f} sentences/s, bare step "
          f"{bare[-2]:.1f} before and {bare[-1]:.1f} after: ratio {run['ratio']:.3f}; median logging window "
          f"{run['median_window_ratio']:.3f}; the stage's start to its first step {run['seconds_to_first_step']:.1f} "
          f"s, then {run['seconds_after_first_step']:.1f} s", flush=True)
  loop_median = statistics.median(run["loop_sentences_per_second"] for run in runs)
  result = {"rounds": runs, "bare_runs": bare, "loop_sentences_per_second": loop_median,
            "bare_sentences_per_second": statistics.median(bare),
            "ratio": statistics.median(run["ratio"] for run in runs),
            "ratio_of_medians": loop_median / statistics.median(bare),
            "seconds_to_first_step": statistics.median(run["seconds_to_first_step"] for run in runs)}
  ratios = ", ".join(f"{run['ratio']:.3f}" for run in runs)
  print(f"each loop against the bare runs beside it: {ratios}; median {result['ratio']:.3f} (goal >= 0.95). "
        f"Medians: loop {loop_median:.1f} sentences/s over {rounds} runs, bare step "
        f"{result['bare_sentences_per_second']:.1f} over {len(bare)}: {result['ratio_of_medians']:.3f}")
  return result


if __name__ == "__main__":
  main()
