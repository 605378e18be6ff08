"""Carves a development split out of training examples, stratified by relation.

The paper holds out a small share of each language's training rows, stratified by relation. `carve_dev` does
the stratification for one list; call it once per language to get the paper's per-language split.
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Sequence

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
  if not 0 <= fraction < 1:
    raise ValueError(f"carve_dev(fraction={fraction}): use a share in [0, 1), e.g. 0.02 for the paper's 2%")
  by_label: dict[str, list[int]] = collections.defaultdict(list)
  for index, example in enumerate(examples):
    by_label[example.label].append(index)
  rng = random.Random(seed)
  dev_indices: set[int] = set()
  for label in sorted(by_label):  # a fixed label order keeps the random stream independent of dict order
    indices = by_label[label]
    dev_indices.update(rng.sample(indices, dev_count(len(indices), fraction)))
  train = [ex for i, ex in enumerate(examples) if i not in dev_indices]
  dev = [ex for i, ex in enumerate(examples) if i in dev_indices]
  return train, dev
