"""A TensorBoard event-file writer for scalars, without TensorFlow: `scalar(name, value, step)`, `flush`, `close`.

Drop-in for the part of `flax.metrics.tensorboard.SummaryWriter` training uses; that one writes through
`tf.summary`, which would make TensorFlow a runtime dependency for a handful of numbers per log step. Here the
`tensorboard` package's own pieces do it: its `Event`/`Summary` protos and its TF-free `RecordWriter` (the
TFRecord framing of event files) on a plain file. `EventFileWriter` is not used: it opens the file through
`tensorboard.compat.tf`, which imports the real TensorFlow whenever it is installed. The file is written through
`storage.Appender`, so `log_dir` may be a `gs://` URL (each `flush` then rewrites the object: call it once per
logging window).
"""

from __future__ import annotations

import itertools
import os
import socket
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from herberta_jax import storage

_uid = itertools.count()  # two writers of one process in one second still get distinct files


class SummaryWriter:
  """Appends scalar summaries to a new `events.out.tfevents.*` file in `log_dir` (created if missing)."""

  def __init__(self, log_dir):
    log_dir = storage.path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    # The name TensorBoard's loader looks for ("tfevents"), unique per writer as TF's own writer makes it.
    self.path = log_dir / (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
                           f"{next(_uid)}")
    self._file = storage.Appender(self.path, binary=True)
    self._records = RecordWriter(self._file)
    # The first event names the file format version; readers reject files without it.
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    self.flush()

  def _write(self, event) -> None:
    self._records.write(event.SerializeToString())

  def scalar(self, tag: str, value: float, step: int) -> None:
    """Records `value` under `tag` at `step` (as a simple_value, which every TensorBoard version reads)."""
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()

  def __enter__(self) -> SummaryWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
