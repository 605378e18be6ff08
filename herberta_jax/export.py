r"""Exports a finished training run as HuggingFace checkpoints:

  python -m herberta_jax.export --workdir RUN --out DIR

Reads the best checkpoint of each stage from RUN and writes DIR/relation, DIR/tagger and DIR/herberta.json
(see `herberta_jax.hub.export`). Training already writes RUN/export; this re-exports, e.g. to another place.
"""

from __future__ import annotations

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir whose stages have finished.")
_OUT = flags.DEFINE_string("out", None, "Export directory.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  del argv
  from herberta_jax import run
  print(run.export_workdir(_WORKDIR.value, _OUT.value))


if __name__ == "__main__":
  app.run(main)
