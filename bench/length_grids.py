"""Padding against programs to compile, for inference's grids of padded batch lengths, on real sentences.

  python bench/length_grids.py --model RUN_OR_EXPORT [--data ../shared/data/semeval2010_task8/test.tsv]
                               [--rounds 3] [--json FILE]

For each grid, `Predictor`'s batches over the file as `predict` makes them (sorted windows, batch 64): the share of
real tokens in them and the number of batch shapes (one compiled program each), plus how many lengths the grid
holds up to 128 and 512 tokens (the most programs a long input can need, per row count). Grids: lengths in uniform
steps of 4 (inference's grid before `--lengths_per_doubling`) and of 2, and 4, 8 (the default) and 16 lengths per
doubling. With `--rounds N` the JAX pipeline (bench_infer's `jax_pass`, paper decoding) also runs over the file
with each grid, compiled first, then the grids take turns N times; medians and best passes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1]), str(pathlib.Path(__file__).resolve().parent)]

from bench_infer import DEFAULT_DATA, PAPER_PAIRS, passes_in_turns  # noqa: E402

from herberta_jax.data import smiler  # noqa: E402
from herberta_jax.hub.format import export_directory  # noqa: E402
from herberta_jax.inference.predictor import Predictor, length_grid, load_export  # noqa: E402


def uniform(step: int, max_tokens: int) -> list[int]:
  return list(range(step, max_tokens, step)) + [max_tokens]


GRIDS = {
    "steps of 4": lambda n: uniform(4, n),
    "steps of 2": lambda n: uniform(2, n),
    "4 per doubling": lambda n: length_grid(n, 4),
    "8 per doubling (default)": lambda n: length_grid(n, 8),
    "16 per doubling": lambda n: length_grid(n, 16),
}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, type=pathlib.Path, help="training workdir or export directory")
  parser.add_argument("--data", default=str(DEFAULT_DATA), help="SMiLER-format TSV whose sentences are used")
  parser.add_argument("--rounds", type=int, default=0, help="timed passes per grid, taken in turns (0: none)")
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  sentences = [example.text for example in smiler.read_tsv(args.data)]
  loaded = load_export(export_directory(args.model))
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "date": time.strftime("%Y-%m-%d %H:%M"),
            "data": args.data, "sentences": len(sentences), "grids": {}}
  predictors = {}
  for name, grid in GRIDS.items():
    predictor = Predictor(loaded.relation, loaded.tagger, loaded.meta, loaded.tokenizer, top_k=1, top_m=1,
                          **PAPER_PAIRS)
    predictor.boundaries = grid(predictor.max_tokens)
    for rows, length in predictor.planned_batches(predictor.encode(sentences)):
      predictor.count(rows, predictor.place(rows, length)[0])
    result["grids"][name] = {"real_token_share": round(predictor.real_token_share, 4),
                             "batch_shapes": len(predictor.batch_shapes),
                             "lengths_to_128": len(grid(128)), "lengths_to_512": len(grid(512))}
    predictors[name] = predictor
  if args.rounds:
    for name, timing in passes_in_turns(predictors, sentences, args.rounds).items():
      result["grids"][name].update(timing)
  print(json.dumps(result, indent=2))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
