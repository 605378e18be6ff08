"""Checkpoints: the only module that imports orbax, so a move to the next orbax API stays here.

Each stage keeps two orbax `CheckpointManager`s under `workdir/<stage>/`: `latest/` (periodic, for resuming) and
`best/` (the best dev score, the one exported). Orbax writes a step into a temporary directory and renames it when
complete, so a run killed during a save leaves the previous step restorable.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class StageCheckpoints:
  """Periodic and best checkpoints of one stage: the train state plus a JSON record of the run's progress."""

  def __init__(self, directory: str | pathlib.Path, *, keep_latest: int = 2):
    directory = pathlib.Path(directory).absolute()
    self.latest = ocp.CheckpointManager(
        directory / "latest", options=ocp.CheckpointManagerOptions(
            max_to_keep=keep_latest, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=False))
    self.best = ocp.CheckpointManager(
        directory / "best", options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=False))

  @staticmethod
  def _save(manager: ocp.CheckpointManager, step: int, state: Any, progress: dict) -> None:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               progress=ocp.args.JsonSave(progress)), force=True)
    manager.wait_until_finished()

  def save_latest(self, step: int, state: Any, progress: dict) -> None:
    self._save(self.latest, step, state, progress)

  def save_best(self, step: int, state: Any, progress: dict) -> None:
    self._save(self.best, step, state, progress)

  @staticmethod
  def _restore(manager: ocp.CheckpointManager, abstract_state: Any) -> tuple[Any, dict] | None:
    step = manager.latest_step()
    if step is None:
      return None
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), progress=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["progress"])

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """The newest periodic checkpoint as (state, progress), or None when the stage has none."""
    return self._restore(self.latest, abstract_state)

  def restore_best(self, abstract_state: Any) -> tuple[Any, dict] | None:
    return self._restore(self.best, abstract_state)

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def abstract_like(state: Any, sharding) -> Any:
  """ShapeDtypeStructs of `state` placed with `sharding`: what a restore needs to put arrays on the mesh."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
