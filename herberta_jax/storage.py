"""Paths as URLs: the one layer under every file the project reads or writes (a local path or `gs://bucket/...`).

`path(text)` gives a `pathlib.Path` for a local path, so local runs keep today's code and speed, and an etils
`epath.Path` for a URL. Both answer the same pathlib calls (`/`, `open`, `read_text`, `exists`, `iterdir`,
`mkdir`, ...); what object stores cannot do (append, rename a folder, lock) has a helper here that does the
nearest right thing on each. Orbax takes the same `epath.Path` for checkpoints and hands `gs://` arrays to
TensorStore, so a bucket workdir needs no copy on local disk.

Why epath and not fsspec directly: Orbax already depends on it (no new package for local users), its paths are
pathlib objects, and it reaches GCS through fsspec's `gcsfs`. It would pick TensorFlow's gfile instead whenever
TensorFlow is installed; we set `EPATH_USE_TF=false` (a run never imports TensorFlow), so one client, `gcsfs`,
serves every remote path and honours `STORAGE_EMULATOR_HOST` (the tests' local GCS server).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from herberta_jax.errors import UserError

# On import, not at the first URL: epath decides its backend once per process (`gpath._is_tf_installed` is cached),
# and Orbax makes epath paths of local checkpoint directories too, which may come first.
os.environ.setdefault("EPATH_USE_TF", "false")  # see the module docstring

# The package fsspec needs for each scheme; `pip install` names it in the error when it is missing.
CLIENT_PACKAGES = {"gs": "gcsfs", "s3": "s3fs"}
Path = Any  # pathlib.Path or etils.epath.Path: what `path` returns; both speak pathlib's API


class MissingClientError(UserError, ImportError):
  """A URL's scheme needs a package that is not installed."""


def scheme(location: str | os.PathLike) -> str | None:
  """`gs` for `gs://b/x`, None for a local path."""
  text = os.fspath(location)
  head, sep, _ = text.partition("://")
  return head if sep and head.isalnum() else None


def is_url(location: str | os.PathLike) -> bool:
  return scheme(location) is not None


def path(location: str | os.PathLike) -> Path:
  """The path object for `location`: `pathlib.Path` when local (`~` expanded), `epath.Path` for a URL.

  Raises MissingClientError (one line naming the package) when the URL's client is not installed, and UserError
  for a scheme the project cannot reach."""
  if not isinstance(location, str | os.PathLike):
    raise TypeError(f"a path must be a str or os.PathLike, not {type(location).__name__}")
  found = scheme(location)
  if found is None:
    return location if isinstance(location, pathlib.Path) else pathlib.Path(os.fspath(location)).expanduser()
  if found not in CLIENT_PACKAGES:
    raise UserError(f"{os.fspath(location)}: unsupported URL scheme {found}://; use a local path or one of "
                    f"{', '.join(s + '://' for s in CLIENT_PACKAGES)}")
  package = CLIENT_PACKAGES[found]
  if importlib.util.find_spec(package) is None:
    raise MissingClientError(f"{os.fspath(location)}: {found}:// paths need the {package} package: "
                             f"pip install {package}")
  from etils import epath
  return epath.Path(os.fspath(location))


def is_local(location: Path) -> bool:
  return not is_url(location)


def text(location: Path) -> str:
  """The path as the user would type it (`gs://b/x`, `/tmp/x`)."""
  return os.fspath(location)


def absolute(location: Path) -> Path:
  """An absolute path (a URL is one already)."""
  return location.absolute() if is_local(location) else location


def write_atomically(location: Path, data: str | bytes) -> None:
  """Writes the whole file so that a reader, or a kill, never sees half of it.

  Locally: a temporary file beside it, then one rename. An object store replaces an object as a whole on
  upload, so there the object is written directly."""
  mode = "w" if isinstance(data, str) else "wb"
  encoding = {"encoding": "utf-8"} if isinstance(data, str) else {}
  if is_url(location):
    with location.open(mode, **encoding) as f:
      f.write(data)
    return
  written = location.with_name(location.name + ".tmp")
  with open(written, mode, **encoding) as f:
    f.write(data)
  written.replace(location)


