"""The paper's evaluation metrics (HERBERTa, section 5), micro-averaged the TACRED way.

Every figure is built from sums and counts over prediction records, never from averages of averages, so
per-language counts add up to the overall counts. A record is a dict

  {"id", "lang", "gold": {"label", "e1": [s, e], "e2": [s, e]},
   "pred": {"label", "e1": [s, e] | None, "e2": [s, e] | None}, "truncated": bool}

with half-open character spans. Extra keys are ignored. A predicted label of None (the predictor rejected the
sentence) counts as the negative class: nothing was predicted.

Definitions, with `negative` the negative class (`no_relation`):
  - predicted positives: rows whose predicted label != negative;
  - gold positives: rows whose gold label != negative.
  - relation: TP = predicted label == gold label != negative.
  - entity1 / entity2 / entity_pair: counted over the same predicted and gold positives (the paper extracts
    entities only for positive relations); TP = the row is both a predicted and a gold positive and the e1 span
    (the e2 span; both spans) matches the gold one exactly. The relation itself need not be right.
  - combined: TP = relation TP and both spans exact.
  - precision = TP / predicted positives, recall = TP / gold positives, F1 = their harmonic mean; each is 0 when
    its denominator is 0.
  - e1_accuracy / e2_accuracy: exact-match rate of the e1 (e2) span over the gold-positive rows, whatever the
    predicted label (the PyTorch baseline reports these).
Rows marked `truncated` (an entity lay past the tokenizer's cut) are scored like any other: their spans cannot
match, so they count as misses and are never dropped; `truncated` in the result says how many there were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from herberta_jax.data.example import NEGATIVE_LABEL
from herberta_jax.data.scoring import Counts  # re-exported: part of this module's API

METRIC_NAMES = ("relation", "entity1", "entity2", "entity_pair", "combined")


@dataclasses.dataclass(frozen=True)
class _Row:
  """The facts about one record that every metric is computed from."""

  lang: str
  gold_label: str
  pred_label: str
  e1_exact: bool
  e2_exact: bool
  truncated: bool


def _span(value, where: str) -> tuple[int, int] | None:
  if value is None:
    return None
  try:
    start, end = value
    return int(start), int(end)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: expected a [start, end] character span or None, got {value!r}") from e


def _row(record: dict, index: int, negative: str) -> _Row:
  where = f"prediction record #{index} (id {record.get('id', '?')!r})"
  try:
    gold, pred = record["gold"], record["pred"]
    gold_label, pred_label = gold["label"], pred["label"]
    gold_e1, gold_e2 = _span(gold["e1"], f"{where} gold.e1"), _span(gold["e2"], f"{where} gold.e2")
    pred_e1, pred_e2 = _span(pred.get("e1"), f"{where} pred.e1"), _span(pred.get("e2"), f"{where} pred.e2")
  except (KeyError, TypeError) as e:
    raise ValueError(f"{where}: missing field {e}; a record needs gold.label, gold.e1, gold.e2 and pred.label "
                     "(see herberta_jax.metrics)") from e
  if gold_label is None:
    raise ValueError(f"{where}: gold.label is None; every gold record needs a label")
  return _Row(lang=str(record.get("lang", "")), gold_label=str(gold_label),
              pred_label=negative if pred_label is None else str(pred_label),
              e1_exact=pred_e1 is not None and pred_e1 == gold_e1,
              e2_exact=pred_e2 is not None and pred_e2 == gold_e2,
              truncated=bool(record.get("truncated", False)))


def _rows(records: Iterable[dict], negative: str) -> list[_Row]:
  return [_row(record, i, negative) for i, record in enumerate(records)]


def _entity_hits(row: _Row) -> dict[str, bool]:
  """Which metrics a row that is both a predicted and a gold positive counts as a true positive."""
  relation = row.pred_label == row.gold_label
  return {"relation": relation, "entity1": row.e1_exact, "entity2": row.e2_exact,
          "entity_pair": row.e1_exact and row.e2_exact,
          "combined": relation and row.e1_exact and row.e2_exact}


class _Tally:
  """Counts of all metrics for one group of rows."""

  def __init__(self):
    self.counts = {name: Counts() for name in METRIC_NAMES}
    self.rows = self.truncated = self.e1_exact = self.e2_exact = 0

  def add_row(self, row: _Row) -> None:
    self.rows += 1
    self.truncated += row.truncated

  def add_predicted(self) -> None:
    for counts in self.counts.values():
      counts.predicted += 1

  def add_gold(self, row: _Row) -> None:
    for counts in self.counts.values():
      counts.gold += 1
    self.e1_exact += row.e1_exact
    self.e2_exact += row.e2_exact

  def add_hits(self, hits: dict[str, bool]) -> None:
    for name, hit in hits.items():
      self.counts[name].tp += hit

  def result(self, negative: str) -> dict:
    gold = self.counts["relation"].gold
    out = {name: counts.as_dict() for name, counts in self.counts.items()}
    out.update(e1_accuracy=self.e1_exact / gold if gold else 0.0, e2_accuracy=self.e2_exact / gold if gold else 0.0,
               e1_exact=self.e1_exact, e2_exact=self.e2_exact, count=self.rows, truncated=self.truncated,
               negative_label=negative)
    return out


def _tally_row(tally: _Tally, row: _Row, negative: str) -> None:
  """Adds one row to a group that holds it whole (overall, or its language)."""
  tally.add_row(row)
  pred_pos, gold_pos = row.pred_label != negative, row.gold_label != negative
  if pred_pos:
    tally.add_predicted()
  if gold_pos:
    tally.add_gold(row)
  if pred_pos and gold_pos:
    tally.add_hits(_entity_hits(row))


def compute_metrics(records: Iterable[dict], negative_label: str = NEGATIVE_LABEL) -> dict:
  """All metrics of the module docstring over `records`.

  Returns:
    {"relation", "entity1", "entity2", "entity_pair", "combined"}: each {precision, recall, f1, tp, predicted,
    gold}; "e1_accuracy", "e2_accuracy": exact-match rates over gold positives, with their numerators
    "e1_exact", "e2_exact"; "count": records; "truncated": records marked truncated; "negative_label".

  Raises:
    ValueError: a record lacks a required field or holds a malformed span (the message names the record).
  """
  tally = _Tally()
  for row in _rows(records, negative_label):
    _tally_row(tally, row, negative_label)
  return tally.result(negative_label)


def breakdown(records: Iterable[dict], by: Literal["lang", "relation"],
              negative_label: str = NEGATIVE_LABEL) -> dict[str, dict]:
  """The `compute_metrics` dict per language or per relation, keys sorted.

  by="lang": each record belongs to its language; all counts of the groups add up to the overall counts.

  by="relation" (positive labels only): a row is a predicted positive of its predicted label and a gold positive
  of its gold label, so precision is per predicted label and recall per gold label. A true positive needs the
  row in both, i.e. the predicted label right: for relation and combined the per-label TPs add up to the overall
  ones; for entity1/entity2/entity_pair the per-label TPs only count rows whose relation was also right (a row
  with a wrong positive relation but exact spans is an overall entity TP that no label owns). "count",
  "truncated" and the accuracies are over the gold rows of the label.

  Raises:
    ValueError: `by` is neither "lang" nor "relation", or a record is malformed.
  """
  if by not in ("lang", "relation"):
    raise ValueError(f"breakdown: by must be 'lang' or 'relation', got {by!r}")
  tallies: dict[str, _Tally] = {}

  def tally(key: str) -> _Tally:
    return tallies.setdefault(key, _Tally())

  for row in _rows(records, negative_label):
    if by == "lang":
      _tally_row(tally(row.lang), row, negative_label)
      continue
    if row.pred_label != negative_label:
      tally(row.pred_label).add_predicted()
    if row.gold_label != negative_label:
      gold_group = tally(row.gold_label)
      gold_group.add_row(row)
      gold_group.add_gold(row)
      if row.pred_label == row.gold_label:
        gold_group.add_hits(_entity_hits(row))
  return {key: tallies[key].result(negative_label) for key in sorted(tallies)}


def confusion_matrix(records: Iterable[dict], labels: Sequence[str],
                     negative_label: str = NEGATIVE_LABEL) -> np.ndarray:
  """[len(labels), len(labels)] int64 counts: rows gold label, columns predicted label, in `labels` order.

  A predicted label of None counts as `negative_label`.

  Raises:
    ValueError: a gold or predicted label is not in `labels` (pass every label of the run, negative included).
  """
  index = {label: i for i, label in enumerate(labels)}
  matrix = np.zeros((len(labels), len(labels)), np.int64)
  for i, record in enumerate(records):
    row = _row(record, i, negative_label)
    for kind, label in (("gold", row.gold_label), ("predicted", row.pred_label)):
      if label not in index:
        raise ValueError(f"confusion_matrix: record #{i} (id {record.get('id', '?')!r}) has {kind} label "
                         f"{label!r}, which is not in labels; pass all labels of the run")
    matrix[index[row.gold_label], index[row.pred_label]] += 1
  return matrix


def is_error(record: dict, negative_label: str = NEGATIVE_LABEL) -> bool:
  """True when the record's relation is wrong, or it is a gold positive whose spans are not both exact."""
  row = _row(record, 0, negative_label)
  if row.pred_label != row.gold_label:
    return True
  return row.gold_label != negative_label and not (row.e1_exact and row.e2_exact)


def labels_of(records: Iterable[dict], negative_label: str = NEGATIVE_LABEL) -> list[str]:
  """Every gold and predicted label of `records`, sorted, with the negative label last."""
  labels = {negative_label}
  for i, record in enumerate(records):
    row = _row(record, i, negative_label)
    labels.update((row.gold_label, row.pred_label))
  return sorted(labels - {negative_label}) + [negative_label]
