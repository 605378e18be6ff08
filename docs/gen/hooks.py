"""MkDocs hooks: the pages generated at build time, so that none of them can drift from the code they describe.

- `configuration.md`: every key of configs/base.py with its default and comment (docs/gen/config_reference.py);
- `images/performance.png`: JAX against PyTorch per device, drawn from bench/results/ (docs/gen/performance_chart.py).
"""

from __future__ import annotations

import importlib.util
import io
import pathlib

from mkdocs.structure.files import File

GEN = pathlib.Path(__file__).resolve().parent


def _load(name: str):
  spec = importlib.util.spec_from_file_location(f"herberta_docs_{name}", GEN / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def on_files(files, config):
  files.append(File.generated(config, "configuration.md", content=_load("config_reference").markdown()))
  chart = io.BytesIO()
  _load("performance_chart").draw(chart)
  files.append(File.generated(config, "images/performance.png", content=chart.getvalue()))
  return files
