r"""Trains HERBERTa's two stages: `python -m herberta_jax.train --config configs/demo.py --workdir DIR`.

Flags parse the config file (overridable with `--config.a.b=value`); everything else is
`herberta_jax.run.train_and_evaluate`. A run restarted in the same workdir resumes by itself. `--workdir` may be a
bucket (`gs://b/run`). On SIGTERM (preemption) the run saves at the next step boundary and exits with status 75
(`preemption.EXIT_REQUEUE`), which the launchers requeue.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import ml_collections
from absl import flags
from ml_collections import config_flags

from herberta_jax import cli  # first: it sets the environment jax and transformers read on import
from herberta_jax.config_check import check_config
from herberta_jax.errors import ConfigError
from herberta_jax.training import distributed, preemption


def _checked_config_file(parse):
  """ml_collections' parsing of --config, where a config file whose get_config() raises, or returns anything but a
  ConfigDict, is one flag error naming the file (absl turns a ValueError here into one) rather than a traceback."""

  def checked(path):
    try:
      config = parse(path)
    except Exception as error:  # a config file is code: whatever it raises is the user's to fix
      # ml_collections re-raises a TypeError or ValueError with the traceback as its text: report the original.
      cause = error.__context__ if str(error).startswith("Error whilst parsing config file") else None
      cause = cause or error
      raise ValueError(f"get_config() raised {type(cause).__name__}: {cli.one_line(cause)}"
                       f"{_where(cause, path)}; fix the config file") from error
    if not isinstance(config, ml_collections.ConfigDict) and type(config).__name__ != "_ErrorConfig":
      # (_ErrorConfig: ml_collections' stand-in for a file that could not be opened, reported when first read)
      raise ValueError(f"get_config() returned {type(config).__name__}, not an ml_collections.ConfigDict; "
                       "make it return one (see configs/demo.py)")
    return config
  return checked


def _where(error: BaseException, path: str) -> str:
  """` (at FILE:LINE)` for the innermost line of the config file in `error`'s traceback, else ''."""
  file = path.split(":", 1)[0]
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == os.path.abspath(file)]
  return f" (at {file}:{lines[-1]})" if lines else ""


_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py.", lock_config=True)
flags.FLAGS["config"].parser.parse = _checked_config_file(flags.FLAGS["config"].parser.parse)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory (or gs:// URL) for checkpoints, logs, metrics and the "
                               "export.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Train in a non-empty --workdir that is not a herberta_jax workdir "
                                "(a folder of other files, which the run may overwrite).")
flags.mark_flags_as_required(["config", "workdir"])
log = logging.getLogger("herberta_jax.train")  # not __name__, which is __main__ under `python -m`


def main(argv):
  del argv
  try:
    check_config(_CONFIG.value)  # before any work: a bad value would otherwise surface minutes in
  except OSError as error:  # config_flags defers a config file that failed to load until it is read
    raise ConfigError(f"--config: {cli.one_line(error)}") from error
  distributed.initialize()
  from herberta_jax import run as run_lib  # after distributed start-up: it touches devices
  # Recorded for the export's model card, as a command that reruns it (whichever way the CLI was started).
  command = ["python", "-m", "herberta_jax.train", *sys.argv[1:]]
  try:
    metrics = run_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value, command=command,
                                         overwrite=_OVERWRITE.value)
  except preemption.Preempted as stop:
    log.warning("%s; exiting with status %d (requeue): run the same command again to resume from there",
                stop, preemption.EXIT_REQUEUE)
    sys.exit(preemption.EXIT_REQUEUE)
  if metrics:
    log.info("test: %s", {k: round(v["f1"], 4) for k, v in metrics.items() if isinstance(v, dict) and "f1" in v})


def run() -> None:
  """The `herberta-train` console script."""
  cli.run_cli(main, interrupted_note="the last checkpoint in --workdir is kept; rerun the same command to resume "
                                    "from it")


if __name__ == "__main__":
  run()
