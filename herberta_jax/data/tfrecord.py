"""TFRecord files without TensorFlow: the record framing `tf.io.TFRecordWriter` writes and tf.data reads.

  record: uint64 length (little-endian), masked crc32c of the length, data, masked crc32c of the data.

Written out here (a few dozen lines) rather than taken from a library: the `tfrecord` package is an sdist whose
generated `tensorflow.Example` collides with TensorFlow's in protobuf's default pool, and the tensorboard writer
computes its CRCs in pure Python (~130 us per record). CRCs come from the `google-crc32c` C extension; without it a
pure-Python table is used, correct but ~500x slower, with a warning.

A path may be a URL (`gs://bucket/train/en-00000-of-00004.tfrecord`, through `herberta_jax.storage`). A remote
file is read in 4 MiB blocks by a background thread that keeps a block ahead of the reader, so training
waits on the network only when the bucket is slower than the step, and no record costs a request of its own.
"""

from __future__ import annotations

import contextlib
import pathlib
import queue
import struct
import threading
import warnings
from collections.abc import Callable, Iterator

from herberta_jax import storage

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
  """Writes records to one TFRecord file (uncompressed), as `tf.io.TFRecordWriter` does; local or a URL."""

  def __init__(self, path: str | pathlib.Path):
    self.path = storage.path(path)
    self._file = open(self.path, "wb") if storage.is_local(self.path) else self.path.open("wb")

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


REMOTE_BLOCK = 4 << 20  # bytes per read of a remote file: one request (tens of ms on GCS)
REMOTE_BLOCKS_AHEAD = 1  # blocks ready beyond the one in use: <= 12 MiB per open file, 16 files open at most


def read_records(path: str | pathlib.Path) -> Iterator[bytes]:
  """The records of one TFRecord file, in order, each checked against both of its CRCs.

  Raises:
    CorruptRecordError: a truncated record or a CRC mismatch (the message names the file and byte offset).
  """
  location = storage.path(path)
  with contextlib.ExitStack() as stack:
    if storage.is_local(location):
      read = stack.enter_context(open(location, "rb", buffering=1 << 20)).read
    else:
      ahead = stack.enter_context(_ReadAhead(stack.enter_context(location.open("rb"))))
      read = ahead.read
    yield from _framed_records(read, storage.text(location))


def _framed_records(read: Callable[[int], bytes], name: str) -> Iterator[bytes]:
  offset = 0
  while True:
    header = read(12)
    if not header:
      return
    if len(header) < 12:
      raise CorruptRecordError(f"{name}: truncated record header at byte {offset}")
    length, length_crc = _HEADER.unpack(header)
    if masked_crc32c(header[:8]) != length_crc:
      raise CorruptRecordError(f"{name}: corrupt record length at byte {offset} (CRC mismatch)")
    data = read(length)
    footer = read(4)
    if len(footer) < 4:
      raise CorruptRecordError(f"{name}: truncated record at byte {offset} ({length} bytes announced)")
    if masked_crc32c(data) != _CRC.unpack(footer)[0]:
      raise CorruptRecordError(f"{name}: corrupt record data at byte {offset} (CRC mismatch)")
    offset += 16 + length
    yield data


class _ReadAhead:
  """`read(n)` over a (remote) binary file whose blocks a background thread fetches ahead of the reader.

  At most REMOTE_BLOCKS_AHEAD + 2 blocks are held (queued, in use, being fetched). Closing stops the thread; a
  read error in the thread is raised by the `read` that needs the missing bytes."""

  def __init__(self, handle, block_size: int = REMOTE_BLOCK, depth: int = REMOTE_BLOCKS_AHEAD):
    self._blocks: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._buffer, self._position, self._ended = b"", 0, False
    self._thread = threading.Thread(target=self._fetch, args=(handle, block_size), daemon=True,
                                    name="tfrecord-read-ahead")
    self._thread.start()

  def _fetch(self, handle, block_size: int) -> None:
    while not self._stop.is_set():
      try:
        block = handle.read(block_size)
      except Exception as error:  # handed to the reader, who raises it where the bytes are missing
        block = error
      while not self._stop.is_set():
        try:
          self._blocks.put(block, timeout=0.1)
          break
        except queue.Full:
          continue
      if not isinstance(block, bytes) or not block:
        return

  def read(self, size: int) -> bytes:
    while len(self._buffer) - self._position < size and not self._ended:
      block = self._blocks.get()
      if isinstance(block, Exception):
        raise block
      self._ended = not block
      self._buffer, self._position = self._buffer[self._position:] + block, 0
    data = self._buffer[self._position:self._position + size]
    self._position += len(data)
    return data

  def close(self) -> None:
    self._stop.set()
    self._thread.join()

  def __enter__(self) -> _ReadAhead:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
