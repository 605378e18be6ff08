"""The data layer on a bucket: prepare to and from gs://, training batches streamed from gs://, a run's data in a
gs:// workdir, remote reads in blocks, and the one-line error when gcsfs is missing."""

from __future__ import annotations

import importlib.util
import io
import json
import pathlib

import numpy as np
import pytest
from test_prepare import tiny_corpus

from herberta_jax import cli, storage
from herberta_jax import prepare as prepare_cli
from herberta_jax.data import preparation, smiler, tfrecord, tokenize
from herberta_jax.data.pipeline import Pipeline


def bucket_files(url: str) -> dict[str, bytes]:
  folder = storage.path(url)
  return {name: (folder / name).read_bytes() for name in storage.files_under(folder)}


def local_files(folder: pathlib.Path) -> dict[str, bytes]:
  return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def without_inputs(manifest_bytes: bytes) -> dict:
  """The manifest less the paths it was given (of the inputs and the tokenizer): all a bucket run may change."""
  manifest = json.loads(manifest_bytes)
  del manifest["inputs"], manifest["tokenizer"]["source"]
  return manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
  directory = tmp_path_factory.mktemp("corpus")
  tiny_corpus(directory)
  return directory


@pytest.mark.gcs
def test_prepare_into_a_bucket_writes_the_bytes_of_a_local_prepare(corpus, minilm_dir, tmp_path, gcs_bucket,
                                                                     monkeypatch):
  monkeypatch.setenv("HERBERTA_CACHE", str(tmp_path / "cache"))
  options = dict(max_seq_len=32, dev_fraction=0.25, seed=3, shards_per_split=2, progress=False)
  local = preparation.prepare([corpus], str(minilm_dir), tmp_path / "local", **options)
  remote = preparation.prepare([corpus], str(minilm_dir), f"{gcs_bucket}/data", **options)
  assert remote == local
  expected = local_files(tmp_path / "local")
  assert "train/en-00001-of-00002.tfrecord" in expected and "tokenizer/tokenizer.json" in expected
  assert bucket_files(f"{gcs_bucket}/data") == expected
  assert not list(storage.cache_root().glob("prepare.*"))  # the staging folder is gone

  # From a bucket corpus too; and prepared data already there is refused, then replaced with --overwrite.
  storage.copy_tree(corpus, storage.path(f"{gcs_bucket}/corpus"))
  with pytest.raises(preparation.UserFileExistsError, match="already holds prepared data"):
    preparation.prepare([f"{gcs_bucket}/corpus"], str(minilm_dir), f"{gcs_bucket}/data", **options)
  again = preparation.prepare([f"{gcs_bucket}/corpus"], str(minilm_dir), f"{gcs_bucket}/data", overwrite=True,
                              **options)
  assert again["inputs"] == [f"{gcs_bucket}/corpus/{p.name}" for p in sorted(corpus.glob("*.tsv"))]
  written = bucket_files(f"{gcs_bucket}/data")
  assert without_inputs(written.pop("manifest.json")) == without_inputs(expected.pop("manifest.json"))
  assert written == expected


@pytest.mark.gcs
def test_the_prepare_cli_takes_bucket_urls_and_skips_bad_rows_into_a_remote_rejects_file(corpus, minilm_dir,
                                                                                         gcs_bucket, capsys):
  bad = storage.path(f"{gcs_bucket}/in/fr_corpora_train.tsv")
  bad.write_text("\t".join(smiler.HEADER) + "\nf1\tA\tB\tbirth-place\t<e1>A</e1> est né à B.\tfr\n", encoding="utf-8")
  code = cli.invoke(prepare_cli.main, ["--input", str(corpus), "--input", f"{gcs_bucket}/in", "--tokenizer",
                                       str(minilm_dir), "--out", f"{gcs_bucket}/out", "--on_error", "skip",
                                       "--max_seq_len", "32"], positional=True)
  assert code == 0
  out = capsys.readouterr().out
  assert f"see {gcs_bucket}/out/rejects.tsv" in out and f"wrote {gcs_bucket}/out/manifest.json" in out
  rejects = storage.path(f"{gcs_bucket}/out/rejects.tsv").read_text(encoding="utf-8").splitlines()
  assert len(rejects) == 2 and rejects[1].startswith(f"{gcs_bucket}/in/fr_corpora_train.tsv:2\tmissing <e2>")
  manifest = preparation.load_manifest(f"{gcs_bucket}/out")
  assert manifest["rows"] == {"read": 26, "written": 25, "rejected": 1}


