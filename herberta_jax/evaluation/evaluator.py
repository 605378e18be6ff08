"""Scores a trained pipeline the paper's way: predictions through the two-stage inference, then metrics and a
report. Used at the end of a training run (`herberta_jax.run`) and by `python -m herberta_jax.evaluate`."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterable, Sequence

import jax

from herberta_jax import console
from herberta_jax.data import smiler
from herberta_jax.data.example import Example
from herberta_jax.evaluation import metrics, report
from herberta_jax.inference.predictor import Predictor


def gold_record(ex_id: str, lang: str, text: str, label: str, e1, e2, truncated: bool) -> dict:
  return {"id": ex_id, "lang": lang, "text": text, "truncated": bool(truncated),
          "gold": {"label": label, "e1": [int(e1[0]), int(e1[1])], "e2": [int(e2[0]), int(e2[1])]}}


def predict_records(predictor: Predictor, golds: Sequence[dict], *, progress: bool = False) -> list[dict]:
  """Adds each gold record's prediction (`pred`); a sentence the predictor rejects keeps its error.

  The same streaming path as `predict` (all local devices, sorted windows). In a multi-process run every process
  predicts every row on its own devices and process 0 writes the report: simple and exact, and a test set is
  small next to the training set. `progress`: a progress bar on stderr (process 0 only).
  """
  encoded = predictor.encode([g["text"] for g in golds])
  records = []
  bar = console.Progress(len(golds), desc="evaluate", unit="sentence",
                         disable=not progress or jax.process_index() != 0)
  for (enc, pred), gold in zip(predictor.run(encoded), golds):
    if records:
      bar.update(1)
    else:
      bar.first_done()  # the first batch compiles: the rate counts from its end
    record = dict(gold)
    if "error" in pred:
      record["pred"] = {"label": None, "e1": None, "e2": None, "error": pred["error"]}
    else:
      record["pred"] = {"label": pred["relation"], "score": pred["score"],
                        "e1": [pred["e1"]["start"], pred["e1"]["end"]],
                        "e2": [pred["e2"]["start"], pred["e2"]["end"]], "tagged": pred["tagged"],
                        "nbest": pred["nbest"]}
      if enc.truncated_at is not None and not gold["truncated"]:
        # The tokenizer's truncation may cut an entity that the gold record did not know about.
        record["truncated"] = max(gold["gold"]["e1"][1], gold["gold"]["e2"][1]) > enc.truncated_at
    records.append(record)
  bar.close()
  return records


def evaluate_examples(predictor: Predictor, examples: Iterable[Example], out_dir, *,
                      train_sizes: dict | None = None, progress: bool = False) -> dict:
  """Predicts, scores and writes the report for SMiLER examples; returns the metrics. `progress`: a progress bar."""
  golds = [gold_record(ex.id, ex.lang, ex.text, ex.label, ex.e1, ex.e2, False) for ex in examples]
  start = time.perf_counter()
  records = predict_records(predictor, golds, progress=progress)
  seconds = time.perf_counter() - start  # tokenizing, compiling each bucket shape once, and the two stages
  result = metrics.compute_metrics(records, negative_label=predictor.meta["negative_label"])
  result.update(inference_seconds=seconds, sentences_per_second=len(golds) / max(seconds, 1e-9))
  if jax.process_index() == 0:
    report.write_report(out_dir, records, result, train_sizes=train_sizes)
  return result


def split_examples(data_dir: pathlib.Path, manifest: dict, languages, split: str = "test") -> list[Example]:
  """A prepared split ("dev" or "test"), read back from its records (text, gold spans, label)."""
  from herberta_jax.data.pipeline import Pipeline
  pipeline = Pipeline(data_dir, split, batch_size=64, languages=languages, shuffle=False, repeat=False)
  examples = []
  for batch in pipeline.batches():
    for i in range(len(batch["valid"])):
      if batch["valid"][i]:
        cs = batch["char_spans"][i]
        examples.append(Example(id=str(batch["id"][i]), text=str(batch["text"][i]), e1=(int(cs[0]), int(cs[1])),
                                e2=(int(cs[2]), int(cs[3])), label=manifest["labels"][int(batch["label"][i])],
                                lang=str(batch["lang"][i])))
  return examples


def train_sizes_of(manifest: dict) -> dict[str, int]:
  return {lang: info["count"] for lang, info in manifest["splits"].get("train", {}).items()}


def read_test_files(paths: Sequence[str], labels: Sequence[str], on_error: str, rejects: smiler.Rejects) -> list[Example]:
  """The examples of SMiLER test files, with `labels` (the model's) the only known ones.

  Raises:
    smiler.DataError: a path is missing, a file or (with on_error="fail") a row is bad, or a file yields no row
      at all (header only, or every row rejected): evaluating on it would silently score nothing.
  """
  examples = []
  for path in smiler.expand_inputs(paths):
    before = len(rejects)
    rows = list(smiler.read_tsv(path, on_error=on_error, rejects=rejects, known_labels=labels))
    if not rows:
      why = "every row was rejected" if len(rejects) > before else "no rows after the header"
      raise smiler.DataError(path, None, f"nothing to evaluate: {why}", "Pass SMiLER files holding test rows.")
    examples += rows
  return examples
