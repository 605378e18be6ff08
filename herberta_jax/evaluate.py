r"""Scores a trained pipeline on SMiLER-format test files and writes a report:

  python -m herberta_jax.evaluate --model DIR --data a_test.tsv [b_test.tsv ...] --out REPORT

REPORT gets metrics.json, predictions.jsonl (every prediction, errors included), report.md and the paper's plots.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "Export directory or training workdir.")
_DATA = flags.DEFINE_multi_string("data", None, "SMiLER TSV files or directories to evaluate on.")
_OUT = flags.DEFINE_string("out", None, "Report directory.")
_ON_ERROR = flags.DEFINE_enum("on_error", "fail", ["fail", "skip"], "Bad rows: stop, or skip them into "
                              "REPORT/rejects.tsv.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Sentences per batch.")
_MAX_SPAN = flags.DEFINE_integer("max_span_len", 32, "Longest entity, in tokens.")
flags.mark_flags_as_required(["model", "data", "out"])


def main(argv):
  del argv
  import pathlib
  from herberta_jax import evaluation
  from herberta_jax.data import smiler
  from herberta_jax.infer import Predictor
  predictor = Predictor.from_export(_MODEL.value, batch_size=_BATCH.value, max_span_len=_MAX_SPAN.value)
  rejects = smiler.Rejects()
  examples = [ex for path in smiler.expand_inputs(_DATA.value)
              for ex in smiler.read_tsv(path, on_error=_ON_ERROR.value, rejects=rejects,
                                        known_labels=predictor.meta["labels"])]
  out = pathlib.Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  if len(rejects):
    rejects.write(out / "rejects.tsv")
    print(f"{len(rejects)} rows rejected: {out / 'rejects.tsv'}", file=sys.stderr)
  result = evaluation.evaluate_examples(predictor, examples, out)
  print(json.dumps({k: v for k, v in result.items() if isinstance(v, dict) and "f1" in v}, indent=2))


if __name__ == "__main__":
  app.run(main)
