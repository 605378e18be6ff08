"""Carves a development split out of training examples, stratified by relation.

The paper holds out a small share of each language's training rows, stratified by relation. `carve_dev` does
the stratification for one list; call it once per language to get the paper's per-language split.

The choice needs only each label's row count: `dev_positions` draws, per label, which of its rows (by their rank
among that label's rows) go to dev, and `DevCarver` applies that to a stream, so `prepare` can carve a corpus it
never holds in memory. `carve_dev` is the same choice on a list, row for row.
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Mapping, Sequence

from herberta_jax.data.example import Example


def dev_count(n: int, fraction: float) -> int:
  """How many of a label's `n` rows go to dev.

  round(fraction * n), half rounding up; at least 1 when the label has 2 or more rows (so every label is scored
  on dev), and at most n - 1 (so every label keeps a training row). A label with a single row stays in train.
  """
  if n < 2 or fraction == 0:
    return 0
  return min(max(math.floor(fraction * n + 0.5), 1), n - 1)


def carve_dev(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
  """Splits `examples` into (train, dev), stratified by label (see `dev_count` for the per-label rule).

  Deterministic: the same examples in the same order with the same seed give the same split. Both lists keep
  the examples' original relative order.

  Args:
    examples: the training rows of one language (or any pool to split).
    fraction: share of each label to hold out, in [0, 1); 0 returns everything as train.
    seed: seeds the choice of dev rows within each label.

  Raises:
    ValueError: fraction outside [0, 1).
  """
  _check_fraction(fraction, "carve_dev")
  by_label: dict[str, list[int]] = collections.defaultdict(list)
  for index, example in enumerate(examples):
    by_label[example.label].append(index)
  positions = dev_positions({label: len(indices) for label, indices in by_label.items()}, fraction, seed)
  dev_indices = {by_label[label][p] for label, chosen in positions.items() for p in chosen}
  train = [ex for i, ex in enumerate(examples) if i not in dev_indices]
  dev = [ex for i, ex in enumerate(examples) if i in dev_indices]
  return train, dev


def _check_fraction(fraction: float, caller: str) -> None:
  if not 0 <= fraction < 1:
    raise ValueError(f"{caller}(fraction={fraction}): use a share in [0, 1), e.g. 0.02 for the paper's 2%")


def dev_positions(label_counts: Mapping[str, int], fraction: float, seed: int) -> dict[str, set[int]]:
  """For each label with `n` rows, the ranks (0 .. n-1, in row order among that label's rows) that go to dev.

  The one random choice behind `carve_dev` and `DevCarver`: `dev_count` rows per label, drawn with
  `random.Random(seed)` label after label in sorted order. Sampling ranks draws exactly what sampling the rows
  themselves would, so a split made from counts alone equals one made from the rows.

  Raises:
    ValueError: fraction outside [0, 1).
  """
  _check_fraction(fraction, "dev_positions")
  rng = random.Random(seed)
  chosen = {}
  for label in sorted(label_counts):  # a fixed label order keeps the random stream independent of dict order
    n = label_counts[label]
    chosen[label] = set(rng.sample(range(n), dev_count(n, fraction)))
  return chosen


class DevCarver:
  """`carve_dev` for a stream: told each row's label in order, says whether the row goes to dev.

  Built from the label counts of the rows it will be shown (a first pass over the data), it holds only the dev
  ranks, so memory grows with the dev split, not the corpus. Shown the same rows in the same order, it picks
  the same rows as `carve_dev` with the same fraction and seed.
  """

  def __init__(self, label_counts: Mapping[str, int], fraction: float, seed: int):
    self._positions = dev_positions(label_counts, fraction, seed)
    self._seen: collections.Counter = collections.Counter()
    self.dev_rows = sum(len(chosen) for chosen in self._positions.values())

  def is_dev(self, label: str) -> bool:
    """Whether the next row, whose label is `label`, goes to dev."""
    rank = self._seen[label]
    self._seen[label] = rank + 1
    chosen = self._positions.get(label)
    return chosen is not None and rank in chosen
