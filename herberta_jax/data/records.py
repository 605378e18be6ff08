"""The on-disk form of prepared data: `Features` as `tf.train.Example` TFRecords, and the manifest beside them.

One record per sentence, with the fields of `Features`: id, lang, text (bytes); label (int64); input_ids (int64
list); offsets (int64 list, 2 per token, flattened); spans and char_spans (4 int64 each); truncated (int64 0/1).

Files are read and written without TensorFlow, byte-compatible with `tf.io.TFRecordWriter` and
`tf.train.Example`, so tf.data can still read them (and we read TF-written ones): the framing is
`data/tfrecord.py`; the Example proto is declared below on protobuf's runtime descriptors (protobuf comes with
tensorboard), in a private pool so it never clashes with TensorFlow's own `tensorflow.Example` when both load.
"""

from __future__ import annotations

import functools
import itertools
import json
import pathlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from herberta_jax import storage
from herberta_jax.data.example import Features
from herberta_jax.data.tfrecord import RecordWriter, read_records

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

_INT_KEYS = ("label", "input_ids", "offsets", "spans", "char_spans", "truncated")
_BYTES_KEYS = ("id", "lang", "text")
_KEY_INDEX = {key.encode(): i for i, key in enumerate(_BYTES_KEYS + _INT_KEYS)}  # bytes features first


# -- tf.train.Example, without TensorFlow --------------------------------------------------------------------------

_PACKAGE = "herberta_jax.tfexample"  # not "tensorflow": package names are not on the wire, and this one never clashes


def _message(file, name: str, fields: Sequence[tuple], map_entry: bool = False, parent=None):
  """Adds a message to a FileDescriptorProto; fields are (name, number, type, label, type_name, packed, oneof)."""
  from google.protobuf import descriptor_pb2
  field_proto = descriptor_pb2.FieldDescriptorProto
  message = (parent.nested_type if parent is not None else file.message_type).add(name=name)
  if map_entry:
    message.options.map_entry = True
  for field_name, number, kind, label, type_name, packed, oneof in fields:
    field = message.field.add(name=field_name, number=number, type=getattr(field_proto, f"TYPE_{kind}"),
                              label=getattr(field_proto, f"LABEL_{label}"))
    if type_name:
      field.type_name = f".{_PACKAGE}.{type_name}"
    if packed:
      field.options.packed = True
    if oneof is not None:
      if not message.oneof_decl:
        message.oneof_decl.add(name="kind")
      field.oneof_index = 0
  return message


@functools.cache
def _classes() -> dict:
  """The message classes: `Example` (tensorflow/core/example/example.proto, field for field) and `RawExample`.

  `RawExample` is a read-only view of the same bytes, for speed: the feature map is declared as the repeated
  length-delimited entries it is on the wire, so one parse hands over each entry's undecoded bytes and
  `parse_chunk` decodes a whole chunk's entries in numpy, with no Python object per feature or value.
  """
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
  file = descriptor_pb2.FileDescriptorProto(name="herberta_jax/tfexample.proto", package=_PACKAGE, syntax="proto3")
  #           name            number  type       label       type_name             packed oneof
  _message(file, "BytesList", [("value", 1, "BYTES", "REPEATED", None, False, None)])
  _message(file, "FloatList", [("value", 1, "FLOAT", "REPEATED", None, True, None)])
  _message(file, "Int64List", [("value", 1, "INT64", "REPEATED", None, True, None)])
  _message(file, "Feature", [("bytes_list", 1, "MESSAGE", "OPTIONAL", "BytesList", False, 0),
                             ("float_list", 2, "MESSAGE", "OPTIONAL", "FloatList", False, 0),
                             ("int64_list", 3, "MESSAGE", "OPTIONAL", "Int64List", False, 0)])
  features = _message(file, "Features", [("feature", 1, "MESSAGE", "REPEATED", "Features.FeatureEntry", False,
                                          None)])
  _message(file, "FeatureEntry", [("key", 1, "STRING", "OPTIONAL", None, False, None),
                                  ("value", 2, "MESSAGE", "OPTIONAL", "Feature", False, None)],
           map_entry=True, parent=features)
  _message(file, "Example", [("features", 1, "MESSAGE", "OPTIONAL", "Features", False, None)])

  _message(file, "RawFeatures", [("feature", 1, "BYTES", "REPEATED", None, False, None)])  # map entries, raw
  _message(file, "RawExample", [("features", 1, "MESSAGE", "OPTIONAL", "RawFeatures", False, None)])
  pool = descriptor_pool.DescriptorPool()
  pool.Add(file)
  return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
          for name in ("Example", "RawExample")}


