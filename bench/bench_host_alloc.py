"""What the host's allocator costs the CPU train step, and what glibc's transparent huge pages save of it.

  python bench/bench_host_alloc.py [--stage relation] [--steps 15] [--rounds 3] [--json FILE]

On the CPU, XLA allocates each execution's temporaries as one buffer (719 MB for the MiniLM relation step at batch
32 x 64) from a worker thread. glibc serves a request that large from outside its per-thread heaps with a fresh
mmap and unmaps it when freed, so every step faults all of it in again, page by page. This script runs the jitted
step (bench/step_builders.py, MiniLM shape) in fresh processes, taking turns between glibc's defaults and
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35: mmap'd chunks get madvise(MADV_HUGEPAGE), so the kernel
faults them in 2 MiB at a time where transparent huge pages are `madvise` or `always`), and prints per step: wall
seconds, kernel (system) CPU seconds and minor page faults, with the process's peak RSS. Medians over the rounds.
The setting must be in the environment when the process starts: glibc reads it once.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
SETTINGS = {"glibc defaults": "", "hugetlb=1": "glibc.malloc.hugetlb=1"}


def measure(stage: str, steps: int) -> dict:
  """In this process: one compiling step, then `steps` timed ones, with their kernel time and page faults."""
  sys.path[:0] = [str(HERE.parent), str(HERE)]
  from step_builders import SHAPES, bert_config, jax_runner, seconds_per_step
  runner = jax_runner(stage, bert_config(SHAPES["minilm"]), 32, 64)
  seconds_per_step(runner, 1)
  before = resource.getrusage(resource.RUSAGE_SELF)
  _, seconds = seconds_per_step(runner, steps, warmup=0)
  after = resource.getrusage(resource.RUSAGE_SELF)
  return {"seconds_per_step": seconds, "system_seconds_per_step": (after.ru_stime - before.ru_stime) / steps,
          "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
          "peak_rss_mib": after.ru_maxrss / 1024}


def run_child(stage: str, steps: int, tunables: str) -> dict:
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  env.pop("GLIBC_TUNABLES", None)
  if tunables:
    env["GLIBC_TUNABLES"] = tunables
  out = subprocess.run([sys.executable, __file__, "--child", "--stage", stage, "--steps", str(steps)], env=env,
                       capture_output=True, text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--stage", default="relation", choices=("relation", "tagger"))
  parser.add_argument("--steps", type=int, default=15)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--json", default="", help="also write the figures to this JSON file")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.stage, args.steps)))
    return
  runs = {name: [] for name in SETTINGS}
  for round_ in range(args.rounds):
    for name, tunables in SETTINGS.items():
      runs[name].append(run_child(args.stage, args.steps, tunables))
      print(f"round {round_ + 1} {name:15} " + "  ".join(f"{k} {v:.3f}" for k, v in runs[name][-1].items()),
            flush=True)
  medians = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
  base, huge = medians["glibc defaults"], medians["hugetlb=1"]
  print(f"\nMiniLM {args.stage} step, batch 32 x 64, medians of {args.rounds} interleaved rounds "
        f"({os.cpu_count()} cores, {datetime.date.today()}):")
  print(f"{'setting':15} {'s/step':>8} {'kernel s/step':>13} {'faults/step':>11} {'peak RSS MiB':>12}")
  for name, m in medians.items():
    print(f"{name:15} {m['seconds_per_step']:8.3f} {m['system_seconds_per_step']:13.3f} "
          f"{m['minor_faults_per_step']:11.0f} {m['peak_rss_mib']:12.0f}")
  print(f"hugetlb=1 / defaults, wall time: {huge['seconds_per_step'] / base['seconds_per_step']:.3f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"date": str(datetime.date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                 "platform": platform.platform(), "stage": args.stage, "steps": args.steps, "runs": runs,
                 "medians": medians}, f, indent=2)


if __name__ == "__main__":
  main()
