"""Inference's batches computed as independent sub-batches in one program, against whole batches, on real sentences.

  python bench/sub_batches.py --model RUN_OR_EXPORT [--data ../shared/data/semeval2010_task8/test.tsv]
                              [--sub_batches 1,2] [--rounds 5] [--json FILE]

For each `--sub_batches` setting (`Predictor(sub_batches=N)`, `two_stage.make_two_stage_fn`), the JAX pipeline
(bench_infer's `jax_pass`, paper decoding, batch 64) runs over the file once to compile, then the settings take turns
`--rounds` times: medians, best passes, and whether the triples match the first setting's.
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

import jax  # noqa: E402
from bench_infer import DEFAULT_DATA, PAPER_PAIRS, passes_in_turns  # noqa: E402

from herberta_jax.data import smiler  # noqa: E402
from herberta_jax.hub.format import export_directory  # noqa: E402
from herberta_jax.inference.predictor import Predictor, load_export  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, type=pathlib.Path, help="training workdir or export directory")
  parser.add_argument("--data", default=str(DEFAULT_DATA), help="SMiLER-format TSV whose sentences are used")
  parser.add_argument("--sub_batches", default="1,2", help="comma-separated settings, the first the reference")
  parser.add_argument("--rounds", type=int, default=5, help="timed passes per setting, taken in turns")
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  sentences = [example.text for example in smiler.read_tsv(args.data)]
  loaded = load_export(export_directory(args.model))
  predictors = {f"sub_batches={n}": Predictor(loaded.relation, loaded.tagger, loaded.meta, loaded.tokenizer,
                                              top_k=1, top_m=1, sub_batches=int(n), **PAPER_PAIRS)
                for n in args.sub_batches.split(",")}
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "backend": jax.default_backend(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "data": args.data, "sentences": len(sentences),
            "settings": passes_in_turns(predictors, sentences, args.rounds)}
  reference = next(iter(result["settings"].values()))["median_seconds"]
  for timing in result["settings"].values():
    timing["reference_median_over_this"] = round(reference / timing["median_seconds"], 3)
  print(json.dumps(result, indent=2))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
