"""Where the JAX train step spends its time: XLA's per-operation timings from a profiler trace, summed by kind.

  python bench/profile_step.py [--stage relation|tagger] [--shape minilm] [--steps 3] [--no_dropout]
                               [--rng_impl rbg] [--top 20]

Times `--steps` steps of bench_train's step (batch 32, length 64) under `jax.profiler.trace`, reads the Perfetto
trace it writes, and prints milliseconds per step for each kind of XLA operation (the name without its number:
`ynn_fusion` are matrix multiplications with what XLA fused into them, `dot` those it left alone, the rest
elementwise, copies and random bits). The profiler adds a cost per operation, so read shares, not totals.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import pathlib
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1]), str(pathlib.Path(__file__).resolve().parent)]

import jax  # noqa: E402
from step_builders import RNG_IMPL, SHAPES, bert_config, jax_runner  # noqa: E402

BATCH, LENGTH = 32, 64
# Trace events that are not one XLA operation: the executor around them, thread-pool waits, Python frames.
NOT_OPERATIONS = ("ThunkExecutor", "SlinkyThreadPool", "$")


def trace_events(trace: pathlib.Path) -> list[dict]:
  """The events of a gzipped Chrome/Perfetto trace as jax.profiler writes it (also used by step_variants.py)."""
  events = json.loads(gzip.decompress(trace.read_bytes()))
  return events["traceEvents"] if isinstance(events, dict) else events


def instruction_ops(hlo_text: str, *, kernel_names: bool = False) -> dict[str, str]:
  """Instruction name -> the model op it computes, from a compiled module's text: its `op_name` with the `jit(...)/`
  prefix and layer numbers dropped, so the layers add up.

  A CPU trace names its operations after the instructions. With `kernel_names`, the keys are a GPU trace's kernel
  names instead: only fusions and custom calls launch kernels, each named after its instruction (or the fusion it
  was deduplicated into) with '.' written '_'.
  """
  ops = {}
  launches = r" (?:fusion|custom-call)\(.*?" if kernel_names else ""
  for line in hlo_text.splitlines():
    found = re.match(rf'\s*(?:ROOT )?%?([\w.\-]+) = .*?{launches}op_name="([^"]*)"', line)
    if not found:
      continue
    op = re.sub(r"layer_\d+", "layer_N", re.sub(r"^jit\(\w+\)/(while/body/)?(eval_jaxpr/)?", "", found.group(2)))
    deduplicated = re.search(r'deduplicated_name="([^"]*)"', line) if kernel_names else None
    for name in (found.group(1), deduplicated.group(1) if deduplicated else None):
      if name:
        ops.setdefault(name.replace(".", "_") if kernel_names else name, op)
  return ops


def operation_times(trace: pathlib.Path) -> collections.Counter:
  """Microseconds per operation name, summed over the trace."""
  times = collections.Counter()
  for event in trace_events(trace):
    if event.get("ph") == "X" and not event["name"].startswith(NOT_OPERATIONS):
      times[event["name"]] += event.get("dur", 0)
  return times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--stage", default="relation", choices=("relation", "tagger"))
  parser.add_argument("--shape", default="minilm", choices=sorted(SHAPES))
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--no_dropout", action="store_true")
  parser.add_argument("--rng_impl", default=RNG_IMPL)
  parser.add_argument("--top", type=int, default=20)
  args = parser.parse_args()
  config = bert_config(SHAPES[args.shape])
  if args.no_dropout:
    config = config.replace(hidden_dropout=0.0, attention_dropout=0.0)
  runner = jax_runner(args.stage, config, BATCH, LENGTH, rng_impl=args.rng_impl)
  for _ in range(2):  # compiles, then one plain step
    runner.run()
  runner.sync()
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      for _ in range(args.steps):
        runner.run()
      runner.sync()
    trace = next(pathlib.Path(directory).rglob("perfetto_trace.json.gz"))
    times = operation_times(trace)
  runner.close()
  by_kind, count = collections.Counter(), collections.Counter()
  for name, micros in times.items():
    kind = re.sub(r"\.\d+$", "", name)
    by_kind[kind] += micros
    count[kind] += 1
  total = sum(by_kind.values())
  print(f"{args.shape} {args.stage}, batch {BATCH}, length {LENGTH}, dropout "
        f"{'off' if args.no_dropout else args.rng_impl}: {total / args.steps / 1e3:.0f} ms/step in XLA operations "
        f"({jax.default_backend()}, jax {jax.__version__})")
  print(f"{'kind':<32} {'ms/step':>9} {'share':>7} {'operations':>10}")
  for kind, micros in by_kind.most_common(args.top):
    print(f"{kind:<32} {micros / args.steps / 1e3:9.1f} {micros / total:7.1%} {count[kind]:10d}")


if __name__ == "__main__":
  main()
