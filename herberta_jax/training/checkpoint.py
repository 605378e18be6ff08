"""Checkpoints: the only module that imports orbax, so a move to the next orbax API stays here.

Each stage keeps two orbax `CheckpointManager`s under `workdir/<stage>/checkpoints/`: `latest/` holds what a
resume needs (the whole train state, the last `keep_latest` saves) and `best/` what evaluation and export need
(the parameters of the best dev score). Saves are asynchronous: `save_*` returns once the arrays are copied off
the device, and training goes on while they are written. Orbax writes a step into a temporary directory and
renames it when complete, so a run killed during a save leaves the previous step restorable; a finished step that
is unreadable anyway (a truncated file) is skipped for the one before it, with a warning.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class StageCheckpoints:
  """Periodic and best checkpoints of one stage, each with a JSON record of the run's progress."""

  def __init__(self, directory: str | pathlib.Path, *, keep_latest: int | None):
    """`keep_latest`: periodic checkpoints kept (None keeps all: for reading a workdir, not training)."""
    self.directory = pathlib.Path(directory).absolute()

    def manager(name: str, keep: int) -> ocp.CheckpointManager:
      return ocp.CheckpointManager(self.directory / name, options=ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=True))

    self.latest, self.best = manager("latest", keep_latest), manager("best", 1)

  def save_latest(self, step: int, state: Any, progress: dict) -> None:
    """Starts saving the full train state; returns when the arrays are off the device."""
    # One asynchronous save at a time over both managers: with several processes, orbax's commit barriers of
    # the same step in two managers meet each other, and one finalizes without the other process's metadata.
    self.best.wait_until_finished()
    self.latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   progress=ocp.args.JsonSave(dict(progress))), force=True)

  def save_best(self, step: int, params: Any, progress: dict) -> None:
    """Starts saving the parameters; a step already saved (a resumed run evaluating it again) is kept as is."""
    if step in self.best.all_steps():
      return
    self.latest.wait_until_finished()  # one asynchronous save at a time (see save_latest)
    self.best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                 progress=ocp.args.JsonSave(dict(progress))), force=True)

  def latest_step(self) -> int | None:
    """The newest complete periodic checkpoint (pending saves finished first)."""
    self.latest.wait_until_finished()
    return self.latest.latest_step()

  def best_step(self) -> int | None:
    self.best.wait_until_finished()
    return self.best.latest_step()

  @staticmethod
  def _restore(manager: ocp.CheckpointManager, item: str, abstract: Any, *,
               drop_unreadable: bool = False) -> tuple[Any, dict, int] | None:
    manager.wait_until_finished()
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
                         "delete the stage's directory to train it again from the start")
    return None

  def restore_latest(self, abstract_state: Any, *, drop_unreadable: bool) -> tuple[Any, dict, int] | None:
    """The newest readable periodic checkpoint as (state, progress, step), or None when there is none. Newer
    unreadable steps are deleted when `drop_unreadable` (the run that resumes: it writes those steps again)."""
    return self._restore(self.latest, "state", abstract_state, drop_unreadable=drop_unreadable)

  def restore_best(self, abstract_params: Any) -> tuple[Any, dict, int] | None:
    """The best checkpoint as (params, progress, step), or None when there is none."""
    return self._restore(self.best, "params", abstract_params)

  def wait(self) -> None:
    """Blocks until every pending save is written."""
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then releases the managers."""
    self.latest.close()
    self.best.close()


def abstract_like(state: Any, sharding) -> Any:
  """ShapeDtypeStructs of `state` placed with `sharding`: what a restore needs to put arrays on the mesh."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
