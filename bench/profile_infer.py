"""Where the two-stage inference function spends its time: XLA's per-operation timings from a profiler trace,
summed by the model op each operation computes.

  python bench/profile_infer.py --model RUN_OR_EXPORT [--batch 64] [--length 24] [--calls 5] [--top 25]

One batch of `--batch` sentences of `--length` tokens ([CLS], random word pieces, [SEP]; no padding), decoded as
the paper does (top relation, independent pairs). The function is compiled and called twice, then `--calls` calls
are traced. Each operation in the trace is matched, by name, to its instruction in the compiled module's text and
summed under that instruction's `op_name` (the Flax module path and the JAX primitive), layer numbers dropped so
the layers add up; its kind is the name without the number (on the CPU, `ynn_fusion` are YNNPACK's matrix
multiplications with what XLA fused into them). The profiler adds a cost per operation, and XLA runs independent
operations side by side (the query, key and value projections), so read shares, not totals.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1]), str(pathlib.Path(__file__).resolve().parent)]

import jax  # noqa: E402
import numpy as np  # noqa: E402
from bench_infer import PAPER_PAIRS  # noqa: E402
from profile_step import instruction_ops, operation_times  # noqa: E402

from herberta_jax.hub.format import export_directory  # noqa: E402
from herberta_jax.inference.predictor import Predictor  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, type=pathlib.Path, help="training workdir or export directory")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--length", type=int, default=24, help="tokens per sentence, [CLS] and [SEP] included")
  parser.add_argument("--calls", type=int, default=5)
  parser.add_argument("--top", type=int, default=25)
  args = parser.parse_args()
  predictor = Predictor.from_export(export_directory(args.model), batch_size=args.batch, top_k=1, top_m=1,
                                    **PAPER_PAIRS)
  meta = predictor.meta
  ids = np.random.default_rng(0).integers(1000, predictor.tokenizer.vocab_size, (args.batch, args.length))
  ids[:, 0], ids[:, -1] = meta["cls_id"], meta["sep_id"]
  inputs = jax.device_put((ids.astype(np.int32), np.ones_like(ids, np.int32)), predictor.batch_sharding)
  params = (predictor.relation_params, predictor.tagger_params)
  ops = instruction_ops(predictor.fn.lower(*params, *inputs).compile().as_text())
  for _ in range(2):
    jax.block_until_ready(predictor.fn(*params, *inputs))
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      for _ in range(args.calls):
        jax.block_until_ready(predictor.fn(*params, *inputs))
    times = operation_times(next(pathlib.Path(directory).rglob("perfetto_trace.json.gz")))
  by_op, by_kind = collections.Counter(), collections.Counter()
  for name, micros in times.items():
    if name in ops:  # XLA's operations; the rest are the runtime's own events
      by_op[(re.sub(r"\.\d+$", "", name), ops[name])] += micros
      by_kind[re.sub(r"\.\d+$", "", name)] += micros
  total = sum(by_kind.values())
  print(f"batch {args.batch}, length {args.length}: {total / args.calls / 1e3:.1f} ms/call in XLA operations "
        f"({jax.default_backend()}, jax {jax.__version__})")
  print(f"{'kind':<28} {'ms/call':>8} {'share':>7}")
  for kind, micros in by_kind.most_common(args.top):
    print(f"{kind:<28} {micros / args.calls / 1e3:8.2f} {micros / total:7.1%}")
  print(f"\n{'ms/call':>8} {'share':>7}  {'kind':<24} op")
  for (kind, op), micros in by_op.most_common(args.top):
    print(f"{micros / args.calls / 1e3:8.2f} {micros / total:7.1%}  {kind:<24} {op}")


if __name__ == "__main__":
  main()