def example_class():
  """The `tf.train.Example` message class (same wire format; built without TensorFlow)."""
  return _classes()["Example"]


def serialize(features: Features) -> bytes:
  """One `Features` as a serialized `tf.train.Example` (map keys sorted, so the bytes are reproducible)."""
  example = example_class()()
  # Filling the message in place is ~30% faster than building Feature objects and copying them into the map.
  feature = example.features.feature
  feature["id"].bytes_list.value.append(features.id.encode("utf-8"))
  feature["lang"].bytes_list.value.append(features.lang.encode("utf-8"))
  feature["text"].bytes_list.value.append(features.text.encode("utf-8"))
  feature["label"].int64_list.value.append(features.label)
  feature["input_ids"].int64_list.value.extend(features.input_ids)
  feature["offsets"].int64_list.value.extend(itertools.chain.from_iterable(features.offsets))
  feature["spans"].int64_list.value.extend(features.spans)
  feature["char_spans"].int64_list.value.extend(features.char_spans)
  feature["truncated"].int64_list.value.append(int(features.truncated))
  return example.SerializeToString(deterministic=True)


def shard_names(prefix: str, num_shards: int) -> list[str]:
  """File names of a sharded set: `{prefix}-00000-of-00004.tfrecord`, ..."""
  return [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def write_shards(features: Iterable[Features], out_dir: str | pathlib.Path, prefix: str,
                 num_shards: int) -> list[pathlib.Path]:
  """Writes `features` round-robin into `num_shards` TFRecord files (row i goes to shard i % num_shards).

  Round-robin keeps the shards equal in size and alike in content, so any subset of shards a host reads is a
  fair sample. The features are streamed: memory does not grow with their number.

  Returns:
    The shard paths, in shard order.
  """
  with ShardWriter(out_dir, prefix, num_shards) as writer:
    for row in features:
      writer.write(row)
  return writer.paths


class ShardWriter:
  """`write_shards` one row at a time: `write(features)` sends row i to shard i % num_shards; `close()`.

  `out_dir` may be a URL. `rows` counts the rows written; `paths` are the shard files, in shard order.
  """

  def __init__(self, out_dir: str | pathlib.Path, prefix: str, num_shards: int):
    if num_shards < 1:
      raise ValueError(f"write_shards(num_shards={num_shards}): need at least one shard")
    out_dir = storage.path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    self.paths = [out_dir / name for name in shard_names(prefix, num_shards)]
    self._writers: list[RecordWriter] = []
    try:
      for path in self.paths:
        self._writers.append(RecordWriter(path))
    except BaseException:
      self.close()
      raise
    self.rows = 0

  def write(self, features: Features) -> None:
    self._writers[self.rows % len(self._writers)].write(serialize(features))
    self.rows += 1

  def close(self) -> None:
    for writer in self._writers:
      writer.close()

  def __enter__(self) -> ShardWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# -- parsing -----------------------------------------------------------------------------------------------------

def decode_varints(buffer: bytes) -> np.ndarray:
  """The int64 values of concatenated protobuf varints (two's complement, so -1 is its 10-byte form), vectorised.

  Raises:
    ValueError: the buffer ends inside a varint.
  """
  data = np.frombuffer(buffer, np.uint8)
  if not data.size:
    return np.zeros(0, np.int64)
  last = data < 0x80
  if not last[-1]:
    raise ValueError("packed varints end mid-value")
  ends = np.flatnonzero(last)
  starts = np.empty_like(ends)
  starts[0] = 0
  starts[1:] = ends[:-1] + 1
  position = np.arange(data.size) - np.repeat(starts, ends - starts + 1)  # byte index within its varint
  pieces = (data & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
  return np.bitwise_or.reduceat(pieces, starts).view(np.int64)  # the 7-bit pieces never overlap: OR is the sum


def _slow_fields(serialized: bytes) -> dict:
  """One record's fields through the full Example class: for encodings the raw view does not cover."""
  feature = example_class().FromString(serialized).features.feature
  out = {key: feature[key].bytes_list.value[-1] if feature[key].bytes_list.value else b"" for key in _BYTES_KEYS}
  out.update({key: list(feature[key].int64_list.value) for key in _INT_KEYS})
  return out


def _varint_ends(data: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The values and end positions of the varints starting at positions `at` of `data` (lengths up to 5 bytes)."""
  value = np.zeros(at.shape, np.int64)
  end = at.copy()
  going = np.ones(at.shape, bool)
  for shift in range(0, 35, 7):
    byte = data[np.minimum(end, data.size - 1)].astype(np.int64)
    value |= np.where(going, (byte & 0x7F) << shift, 0)
    end += going
    going &= byte >= 0x80
    if not going.any():
      return value, end
  raise ValueError("a length beyond 5 varint bytes")


def _key_index(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Which of our features each map entry holds (index into _BYTES_KEYS + _INT_KEYS), -1 for others."""
  index = np.full(starts.shape, -1, np.int64)
  key_length = data[starts + 1].astype(np.int64)
  for k, key in enumerate(_KEY_INDEX):
    candidates = np.flatnonzero((key_length == len(key)) & (lengths >= len(key) + 2))
    if candidates.size:
      stored = data[starts[candidates, None] + 2 + np.arange(len(key))]
      index[candidates[(stored == np.frombuffer(key, np.uint8)).all(axis=1)]] = k
  return index


def parse_chunk(serialized: Sequence[bytes]) -> dict:
  """Parses records at once, the per-feature and per-value work vectorised in numpy over the whole chunk.

  Returns:
    A dict over the n records: id, lang, text (lists of str); label (int32 [n]); spans, char_spans (int32
    [n, 4]); truncated (bool [n]); the token sequences flattened: ids (int32 [total]), offsets (int32
    [total, 2]) and row_splits (int64 [n + 1]; row i is ids[row_splits[i]:row_splits[i + 1]]).

  Raises:
    ValueError: a record lacks a field or has the wrong number of values.
  """
  raw_example = _classes()["RawExample"]
  n = len(serialized)
  entries: list[bytes] = []
  per_record = []
  for record in serialized:
    features = raw_example.FromString(record).features.feature
    entries.extend(features)
    per_record.append(len(features))
  # Each entry is a map entry: 0x0a keylen key, 0x12 varint Feature; the Feature is a tag (0x0a bytes_list,
  # 0x1a int64_list) and varint length, then the list: 0x0a varint payload, where the payload is the one bytes
  # value or the packed int64 varints. Keys are short (one length byte); everything else is located in numpy.
  blob = b"".join(entries)
  data = np.frombuffer(blob + b"\0" * 16, np.uint8)  # the padding keeps look-ups past a short entry in bounds
  lengths = np.fromiter(map(len, entries), np.int64, len(entries))
  ends = np.cumsum(lengths)
  starts = ends - lengths
  key_index = _key_index(data, starts, lengths)
  wanted = key_index >= 0
  record_of = np.repeat(np.arange(n), per_record)
  if not (np.bincount(key_index[wanted] * n + record_of[wanted], minlength=n * len(_KEY_INDEX)) == 1).all():
    return _parse_slowly(serialized)  # a feature missing or repeated: the slow path says which
  starts, ends, key_index = starts[wanted], ends[wanted], key_index[wanted]
  value_at = starts + 2 + data[starts + 1]
  ok = (data[starts] == 0x0A) & (data[starts + 1] < 0x80) & (data[np.minimum(value_at, data.size - 1)] == 0x12)
  _, feature_at = _varint_ends(data, value_at + 1)
  kind = data[np.minimum(feature_at, data.size - 1)]
  ok &= kind == np.where(key_index < len(_BYTES_KEYS), 0x0A, 0x1A)
  _, list_at = _varint_ends(data, feature_at + 1)
  has_values = list_at < ends
  ok &= ~has_values | (data[np.minimum(list_at, data.size - 1)] == 0x0A)
  payload_length, payload_at = _varint_ends(data, list_at + 1)
  payload_at = np.where(has_values, payload_at, ends)
  # The payload must run to the entry's end: otherwise the list holds several bytes values or was written
  # unpacked or split (legal protobuf TensorFlow never writes). Those records take the slow path, never wrong.
  ok &= ~has_values | (payload_at + payload_length == ends)
  if not ok.all():
    return _parse_slowly(serialized)
  # Entries in key order, then record order: entry of key k, record r sits at k * n + r.
  order = np.argsort(key_index * n + record_of[wanted], kind="stable")
  payload_at, ends = payload_at[order], ends[order]
  values, splits = {}, {}
  for k, key in enumerate(_BYTES_KEYS):
    bounds = zip(payload_at[k * n:(k + 1) * n].tolist(), ends[k * n:(k + 1) * n].tolist())
    values[key] = [blob[a:b].decode("utf-8") for a, b in bounds]
  for k, key in enumerate(_INT_KEYS, len(_BYTES_KEYS)):
    begin, end = payload_at[k * n:(k + 1) * n], ends[k * n:(k + 1) * n]
    sizes = end - begin
    gather = np.repeat(begin - np.concatenate(([0], np.cumsum(sizes)[:-1])), sizes) + np.arange(sizes.sum())
    packed = data[gather]
    values[key] = decode_varints(packed.tobytes())
    # Every varint ends on a byte < 0x80, so the values per record are its count of such bytes.
    ends_before = np.concatenate(([0], np.cumsum(packed < 0x80)))
    splits[key] = ends_before[np.concatenate(([0], np.cumsum(sizes)))]
  counts = {key: np.diff(splits[key]) for key in _INT_KEYS}
  if not ((counts["label"] == 1) & (counts["truncated"] == 1) & (counts["spans"] == 4)
          & (counts["char_spans"] == 4) & (counts["offsets"] == 2 * counts["input_ids"])).all():
    return _parse_slowly(serialized)  # raises, naming the record
  return {
      **{key: values[key] for key in _BYTES_KEYS},
      "label": values["label"].astype(np.int32),
      "spans": values["spans"].astype(np.int32).reshape(n, 4),
      "char_spans": values["char_spans"].astype(np.int32).reshape(n, 4),
      "truncated": values["truncated"] > 0,
      "ids": values["input_ids"].astype(np.int32),
      "offsets": values["offsets"].astype(np.int32).reshape(-1, 2),
      "row_splits": splits["input_ids"],
  }


def _parse_slowly(serialized: Sequence[bytes]) -> dict:
  rows = [_slow_fields(record) for record in serialized]
  for row in rows:
    if not (len(row["label"]) == len(row["truncated"]) == 1 and len(row["spans"]) == len(row["char_spans"]) == 4
            and len(row["offsets"]) == 2 * len(row["input_ids"])):
      raise ValueError(f"record {row['id']!r}: wrong number of values in label, truncated, spans, char_spans or "
                       "offsets")
  n = len(rows)
  lengths = [len(row["input_ids"]) for row in rows]
  return {
      **{key: [row[key].decode("utf-8") for row in rows] for key in _BYTES_KEYS},
      "label": np.array([row["label"][0] for row in rows], np.int32).reshape(n),
      "spans": np.array([row["spans"] for row in rows], np.int32).reshape(n, 4),
      "char_spans": np.array([row["char_spans"] for row in rows], np.int32).reshape(n, 4),
      "truncated": np.array([row["truncated"][0] > 0 for row in rows], bool).reshape(n),
      "ids": np.array([i for row in rows for i in row["input_ids"]], np.int32),
      "offsets": np.array([o for row in rows for o in row["offsets"]], np.int32).reshape(-1, 2),
      "row_splits": np.concatenate(([0], np.cumsum(lengths))).astype(np.int64),
  }


def read_features(paths: Sequence[str | pathlib.Path]) -> Iterator[Features]:
  """Reads records back as `Features`, file after file in the given order (for checks and tools, not training)."""
  for path in paths:
    for record in read_records(path):
      row = _slow_fields(record)
      offsets = row["offsets"]
      yield Features(
          id=row["id"].decode("utf-8"), lang=row["lang"].decode("utf-8"), text=row["text"].decode("utf-8"),
          label=int(row["label"][0]), input_ids=tuple(row["input_ids"]),
          offsets=tuple(zip(offsets[0::2], offsets[1::2])), spans=tuple(row["spans"]),
          char_spans=tuple(row["char_spans"]), truncated=bool(row["truncated"][0]))


def load_manifest(data_dir: str | pathlib.Path) -> dict:
  """Reads `data_dir/manifest.json`, written by `herberta_jax.prepare`.

  Raises:
    FileNotFoundError: no manifest (the directory was not prepared).
    ValueError: unreadable JSON or another format version.
  """
  path = storage.path(data_dir) / MANIFEST_NAME
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: prepare the data first (python -m herberta_jax.prepare --input "
                            f"... --tokenizer ... --out {data_dir})")
  try:
    manifest = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as err:
    raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); prepare the data again") from err
  version = manifest.get("format_version")
  if version != FORMAT_VERSION:
    raise ValueError(f"{path}: format_version {version!r}, this code reads {FORMAT_VERSION}; prepare the data again "
                     "with this version of herberta_jax")
  return manifest
