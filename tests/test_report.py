"""The report writes every file, keeps every record, and its metrics.json round-trips."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from herberta_jax.evaluation import metrics, report

LANGS = ("en", "de", "ko")
RELATIONS = ("has-author", "birth-place", "has-genre", "org-has-founder", "no_relation")


def synthetic_records(seed: int = 0) -> list[dict]:
  """Three languages of different size and quality; some errors of every kind, one truncation, one rejection."""
  rng = random.Random(seed)
  records = []
  for lang, n, quality in (("en", 60, 0.9), ("de", 30, 0.7), ("ko", 12, 0.4)):
    for i in range(n):
      text = f"Entity{i} | wrote `Book{i}` <sic> in {lang}."
      e1, e2 = [0, len(f"Entity{i}")], [text.index("Book"), text.index("Book") + len(f"Book{i}")]
      gold = rng.choice(RELATIONS)
      pred = gold if rng.random() < quality else rng.choice(RELATIONS)
      p1 = e1 if rng.random() < quality else [0, 3]
      p2 = e2 if rng.random() < quality else [e2[0], e2[1] - 1]
      records.append({"id": f"{lang}-{i}", "lang": lang, "text": text, "truncated": False,
                      "gold": {"label": gold, "e1": e1, "e2": e2},
                      "pred": {"label": pred, "e1": np.array(p1), "e2": p2, "score": np.float32(0.5)}})
  records[3]["truncated"] = True
  records[4]["pred"] = {"label": None, "e1": None, "e2": None, "error": "empty sentence"}
  return records


def test_write_report_files_and_round_trip(tmp_path):
  records = synthetic_records()
  result = metrics.compute_metrics(records)
  out = report.write_report(tmp_path / "report", records, result,
                            train_sizes={"en": 12000, "de": 3000, "ko": 150, "fr": 99}, title="Synthetic run")
  expected = ["metrics.json", "breakdown.json", "predictions.jsonl", "report.md", "f1_per_language.png",
              "f1_heatmap.png", "f1_vs_train_size.png", "entity1_vs_entity2.png"]
  for name in expected:
    assert (out / name).stat().st_size > 0, name
  for name in expected[-4:]:
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
  assert json.loads((out / "metrics.json").read_text()) == result
  lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
  assert [json.loads(line)["id"] for line in lines] == [r["id"] for r in records]  # errors kept, order kept
  assert json.loads(lines[4])["pred"]["error"] == "empty sentence"
  per_lang = json.loads((out / "breakdown.json").read_text())["per_language"]
  assert sorted(per_lang) == sorted(LANGS)
  assert sum(m["combined"]["tp"] for m in per_lang.values()) == result["combined"]["tp"]

  md = (out / "report.md").read_text(encoding="utf-8")
  assert md.startswith("# Synthetic run")
  for heading in ("## Overall", "## Per language", "## Per relation", "## Confusion matrix", "## Errors"):
    assert heading in md
  assert f"| Combined | {100 * result['combined']['precision']:.2f} |" in md
  assert f"{result['truncated']} of {len(records)}" in md
  n_errors = sum(metrics.is_error(r) for r in records)
  assert f"## Errors (first 30 of {n_errors})" in md
  assert md.count("  - gold: ") == 30
  assert "&lt;sic&gt;" not in md.split("## Errors")[1]  # tagged sentences sit in code spans, not escaped
  assert "``" in md  # a sentence holding a backtick gets a longer code fence
  # Predicted spans (numpy arrays in some records) are shown as tags in the sentence.
  listed = [r for r in records if metrics.is_error(r)][:30]
  pred_lines = [line for line in md.splitlines() if line.startswith("  - pred: ")]
  assert sum("<e1>" in line for line in pred_lines) == sum(r["pred"]["e1"] is not None for r in listed)


def test_train_size_plot_needs_two_known_languages(tmp_path):
  records = synthetic_records(1)
  result = metrics.compute_metrics(records)
  out = report.write_report(tmp_path, records, result, train_sizes={"en": 100, "fr": 50})
  assert not (out / "f1_vs_train_size.png").exists()
  assert (out / "f1_per_language.png").exists()


def test_all_negative_single_language_report(tmp_path):
  records = [{"id": str(i), "lang": "en", "text": "a b", "truncated": False,
              "gold": {"label": "no_relation", "e1": [0, 1], "e2": [2, 3]},
              "pred": {"label": "no_relation", "e1": [0, 1], "e2": [2, 3]}} for i in range(3)]
  result = metrics.compute_metrics(records)
  out = report.write_report(tmp_path, records, result, train_sizes={"en": 10})
  for name in ("f1_per_language.png", "f1_heatmap.png", "entity1_vs_entity2.png", "report.md"):
    assert (out / name).stat().st_size > 0, name
  assert "## Errors (first 0 of 0)" in (out / "report.md").read_text()
  with pytest.raises(ValueError, match="no prediction records"):
    report.write_report(tmp_path, [], result)
