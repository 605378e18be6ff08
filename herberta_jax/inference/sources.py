"""Predict's input read line by line in bounded memory: one (sentence, error) per output row, in input order.

Input lines are plain sentences, SMiLER TSV rows (entity tags stripped) or JSONL objects with a `text` field.
Lines end at "\n" only (a CRLF's "\r" is dropped, a lone "\r" stays inside its line, as in a sentence pasted from
an old Mac file); a UTF-8 byte order mark at the start is skipped; the format is detected from the first line
that is not blank. Every input line answers with one row, except a TSV header.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from herberta_jax.data import smiler

FORMATS = ("auto", "text", "tsv", "jsonl")
# Lines read before the format is known: a file of nothing but blank lines must not be held whole.
_MAX_BLANK_PREFIX = 10_000


@dataclasses.dataclass
class Item:
  """One output row to be: its input line number and the sentence, or why there is none."""

  line: int
  text: str | None
  error: str | None = None


def lines(stream: BinaryIO) -> Iterator[bytes]:
  """The lines of a binary stream without their "\n" or "\r\n"; a leading UTF-8 BOM removed."""
  for number, raw in enumerate(stream):  # a binary stream splits at b"\n" only, unlike str.splitlines()
    if number == 0 and raw.startswith(codecs.BOM_UTF8):
      raw = raw[len(codecs.BOM_UTF8):]
    if raw.endswith(b"\n"):
      raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    yield raw


def _is_header(line: str) -> bool:
  """Whether `line` is SMiLER's TSV header."""
  return tuple(line.split("\t")) == smiler.HEADER


def starts_with_header(path: str) -> bool:
  """Whether the file's first non-blank line is SMiLER's TSV header: the one input line without an output row."""
  with open(path, "rb") as stream:
    for line in lines(stream):
      text = line.decode("utf-8", "replace")
      if text.strip():
        return _is_header(text)
  return False


def detect_format(line: str) -> str:
  """"jsonl", "tsv" or "text", from the first non-blank line."""
  if line.lstrip().startswith("{"):
    return "jsonl"
  if _is_header(line):
    return "tsv"
  return "text"


def read_items(stream: BinaryIO, fmt: str = "auto", max_chars: int = 5000) -> tuple[str, Iterator[Item]]:
  """(format, items): the format as given or detected, and one `Item` per output row, read lazily."""
  raw = lines(stream)
  head: list[bytes] = []
  for line in raw:
    head.append(line)
    if line.strip() or len(head) >= _MAX_BLANK_PREFIX:
      break
  if fmt == "auto":
    fmt = detect_format(head[-1].decode("utf-8", "replace")) if head else "text"

  def items() -> Iterator[Item]:
    header_seen = False
    for number, line in enumerate(_chain(head, raw), start=1):
      try:
        text = line.decode("utf-8")
      except UnicodeDecodeError as e:
        yield Item(number, None, f"line {number}: not UTF-8 ({e.reason} at byte {e.start})")
        continue
      if fmt == "tsv" and not header_seen and text.strip():
        header_seen = True
        if _is_header(text):
          continue
      text, error = _sentence(text, fmt, number)
      if error is None and not text.strip():
        error = f"line {number}: empty sentence"
      elif error is None and len(text) > max_chars:
        error = f"line {number}: {len(text)} characters, more than --max_chars={max_chars}"
      yield Item(number, None if error else text, error)

  return fmt, items()


def _chain(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
  yield from head
  yield from rest


def _sentence(line: str, fmt: str, number: int) -> tuple[str, str | None]:
  """The sentence a line holds in `fmt`, or an error."""
  if fmt == "tsv":
    if not line.strip():
      return "", None
    try:
      fields = next(csv.reader([line], delimiter="\t")) if '"' in line else line.split("\t")
    except csv.Error as e:
      return "", f"line {number}: unreadable TSV row ({e})"
    if len(fields) != len(smiler.HEADER):
      return "", f"line {number}: {len(fields)} TSV columns, expected {len(smiler.HEADER)}"
    return smiler.TAG.sub("", fields[smiler.HEADER.index("text")]), None
  if fmt == "jsonl":
    try:
      obj = json.loads(line, strict=False) if line.strip() else {}  # strict=False: a raw "\r" inside a string
    except json.JSONDecodeError as e:
      return "", f"line {number}: invalid JSON ({e.msg})"
    text = obj.get("text") if isinstance(obj, dict) else None
    if not isinstance(text, str):
      return "", f"line {number}: no string field 'text'"
    return text, None
  return line, None


def open_output(path: str, resume: bool, window_sizes: Iterable[int] = itertools.repeat(1)):
  """(writable text stream, rows already done). With `resume`, an existing file keeps its complete lines up to the
  end of the last whole window (`window_sizes`: rows per window, in order), the rest (a partial last line included:
  the run was killed mid-write) is cut off; otherwise the file starts empty.

  The prediction sorts each window by length before batching, and a row's float scores depend (in the last
  digits) on the batch it ran in; redoing the unfinished window from its start makes a resumed output
  byte-identical to an uninterrupted one.
  """
  if not (resume and os.path.exists(path)):
    return open(path, "w", encoding="utf-8"), 0
  ends = [0]  # byte offset after each complete line that is kept
  with open(path, "rb") as f:
    for line in f:
      if line.endswith(b"\n"):
        ends.append(ends[-1] + len(line))
  complete, done = len(ends) - 1, 0
  for size in window_sizes:
    if done + size > complete:
      break
    done += size
  out = open(path, "r+", encoding="utf-8")
  out.truncate(ends[done])
  out.seek(ends[done])
  return out, done
