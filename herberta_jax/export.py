r"""Exports a finished training run as HuggingFace checkpoints:

  python -m herberta_jax.export --workdir RUN --out DIR [--overwrite]

Reads the best checkpoint of each stage from RUN (only reads it) and writes DIR/relation, DIR/tagger and
DIR/herberta.json (see `herberta_jax.hub.writer`). Training already writes RUN/export; this re-exports, e.g. to
another place. A non-empty DIR is refused unless --overwrite, which replaces it whole.
"""

from __future__ import annotations

import os

from absl import flags

from herberta_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir whose stages have finished.")
_OUT = flags.DEFINE_string("out", None, "Export directory.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out directory (never merged).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  del argv
  from herberta_jax import run as run_lib
  print(os.fspath(run_lib.export_workdir(_WORKDIR.value, _OUT.value, overwrite=_OVERWRITE.value)))


def run() -> None:
  """The `herberta-export` console script."""
  cli.run_cli(main)


if __name__ == "__main__":
  run()
