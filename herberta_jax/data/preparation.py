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
import hashlib
import importlib.metadata
import itertools
import json
import math
import pathlib
import re
import shutil
from collections.abc import Iterator, Sequence

from herberta_jax import console
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


def _read_split(files: list[tuple[pathlib.Path, str | None]], on_error: str, rejects: smiler.Rejects | None,
                known_labels) -> dict[str, list[Example]]:
  """Reads files into language -> examples (the file name's language wins over the row's `lang` column)."""
  by_lang: dict[str, list[Example]] = collections.defaultdict(list)
  for path, file_lang in files:
    for example in smiler.read_tsv(path, on_error=on_error, rejects=rejects, known_labels=known_labels):
      lang = _language_of(example, file_lang)
      if lang != example.lang:
        example = Example(id=example.id, text=example.text, e1=example.e1, e2=example.e2, label=example.label,
                          lang=lang, source=example.source)
      by_lang[lang].append(example)
  return by_lang


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
    if path.is_dir():
      shutil.rmtree(path)
    else:
      path.unlink()


def _encoded(examples: list[Example], tokenizer, max_seq_len: int, label_ids: dict[str, int],
             stats: dict, progress) -> Iterator[Features]:
  """Streams the features of `examples`, encoding chunk by chunk, and tallies labels and truncation.

  The next chunk is encoded in a worker thread while this one is serialized: the Rust tokenizer releases the
  GIL, so tokenizing and writing overlap. The order is unchanged: chunks come out in submission order.
  """
  chunks = (examples[begin:begin + ENCODE_CHUNK] for begin in range(0, len(examples), ENCODE_CHUNK))
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    pending = collections.deque()
    for chunk in itertools.chain(chunks, [None]):
      if chunk is not None:
        pending.append(pool.submit(tokenize.encode, chunk, tokenizer, max_seq_len, label_ids))
        if len(pending) < 2:
          continue  # keep one chunk encoding ahead
      while pending and (chunk is None or len(pending) >= 2):
        encoded = pending.popleft().result()
        for row in encoded:
          stats["labels"][row.label] += 1
          if row.truncated:
            stats["truncated_rows"] += 1
            stats["truncated_entities"] += (row.spans[0] < 0) + (row.spans[2] < 0)
          yield row
        progress.update(len(encoded))


