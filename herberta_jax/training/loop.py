"""The training loop of one stage, and restoring a trained stage from its workdir alone.

The loop keeps the device busy: batches are read, padded and placed ahead of the step in a thread (feeding.py);
metrics stay on the device and are fetched every `log_every_steps` and before every evaluation and checkpoint,
so no checkpoint is written from steps whose losses were not yet seen finite; checkpoints are written while
training goes on (checkpoint.py). Stage differences live in stages.py. The workdir may be a bucket (`gs://`):
every file goes through `storage`. A preemption notice (SIGTERM, preemption.py) ends the loop at the next step
boundary (with several processes, the next logging window) with a committed save of `latest/` and
`preemption.Preempted`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from herberta_jax import compile_cache, console, storage
from herberta_jax.data.scoring import Counts
from herberta_jax.training import checkpoint, feeding, optim, parallel, precompile, preemption, stages, steps
from herberta_jax.training.state import TrainState
from herberta_jax.training.summary import SummaryWriter

log = logging.getLogger(__name__)

STAGES = stages.STAGES


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the run stops and keeps its last good checkpoint."""


def dropout_key_data(config, stage_index: int) -> jax.Array:
  """The raw data of the stage's base dropout key, of implementation `config.dropout_rng_impl`."""
  return jax.random.key_data(jax.random.fold_in(jax.random.key(config.seed, impl=config.dropout_rng_impl),
                                                stage_index))


def has_split(manifest: dict, split: str) -> bool:
  return any(info["count"] for info in manifest["splits"].get(split, {}).values())


def _agreed(value: float) -> float:
  """Process 0's `value` on every process: one collective, so call it at the same step on all of them."""
  if jax.process_count() == 1:
    return value
  return float(multihost_utils.broadcast_one_to_all(np.float32(value)))


class DevScorer:
  """The early-stopping score of a stage on the dev split: relation micro-F1 without the negative label, or the
  tagger's exact entity-pair match given the gold relation. Each device counts its own rows, the devices' counts
  are summed on the devices over all batches and fetched once."""

  def __init__(self, stage: stages.Stage, config, data_dir):
    self.feed = feeding.StageFeed(config, data_dir, "dev", stage, stage.mesh, batch_size=config.infer.batch_size,
                                  batch_flag="infer.batch_size", train=False)
    self.counts = jax.jit(parallel.summed_over_devices(stage.dev_counts(), stage.mesh))

  def __call__(self, params) -> float:
    total = jnp.zeros(3, jnp.int32)
    with self.feed.device_batches() as batches:
      for batch in batches:
        total = total + self.counts(params, batch)
    return Counts(*(int(v) for v in np.asarray(total))).f1


def _open_losses(path, up_to_step: int) -> storage.Appender:
  """losses.jsonl for appending, keeping only the steps up to `up_to_step`: a resumed run writes the later ones
  again (a line cut by a kill is dropped too). Flushed once per logging window (a bucket has no append: each
  flush rewrites the object)."""
  kept = []
  if path.exists():
    for line in path.read_text(encoding="utf-8").splitlines():
      try:
        if json.loads(line)["step"] <= up_to_step:
          kept.append(line + "\n")
      except (ValueError, KeyError, TypeError):
        continue
  storage.write_atomically(path, "".join(kept))
  return storage.Appender(path)