@pytest.mark.gcs
def test_training_batches_from_a_bucket_equal_the_local_ones(corpus, minilm_dir, tmp_path, gcs_bucket):
  preparation.prepare([corpus], str(minilm_dir), tmp_path / "data", max_seq_len=32, dev_fraction=0.25,
                      shards_per_split=3, progress=False)
  storage.copy_tree(tmp_path / "data", storage.path(f"{gcs_bucket}/data"))
  for process_index in range(2):
    options = dict(batch_size=4, shuffle=True, seed=5, repeat=False, process_index=process_index, process_count=2,
                   bucket_boundaries=(16, 32))
    local = list(Pipeline(tmp_path / "data", "train", **options).batches())
    remote = list(Pipeline(f"{gcs_bucket}/data", "train", **options).batches())
    assert len(remote) == len(local) >= 2
    for got, want in zip(remote, local):
      assert got.keys() == want.keys()
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.gcs
def test_a_run_in_a_bucket_workdir_prepares_its_data_there_and_reuses_it(tmp_path, gcs_bucket):
  from tiny_run import tiny_config

  from herberta_jax.training import data_setup

  config = tiny_config()
  local = data_setup.prepare_run_data(config, tmp_path / "run")
  remote = data_setup.prepare_run_data(config, f"{gcs_bucket}/run")
  assert storage.text(remote) == f"{gcs_bucket}/run/data"
  expected = local_files(local)
  written = bucket_files(f"{gcs_bucket}/run/data")
  assert without_inputs(written.pop("manifest.json")) == without_inputs(expected.pop("manifest.json"))
  assert written == expected  # the demo corpus and the WordPiece vocabulary trained in the bucket, the records
  assert (storage.path(f"{gcs_bucket}/run/wordpiece") / "tokenizer.json").read_bytes() == \
      (tmp_path / "run" / "wordpiece" / "tokenizer.json").read_bytes()

  # A restart reuses the data after checking the bucket's WordPiece folder against it, and records the check.
  data_setup.prepare_run_data(config, f"{gcs_bucket}/run")
  checked = json.loads((remote / preparation.CHECKED_TOKENIZERS).read_text(encoding="utf-8"))
  assert list(checked.values()) == [preparation.load_manifest(remote)["tokenizer"]["fingerprint"]]
  loaded = tokenize.load_tokenizer(f"{gcs_bucket}/run/data/tokenizer")
  assert loaded.name_or_path == f"{gcs_bucket}/run/data/tokenizer" and len(loaded) == len(
      tokenize.load_tokenizer(local / "tokenizer"))


def test_without_gcsfs_a_bucket_path_fails_in_one_line_naming_the_package(corpus, minilm_dir, monkeypatch, capsys):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gcsfs" else real_find_spec(name, *a))
  with pytest.raises(storage.MissingClientError, match="pip install gcsfs"):
    preparation.prepare([corpus], str(minilm_dir), "gs://bucket/data", progress=False)
  with pytest.raises(storage.MissingClientError, match="pip install gcsfs"):
    Pipeline("gs://bucket/data", "train", batch_size=2, shuffle=False, repeat=False)
  code = cli.invoke(prepare_cli.main, ["--input", "gs://bucket/corpus", "--tokenizer", str(minilm_dir), "--out",
                                       "gs://bucket/data"], positional=True)
  err = capsys.readouterr().err
  assert code == 2 and "gcsfs" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


class CountingFile(io.BytesIO):
  """A file that counts the reads it is asked for (a remote file's requests)."""

  reads = 0

  def read(self, size=-1):
    self.reads += 1
    return super().read(size)


def test_remote_records_are_read_a_block_ahead_not_a_request_per_record(tmp_path):
  records = [bytes([i]) * (i * 37 % 300) for i in range(200)]
  with tfrecord.RecordWriter(tmp_path / "x.tfrecord") as writer:
    for record in records:
      writer.write(record)
  data = (tmp_path / "x.tfrecord").read_bytes()
  source = CountingFile(data)
  with tfrecord._ReadAhead(source, block_size=4096, depth=2) as ahead:
    assert list(tfrecord._framed_records(ahead.read, "mem")) == records
  assert source.reads == -(-len(data) // 4096) + 1  # one read per block, and one finding the end

  damaged = CountingFile(data[:-3])
  with tfrecord._ReadAhead(damaged, block_size=1000) as ahead, pytest.raises(tfrecord.CorruptRecordError,
                                                                             match="truncated record"):
    list(tfrecord._framed_records(ahead.read, "mem"))


def test_remote_tsv_lines_split_as_a_local_file_splits_them():
  data = "a\tb\r\nc\rd\n\ne" * 50
  blob = data.encode("utf-8")
  for block_size in (1, 7, 64, 10_000):
    assert list(smiler._lines_in_blocks(io.BytesIO(blob), block_size)) == list(io.BytesIO(blob))
