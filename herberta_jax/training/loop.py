"""The training loop of one stage, and restoring a trained stage from its checkpoints."""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from herberta_jax.data import languages as languages_lib
from herberta_jax.data.example import NEGATIVE_LABEL
from herberta_jax.data.pipeline import Pipeline
from herberta_jax.model import hf
from herberta_jax.model import inputs as model_inputs
from herberta_jax.model.bert import BertConfig
from herberta_jax.model.heads import EntityTagger, RelationClassifier
from herberta_jax.training import checkpoint, optim, parallel, steps
from herberta_jax.training.state import TrainState
from herberta_jax.training.summary import SummaryWriter

STAGES = ("relation", "tagger")


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the run stops and keeps its last good checkpoint."""


def scratch_bert_config(config, manifest: dict) -> BertConfig:
  """The encoder of a run from scratch: `model.scratch` over the prepared tokenizer's vocabulary."""
  scratch = config.model.scratch
  return BertConfig(vocab_size=manifest["tokenizer"]["vocab_size"], hidden_size=scratch.hidden_size,
                    num_layers=scratch.num_layers, num_heads=scratch.num_heads,
                    intermediate_size=scratch.intermediate_size, hidden_dropout=scratch.hidden_dropout,
                    attention_dropout=scratch.attention_dropout,
                    max_position_embeddings=scratch.max_position_embeddings,
                    pad_token_id=manifest["tokenizer"]["pad_id"], dtype=config.model.dtype)


class StageModel:
  """A stage's Flax module, encoder config and initial parameters (pretrained encoder or scratch)."""

  def __init__(self, stage: str, config, manifest: dict, mesh):
    self.stage = stage
    vocab_size = manifest["tokenizer"]["vocab_size"]
    self.pretrained = None
    if config.model.init_from:
      bert_config, encoder = hf.load_encoder(config.model.init_from, add_pooler=(stage == "relation"))
      bert_config = bert_config.replace(vocab_size=max(vocab_size, bert_config.vocab_size),
                                        dtype=config.model.dtype)
      self.pretrained = encoder
    else:
      bert_config = scratch_bert_config(config, manifest)
    self.bert_config = bert_config
    if stage == "relation":
      self.module = RelationClassifier(bert_config, num_labels=len(manifest["labels"]))
    else:
      self.module = EntityTagger(bert_config)
    # The relation model's auxiliary entity head exists only when its loss is on (its checkpoints hold it).
    self.entity_loss_weight = float(config.relation.get("entity_loss_weight", 0.0)) if stage == "relation" else 0.0
    self.mesh = mesh

  def dummy_inputs(self):
    ids = jnp.zeros((1, 8), jnp.int32)
    mask = jnp.ones((1, 8), jnp.int32)
    if self.stage == "relation":
      return (ids, mask)
    return (ids, mask, jnp.zeros_like(ids), mask)

  def init(self, rng):
    """Freshly initialised parameters (every head the training loss uses)."""
    kwargs = {"with_entity_logits": True} if self.entity_loss_weight else {}
    return self.module.init(rng, *self.dummy_inputs(), **kwargs)["params"]

  def loss_terms(self, manifest: dict):
    """The stage's `loss_terms(params, batch, rng, deterministic)` for `steps.make_train_step`."""
    module = self.module
    if self.stage == "relation":
      weight = self.entity_loss_weight
      return lambda p, b, r, d: steps.relation_loss_terms(module, p, b, r, d, entity_loss_weight=weight)
    build = tagger_input_builder(manifest, self.bert_config)
    return lambda p, b, r, d: steps.tagger_loss_terms(module, build, p, b, r, d)

  def initial_params(self, rng):
    """Parameters created already replicated on the mesh; the encoder replaced by pretrained weights if any."""
    params = jax.jit(self.init, out_shardings=parallel.replicated(self.mesh))(rng)
    if self.pretrained is not None:
      encoder = self.pretrained
      if encoder["embeddings"]["word_embeddings"]["embedding"].shape[0] < self.bert_config.vocab_size:
        encoder = hf.resize_token_embeddings(encoder, self.bert_config.vocab_size, jax.random.fold_in(rng, 1))
      params = dict(params)
      params["bert"] = jax.device_put(encoder, parallel.replicated(self.mesh))
    return params


