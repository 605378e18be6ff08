"""Reads and validates SMiLER TSV files into `Example`s.

A SMiLER file is UTF-8, tab-separated, one row per line (LF or CRLF), with the header `id entity_1 entity_2 label
text lang` and CSV quoting as pandas writes it (a field holding `"` or a tab is quoted, inner quotes doubled); a
quoted field cannot span lines, so an unbalanced quote spoils only its own line. The text marks the two
entities with `<e1>..</e1>` and `<e2>..</e2>`, in either order. Each row becomes an `Example` holding the text
with the tags removed and the half-open character spans of both entities in that clean text.

Rows are streamed one at a time, so memory does not grow with the file. A file may be local or a URL
(`gs://bucket/x.tsv`, through `herberta_jax.storage`); a remote one is read in large blocks. A bad row either stops the read with a
`DataError` naming file and line (`on_error="fail"`) or goes to a `Rejects` collection (`on_error="skip"`). A
wrong or repeated header always stops the read: then the file, not a row, is at fault.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import pathlib
import re
from collections.abc import Collection, Iterator, Sequence

from herberta_jax import storage
from herberta_jax.data.example import Example
from herberta_jax.errors import UserError

HEADER = ("id", "entity_1", "entity_2", "label", "text", "lang")

# The 36 SMiLER relations in the order of the SMiLER paper. Informational (and used by the demo corpus): the label
# set of a run is whatever its training files hold.
SMILER_LABELS = (
    "has-genre", "has-type", "has-parent", "invented-by", "is-member-of", "headquarters", "has-occupation",
    "has-author", "invented-when", "from-country", "birth-place", "movie-has-director", "org-has-founder",
    "has-population", "org-has-member", "has-edu", "has-nationality", "is-where", "starring", "org-leader",
    "has-spouse", "has-sibling", "won-award", "loc-leader", "has-child", "event-year", "has-weight", "has-height",
    "has-length", "has-highest-mountain", "first-product", "has-tourist-attraction", "has-lifespan", "eats",
    "post-code", "no_relation",
)

_ROW_HINT = "Fix the row, or read with on_error='skip' to collect bad rows in a rejects file and go on."
_HEADER_HINT = "A SMiLER file starts with the tab-separated header: " + " ".join(HEADER) + "."
# An entity tag: group 1 is "/" for a closing tag, group 2 the entity number.
TAG = re.compile(r"<(/?)e([12])>")
_SMILER_NAME = re.compile(r"^([a-z]{2}(?:-(?:small|full))?)_corpora_(train|test|dev)$", re.IGNORECASE)
_SPLIT_STEMS = ("train", "test", "dev")


class DataError(UserError, ValueError):
  """A problem with an input file: says which file, which line, what is wrong and what to do."""

  def __init__(self, path: str | pathlib.Path, line: int | None, reason: str, hint: str = "",
               last_line: int | None = None):
    self.path = str(path)
    self.line = line  # first line of the row (a quoted field may span several)
    self.reason = reason
    where = str(path)
    if line is not None:
      where += f":{line}" if last_line in (None, line) else f":{line}-{last_line}"
    super().__init__(f"{where}: {reason}" + (f". {hint}" if hint else ""))


@dataclasses.dataclass(frozen=True)
class Reject:
  """One rejected row: where it was ("path:line"), why, and its line as read (without the line break)."""

  source: str
  reason: str
  raw: str


class Rejects:
  """Collects the rows `read_tsv(on_error="skip")` passed over, to report them afterwards.

  `read` counts the rows (non-blank lines after the header) of every file read with it, so that rows written plus
  rows rejected can be checked against rows read.
  """

  def __init__(self):
    self.rows: list[Reject] = []
    self.read = 0

  def add(self, source: str, reason: str, raw: str) -> None:
    self.rows.append(Reject(source, reason, raw))

  def __len__(self) -> int:
    return len(self.rows)

  def __iter__(self) -> Iterator[Reject]:
    return iter(self.rows)

  def write(self, path: str | pathlib.Path) -> None:
    """Writes a TSV `source reason raw`; `raw` is the row's line as a JSON string (its tabs stay unambiguous)."""
    path = storage.path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO(newline="")
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerow(("source", "reason", "raw"))
    for row in self.rows:
      writer.writerow((row.source, row.reason, json.dumps(row.raw, ensure_ascii=False)))
    storage.write_atomically(path, text.getvalue())


