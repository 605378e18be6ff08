r"""Exports a finished training run as HuggingFace checkpoints:

  python -m herberta_jax.export --workdir RUN --out DIR

Reads the best checkpoint of each stage from RUN and writes DIR/relation, DIR/tagger and DIR/herberta.json
(see `herberta_jax.exporting`). Training already writes RUN/export; this re-exports, e.g. to another place.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir whose stages have finished.")
_OUT = flags.DEFINE_string("out", None, "Export directory.")
flags.mark_flags_as_required(["workdir", "out"])


def export_workdir(workdir, out_dir) -> pathlib.Path:
  """Restores both stages' best parameters from `workdir` and writes the export."""
  import ml_collections
  from herberta_jax import exporting, prepare
  from herberta_jax.training import loop, parallel
  workdir = pathlib.Path(workdir)
  if not (workdir / "config.json").exists():
    raise FileNotFoundError(f"{workdir}/config.json not found: --workdir must be a training workdir")
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  data_dir = workdir / "data"
  manifest = prepare.load_manifest(data_dir)
  mesh = parallel.make_mesh(1)
  restored = {}
  for stage in loop.STAGES:
    model, params = loop.restore_stage_params(workdir, stage, config, manifest, mesh)
    restored[stage] = (model.bert_config, params)
  return exporting.write_export(out_dir, data_dir, manifest, restored["relation"], restored["tagger"],
                                tuple(config.data.bucket_boundaries), exporting.decoding_of(config))


def main(argv):
  del argv
  print(export_workdir(_WORKDIR.value, _OUT.value))


if __name__ == "__main__":
  app.run(main)
