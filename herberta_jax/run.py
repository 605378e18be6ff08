"""A whole training run, composed from the layers below: data -> both stages -> export -> test evaluation.

`train_and_evaluate(config, workdir)` is what `python -m herberta_jax.train` calls; `export_workdir` is what
`python -m herberta_jax.export` calls. Training knows nothing of export or evaluation: they meet here.
"""

from __future__ import annotations

import json
import logging
import pathlib

import jax

from herberta_jax.data import languages as languages_lib
from herberta_jax.data import preparation, tokenize
from herberta_jax.evaluation import runner
from herberta_jax.hub import export as hub_export
from herberta_jax.inference.predictor import Predictor
from herberta_jax.training import data_setup, loop, parallel


def train_and_evaluate(config, workdir) -> dict:
  """Prepares data, trains the configured stages, then exports the two-stage pipeline and evaluates it.

  Returns the test metrics (an empty dict when only one stage was trained or there is no test split).
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.stage not in loop.STAGES + ("both",):
    raise ValueError(f"--config.stage={config.stage!r}: use relation, tagger or both")
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  mesh = parallel.make_mesh(config.mesh.num_devices)
  logging.info("mesh: %d devices over %d processes", mesh.size, jax.process_count())
  data_dir = data_setup.prepare_run_data(config, workdir)
  manifest = preparation.load_manifest(data_dir)

  trained = {}
  for stage in loop.STAGES:
    if config.stage in (stage, "both"):
      encoder = None
      if stage == "tagger" and config.tagger.init_from_relation:
        encoder = loop.relation_encoder(config, workdir, manifest, mesh, trained.get("relation"))
      trained[stage] = loop.train_stage(stage, config, workdir, data_dir, manifest, mesh, encoder=encoder)
  if len(trained) < 2:
    return {}
  return finish_run(config, workdir, data_dir, manifest, trained)


def finish_run(config, workdir: pathlib.Path, data_dir: pathlib.Path, manifest: dict, trained: dict) -> dict:
  """After both stages: export to workdir/export, evaluate on the test split into workdir/report and
  workdir/metrics.json. Returns the metrics ({} when there is no test split)."""
  (rel_model, rel_params), (tag_model, tag_params) = trained["relation"], trained["tagger"]
  rel_params, tag_params = hub_export.host_params(rel_params), hub_export.host_params(tag_params)
  meta = hub_export.export_meta(manifest, config.data.bucket_boundaries, tag_model.bert_config.type_vocab_size >= 2,
                                hub_export.decoding_of(config))
  if config.export and jax.process_index() == 0:
    out = hub_export.write_export(workdir / "export", data_dir, meta, (rel_model.bert_config, rel_params),
                                  (tag_model.bert_config, tag_params))
    logging.info("exported to %s", out)
  langs = languages_lib.resolve_languages(config.data.languages) if config.data.languages else None
  examples = runner.split_examples(data_dir, manifest, langs)
  if not examples:
    logging.warning("no test split: skipping the test evaluation")
    return {}
  # All local devices predict (each process the whole test set, see runner.predict_records); the batch is
  # rounded up to split evenly over them rather than failing a finished run.
  devices = jax.local_device_count()
  batch_size = -(-config.infer.batch_size // devices) * devices
  predictor = Predictor((rel_model.module, rel_params), (tag_model.module, tag_params), meta,
                        tokenize.load_tokenizer(data_dir / "tokenizer"), batch_size=batch_size,
                        top_k=config.infer.top_k, top_m=config.infer.top_m)  # decoding: from meta
  result = runner.evaluate_examples(predictor, examples, workdir / "report",
                                    train_sizes=runner.train_sizes_of(manifest))
  if jax.process_index() == 0:
    (workdir / "metrics.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
  return result


def export_workdir(workdir, out_dir) -> pathlib.Path:
  """Restores both stages' best parameters from a training workdir and writes the export to `out_dir`."""
  import ml_collections
  workdir = pathlib.Path(workdir)
  if not (workdir / "config.json").exists():
    raise FileNotFoundError(f"{workdir}/config.json not found: --workdir must be a training workdir")
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  data_dir = workdir / "data"
  manifest = preparation.load_manifest(data_dir)
  mesh = parallel.make_mesh(1)
  restored = {}
  for stage in loop.STAGES:
    model, params = loop.restore_stage_params(workdir, stage, config, manifest, mesh)
    restored[stage] = (model.bert_config, params)
  meta = hub_export.export_meta(manifest, config.data.bucket_boundaries,
                                restored["tagger"][0].type_vocab_size >= 2, hub_export.decoding_of(config))
  return hub_export.write_export(out_dir, data_dir, meta, restored["relation"], restored["tagger"])