def expand_inputs(paths: Sequence[str | pathlib.Path]) -> list[pathlib.Path]:
  """Turns the given files and directories into the list of TSV files to read.

  A directory stands for its `*.tsv` files (not recursive, sorted by name); an explicit file is kept whatever its
  suffix. A path given twice (or a file also inside a given directory) is read once.

  Paths may be URLs (`gs://bucket/corpus/`); the files then come back as `storage.path` objects.

  Raises:
    DataError: a path does not exist, or a directory holds no `*.tsv` file.
    storage.MissingClientError: a URL whose client package is not installed.
  """
  found: list[pathlib.Path] = []
  for given in paths:
    path = storage.path(given)
    if path.is_dir():
      tsvs = sorted(p for p in path.glob("*.tsv") if p.is_file())
      if not tsvs:
        raise DataError(path, None, "directory holds no *.tsv file", "Point at SMiLER .tsv files or their folder.")
      found.extend(tsvs)
    elif path.is_file():
      found.append(path)
    else:
      hint = f"Check the path (relative paths start from {pathlib.Path.cwd()})." if storage.is_local(path) else \
          "Check the bucket and the object names."
      raise DataError(path, None, "no such file or directory", hint)
  unique: dict[pathlib.Path, None] = {}
  for path in found:
    unique.setdefault(path, None)
  return list(unique)


def parse_file_name(path: str | pathlib.Path) -> tuple[str | None, str | None]:
  """(language, split) from a SMiLER file name, e.g. `en-small_corpora_train.tsv` -> ("en-small", "train").

  Other names give no language; their split is the stem when it is train/test/dev (`train.tsv` -> (None,
  "train")), else None.
  """
  stem = pathlib.PurePosixPath(storage.text(path)).stem if storage.is_url(path) else pathlib.Path(path).stem
  match = _SMILER_NAME.match(stem)
  if match:
    return match.group(1).lower(), match.group(2).lower()
  if stem.lower() in _SPLIT_STEMS:
    return None, stem.lower()
  return None, None


class _RowError(ValueError):
  """A row-level problem, turned into a DataError or a reject by the reader."""


def read_tsv(path: str | pathlib.Path, *, on_error: str = "fail", rejects: Rejects | None = None,
             known_labels: Collection[str] | None = None) -> Iterator[Example]:
  """Streams the rows of one SMiLER TSV file as `Example`s.

  Args:
    path: the TSV file.
    on_error: "fail" raises a `DataError` at the first bad row; "skip" records bad rows in `rejects` and goes on.
    rejects: where skipped rows go; required with on_error="skip".
    known_labels: when given (at test time: the labels the model knows), a row with another label is bad.

  Returns:
    A generator of `Example`s, in file order. Blank lines are ignored.

  Raises:
    DataError: at the call, the file is not there; while iterating, the header is missing or repeated, or (with
      "fail") a row is bad: wrong column count, missing/doubled/unclosed/empty/overlapping entity tags, an entity column that
      disagrees with the tagged text, an empty text, label or lang, an unknown label, or bytes that are not UTF-8.
    ValueError: on_error is neither "fail" nor "skip", or "skip" comes without `rejects`.
  """
  if on_error not in ("fail", "skip"):
    raise ValueError(f"read_tsv(on_error={on_error!r}): use 'fail' or 'skip'")
  if on_error == "skip" and rejects is None:
    raise ValueError("read_tsv(on_error='skip') needs rejects=Rejects() to record the skipped rows in")
  path = storage.path(path)
  if not path.is_file():
    raise DataError(path, None, "no such file", "Check the path.")
  labels = frozenset(known_labels) if known_labels is not None else None
  return _read_rows(path, on_error == "skip", rejects, labels)


