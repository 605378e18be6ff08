"""What the project's folders are, which outputs may be written where, and the lock of a training workdir.

Each folder the project makes carries a marker file: a training workdir `herberta_workdir.json`, an export
`herberta.json` (its format record), an evaluation report `herberta_report.json`. `kind_of(folder)` reads them;
`owners_of(path)` finds the marked folders a path lies in. The CLIs that write (train, prepare, predict, evaluate,
export) call `check_output` before any work, so that none writes over one of its inputs, into another workdir or
export, or over a folder it did not make.
Paths may be local or `gs://` (herberta_jax.storage); links are followed for local ones.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable

from herberta_jax import storage
from herberta_jax.errors import UserError, UserFileExistsError

log = logging.getLogger(__name__)

WORKDIR, EXPORT, REPORT = "workdir", "export", "report"
MARKERS = {WORKDIR: "herberta_workdir.json", EXPORT: "herberta.json", REPORT: "herberta_report.json"}
LOCK = "herberta_workdir.lock"
# A lock whose holder has not renewed it for this long is stale (its process died without releasing it).
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 4 * HEARTBEAT_SECONDS


def kind_of(folder) -> str | None:
  """`WORKDIR`, `EXPORT`, `REPORT` or None (not one of ours, or missing). A workdir without the marker (from
  before it, or a stage trained by `loop.train_stage` alone) is known by `data/manifest.json` beside its
  `config.json` or a stage's checkpoints."""
  folder = storage.path(folder)
  for kind, marker in MARKERS.items():
    if (folder / marker).exists():
      return kind
  if (folder / "data" / "manifest.json").exists() and any(
      (folder / name).exists() for name in ("config.json", "relation/checkpoints", "tagger/checkpoints")):
    return WORKDIR
  return None


# What a run prepares in its workdir before training: copied ahead into a new folder, they make it that run's.
PREPARED_ENTRIES = {"data", "demo_corpus", "wordpiece"}


def _holds_only_prepared_data(folder) -> bool:
  """A folder that holds nothing but data prepared for a run (`data/` with its manifest, perhaps the demo corpus
  and vocabulary it came from): that run's workdir, about to start."""
  return ({entry.name for entry in folder.iterdir()} <= PREPARED_ENTRIES
          and (folder / "data" / "manifest.json").exists())


def mark(folder, kind: str) -> None:
  """Writes `folder`'s marker (the export writer writes `herberta.json` itself)."""
  from herberta_jax import __version__
  folder = storage.path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  storage.write_atomically(folder / MARKERS[kind], json.dumps({"kind": kind, "herberta_jax": __version__}) + "\n")


def _absolute(location) -> storage.Path:
  location = storage.path(location)
  return location.resolve() if storage.is_local(location) else location


def _parents(location) -> list:
  """`location` and the folders above it, nearest first (up to the bucket for a URL)."""
  found = [location]
  while (parent := found[-1].parent) != found[-1] and storage.text(parent).rstrip("/") not in (
      f"{storage.scheme(parent)}:", ""):
    found.append(parent)
  return found


def owners_of(location) -> list[tuple[str, storage.Path]]:
  """(kind, folder) of every marked folder that `location` is or lies in, the nearest first."""
  return [(kind, folder) for folder in _parents(_absolute(location)) if (kind := kind_of(folder)) is not None]


def _same(a, b) -> bool:
  """Whether two paths name the same file or folder (links and `..` followed locally)."""
  a, b = storage.path(a), storage.path(b)
  if storage.is_local(a) and storage.is_local(b):
    try:
      return os.path.samefile(a, b)
    except OSError:
      return a.resolve() == b.resolve()
  return storage.text(a).rstrip("/") == storage.text(b).rstrip("/")


def _inside(inner, outer) -> bool:
  """Whether `inner` is `outer` or lies under it."""
  return any(_same(parent, outer) for parent in _parents(_absolute(inner)))


def _is_non_empty_folder(location) -> bool:
  location = storage.path(location)
  return location.is_dir() and any(True for _ in location.iterdir())


