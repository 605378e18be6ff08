r"""Scores a trained pipeline on SMiLER-format test files and writes a report:

  python -m herberta_jax.evaluate --model DIR --input a_test.tsv [b_test.tsv ...] --out REPORT   # or --input a,b
  python -m herberta_jax.evaluate --model WORKDIR --split dev --out REPORT   # tune decoding on the dev split

REPORT gets metrics.json, predictions.jsonl (every prediction, errors included), report.md and the paper's plots;
it is created only once the inputs have been read and checked, so a refused command leaves nothing behind.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags

from herberta_jax import cli

_MODEL_FLAGS = cli.ModelFlags()  # --model, --batch_size, --dtype, --max_span_len, --disjoint_entities, ...
_INPUT = flags.DEFINE_multi_string("input", None, "SMiLER TSV files or directories to evaluate on (more may follow "
                                   "as arguments).")
flags.DEFINE_alias("data", "input")  # the flag's name before 0.2
_SPLIT = flags.DEFINE_enum("split", None, ["dev", "test"], "Instead of --input: this split of the training "
                           "workdir given as --model, as its run prepared it.")
_OUT = flags.DEFINE_string("out", None, "Report directory.")
_ON_ERROR = flags.DEFINE_enum("on_error", "fail", ["fail", "skip"], "Bad rows: stop, or skip them into "
                              "REPORT/rejects.tsv.")
flags.mark_flags_as_required(["model", "out"])
flags.register_multi_flags_validator(["input", "split"], lambda f: bool(f["input"]) != bool(f["split"]),
                                     "give either --input or --split")


def workdir_manifest(model: pathlib.Path) -> dict | None:
  """The prepared data's manifest when --model is a training workdir; None for an export directory."""
  path = model / "data" / "manifest.json"
  return json.loads(path.read_text()) if path.exists() else None


def prepared_split(workdir: pathlib.Path, manifest: dict | None, split: str):
  """The examples of a training workdir's prepared split (its dev split is carved from train by the run)."""
  from herberta_jax.evaluation import evaluator
  if manifest is None:
    raise app.UsageError(f"--split {split}: {workdir} is not a training workdir (no data/manifest.json)")
  examples = evaluator.split_examples(workdir / "data", manifest, None, split)
  if not examples:
    raise app.UsageError(f"--split {split}: {workdir / 'data'} holds no {split} examples")
  return examples


def data_paths(argv: list[str]) -> list[str]:
  """--input values (each may be a comma list) plus the arguments a shell glob after --input leaves behind."""
  if argv[1:] and not _INPUT.value:
    raise app.UsageError(f"unexpected arguments {' '.join(argv[1:])!r}: data files follow --input")
  return [part for value in (_INPUT.value or []) + argv[1:] for part in value.split(",") if part]


def main(argv):
  _MODEL_FLAGS.check()  # before the imports below, which load JAX
  from herberta_jax.data import smiler
  from herberta_jax.evaluation import evaluator
  from herberta_jax.inference.predictor import Predictor
  paths = data_paths(argv)
  smiler.expand_inputs(paths)  # a missing file is refused before the model loads
  _MODEL_FLAGS.configure_jax()
  predictor = Predictor.from_export(_MODEL_FLAGS.model.value, **_MODEL_FLAGS.predictor_kwargs())
  manifest = workdir_manifest(pathlib.Path(_MODEL_FLAGS.model.value))
  rejects = smiler.Rejects()
  if _SPLIT.value:
    examples = prepared_split(pathlib.Path(_MODEL_FLAGS.model.value), manifest, _SPLIT.value)
  else:
    examples = evaluator.read_test_files(paths, predictor.meta["labels"], _ON_ERROR.value, rejects)
  out = pathlib.Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  if len(rejects):
    rejects.write(out / "rejects.tsv")
    print(f"{len(rejects)} rows rejected: {out / 'rejects.tsv'}", file=sys.stderr)
  # A training workdir knows its training-set sizes, which the F1-against-training-size plot needs.
  train_sizes = evaluator.train_sizes_of(manifest) if manifest else None
  result = evaluator.evaluate_examples(predictor, examples, out, train_sizes=train_sizes, progress=True)
  print(json.dumps({k: v for k, v in result.items() if isinstance(v, dict) and "f1" in v}, indent=2))


def run() -> None:
  """The `herberta-evaluate` console script."""
  cli.run_cli(main, positional=True)


if __name__ == "__main__":
  run()
