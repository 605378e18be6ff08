"""The package's layers import only downward: base < data < model < training | hub < inference < evaluation < top.

Read from the source with `ast` (no import runs), so a violation is found even in a branch no test executes.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "herberta_jax"

# What each layer may import from the package; a layer may always import itself. Training and hub sit side by
# side: the run composes them (`run.py`), neither knows the other. The top floor is the CLIs and `run.py`. The
# base is `errors.py`, the user-error types every layer raises and the CLIs catch, `console.py`, the progress
# bar and log set-up every command shares, `compile_cache.py`, the compilation cache every command turns on,
# `storage.py`, the path layer under every read and write, `folders.py`, what the project's folders are and their
# lock (which a forced exit on preemption releases), and the package's `__version__`, which exports record.
BASE = {"herberta_jax.errors", "herberta_jax.console", "herberta_jax.compile_cache", "herberta_jax.storage",
        "herberta_jax.folders", "herberta_jax.__version__"}
ALLOWED = {
    "base": set(),
    "data": {"base"},
    "model": {"base", "data"},
    "training": {"base", "data", "model"},
    "hub": {"base", "data", "model"},
    "inference": {"base", "data", "model", "hub"},
    "evaluation": {"base", "data", "model", "hub", "inference"},
    "top": {"base", "data", "model", "training", "hub", "inference", "evaluation"},
}


def layer_of(module: str) -> str:
  """`herberta_jax.data.smiler` -> data; a top-level module (`herberta_jax.train`) -> top."""
  if module in BASE or any(module.startswith(base + ".") for base in BASE):
    return "base"
  parts = module.split(".")
  return parts[1] if len(parts) >= 2 and parts[1] in ALLOWED else "top"


def package_imports(path: pathlib.Path, module: str) -> set[str]:
  """The herberta_jax modules a source file imports, at any depth of its code (function-level imports too)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative import: resolve against this module's package
        base = ".".join(module.split(".")[:-node.level] + ([base] if base else []))
      found.update(f"{base}.{alias.name}" for alias in node.names)
  return {name for name in found if name.split(".")[0] == "herberta_jax" and name != "herberta_jax"}


def violations(package: pathlib.Path) -> list[str]:
  """'module imports other (layer a -> layer b)' for every upward or sideways import under `package`."""
  out = []
  for path in sorted(package.rglob("*.py")):
    module = ".".join(("herberta_jax",) + path.relative_to(package).with_suffix("").parts)
    layer = layer_of(module)
    for imported in sorted(package_imports(path, module)):
      target = layer_of(imported)
      if target != layer and target not in ALLOWED[layer]:
        out.append(f"{module} imports {imported} ({layer} -> {target})")
  return out


def test_the_package_imports_only_downward():
  assert violations(PACKAGE) == []


def test_every_package_folder_has_a_layer():
  folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
  assert folders <= set(ALLOWED), f"folders without a layer in ALLOWED: {folders - set(ALLOWED)}"


@pytest.mark.parametrize("source, expected", [
    ("from herberta_jax.training import loop\n", "herberta_jax.data.bad imports herberta_jax.training.loop "
                                                 "(data -> training)"),
    ("def f():\n  from herberta_jax.inference import predictor\n", "herberta_jax.data.bad imports "
                                                                   "herberta_jax.inference.predictor (data -> "
                                                                   "inference)"),
    ("import herberta_jax.evaluation.metrics\n", "herberta_jax.data.bad imports herberta_jax.evaluation.metrics "
                                                 "(data -> evaluation)"),
])
def test_an_upward_import_is_caught(tmp_path, source, expected):
  """A temporary package with one bad module in its data layer: the check names it."""
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "bad.py").write_text(source)
  assert violations(tmp_path) == [expected]


def test_training_importing_inference_is_caught(tmp_path):
  (tmp_path / "training").mkdir()
  (tmp_path / "training" / "loop.py").write_text("from herberta_jax.evaluation import evaluator\n")
  assert violations(tmp_path) == ["herberta_jax.training.loop imports herberta_jax.evaluation.evaluator "
                                  "(training -> evaluation)"]
