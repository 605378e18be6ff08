"""TFRecord files without TensorFlow: the record framing `tf.io.TFRecordWriter` writes and tf.data reads.

  record: uint64 length (little-endian), masked crc32c of the length, data, masked crc32c of the data.

Written out here (a few dozen lines) rather than taken from a library: the `tfrecord` package is an sdist whose
generated `tensorflow.Example` collides with TensorFlow's in protobuf's default pool, and the tensorboard writer
computes its CRCs in pure Python (~130 us per record). CRCs come from the `google-crc32c` C extension; without it a
pure-Python table is used, correct but ~500x slower, with a warning.
"""

from __future__ import annotations

import pathlib
import struct
import warnings
from collections.abc import Iterator

_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")


class CorruptRecordError(OSError):
  """A TFRecord file whose framing or checksums are wrong (truncated or damaged on disk)."""


# -- crc32c ------------------------------------------------------------------------------------------------------

def _table_crc32c():
  """A pure-Python CRC-32C (Castagnoli), the fallback when the google-crc32c C extension is missing."""
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)

  def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
      crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
  return crc32c


def _load_crc32c():
  try:
    import google_crc32c
    if google_crc32c.implementation == "c":
      return google_crc32c.value
  except ImportError:
    pass
  warnings.warn("google-crc32c's C extension is not available: TFRecord checksums fall back to pure Python, "
                "~500x slower (pip install google-crc32c, see requirements.txt)", RuntimeWarning, stacklevel=3)
  return _table_crc32c()


_crc32c = _load_crc32c()


def masked_crc32c(data: bytes) -> int:
  """The TFRecord checksum: crc32c rotated right by 15 bits plus a constant (so CRCs of CRCs stay distinct)."""
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# -- framing -----------------------------------------------------------------------------------------------------

class RecordWriter:
  """Writes records to one TFRecord file (uncompressed), as `tf.io.TFRecordWriter` does."""

  def __init__(self, path: str | pathlib.Path):
    self.path = pathlib.Path(path)
    self._file = open(self.path, "wb")

  def write(self, data: bytes) -> None:
    length = struct.pack("<Q", len(data))
    self._file.write(b"".join((length, _CRC.pack(masked_crc32c(length)), data, _CRC.pack(masked_crc32c(data)))))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()

  def __enter__(self) -> RecordWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_records(path: str | pathlib.Path) -> Iterator[bytes]:
  """The records of one TFRecord file, in order, each checked against both of its CRCs.

  Raises:
    CorruptRecordError: a truncated record or a CRC mismatch (the message names the file and byte offset).
  """
  path = str(path)
  with open(path, "rb", buffering=1 << 20) as handle:
    read = handle.read
    offset = 0
    while True:
      header = read(12)
      if not header:
        return
      if len(header) < 12:
        raise CorruptRecordError(f"{path}: truncated record header at byte {offset}")
      length, length_crc = _HEADER.unpack(header)
      if masked_crc32c(header[:8]) != length_crc:
        raise CorruptRecordError(f"{path}: corrupt record length at byte {offset} (CRC mismatch)")
      data = read(length)
      footer = read(4)
      if len(footer) < 4:
        raise CorruptRecordError(f"{path}: truncated record at byte {offset} ({length} bytes announced)")
      if masked_crc32c(data) != _CRC.unpack(footer)[0]:
        raise CorruptRecordError(f"{path}: corrupt record data at byte {offset} (CRC mismatch)")
      offset += 16 + length
      yield data