_CR_HINT = "CR-only line endings: convert with dos2unix -c mac FILE, or tr '\\r' '\\n' < FILE > FIXED"
_QUOTE_HINT = ("a field holding a '\"' must be quoted with the quote doubled, as pandas writes it, and every row "
               "must be on one line")


def _split_line(body: str) -> tuple[list[str], str | None]:
  """(fields, error) of one physical line: tab-separated, with pandas' CSV quoting where a field holds a quote."""
  if '"' not in body:
    return body.split("\t"), None  # the common case, and quoting cannot apply
  try:
    return next(csv.reader([body], delimiter="\t", strict=True)), None
  except csv.Error as err:
    return body.split("\t"), f"malformed CSV quoting ({err}); {_QUOTE_HINT}"


def _read_rows(path: pathlib.Path, skip: bool, rejects: Rejects | None,
               labels: frozenset[str] | None) -> Iterator[Example]:
  # Each physical line is one row, read on its own: an unbalanced quote then spoils one row, never the rows after
  # it (a CSV reader would swallow lines up to the next quote). SMiLER texts hold no line breaks.
  header_seen = False
  with path.open("rb") as handle:
    for number, raw in enumerate(handle if storage.is_local(path) else _lines_in_blocks(handle), start=1):
      error = None
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as err:
        error = f"bytes that are not UTF-8 at byte {err.start + 1} of the line ({raw[err.start:err.end]!r})"
        line = raw.decode("utf-8", errors="replace")
      if number == 1 and line.startswith("\ufeff"):  # a byte-order mark some editors write
        line = line[1:]
      body = line.rstrip("\r\n")
      if "\r" in body:
        error = error or f"a carriage return (\\r) inside the row; {_CR_HINT}"
      if not header_seen:
        if "\r" in body:
          raise DataError(path, number, _CR_HINT)
        fields = _split_line(body)[0]
        if error is not None or tuple(fields) != HEADER:
          raise DataError(path, number, error or f"expected the header, found {fields!r}", _HEADER_HINT)
        header_seen = True
        continue
      if not body:
        continue  # a blank line
      if rejects is not None:
        rejects.read += 1
      fields, split_error = _split_line(body)
      error = error or split_error
      if error is None and tuple(fields) == HEADER:
        raise DataError(path, number, "the header appears again (two files concatenated?)",
                        "Keep one header per file, or split the file.")
      source = f"{path}:{number}"
      try:
        if error is not None:
          raise _RowError(error)
        example = _to_example(fields, source, labels)
      except _RowError as err:
        if not skip:
          raise DataError(path, number, str(err), _ROW_HINT) from None
        rejects.add(source, str(err), body)
        continue
      yield example
  if not header_seen:
    raise DataError(path, 1, "empty file, no header", _HEADER_HINT)


def _lines_in_blocks(handle, block_size: int = 8 << 20) -> Iterator[bytes]:
  """The lines of a binary file (each ending in b"\\n" but maybe the last), read `block_size` bytes at a time.

  For remote files: iterating an fsspec file line by line asks its cache for a whole block per line."""
  rest = b""
  while block := handle.read(block_size):
    data = rest + block
    cut = data.rfind(b"\n") + 1
    yield from io.BytesIO(data[:cut])  # splits at b"\n" only, as iterating a local file does
    rest = data[cut:]
  if rest:
    yield rest


