r"""Turns SMiLER TSV files into tokenized, sharded TFRecords plus a manifest:

  python -m herberta_jax.prepare --input data/smiler/ --tokenizer bert-base-cased --out /tmp/prepared

Everything but the flags is `herberta_jax.data.preparation.prepare`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Sequence

from herberta_jax.data import preparation, records, smiler


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m herberta_jax.prepare", description=__doc__.split("\n")[0])
  parser.add_argument("--input", nargs="+", required=True, metavar="PATH", help="SMiLER TSV files or directories")
  parser.add_argument("--tokenizer", required=True, help="HF tokenizer directory or hub name")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--max_seq_len", type=int, default=128)
  parser.add_argument("--on_error", choices=("fail", "skip"), default="fail")
  parser.add_argument("--dev_fraction", type=float, default=0.02, help="0 disables carving dev from train")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--shards_per_split", type=int, default=None,
                      help="record files per split and language (default: ~1 per 50k rows, at least 4)")
  parser.add_argument("--overwrite", action="store_true", help="replace earlier prepared data in --out")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # batch encoding on every core
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    manifest = preparation.prepare(args.input, args.tokenizer, args.out, max_seq_len=args.max_seq_len, on_error=args.on_error,
                       dev_fraction=args.dev_fraction, seed=args.seed, shards_per_split=args.shards_per_split,
                       overwrite=args.overwrite)
  except (smiler.DataError, ValueError, FileNotFoundError, FileExistsError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  for split, by_lang in manifest["splits"].items():
    counts = ", ".join(f"{lang} {info['count']}" for lang, info in by_lang.items())
    print(f"{split}: {counts}")
  if manifest["rejects"]["file"]:
    print(f"rejected rows: {manifest['rejects']['count']} (see {pathlib.Path(args.out) / 'rejects.tsv'})")
  print(f"wrote {pathlib.Path(args.out) / records.MANIFEST_NAME}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
