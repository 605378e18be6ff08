"""Inference pipelines built with different `Predictor` settings, compared on real sentences in one run.

  python bench/predictor_settings.py --model RUN_OR_EXPORT [--data ../shared/data/semeval2010_task8/test.tsv]
                                     [--settings sub_batches=1 sub_batches=2] [--rounds 5] [--json FILE]

Each setting is a comma-separated list of integer `Predictor` arguments (`sub_batches=2,batch_size=32`); `devices=N`
runs on the first N local devices (a CPU host is split into one device per core first, as `predict` splits it). For
each, the JAX pipeline (bench_infer's `jax_pass`, paper decoding, batch 64) runs over the file once to compile, then
the settings take turns `--rounds` times: medians, best passes, and whether the triples match the first setting's.
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

from herberta_jax import cpu_devices  # noqa: E402
from herberta_jax.data import smiler  # noqa: E402
from herberta_jax.hub.format import export_directory  # noqa: E402
from herberta_jax.inference.predictor import Predictor, load_export  # noqa: E402


def parse_setting(setting: str) -> dict[str, int]:
  """"sub_batches=2,devices=1" -> {"sub_batches": 2, "devices": [the first local device]}."""
  try:
    kwargs = {name.strip(): int(value) for name, value in (pair.split("=") for pair in setting.split(","))}
  except ValueError:
    raise SystemExit(f"--settings {setting!r}: expected name=integer pairs separated by commas") from None
  if "devices" in kwargs:
    kwargs["devices"] = jax.local_devices()[:kwargs["devices"]]
  return kwargs


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, type=pathlib.Path, help="training workdir or export directory")
  parser.add_argument("--data", default=str(DEFAULT_DATA), help="SMiLER-format TSV whose sentences are used")
  parser.add_argument("--settings", nargs="+", default=["sub_batches=1", "sub_batches=2"],
                      help="Predictor settings (name=integer, comma-separated), the first the reference")
  parser.add_argument("--rounds", type=int, default=5, help="timed passes per setting, taken in turns")
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  cpu_devices.split_host(64)  # before any JAX work: predict's devices at its default batch
  sentences = [example.text for example in smiler.read_tsv(args.data)]
  loaded = load_export(export_directory(args.model))
  predictors = {setting: Predictor(loaded.relation, loaded.tagger, loaded.meta, loaded.tokenizer, top_k=1,
                                   top_m=1, **PAPER_PAIRS, **parse_setting(setting)) for setting in args.settings}
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
