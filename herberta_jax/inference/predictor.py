"""Raw sentences in, triples out, in input order: `Predictor` streams sentences through the two-stage function on
all local devices in bounded memory.

The pipeline, each part overlapping the next: a background thread tokenizes ahead (bounded queue); sentences are
taken a window at a time (a quarter batch, then `window_batches` batches each), sorted by length inside it so batches
carry little padding, cut into static-shape batches (lengths rounded up to the next of `length_grid`'s lengths, a
part-full batch cut to fewer rows) sharded over the devices; batch i+1 is dispatched before batch i is fetched
and decoded; a window's results are yielded in input order as soon as all its batches are back. Parameters are
placed on the devices once, replicated. Memory is bounded by two windows, whatever the input's length.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from herberta_jax import storage
from herberta_jax.data import tokenize
from herberta_jax.errors import ArgumentError, UserError, UserFileNotFoundError
from herberta_jax.hub import format as export_format
from herberta_jax.hub import herberta_schema
from herberta_jax.inference.two_stage import decode_row, make_two_stage_fn
from herberta_jax.model import hf
from herberta_jax.model import inputs as model_inputs
from herberta_jax.model.heads import EntityTagger, RelationClassifier

_QUEUE_CHUNKS = 8  # tokenized chunks (of one batch each) the background thread may run ahead
EMPTY_SENTENCE = "empty sentence"  # the error of a row with no token: blank, or only zero-width/control characters


def untokenizable(error: BaseException) -> str:
  """The error object's text for a sentence the tokenizer raised on (e.g. a lone surrogate such as "\\ud800")."""
  detail = " ".join(str(error).split()) or type(error).__name__
  return (f"the tokenizer cannot read this sentence ({type(error).__name__}: {detail}); check it for lone "
          "surrogates or other text that is not valid Unicode")


