r"""Fetches SemEval-2010 Task 8 and writes it in SMiLER's TSV layout, for `configs/semeval.py`:

  python -m herberta_jax.fetch_semeval --out data/semeval2010_task8
  python -m herberta_jax.fetch_semeval --source SemEval2010_task8_all_data.zip --out data/semeval2010_task8

Everything but the flags is `herberta_jax.data.semeval`.
"""

from __future__ import annotations

import zipfile

from absl import flags

from herberta_jax import cli, storage
from herberta_jax.data import semeval
from herberta_jax.errors import UserError

_SOURCE = flags.DEFINE_string("source", semeval.DEFAULT_SOURCE, "The distribution zip: a local file or a URL.")
_OUT = flags.DEFINE_string("out", None, "Directory for train.tsv and test.tsv (or a gs:// URL).")
flags.mark_flag_as_required("out")


def main(argv):
  del argv
  try:
    archive = semeval.open_source(_SOURCE.value)
  except (OSError, zipfile.BadZipFile) as error:
    raise UserError(f"--source {_SOURCE.value}: {error}. Pass the zip's path or a reachable URL.") from error
  counts = semeval.convert_zip(archive, storage.path(_OUT.value))
  print(", ".join(f"{split}: {count} rows" for split, count in counts.items()) + f" in {_OUT.value}")


def run() -> None:
  """The `herberta-fetch-semeval` console script."""
  cli.run_cli(main)


if __name__ == "__main__":
  run()
