r"""Scores a trained pipeline on SMiLER-format test files and writes a report:

  python -m herberta_jax.evaluate --model DIR --input a_test.tsv [b_test.tsv ...] --out REPORT   # or --input a,b
  python -m herberta_jax.evaluate --model WORKDIR --split dev --out REPORT   # tune decoding on the dev split

REPORT gets metrics.json, predictions.jsonl (every prediction, errors included), report.md and the paper's plots;
it is created only once the inputs have been read and checked, so a refused command leaves nothing behind. --input
and --out may be gs:// URLs (the files are read from, and the report written to, a local copy), and --input any
readable file (a FIFO, `<(zcat f_test.tsv.gz)`).
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import sys
from collections.abc import Iterator

from absl import app, flags

from herberta_jax import cli, folders, storage
from herberta_jax.errors import UserError

_MODEL_FLAGS = cli.ModelFlags()  # --model, --batch_size, --dtype, --max_span_len, --disjoint_entities, ...
_INPUT = flags.DEFINE_multi_string("input", None, "SMiLER TSV files or directories to evaluate on (more may follow "
                                   "as arguments).")
flags.DEFINE_alias("data", "input")  # the flag's name before 0.2
_SPLIT = flags.DEFINE_enum("split", None, ["dev", "test"], "Instead of --input: this split of the training "
                           "workdir given as --model, as its run prepared it.")
_OUT = flags.DEFINE_string("out", None, "Report directory.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Write the report into a non-empty --out folder that is not a "
                                "report of an earlier evaluate.")
_ON_ERROR = flags.DEFINE_enum("on_error", "fail", ["fail", "skip"], "Bad rows: stop, or skip them into "
                              "REPORT/rejects.tsv.")
flags.mark_flags_as_required(["model", "out"])
flags.register_multi_flags_validator(["input", "split"], lambda f: bool(f["input"]) != bool(f["split"]),
                                     "give either --input or --split")


def workdir_data(model) -> storage.Path:
  """A training workdir's prepared data: its config's `data.prepared_dir`, else its `data/`."""
  config = model / "config.json"
  prepared = json.loads(config.read_text()).get("data", {}).get("prepared_dir") if config.exists() else None
  return storage.path(prepared) if prepared else model / "data"


def workdir_manifest(model) -> dict | None:
  """The prepared data's manifest when --model is a training workdir; None for an export directory."""
  path = workdir_data(model) / "manifest.json"
  return json.loads(path.read_text()) if path.exists() else None


def prepared_split(workdir: pathlib.Path, manifest: dict | None, split: str):
  """The examples of a training workdir's prepared split (its dev split is carved from train by the run)."""
  from herberta_jax.evaluation import evaluator
  if manifest is None:
    raise app.UsageError(f"--split {split}: {workdir} is not a training workdir (no data/manifest.json)")
  examples = evaluator.split_examples(workdir_data(workdir), manifest, None, split)
  if not examples:
    raise app.UsageError(f"--split {split}: {storage.text(workdir_data(workdir))} holds no {split} examples")
  return examples


def data_paths(argv: list[str]) -> list[str]:
  """--input values (each may be a comma list) plus the arguments a shell glob after --input leaves behind."""
  if argv[1:] and not _INPUT.value:
    raise app.UsageError(f"unexpected arguments {' '.join(argv[1:])!r}: data files follow --input")
  return [part for value in (_INPUT.value or []) + argv[1:] for part in value.split(",") if part]


def check_out(location: str) -> None:
  """--out is a report folder, new or existing: a file there is refused before any work."""
  out = storage.path(location)
  if out.exists() and not out.is_dir():
    raise app.UsageError(f"--out {location}: is a file; the report is a folder of files (metrics.json, "
                         f"report.md, ...): give a new or existing folder", exitcode=2)


