"""Scores a trained pipeline the paper's way: predictions through the two-stage inference, then metrics and a
report. Used at the end of training and by `python -m herberta_jax.evaluate`."""

from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Iterable, Sequence

import jax

from herberta_jax import exporting, metrics, report
from herberta_jax.data.example import Example
from herberta_jax.infer import Predictor


def gold_record(ex_id: str, lang: str, text: str, label: str, e1, e2, truncated: bool) -> dict:
  return {"id": ex_id, "lang": lang, "text": text, "truncated": bool(truncated),
          "gold": {"label": label, "e1": [int(e1[0]), int(e1[1])], "e2": [int(e2[0]), int(e2[1])]}}


def predict_records(predictor: Predictor, golds: Sequence[dict]) -> list[dict]:
  """Adds each gold record's prediction (`pred`); a sentence the predictor rejects keeps its error."""
  encoded = predictor.encode([g["text"] for g in golds])
  records = []
  for (enc, pred), gold in zip(predictor.run(encoded), golds):
    record = dict(gold)
    if "error" in pred:
      record["pred"] = {"label": None, "e1": None, "e2": None, "error": pred["error"]}
    else:
      record["pred"] = {"label": pred["relation"], "score": pred["score"],
                        "e1": [pred["e1"]["start"], pred["e1"]["end"]],
                        "e2": [pred["e2"]["start"], pred["e2"]["end"]], "tagged": pred["tagged"],
                        "nbest": pred["nbest"]}
      if enc.offsets and not gold["truncated"]:
        # The tokenizer's truncation may cut an entity that the gold record did not know about.
        last_char = max(end for _, end in enc.offsets)
        record["truncated"] = max(gold["gold"]["e1"][1], gold["gold"]["e2"][1]) > last_char
    records.append(record)
  return records


def evaluate_examples(predictor: Predictor, examples: Iterable[Example], out_dir, *,
                      train_sizes: dict | None = None) -> dict:
  """Predicts, scores and writes the report for SMiLER examples; returns the metrics."""
  golds = [gold_record(ex.id, ex.lang, ex.text, ex.label, ex.e1, ex.e2, False) for ex in examples]
  start = time.perf_counter()
  records = predict_records(predictor, golds)
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


def finish_run(config, workdir: pathlib.Path, data_dir: pathlib.Path, manifest: dict, mesh, trained: dict) -> dict:
  """After both stages: export to workdir/export, evaluate on the test split into workdir/report and
  workdir/metrics.json. Returns the metrics ({} when there is no test split)."""
  del mesh  # inference runs on the local device of each process: models are small next to their training
  (rel_model, rel_params), (tag_model, tag_params) = trained["relation"], trained["tagger"]
  bucket_boundaries = tuple(config.data.bucket_boundaries)
  decoding = exporting.decoding_of(config)
  meta = exporting.export_meta(manifest, bucket_boundaries, tag_model.bert_config.type_vocab_size >= 2, decoding)
  rel_params, tag_params = exporting.host_params(rel_params), exporting.host_params(tag_params)
  if config.export and jax.process_index() == 0:
    out = exporting.write_export(workdir / "export", data_dir, manifest, (rel_model.bert_config, rel_params),
                                 (tag_model.bert_config, tag_params), bucket_boundaries, decoding)
    logging.info("exported to %s", out)
  from herberta_jax.data import languages as languages_lib
  from herberta_jax.data import tokenize
  langs = languages_lib.resolve_languages(config.data.languages) if config.data.languages else None
  examples = split_examples(data_dir, manifest, langs)
  if not examples:
    logging.warning("no test split: skipping the test evaluation")
    return {}
  predictor = Predictor((rel_model.module, rel_params), (tag_model.module, tag_params), meta,
                        tokenize.load_tokenizer(data_dir / "tokenizer"), batch_size=config.infer.batch_size,
                        top_k=config.infer.top_k, top_m=config.infer.top_m)  # decoding: from meta
  result = evaluate_examples(predictor, examples, workdir / "report", train_sizes=train_sizes_of(manifest))
  if jax.process_index() == 0:
    (workdir / "metrics.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
  return result
