"""MkDocs hook: regenerates the pages made from the code before every build, so that none of them can drift.

- `docs/configuration.md`: every key of configs/base.py with its default and comment (docs/gen/config_reference.py);
- `docs/images/performance.png`: JAX against PyTorch per device, from bench/results/ (docs/gen/performance_chart.py).

Both are committed too, so that they read on GitHub; a file is rewritten only when its content changed (so that
`mkdocs serve` does not rebuild in a loop), and tests/test_docs.py fails when the committed configuration page is
stale.
"""

from __future__ import annotations

import importlib.util
import io
import pathlib

GEN = pathlib.Path(__file__).resolve().parent
DOCS = GEN.parent


def _load(name: str):
  spec = importlib.util.spec_from_file_location(f"herberta_docs_{name}", GEN / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _write_if_changed(path: pathlib.Path, data: bytes) -> None:
  if not path.exists() or path.read_bytes() != data:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def regenerate() -> None:
  _write_if_changed(DOCS / "configuration.md", _load("config_reference").markdown().encode())
  chart = io.BytesIO()
  _load("performance_chart").draw(chart)
  _write_if_changed(DOCS / "images" / "performance.png", chart.getvalue())


def on_pre_build(config) -> None:
  regenerate()
