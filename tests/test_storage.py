"""herberta_jax.storage: local paths stay pathlib, URLs reach the (local, fake) GCS server, helpers for what buckets
cannot do."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from herberta_jax import storage
from herberta_jax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_local_paths_are_pathlib_with_home_expanded(tmp_path):
  assert storage.path(str(tmp_path)) == tmp_path and isinstance(storage.path(str(tmp_path)), pathlib.Path)
  assert storage.path("~/x") == pathlib.Path.home() / "x"
  assert not storage.is_url(tmp_path) and storage.is_url("gs://b/x") and storage.scheme("gs://b/x") == "gs"
  with pytest.raises(TypeError, match="not int"):
    storage.path(3)


def test_unknown_scheme_and_missing_client_are_one_line(monkeypatch):
  with pytest.raises(UserError, match=r"ftp://h/x: unsupported URL scheme ftp://"):
    storage.path("ftp://h/x")
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gcsfs" else real(name, *a))
  with pytest.raises(storage.MissingClientError, match=r"^gs://b/x: gs:// paths need the gcsfs package: "
                     r"pip install gcsfs$"):
    storage.path("gs://b/x")


def test_cli_without_the_client_prints_one_line(tmp_path):
  # A process where gcsfs cannot be imported: the CLI's error names the package, with no traceback.
  blocker = tmp_path / "sitecustomize.py"
  blocker.write_text("import sys\nsys.modules['gcsfs'] = None\n"
                     "import importlib.util as u\n_f = u.find_spec\n"
                     "u.find_spec = lambda n, *a: None if n == 'gcsfs' else _f(n, *a)\n")
  env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
  result = subprocess.run([sys.executable, "-c", "from herberta_jax import cli, storage\n"
                           "cli.guarded(lambda argv: storage.path('gs://b/run'), [])"],
                          env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  assert "gs:// paths need the gcsfs package: pip install gcsfs" in result.stderr
  assert "Traceback" not in result.stderr


def test_atomic_write_and_appender_locally(tmp_path):
  target = tmp_path / "a.json"
  storage.write_atomically(target, "{}")
  assert target.read_text() == "{}" and not (tmp_path / "a.json.tmp").exists()
  with storage.Appender(tmp_path / "log.jsonl") as log:
    log.write("1\n")
  with storage.Appender(tmp_path / "log.jsonl") as log:
    log.write("2\n")
  assert (tmp_path / "log.jsonl").read_text() == "1\n2\n"


@pytest.mark.gcs
def test_bucket_files_folders_append_copy_and_local_folder(gcs_bucket, tmp_path):
  run = storage.path(f"{gcs_bucket}/run")
  assert storage.is_url(run) and not isinstance(run, pathlib.Path)
  storage.write_atomically(run / "config.json", '{"a": 1}')
  assert (run / "config.json").read_text() == '{"a": 1}'
  with storage.Appender(run / "losses.jsonl") as log:
    log.write("1\n")
    log.flush()
    assert (run / "losses.jsonl").read_text() == "1\n"
    log.write("2\n")
  with storage.Appender(run / "losses.jsonl") as log:  # reopened: continues the object
    log.write("3\n")
  assert (run / "losses.jsonl").read_text() == "1\n2\n3\n"
  with storage.Appender(run / "events.bin", binary=True) as events:
    events.write(b"\x00\x01")
  assert (run / "events.bin").read_bytes() == b"\x00\x01"

  local = tmp_path / "export"
  (local / "relation").mkdir(parents=True)
  (local / "relation" / "model.safetensors").write_bytes(bytes(range(256)) * 1000)
  (local / "herberta.json").write_text("{}")
  storage.copy_tree(local, run / "export")
  assert storage.files_under(run / "export") == ["herberta.json", "relation/model.safetensors"]
  with storage.local_folder(run / "export") as copy:
    assert isinstance(copy, pathlib.Path) and copy.is_relative_to(storage.cache_root())
    assert (copy / "relation" / "model.safetensors").read_bytes() == bytes(range(256)) * 1000
  assert not copy.exists()  # the downloaded copy is a cache, gone after use
  storage.remove(run / "export")
  assert not (run / "export").exists() and (run / "config.json").exists()


def test_evaluate_reads_local_inputs_where_they_are_without_making_the_cache(tmp_path):
  # In a fresh process: evaluate's absl flags would clash with other CLI modules imported by this test process.
  code = """if True:
    import os, sys
    from herberta_jax import evaluate
    given = sys.argv[1:]
    with evaluate.local_inputs(given) as (paths, copies):
      assert paths == given and copies == {}, (paths, copies)
    try:
      with evaluate.local_inputs([os.devnull]):  # not a regular file: it is copied, so it needs the cache
        pass
    except OSError:
      print("the copy needed the cache")
  """
  blocked = tmp_path / "a_file"
  blocked.write_text("")
  tsv = tmp_path / "dev.tsv"
  tsv.write_text("id\tentity_1\tentity_2\tlabel\ttext\tlang\n")
  env = {**os.environ, "PYTHONPATH": str(REPO), "HERBERTA_CACHE": str(blocked / "cache")}  # a read-only HOME's
  proc = subprocess.run([sys.executable, "-c", code, str(tsv), str(tmp_path), str(tmp_path / "missing.tsv")],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.splitlines() == ["the copy needed the cache"]
