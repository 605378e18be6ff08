"""Predict's input read line by line in bounded memory: one (sentence, error) per output row, in input order.

Input lines are plain sentences, SMiLER TSV rows (entity tags stripped) or JSONL objects with a `text` field.
Lines end at "\n" only (a CRLF's "\r" is dropped, a lone "\r" stays inside its line, as in a sentence pasted from
an old Mac file); a UTF-8 byte order mark at the start is skipped; the format is detected from the first line
that is not blank (`detect_format`: a JSON object, SMiLER's header or a tagged six-column row, else text; a guess
that may be wrong leaves a note naming the --format to force). TSV fields follow `prepare`'s quoting rule
(`smiler._split_line`). Every input line answers with one row, except a TSV header. `Output` writes predict's
--out, locally or to a bucket, and checks the rows a --resume keeps.
"""

from __future__ import annotations

import codecs
import dataclasses
import itertools
import json
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import IO, BinaryIO

from herberta_jax import storage
from herberta_jax.data import smiler
from herberta_jax.errors import UserError

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


def _is_tagged_row(line: str) -> bool:
  """Whether `line` is a SMiLER data row: six tab-separated columns (SMiLER's quoting rule) whose text column
  holds both entities' tags. Such a line is TSV even without the header above it."""
  fields, error = smiler._split_line(line)  # the rule `prepare` and `evaluate` read with
  if error is not None or len(fields) != len(smiler.HEADER):
    return False
  text = fields[smiler.HEADER.index("text")]
  return all(tag in text for tag in ("<e1>", "</e1>", "<e2>", "</e2>"))


def starts_with_header(path: str) -> bool:
  """Whether the file's first non-blank line is SMiLER's TSV header: the one input line without an output row."""
  with open(path, "rb") as stream:
    for line in lines(stream):
      text = line.decode("utf-8", "replace")
      if text.strip():
        return _is_header(text)
  return False


def _json_object(line: str) -> bool:
  try:
    return isinstance(json.loads(line, strict=False), dict)
  except ValueError:  # JSONDecodeError, and a recursion error's kin for absurdly nested input
    return False


def detect_format(line: str) -> str:
  """"jsonl", "tsv" or "text", from the first non-blank line: a JSON object is JSONL, SMiLER's header or a tagged
  six-column row is TSV, anything else (a line that merely starts with "{" included) is text."""
  if line.lstrip().startswith("{") and _json_object(line):
    return "jsonl"
  if _is_header(line) or _is_tagged_row(line):
    return "tsv"
  return "text"


def ambiguity(line: str, fmt: str) -> str | None:
  """A note for stderr when the detected format may not be what the user meant, naming the --format to force."""
  if fmt == "text" and line.lstrip().startswith("{"):
    return ("the first line starts with '{' but is not a JSON object: reading the input as plain text "
            "(--format jsonl to read it as JSON lines)")
  if fmt == "text" and line.count("\t") == len(smiler.HEADER) - 1:
    return ("the first line has six tab-separated columns but no <e1>/<e2> tags: reading the input as plain "
            "text (--format tsv to read it as SMiLER rows)")
  return None


def read_items(stream: BinaryIO, fmt: str = "auto", max_chars: int = 5000,
               notes: list[str] | None = None) -> tuple[str, Iterator[Item]]:
  """(format, items): the format as given or detected, and one `Item` per output row, read lazily. A detection
  that may be wrong appends its reason to `notes` (`ambiguity`)."""
  raw = lines(stream)
  head: list[bytes] = []
  for line in raw:
    head.append(line)
    if line.strip() or len(head) >= _MAX_BLANK_PREFIX:
      break
  if fmt == "auto":
    first = head[-1].decode("utf-8", "replace") if head else ""
    fmt = detect_format(first)
    if notes is not None and (note := ambiguity(first, fmt)):
      notes.append(note)

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
    fields, error = smiler._split_line(line)  # one quoting rule for predict, prepare and evaluate
    if error is not None:
      return "", f"line {number}: {error}"
    if len(fields) != len(smiler.HEADER):
      return "", f"line {number}: {len(fields)} TSV columns, expected {len(smiler.HEADER)}"
    return smiler.TAG.sub("", fields[smiler.HEADER.index("text")]), None
  if fmt == "jsonl":
    if not line.strip():
      return "", f"line {number}: blank line, where JSON lines need one object with a string field 'text'"
    try:
      obj = json.loads(line, strict=False)  # strict=False: a raw "\r" inside a string
    except ValueError as e:
      return "", f"line {number}: invalid JSON ({getattr(e, 'msg', e)})"
    if not isinstance(obj, dict):
      return "", f"line {number}: a JSON {type(obj).__name__}, not an object with a string field 'text'"
    if not isinstance(obj.get("text"), str):
      return "", f"line {number}: no string field 'text'"
    return obj["text"], None
  return line, None


