"""Turns SMiLER TSV files into tokenized, sharded TFRecords plus a manifest (the library behind `prepare`).

Output in `out_dir`:
  {train,dev,test}/{lang}-00000-of-0000N.tfrecord   one record per sentence (`herberta_jax.data.records`)
  tokenizer/                                        the tokenizer with its relation tokens registered
  manifest.json                                     labels, relation tokens, tokenizer, counts, files
  rejects.tsv                                       the rows skipped (with on_error='skip')

The same inputs give byte-identical outputs: no timestamps, fixed orders, seeded dev carving.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import dataclasses
import hashlib
import importlib.metadata
import itertools
import json
import math
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence

from herberta_jax import console, storage
from herberta_jax.data import records, smiler, splits, tokenize
from herberta_jax.data.example import NEGATIVE_LABEL, Example, Features
from herberta_jax.errors import ArgumentError, UserError, UserFileExistsError

SPLITS = ("train", "dev", "test")
ROWS_PER_SHARD = 50_000
MIN_SHARDS = 4  # so up to 4 hosts read disjoint files even for a small language
ENCODE_CHUNK = 4096  # rows per call to the Rust tokenizer: big enough to keep every core busy
_SPLIT_SUFFIX = re.compile(r"(?:^|[_.-])(train|dev|test)$", re.IGNORECASE)
_SAFE_LANG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

load_manifest = records.load_manifest


class TokenizerMismatchError(UserError, ValueError):
  """The prepared records were made with another tokenizer than the one in use."""


def _file_split_and_lang(path: pathlib.Path) -> tuple[str, str | None]:
  """(split, language or None) of an input file, from its name."""
  lang, split = smiler.parse_file_name(path)
  if split is None:
    match = _SPLIT_SUFFIX.search(path.stem)
    split = match.group(1).lower() if match else None
  if split is None:
    raise smiler.DataError(path, None, "cannot tell the split from the file name",
                           "Name it like SMiLER does ({lang}_corpora_train.tsv / _test.tsv / _dev.tsv) or end its "
                           "name with _train, _dev or _test (train.tsv, semeval_test.tsv).")
  return split, lang


def _language_of(example: Example, file_lang: str | None) -> str:
  lang = file_lang or example.lang
  if not _SAFE_LANG.match(lang):
    raise smiler.DataError(example.source or "?", None, f"lang {lang!r} cannot name a record file",
                           "Use a language code of letters, digits, '-', '_' or '.'.")
  return lang


@dataclasses.dataclass
class _InputFile:
  """One input file: its split, the language its name gives (if any), and the languages of its valid rows."""

  path: pathlib.Path
  split: str
  name_lang: str | None
  langs: set[str] = dataclasses.field(default_factory=set)


def _rows(file: _InputFile, on_error: str, rejects: smiler.Rejects | None, known_labels) -> Iterator[Example]:
  """The valid rows of a file, each with its language (the file name's wins over the row's `lang` column)."""
  for example in smiler.read_tsv(file.path, on_error=on_error, rejects=rejects, known_labels=known_labels):
    lang = _language_of(example, file.name_lang)
    if lang != example.lang:
      example = Example(id=example.id, text=example.text, e1=example.e1, e2=example.e2, label=example.label,
                        lang=lang, source=example.source)
    yield example


def _survey(files: list[_InputFile], on_error: str, rejects: smiler.Rejects, known_labels,
            counts: dict[str, collections.Counter]) -> None:
  """The first pass: validates every row of `files` and counts labels per language into `counts` (nothing else
  is kept, so memory does not grow with the corpus); notes each file's languages."""
  for file in files:
    for example in _rows(file, on_error, rejects, known_labels):
      counts[example.lang][example.label] += 1
      file.langs.add(example.lang)


def _lang_rows(files: list[_InputFile], lang: str, known_labels) -> Iterator[Example]:
  """The second pass: the valid rows of one language, file after file (only files that hold it are read)."""
  for file in files:
    if lang in file.langs:
      # The first pass stopped at any bad row in "fail" mode and recorded the rejects: here they are passed over.
      yield from (ex for ex in _rows(file, "skip", smiler.Rejects(), known_labels) if ex.lang == lang)


