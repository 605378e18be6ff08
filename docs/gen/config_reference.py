"""The configuration reference, generated from `configs/base.py` so that it cannot drift from the code.

Every key of `get_base_config()` is listed with its default and the comment that documents it in the source: the
comment at the end of the key's line, else the block of comment lines right above it (inside a dict(...), shared by
the keys that follow the block with no comment of their own). Where a block documents several keys as
`key: text`, each key gets its part. The keys that `stage_config` defines appear under both `relation.` and `tagger.`.

  python docs/gen/config_reference.py             # the page, on stdout
  python docs/gen/config_reference.py --check     # exit 1 naming every key without documentation

The MkDocs hook (docs/gen/hooks.py) rewrites docs/configuration.md before every build; tests/test_docs.py fails on an
undocumented key and on a committed page that differs from this output.
"""

from __future__ import annotations

import argparse
import ast
import io
import pathlib
import re
import sys
import tokenize

REPO = pathlib.Path(__file__).resolve().parents[2]
BASE_CONFIG = REPO / "configs" / "base.py"
STAGES = ("relation", "tagger")  # the config keys that stage_config() fills


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
  """(inline comment per line, whole-line comment per line) of a Python source."""
  inline, whole = {}, {}
  lines = source.splitlines()
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      row, col = token.start
      text = token.string.lstrip("#").strip()
      (whole if not lines[row - 1][:col].strip() else inline)[row] = text
  return inline, whole


def _dict_keywords(call: ast.expr) -> list[ast.keyword] | None:
  """The keywords of `dict(...)` or `ConfigDict(dict(...))`, else None."""
  if not isinstance(call, ast.Call):
    return None
  name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
  if name == "ConfigDict" and call.args:
    return _dict_keywords(call.args[0])
  if name == "dict":
    return call.keywords
  return None


def _attribute_path(node: ast.expr) -> str | None:
  """`config.a.b` -> "a.b"."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if isinstance(node, ast.Name) and node.id == "config" and parts:
    return ".".join(reversed(parts))
  return None


def key_lines(source: str) -> dict[str, int]:
  """Each config key's dotted path -> the source line that sets it."""
  tree = ast.parse(source)
  found: dict[str, int] = {}

  def keywords(prefix: str, kws: list[ast.keyword]) -> None:
    for kw in kws:
      path = f"{prefix}.{kw.arg}" if prefix else kw.arg
      found[path] = kw.value.lineno
      nested = _dict_keywords(kw.value)
      if nested is not None:
        keywords(path, nested)

  for node in ast.walk(tree):
    if isinstance(node, ast.FunctionDef) and node.name == "stage_config":
      for ret in ast.walk(node):
        if isinstance(ret, ast.Return) and _dict_keywords(ret.value) is not None:
          for stage in STAGES:
            keywords(stage, _dict_keywords(ret.value))
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
      path = _attribute_path(node.targets[0])
      if path is None:
        continue
      found[path] = node.lineno
      nested = _dict_keywords(node.value)
      if nested is not None:
        keywords(path, nested)
  return found


def _is_keyword_line(line: str) -> bool:
  """A `name=value,` line inside a dict(...): the keys a comment block above them may share."""
  return bool(re.match(r"\s*\w+=", line))


def documentation(path: str, line: int, source_lines: list[str], inline: dict, whole: dict) -> str:
  """The comment that documents the key set on `line` (1-based): see the module docstring."""
  if line in inline:
    return inline[line]
  row = line - 1
  if _is_keyword_line(source_lines[line - 1]):
    while row >= 1 and row not in whole and row not in inline and _is_keyword_line(source_lines[row - 1]):
      row -= 1  # an uncommented key of the same dict right above: the block above it covers this key too
    if row >= 1 and row not in inline and "dict(" in source_lines[row - 1]:
      row -= 1  # the line that opens the dict: the block above it covers the keys it opens
  block = []
  while row >= 1 and row in whole:
    block.insert(0, whole[row])
    row -= 1
  text = " ".join(block)
  key = path.rsplit(".", 1)[-1]
  parts = re.split(r"(?:^|\s)(\w+): ", " " + text)  # "a: text b: text" -> ["", "a", "text", "b", "text"]
  named = dict(zip(parts[1::2], (p.strip() for p in parts[2::2])))
  if len(named) > 1 and key in named:
    return named[key]
  return text


