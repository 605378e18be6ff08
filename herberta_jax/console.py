"""What every command shows on stderr: one style of progress bar, log lines that print above it, and how much.

Base layer (like `errors.py`): every layer may use it, and it imports nothing from the package.

- `Progress`: the one progress bar (tqdm) of `prepare`, `train`, `predict` and `evaluate`. `first_done()` counts
  the first step (which compiles) and starts the rate and ETA after it, so a first step of seconds does not show an
  ETA of hours (the elapsed time it shows counts from there too; the commands print their total time).
- `configure_logging(verbosity)`: the CLIs' logging. At the default, -1, only the package's own status lines
  (`herberta_jax.*` loggers at INFO, as plain text) and every library's warnings and errors are shown; 0 shows
  every library's INFO lines in absl's format (XLA, Orbax, transformers), 1 and more debug lines. All go through
  `tqdm.write`, so a log line never lands on the end of a progress bar.
- `rate(count, seconds)`: a throughput with three significant digits.
"""

from __future__ import annotations

import logging
import os
import sys

import tqdm

PACKAGE_LOGGER = "herberta_jax"
VERBOSITY_ENV = "HERBERTA_VERBOSITY"  # the default of every CLI's --verbosity
QUIET = -1  # absl's WARNING level: the CLIs' default


class Progress(tqdm.tqdm):
  """The progress bar of every command: on stderr, fitted to the terminal width, `unit` per second; redrawn at most
  every 0.1 s on a terminal, every 10 s into a file or pipe."""

  def __init__(self, total: int | None = None, *, desc: str, unit: str = "it", initial: int = 0,
               disable: bool = False):
    # Into a file or pipe (a log, a batch job) a frame every 10 s rather than 10 a second.
    interactive = sys.stderr.isatty()
    super().__init__(total=total, desc=desc, unit=unit, initial=initial, disable=disable, file=sys.stderr,
                     dynamic_ncols=True, unit_scale=False, smoothing=0.1, mininterval=0.1 if interactive else 10.0)

  def first_done(self, n: int = 1) -> None:
    """Counts the first `n` items, whose time is mostly compilation, and starts the clock after them."""
    self.n += n
    self.start_clock()

  def start_clock(self) -> None:
    """Measures rate and ETA from now on, counting only the items done from now: call it after the first
    (compiling) step. Until the next update the ETA reads '?'."""
    if self.disable:
      return
    # What `reset()` does, but keeping the count (and without drawing a bar at 0 in between).
    self.start_t = self.last_print_t = self._time()
    self.initial = self.last_print_n = self.n
    self._ema_dn, self._ema_dt, self._ema_miniters = (tqdm.std.EMA(self.smoothing) for _ in range(3))
    self.refresh()


def rate(count: float, seconds: float) -> str:
  """`count / seconds` with three significant digits and no exponent: 0.523, 12.3, 1,230."""
  value = count / max(seconds, 1e-9)
  if value >= 100:
    return f"{value:,.0f}"
  return f"{value:.3g}"


def verbosity_from_env(default: int = QUIET) -> int:
  """`HERBERTA_VERBOSITY` as an int (absl's scale: -1 warnings, 0 info, 1 debug), or `default`."""
  value = os.environ.get(VERBOSITY_ENV, "").strip()
  try:
    return int(value) if value else default
  except ValueError:
    return default


class _TqdmHandler(logging.StreamHandler):
  """Writes each record with `tqdm.write`, which clears the active bars, prints the line and redraws them."""

  def emit(self, record: logging.LogRecord) -> None:
    try:
      tqdm.tqdm.write(self.format(record), file=sys.stderr)
    except Exception:  # logging must never raise
      self.handleError(record)


class _PlainFormatter(logging.Formatter):
  """The quiet default: the package's INFO lines as their message alone, anything else with its level and logger."""

  def format(self, record: logging.LogRecord) -> str:
    message = record.getMessage()
    if record.exc_info:
      message += "\n" + self.formatException(record.exc_info)
    if record.levelno == logging.INFO and record.name.startswith(PACKAGE_LOGGER):
      return message
    source = record.name if not record.name.startswith(PACKAGE_LOGGER) else ""
    return f"{record.levelname.lower()}: {f'{source}: ' if source else ''}{message}"


class _LibraryInfoFilter(logging.Filter):
  """At verbosity 0, drops the INFO records of Orbax and TF (a dozen per checkpoint opened), keeping warnings."""

  def filter(self, record: logging.LogRecord) -> bool:
    noisy = any(part in record.pathname for part in ("orbax", "tensorflow"))
    return record.levelno >= logging.WARNING or not noisy


def configure_logging(verbosity: int = QUIET) -> None:
  """Sets what a CLI prints on stderr (see the module docstring); replaces absl's handler on the root logger."""
  from absl import logging as absl_logging

  root = logging.getLogger()
  for handler in list(root.handlers):
    if handler is absl_logging.get_absl_handler() or isinstance(handler, _TqdmHandler):
      root.removeHandler(handler)
  handler = _TqdmHandler()
  if verbosity < 0:
    handler.setFormatter(_PlainFormatter())
    root.setLevel(logging.WARNING)
    logging.getLogger(PACKAGE_LOGGER).setLevel(logging.INFO)
  else:
    handler.setFormatter(absl_logging.PythonFormatter())
    root.setLevel(logging.INFO if verbosity == 0 else logging.DEBUG - (verbosity - 1))
    logging.getLogger(PACKAGE_LOGGER).setLevel(logging.NOTSET)
    if verbosity == 0:
      handler.addFilter(_LibraryInfoFilter())
  root.addHandler(handler)
  logging.getLogger("absl").setLevel(logging.NOTSET)  # absl.logging calls follow the root's level
  # transformers logs through its own handler, at the level it read from TRANSFORMERS_VERBOSITY on import.
  if "transformers" in sys.modules:
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity(hf_logging.ERROR if verbosity < 0 else
                             hf_logging.WARNING if verbosity == 0 else hf_logging.INFO)


def quiet_environment(verbosity: int) -> None:
  """Environment defaults read by libraries on import (call before importing jax or transformers): XLA's C++ logs
  (TF_CPP_MIN_LOG_LEVEL) and transformers' import-time advice ("PyTorch was not found"). A value the user set wins."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if verbosity < 0 else "0")
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error" if verbosity < 0 else "warning" if verbosity == 0
                        else "info")
