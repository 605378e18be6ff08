"""Checkpoints: the only module that imports orbax, so a move to the next orbax API stays here.

Each stage keeps two orbax `CheckpointManager`s under `workdir/<stage>/checkpoints/`: `latest/` holds what a
resume needs (the whole train state, the last `keep_latest` saves) and `best/` what evaluation and export need
(the parameters of the best dev score). Training goes on while a save is written. In a single-process run
`save_*` hands the arrays to one background thread and returns at once; there orbax copies them to the host (what
its own asynchronous save does in the caller) and writes them in its own threads. Callers hand over a copy made on
the device, which no later step donates. Every other method first waits for the handed-over saves and raises the
first failure. (On an H100 a BERT-base save still slowed the loop by about 0.9 s, README "On a GPU".)
With several processes the copy to the host stays in the caller: orbax's barriers between processes are device
collectives (`sync_global_devices`), and issued from a second thread they could interleave with the train step's
collectives in a different order on each process. Orbax writes a step into a temporary directory and renames it
when complete, so a run killed during a save leaves the previous step restorable; a finished step that is
unreadable anyway (a truncated file) is skipped for the one before it, with a warning. On `gs://` Orbax writes
through TensorStore into the step's final directory and marks it complete with `commit_success.txt` (objects
cannot be renamed); an unfinished one is not listed, and is deleted when the managers open again.
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any

import jax
import orbax.checkpoint as ocp

from herberta_jax import storage

log = logging.getLogger(__name__)


class StageCheckpoints:
  """Periodic and best checkpoints of one stage, each with a JSON record of the run's progress."""

  def __init__(self, directory, *, keep_latest: int | None):
    """`directory`: a local path or a `gs://` URL (handed to Orbax as an `epath.Path`, never made local).
    `keep_latest`: periodic checkpoints kept (None keeps all: for reading a workdir, not training)."""
    self.directory = storage.absolute(storage.path(directory))

    def manager(name: str, keep: int) -> ocp.CheckpointManager:
      return ocp.CheckpointManager(self.directory / name, options=ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=True))

    self.latest, self.best = manager("latest", keep_latest), manager("best", 1)
    # One thread: saves run one at a time, in the order they were handed over.
    self._saver = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-save")
    self._handed_over: list[concurrent.futures.Future] = []

  def save_latest(self, step: int, state: Any, progress: dict) -> None:
    """Hands the full train state over to be saved and returns. `state` must not be donated or changed later."""
    self._hand_over(self._save_latest, step, state, dict(progress))

  def save_best(self, step: int, params: Any, progress: dict) -> None:
    """Hands the parameters over to be saved and returns; a step already saved (a resumed run evaluating it
    again) is kept as is. `params` must not be donated or changed later."""
    self._hand_over(self._save_best, step, params, dict(progress))

  def _hand_over(self, save, *args) -> None:
    # Each pending save holds a device copy of what it saves: at most one waits behind the one being written, so
    # saves due faster than the disk takes them hold the loop (as orbax's own waiting for the previous save did)
    # instead of filling the device's memory.
    concurrent.futures.wait(self._handed_over[:-1])
    self._collect(wait=False)
    if jax.process_count() > 1:  # see the module's docstring
      save(*args)
    else:
      self._handed_over.append(self._saver.submit(save, *args))

  def _collect(self, *, wait: bool, raise_errors: bool = True) -> None:
    """Forgets finished saves (all of them first when `wait`). Failed ones are logged; the first one's error is
    raised once when `raise_errors`."""
    if wait:
      concurrent.futures.wait(self._handed_over)
    finished, pending = [], []
    for future in self._handed_over:
      (finished if future.done() else pending).append(future)
    self._handed_over = pending
    errors = [error for error in (future.exception() for future in finished) if error is not None]
    for error in errors[1 if raise_errors else 0:]:
      log.error("%s: a checkpoint save failed: %s: %s", self.directory, type(error).__name__, error)
    if errors and raise_errors:
      raise errors[0]

  # Run on the saver thread: orbax copies the arrays off the device, then writes them in its own threads.
  def _save_latest(self, step: int, state: Any, progress: dict) -> None:
    # One orbax save at a time over both managers: with several processes, orbax's commit barriers of the same
    # step in two managers meet each other, and one finalizes without the other process's metadata.
    self.best.wait_until_finished()
    self.latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   progress=ocp.args.JsonSave(progress)), force=True)

  def _save_best(self, step: int, params: Any, progress: dict) -> None:
    if step in self.best.all_steps():
      return
    self.latest.wait_until_finished()  # one orbax save at a time (see _save_latest)
    self.best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                 progress=ocp.args.JsonSave(progress)), force=True)

  def latest_step(self, *, raise_errors: bool = True) -> int | None:
    """The newest complete periodic checkpoint (pending saves finished first; a failed one's error is raised,
    or only logged without `raise_errors`: for messages about another error)."""
    self.wait(raise_errors=raise_errors)
    return self.latest.latest_step()

  def best_step(self) -> int | None:
    self.wait()
    return self.best.latest_step()

  @staticmethod
  def _restore(manager: ocp.CheckpointManager, item: str, abstract: Any, *,
               drop_unreadable: bool = False) -> tuple[Any, dict, int] | None:
    found = sorted(manager.all_steps(), reverse=True)
    for i, step in enumerate(found):
      try:
        restored = manager.restore(step, args=ocp.args.Composite(
            **{item: ocp.args.StandardRestore(abstract)}, progress=ocp.args.JsonRestore()))
      except Exception as error:  # noqa: BLE001 - any unreadable step: try the one before
        following = f"falling back to step {found[i + 1]}" if i + 1 < len(found) else "no older checkpoint left"
        log.warning("%s: checkpoint step %d is unreadable (%s: %s); %s", manager.directory, step,
                    type(error).__name__, str(error).splitlines()[0] if str(error) else "", following)
        continue
      if drop_unreadable:
        for newer in found[:i]:  # the resumed run saves these steps again
          log.warning("%s: deleting unreadable checkpoint step %d", manager.directory, newer)
          manager.delete(newer)
      return restored[item], dict(restored["progress"]), step
    if found:
      raise RuntimeError(f"{manager.directory}: no checkpoint of steps {found} can be restored (see the warnings); "
                         "if the run's settings changed since they were written (the 'resuming with changed "
                         "settings' warning lists them), resume with the old ones, else delete the stage's "
                         "directory to train it again from the start")
    return None

  def restore_latest(self, abstract_state: Any, *, drop_unreadable: bool) -> tuple[Any, dict, int] | None:
    """The newest readable periodic checkpoint as (state, progress, step), or None when there is none. Newer
    unreadable steps are deleted when `drop_unreadable` (the run that resumes: it writes those steps again)."""
    self.wait()
    return self._restore(self.latest, "state", abstract_state, drop_unreadable=drop_unreadable)

  def restore_best(self, abstract_params: Any) -> tuple[Any, dict, int] | None:
    """The best checkpoint as (params, progress, step), or None when there is none."""
    self.wait()
    return self._restore(self.best, "params", abstract_params)

  def wait(self, *, raise_errors: bool = True) -> None:
    """Blocks until every handed-over save is written; raises the first failed one's error (see `_collect`)."""
    self._collect(wait=True, raise_errors=raise_errors)
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self, *, raise_errors: bool = True) -> None:
    """Waits for pending saves, then releases the managers, also when a save failed (its error is raised after,
    or only logged without `raise_errors`: when closing because of another error)."""
    try:
      self._collect(wait=True, raise_errors=raise_errors)
    finally:
      self._saver.shutdown(wait=True)
      self.latest.close()
      self.best.close()


def abstract_like(state: Any, sharding) -> Any:
  """ShapeDtypeStructs of `state` placed with `sharding`: what a restore needs to put arrays on the mesh."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
