"""Compiles the loop's jitted functions for every padded length of their feeds, ahead of the batches that need them.

A jitted function compiles the first time it sees a shape. In a training run that puts the second bucket's
compilation minutes into training and the dev evaluation's at the first evaluation, with the accelerator idle
while the host traces and XLA compiles (on an H100 a BERT-base bucket costs more than a thousand steps). Here the
program the first batch needs is compiled before the first step, and every other one in background threads
(XLA compiles without holding the GIL) while training runs: a restart waits for one program, and a batch of a new
length finds its program compiled, or waits only for what is left of its compilation.

On the CPU there is nothing to overlap: the compiler's threads would run on the cores the steps compute on. There
every program is compiled (in parallel) before the first step (`background=False`), so no step shares the cores
with a compilation and the rate a run reports after its first step is the steps' own.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os

import jax

log = logging.getLogger(__name__)


class ByLength:
  """`jitted(leading, batch)`, calling the program compiled ahead for the batch's padded length.

  A length that was not compiled ahead (none should arrive) goes through the jitted function as before.
  """

  def __init__(self, jitted, programs: dict[int, concurrent.futures.Future]):
    self._jitted, self._programs = jitted, programs

  def __call__(self, leading, batch):
    program = self._programs.get(batch["input_ids"].shape[1])
    return (program.result() if program is not None else self._jitted)(leading, batch)


def _compile(jitted, abstract_args: tuple):
  return jitted.lower(*abstract_args).compile()


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Later:
  """`jitted(*args)` through its program compiled in the background (waiting for it if need be)."""

  def __init__(self, program: concurrent.futures.Future):
    self._program = program

  def __call__(self, *args):
    return self._program.result()(*args)


class AheadOfTime:
  """For each (jitted, leading, feed) job, `jitted(leading, batch)` compiled for every length in `feed.lengths`;
  for each (jitted, args) of `others`, `jitted(*args)` compiled once.

  `leading` and `args` are the arguments as they will be passed (arrays with their shardings; only shapes are
  read). `first_length` (of job 0's feed) is compiled before the constructor returns; the rest in background
  threads, or with `background=False` also before it returns. `functions` and `others_compiled` call the
  programs. `close()` drops the compilations not yet started (a short run may end before them).
  """

  def __init__(self, jobs: list[tuple[object, object, object]], *, first_length: int | None, name: str,
               others: tuple[tuple[object, tuple], ...] = (), background: bool = True):
    tasks = [(index, length, jitted, _abstract(leading), feed.abstract_batch(length))
             for index, (jitted, leading, feed) in enumerate(jobs) for length in feed.lengths]
    workers = min(len(tasks) + len(others), os.cpu_count() or 1)
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{name}-compile")
    # `others` first: they are small, and a save waits for its snapshot program.
    others_futures = [self._pool.submit(_compile, jitted, _abstract(args)) for jitted, args in others]
    self.others_compiled = [Later(future) for future in others_futures]
    programs: list[dict[int, concurrent.futures.Future]] = [{} for _ in jobs]
    for index, length, jitted, leading, batch in tasks:
      if index == 0 and length == first_length:
        future = concurrent.futures.Future()
        future.set_result(_compile(jitted, (leading, batch)))
      else:
        future = self._pool.submit(_compile, jitted, (leading, batch))
      programs[index][length] = future
    if background:
      log.info("%s: %d programs compiling ahead", name, len(tasks) + len(others))
    else:
      concurrent.futures.wait(others_futures + [future for by_length in programs for future in by_length.values()])
      log.info("%s: %d programs compiled before the first step", name, len(tasks) + len(others))
    self.functions = [ByLength(jitted, by_length) for (jitted, _, _), by_length in zip(jobs, programs)]

  def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)