def _flatten(config, prefix: str = "") -> dict:
  out = {}
  for key, value in config.items():
    path = f"{prefix}{key}"
    if hasattr(value, "items"):
      out[path] = None  # a group; its keys follow
      out.update(_flatten(value, path + "."))
    else:
      out[path] = value
  return out


def load_defaults(config_file: pathlib.Path = BASE_CONFIG) -> dict:
  """Every key path of the file's get_base_config() -> its default (None for a group)."""
  import importlib.util
  sys.path.insert(0, str(REPO))
  spec = importlib.util.spec_from_file_location(f"_config_reference_{config_file.stem}", config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return _flatten(module.get_base_config())


def reference(config_file: pathlib.Path = BASE_CONFIG) -> list[tuple[str, object, str]]:
  """(key, default, documentation) for every leaf key and group of the config, in the config's order."""
  source = config_file.read_text(encoding="utf-8")
  inline, whole = _comments(source)
  lines_of = key_lines(source)
  source_lines = source.splitlines()
  defaults = load_defaults(config_file)
  unknown = len(source_lines) + 1  # a key the parser could not place (set in an unusual way) goes last, undocumented

  def order(path: str) -> tuple[int, int]:
    # The top-level keys first, then each group, in the source's order (ConfigDict sorts its keys by name).
    group = path.split(".")[0] if "." in path or defaults[path] is None else ""
    return (lines_of.get(group, unknown) if group else 0, lines_of.get(path, unknown))

  rows = []
  for path in sorted(defaults, key=order):
    line = lines_of.get(path)
    doc = documentation(path, line, source_lines, inline, whole) if line else ""
    rows.append((path, defaults[path], doc))
  return rows


def undocumented(config_file: pathlib.Path = BASE_CONFIG) -> list[str]:
  """The leaf keys that have no line of documentation."""
  return [path for path, default, doc in reference(config_file) if default is not None and not doc]


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


def markdown(config_file: pathlib.Path = BASE_CONFIG) -> str:
  """The configuration page."""
  out = ["# Configuration reference", "",
         "<!-- Generated by docs/gen/config_reference.py from configs/base.py: edit the comments there. -->", "",
         "Every key of `configs/base.py`, which every config file starts from, with its default and the comment "
         "that documents it in the source. Override a key with `--config.KEY=VALUE` on the command line "
         "(`--config.relation.batch_size=16`); a misspelt key is refused with the nearest valid one. "
         "The keys under `relation.` and `tagger.` are the same set, one per stage.", ""]
  group = None
  for path, default, doc in reference(config_file):
    if default is None:
      continue
    top = path.split(".")[0] if "." in path else ""
    if top != group:
      group = top
      out += ["", f"## `{top}`" if top else "## Top level", "", "| key | default | meaning |", "| --- | --- | --- |"]
    out.append(f"| `{path}` | `{_cell(repr(default))}` | {_cell(doc)} |")
  return "\n".join(out) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--check", action="store_true", help="list undocumented keys and exit 1 if there are any")
  parser.add_argument("--config", default=str(BASE_CONFIG), help="the config file (default: configs/base.py)")
  args = parser.parse_args(argv)
  config_file = pathlib.Path(args.config)
  if args.check:
    missing = undocumented(config_file)
    for path in missing:
      print(f"{config_file}: config key {path} has no comment; add one on its line or above it")
    return 1 if missing else 0
  sys.stdout.write(markdown(config_file))
  return 0


if __name__ == "__main__":
  sys.exit(main())
