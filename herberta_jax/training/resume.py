"""A stage's restart from its latest checkpoint, computing nothing the checkpoint replaces.

With a warm compilation cache a restart spends its seconds before the first step on the restore and on the step's
tracing, lowering and loading from the cache (the cache skips only XLA's compilation). So the restore target is
abstract (`jax.eval_shape`: no initial parameters or optimizer state are computed to be thrown away), and the
step is compiled for that abstract state while Orbax reads the arrays in a thread: jit's in-memory caches then
serve the first real call, as they key on shapes, dtypes and shardings, which the restored state shares.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import jax

from herberta_jax.training import checkpoint


def abstract_state(create: Callable[[], Any], sharding) -> Any:
  """The ShapeDtypeStructs (placed with `sharding`) of what `create()` returns, without running it."""
  return checkpoint.abstract_like(jax.eval_shape(create), sharding)


def restore_while_compiling(ckpts: checkpoint.StageCheckpoints, abstract: Any,
                            compile_step: Callable[[], Any] | None) -> tuple[Any, dict, int] | None:
  """`ckpts.restore_latest(abstract)` (dropping unreadable newer steps) run in a thread while `compile_step()`
  (if any) runs here. An error of either is raised once both are done (the restore's first)."""
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="restore") as pool:
    pending = pool.submit(ckpts.restore_latest, abstract, drop_unreadable=True)
    try:
      if compile_step is not None:
        compile_step()
    finally:
      restored = pending.result()  # also when compiling failed: never leave a restore running
  return restored