@contextlib.contextmanager
def local_inputs(paths: list[str]) -> Iterator[tuple[list[str], dict[str, str]]]:
  """(paths the SMiLER reader can open, {local copy: what the user gave}): a URL or a readable file that is not
  a regular file (a FIFO, `<(zcat f.gz)`) is copied once into a temporary folder under `storage.cache_root()`,
  keeping its name; local files and folders are read where they are."""
  copies: dict[str, str] = {}
  local: list[str] = []
  with contextlib.ExitStack() as stack:
    scratch = None  # made on the first copy, so local inputs need no writable cache
    for number, given in enumerate(paths):
      path = storage.path(given)
      if storage.is_local(path) and (path.is_file() or path.is_dir() or not path.exists()):
        local.append(given)  # the reader reads these itself, and names a missing one
        continue
      if path.is_dir():
        raise app.UsageError(f"--input {given}: a folder in a bucket; give its .tsv files one by one", exitcode=2)
      if not path.exists():
        raise app.UsageError(f"--input {given}: no such file", exitcode=2)
      if scratch is None:
        scratch = stack.enter_context(storage.scratch_folder("evaluate."))
      copy = scratch / str(number) / (path.name or "input.tsv")
      copy.parent.mkdir()
      with path.open("rb") as src, open(copy, "wb") as dst:
        shutil.copyfileobj(src, dst, length=8 << 20)
      copies[str(copy)] = given
      local.append(str(copy))
    yield local, copies


def _named_as_given(error: UserError, copies: dict[str, str]) -> UserError:
  """`error` with the temporary copies' paths replaced by the inputs the user gave."""
  message = str(error)
  for copy, given in copies.items():
    message = message.replace(copy, given)
  return error if message == str(error) else UserError(message)


def main(argv):
  _MODEL_FLAGS.check()  # before the imports below, which load JAX
  check_out(_OUT.value)
  # Never over an input, into a workdir (its metrics.json is the run's test score) or an export, or into a folder
  # of other files.
  folders.check_output("--out", _OUT.value, kind=folders.REPORT, overwrite=_OVERWRITE.value,
                       inputs=[("--model", _MODEL_FLAGS.model.value)] + [("--input", p) for p in data_paths(argv)])
  cli.when_interrupted(f"nothing written to --out {_OUT.value} (the report is written at the end); rerun the "
                       f"same command")
  with local_inputs(data_paths(argv)) as (paths, copies):
    try:
      evaluate(paths)
    except UserError as error:
      raise _named_as_given(error, copies) from error


def evaluate(paths: list[str]) -> None:
  """Reads the data, predicts and writes the report (see the module docstring)."""
  from herberta_jax.data import smiler
  from herberta_jax.evaluation import evaluator
  from herberta_jax.inference.predictor import Predictor
  smiler.expand_inputs(paths)  # a missing file is refused before the model loads
  _MODEL_FLAGS.configure_jax()
  predictor = Predictor.from_export(_MODEL_FLAGS.model.value, **_MODEL_FLAGS.predictor_kwargs())
  manifest = workdir_manifest(storage.path(_MODEL_FLAGS.model.value))
  rejects = smiler.Rejects()
  if _SPLIT.value:
    examples = prepared_split(storage.path(_MODEL_FLAGS.model.value), manifest, _SPLIT.value)
  else:
    examples = evaluator.read_test_files(paths, predictor.meta["labels"], _ON_ERROR.value, rejects)
  with storage.staged_folder(storage.path(_OUT.value)) as out:  # a URL: uploaded once complete
    out.mkdir(parents=True, exist_ok=True)
    if len(rejects):
      rejects.write(out / "rejects.tsv")
      print(f"{len(rejects)} rows rejected: {_OUT.value}/rejects.tsv", file=sys.stderr)
    # A training workdir knows its training-set sizes, which the F1-against-training-size plot needs.
    train_sizes = evaluator.train_sizes_of(manifest) if manifest else None
    result = evaluator.evaluate_examples(predictor, examples, out, train_sizes=train_sizes, progress=True)
    folders.mark(out, folders.REPORT)  # a later evaluate may write here again
  print(json.dumps({k: v for k, v in result.items() if isinstance(v, dict) and "f1" in v}, indent=2))


def run() -> None:
  """The `herberta-evaluate` console script."""
  cli.run_cli(main, positional=True)


if __name__ == "__main__":
  run()