def train_stage(name: str, config, workdir, data_dir, manifest: dict, mesh, *, encoder: dict | None = None,
                watcher: preemption.Watcher | None = None):
  """Trains one stage to the end (or early stop), resuming from `workdir/<stage>` when a checkpoint is there.

  `encoder` (parameters of a `bert`) replaces the configured initial encoder. Returns (Stage, best params).
  The dev score decides the best checkpoint; without a dev split the last step is the best. `watcher` says when
  to stop for preemption (without one the stage watches SIGTERM itself); then `latest/` is saved and committed
  and `preemption.Preempted` raised.
  """
  if watcher is None:
    with preemption.Watcher() as own:
      return train_stage(name, config, workdir, data_dir, manifest, mesh, encoder=encoder, watcher=own)
  started = time.perf_counter()
  compile_cache.enable(config.compilation_cache_dir)
  workdir = storage.path(workdir)
  cfg, stage_dir, is_chief = config[name], workdir / name, jax.process_index() == 0
  ckpts = checkpoint.StageCheckpoints(stage_dir / "checkpoints", keep_latest=config.checkpoint_keep_latest)
  try:
    # A stage with a periodic checkpoint resumes from it (or raises): its pretrained weights would go unread.
    resuming = ckpts.latest_step() is not None
    stage = stages.build(name, config, manifest, mesh, load_pretrained=encoder is None and not resuming)
    if encoder is not None and not resuming:
      stage.pretrained = encoder
    if is_chief:
      stage.save_model_config(stage_dir)

    feed = feeding.StageFeed(config, data_dir, "train", stage, mesh, batch_size=cfg.batch_size,
                             batch_flag=f"{name}.batch_size", train=True)
    steps_per_epoch = max(1, feed.num_examples() // cfg.batch_size)
    total_steps = max(1, int(math.ceil(cfg.num_epochs * steps_per_epoch)))
    eval_every = cfg.eval_every_steps or steps_per_epoch
    tx, schedule = optim.make_optimizer(cfg, total_steps)
    replicated = parallel.replicated(mesh)
    init_rng = jax.random.fold_in(jax.random.key(config.seed), STAGES.index(name))

    def create_state(params) -> TrainState:
      return TrainState.create(params, tx, dropout_key_data(config, STAGES.index(name)))

    train_step = jax.jit(steps.make_train_step(stage.loss_terms(), schedule, cfg.accum_steps,
                                               rng_impl=config.dropout_rng_impl),
                         donate_argnums=0, out_shardings=(replicated, replicated))

    # `stopped_early` is kept apart from reaching total_steps: a finished run restarted with more epochs continues.
    progress = {"best_score": -1.0, "best_step": 0, "evals_without_improvement": 0, "stopped_early": False}
    if resuming:
      # The restore's target is shapes and shardings alone: no initial parameters or optimizer state are computed
      # (and compiled) to be replaced. `restore_latest` returns a state or raises, as `latest_step` found one.
      abstract = jax.eval_shape(lambda: create_state(stage.init(init_rng)))
      state, progress, _ = ckpts.restore_latest(checkpoint.abstract_like(abstract, replicated), drop_unreadable=True)
      log.info("%s: resumed from step %d in %s", name, int(state.step), stage_dir)
    elif (best_step := ckpts.best_step()) is not None:
      raise RuntimeError(
          f"{stage_dir / 'checkpoints'}: best/ holds step {best_step} but latest/ holds nothing to "
          f"resume from (best/ keeps parameters only, no optimizer state). Delete {stage_dir} to train the {name} "
          "stage again from the start, or restore its checkpoints/latest directory.")
    else:
      state = jax.jit(create_state, out_shardings=replicated)(stage.initial_params(init_rng))
  except BaseException:
    ckpts.close(raise_errors=False)
    raise

  # What a checkpoint takes: a copy made on the device (the next step donates the state's buffers while the save
  # still reads them) and, for the full state, whether its parameters are finite (a loss can be finite while its
  # update overflows them). One program each, compiled ahead with the steps: done with eager ops at the first save,
  # they compiled a small program per parameter shape, a loop stall of over a second on a GPU.
  copy_params = jax.jit(lambda params: jax.tree.map(jnp.copy, params))
  snapshot = jax.jit(lambda state: (jax.tree.map(jnp.copy, state),
                                    jnp.isfinite(optim.global_norm(state.params))))
  dev = DevScorer(stage, config, data_dir) if has_split(manifest, "dev") else None
  writer = SummaryWriter(stage_dir / "tensorboard") if is_chief else None
  step = first_step = int(state.step)
  # Every step's loss in plain text too: cheap, greppable, and what tests compare across topologies.
  losses = _open_losses(stage_dir / "losses.jsonl", step) if is_chief else None
  window: list[tuple[int, dict]] = []  # (step, metrics still on the device)

  def fetch_window() -> dict | None:
    """Fetches the unseen steps' metrics, logs their losses; raises on a non-finite one."""
    nonlocal window
    pending, window = window, []
    fetched = jax.device_get([metrics for _, metrics in pending])
    for (at, _), metrics in zip(pending, fetched):
      loss = float(metrics["loss"])
      if losses:
        losses.write(json.dumps({"step": at, "loss": loss}) + "\n")
      if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"{name}: loss is {loss} at step {at}; stopped. The last good checkpoint is step "
            f"{ckpts.latest_step(raise_errors=False)} in {stage_dir / 'checkpoints' / 'latest'}. Lower "
            f"--config.{name}.learning_rate or check the data.")
    return {k: float(v) for k, v in fetched[-1].items()} if fetched else None

  def evaluate_and_keep_best(at: int) -> bool:
    """Scores dev, saves a new best; returns True when early stopping says stop."""
    score = dev(state.params)
    if writer:
      writer.scalar("dev/score", score, at)
    if score > progress["best_score"]:
      progress.update(best_score=score, best_step=at, evals_without_improvement=0)
      ckpts.save_best(at, copy_params(state.params), progress)
    else:
      progress["evals_without_improvement"] += 1
    log.info("%s step %d: dev score %.4f (best %.4f at step %d)", name, at, score, progress["best_score"],
             progress["best_step"])
    return bool(cfg.patience) and progress["evals_without_improvement"] >= cfg.patience

  prefetcher = feed.device_batches(start_batch=step)  # reads ahead from now on
  batches, compiling = prefetcher, None
  bar = console.Progress(total_steps, desc=name, unit="step", initial=step, disable=not is_chief)
  window_rows, first_step_done, loop_end = 0, None, None
  window_rates = []  # sentences/s of each logging window (a window pays the saves and evaluation before it)
  try:
    if step < total_steps and not progress["stopped_early"]:  # a finished stage runs nothing
      # The first batch's program compiles now, every other train and dev program in the background (on an
      # accelerator) or now as well (on the CPU, whose cores the compiler would take from the steps).
      first_batch = next(prefetcher)
      batches = itertools.chain([first_batch], prefetcher)
      jobs = [(train_step, state, feed)] + ([(dev.counts, state.params, dev.feed)] if dev else [])
      compiling = precompile.AheadOfTime(jobs, first_length=first_batch["input_ids"].shape[1], name=name,
                                         others=((snapshot, (state,)), (copy_params, (state.params,))),
                                         background=mesh.devices.flat[0].platform != "cpu")
      train_step, *dev_counts = compiling.functions
      snapshot, copy_params = compiling.others_compiled
      if dev:
        dev.counts = dev_counts[0]
    loop_start = window_start = last_save = time.perf_counter()
    while step < total_steps and not progress["stopped_early"]:
      state, metrics = train_step(state, next(batches))
      step += 1
      # Asked at every step on every process, agreed between processes at logging windows and the stage's end; the
      # step's own work (its logging, a due evaluation) still runs, so the resumed run goes on exactly as an
      # unstopped one.
      preempted = watcher.should_stop(agree=step % config.log_every_steps == 0 or step == total_steps)
      window.append((step, metrics))
      window_rows += cfg.batch_size
      if first_step_done is None:
        jax.block_until_ready(metrics)
        first_step_done = time.perf_counter()
        bar.first_done()  # the first step waits for its compilation: counted in the rate, the ETA would be hours
        log.info("%s: first step done %.2f s after the stage started", name, first_step_done - started)
      else:
        bar.update(1)
      at_end = step == total_steps
      save = at_end or bool(cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0)
      if step % config.log_every_steps == 0 or at_end:
        scalars = fetch_window()
        scalars["sentences_per_second"] = window_rows / max(time.perf_counter() - window_start, 1e-9)
        window_rates.append(scalars["sentences_per_second"])
        bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['learning_rate']:.2e}")
        if writer:
          for key, value in scalars.items():
            writer.scalar(f"train/{key}", value, step)
          writer.flush()
          losses.flush()
        window_start, window_rows = time.perf_counter(), 0
        if cfg.checkpoint_every_minutes:
          save |= _agreed(time.perf_counter() - last_save) >= 60 * cfg.checkpoint_every_minutes
      if dev is not None and (step % eval_every == 0 or at_end):
        fetch_window()
        progress["stopped_early"] = evaluate_and_keep_best(step)
      if save or progress["stopped_early"] or preempted:
        fetch_window()
        if losses:  # every step a checkpoint holds has its loss on storage: a resumed run keeps those lines
          losses.flush()
        copied, finite = snapshot(state)
        if not finite:
          raise NonFiniteLossError(
              f"{name}: parameters became NaN/Inf at step {step}; stopped. The last good checkpoint is step "
              f"{ckpts.latest_step(raise_errors=False)} in {stage_dir / 'checkpoints'}.")
        ckpts.save_latest(step, copied, progress)
        last_save = time.perf_counter()
      if preempted and not (at_end or progress["stopped_early"]):  # else the stage ends as it would have
        ckpts.wait()  # committed, or its error raised: exit status 75 promises a checkpoint to resume from
        log.warning("%s: stopped for preemption at step %d; latest/ saved in %s", name, step,
                    stage_dir / "checkpoints" / "latest")
        raise preemption.Preempted(name, step, stage_dir / "checkpoints" / "latest")
    loop_end = time.perf_counter()
    params = state.params
    if dev is not None:
      best = ckpts.restore_best(checkpoint.abstract_like(state.params, replicated))
      params = best[0] if best is not None else params
  finally:
    prefetcher.close()
    if compiling:
      compiling.close()
    bar.close()
    if writer:
      writer.close()
      losses.close()
    # Waits for pending saves; a failed one's error is raised unless another error is on its way out.
    ckpts.close(raise_errors=sys.exc_info()[0] is None)

  if is_chief:
    # Wall time of this invocation's steps, dev evaluations and checkpoints (a resumed run counts only its own).
    summary = {"stage": name, "final_step": step, "total_steps": total_steps, **progress,
               "steps_run": step - first_step, "train_seconds": loop_end - loop_start,
               "seconds_to_first_step": first_step_done - started if first_step_done else None,
               "seconds_after_first_step": loop_end - first_step_done if first_step_done else None,
               "window_sentences_per_second": window_rates}
    storage.write_atomically(stage_dir / "summary.json", json.dumps(summary, indent=2))
  return stage, params