def tagger_input_builder(manifest: dict, bert_config: BertConfig) -> model_inputs.TaggerInputs:
  table = [manifest["relation_token_ids"][label] for label in manifest["labels"]]
  tok = manifest["tokenizer"]
  return model_inputs.TaggerInputs(table, cls_id=tok["cls_id"], sep_id=tok["sep_id"], pad_id=tok["pad_id"],
                            two_segments=bert_config.type_vocab_size >= 2)


def _pipeline(config, data_dir, split: str, *, batch_size: int, train: bool):
  """The input pipeline of this process: its share of every global batch of `batch_size` rows."""
  langs = languages_lib.resolve_languages(config.data.languages) if config.data.languages else None
  count, index = jax.process_count(), jax.process_index()
  if batch_size % count:
    raise ValueError(f"batch size {batch_size} does not split over {count} processes")
  if config.data.host_reading not in ("all", "shards"):
    raise ValueError(f"--config.data.host_reading={config.data.host_reading!r}: use shards or all")
  # Evaluation splits are small and one pass: every host reads them whole and keeps its slice of each batch, so
  # all hosts run the same number of batches (with disjoint shards one host may run out first and leave the
  # others waiting in a collective).
  every_host_reads_all = config.data.host_reading == "all" or not train
  pipeline = Pipeline(data_dir, split, batch_size=batch_size if every_host_reads_all else batch_size // count,
                      languages=langs, mixture=config.data.mixture, temperature=config.data.temperature,
                      shuffle=train, seed=config.seed, bucket_boundaries=tuple(config.data.bucket_boundaries),
                      repeat=train, process_index=0 if every_host_reads_all else index,
                      process_count=1 if every_host_reads_all else count)
  return RowSlice(pipeline, index, count) if every_host_reads_all and count > 1 else pipeline


class RowSlice:
  """A pipeline of global batches seen by one process: its contiguous slice of rows of each batch."""

  def __init__(self, pipeline: Pipeline, index: int, count: int):
    self.pipeline, self.index, self.count = pipeline, index, count

  def num_examples(self) -> int:
    return self.pipeline.num_examples()

  def batches(self, start_batch: int = 0):
    for batch in self.pipeline.batches(start_batch=start_batch):
      rows = len(batch["input_ids"]) // self.count
      yield {k: v[self.index * rows:(self.index + 1) * rows] for k, v in batch.items()}


def has_split(manifest: dict, split: str) -> bool:
  return any(info["count"] for info in manifest["splits"].get(split, {}).values())


class DevScorer:
  """The early-stopping score of a stage on the dev split: relation micro-F1 without the negative label, or the
  tagger's exact entity-pair match given the gold relation. Counts are summed on the host over all batches."""

  def __init__(self, stage_model: StageModel, manifest: dict, config, data_dir):
    self.stage = stage_model.stage
    self.mesh = stage_model.mesh
    self.pipeline = _pipeline(config, data_dir, "dev", batch_size=config.infer.batch_size, train=False)
    self.negative = manifest["labels"].index(NEGATIVE_LABEL) if NEGATIVE_LABEL in manifest["labels"] else -1
    module = stage_model.module
    if self.stage == "relation":
      self.predict = jax.jit(lambda p, b: steps.relation_predictions(module, p, b))
    else:
      build = tagger_input_builder(manifest, stage_model.bert_config)
      self.predict = jax.jit(lambda p, b: steps.tagger_predictions(
          module, build, p, b, max_span_len=config.infer.max_span_len,
          disjoint=config.infer.disjoint_entities))

  def __call__(self, params) -> float:
    hits = predicted = gold = 0
    for batch in self.pipeline.batches():
      batch = parallel.common_length(batch)
      out = np.asarray(jax.device_get(_local_rows(self.predict(params, parallel.to_global(batch, self.mesh)))))
      valid = batch["valid"]
      if self.stage == "relation":
        labels = batch["label"]
        pred_pos = valid & (out != self.negative)
        gold_pos = valid & (labels != self.negative)
        hits += int(np.sum(pred_pos & gold_pos & (out == labels)))
        predicted += int(pred_pos.sum())
        gold += int(gold_pos.sum())
      else:
        hits += int(np.sum(valid & np.all(out == batch["spans"], axis=-1)))
        gold += int(valid.sum())
    counts = _sum_over_processes(np.asarray([hits, predicted, gold]))
    hits, predicted, gold = (int(c) for c in counts)
    if self.stage == "relation":
      return 2 * hits / (predicted + gold) if predicted + gold else 0.0
    return hits / gold if gold else 0.0


