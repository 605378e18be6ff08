"""Tells a local path from a HuggingFace hub name, for the checkpoints and tokenizers a run is given."""

from __future__ import annotations

import pathlib


def looks_like_path(name_or_path: str | pathlib.Path) -> bool:
  """True when the text can only mean a local path: absolute, `./`, `~`, more than one `/`, or existing.

  A hub name has at most one slash (`org/model`), so anything else that is missing is a typo in a path, which
  deserves a "no such directory" error rather than a failed download.
  """
  text = str(name_or_path)
  path = pathlib.Path(text).expanduser()
  return path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or path.exists()
