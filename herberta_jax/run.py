"""A whole training run, composed from the layers below: data -> both stages -> export -> test evaluation.

`train_and_evaluate(config, workdir)` is what `python -m herberta_jax.train` calls; `export_workdir` is what
`python -m herberta_jax.export` calls. Training knows nothing of export or evaluation: they meet here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import shutil
import tempfile

import jax
from jax.experimental import multihost_utils

from herberta_jax import folders, storage
from herberta_jax.config_check import check_config, check_resume
from herberta_jax.data import languages as languages_lib
from herberta_jax.data import preparation, tokenize
from herberta_jax.errors import UserError, UserFileExistsError, UserFileNotFoundError
from herberta_jax.evaluation import evaluator
from herberta_jax.hub import card, writer
from herberta_jax.inference.predictor import Predictor
from herberta_jax.training import data_setup, loop, parallel, preemption

COMMANDS_FILE = "train_commands.jsonl"  # each invocation's command line, for the model card
STAGE_SETTINGS = "stage_config.json"  # in a stage's directory: the settings it was last trained with
log = logging.getLogger(__name__)


def train_and_evaluate(config, workdir, *, command: list[str] | None = None, overwrite: bool = False) -> dict:
  """Prepares data, trains the configured stages, then exports the two-stage pipeline and evaluates it.

  `command`: the command line that started this invocation (the train CLI passes it), recorded in the workdir so
  the export's model card can say how the model was trained. Returns the test metrics (an empty dict when only one
  stage was trained or there is no test split). `workdir` may be a `gs://` URL.

  A preemption notice (SIGTERM) stops the run at the next step boundary (with several processes, the next logging
  window, where they agree) with the stage's `latest/` saved and committed: `preemption.Preempted` is raised (the
  train CLI exits 75), and the same call again resumes there.

  The workdir is checked first (`folders.check_output`: a new or empty folder, or a workdir; a non-empty folder
  of other files only with `overwrite`), marked as a workdir, and locked against a second run while this one
  lasts (process 0 holds the lock for all processes).
  """
  workdir = storage.path(workdir)
  chief = jax.process_index() == 0
  if chief:  # the others would race its first writes; a refusal there ends them through the coordinator
    folders.check_output("--workdir", workdir, kind=folders.WORKDIR, overwrite=overwrite)
  check_config(config)
  preemption.deadline_from_env()  # a bad HERBERTA_PREEMPTION_DEADLINE_S is refused before any work
  if config.stage == "tagger" and config.tagger.init_from_relation and not has_checkpoint(workdir, "relation"):
    # Checked before any work: found at the tagger's start, it would surface as a failure of the data pipeline.
    raise UserFileNotFoundError(
        f"--config.tagger.init_from_relation needs the relation stage's checkpoint, and "
        f"{workdir / 'relation' / 'checkpoints'} holds none (--config.stage=tagger): train the relation stage in this "
        "workdir first (--config.stage=relation), or use --config.stage=both")
  workdir.mkdir(parents=True, exist_ok=True)
  if chief and folders.kind_of(workdir) != folders.WORKDIR:
    folders.mark(workdir, folders.WORKDIR)
  with folders.WorkdirLock(workdir) if chief else contextlib.nullcontext():
    return _train_locked(config, workdir, command)


def _train_locked(config, workdir, command: list[str] | None) -> dict:
  """`train_and_evaluate` once the workdir is checked, marked and locked."""
  _check_resume(config, workdir)
  if jax.process_index() == 0:
    settings = config.to_json_best_effort(indent=2)
    # The workdir's newest settings, and those of each stage it trains: what a later run checks a resume against.
    for path in [workdir / "config.json"] + [workdir / stage / STAGE_SETTINGS for stage in _stages_trained(config)]:
      path.parent.mkdir(exist_ok=True)
      storage.write_atomically(path, settings)  # a kill never leaves half a file
    if command:
      with storage.Appender(workdir / COMMANDS_FILE) as commands:
        commands.write(json.dumps({"command": list(command)}, ensure_ascii=False) + "\n")
  mesh = parallel.make_mesh(config.mesh.num_devices)
  log.info("mesh: %d devices over %d processes", mesh.size, jax.process_count())
  data_dir = data_setup.prepare_run_data(config, workdir)
  manifest = preparation.load_manifest(data_dir)

  trained = {}
  with preemption.Watcher() as watcher:
    for stage in _stages_trained(config):
      _stop_if_preempted(watcher, trained, workdir)
      encoder = None
      if stage == "tagger" and config.tagger.init_from_relation:
        encoder = loop.relation_encoder(config, workdir, manifest, mesh, trained.get("relation"))
      trained[stage] = loop.train_stage(stage, config, workdir, data_dir, manifest, mesh, encoder=encoder,
                                        watcher=watcher)
    if len(trained) < 2:
      return {}
    _stop_if_preempted(watcher, trained, workdir)  # the export and test evaluation would outlast the notice
    return finish_run(config, workdir, data_dir, manifest, trained)


def _stop_if_preempted(watcher: preemption.Watcher, trained: dict, workdir) -> None:
  """Raises Preempted when a notice came after the last stage's final step (every process sees it at the same
  point: with several processes it was agreed at a step)."""
  if watcher.stopping and trained:
    stage = list(trained)[-1]
    raise preemption.Preempted(stage, None, workdir / stage / "checkpoints" / "latest")


def finish_run(config, workdir: pathlib.Path, data_dir: pathlib.Path, manifest: dict, trained: dict) -> dict:
  """After both stages: export to workdir/export, evaluate on the test split into workdir/report and
  workdir/metrics.json. Returns the metrics ({} when there is no test split). On a bucket the export and the report
  are written locally first and copied up when complete."""
  chief = jax.process_index() == 0
  with storage.staged_folder(workdir / "export", upload=chief and config.export) as export_dir, \
       storage.staged_folder(workdir / "report", upload=chief) as report_dir:
    return _export_and_evaluate(config, workdir, data_dir, manifest, trained, export_dir, report_dir)


def _export_and_evaluate(config, workdir, data_dir, manifest: dict, trained: dict, export_dir, report_dir) -> dict:
  (rel_model, rel_params), (tag_model, tag_params) = trained["relation"], trained["tagger"]
  rel_params, tag_params = writer.host_params(rel_params), writer.host_params(tag_params)
  meta = writer.export_meta(manifest, config.data.bucket_boundaries, tag_model.bert_config.type_vocab_size >= 2,
                            writer.decoding_of(config))
  if config.export and jax.process_index() == 0:
    writer.write_export(export_dir, data_dir, meta, (rel_model.bert_config, rel_params),
                        (tag_model.bert_config, tag_params))
    log.info("exported to %s", storage.text(workdir / "export"))
  langs = languages_lib.resolve_languages(config.data.languages) if config.data.languages else None
  examples = evaluator.split_examples(data_dir, manifest, langs)
  if not examples:
    log.warning("no test split: skipping the test evaluation")
    if config.export and jax.process_index() == 0:
      write_model_cards(export_dir, workdir, manifest, meta)  # a card that says there are no scores
    return {}
  # All local devices predict (each process the whole test set, see evaluator.predict_records); the batch is
  # rounded up to split evenly over them rather than failing a finished run.
  devices = jax.local_device_count()
  batch_size = -(-config.infer.batch_size // devices) * devices
  predictor = Predictor((rel_model.module, rel_params), (tag_model.module, tag_params), meta,
                        tokenize.load_tokenizer(data_dir / "tokenizer"), batch_size=batch_size)  # decoding: meta's
  result = evaluator.evaluate_examples(predictor, examples, report_dir,
                                       train_sizes=evaluator.train_sizes_of(manifest), progress=True)
  if jax.process_index() == 0:
    storage.write_atomically(workdir / "metrics.json", json.dumps(result, indent=2, default=float) + "\n")
    if config.export:
      write_model_cards(export_dir, workdir, manifest, meta)
  return result


def write_model_cards(export_dir, workdir: pathlib.Path, manifest: dict, meta: dict) -> None:
  """README.md cards for an export of `workdir`: its resolved config, recorded commands and test metrics (if
  the run evaluated on a test split; the card never shows scores from anywhere else)."""
  config = json.loads((workdir / "config.json").read_text())
  metrics_file = workdir / "metrics.json"
  metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
  commands_file = workdir / COMMANDS_FILE
  commands = [json.loads(line)["command"] for line in commands_file.read_text(encoding="utf-8").splitlines()
              if line.strip()] if commands_file.exists() else []
  data = config.get("data", {})
  name = (config.get("card") or {}).get("name") or f"herberta-{'demo' if data.get('demo') else workdir.name}"
  card.write_cards(export_dir, meta=meta, manifest=manifest, config=config, metrics=metrics, commands=commands,
                   name=name)


def _stages_trained(config) -> list[str]:
  return [stage for stage in loop.STAGES if config.stage in (stage, "both")]


def _stages_used(config) -> list[str]:
  """The stages whose checkpoints this run restores: those it trains, and the relation stage whose encoder
  starts the tagger (`tagger.init_from_relation`)."""
  used = _stages_trained(config)
  if "tagger" in used and config.tagger.init_from_relation and "relation" not in used:
    used.insert(0, "relation")
  return used


def _check_resume(config, workdir) -> None:
  """Before the settings are recorded: a setting that a stage's checkpoints, if this run restores them, cannot be
  restored with raises ConfigError; any other change since the workdir's last run is logged, as config.json keeps
  the newest only.

  Each stage is compared with the settings it was last trained with (`STAGE/stage_config.json`; a workdir from before
  that record has only the workdir's), so a run of one stage neither trips over the other's checkpoints nor hides
  from a later run what they were trained with."""
  with_checkpoints = [stage for stage in loop.STAGES if has_checkpoint(workdir, stage)]
  if with_checkpoints:
    current = json.loads(config.to_json_best_effort())
    workdir_settings = _read_settings(workdir / "config.json")
    for stage in _stages_used(config):
      if stage in with_checkpoints:
        recorded = workdir / stage / STAGE_SETTINGS
        previous = _read_settings(recorded) if recorded.exists() else workdir_settings
        if previous is not None:
          check_resume(previous, current, (stage,), workdir)
    changes = check_resume(workdir_settings, current, (), workdir) if workdir_settings is not None else {}
    if changes:
      log.warning("resuming %s with changed settings: %s", workdir,
                  "; ".join(f"{key}: {was!r} -> {now!r}" for key, (was, now) in changes.items()))
  if jax.process_count() > 1:  # every process has read the old settings before process 0 replaces them
    multihost_utils.sync_global_devices("checked config")


def _read_settings(path) -> dict | None:
  """A recorded config, or None when there is none or it is unreadable (cut short by a kill, before it was
  replaced in one step), which is logged."""
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError as error:
    log.warning("%s is unreadable (%s): resuming without checking what changed", path, error)
    return None


def has_checkpoint(workdir, stage: str) -> bool:
  """Whether `workdir/stage/checkpoints` holds a saved step, looked up without opening (and so creating) its
  Orbax managers. Locally a step's directory gets its number when complete; on a bucket it has it from the start
  and is complete once it holds `commit_success.txt` (checkpoint.py)."""
  root = storage.path(workdir) / stage / "checkpoints"
  local = storage.is_local(root)
  return any(step.name.isdigit() and step.is_dir() and (local or (step / "commit_success.txt").exists())
             for kind in ("best", "latest") if (root / kind).is_dir() for step in (root / kind).iterdir())


def export_workdir(workdir, out_dir, *, overwrite: bool = False) -> pathlib.Path:
  """Restores both stages' best parameters from a training workdir and writes the export to `out_dir`.

  The workdir is only read. A non-empty `out_dir` is refused unless `overwrite`; then it is replaced as a whole
  (written beside it first, so a failed export leaves the old one), never merged with what it held. `out_dir` may
  be a URL (`gs://bucket/export`): the export is written to a local staging folder, then copied there.
  """
  import ml_collections
  workdir, out_dir = storage.path(workdir), storage.path(out_dir)
  if not (workdir / "config.json").exists():
    raise UserFileNotFoundError(f"--workdir {workdir}: no config.json; pass a training workdir (the --workdir of "
                                "python -m herberta_jax.train)")
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  data_dir = data_setup.run_data_dir(config.data, workdir)
  if not (data_dir / "manifest.json").exists():
    raise UserFileNotFoundError(f"--workdir {workdir}: no {storage.text(data_dir / 'manifest.json')}; its run never "
                                f"prepared its data")
  missing = [stage for stage in loop.STAGES if not has_checkpoint(workdir, stage)]
  if missing:
    raise UserError(f"--workdir {workdir}: no checkpoint of the {' and '.join(missing)} stage in "
                    f"{workdir / missing[0] / 'checkpoints'}; train it first (--config.stage={missing[0]})")
  folders.check_output("--out", out_dir, kind=folders.EXPORT, inputs=[("--workdir", workdir)], own=workdir,
                       overwrite=overwrite)  # never into the workdir (but its export/), another workdir or an input
  if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
    raise UserFileExistsError(f"--out {storage.text(out_dir)}: exists and is not empty; choose another directory or pass "
                              "--overwrite to replace it")
  manifest = preparation.load_manifest(data_dir)
  mesh = parallel.make_mesh(1)
  restored = {}
  for stage in loop.STAGES:
    model, params = loop.restore_stage_params(workdir, stage, config, manifest, mesh)
    restored[stage] = (model.bert_config, params)
  meta = writer.export_meta(manifest, config.data.bucket_boundaries,
                            restored["tagger"][0].type_vocab_size >= 2, writer.decoding_of(config))
  # Locally the staging folder sits beside out_dir, so one rename puts the export in place; a URL's is local.
  staging_root = out_dir.parent if storage.is_local(out_dir) else storage.cache_root()
  staging_root.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=staging_root))
  try:
    writer.write_export(staging, data_dir, meta, restored["relation"], restored["tagger"])
    write_model_cards(staging, workdir, manifest, meta)
    storage.remove(out_dir)  # only now, the new export complete; a non-empty one only with `overwrite` (above)
    if storage.is_local(out_dir):
      staging.rename(out_dir)
    else:
      storage.copy_tree(staging, out_dir)
  finally:
    if staging.exists():
      shutil.rmtree(staging)
  return out_dir
