"""Streams prepared records as fixed-shape numpy batches: shard per host, mix languages, shuffle, bucket, pad.

Memory is bounded by the shuffle buffers, the open files and the bucket queues, whatever the corpus size:

  per language: this host's shard files -> (shuffle files) -> interleave records -> (shuffle buffer) -> (repeat)
  languages mixed by seeded sampling (weights from `languages.mixture_weights` on the manifest counts); an
    exhausted language drops out and the others are renormalised
  chunks of records parsed at once (`records.parse_chunk`: the per-value work vectorised in numpy)
  rows queued by length bucket; a full queue becomes a batch padded to its bucket length

`data_dir` may be a URL (`gs://bucket/run/data`): each process opens only its own shards, and each open remote
file is read in large blocks a background thread fetches ahead (`tfrecord.read_records`).

Plain Python and numpy, no TensorFlow: the per-record steps are cheap generator hops, and everything done per
value (varint decoding, padding) happens a chunk or a batch at a time in numpy. The output order is that of
tf.data's `group_by_window`: a batch leaves as soon as its bucket fills, and a one-pass stream ends with each
bucket's partial batch, in bucket order.

Every random choice comes from numpy generators seeded from `seed` and stable names, so the same seed gives the
same batches, and a resumed run can skip to the batch it stopped at (skipped batches are counted, not assembled).
"""

from __future__ import annotations

import hashlib
import itertools
import pathlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from herberta_jax import storage
from herberta_jax.data import languages as languages_lib
from herberta_jax.data import records, tfrecord

SHUFFLE_BUFFER = 16_384  # records per language: memory stays bounded while a language's shards are mixed well
PARSE_CHUNK = 512  # records parsed at once; does not change the batches, only the speed
_MAX_OPEN_FILES = 16  # shards of one language read at once (interleaved) when shuffling
_RANDOM_BLOCK = 4096  # random draws fetched from numpy at once: one call per draw would dominate
_ROW_KEYS = ("label", "spans", "char_spans", "truncated")
_STRING_KEYS = ("id", "lang", "text")


