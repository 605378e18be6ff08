"""The two record types every part of the data path agrees on.

`Example` is one validated SMiLER row with its tags removed; `Features` is the same row tokenized for the
relation classifier. The entity tagger's input is derived from `Features` on device (see
`herberta_jax.model.inputs`), so the records hold each sentence once.
"""

from __future__ import annotations

import dataclasses

NEGATIVE_LABEL = "no_relation"


@dataclasses.dataclass(frozen=True)
class Example:
  """One SMiLER row: clean text plus half-open character spans [start, end) of both entities."""

  id: str
  text: str
  e1: tuple[int, int]
  e2: tuple[int, int]
  label: str
  lang: str
  source: str = ""  # "path:line", for error messages and reports

  @property
  def e1_text(self) -> str:
    return self.text[self.e1[0]:self.e1[1]]

  @property
  def e2_text(self) -> str:
    return self.text[self.e2[0]:self.e2[1]]


@dataclasses.dataclass(frozen=True)
class Features:
  """A tokenized `Example`, as stored in the TFRecords.

  `input_ids` is `[CLS] sentence [SEP]` (no padding). `offsets[i]` is the character span of token i in `text`
  ((0, 0) for special tokens). `spans` holds token positions in `input_ids` of (e1 start, e1 end, e2 start,
  e2 end), ends inclusive, or -1 where truncation cut the entity off (then `truncated` is True).
  """

  id: str
  lang: str
  text: str
  label: int
  input_ids: tuple[int, ...]
  offsets: tuple[tuple[int, int], ...]
  spans: tuple[int, int, int, int]
  char_spans: tuple[int, int, int, int]
  truncated: bool
