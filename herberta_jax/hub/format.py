"""The export format's contract: its version, its default decoding, and finding and reading `herberta.json`."""

from __future__ import annotations

import json
import pathlib

EXPORT_FORMAT_VERSION = 1
# What an export written without "decoding" (or without one of its keys) decodes with.
DEFAULT_DECODING = {"max_span_len": 32, "disjoint_entities": False, "ordered_entities": False, "top_k": 1, "top_m": 1}


def run_decoding(meta: dict) -> dict:
  """The decoding the run recorded in its export (`herberta.json`'s "decoding"), completed by the defaults."""
  return {**DEFAULT_DECODING, **meta.get("decoding", {})}


def export_directory(directory) -> pathlib.Path:
  """An export directory as given, or the `export/` of a training workdir."""
  directory = pathlib.Path(directory)
  if not (directory / "herberta.json").exists() and (directory / "export" / "herberta.json").exists():
    return directory / "export"
  return directory


def read_meta(directory) -> tuple[pathlib.Path, dict]:
  """(export directory, its herberta.json) of an export directory or a finished training workdir."""
  directory = export_directory(directory)
  if not (directory / "herberta.json").exists():
    raise FileNotFoundError(f"{directory}: no herberta.json; pass an export directory or a training workdir "
                            "whose run finished (it writes export/)")
  meta = json.loads((directory / "herberta.json").read_text())
  if meta.get("format_version") != EXPORT_FORMAT_VERSION:
    raise ValueError(f"{directory}/herberta.json: format_version {meta.get('format_version')} is not "
                     f"{EXPORT_FORMAT_VERSION}; re-export with this version of herberta_jax")
  return directory, meta
