r"""Turns SMiLER TSV files into tokenized, sharded TFRecords plus a manifest:

  python -m herberta_jax.prepare --input data/smiler/ [more.tsv ...] --tokenizer bert-base-cased --out /tmp/prepared

Everything but the flags is `herberta_jax.data.preparation.prepare`.
"""

from __future__ import annotations

import os

from absl import flags

from herberta_jax import cli, folders, storage
from herberta_jax.data import preparation, records

_INPUT = flags.DEFINE_multi_string("input", None, "SMiLER TSV files or directories, local or gs:// (more may follow "
                                   "as arguments).")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "HF tokenizer directory or hub name.")
_OUT = flags.DEFINE_string("out", None, "Output directory (local or gs://bucket/...).")
_MAX_SEQ_LEN = flags.DEFINE_integer("max_seq_len", 128, "Longest model input, in tokens.")
_ON_ERROR = flags.DEFINE_enum("on_error", "fail", ["fail", "skip"], "Bad rows: stop, or skip them into rejects.tsv.")
_DEV_FRACTION = flags.DEFINE_float("dev_fraction", 0.02, "Share of train carved out as dev; 0 disables.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the dev carving.")
_SHARDS = flags.DEFINE_integer("shards_per_split", None, "Record files per split and language (default: ~1 per 50k "
                               "rows, at least 4).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace earlier prepared data in --out.")
flags.mark_flags_as_required(["input", "tokenizer", "out"])


def main(argv: list[str]) -> int:
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # batch encoding on every core
  # A shell glob after --input (`--input data/*.tsv`) leaves all files but the first as arguments: inputs too.
  out = storage.path(_OUT.value)
  inputs = _INPUT.value + argv[1:]
  # Never over an input, nor into a workdir or an export (whose data/ is its own run's to prepare); replacing
  # earlier prepared data is --overwrite's, checked by `prepare` itself.
  folders.check_output("--out", out, kind="prepared data", overwrite=True,
                       inputs=[("--input", path) for path in inputs] + [("--tokenizer", _TOKENIZER.value)])
  manifest = preparation.prepare(inputs, _TOKENIZER.value, out, max_seq_len=_MAX_SEQ_LEN.value,
                                 on_error=_ON_ERROR.value, dev_fraction=_DEV_FRACTION.value, seed=_SEED.value,
                                 shards_per_split=_SHARDS.value, overwrite=_OVERWRITE.value)
  for split, by_lang in manifest["splits"].items():
    counts = ", ".join(f"{lang} {info['count']}" for lang, info in by_lang.items())
    print(f"{split}: {counts}")
  rows = manifest["rows"]
  print(f"rows: {rows['read']} read, {rows['written']} written, {rows['rejected']} rejected")
  if manifest["rejects"]["file"]:
    print(f"rejected rows: {manifest['rejects']['count']} (see {storage.text(out / 'rejects.tsv')})")
  print(f"wrote {storage.text(out / records.MANIFEST_NAME)}")
  return 0


def run() -> None:
  """The `herberta-prepare` console script."""
  cli.run_cli(main, positional=True)


if __name__ == "__main__":
  run()