class Appender:
  """A file opened for appending, on any storage: `write(data)`, `flush()`, `close()`.

  Locally this is the open file itself. Objects cannot be appended to, so for a URL the content is kept in
  memory and the object rewritten whole at each `flush` (the callers' files, losses and events, are small and
  flushed once per logging window)."""

  def __init__(self, location: Path, *, binary: bool = False):
    self.location, self._binary = location, binary
    self._local: IO | None = None
    self._chunks: list = []
    if is_local(location):
      self._local = open(location, "ab" if binary else "a", **({} if binary else {"encoding": "utf-8"}))
    elif location.exists():
      self._chunks.append(location.read_bytes() if binary else location.read_text(encoding="utf-8"))
    self.closed = False

  def write(self, data) -> None:
    if self._local is not None:
      self._local.write(data)
    else:
      self._chunks.append(data)

  def flush(self) -> None:
    if self._local is not None:
      self._local.flush()
    else:
      joined = (b"" if self._binary else "").join(self._chunks)
      self._chunks = [joined]
      write_atomically(self.location, joined)

  def close(self) -> None:
    if self.closed:
      return
    self.flush()
    if self._local is not None:
      self._local.close()
    self.closed = True

  def __enter__(self) -> Appender:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def remove(location: Path) -> None:
  """Deletes a file or a whole folder (an object prefix); nothing there is fine."""
  if is_local(location):
    if location.is_dir() and not location.is_symlink():
      shutil.rmtree(location)
    elif location.exists() or location.is_symlink():
      location.unlink()
  elif location.is_dir():
    location.rmtree()
  elif location.exists():
    location.unlink()


def files_under(folder: Path) -> list[str]:
  """The relative paths (`a/b.txt`) of every file under `folder`, sorted; one listing call per folder."""
  walk = os.walk(folder) if is_local(folder) else folder.walk()
  unprefixed = lambda p: text(p).split("://", 1)[-1].rstrip("/")  # fsspec's walk drops the scheme
  base, found = unprefixed(folder), []
  for root, _, files in walk:
    relative = unprefixed(root)[len(base):].strip("/")
    found += [f"{relative}/{name}" if relative else name for name in files]
  return sorted(found)


def copy_tree(source: Path, destination: Path) -> None:
  """Copies every file under `source` to the same relative place under `destination` (either may be remote).

  The files at the top come last: a folder's marker (`herberta.json`, say) appears once the rest is there, so an
  interrupted copy is never taken for a complete one."""
  for relative in sorted(files_under(source), key=lambda name: ("/" not in name, name)):
    target = destination / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    with (source / relative).open("rb") as src, target.open("wb") as dst:
      shutil.copyfileobj(src, dst, length=8 << 20)


def cache_root() -> pathlib.Path:
  """Where remote files are copied to be read by libraries that need a local folder (tokenizers, safetensors):
  `$HERBERTA_CACHE`, else `~/.cache/herberta_jax/remote`."""
  return pathlib.Path(os.environ.get("HERBERTA_CACHE", "~/.cache/herberta_jax")).expanduser() / "remote"


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[pathlib.Path]:
  """A fresh local folder under `cache_root()` (made on first use), deleted on exit."""
  root = cache_root()
  root.mkdir(parents=True, exist_ok=True)
  folder = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=root))
  try:
    yield folder
  finally:
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def local_folder(location: Path) -> Iterator[pathlib.Path]:
  """A local folder with `location`'s files: the folder itself when local, else a fresh copy under
  `cache_root()` that is deleted on exit (what is loaded from it lives in memory by then)."""
  if is_local(location):
    yield location
    return
  with scratch_folder("download.") as copy:
    copy_tree(location, copy)
    yield copy


@contextlib.contextmanager
def staged_folder(location: Path, *, upload: bool = True) -> Iterator[pathlib.Path]:
  """A local folder to write `location`'s files in, for writers that need a local one (safetensors, reports):
  `location` itself when local; for a URL a fresh folder under `cache_root()`, copied to `location` (when
  `upload`) once the block ends without an error, so an interrupted writer leaves nothing half written there."""
  if is_local(location):
    yield location
    return
  with scratch_folder("upload.") as staging:
    yield staging
    if upload:
      copy_tree(staging, location)
