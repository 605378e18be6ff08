"""Inference from a bucket (issue 32): `export --out gs://...`, `herberta_jax.load("gs://...")` and `predict --model
gs://...` against a local fake GCS server, giving the very extractions of the same export on local disk."""

import json
import os
import subprocess
import sys

import pytest
from tiny_run import REPO, tiny_config

import herberta_jax
from herberta_jax import storage
from herberta_jax.errors import UserFileNotFoundError

pytestmark = [pytest.mark.gcs, pytest.mark.slow]

SENTENCES = ["Marie Curie was born in Warsaw.", "Anna Weber wurde in Hamburg geboren.", "",
             "The novel Silent Harbor was written by Clara Hughes."]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  from herberta_jax import run as run_lib
  workdir = tmp_path_factory.mktemp("gcs_run") / "run"
  run_lib.train_and_evaluate(tiny_config(), workdir)
  return workdir


def cli(name: str, *args: str, env: dict) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", f"herberta_jax.{name}", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)


def test_an_export_in_a_bucket_extracts_as_the_same_export_on_disk(workdir, gcs_server, gcs_bucket, tmp_path,
                                                                    monkeypatch):
  monkeypatch.setenv("HERBERTA_CACHE", str(tmp_path / "cache"))  # where a remote export is copied to be read
  env = {**os.environ, **gcs_server, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
  url, local = f"{gcs_bucket}/models/demo", tmp_path / "local"
  for out in (url, str(local)):
    proc = cli("export", "--workdir", str(workdir), "--out", out, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == out
  remote = storage.path(url)
  assert listing(url) == storage.files_under(local)
  for name in ("herberta.json", "relation/model.safetensors", "tagger/tokenizer.json", "herberta_schema.py"):
    assert (remote / name).read_bytes() == (local / name).read_bytes(), name
  assert not [p for p in (tmp_path / "cache" / "remote").iterdir()], "export's staging folder left behind"

  from_bucket, from_disk = herberta_jax.load(url), herberta_jax.load(local)
  assert os.fspath(from_bucket.path) == url
  assert [e.to_dict() for e in from_bucket.extract(SENTENCES)] == [e.to_dict() for e in from_disk.extract(SENTENCES)]
  assert not [p for p in (tmp_path / "cache" / "remote").iterdir()], "load's local copy left behind"

  sentences, given = tmp_path / "sentences.txt", [s for s in SENTENCES if s]  # (predict numbers an empty line's error)
  sentences.write_text("".join(s + "\n" for s in given), encoding="utf-8")
  proc = cli("predict", "--model", url, "--input", str(sentences), "--out", str(tmp_path / "out.jsonl"), env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
  assert written == [e.to_dict() for e in from_disk.extract(given)]


def listing(url: str) -> list[str]:
  """The files under `url` now: gcsfs caches listings in this process, and the exports were written by others."""
  import gcsfs
  for fs in list(gcsfs.GCSFileSystem._cache.values()):
    fs.invalidate_cache()
  return storage.files_under(storage.path(url))


def test_a_non_empty_bucket_folder_needs_overwrite(workdir, gcs_server, gcs_bucket, tmp_path, monkeypatch):
  monkeypatch.setenv("HERBERTA_CACHE", str(tmp_path / "cache"))
  env = {**os.environ, **gcs_server, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
  url = f"{gcs_bucket}/exp"
  storage.path(f"{url}/keep.txt").write_text("mine")
  proc = cli("export", "--workdir", str(workdir), "--out", url, env=env)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert f"--out {url}: exists, is not empty" in proc.stderr and "--overwrite" in proc.stderr
  assert listing(url) == ["keep.txt"]

  proc = cli("export", "--workdir", str(workdir), "--out", url, "--overwrite", env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  files = listing(url)
  assert "keep.txt" not in files and "herberta.json" in files  # replaced whole, never merged


def test_loading_a_bucket_folder_without_an_export_names_it(gcs_server, gcs_bucket):
  with pytest.raises(UserFileNotFoundError, match=f"{gcs_bucket}/nothing: no herberta.json"):
    herberta_jax.load(f"{gcs_bucket}/nothing")