def prepare(inputs: Sequence[str | pathlib.Path], tokenizer, out_dir: str | pathlib.Path, *, max_seq_len: int = 128,
            on_error: str = "fail", dev_fraction: float = 0.02, seed: int = 0, shards_per_split: int | None = None,
            overwrite: bool = False, progress: bool = True) -> dict:
  """Reads, validates, splits, tokenizes and writes a corpus; returns the manifest (also in `out_dir`).

  Files are grouped by (split, language): the split from the file name (SMiLER names, or a stem ending in
  train/dev/test), the language from a SMiLER file name or else from each row's `lang` column. The label set is
  that of the training files (plus `no_relation`); dev and test rows with another label are bad rows. Without a
  dev file for a language, `dev_fraction` of its training rows (stratified by label) become its dev split.

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
  out_dir = pathlib.Path(out_dir)

  files = smiler.expand_inputs(list(inputs))
  by_split: dict[str, list[tuple[pathlib.Path, str | None]]] = {split: [] for split in SPLITS}
  for path in files:
    split, lang = _file_split_and_lang(path)
    by_split[split].append((path, lang))
  if not by_split["train"]:
    raise UserError(f"no training file among {[str(p) for p in files]}: the label set comes from the training "
                     "files; pass at least one *_train.tsv (or train.tsv)")

  rejects = smiler.Rejects()  # in "fail" mode it only counts the rows read
  examples = {"train": _read_split(by_split["train"], on_error, rejects, None)}
  if not any(examples["train"].values()):
    # Checked before dev and test are read: their rows would otherwise be blamed for labels the train files lack.
    _clear_outputs(out_dir, overwrite)
    train_files = ", ".join(str(p) for p, _ in by_split["train"])
    if len(rejects):
      rejects.write(out_dir / "rejects.tsv")
      raise UserError(f"{train_files}: every one of the {rejects.read} training rows was rejected (see "
                      f"{out_dir / 'rejects.tsv'}); fix them and prepare again")
    raise UserError(f"{train_files}: no training rows (header only?); the label set comes from the training files")
  labels = sorted({ex.label for rows in examples["train"].values() for ex in rows} | {NEGATIVE_LABEL})
  for split in ("dev", "test"):
    examples[split] = _read_split(by_split[split], on_error, rejects, labels)
  if dev_fraction > 0:
    for lang in sorted(examples["train"]):
      if lang not in examples["dev"]:  # a given dev file is used as is
        examples["train"][lang], examples["dev"][lang] = splits.carve_dev(examples["train"][lang], dev_fraction, seed)

  if isinstance(tokenizer, (str, pathlib.Path)):
    source = str(tokenizer)
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
  tokenizer.save_pretrained(str(out_dir / "tokenizer"))

  label_ids = {label: i for i, label in enumerate(labels)}
  total = sum(len(rows) for by_lang in examples.values() for rows in by_lang.values())
  split_info: dict[str, dict] = {}
  with console.Progress(total, desc="prepare", unit="row", disable=not progress) as bar:
    for split in SPLITS:
      for lang in sorted(examples[split]):
        rows = examples[split][lang]
        stats = {"labels": collections.Counter(), "truncated_rows": 0, "truncated_entities": 0}
        paths = records.write_shards(_encoded(rows, tokenizer, max_seq_len, label_ids, stats, bar),
                                     out_dir / split, lang, _num_shards(len(rows), shards_per_split)) if rows else []
        split_info.setdefault(split, {})[lang] = {
            "count": len(rows),
            "labels": {labels[i]: n for i, n in sorted(stats["labels"].items())},
            "truncated_entities": int(stats["truncated_entities"]),
            "truncated_rows": stats["truncated_rows"],
            "files": [p.relative_to(out_dir).as_posix() for p in paths],
        }
        examples[split][lang] = []  # let the examples go as soon as they are written

  if on_error == "skip":
    rejects.write(out_dir / "rejects.tsv")
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
      "inputs": [str(p) for p in files],
  }
  (out_dir / records.MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
  return manifest


def check_tokenizer(manifest: dict, tokenizer) -> None:
  """Checks that `tokenizer` is the one the records were made with (as given to `prepare`, or as it saved it).

  Args:
    manifest: from `load_manifest`.
    tokenizer: a loaded fast tokenizer, or its directory / hub name.

  Raises:
    TokenizerMismatchError: another vocabulary, added tokens or normalizer: the record ids would mean other words.
  """
  if isinstance(tokenizer, (str, pathlib.Path)):
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


def _tokenizer_files_digest(directory: pathlib.Path) -> str:
  """sha256 of the directory's files and of the transformers version that builds a tokenizer from them."""
  try:
    version = importlib.metadata.version("transformers")  # read from its metadata: nothing is imported
  except importlib.metadata.PackageNotFoundError:
    version = ""
  digest = hashlib.sha256(f"transformers {version}\0".encode())
  for path in sorted(directory.iterdir()):
    if path.is_file() and not path.name.endswith(_WEIGHT_SUFFIXES):
      digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
  return digest.hexdigest()


def check_prepared_tokenizer(data_dir: pathlib.Path, tokenizer: str | pathlib.Path) -> None:
  """`check_tokenizer` against `data_dir`'s manifest, skipped for a local tokenizer directory whose files are byte
  for byte those of one that passed before (recorded in `data_dir`). Raises TokenizerMismatchError."""
  manifest = load_manifest(data_dir)
  local = pathlib.Path(tokenizer).expanduser()
  if not local.is_dir():  # a hub name: nothing on disk to compare
    check_tokenizer(manifest, tokenizer)
    return
  record = pathlib.Path(data_dir) / CHECKED_TOKENIZERS
  try:
    checked = json.loads(record.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    checked = {}
  digest = _tokenizer_files_digest(local)
  if checked.get(digest) == manifest["tokenizer"]["fingerprint"]:
    return
  check_tokenizer(manifest, local)
  checked[digest] = manifest["tokenizer"]["fingerprint"]
  try:
    record.write_text(json.dumps(checked, indent=2), encoding="utf-8")
  except OSError:  # a read-only data directory: the next start checks again
    pass
