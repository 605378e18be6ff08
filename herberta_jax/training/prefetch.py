"""Runs an iterator ahead of its consumer in a background thread, `depth` items ahead.

The training feed uses it to read, pad and place (`to_global`) the next batches while the device runs the current
step. An exception in the thread is raised again in the consumer at the item where it happened; `close()` (or
leaving the `with` block) stops the thread and closes the source iterator.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

_END = object()
_POLL_SECONDS = 0.1  # how often a blocked producer looks whether it was asked to stop


class _Failure:
  def __init__(self, error: BaseException):
    self.error = error


class Prefetcher:
  """Iterates `source` in a daemon thread, holding up to `depth` finished items."""

  def __init__(self, source: Iterator, depth: int):
    if depth < 1:
      raise ValueError(f"prefetch depth {depth}: must be at least 1")
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._done = False
    self._thread = threading.Thread(target=self._produce, args=(source,), name="prefetch", daemon=True)
    self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=_POLL_SECONDS)
        return True
      except queue.Full:
        continue
    return False

  def _produce(self, source: Iterator) -> None:
    try:
      for item in source:
        if not self._put(item):
          break
      else:
        self._put(_END)
    except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
      self._put(_Failure(error))
    finally:
      close = getattr(source, "close", None)
      if close is not None:
        close()

  def __iter__(self) -> Prefetcher:
    return self

  def __next__(self):
    if self._done:
      raise StopIteration
    item = self._queue.get()
    if item is _END:
      self._done = True
      raise StopIteration
    if isinstance(item, _Failure):
      self._done = True
      raise item.error
    return item

  def close(self) -> None:
    self._done = True
    self._stop.set()
    self._thread.join()

  def __enter__(self) -> Prefetcher:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