def _seed(seed: int, *names: str) -> int:
  """A 31-bit seed derived from `seed` and names, stable across runs and Python versions (unlike hash())."""
  digest = hashlib.sha256(":".join([str(seed), *names]).encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class Pipeline:
  """The batches of one split for one process.

  Attributes:
    bucket_lengths: the static padded lengths a batch can have, ascending.
  """

  def __init__(self, data_dir: str | pathlib.Path, split: str, *, batch_size: int,
               languages: Sequence[str] | None = None, mixture: str = "proportional", temperature: float = 1.0,
               shuffle: bool, seed: int = 0, bucket_boundaries: Sequence[int] = (32, 64, 128), repeat: bool,
               process_index: int = 0, process_count: int = 1, shuffle_buffer: int = SHUFFLE_BUFFER):
    """Reads the manifest and checks the arguments; nothing is read until `batches`.

    Args:
      data_dir: a directory written by `herberta_jax.prepare`.
      split: "train", "dev" or "test".
      batch_size: rows per batch of this process.
      languages: the languages to read; None reads every language of the split.
      mixture: "proportional", "uniform" or "temperature" (see `languages.mixture_weights`).
      temperature: for mixture="temperature".
      shuffle: shuffle rows (seeded; a new order every epoch).
      seed: seeds shuffling and language sampling.
      bucket_boundaries: the padded lengths; a row goes to the smallest that holds it; rows longer than the
        largest are padded to `max_seq_len`.
      repeat: loop forever (training) or make one pass (evaluation: every row exactly once; each bucket's last
        batch is filled up to `batch_size` with rows whose `valid` is False).
      process_index: this process's index.
      process_count: the number of processes reading the split.
      shuffle_buffer: records per language held for shuffling.

    Raises:
      FileNotFoundError: no manifest in `data_dir`.
      ValueError: a bad argument, a split without rows, or a language the split does not have.
    """
    self.data_dir = storage.path(data_dir)
    self.manifest = records.load_manifest(self.data_dir)
    by_lang = self.manifest["splits"].get(split, {})
    available = sorted(lang for lang, info in by_lang.items() if info["count"] > 0)
    if not available:
      raise ValueError(f"{self.data_dir}: split {split!r} has no rows (splits with rows: "
                       f"{sorted(s for s, v in self.manifest['splits'].items() if any(i['count'] for i in v.values()))})")
    if languages is None:
      languages = available
    missing = [lang for lang in languages if lang not in available]
    if missing:
      raise ValueError(f"{self.data_dir}: split {split!r} has no rows in {missing}; it has {available}")
    if not languages:
      raise ValueError("Pipeline(languages=[]): name at least one language, or pass None for all")
    if batch_size < 1:
      raise ValueError(f"Pipeline(batch_size={batch_size}): must be at least 1")
    if not 0 <= process_index < process_count:
      raise ValueError(f"Pipeline(process_index={process_index}, process_count={process_count}): need "
                       "0 <= process_index < process_count")
    boundaries = sorted(set(int(b) for b in bucket_boundaries))
    if not boundaries or boundaries[0] < 2:
      raise ValueError(f"Pipeline(bucket_boundaries={tuple(bucket_boundaries)}): give lengths of at least 2 "
                       "([CLS] [SEP])")
    max_seq_len = int(self.manifest["max_seq_len"])
    self.bucket_lengths = boundaries + ([max_seq_len] if max_seq_len > boundaries[-1] else [])
    self._bucket_array = np.asarray(self.bucket_lengths)
    self.split = split
    self.languages = list(dict.fromkeys(languages))
    counts = {lang: int(by_lang[lang]["count"]) for lang in self.languages}
    self.weights = languages_lib.mixture_weights(counts, mixture, temperature)
    self._counts = counts
    self.batch_size = batch_size
    self.shuffle = shuffle
    self.seed = seed
    self.repeat = repeat
    self.process_index = process_index
    self.process_count = process_count
    self.shuffle_buffer = shuffle_buffer
    tok = self.manifest["tokenizer"]
    self._cls_id, self._sep_id, self._pad_id = tok["cls_id"], tok["sep_id"], tok["pad_id"]

  def num_examples(self) -> int:
    """Rows of the split in the chosen languages, over all processes (from the manifest)."""
    return sum(self._counts.values())

  def batches(self, start_batch: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Yields batches from the `start_batch`-th on (exactly those `batches()` yields from there).

    Each batch: input_ids, attention_mask int32 [b, L]; offsets int32 [b, L, 2]; label int32 [b]; spans,
    char_spans int32 [b, 4]; truncated, valid bool [b]; id, lang, text object arrays of str [b]. `b` is always
    `batch_size`; `L` is one of `bucket_lengths`. Rows with `valid` False (one-pass padding only) are
    `[CLS] [SEP]` with label 0, spans and char_spans -1 and empty strings.
    """
    if start_batch < 0:
      raise ValueError(f"batches(start_batch={start_batch}): must be >= 0")
    to_skip = start_batch
    queues: list[list[tuple[dict, int]]] = [[] for _ in self.bucket_lengths]
    for chunk in self._chunks():
      splits = chunk["row_splits"]
      buckets = np.searchsorted(self._bucket_array, splits[1:] - splits[:-1], side="left")
      for row, bucket in enumerate(buckets.tolist()):
        queue = queues[bucket]
        queue.append((chunk, row))
        if len(queue) == self.batch_size:
          queues[bucket] = []
          if to_skip:
            to_skip -= 1  # counted, never assembled: resuming costs reading, not batching
          else:
            yield self._assemble(self.bucket_lengths[bucket], queue)
    if not self.repeat:
      for bucket, queue in enumerate(queues):  # the partial batches, filled with invalid rows
        if queue:
          if to_skip:
            to_skip -= 1
          else:
            yield self._assemble(self.bucket_lengths[bucket], queue)

  def empty_batch(self, length: int) -> dict[str, np.ndarray]:
    """A batch of padded length `length` holding only invalid filler rows: the fields, shapes and dtypes of every
    batch of that length, for compiling a step before the data arrives."""
    return self._assemble(length, [])

  def _assemble(self, length: int, rows: list[tuple[dict, int]]) -> dict[str, np.ndarray]:
    """One batch of `batch_size` rows padded to `length`; missing rows are invalid `[CLS] [SEP]` fillers."""
    size = self.batch_size
    input_ids = np.full((size, length), self._pad_id, np.int32)
    attention_mask = np.zeros((size, length), np.int32)
    offsets = np.zeros((size, length, 2), np.int32)
    batch = {
        "label": np.zeros(size, np.int32), "spans": np.full((size, 4), -1, np.int32),
        "char_spans": np.full((size, 4), -1, np.int32), "truncated": np.zeros(size, bool),
    }
    strings = {key: [""] * size for key in _STRING_KEYS}
    columns = np.arange(length)
    begin = 0
    # A batch's rows come from a few chunks (consecutive rows mostly share one): gather each chunk's rows at once.
    for _, group in itertools.groupby(rows, key=lambda item: id(item[0])):
      group = list(group)
      chunk = group[0][0]
      index = np.fromiter((row for _, row in group), np.int64, len(group))
      end = begin + len(group)
      starts = chunk["row_splits"][index]
      mask = columns[None, :] < (chunk["row_splits"][index + 1] - starts)[:, None]
      gather = np.minimum(starts[:, None] + columns[None, :], max(len(chunk["ids"]) - 1, 0))
      input_ids[begin:end] = np.where(mask, chunk["ids"][gather], self._pad_id)
      offsets[begin:end] = np.where(mask[..., None], chunk["offsets"][gather], 0)
      attention_mask[begin:end] = mask
      for key in _ROW_KEYS:
        batch[key][begin:end] = chunk[key][index]
      for key in _STRING_KEYS:
        values = chunk[key]
        strings[key][begin:end] = [values[row] for row in index.tolist()]
      begin = end
    filler = slice(len(rows), size)
    input_ids[filler, 0], input_ids[filler, 1] = self._cls_id, self._sep_id
    attention_mask[filler, :2] = 1
    valid = np.zeros(size, bool)
    valid[:len(rows)] = True
    batch.update(input_ids=input_ids, attention_mask=attention_mask, offsets=offsets, valid=valid)
    for key, values in strings.items():
      batch[key] = np.empty(size, object)
      batch[key][:] = values
    return batch

  # -- the record stream -----------------------------------------------------------------------------------------

  def _language_records(self, lang: str) -> Iterator[bytes]:
    """Serialized records of one language for this process, epoch after epoch when repeating."""
    files = [self.data_dir / f for f in self.manifest["splits"][self.split][lang]["files"]]
    record_sharding = len(files) < self.process_count
    if not record_sharding:
      files = files[self.process_index::self.process_count]
    file_rng = np.random.default_rng(_seed(self.seed, "files", lang))
    row_rng = np.random.default_rng(_seed(self.seed, "rows", lang))
    while True:
      order = files
      if self.shuffle and not record_sharding:
        order = [files[i] for i in file_rng.permutation(len(files))]  # a new file order every epoch
      if self.shuffle and len(order) > 1:
        stream = _interleave(order, min(len(order), _MAX_OPEN_FILES))
      else:
        stream = itertools.chain.from_iterable(map(tfrecord.read_records, order))  # one file after another
      if record_sharding:
        # Fewer files than processes (a small language): every process reads them all and keeps every
        # process_count-th record. Still disjoint and covering, at the cost of reading the language fully.
        stream = itertools.islice(stream, self.process_index, None, self.process_count)
      if self.shuffle:
        stream = _shuffle(stream, self.shuffle_buffer, row_rng)  # inside the epoch: each epoch holds every row
      count = 0
      for count, record in enumerate(stream, 1):  # noqa: B007  (count is read after the loop)
        yield record
      if not self.repeat or not count:
        return  # one pass, or nothing for this process: repeating an empty stream would spin forever

  def _mixed_records(self) -> Iterator[bytes]:
    langs = [lang for lang in self.languages if self.weights[lang] > 0]
    streams = [self._language_records(lang) for lang in langs]
    if len(streams) == 1:
      return streams[0]
    if not self.repeat and not self.shuffle:
      return itertools.chain.from_iterable(streams)  # evaluation: languages one after another, every row once
    return _sample(streams, np.array([self.weights[lang] for lang in langs], np.float64),
                   np.random.default_rng(_seed(self.seed, "mixture")))

  def _chunks(self) -> Iterator[dict]:
    """Parsed chunks of up to PARSE_CHUNK consecutive records of the mixed stream."""
    stream = self._mixed_records()
    while True:
      chunk = list(itertools.islice(stream, PARSE_CHUNK))
      if not chunk:
        return
      yield records.parse_chunk(chunk)


def _interleave(paths: Sequence[pathlib.Path], cycle_length: int) -> Iterator[bytes]:
  """One record from each of `cycle_length` open files in turn; a finished file's place goes to the next file."""
  pending = iter(paths)
  open_files = [tfrecord.read_records(path) for path in itertools.islice(pending, cycle_length)]
  while open_files:
    slot = 0
    while slot < len(open_files):
      try:
        yield next(open_files[slot])
        slot += 1
      except StopIteration:
        following = next(pending, None)
        if following is None:
          del open_files[slot]
        else:
          open_files[slot] = tfrecord.read_records(following)


def _shuffle(stream: Iterable[bytes], size: int, rng: np.random.Generator) -> Iterator[bytes]:
  """A shuffle buffer of `size` records: each new record takes the place of a random one, which leaves."""
  stream = iter(stream)
  buffer = list(itertools.islice(stream, size))
  draws: list[int] = []
  for record in stream:
    if not draws:
      draws = rng.integers(0, len(buffer), _RANDOM_BLOCK).tolist()
    slot = draws.pop()
    yield buffer[slot]
    buffer[slot] = record
  for slot in rng.permutation(len(buffer)).tolist():
    yield buffer[slot]


def _sample(streams: list[Iterator[bytes]], weights: np.ndarray, rng: np.random.Generator) -> Iterator[bytes]:
  """Records drawn from `streams` at random by `weights`; an exhausted stream drops out, the rest renormalised."""
  active = list(range(len(streams)))
  while active:
    p = weights[active] / weights[active].sum()
    for choice in rng.choice(len(active), _RANDOM_BLOCK, p=p).tolist():
      try:
        yield next(streams[active[choice]])
      except StopIteration:
        del active[choice]
        break  # draw again over the remaining streams