def _num_shards(rows: int, shards_per_split: int | None) -> int:
  """Shards for one (split, language): the requested number or ~50k rows each (at least 4); never above the rows."""
  wanted = shards_per_split if shards_per_split else max(MIN_SHARDS, math.ceil(rows / ROWS_PER_SHARD))
  return max(1, min(wanted, rows))


def _clear_outputs(out_dir: pathlib.Path, overwrite: bool) -> None:
  """Refuses to mix with an earlier preparation unless asked; then removes only what `prepare` writes."""
  ours = [out_dir / records.MANIFEST_NAME, out_dir / "rejects.tsv", out_dir / "tokenizer"]
  ours += [out_dir / split for split in SPLITS]
  present = [p for p in ours if p.exists()]
  if present and not overwrite:
    raise UserFileExistsError(f"{out_dir} already holds prepared data ({', '.join(p.name for p in present)}); choose "
                          "another --out or pass --overwrite")
  for path in present:
    storage.remove(path)


class _Output:
  """Where `prepare` writes its files: `out_dir` itself when local. For a URL, files are made in a local staging
  folder and uploaded (then deleted there) group by group with `publish`: the tokenizer and the record writers
  then work on local files, and the staging folder never holds more than one (split, language)'s shards."""

  def __init__(self, out_dir: pathlib.Path):
    self.out_dir = out_dir
    if storage.is_local(out_dir):
      self.local = out_dir
    else:
      storage.cache_root().mkdir(parents=True, exist_ok=True)
      self.local = pathlib.Path(tempfile.mkdtemp(prefix="prepare.", dir=storage.cache_root()))

  def publish(self, paths: Sequence[pathlib.Path]) -> None:
    """Uploads these local files or folders (under `self.local`) to the same place under `out_dir`."""
    if self.local is self.out_dir:
      return
    for path in paths:
      relative = path.relative_to(self.local).as_posix()
      if path.is_dir():
        storage.copy_tree(path, self.out_dir / relative)
        shutil.rmtree(path)
      else:
        target = self.out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with path.open("rb") as source, target.open("wb") as sink:
          shutil.copyfileobj(source, sink, length=8 << 20)
        path.unlink()

  def close(self) -> None:
    if self.local is not self.out_dir:
      shutil.rmtree(self.local, ignore_errors=True)


def _encoded(items: Iterable[tuple[Example, str]], tokenizer, max_seq_len: int, label_ids: dict[str, int],
             progress) -> Iterator[tuple[Features, str]]:
  """Streams (features, destination) for (example, destination) pairs, encoding ENCODE_CHUNK rows at a time.

  The next chunk is encoded in a worker thread while this one is serialized: the Rust tokenizer releases the
  GIL, so tokenizing and writing overlap. The order is unchanged: chunks come out in submission order.
  """
  items = iter(items)
  chunks = iter(lambda: list(itertools.islice(items, ENCODE_CHUNK)), [])

  def encode(chunk):
    return tokenize.encode([example for example, _ in chunk], tokenizer, max_seq_len, label_ids), chunk

  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    pending = collections.deque()
    for chunk in itertools.chain(chunks, [None]):
      if chunk is not None:
        pending.append(pool.submit(encode, chunk))
        if len(pending) < 2:
          continue  # keep one chunk encoding ahead
      while pending and (chunk is None or len(pending) >= 2):
        encoded, sources = pending.popleft().result()
        for row, (_, destination) in zip(encoded, sources):
          yield row, destination
        progress.update(len(encoded))


class _Group:
  """The shards of one (split, language) being written, and the tallies its manifest entry reports."""

  def __init__(self, out: _Output, split: str, lang: str, rows: int, shards_per_split: int | None):
    self.split, self.lang, self.rows = split, lang, rows
    self.labels: collections.Counter = collections.Counter()
    self.truncated_rows = self.truncated_entities = 0
    self.writer = records.ShardWriter(out.local / split, lang, _num_shards(rows, shards_per_split)) if rows else None

  def write(self, row: Features) -> None:
    self.labels[row.label] += 1
    if row.truncated:
      self.truncated_rows += 1
      self.truncated_entities += (row.spans[0] < 0) + (row.spans[2] < 0)
    self.writer.write(row)

  def finish(self, out: _Output, labels: list[str]) -> dict:
    """Closes and uploads the shards; returns the manifest entry."""
    paths = []
    if self.writer is not None:
      self.writer.close()
      paths = self.writer.paths
      if self.writer.rows != self.rows:
        raise AssertionError(f"prepare wrote {self.writer.rows} {self.split} rows of {self.lang}, counted {self.rows}"
                             " in the first pass: did an input file change while it was being prepared?")
      out.publish(paths)
    return {
        "count": self.rows,
        "labels": {labels[i]: n for i, n in sorted(self.labels.items())},
        "truncated_entities": int(self.truncated_entities),
        "truncated_rows": self.truncated_rows,
        "files": [f"{self.split}/{path.name}" for path in paths],
    }