def length_grid(max_tokens: int, per_doubling: int) -> list[int]:
  """The padded batch lengths up to `max_tokens`: `per_doubling` evenly spaced lengths in each doubling, every
  length where that step would be under one token (8: 1, 2, ..., 16, 18, ..., 32, 36, ..., 64, 72, ...).

  A batch is padded by less than one step, at most 1/`per_doubling` of its length: short sentences get fine steps,
  long ones coarse steps, and the number of lengths (programs to compile) grows with the logarithm of `max_tokens`.
  """
  lengths, length = [], 1
  while length < max_tokens:
    lengths.append(length)
    length += max(1, (1 << (length.bit_length() - 1)) // per_doubling)
  return lengths + [max_tokens]


@dataclasses.dataclass
class Encoded:
  """A raw sentence tokenized for the relation classifier, or the reason it cannot be.

  `truncated_at`: for a sentence longer than the model reads, the character offset where its reading stopped.
  """

  index: int
  text: str
  input_ids: list[int] | None = None
  offsets: list[tuple[int, int]] | None = None
  error: str | None = None
  truncated_at: int | None = None


@dataclasses.dataclass
class LoadedExport:
  """What `load_export` reads: the export's directory, (module, params) of each stage, its metadata, tokenizer."""

  directory: storage.Path  # as given: a local path or a URL
  relation: tuple
  tagger: tuple
  meta: dict
  tokenizer: object


def load_export(directory) -> LoadedExport:
  """Reads an export directory (or a training workdir holding `export/`), local or a `gs://` URL, into host memory,
  checked against the export schema (`hub/herberta_schema.py`) before use.

  Raises a UserError naming the file (and field) for a missing, corrupt or inconsistent export."""
  directory, meta = export_format.read_meta(directory)
  with storage.local_folder(directory) as local:  # a URL is read from a local copy, deleted once loaded
    rel_config, rel_params, id2label = _read_stage(hf.load_relation_model, local / "relation", directory)
    tag_config, tag_params = _read_stage(hf.load_tagger_model, local / "tagger", directory)
    _check_against_models(meta, directory, id2label, rel_params, tag_config)
    tokenizer = _read_tokenizer(local / "tagger", directory)
  relation = (RelationClassifier(rel_config, num_labels=len(meta["labels"])), rel_params)
  tagger = (EntityTagger(tag_config), tag_params)
  return LoadedExport(directory, relation, tagger, meta, tokenizer)


def _read_stage(reader, local, directory):
  """One stage's checkpoint; a missing file is named as the user gave the export (a URL rather than its copy)."""
  try:
    return reader(local)
  except FileNotFoundError as error:
    if isinstance(error, UserError):
      raise
    raise UserFileNotFoundError(f"{storage.text(directory / local.name)}: {_one_line(error)}; the export is "
                                "incomplete, re-export the run (python -m herberta_jax.export)") from error


def _check_against_models(meta: dict, directory, id2label: dict, rel_params, tag_config) -> None:
  try:
    herberta_schema.check_against_models(
        meta, storage.text(directory / "herberta.json"), id2label=id2label,
        id2label_source=storage.text(directory / "relation" / "config.json"),
        head_outputs=int(np.shape(rel_params["classifier"]["bias"])[0]), vocab_size=tag_config.vocab_size,
        max_positions=tag_config.max_position_embeddings,
        tagger_source=storage.text(directory / "tagger" / "config.json"))
  except herberta_schema.ExportError as error:
    raise export_format.InvalidExportError(str(error)) from error


def _read_tokenizer(local, directory):
  """The tagger's tokenizer (the relation tokens are in its vocabulary); an unreadable one is a one-line error."""
  try:
    return tokenize.load_tokenizer(local)
  except Exception as error:  # tokenizers raises its own Exception type for a corrupt tokenizer.json
    raise export_format.InvalidExportError(
        f"{storage.text(directory / 'tagger' / 'tokenizer.json')}: cannot be read as a tokenizer "
        f"({type(error).__name__}: {_one_line(error)}); re-export the run (python -m herberta_jax.export)") from error


def _one_line(error: BaseException) -> str:
  """An error's message on one line (a library's may span several)."""
  return " ".join(str(error).split()) or type(error).__name__


class Predictor:
  """Both trained stages behind one call: sentences in, triples out."""

  def __init__(self, relation, tagger, meta: dict, tokenizer, *, batch_size: int = 64, top_k: int | None = None,
               top_m: int | None = None, max_span_len: int | None = None, disjoint_entities: bool | None = None,
               ordered_entities: bool | None = None, devices: Sequence[jax.Device] | None = None,
               dtype: str | None = None, lengths_per_doubling: int = 8, window_batches: int = 64,
               sub_batches: int | None = None, kernels: str | Sequence[str] = ()):
    """Decoding settings left as None take the run's own (`meta["decoding"]`, written by the export).

    `batch_size` is the global batch, split over `devices` (default: all local devices), so it must divide by
    their number. `dtype` sets the compute dtype (e.g. "bfloat16"; parameters stay float32). `sub_batches`: how
    many independent sub-batches each batch is computed as (`make_two_stage_fn`); default 2 on CPUs, 1 elsewhere.
    `kernels`: fused kernels for the encoders ("all" or names from `herberta_jax.model.kernels.NAMES`).
    """
    self.devices = list(devices or jax.local_devices())
    if lengths_per_doubling < 1:
      raise ArgumentError(f"--lengths_per_doubling={lengths_per_doubling}: must be at least 1 (padded batch lengths "
                          f"per doubling of the length)")
    if sub_batches is not None and sub_batches < 1:
      raise ArgumentError(f"sub_batches={sub_batches}: must be at least 1 (independent sub-batches per batch)")
    if batch_size < 1 or batch_size % len(self.devices):
      raise ArgumentError(f"--batch_size={batch_size}: must be a positive multiple of the {len(self.devices)} local "
                          f"devices (it is split evenly over them)")
    (relation_module, relation_params), (tagger_module, tagger_params) = relation, tagger
    changes = {**({"dtype": dtype} if dtype else {}), **({"kernels": kernels} if kernels else {})}
    if changes:
      relation_module = relation_module.clone(config=dataclasses.replace(relation_module.config, **changes))
      tagger_module = tagger_module.clone(config=dataclasses.replace(tagger_module.config, **changes))
    self.relation_module, self.tagger_module = relation_module, tagger_module
    mesh = Mesh(np.array(self.devices), ("batch",))
    self.batch_sharding = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    self.relation_params = jax.device_put(relation_params, replicated)
    self.tagger_params = jax.device_put(tagger_params, replicated)
    self.meta = meta
    self.labels = meta["labels"]
    self.tokenizer = tokenizer
    self.batch_size = batch_size
    # Sorting 64 batches' worth of sentences fills ~91% of the SemEval batches with real tokens (32: 88%, 16: 81%).
    self.window_batches = window_batches
    # A window's last, part-full batch is cut to a multiple of this many rows (divisible by the devices) instead of
    # being padded with whole rows: at most four row counts per length.
    self.row_step = -(-max(batch_size // 4, 1) // len(self.devices)) * len(self.devices)
    self.max_seq_len = meta["max_seq_len"]
    self.max_tokens = tokenize.relation_input_limit(self.max_seq_len)
    # Inference buckets finer than the run's: every distinct shape compiles once, but sorted windows make each
    # batch's rows about the same length, so a fine grid saves far more padding than its compiles cost.
    self.boundaries = length_grid(self.max_tokens, lengths_per_doubling)
    table = [meta["relation_token_ids"][label] for label in self.labels]
    build = model_inputs.TaggerInputs(table, cls_id=meta["cls_id"], sep_id=meta["sep_id"], pad_id=meta["pad_id"],
                                      two_segments=meta["two_segments"])
    decoding = export_format.run_decoding(meta)
    self.top_k = min(decoding["top_k"] if top_k is None else top_k, len(self.labels))
    top_m = decoding["top_m"] if top_m is None else top_m
    self.max_span_len = decoding["max_span_len"] if max_span_len is None else max_span_len
    if self.max_span_len < 1:
      raise ArgumentError(f"--max_span_len={self.max_span_len}: must be at least 1 (the longest entity, in tokens)")
    self.disjoint_entities = decoding["disjoint_entities"] if disjoint_entities is None else disjoint_entities
    self.ordered_entities = decoding["ordered_entities"] if ordered_entities is None else ordered_entities
    if sub_batches is None:
      sub_batches = 2 if self.devices[0].platform == "cpu" else 1
    self.fn = make_two_stage_fn(self.relation_module, self.tagger_module, build, top_k=self.top_k, top_m=top_m,
                                max_span_len=self.max_span_len, disjoint=self.disjoint_entities,
                                ordered=self.ordered_entities, mesh=mesh, sub_batches=sub_batches)
    self.real_tokens = self.padded_tokens = 0  # relation-input tokens of the batches run so far
    self.batch_shapes: Counter = Counter()  # batches run so far, by shape: (rows, padded length)

  @classmethod
  def from_export(cls, directory, **kwargs) -> Predictor:
    """Loads an export directory (or a training workdir holding `export/`)."""
    loaded = load_export(directory)
    return cls(loaded.relation, loaded.tagger, loaded.meta, loaded.tokenizer, **kwargs)

  @property
  def real_token_share(self) -> float:
    """Real tokens / padded tokens of the batches run so far (padding rows of part-full batches included)."""
    return self.real_tokens / max(self.padded_tokens, 1)

  def encode(self, texts: Sequence[str]) -> list[Encoded]:
    """Tokenizes sentences as `prepare` does: [CLS] sentence [SEP], cut to `tokenize.relation_input_limit`."""
    encoded = [Encoded(i, t) for i, t in enumerate(texts)]
    self._tokenize(encoded)
    return encoded

  def _tokenize(self, encoded: list[Encoded]) -> None:
    """Tokenizes the rows without an error in place; a row the tokenizer cannot read, or that holds no token at
    all (only zero-width or control characters), gets its own error instead, never failing the others."""
    usable = [e for e in encoded if not e.error]
    for e in usable:
      if not e.text.strip():
        e.error = EMPTY_SENTENCE
    usable = [e for e in usable if not e.error]
    if not usable:
      return
    for e, encoding in zip(usable, self._encodings(usable)):
      if isinstance(encoding, Exception):
        e.error = untokenizable(encoding)
      elif all(encoding.special_tokens_mask):
        e.error = EMPTY_SENTENCE
      else:
        self._keep_encoding(e, encoding)

  def _encodings(self, rows: list[Encoded]) -> list:
    """The tokenizer's encoding of each row, or the exception it raised for that row alone.

    Untruncated, so a cut sentence is known and marked; the cut itself is the tokenizer's truncation. The Rust
    tokenizer is called directly: transformers' wrapper around it more than doubles the cost of a batch. One
    call for the batch; only when it fails (a lone surrogate is a TypeError) is each row tokenized on its own.
    """
    backend = self.tokenizer.backend_tokenizer
    try:
      return backend.encode_batch([e.text for e in rows], add_special_tokens=True)
    except Exception:  # noqa: BLE001 - whatever the tokenizer raises, the rows at fault are found one by one
      pass
    encodings = []
    for e in rows:
      try:
        encodings.append(backend.encode(e.text, add_special_tokens=True))
      except Exception as error:  # noqa: BLE001 - becomes this row's error object
        encodings.append(error)
    return encodings

  def _keep_encoding(self, e: Encoded, encoding) -> None:
    ids, offsets = encoding.ids, encoding.offsets
    if len(ids) > self.max_tokens:
      keep = self.max_tokens - 1
      ids, offsets = ids[:keep] + ids[-1:], offsets[:keep] + offsets[-1:]
      e.truncated_at = int(offsets[keep - 1][1])
    e.input_ids, e.offsets = ids, [tuple(o) for o in offsets]

  def encode_stream(self, sentences: Iterable[tuple[str | None, str | None]]) -> Iterator[Encoded]:
    """(text, error) pairs -> `Encoded`, tokenized a batch at a time on a background thread that runs a bounded
    distance ahead; reading `sentences` happens on that thread too."""
    chunks: queue.Queue = queue.Queue(maxsize=_QUEUE_CHUNKS)
    stop = threading.Event()

    def put(item) -> bool:
      while not stop.is_set():
        try:
          chunks.put(item, timeout=0.1)
          return True
        except queue.Full:
          continue
      return False

    def work():
      try:
        chunk: list[Encoded] = []
        for index, (text, error) in enumerate(sentences):
          chunk.append(Encoded(index, text or "", error=error))
          if len(chunk) == self.batch_size:
            self._tokenize(chunk)
            if not put(chunk):
              return
            chunk = []
        self._tokenize(chunk)
        put(chunk)
        put(None)
      except BaseException as e:  # handed to the consumer, which raises it
        put(e)

    thread = threading.Thread(target=work, name="tokenize", daemon=True)
    thread.start()
    try:
      while (chunk := chunks.get()) is not None:
        if isinstance(chunk, BaseException):
          raise chunk
        yield from chunk
    finally:
      stop.set()

  def run(self, encoded: Iterable[Encoded], *, start_row: int = 0) -> Iterator[tuple[Encoded, dict]]:
    """(sentence, prediction) in input order; a rejected sentence's prediction is `{"error": ...}`.

    `start_row`: the stream starts at this row of a longer input, on a window boundary (a resumed `predict`), so
    its windows, and thus its batches and scores, are the ones an uninterrupted run would have had.
    """
    waiting: deque = deque()  # windows not yet yielded: [sentences, results, batches outstanding]
    in_flight = None
    for window in self._windows(encoded, start_row):
      state = [window, {}, 0]
      waiting.append(state)
      for rows, length in self._batches(window):
        state[2] += 1
        launched = (state, rows, length, self._dispatch(rows, length))
        if in_flight:
          self._collect(*in_flight)  # batch i is decoded while batch i + 1 runs
        in_flight = launched
        yield from self._ready(waiting)
      yield from self._ready(waiting)
    if in_flight:
      self._collect(*in_flight)
    yield from self._ready(waiting)

  def window_sizes(self) -> Iterator[int]:
    """Rows per sort window, in order: `row_step` rows (a quarter batch), then `window_batches` batches each.

    The first window is one small batch so the first lines come out after one compiled shape rather than a full
    window's worth (about a dozen). A quarter batch rather than a whole one: unsorted, it is padded to its longest
    sentence, and 16 rows of that cost a file the size of SemEval's test set 0.7% of its tokens where 64 rows cost
    4.5%. The later windows are long, since longer windows sort into fuller batches. `sources.open_output`
    resumes on the same boundaries.
    """
    yield self.row_step
    while True:
      yield self.batch_size * self.window_batches

  def _windows(self, encoded: Iterable[Encoded], start_row: int) -> Iterator[list[Encoded]]:
    sizes = self.window_sizes()
    size = next(sizes)
    while start_row > 0:
      if start_row < size:
        raise ValueError(f"start_row {start_row} is not on a window boundary")
      start_row -= size
      size = next(sizes)
    window = []
    for e in encoded:
      window.append(e)
      if len(window) == size:
        yield window
        window, size = [], next(sizes)
    if window:
      yield window

  def _bucket(self, length: int) -> int:
    return next(b for b in self.boundaries if length <= b)

  def _batches(self, window: list[Encoded]) -> Iterator[tuple[list[Encoded], int]]:
    """Batches of similar length: the window's sentences sorted by length, cut every `batch_size`."""
    usable = sorted((e for e in window if not e.error), key=lambda e: len(e.input_ids))
    for start in range(0, len(usable), self.batch_size):
      rows = usable[start:start + self.batch_size]
      yield rows, self._bucket(len(rows[-1].input_ids))

  def planned_batches(self, encoded: Iterable[Encoded]) -> Iterator[tuple[list[Encoded], int]]:
    """The batches `run` computes for `encoded`, in order: (sentences, padded length)."""
    for window in self._windows(encoded, 0):
      yield from self._batches(window)

  def place(self, rows: list[Encoded], length: int) -> tuple[jax.Array, jax.Array]:
    """(input_ids, attention_mask) of a batch as the jitted function receives it: `length` columns, the rows cut
    to a multiple of `row_step`, sharded over the devices."""
    batch = min(-(-len(rows) // self.row_step) * self.row_step, self.batch_size)
    ids = np.full((batch, length), self.meta["pad_id"], np.int32)
    mask = np.zeros((batch, length), np.int32)
    for i, e in enumerate(rows):
      ids[i, :len(e.input_ids)] = e.input_ids
      mask[i, :len(e.input_ids)] = 1
    mask[len(rows):, :2] = 1  # padding rows: a harmless [PAD] [PAD] sentence, discarded after the call
    return jax.device_put((ids, mask), self.batch_sharding)

  def count(self, rows: list[Encoded], ids: jax.Array) -> None:
    """Adds a placed batch (`place`) to `real_tokens`, `padded_tokens` and `batch_shapes`."""
    self.real_tokens += sum(len(e.input_ids) for e in rows)
    self.padded_tokens += ids.size
    self.batch_shapes[ids.shape] += 1

  def _dispatch(self, rows: list[Encoded], length: int):
    ids, mask = self.place(rows, length)
    self.count(rows, ids)
    return self.fn(self.relation_params, self.tagger_params, ids, mask)  # asynchronous: returns at once

  def _collect(self, state: list, rows: list[Encoded], length: int, outputs) -> None:
    outputs = jax.device_get(outputs)
    for i, e in enumerate(rows):
      offsets = np.zeros((length, 2), np.int64)
      offsets[:len(e.offsets)] = e.offsets
      state[1][e.index] = self._decode(outputs, i, offsets, e.text)
    state[2] -= 1

  def _decode(self, outputs, row: int, offsets: np.ndarray, text: str) -> dict:
    """`decode_row`, with whatever it raises for this row as the row's error rather than its batch's."""
    try:
      return decode_row(outputs, row, offsets, text, self.labels)
    except Exception as error:  # noqa: BLE001 - one row's failure is that row's error object
      return {"error": f"cannot decode this sentence's prediction ({type(error).__name__}: {error})"}

  @staticmethod
  def _ready(waiting: deque) -> Iterator[tuple[Encoded, dict]]:
    while waiting and waiting[0][2] == 0:
      window, results, _ = waiting.popleft()
      for e in window:
        yield e, ({"error": e.error} if e.error else results[e.index])