def _to_example(fields: list[str], source: str, labels: frozenset[str] | None) -> Example:
  if len(fields) != len(HEADER):
    raise _RowError(f"expected {len(HEADER)} tab-separated columns, found {len(fields)}")
  row_id, entity_1, entity_2, label, tagged, lang = fields
  label, lang = label.strip(), lang.strip()
  if not tagged.strip():
    raise _RowError("empty text")
  if not label:
    raise _RowError("empty label")
  if labels is not None and label not in labels:
    raise _RowError(f"unknown label {label!r}: the model knows {len(labels)} labels, e.g. "
                    f"{', '.join(sorted(labels)[:5])}")
  if not lang:
    raise _RowError("empty lang column")
  text, e1, e2 = strip_tags(tagged)
  if entity_1.strip() != text[e1[0]:e1[1]]:
    raise _RowError(f"entity_1 column {entity_1!r} disagrees with the tagged text {text[e1[0]:e1[1]]!r}")
  if entity_2.strip() != text[e2[0]:e2[1]]:
    raise _RowError(f"entity_2 column {entity_2!r} disagrees with the tagged text {text[e2[0]:e2[1]]!r}")
  return Example(id=row_id.strip(), text=text, e1=e1, e2=e2, label=label, lang=lang, source=source)


def strip_tags(tagged: str) -> tuple[str, tuple[int, int], tuple[int, int]]:
  """Removes the entity tags: (clean text, e1 span, e2 span), spans half-open in the clean text.

  The text is otherwise kept exactly, so offsets round-trip; whitespace just inside a tag (`<e1> Paris </e1>`)
  is left out of the span.

  Raises:
    ValueError: a tag is missing, doubled, unclosed, closed before opened, empty, or the entities overlap.
  """
  # Fast path for a well-formed row (one C-level split, then only slicing); anything else takes the slow path,
  # which says precisely what is wrong.
  parts = TAG.split(tagged)  # text, "/"?, "1"|"2", text, ... : 13 parts for 4 tags
  if len(parts) == 13:
    order = parts[1] + parts[2] + parts[4] + parts[5] + parts[7] + parts[8] + parts[10] + parts[11]
    if order == "1/12/2" or order == "2/21/1":
      before, first, middle, second = parts[0], parts[3], parts[6], parts[9]
      first_span = _inner_span(len(before), first)
      second_span = _inner_span(len(before) + len(first) + len(middle), second)
      if first_span and second_span:
        text = before + first + middle + second + parts[12]
        return (text, first_span, second_span) if order[0] == "1" else (text, second_span, first_span)
  return _strip_tags_checked(tagged)


def _inner_span(offset: int, inner: str) -> tuple[int, int] | None:
  """The span of `inner` placed at `offset`, less surrounding whitespace; None when it is all whitespace."""
  content = inner.strip()
  if not content:
    return None
  start = offset + len(inner) - len(inner.lstrip()) if len(content) != len(inner) else offset
  return start, start + len(content)


def _strip_tags_checked(tagged: str) -> tuple[str, tuple[int, int], tuple[int, int]]:
  """The slow path of `strip_tags`: the same result, with a precise reason for a malformed row."""
  pieces = []
  opens: dict[str, int] = {}
  closes: dict[str, int] = {}
  pos = clean_len = 0
  for match in TAG.finditer(tagged):
    start = match.start()
    pieces.append(tagged[pos:start])
    clean_len += start - pos
    pos = match.end()
    closing, which = match.group(1), match.group(2)
    seen = closes if closing else opens
    if which in seen:
      raise _RowError(f"<{closing}e{which}> appears twice")
    if closing and which not in opens:
      raise _RowError(f"</e{which}> comes before <e{which}>")
    seen[which] = clean_len
  pieces.append(tagged[pos:])
  text = "".join(pieces)
  spans = []
  for which in "12":
    if which not in opens:
      raise _RowError(f"missing <e{which}>..</e{which}> tags")
    if which not in closes:
      raise _RowError(f"<e{which}> is never closed (no </e{which}>)")
    inner = text[opens[which]:closes[which]]
    span = _inner_span(opens[which], inner)
    if span is None:
      raise _RowError(f"empty entity <e{which}>{inner}</e{which}>")
    spans.append(span)
  (s1, t1), (s2, t2) = spans
  if s1 < t2 and s2 < t1:
    raise _RowError("the e1 and e2 tags are nested or overlap")
  return text, spans[0], spans[1]
