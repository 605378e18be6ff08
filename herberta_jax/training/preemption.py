"""Preemption as the normal end of a pod job: SIGTERM -> finish the step, save, wait for the commit, exit 75.

A scheduler that takes the machines back (spot / preemptible TPU VMs, SLURM before a time limit or on
preemption) sends SIGTERM some 30 s before SIGKILL. The training loop asks `Watcher.should_stop()` at every step
boundary; when it says yes, the loop saves `latest/`, waits until the save is committed and raises `Preempted`,
which the train CLI turns into exit status `EXIT_REQUEUE` (75, BSD's EX_TEMPFAIL: "try again later"). The
launchers requeue a job that exits with it, and the rerun resumes from that checkpoint as if never stopped.

How the signal is heard:
- one process: this module's own SIGTERM handler (installed for the run, the previous one restored after);
- several processes (`jax.distributed`): JAX's preemption service. `jax.distributed.initialize` installs a C++
  SIGTERM handler (the "sigterm" notifier of XLA's PreemptionSyncManager) that tells the coordination service;
  every process then agrees on one sync point, the fastest process's call counter + 1, and
  `multihost_utils.reached_preemption_sync_point(n)` is True on every process at that same call, so all hosts
  save the same step. It must be called at every step by every process with the same counter, so the counter
  here is one per process that every stage continues (a stage ending right after the notice then still meets the
  sync point at the next stage's first step). A Python handler installed before the sync point would replace
  JAX's and no host would hear of the notice: ours is installed only once the sync point is reached.

Once a stop is under way (the first SIGTERM in one process, the sync point in several), a second SIGTERM, or
`deadline_s` (`HERBERTA_PREEMPTION_DEADLINE_S`, default 25 s) passing without the run having ended, exits at once
with `os._exit(EXIT_REQUEUE)`. Signals are counted by a thread reading Python's wakeup fd, which gets one byte per
delivery: a Python handler runs only when the main thread is back in Python (not during a long XLA call), and two
signals that arrive before it runs make one call. That leaves the last complete checkpoint intact: Orbax writes a step into a
temporary directory renamed when complete (locally), or into its final directory with `commit_success.txt`
written last (on `gs://`), and a restore lists only finished steps (tests/test_preemption.py kills saves midway).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import threading
import time

import jax
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

EXIT_REQUEUE = 75  # EX_TEMPFAIL: the launchers requeue a run that exits with it (launch/README.md)
DEADLINE_ENV = "HERBERTA_PREEMPTION_DEADLINE_S"
DEFAULT_DEADLINE_S = 25.0  # inside the 30 s most schedulers give between SIGTERM and SIGKILL

# Calls of `reached_preemption_sync_point` made by this process: JAX's sync point counts them (see the docstring).
_sync_calls = itertools.count(1)


class Preempted(Exception):  # noqa: N818 - an outcome, not an error: the run stopped where it can resume
  """The run stopped for preemption after `stage`'s step `step` was saved and committed in `checkpoint_dir`
  (`step` None: the stage had finished, and what comes after it had not begun)."""

  def __init__(self, stage: str, step: int | None, checkpoint_dir):
    self.stage, self.step, self.checkpoint_dir = stage, step, checkpoint_dir
    saved = f"saved step {step}" if step is not None else "had finished"
    super().__init__(f"preempted: the {stage} stage {saved} in {checkpoint_dir}")


def deadline_from_env(env=None) -> float:
  """`HERBERTA_PREEMPTION_DEADLINE_S` in seconds (> 0), else the default."""
  value = (os.environ if env is None else env).get(DEADLINE_ENV, "").strip()
  if not value:
    return DEFAULT_DEADLINE_S
  try:
    seconds = float(value)
  except ValueError:
    seconds = -1.0
  if not seconds > 0:
    from herberta_jax.errors import UserError
    raise UserError(f"{DEADLINE_ENV}={value!r}: must be a positive number of seconds (the time from SIGTERM to "
                    "the forced exit); unset it for the default of 25")
  return seconds


def _exit_now(reason: str) -> None:
  """Leaves the process at once with the requeue status: no cleanup, no waiting for threads."""
  try:
    sys.stderr.write(f"herberta_jax: {reason}: exiting at once with status {EXIT_REQUEUE} (requeue); the last "
                     "complete checkpoint is kept\n")
    sys.stderr.flush()
  finally:
    os._exit(EXIT_REQUEUE)


class Watcher:
  """Tells the training loop, at every step boundary, whether to stop for preemption (see the module docstring).

  Use as a context manager around the training, from the main thread: it installs the SIGTERM handler of a
  one-process run on entry and restores the previous handler on exit. Elsewhere (another thread) no handler can
  be installed, and SIGTERM keeps its previous meaning.
  """

  def __init__(self, *, deadline_s: float | None = None):
    self.deadline_s = deadline_from_env() if deadline_s is None else deadline_s
    self.multiprocess = jax.process_count() > 1
    self._stopping = threading.Event()  # set on the first SIGTERM (one process) or at the sync point (several)
    self.signal_time: float | None = None
    self._previous = None  # the SIGTERM handler replaced, restored on exit
    self._previous_wakeup = -1
    self._wakeup_write: int | None = None
    self._installed = False
    self._lock = threading.Lock()
    self._timer: threading.Timer | None = None
    self._sync_service = True  # False once JAX said its preemption service is off

  # -- installing -------------------------------------------------------------------------------------------

  def __enter__(self) -> Watcher:
    if not self.multiprocess:
      self._install_handler()
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _install_handler(self) -> None:
    if threading.current_thread() is not threading.main_thread():
      log.debug("not in the main thread: SIGTERM keeps its handler, the run does not stop for preemption")
      return
    read, self._wakeup_write = os.pipe()
    os.set_blocking(self._wakeup_write, False)
    self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    self._previous_wakeup = signal.set_wakeup_fd(self._wakeup_write, warn_on_full_buffer=False)
    self._installed = True
    threading.Thread(target=self._count_signals, args=(read,), name="preemption-signals", daemon=True).start()

  def close(self) -> None:
    """Restores the previous SIGTERM handler and cancels the deadline (the run has ended, one way or another)."""
    if self._timer is not None:
      self._timer.cancel()
      self._timer = None
    if self._installed:
      # None: the previous handler was not set from Python (JAX's C++ one): the default is the nearest to it.
      signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
      signal.set_wakeup_fd(self._previous_wakeup)
      os.close(self._wakeup_write)  # the counting thread reads the end of the pipe and leaves
      self._installed = False

  # -- the signal -------------------------------------------------------------------------------------------

  @staticmethod
  def _on_sigterm(signum, frame) -> None:
    """Python's handler: its C part writes the signal to the wakeup fd, which `_count_signals` acts on."""
    del signum, frame

  def _count_signals(self, read: int) -> None:
    try:
      while received := os.read(read, 64):
        for _ in range(received.count(bytes([signal.SIGTERM]))):
          self._sigterm()
    finally:
      os.close(read)

  def _sigterm(self) -> None:
    with self._lock:
      if self._stopping.is_set():
        _exit_now("a second SIGTERM")
      self._begin_stop()
    sys.stderr.write(f"herberta_jax: SIGTERM: saving at the next step boundary, then exiting with status "
                     f"{EXIT_REQUEUE}; a second SIGTERM or {self.deadline_s:g} s exit at once\n")

  def _begin_stop(self) -> None:
    if self._stopping.is_set():
      return
    self._stopping.set()
    self.signal_time = time.time()
    self._timer = threading.Timer(self.deadline_s, _exit_now, args=(f"{self.deadline_s:g} s after the preemption "
                                                                   "notice the run had not ended",))
    self._timer.daemon = True
    self._timer.start()

  def request_stop(self) -> None:
    """What a SIGTERM does (one process): the next `should_stop` says yes. For tests and embedding programs."""
    with self._lock:
      self._begin_stop()

  # -- the loop's question ----------------------------------------------------------------------------------

  @property
  def stopping(self) -> bool:
    """Whether a stop is under way, without asking JAX (for the points between stages, where every process
    already agreed: the flag is set at the sync point with several processes)."""
    return self._stopping.is_set()

  def should_stop(self) -> bool:
    """Whether to save and stop after the step just taken. Several processes: call it at every step boundary on
    every process (it is JAX's sync point, the same answer on every process at the same call)."""
    if not self.multiprocess:
      return self._stopping.is_set()
    if self._stopping.is_set():
      return True
    if not self._sync_service:
      return False
    try:
      reached = multihost_utils.reached_preemption_sync_point(next(_sync_calls))
    except RuntimeError as error:  # jax_enable_preemption_service is off: SIGTERM ends the run as it always did
      log.warning("JAX's preemption service is off (%s): a SIGTERM will not save before the run ends", error)
      self._sync_service = False
      return False
    if reached:
      self._begin_stop()
      self._install_handler()  # JAX's notifier has done its part: a second SIGTERM now exits at once
      log.warning("preemption notice: every process stops at this step, saves and exits with status %d",
                  EXIT_REQUEUE)
    return reached
