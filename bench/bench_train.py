"""Train-step speed per stage and model shape, JAX next to HuggingFace PyTorch, with model FLOP utilisation.

  python bench/bench_train.py [--shapes tiny,minilm,base] [--steps 5] [--rounds 3] [--kernels all]

For each shape: the jitted JAX train step (AdamW, batch 32, length 64) of the relation classifier and of the
entity tagger, and the same model trained by transformers' PyTorch classes with torch.optim.AdamW, the two
taking turns (`--rounds`, medians reported). FLOP utilisation compares the model's training FLOPs per second with
a large float32 matmul timed in the same run. `--kernels` adds a third side, our step through those fused kernels
(herberta_jax/model/kernels; off a GPU, their pure-JAX references).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run as a script from anywhere: the repository for herberta_jax, this folder for the shared step builders.
sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1]), str(pathlib.Path(__file__).resolve().parent)]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from bench_prepare_memory import provenance  # noqa: E402
from step_builders import (
  NUM_LABELS,
  SHAPES,
  bert_config,
  input_length,
  jax_runner,
  seconds_per_step,
  torch_runner,
)

from herberta_jax.model.flops import train_flops_per_sequence  # noqa: E402

BATCH, LENGTH = 32, 64


def timed(fn, steps_: int) -> float:
  """Seconds per call after one warm-up call (which compiles)."""
  fn()
  start = time.perf_counter()
  for _ in range(steps_):
    fn()
  return (time.perf_counter() - start) / steps_


def matmul_flops_per_second() -> float:
  a = jnp.ones((2048, 2048), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  seconds = timed(lambda: f(a).block_until_ready(), 10)
  return 2 * 2048 ** 3 / seconds


def torch_available() -> bool:
  try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
  except ImportError:
    return False
  return True


def interleaved_seconds(runners: dict, steps_: int, rounds: int) -> dict[str, float]:
  """Median seconds per step of each runner over `rounds` rounds, taking turns (`steps_` steps each, one sync),
  so a change in the machine's load reaches every side alike; each runs a compiling step and one more first."""
  times = {name: [] for name in runners}
  for runner in runners.values():
    seconds_per_step(runner, 1)
  for _ in range(rounds):
    for name, runner in runners.items():
      times[name].append(seconds_per_step(runner, steps_, warmup=0)[1])
  for runner in runners.values():
    runner.close()
  return {name: statistics.median(values) for name, values in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--shapes", default="tiny,minilm,base")
  parser.add_argument("--steps", type=int, default=5, help="steps per side per round")
  parser.add_argument("--rounds", type=int, default=3, help="rounds of turns; medians are reported")
  parser.add_argument("--json", default="", help="also write the figures to this JSON file")
  parser.add_argument("--kernels", default="", help="also time our step through these fused kernels ('all', ...)")
  args = parser.parse_args()
  peak = matmul_flops_per_second()
  with_torch = torch_available()
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__}; "
        f"float32 matmul peak {peak / 1e9:.1f} GFLOP/s; batch {BATCH}, length {LENGTH}; medians of {args.rounds} "
        f"rounds taking turns, {args.steps} steps each")
  print(f"{'shape':8} {'stage':9} {'jax s/step':>10} {'jax sent/s':>10} {'torch s/step':>12} "
        f"{'torch sent/s':>12} {'jax/torch':>9} {'MFU':>6}")
  rows = []
  for name in args.shapes.split(","):
    shape = SHAPES[name]
    config = bert_config(shape)
    for stage in ("relation", "tagger"):
      runners = {"jax": jax_runner(stage, config, BATCH, LENGTH)}
      if args.kernels:
        runners["jax_kernels"] = jax_runner(stage, config.replace(kernels=args.kernels), BATCH, LENGTH)
      if with_torch:
        runners["torch"] = torch_runner(stage, shape, BATCH, LENGTH)
      seconds = interleaved_seconds(runners, args.steps, args.rounds)
      jax_s, torch_s = seconds["jax"], seconds.get("torch")
      length = input_length(stage, LENGTH)
      flops = train_flops_per_sequence(config, length, stage, NUM_LABELS) * BATCH
      mfu = flops / jax_s / peak
      ratio = torch_s / jax_s if torch_s else float("nan")
      print(f"{name:8} {stage:9} {jax_s:10.4f} {BATCH / jax_s:10.1f} {torch_s or float('nan'):12.4f} "
            f"{BATCH / torch_s if torch_s else float('nan'):12.1f} {ratio:9.2f} {mfu:6.1%}", flush=True)
      rows.append(dict(shape=name, stage=stage, jax_seconds_per_step=jax_s, torch_seconds_per_step=torch_s,
                       speedup=ratio, mfu=mfu))
      if "jax_kernels" in seconds:
        kernels_s = seconds["jax_kernels"]
        print(f"{'':8} {'':9} {kernels_s:10.4f} {BATCH / kernels_s:10.1f}  with kernels {args.kernels}: "
              f"x{jax_s / kernels_s:.3f} the step without", flush=True)
        rows[-1].update(kernels=args.kernels, jax_kernels_seconds_per_step=kernels_s)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({**provenance(), "command": " ".join(sys.argv), "matmul_flops_per_second": peak, "rows": rows}, f,
                indent=2)


if __name__ == "__main__":
  main()
