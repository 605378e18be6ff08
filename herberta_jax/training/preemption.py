"""Preemption as the normal end of a pod job: SIGTERM -> finish the step, save, wait for the commit, exit 75.

A scheduler that takes the machines back (spot / preemptible TPU VMs, SLURM before a time limit or on
preemption) sends SIGTERM some 30 s before SIGKILL. The training loop asks `Watcher.should_stop()` at every step
boundary; when it says yes, the loop saves `latest/`, waits until the save is committed and raises `Preempted`,
which the train CLI turns into exit status `EXIT_REQUEUE` (75, BSD's EX_TEMPFAIL: "try again later"). The
launchers requeue a job that exits with it, and the rerun resumes from that checkpoint as if never stopped.

How the signal is heard: this module's own SIGTERM handler, installed for the run (the previous one restored
after). With several processes (`jax.distributed`) the hosts must stop at the same step, and a notice may reach
only some of them: at every logging window (and a stage's last step) the loop asks `should_stop(agree=True)`, and
the processes all-gather their flags, so every process stops at the first window after any of them heard SIGTERM.
JAX's own preemption sync point (`multihost_utils.reached_preemption_sync_point`) was tried first: its hosts agree
on "the fastest host's step + 1" in a background protocol, which a host running ahead (asynchronous dispatch, a
loaded machine) had already passed when the answer came, so the hosts stopped at different steps and deadlocked.
Our handler replaces the C++ one JAX's preemption service installs; the windows cost one small collective each.

Once a process has heard a first SIGTERM (or, with several processes, learnt of one at a window), a second
SIGTERM, or `deadline_s` (`HERBERTA_PREEMPTION_DEADLINE_S`, default 25 s) passing without the run having ended,
exits at once with `os._exit(EXIT_REQUEUE)`, releasing the workdir's lock first. Signals are counted by a thread
reading Python's wakeup fd, which gets one byte per delivery: a Python handler runs only when the main thread is
back in Python (not during a long XLA call), and two signals that arrive before it runs make one call. That leaves
the last complete checkpoint intact: Orbax writes a step into a temporary directory renamed when complete
(locally), or into its final directory with `commit_success.txt` written last (on `gs://`), and a restore lists
only finished steps (tests/test_preemption.py kills saves midway).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

from herberta_jax import folders

log = logging.getLogger(__name__)

EXIT_REQUEUE = 75  # EX_TEMPFAIL: the launchers requeue a run that exits with it (launch/README.md)
DEADLINE_ENV = "HERBERTA_PREEMPTION_DEADLINE_S"
DEFAULT_DEADLINE_S = 25.0  # inside the 30 s most schedulers give between SIGTERM and SIGKILL



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
    folders.release_held_locks()  # a requeued run may start on another host at once
    sys.stderr.write(f"herberta_jax: {reason}: exiting at once with status {EXIT_REQUEUE} (requeue); the last "
                     "complete checkpoint is kept\n")
    sys.stderr.flush()
  finally:
    os._exit(EXIT_REQUEUE)


class Watcher:
  """Tells the training loop, at every step boundary, whether to stop for preemption (see the module docstring).

  Use as a context manager around the training, from the main thread: it installs the SIGTERM handler on entry
  and restores the previous handler on exit. Elsewhere (another thread) no handler can be installed, and SIGTERM
  keeps its previous meaning.
  """

  def __init__(self, *, deadline_s: float | None = None):
    self.deadline_s = deadline_from_env() if deadline_s is None else deadline_s
    self.multiprocess = jax.process_count() > 1
    self._noticed = threading.Event()  # this process heard SIGTERM (or `request_stop`)
    self._stopping = threading.Event()  # the run stops: at the notice (one process), when agreed (several)
    self._previous = None  # the SIGTERM handler replaced, restored on exit
    self._previous_wakeup = -1
    self._wakeup_write: int | None = None
    self._installed = False
    self._lock = threading.Lock()
    self._timer: threading.Timer | None = None

  # -- installing -------------------------------------------------------------------------------------------

  def __enter__(self) -> Watcher:
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
      if self._noticed.is_set():
        _exit_now("a second SIGTERM")
      self._notice()
    when = "at the next step boundary" if not self.multiprocess else "at the next logging window, with every process"
    sys.stderr.write(f"herberta_jax: SIGTERM: saving {when}, then exiting with status {EXIT_REQUEUE}; a second "
                     f"SIGTERM or {self.deadline_s:g} s exit at once\n")

  def _notice(self) -> None:
    """The first notice this process hears: the deadline starts; one process stops at the next step."""
    if self._noticed.is_set():
      return
    self._noticed.set()
    self._start_deadline()
    if not self.multiprocess:
      self._stopping.set()

  def _start_deadline(self) -> None:
    if self._timer is not None:
      return
    self._timer = threading.Timer(self.deadline_s, _exit_now, args=(f"{self.deadline_s:g} s after the preemption "
                                                                   "notice the run had not ended",))
    self._timer.daemon = True
    self._timer.start()

  def request_stop(self) -> None:
    """What a SIGTERM does (one process): the next `should_stop` says yes. For tests and embedding programs."""
    with self._lock:
      self._notice()

  # -- the loop's question ----------------------------------------------------------------------------------

  @property
  def stopping(self) -> bool:
    """Whether a stop is under way, without a collective (for the points between stages: with several processes
    it is set only where every process agreed)."""
    return self._stopping.is_set()

  def should_stop(self, *, agree: bool) -> bool:
    """Whether to save and stop after the step just taken. Several processes: called by every process at every
    step with the same `agree` (the logging windows and a stage's last step); only there do they all-gather
    whether any of them heard a notice, so all stop at the same step."""
    if not self.multiprocess or self._stopping.is_set():
      return self._stopping.is_set()
    if not agree:
      return False
    heard = multihost_utils.process_allgather(np.int32(self._noticed.is_set()))
    if not np.any(heard):
      return False
    with self._lock:
      self._stopping.set()
      self._start_deadline()
    log.warning("preemption notice: every process stops at this step, saves and exits with status %d",
                EXIT_REQUEUE)
    return True
