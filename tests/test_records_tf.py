"""TFRecords without TensorFlow stay TensorFlow's format: tf.data reads ours, we read TF's, damage is caught."""

from __future__ import annotations

import numpy as np
import pytest

from herberta_jax.data import records, tfrecord
from herberta_jax.data.example import Features

tf = pytest.importorskip("tensorflow")


def features(count: int = 7) -> list[Features]:
  return [Features(id=f"r{i}", lang="en", text=f"Row {i} é ünïcode", label=i % 3,
                   input_ids=tuple(range(101, 105 + i)), offsets=tuple((j, j + 1) for j in range(4 + i)),
                   spans=(1, 2, -1, -1) if i % 2 else (1, 1, 2, 3), char_spans=(0, 3, -1, -1) if i % 2 else (0, 3, 4, 5),
                   truncated=bool(i % 2)) for i in range(count)]


SPEC = {
    "id": tf.io.FixedLenFeature([], tf.string), "lang": tf.io.FixedLenFeature([], tf.string),
    "text": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
    "input_ids": tf.io.RaggedFeature(tf.int64), "offsets": tf.io.RaggedFeature(tf.int64),
    "spans": tf.io.FixedLenFeature([4], tf.int64), "char_spans": tf.io.FixedLenFeature([4], tf.int64),
    "truncated": tf.io.FixedLenFeature([], tf.int64),
}


def test_tf_data_reads_our_records(tmp_path):
  rows = features()
  paths = records.write_shards(rows, tmp_path, "en", num_shards=2)
  dataset = tf.data.TFRecordDataset([str(p) for p in paths]).map(lambda s: tf.io.parse_single_example(s, SPEC))
  back = {}
  for parsed in dataset.as_numpy_iterator():
    back[parsed["id"].decode()] = parsed
  assert sorted(back) == sorted(f.id for f in rows)
  for row in rows:
    parsed = back[row.id]
    assert parsed["text"].decode() == row.text and parsed["lang"].decode() == row.lang
    assert parsed["label"] == row.label and bool(parsed["truncated"]) == row.truncated
    assert tuple(parsed["input_ids"]) == row.input_ids
    assert tuple(parsed["offsets"]) == tuple(v for pair in row.offsets for v in pair)
    assert tuple(parsed["spans"]) == row.spans and tuple(parsed["char_spans"]) == row.char_spans
  # Byte for byte what TensorFlow's own writer makes of the same messages.
  tf_path = tmp_path / "tf.tfrecord"
  with tf.io.TFRecordWriter(str(tf_path)) as writer:
    for row in rows[0::2]:
      writer.write(tf.train.Example.FromString(records.serialize(row)).SerializeToString(deterministic=True))
  assert tf_path.read_bytes() == paths[0].read_bytes()


def test_we_read_records_tensorflow_wrote(tmp_path, monkeypatch):
  rows = features()
  path = tmp_path / "tf.tfrecord"
  with tf.io.TFRecordWriter(str(path)) as writer:
    for row in rows:
      feature = {
          "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.id.encode()])),
          "lang": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.lang.encode()])),
          "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.text.encode()])),
          "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[row.label])),
          "input_ids": tf.train.Feature(int64_list=tf.train.Int64List(value=row.input_ids)),
          "offsets": tf.train.Feature(int64_list=tf.train.Int64List(value=[v for p in row.offsets for v in p])),
          "spans": tf.train.Feature(int64_list=tf.train.Int64List(value=row.spans)),
          "char_spans": tf.train.Feature(int64_list=tf.train.Int64List(value=row.char_spans)),
          "truncated": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row.truncated)])),
      }
      # TF's default (non-deterministic) serialization: map entries in whatever order it likes.
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  assert list(records.read_features([path])) == rows
  monkeypatch.setattr(records, "_parse_slowly", None)  # TF's files must not need the slow path (a call fails)
  chunk = records.parse_chunk(list(tfrecord.read_records(path)))
  assert chunk["id"] == [row.id for row in rows]
  for i, row in enumerate(rows):
    begin, end = chunk["row_splits"][i], chunk["row_splits"][i + 1]
    assert tuple(chunk["ids"][begin:end]) == tuple(np.int32(v) for v in row.input_ids)
    assert tuple(chunk["spans"][i]) == row.spans and tuple(chunk["char_spans"][i]) == row.char_spans


def test_unpacked_int64_lists_take_the_slow_path():
  # Legal protobuf no TF writer produces: int64 values unpacked (one tag per value). The fast view cannot see
  # them, so the chunk must fall back to full parsing and still get every value.
  row = features(2)[1]
  packed = records.serialize(row)
  example = records.example_class().FromString(packed)
  spans = example.features.feature["spans"]
  unpacked_spans = b"".join(b"\x08" + _varint(v & 0xFFFFFFFFFFFFFFFF) for v in row.spans)
  list_bytes = b"\x1a" + _varint(len(unpacked_spans)) + unpacked_spans  # Feature.int64_list
  assert spans.int64_list.value  # sanity: the message had packed spans
  entry = b"\x0a\x05spans\x12" + _varint(len(list_bytes)) + list_bytes
  del example.features.feature["spans"]
  rest = example.features.SerializeToString(deterministic=True)
  serialized = b"\x0a" + _varint(len(rest) + len(entry) + 2) + rest + b"\x0a" + _varint(len(entry)) + entry
  chunk = records.parse_chunk([packed, serialized])
  assert tuple(chunk["spans"][1]) == row.spans and tuple(chunk["spans"][0]) == row.spans


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    low, value = value & 0x7F, value >> 7
    out.append(low | (0x80 if value else 0))
    if not value:
      return bytes(out)


def test_damaged_files_raise_errors_naming_the_file(tmp_path):
  path = records.write_shards(features(), tmp_path, "en", num_shards=1)[0]
  data = bytearray(path.read_bytes())
  data[40] ^= 0x01  # inside the first record's payload
  bad = tmp_path / "bad.tfrecord"
  bad.write_bytes(bytes(data))
  with pytest.raises(tfrecord.CorruptRecordError, match=r"bad\.tfrecord.*byte 0.*CRC"):
    list(tfrecord.read_records(bad))
  cut = tmp_path / "cut.tfrecord"
  cut.write_bytes(path.read_bytes()[:-3])
  with pytest.raises(tfrecord.CorruptRecordError, match=r"cut\.tfrecord: truncated record"):
    list(tfrecord.read_records(cut))
  with pytest.raises(tfrecord.CorruptRecordError, match="cut.tfrecord"):
    list(records.read_features([cut]))


def test_pure_python_crc_matches_the_c_extension():
  google_crc32c = pytest.importorskip("google_crc32c")
  slow = tfrecord._table_crc32c()
  for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
    assert slow(data) == google_crc32c.value(data)
  assert slow(b"123456789") == 0xE3069283  # the CRC-32C check value