def check_output(flag: str, output, *, kind: str | None, inputs: Iterable[tuple[str, object]] = (),
                 overwrite: bool = False, own: object | None = None) -> None:
  """Refuses, before any work, an output that would destroy something the user had.

  `output` is the path given as `flag`: a folder of `kind` (WORKDIR, EXPORT, REPORT) or, with `kind=None`, a file.
  `inputs`: (flag, path) of each input (None or "-" skipped). `own`: the workdir whose designated place for this
  output is allowed (`export --workdir W` may write `W/export`). Refused:
  - the output is one of the inputs, or holds one (`samefile`, links included);
  - the output is, or lies inside, a workdir, export or report, unless it is that folder itself with this kind
    (a resumed workdir, a replaced export) or its own workdir's designated place;
  - a folder output that exists, is not empty and carries no marker, unless `overwrite`.
  """
  output_path = storage.path(output)
  for input_flag, input_path in inputs:
    if input_path in (None, "-") or not storage.path(input_path).exists():
      continue
    if _same(output_path, input_path) or (kind is not None and _inside(input_path, output_path)):
      raise UserError(f"{flag} {output}: is {input_flag} {input_path} or holds it; writing there would destroy the "
                      f"input. Choose another {flag}")
  if output_path.is_dir() and kind is None:
    raise UserError(f"{flag} {output}: is a directory; give a file path")
  if kind is not None and output_path.exists() and not output_path.is_dir():
    raise UserFileExistsError(f"{flag} {output}: is a file where a folder is expected; give a directory path")
  owners = owners_of(output_path)
  for owner_kind, folder in owners:
    itself = owner_kind == kind and _same(folder, output_path)
    own_place = (own is not None and owner_kind == WORKDIR and kind == EXPORT and _same(folder, own)
                 and _same(output_path, storage.path(own) / "export"))
    if not (itself or own_place):
      what = "is" if _same(folder, output_path) else "lies inside"
      raise UserError(f"{flag} {output}: {what} the {owner_kind} {storage.text(folder)}, which this command must "
                      f"not write into; choose a {flag} outside it")
  seeded = kind == WORKDIR and output_path.is_dir() and _holds_only_prepared_data(output_path)
  if not owners and kind is not None and _is_non_empty_folder(output_path) and not (overwrite or seeded):
    raise UserFileExistsError(f"{flag} {output}: exists, is not empty and is not a herberta_jax {kind}; choose "
                              f"another {flag}, or pass --overwrite to write into it anyway")


_held: list[WorkdirLock] = []  # the locks this process holds, for `release_held_locks`


def release_held_locks() -> None:
  """Deletes the lock files this process holds, for a process about to end without unwinding (a forced exit on
  preemption): a requeued run then finds its workdir free at once, on whatever host it starts."""
  for lock in list(_held):
    try:
      lock.path.unlink()
    except OSError:
      pass


class WorkdirLock:
  """One training run at a time in a workdir: `acquire()` / `release()`, or `with WorkdirLock(w):`.

  The lock is a file in the workdir naming its holder (host, pid), renewed every `HEARTBEAT_SECONDS` by a
  background thread. A lock whose holder is gone is taken over with a log line: on the same host when its process
  no longer exists, on any host when it was not renewed for `STALE_AFTER_SECONDS` (a killed worker of a pod
  slice, whose requeued run starts elsewhere). An object store has no exclusive create, so two runs started
  within the same second on a bucket are not told apart; anything slower is.
  """

  def __init__(self, workdir):
    self.path = storage.path(workdir) / LOCK
    self.holder = {"host": socket.gethostname(), "pid": os.getpid()}
    self._stop = threading.Event()
    self._renewer: threading.Thread | None = None

  def _write(self) -> None:
    storage.write_atomically(self.path, json.dumps({**self.holder, "renewed": time.time()}) + "\n")

  def _stale_reason(self, found: dict) -> str | None:
    """Why the lock's holder is gone, or None when it may still run."""
    age = time.time() - float(found.get("renewed", 0))
    if age > STALE_AFTER_SECONDS:  # on any host: a live holder renews it every HEARTBEAT_SECONDS
      return f"it was last renewed {age:.0f} s ago"
    if (found.get("host"), found.get("pid")) == (self.holder["host"], self.holder["pid"]):
      if any(storage.text(lock.path) == storage.text(self.path) for lock in _held):
        return None  # held by another run inside this process
      return "it names this process's pid, which a restarted container reuses"
    if found.get("host") == self.holder["host"] and isinstance(found.get("pid"), int):
      try:
        os.kill(found["pid"], 0)
      except ProcessLookupError:
        return f"its process {found['pid']} no longer exists"
      except PermissionError:
        return None
    return None

  def acquire(self) -> WorkdirLock:
    if self.path.exists():
      try:
        found = json.loads(self.path.read_text())
      except ValueError:
        found = {}  # cut short by a kill while written: its holder is gone
      reason = "it is unreadable" if not found else self._stale_reason(found)
      if reason is None:
        raise UserError(f"{storage.text(self.path.parent)}: another training run (pid {found.get('pid')} on "
                        f"{found.get('host')}) is using this workdir; wait for it to finish or stop it, or train "
                        f"in another --workdir")
      log.warning("%s: taking over a stale lock of pid %s on %s (%s)", storage.text(self.path), found.get("pid"),
                  found.get("host"), reason)
    self._write()
    _held.append(self)
    self._renewer = threading.Thread(target=self._renew, name="workdir-lock", daemon=True)
    self._renewer.start()
    return self

  def _renew(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        self._write()
      except OSError as error:  # a failed renewal only risks a takeover later; training goes on
        log.warning("%s: could not renew the lock: %s", storage.text(self.path), error)

  def release(self) -> None:
    self._stop.set()
    if self in _held:
      _held.remove(self)
    if self._renewer is not None:
      self._renewer.join()
      self._renewer = None
      try:
        found = json.loads(self.path.read_text())
        if (found.get("host"), found.get("pid")) == (self.holder["host"], self.holder["pid"]):
          self.path.unlink()
      except (OSError, ValueError):
        pass  # already gone or taken over: nothing of ours to remove

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
