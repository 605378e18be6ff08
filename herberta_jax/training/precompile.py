"""Compiles the loop's jitted functions for every padded length of their feeds before the first step, in parallel.

A jitted function compiles the first time it sees a shape. In a training run that puts the second bucket's
compilation minutes into training and the dev evaluation's at the first evaluation, with the accelerator idle
while the host traces and XLA compiles (on an H100 a BERT-base bucket costs more than a thousand steps). Compiled
up front, in threads (XLA compiles without holding the GIL), the programs build side by side, the persistent
compilation cache serves a restarted run before its first step, and the loop never stalls on a new shape.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time

import jax

log = logging.getLogger(__name__)


class ByLength:
  """`jitted(leading, batch)`, calling the program compiled ahead for the batch's padded length.

  A length that was not compiled ahead (none should arrive) goes through the jitted function as before.
  """

  def __init__(self, jitted, compiled: dict[int, object]):
    self._jitted, self._compiled = jitted, compiled

  def __call__(self, leading, batch):
    return self._compiled.get(batch["input_ids"].shape[1], self._jitted)(leading, batch)


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def ahead_of_time(jobs: list[tuple[object, object, object]], *, name: str) -> list[ByLength]:
  """For each (jitted, leading, feed): `jitted(leading, batch)` compiled for every length in `feed.lengths`.

  `leading` is the first argument as it will be passed (arrays with their shardings; only shapes are read).
  All programs of all jobs compile at once, one thread each.
  """
  tasks = [(index, length, jitted, _abstract(leading), feed.abstract_batch(length))
           for index, (jitted, leading, feed) in enumerate(jobs) for length in feed.lengths]
  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="compile") as pool:
    futures = [pool.submit(lambda t: t[2].lower(t[3], t[4]).compile(), task) for task in tasks]
    compiled = [{} for _ in jobs]
    for (index, length, *_), future in zip(tasks, futures):
      compiled[index][length] = future.result()
  log.info("%s: %d programs compiled ahead in %.1f s", name, len(tasks), time.perf_counter() - start)
  return [ByLength(jitted, programs) for (jitted, _, _), programs in zip(jobs, compiled)]
