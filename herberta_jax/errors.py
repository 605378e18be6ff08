"""`UserError`: the base of every error a user can fix (bad data, flags, paths, checkpoints or config values).

The CLIs (`herberta_jax.cli.run_cli`) print such an error as one line and exit with status 2; any other exception
is a bug and keeps its traceback. This module imports nothing of the package, so every layer can raise these.
"""

from __future__ import annotations


class UserError(Exception):
  """A problem in what the user gave: the message says what, where (file:line, flag or config key) and what to do."""


class UserFileNotFoundError(UserError, FileNotFoundError):
  """A path the user gave (a flag, a config value) does not exist; still a FileNotFoundError for callers."""


class UserFileExistsError(UserError, FileExistsError):
  """An output path the user gave would overwrite something; still a FileExistsError for callers."""


class ConfigError(UserError, ValueError):
  """A config value out of range or a config key that does not exist; names the key as `--config.a.b`."""


class ArgumentError(UserError, ValueError):
  """A flag or argument value out of range (the message names the flag); still a ValueError for callers."""