def restore_stage_params(workdir, name: str, config, manifest: dict, mesh, *, best: bool = True):
  """(Stage, params) of a stage from its checkpoints in `workdir`: the best one (falling back to the latest) or
  the latest. Needs only the workdir (not the pretrained checkpoint). Raises FileNotFoundError when it has none."""
  stage_dir = storage.path(workdir) / name
  stage = stages.from_workdir(stage_dir, name, config, manifest, mesh)
  replicated = parallel.replicated(mesh)
  abstract_params = jax.eval_shape(stage.init, jax.random.key(0))
  ckpts = checkpoint.StageCheckpoints(stage_dir / "checkpoints", keep_latest=None)
  try:
    found = ckpts.restore_best(checkpoint.abstract_like(abstract_params, replicated)) if best else None
    if found is None:
      tx, _ = optim.make_optimizer(config[name], total_steps=1)  # the schedule's values do not shape the state
      # `.get`: workdirs from before the knob stored threefry keys.
      impl = config.get("dropout_rng_impl", "threefry2x32")
      key = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl)))
      abstract = jax.eval_shape(lambda p: TrainState.create(p, tx, jnp.zeros(key.shape, key.dtype)), abstract_params)
      latest = ckpts.restore_latest(checkpoint.abstract_like(abstract, replicated), drop_unreadable=False)
      found = (latest[0].params,) if latest is not None else None
  finally:
    ckpts.close()
  if found is None:
    raise FileNotFoundError(f"{stage_dir}/checkpoints holds no checkpoint: train that stage first")
  return stage, found[0]


def relation_encoder(config, workdir, manifest: dict, mesh, trained=None) -> dict:
  """The trained relation classifier's encoder without its pooler: where `tagger.init_from_relation` starts
  the tagger. Taken from `trained` (Stage, params) or else from the relation's best checkpoint."""
  if trained is None:
    try:
      trained = restore_stage_params(workdir, "relation", config, manifest, mesh)
    except FileNotFoundError as error:
      raise FileNotFoundError(f"--config.tagger.init_from_relation needs the relation stage's checkpoint: "
                              f"{error}") from None
  return {key: value for key, value in trained[1]["bert"].items() if key != "pooler"}
