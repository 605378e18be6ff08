"""Metrics on hand-computed cases (TACRED convention: micro-averaged, no_relation ignored)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from herberta_jax.evaluation import metrics

A, B, C = [0, 4], [9, 14], [18, 22]  # character spans
NEG = "no_relation"


def rec(rid, gold, pred, gold_spans=(A, B), pred_spans=(A, B), lang="en", truncated=False):
  return {"id": rid, "lang": lang, "truncated": truncated,
          "gold": {"label": gold, "e1": gold_spans[0], "e2": gold_spans[1]},
          "pred": {"label": pred, "e1": pred_spans[0], "e2": pred_spans[1]}}


def counts(result):
  return {name: (result[name]["tp"], result[name]["predicted"], result[name]["gold"])
          for name in metrics.METRIC_NAMES}


# Each (tp, predicted, gold) below is worked out by hand from the definitions in the module docstring.
@pytest.mark.parametrize("record, expected", [
    pytest.param(rec("missed", "X", NEG), {"relation": (0, 0, 1), "entity1": (0, 0, 1), "entity2": (0, 0, 1),
                                           "entity_pair": (0, 0, 1), "combined": (0, 0, 1)},
                 id="positive predicted no_relation: recall miss"),
    pytest.param(rec("span", "X", "X", pred_spans=(A, C)),
                 {"relation": (1, 1, 1), "entity1": (1, 1, 1), "entity2": (0, 1, 1), "entity_pair": (0, 1, 1),
                  "combined": (0, 1, 1)}, id="right relation, wrong e2 span: combined miss"),
    pytest.param(rec("rel", "X", "Y"), {"relation": (0, 1, 1), "entity1": (1, 1, 1), "entity2": (1, 1, 1),
                                        "entity_pair": (1, 1, 1), "combined": (0, 1, 1)},
                 id="right spans, wrong relation"),
    pytest.param(rec("fp", NEG, "X"), {"relation": (0, 1, 0), "entity1": (0, 1, 0), "entity2": (0, 1, 0),
                                       "entity_pair": (0, 1, 0), "combined": (0, 1, 0)},
                 id="negative predicted positive: precision miss"),
    pytest.param(rec("none", "X", None, pred_spans=(None, None)),
                 {"relation": (0, 0, 1), "entity1": (0, 0, 1), "entity2": (0, 0, 1), "entity_pair": (0, 0, 1),
                  "combined": (0, 0, 1)}, id="predictor error (label None) counts as no_relation"),
])
def test_single_cases(record, expected):
  result = metrics.compute_metrics([record])
  assert counts(result) == expected
  for name, (tp, predicted, gold) in expected.items():
    assert result[name]["precision"] == (tp / predicted if predicted else 0.0)
    assert result[name]["recall"] == (tp / gold if gold else 0.0)
  assert result["count"] == 1


def test_all_negative_data_gives_zero_without_division_errors():
  result = metrics.compute_metrics([rec("a", NEG, NEG), rec("b", NEG, NEG, pred_spans=(C, C))])
  for name in metrics.METRIC_NAMES:
    assert result[name] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "predicted": 0, "gold": 0}
  assert result["e1_accuracy"] == result["e2_accuracy"] == 0.0
  assert result["count"] == 2
  assert metrics.compute_metrics([])["combined"]["f1"] == 0.0


def _mixed():
  return [
      rec("r1", "X", "X", lang="en"),                                  # everything right
      rec("r2", "X", NEG, lang="en"),                                  # recall miss (spans happen to be right)
      rec("r3", "Y", "Y", pred_spans=(A, C), lang="de"),               # relation + e1 right, e2 wrong
      rec("r4", "Y", "X", lang="de"),                                  # spans right, relation wrong
      rec("r5", NEG, "X", lang="fr"),                                  # false positive
      rec("r6", NEG, NEG, lang="fr"),                                  # true negative: counts nowhere
      rec("r7", "X", "X", pred_spans=(A, [0, 0]), lang="fr", truncated=True),  # e2 cut off: a miss, kept
      rec("r8", "Y", NEG, lang="en"),                                  # recall miss
  ]


def test_mixed_set_hand_computed():
  result = metrics.compute_metrics(_mixed())
  # predicted positives: r1 r3 r4 r5 r7 (5); gold positives: r1 r2 r3 r4 r7 r8 (6).
  assert counts(result) == {"relation": (3, 5, 6),      # r1 r3 r7
                            "entity1": (4, 5, 6),       # r1 r3 r4 r7 (relation need not be right)
                            "entity2": (2, 5, 6),       # r1 r4
                            "entity_pair": (2, 5, 6),   # r1 r4
                            "combined": (1, 5, 6)}      # r1
  assert result["relation"]["precision"] == pytest.approx(3 / 5)
  assert result["relation"]["recall"] == pytest.approx(3 / 6)
  assert result["relation"]["f1"] == pytest.approx(2 * 0.6 * 0.5 / 1.1)
  assert result["combined"]["f1"] == pytest.approx(2 / 11)
  # Exact-match accuracy over the 6 gold positives, whatever was predicted: e1 all, e2 r1 r2 r4 r8.
  assert result["e1_accuracy"] == pytest.approx(6 / 6)
  assert result["e2_accuracy"] == pytest.approx(4 / 6)
  assert (result["count"], result["truncated"]) == (8, 1)
  assert json.loads(json.dumps(result)) == result  # plain JSON types only


def test_per_language_counts_add_up_to_overall():
  records = _mixed()
  overall = metrics.compute_metrics(records)
  per_lang = metrics.breakdown(records, "lang")
  assert list(per_lang) == ["de", "en", "fr"]
  assert counts(per_lang["en"])["relation"] == (1, 1, 3)  # r1 r2 r8
  for name in metrics.METRIC_NAMES:
    for key in ("tp", "predicted", "gold"):
      assert sum(m[name][key] for m in per_lang.values()) == overall[name][key], (name, key)
  for key in ("count", "truncated", "e1_exact", "e2_exact"):
    assert sum(m[key] for m in per_lang.values()) == overall[key], key


def test_per_relation_precision_by_predicted_recall_by_gold():
  records = _mixed()
  per_rel = metrics.breakdown(records, "relation")
  assert list(per_rel) == ["X", "Y"]  # the negative class is no group
  # X predicted: r1 r4 r5 r7; X gold: r1 r2 r7; right: r1 r7.
  assert counts(per_rel["X"])["relation"] == (2, 4, 3)
  assert counts(per_rel["X"])["combined"] == (1, 4, 3)
  assert counts(per_rel["X"])["entity1"] == (2, 4, 3)
  assert (per_rel["X"]["count"], per_rel["X"]["truncated"]) == (3, 1)
  # Y predicted: r3; Y gold: r3 r4 r8; right: r3 (e2 wrong).
  assert counts(per_rel["Y"])["relation"] == (1, 1, 3)
  assert counts(per_rel["Y"])["combined"] == (0, 1, 3)
  assert per_rel["Y"]["relation"]["precision"] == 1.0
  assert per_rel["Y"]["relation"]["recall"] == pytest.approx(1 / 3)
  overall = metrics.compute_metrics(records)
  for name in ("relation", "combined"):  # the metrics that need the relation right add up exactly
    for key in ("tp", "predicted", "gold"):
      assert sum(m[name][key] for m in per_rel.values()) == overall[name][key]


def test_counts_add_and_f1():
  total = metrics.Counts(2, 4, 3) + metrics.Counts(1, 1, 2)
  assert total == metrics.Counts(3, 5, 5)
  assert (total.precision, total.recall, total.f1) == (0.6, 0.6, pytest.approx(0.6))
  assert metrics.Counts(0, 0, 0).f1 == 0.0
  assert metrics.Counts(0, 3, 0).precision == 0.0


def test_confusion_matrix_rows_gold_columns_pred():
  labels = ["X", "Y", NEG]
  matrix = metrics.confusion_matrix(_mixed(), labels)
  np.testing.assert_array_equal(matrix, [[2, 0, 1],    # gold X: r1 r7 -> X, r2 -> neg
                                         [1, 1, 1],    # gold Y: r4 -> X, r3 -> Y, r8 -> neg
                                         [1, 0, 1]])   # gold neg: r5 -> X, r6 -> neg
  with pytest.raises(ValueError, match="'Y'.*not in labels"):
    metrics.confusion_matrix(_mixed(), ["X", NEG])
  assert metrics.labels_of(_mixed()) == labels


def test_is_error():
  assert [metrics.is_error(r) for r in _mixed()] == [False, True, True, True, True, False, True, True]


def test_malformed_records_name_the_record():
  bad = rec("broken", "X", "X")
  del bad["gold"]["e2"]
  with pytest.raises(ValueError, match=r"#1 \(id 'broken'\).*missing field 'e2'"):
    metrics.compute_metrics([rec("ok", "X", "X"), bad])
  with pytest.raises(ValueError, match="pred.e1.*span"):
    metrics.compute_metrics([rec("odd", "X", "X", pred_spans=([1, 2, 3], B))])
  with pytest.raises(ValueError, match="by must be"):
    metrics.breakdown([], "language")