class Output:
  """predict's --out: a local file, or an object in a bucket, written in order and resumable.

  `resume` keeps an existing output's complete lines up to the end of the last whole window (`window_sizes`: rows
  per window, in order); the rest (a partial last line included: the run was killed mid-write) is cut off when
  `open` is called, not before, so that `check_kept` can refuse an output written for another input while the
  file is still as it was. Without `resume` the output starts empty.

  The prediction sorts each window by length before batching, and a row's float scores depend (in the last
  digits) on the batch it ran in; redoing the unfinished window from its start makes a resumed output
  byte-identical to an uninterrupted one.

  An object cannot be appended to: a URL's rows are written to a local file under `storage.cache_root()` (a
  resumed one starts as a download of the object) and the object is replaced by an upload of it at most every
  `upload_every` seconds at a flush, and at `close`.
  """

  def __init__(self, location: str, resume: bool, window_sizes: Iterable[int] = itertools.repeat(1), *,
               upload_every: float = 30.0):
    self.location = location
    self.target = storage.path(location)
    self.remote = storage.is_url(location)
    self.upload_every = upload_every
    self._uploaded_at = time.monotonic()
    self._stream: IO[str] | None = None
    if self.remote:
      root = storage.cache_root()
      root.mkdir(parents=True, exist_ok=True)
      handle, name = tempfile.mkstemp(prefix="predict.", suffix=".jsonl", dir=root)
      os.close(handle)
      self.local = pathlib.Path(name)
      if resume and self.target.exists():
        with self.target.open("rb") as src, open(self.local, "wb") as dst:
          shutil.copyfileobj(src, dst, length=8 << 20)
    else:
      self.local = self.target
    self.done, self._keep_bytes = (_kept(self.local, window_sizes) if resume and self.local.exists() else (0, 0))

  def kept_rows(self) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the `done` rows a resumed run keeps."""
    if not self.done:
      return
    with open(self.local, "rb") as f:
      yield from itertools.islice(enumerate(f, start=1), self.done)

  def check_kept(self, items: Iterator[Item]) -> None:
    """Reads the `done` items the kept rows answer from `items` and checks each row against its input line.

    Raises:
      ResumeMismatch: a kept row is not the answer to its input line (the output was written for another input,
        or edited); nothing has been written yet.
    """
    for (number, raw), item in itertools.zip_longest(self.kept_rows(), itertools.islice(items, self.done)):
      if item is None:
        raise ResumeMismatch(f"--resume: {self.location} holds {self.done} rows but the input ends after "
                             f"{number - 1}: it was written for another input; drop --resume to start afresh "
                             f"or give another --out")
      if (why := _mismatch(raw, item)) is not None:
        raise ResumeMismatch(f"--resume: {self.location}:{number} does not answer input line {item.line} ({why}): "
                             f"it was written for another input or edited; drop --resume to start afresh or give "
                             f"another --out")

  def open(self) -> IO[str]:
    """The stream to write rows to, after the kept ones."""
    if self.done:
      self._stream = open(self.local, "r+", encoding="utf-8")
      self._stream.truncate(self._keep_bytes)
      self._stream.seek(self._keep_bytes)
    else:
      self._stream = open(self.local, "w", encoding="utf-8")
    return self._stream

  def flush(self) -> None:
    """Flushes the rows written so far (and uploads them, when due, for a URL)."""
    self._stream.flush()
    if self.remote and time.monotonic() - self._uploaded_at >= self.upload_every:
      self._upload()

  def close(self, quiet: bool = False) -> None:
    """Flushes, uploads a URL's rows and removes its local copy; safe to call twice. `quiet`: while another
    error propagates, a failure to write here (the same full disk, say) is not raised over it."""
    stream, self._stream = self._stream, None
    try:
      if stream is not None:
        stream.close()
        if self.remote:
          self._upload()
    except OSError:
      if not quiet:
        raise
    finally:
      if self.remote:
        self.local.unlink(missing_ok=True)

  def _upload(self) -> None:
    with open(self.local, "rb") as src, self.target.open("wb") as dst:
      shutil.copyfileobj(src, dst, length=8 << 20)
    self._uploaded_at = time.monotonic()


class ResumeMismatch(UserError):
  """--resume found kept rows that do not answer the input's lines."""


def _kept(path: pathlib.Path, window_sizes: Iterable[int]) -> tuple[int, int]:
  """(rows kept, their bytes): the complete lines of `path` up to the end of the last whole window."""
  ends = [0]  # byte offset after each complete line
  with open(path, "rb") as f:
    for line in f:
      if line.endswith(b"\n"):
        ends.append(ends[-1] + len(line))
  complete, done = len(ends) - 1, 0
  for size in window_sizes:
    if done + size > complete:
      break
    done += size
  return done, ends[done]


def _mismatch(raw: bytes, item: Item) -> str | None:
  """Why a kept output row is not the answer to `item`, or None when it is.

  A row of the reader's own (an error that names its line: "line N: ...") must be that very error; a predicted
  row must hold the input's sentence; an error the model gave (an empty or untokenizable sentence) must answer a
  sentence, not a line the reader refused."""
  try:
    row = json.loads(raw)
  except ValueError:
    return "not a JSON line"
  if not isinstance(row, dict):
    return "not a JSON object"
  if item.error is not None:
    return None if row.get("error") == item.error else f"expected the error {item.error!r}"
  if "text" in row:
    return None if row["text"] == item.text else f"its text {_clip(row['text'])} is not {_clip(item.text)}"
  error = row.get("error")
  if isinstance(error, str) and not error.startswith("line "):
    return None
  return f"expected a prediction for {_clip(item.text)}"


def _clip(text, limit: int = 40) -> str:
  text = str(text)
  return repr(text if len(text) <= limit else text[:limit] + "...")
