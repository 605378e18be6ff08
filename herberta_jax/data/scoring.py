"""Micro-averaged precision / recall / F1 from summed counts, shared by training's dev score and evaluation.

It lives in the data layer, the bottom of the import graph, because both `training` and `evaluation` need it and
neither may import the other; it depends on nothing.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Counts:
  """True positives, predicted positives and gold positives of one metric; add them to pool groups."""

  tp: int = 0
  predicted: int = 0
  gold: int = 0

  def __add__(self, other: Counts) -> Counts:
    return Counts(self.tp + other.tp, self.predicted + other.predicted, self.gold + other.gold)

  @property
  def precision(self) -> float:
    """TP / predicted positives; 0 when nothing was predicted."""
    return self.tp / self.predicted if self.predicted else 0.0

  @property
  def recall(self) -> float:
    """TP / gold positives; 0 when there is no gold positive."""
    return self.tp / self.gold if self.gold else 0.0

  @property
  def f1(self) -> float:
    """Harmonic mean of precision and recall (= 2 TP / (predicted + gold)); 0 when both are 0."""
    return 2 * self.tp / (self.predicted + self.gold) if self.tp else 0.0

  def as_dict(self) -> dict:
    return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "tp": self.tp,
            "predicted": self.predicted, "gold": self.gold}