def _local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order."""
  if jax.process_count() == 1:
    return np.asarray(array)
  shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


def _sum_over_processes(values: np.ndarray) -> np.ndarray:
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils
  return np.sum(multihost_utils.process_allgather(values), axis=0)


def train_stage(stage: str, config, workdir: pathlib.Path, data_dir: pathlib.Path, manifest: dict, mesh, *,
                encoder: dict | None = None):
  """Trains one stage to the end (or early stop), resuming from `workdir/<stage>` when a checkpoint is there.

  `encoder` (parameters of a `bert`) replaces the configured initial encoder. Returns (StageModel, best params).
  The dev score decides the best checkpoint; without a dev split the last step is the best.
  """
  cfg = config[stage]
  stage_dir = workdir / stage
  is_chief = jax.process_index() == 0
  stage_model = StageModel(stage, config, manifest, mesh)
  if encoder is not None:
    stage_model.pretrained = encoder

  train_pipeline = _pipeline(config, data_dir, "train", batch_size=cfg.batch_size, train=True)
  steps_per_epoch = max(1, train_pipeline.num_examples() // cfg.batch_size)
  total_steps = max(1, int(math.ceil(cfg.num_epochs * steps_per_epoch)))
  eval_every = cfg.eval_every_steps or steps_per_epoch
  tx, schedule = optim.make_optimizer(cfg, total_steps)

  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), STAGES.index(stage))  # raw uint32 keys checkpoint as plain arrays
  init_rng, dropout_rng = jax.random.split(rng)
  replicated = parallel.replicated(mesh)
  state = jax.jit(lambda p: TrainState.create(p, tx, dropout_rng), out_shardings=replicated)(
      stage_model.initial_params(init_rng))

  ckpts = checkpoint.StageCheckpoints(stage_dir / "checkpoints")
  # `stopped_early` is kept apart from reaching total_steps: a finished run restarted with more epochs continues.
  progress = {"best_score": -1.0, "best_step": 0, "evals_without_improvement": 0, "stopped_early": False}
  restored = ckpts.restore_latest(checkpoint.abstract_like(state, replicated))
  if restored is not None:
    state, progress = restored
    logging.info("%s: resumed from step %d in %s", stage, int(state.step), stage_dir)

  train_step = jax.jit(steps.make_train_step(stage_model.loss_terms(manifest), schedule, cfg.accum_steps),
                       donate_argnums=0, out_shardings=(replicated, replicated))
  dev = DevScorer(stage_model, manifest, config, data_dir) if has_split(manifest, "dev") else None
  writer = SummaryWriter(stage_dir / "tensorboard") if is_chief else None
  # Every step's loss in plain text too: cheap, greppable, and what tests compare across topologies.
  losses = open(stage_dir / "losses.jsonl", "a", encoding="utf-8", buffering=1) if is_chief else None

  def evaluate_and_keep_best(step: int) -> bool:
    """Scores dev, saves a new best; returns True when early stopping says stop."""
    score = dev(state.params)
    if writer:
      writer.scalar("dev/score", score, step)
    if score > progress["best_score"]:
      progress.update(best_score=score, best_step=step, evals_without_improvement=0)
      if step not in ckpts.best.all_steps():
        ckpts.save_best(step, state, progress)
    else:
      progress["evals_without_improvement"] += 1
    logging.info("%s step %d: dev score %.4f (best %.4f at step %d)", stage, step, score, progress["best_score"],
                 progress["best_step"])
    return bool(cfg.patience) and progress["evals_without_improvement"] >= cfg.patience

  step = int(state.step)
  batches = train_pipeline.batches(start_batch=step)
  bar = tqdm.tqdm(total=total_steps, initial=step, desc=stage, disable=not is_chief, dynamic_ncols=True)
  window_start, window_rows = time.perf_counter(), 0
  loop_start, first_step = window_start, step
  first_step_end = None  # the first step compiles; steady-state speed is measured from its end
  while step < total_steps and not progress["stopped_early"]:
    batch = parallel.common_length(next(batches))
    state, metrics = train_step(state, parallel.to_global(batch, mesh))
    step += 1
    window_rows += batch["input_ids"].shape[0] * jax.process_count()
    bar.update(1)
    loss = float(metrics["loss"])
    first_step_end = first_step_end or time.perf_counter()
    if losses:
      losses.write(json.dumps({"step": step, "loss": loss}) + "\n")
    if not math.isfinite(loss):
      last = ckpts.latest.latest_step()
      raise NonFiniteLossError(
          f"{stage}: loss is {loss} at step {step}; stopped. The last good checkpoint is step {last} in "
          f"{stage_dir / 'checkpoints' / 'latest'}. Lower --config.{stage}.learning_rate or check the data.")
    if step % config.log_every_steps == 0 or step == total_steps:
      elapsed = time.perf_counter() - window_start
      scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
      scalars["sentences_per_second"] = window_rows / max(elapsed, 1e-9)
      bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['learning_rate']:.2e}")
      if writer:
        for name, value in scalars.items():
          writer.scalar(f"train/{name}", value, step)
        writer.flush()
      window_start, window_rows = time.perf_counter(), 0
    if dev is not None and (step % eval_every == 0 or step == total_steps):
      progress["stopped_early"] = evaluate_and_keep_best(step)
    if progress["stopped_early"] or step == total_steps or step % cfg.checkpoint_every_steps == 0:
      # A loss can be finite while its update overflows the parameters: never checkpoint those.
      if not math.isfinite(float(optim.global_norm(state.params))):
        raise NonFiniteLossError(f"{stage}: parameters became NaN/Inf at step {step}; stopped. The last good "
                                 f"checkpoint is step {ckpts.latest.latest_step()} in {stage_dir / 'checkpoints'}.")
      ckpts.save_latest(step, state, progress)
  bar.close()
  if writer:
    writer.close()
    losses.close()

  best = ckpts.restore_best(checkpoint.abstract_like(state, replicated)) if dev is not None else None
  if best is not None:
    state = best[0]
  if is_chief:
    # Wall time of this invocation's steps, dev evaluations and checkpoints (a resumed run counts only its own).
    summary = {"stage": stage, "final_step": step, "total_steps": total_steps, **progress,
               "steps_run": step - first_step, "train_seconds": time.perf_counter() - loop_start,
               "seconds_after_first_step": time.perf_counter() - (first_step_end or loop_start)}
    (stage_dir / "summary.json").write_text(json.dumps(summary, indent=2))
  ckpts.close()
  return stage_model, state.params


def restore_stage_params(workdir, stage: str, config, manifest: dict, mesh, *, best: bool = True):
  """(StageModel, params) of a stage from its checkpoints in `workdir`: the best one (falling back to the
  latest) or the latest. Raises FileNotFoundError when the stage has none."""
  stage_model = StageModel(stage, config, manifest, mesh)
  tx, _ = optim.make_optimizer(config[stage], total_steps=1)  # the schedule's values do not shape the state
  abstract = jax.eval_shape(lambda: TrainState.create(stage_model.init(jax.random.PRNGKey(0)), tx,
                                                      jax.random.PRNGKey(0)))
  abstract = checkpoint.abstract_like(abstract, parallel.replicated(mesh))
  ckpts = checkpoint.StageCheckpoints(pathlib.Path(workdir) / stage / "checkpoints")
  try:
    found = (ckpts.restore_best(abstract) if best else None) or ckpts.restore_latest(abstract)
  finally:
    ckpts.close()
  if found is None:
    raise FileNotFoundError(f"{workdir}/{stage}/checkpoints holds no checkpoint: train that stage first")
  return stage_model, found[0].params


def relation_encoder(config, workdir, manifest: dict, mesh, trained=None) -> dict:
  """The trained relation classifier's encoder without its pooler: where `tagger.init_from_relation` starts
  the tagger. Taken from `trained` (StageModel, params) or else from the relation's best checkpoint."""
  if trained is None:
    try:
      trained = restore_stage_params(workdir, "relation", config, manifest, mesh)
    except FileNotFoundError as error:
      raise FileNotFoundError(f"--config.tagger.init_from_relation needs the relation stage's checkpoint: "
                              f"{error}") from None
  return {name: value for name, value in trained[1]["bert"].items() if name != "pooler"}
