"""SemEval-2010 Task 8 from its public distribution, in SMiLER's TSV layout (`python -m herberta_jax.fetch_semeval`).

The distribution (Hendrickx et al., 2010; CC BY 3.0) is a zip holding `TRAIN_FILE.TXT` (8,000 sentences) and
`TEST_FILE_FULL.TXT` (2,717), four lines per sentence:

  8001<TAB>"The most common <e1>audits</e1> were about <e2>waste</e2> and recycling."
  Message-Topic(e1,e2)
  Comment: ...
  <blank>

The output is `train.tsv` and `test.tsv` with SMiLER's header, the tagged text as it is, the entities' text in
`entity_1`/`entity_2`, `lang` = en, and the task's negative class `Other` renamed `no_relation` (SMiLER's name).
`configs/semeval.py` reads that directory (set `--config.data.train_files` to move it).
"""

from __future__ import annotations

import csv
import io
import pathlib
import re
import urllib.request
import zipfile
from collections.abc import Iterator

from herberta_jax import storage
from herberta_jax.data.example import NEGATIVE_LABEL
from herberta_jax.data.smiler import HEADER
from herberta_jax.errors import UserError

# A mirror of the original zip (the organisers' Google Drive link asks for a confirmation page).
DEFAULT_SOURCE = ("https://github.com/sahitya0000/Relation-Classification/raw/master/corpus/"
                  "SemEval2010_task8_all_data.zip")
SPLIT_FILES = {"train": "TRAIN_FILE.TXT", "test": "TEST_FILE_FULL.TXT"}
_SENTENCE = re.compile(r'^(\d+)\t"(.*)"$')
_ENTITY = {name: re.compile(rf"<{name}>(.*?)</{name}>") for name in ("e1", "e2")}


class SemEvalFormatError(UserError):
  """The distribution file does not look like SemEval-2010 Task 8's: names the file and line."""


def parse_task_file(text: str, name: str) -> Iterator[dict]:
  """The rows (SMiLER's columns) of one distribution file's text, in file order."""
  lines = text.replace("\r\n", "\n").split("\n")
  number = 0
  while number < len(lines):
    line = lines[number]
    if not line.strip() or line.startswith("Comment:"):
      number += 1  # the comment after each label, and the blank line closing each sentence
      continue
    match = _SENTENCE.match(line)
    if not match or number + 1 >= len(lines):
      raise SemEvalFormatError(f"{name}:{number + 1}: expected 'ID<TAB>\"sentence\"' followed by a label line, "
                               f"found {line[:60]!r}. Is this the SemEval-2010 Task 8 distribution?")
    sentence_id, text_ = match.groups()
    label = lines[number + 1].strip()
    entities = [_ENTITY[tag].search(text_) for tag in ("e1", "e2")]
    if not all(entities):
      raise SemEvalFormatError(f"{name}:{number + 1}: the sentence lacks an <e1> or <e2> tag")
    yield {"id": sentence_id, "entity_1": entities[0].group(1), "entity_2": entities[1].group(1),
           "label": NEGATIVE_LABEL if label == "Other" else label, "text": text_, "lang": "en"}
    number += 2


def write_tsv(rows, path: pathlib.Path) -> int:
  """Writes rows with SMiLER's header and quoting (a field holding `"` is quoted, inner quotes doubled); `path`
  may be a URL."""
  count = 0
  text = io.StringIO(newline="")
  writer = csv.writer(text, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
  writer.writerow(HEADER)
  for row in rows:
    writer.writerow([row[key] for key in HEADER])
    count += 1
  storage.write_atomically(storage.path(path), text.getvalue())  # the corpus is small (a few MB)
  return count


def convert_zip(archive: zipfile.ZipFile, out_dir: pathlib.Path) -> dict[str, int]:
  """Writes `train.tsv` and `test.tsv` from the distribution zip into `out_dir` (local or a URL); returns the row
  count of each."""
  out_dir = storage.path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  names = {pathlib.PurePosixPath(n).name.upper(): n for n in archive.namelist()}
  counts = {}
  for split, file_name in SPLIT_FILES.items():
    if file_name not in names:
      raise SemEvalFormatError(f"the zip holds no {file_name}: is it SemEval2010_task8_all_data.zip?")
    text = archive.read(names[file_name]).decode("utf-8-sig")
    counts[split] = write_tsv(parse_task_file(text, names[file_name]), out_dir / f"{split}.tsv")
  return counts


def open_source(source: str) -> zipfile.ZipFile:
  """The distribution zip from a local path, a bucket URL or an http(s) URL (read into memory: it is 1.4 MB)."""
  if re.match(r"^https?://", source):
    with urllib.request.urlopen(source, timeout=60) as response:
      return zipfile.ZipFile(io.BytesIO(response.read()))
  if storage.is_url(source):
    return zipfile.ZipFile(io.BytesIO(storage.path(source).read_bytes()))
  return zipfile.ZipFile(source)