def prepare(inputs: Sequence[str | pathlib.Path], tokenizer, out_dir: str | pathlib.Path, *, max_seq_len: int = 128,
            on_error: str = "fail", dev_fraction: float = 0.02, seed: int = 0, shards_per_split: int | None = None,
            overwrite: bool = False, progress: bool = True) -> dict:
  """Reads, validates, splits, tokenizes and writes a corpus; returns the manifest (also in `out_dir`).

  Files are grouped by (split, language): the split from the file name (SMiLER names, or a stem ending in
  train/dev/test), the language from a SMiLER file name or else from each row's `lang` column. The label set is
  that of the training files (plus `no_relation`); dev and test rows with another label are bad rows. Without a
  dev file for a language, `dev_fraction` of its training rows (stratified by label) become its dev split.

  Memory does not grow with the corpus: a first pass validates every row and counts labels per language (which
  decides the dev rows and the shard counts), a second reads the files again and streams each language's rows
  through the tokenizer into its shards. Inputs and `out_dir` may be URLs (`gs://bucket/...`); the files written
  there are byte for byte those a local `out_dir` gets.

  Args:
    inputs: TSV files and/or directories of them.
    tokenizer: a tokenizer directory or hub name, or a loaded fast tokenizer (not modified: a copy is used).
    out_dir: the output directory.
    max_seq_len: the longest model input (the tagger's included); longer sentences are truncated.
    on_error: "fail" stops at the first bad row; "skip" leaves bad rows out and lists them in rejects.tsv.
    dev_fraction: share of each language's training rows carved out as dev; 0 disables.
    seed: seeds the dev carving.
    shards_per_split: record files per (split, language); default about one per 50k rows, at least 4.
    overwrite: replace an earlier preparation in `out_dir`.
    progress: show a progress bar on stderr.

  Raises:
    smiler.DataError: a bad file or (with on_error="fail") a bad row; the message names file and line.
    UserError: bad arguments (ArgumentError), no training file or no usable training row (with on_error="skip",
      rejects.tsv is still written), or `out_dir` holds earlier prepared data and `overwrite` is False.
  """
  if on_error not in ("fail", "skip"):
    raise ArgumentError(f"prepare(on_error={on_error!r}) / --on_error: use fail or skip")
  if not 0 <= dev_fraction < 1:
    raise ArgumentError(f"prepare(dev_fraction={dev_fraction}) / --dev_fraction: use a share in [0, 1), e.g. 0.02")
  if shards_per_split is not None and shards_per_split < 1:
    raise ArgumentError(f"prepare(shards_per_split={shards_per_split}) / --shards_per_split: use 1 or more")
  if max_seq_len < 8:
    raise ArgumentError(f"prepare(max_seq_len={max_seq_len}) / --max_seq_len: use at least 8")
  out_dir = storage.path(out_dir)

  files = smiler.expand_inputs(list(inputs))
  by_split: dict[str, list[_InputFile]] = {split: [] for split in SPLITS}
  for path in files:
    split, lang = _file_split_and_lang(path)
    by_split[split].append(_InputFile(path, split, lang))
  if not by_split["train"]:
    raise UserError(f"no training file among {[storage.text(p) for p in files]}: the label set comes from the "
                    "training files; pass at least one *_train.tsv (or train.tsv)")

  # First pass: validate and count. Training files first: their labels are the ones dev and test rows may have.
  rejects = smiler.Rejects()  # in "fail" mode it only counts the rows read
  counts = {split: collections.defaultdict(collections.Counter) for split in SPLITS}
  _survey(by_split["train"], on_error, rejects, None, counts["train"])
  if not counts["train"]:
    # Checked before dev and test are read: their rows would otherwise be blamed for labels the train files lack.
    _clear_outputs(out_dir, overwrite)
    train_files = ", ".join(storage.text(file.path) for file in by_split["train"])
    if len(rejects):
      rejects.write(out_dir / "rejects.tsv")
      raise UserError(f"{train_files}: every one of the {rejects.read} training rows was rejected (see "
                      f"{storage.text(out_dir / 'rejects.tsv')}); fix them and prepare again")
    raise UserError(f"{train_files}: no training rows (header only?); the label set comes from the training files")
  labels = sorted({label for by_label in counts["train"].values() for label in by_label} | {NEGATIVE_LABEL})
  for split in ("dev", "test"):
    _survey(by_split[split], on_error, rejects, labels, counts[split])
  carvers = {}
  if dev_fraction > 0:
    for lang in sorted(counts["train"]):
      if lang not in counts["dev"]:  # a given dev file is used as is
        carvers[lang] = splits.DevCarver(counts["train"][lang], dev_fraction, seed)

  if isinstance(tokenizer, (str, os.PathLike)):
    source = os.fspath(tokenizer)
    tokenizer = tokenize.load_tokenizer(tokenizer)
  else:
    source = tokenizer.name_or_path
    tokenizer = copy.deepcopy(tokenizer)  # relation tokens go into our copy, not the caller's
    tokenize.disable_truncation(tokenizer)
  source_fingerprint = tokenize.tokenizer_fingerprint(tokenizer)
  relation_tokens = tokenize.add_relation_tokens(tokenizer, labels)
  cls_id, sep_id, pad_id = tokenize.special_ids(tokenizer)

  _clear_outputs(out_dir, overwrite)
  out_dir.mkdir(parents=True, exist_ok=True)
  out = _Output(out_dir)
  try:
    tokenize.save_tokenizer(tokenizer, out.local / "tokenizer")
    out.publish([out.local / "tokenizer"])
    split_info = _write_records(by_split, counts, carvers, labels, tokenizer, max_seq_len, shards_per_split, out,
                                progress)
    if on_error == "skip":
      rejects.write(out.local / "rejects.tsv")
      out.publish([out.local / "rejects.tsv"])
  finally:
    out.close()

  written = sum(info["count"] for by_lang in split_info.values() for info in by_lang.values())
  if written + len(rejects) != rejects.read:
    raise AssertionError(f"prepare lost rows: {rejects.read} read, {written} written, {len(rejects)} rejected")
  manifest = {
      "format_version": records.FORMAT_VERSION,
      "labels": labels,
      "negative_label": NEGATIVE_LABEL,
      "relation_tokens": relation_tokens,
      "relation_token_ids": {label: tokenizer.convert_tokens_to_ids(token) for label, token in relation_tokens.items()},
      "tokenizer": {
          "source": source,
          "dir": "tokenizer",
          "fingerprint": tokenize.tokenizer_fingerprint(tokenizer),
          "source_fingerprint": source_fingerprint,
          "vocab_size": len(tokenizer),
          "cls_id": cls_id, "sep_id": sep_id, "pad_id": pad_id,
          "lowercase": tokenize.is_lowercase(tokenizer),
      },
      "max_seq_len": max_seq_len,
      "splits": split_info,
      "rejects": {"count": len(rejects), "file": "rejects.tsv" if on_error == "skip" else None},
      "rows": {"read": rejects.read, "written": written, "rejected": len(rejects)},
      "inputs": [storage.text(p) for p in files],
  }
  # Written last, once every record is in place: a manifest means the data is whole.
  storage.write_atomically(out_dir / records.MANIFEST_NAME, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
  return manifest


def _write_records(by_split: dict[str, list[_InputFile]], counts: dict, carvers: dict[str, splits.DevCarver],
                   labels: list[str], tokenizer, max_seq_len: int, shards_per_split: int | None, out: _Output,
                   progress: bool) -> dict[str, dict[str, dict]]:
  """The second pass: every (split, language)'s rows tokenized into its shards; returns the manifest's `splits`.

  A language's carved dev rows are written from the same read as its training rows, into their own shards."""
  label_ids = {label: i for i, label in enumerate(labels)}
  rows = {split: {lang: sum(by_label.values()) for lang, by_label in counts[split].items()} for split in SPLITS}
  for lang, carver in carvers.items():
    rows["train"][lang] -= carver.dev_rows
    rows["dev"][lang] = carver.dev_rows
  info: dict[str, dict[str, dict]] = {split: {} for split in SPLITS}
  with console.Progress(sum(n for by_lang in rows.values() for n in by_lang.values()), desc="prepare", unit="row",
                        disable=not progress) as bar:
    for split in SPLITS:
      for lang in sorted(counts[split]):
        groups = {split: _Group(out, split, lang, rows[split][lang], shards_per_split)}
        carver = carvers.get(lang) if split == "train" else None
        if carver is not None:
          groups["dev"] = _Group(out, "dev", lang, rows["dev"][lang], shards_per_split)
          routed = ((ex, "dev" if carver.is_dev(ex.label) else "train")
                    for ex in _lang_rows(by_split[split], lang, labels))
        else:
          routed = ((ex, split) for ex in _lang_rows(by_split[split], lang, labels))
        for row, destination in _encoded(routed, tokenizer, max_seq_len, label_ids, bar):
          groups[destination].write(row)
        for group in groups.values():
          info[group.split][lang] = group.finish(out, labels)
  # The manifest lists splits, and languages within each, in a fixed order.
  return {split: dict(sorted(info[split].items())) for split in SPLITS if info[split]}


def check_tokenizer(manifest: dict, tokenizer) -> None:
  """Checks that `tokenizer` is the one the records were made with (as given to `prepare`, or as it saved it).

  Args:
    manifest: from `load_manifest`.
    tokenizer: a loaded fast tokenizer, or its directory / hub name.

  Raises:
    TokenizerMismatchError: another vocabulary, added tokens or normalizer: the record ids would mean other words.
  """
  if isinstance(tokenizer, (str, os.PathLike)):
    tokenizer = tokenize.load_tokenizer(tokenizer)
  info = manifest["tokenizer"]
  fingerprint = tokenize.tokenizer_fingerprint(tokenizer)
  if fingerprint not in (info["fingerprint"], info.get("source_fingerprint")):
    raise TokenizerMismatchError(
        f"the prepared records were made with tokenizer {info['source']!r} (fingerprint {info['fingerprint'][:12]}), "
        f"but the tokenizer in use, {tokenizer.name_or_path!r}, differs (fingerprint {fingerprint[:12]}: another "
        "vocabulary, added tokens or normalizer). Use the prepared data's tokenizer/ directory, or prepare the data "
        "again with this tokenizer into a new directory.")


# A record of tokenizer directories already checked against the prepared data, by a digest of their files: a
# restarted run that finds its directory unchanged skips loading the tokenizer (importing transformers and torch,
# about 3 s). Weight files are left out of the digest: they do not decide the ids, and they are large.
CHECKED_TOKENIZERS = "tokenizers_checked.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".msgpack", ".h5", ".ckpt", ".pt", ".pth", ".onnx", ".ot")


def _tokenizer_files_digest(directory) -> str:
  """sha256 of the directory's files and of the transformers version that builds a tokenizer from them."""
  try:
    version = importlib.metadata.version("transformers")  # read from its metadata: nothing is imported
  except importlib.metadata.PackageNotFoundError:
    version = ""
  digest = hashlib.sha256(f"transformers {version}\0".encode())
  for path in sorted(directory.iterdir(), key=lambda p: p.name):
    if path.is_file() and not path.name.endswith(_WEIGHT_SUFFIXES):
      digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
  return digest.hexdigest()


def check_prepared_tokenizer(data_dir, tokenizer: str | pathlib.Path) -> None:
  """`check_tokenizer` against `data_dir`'s manifest, skipped for a tokenizer directory (local or a URL) whose files
  are byte for byte those of one that passed before (recorded in `data_dir`). Raises TokenizerMismatchError."""
  manifest = load_manifest(data_dir)
  folder = storage.path(tokenizer) if storage.is_url(tokenizer) else pathlib.Path(tokenizer).expanduser()
  if not folder.is_dir():  # a hub name: nothing on disk to compare
    check_tokenizer(manifest, tokenizer)
    return
  record = storage.path(data_dir) / CHECKED_TOKENIZERS
  try:
    checked = json.loads(record.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    checked = {}
  digest = _tokenizer_files_digest(folder)
  if checked.get(digest) == manifest["tokenizer"]["fingerprint"]:
    return
  check_tokenizer(manifest, folder)
  checked[digest] = manifest["tokenizer"]["fingerprint"]
  try:
    storage.write_atomically(record, json.dumps(checked, indent=2))
  except OSError:  # a read-only data directory: the next start checks again
    pass
