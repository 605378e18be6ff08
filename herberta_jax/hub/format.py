"""The export format's contract: its version, its default decoding, and finding, reading and checking
`herberta.json` (the schema itself is `herberta_schema`, shared with the shipped PyTorch pipeline)."""

from __future__ import annotations

import json

from herberta_jax import storage
from herberta_jax.errors import UserError, UserFileNotFoundError
from herberta_jax.hub import herberta_schema
from herberta_jax.hub.herberta_schema import DEFAULT_DECODING, FORMAT_VERSION

EXPORT_FORMAT_VERSION = FORMAT_VERSION
__all__ = ["DEFAULT_DECODING", "EXPORT_FORMAT_VERSION", "InvalidExportError", "export_directory", "read_meta",
           "run_decoding"]


class InvalidExportError(UserError, ValueError):
  """An export whose files are unreadable or disagree with the schema; names the file and the field."""


def run_decoding(meta: dict) -> dict:
  """The decoding the run recorded in its export (`herberta.json`'s "decoding"), completed by the defaults."""
  return {**DEFAULT_DECODING, **meta.get("decoding", {})}


def export_directory(directory) -> storage.Path:
  """An export directory as given (a local path or a URL), or the `export/` of a training workdir."""
  directory = storage.path(directory)
  if not (directory / "herberta.json").exists() and (directory / "export" / "herberta.json").exists():
    return directory / "export"
  return directory


def read_meta(directory) -> tuple[storage.Path, dict]:
  """(export directory, its herberta.json) of an export directory or a finished training workdir, the metadata
  checked against the schema on its own (`load_export` checks it against the checkpoints too).

  Raises UserFileNotFoundError without a herberta.json, InvalidExportError for one that is not valid JSON or does not
  match the schema."""
  directory = export_directory(directory)
  file = directory / "herberta.json"
  if not file.exists():
    raise UserFileNotFoundError(f"{storage.text(directory)}: no herberta.json; pass an export directory or a "
                                "training workdir whose run finished (it writes export/)")
  try:
    meta = json.loads(file.read_text(encoding="utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise InvalidExportError(f"{storage.text(file)}: not valid JSON ({error}); re-export the run (python -m "
                             "herberta_jax.export) or restore the file from the export") from error
  try:
    herberta_schema.check_meta(meta, storage.text(file))
  except herberta_schema.ExportError as error:
    raise InvalidExportError(str(error)) from error
  return directory, meta
