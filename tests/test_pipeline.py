"""The input pipeline: shapes and buckets, eval padding, determinism, resuming, host sharding, language mixing."""

from __future__ import annotations

import collections
import csv
import pathlib

import numpy as np
import pytest

from herberta_jax.data import languages, smiler
from herberta_jax.data import preparation as prepare
from herberta_jax.data.pipeline import Pipeline

BOUNDARIES = (16, 32)
MAX_SEQ_LEN = 64


def write_language(directory: pathlib.Path, lang: str, split: str, count: int) -> None:
  """`count` rows of three lengths (short, medium, long) so every bucket gets rows."""
  rows = []
  for i in range(count):
    filler = " ".join(["and", "then", "more"] * (i % 3) * 4)
    label = ("born-in", "works-at", "no_relation")[i % 3]
    text = f"<e1>Name{i}</e1> {filler} met <e2>Place{i}</e2> today."
    rows.append((f"{lang}-{split}-{i}", f"Name{i}", f"Place{i}", label, text, lang))
  with (directory / f"{lang}_corpora_{split}.tsv").open("w", encoding="utf-8", newline="") as handle:
    writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
    writer.writerow(smiler.HEADER)
    writer.writerows(rows)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, minilm_dir) -> pathlib.Path:
  corpus = tmp_path_factory.mktemp("corpus")
  for lang, train, test in (("en", 300, 50), ("de", 100, 31)):
    write_language(corpus, lang, "train", train)
    write_language(corpus, lang, "test", test)
  out = tmp_path_factory.mktemp("prepared") / "data"
  prepare.prepare([corpus], str(minilm_dir), out, max_seq_len=MAX_SEQ_LEN, dev_fraction=0, progress=False)
  return out


def make(data_dir, split="train", **kwargs) -> Pipeline:
  defaults = dict(batch_size=8, shuffle=split == "train", repeat=split == "train", seed=0,
                  bucket_boundaries=BOUNDARIES)
  defaults.update(kwargs)
  return Pipeline(data_dir, split, **defaults)


def take(pipeline: Pipeline, n: int, start_batch: int = 0) -> list[dict]:
  out = []
  for batch in pipeline.batches(start_batch=start_batch):
    out.append(batch)
    if len(out) == n:
      break
  return out


def same_batches(a: list[dict], b: list[dict]) -> bool:
  return len(a) == len(b) and all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
                                  for x, y in zip(a, b))


def test_batches_have_static_bucket_shapes_and_consistent_fields(data_dir):
  pipeline = make(data_dir)
  assert pipeline.bucket_lengths == [16, 32, 64]
  lengths_seen = set()
  for batch in take(pipeline, 60):
    b, length = batch["input_ids"].shape
    assert b == 8 and length in pipeline.bucket_lengths
    lengths_seen.add(length)
    assert batch["input_ids"].dtype == np.int32 and batch["attention_mask"].dtype == np.int32
    assert batch["offsets"].shape == (8, length, 2) and batch["spans"].shape == (8, 4)
    assert batch["label"].dtype == np.int32 and batch["valid"].all() and batch["truncated"].dtype == bool
    rows = batch["attention_mask"].sum(axis=1)
    smaller = [L for L in pipeline.bucket_lengths if L < length]
    assert (rows <= length).all() and (rows > (smaller[-1] if smaller else 0)).all()  # the smallest bucket fits
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()  # padded with [PAD]
    for i in range(8):
      text = batch["text"][i]
      assert isinstance(text, str) and batch["lang"][i] in ("en", "de")
      s1, e1, s2, e2 = batch["spans"][i]
      c = batch["char_spans"][i]
      offsets = batch["offsets"][i]
      assert text[offsets[s1][0]:offsets[e1][1]] == text[c[0]:c[1]] == f"Name{batch['id'][i].split('-')[-1]}"
      assert text[offsets[s2][0]:offsets[e2][1]] == text[c[2]:c[3]]
  assert lengths_seen == {16, 32, 64}


def test_one_pass_keeps_every_row_once_and_pads_with_invalid_rows(data_dir):
  pipeline = make(data_dir, "test", batch_size=8)
  batches = list(pipeline.batches())
  ids = [i for b in batches for i, v in zip(b["id"], b["valid"]) if v]
  assert len(ids) == len(set(ids)) == pipeline.num_examples() == 81
  assert sum(int(b["valid"].sum()) for b in batches) == 81
  assert all(b["input_ids"].shape[0] == 8 for b in batches)
  padded = [b for b in batches if not b["valid"].all()]
  assert 1 <= len(padded) <= len(pipeline.bucket_lengths)  # at most one partial batch per bucket
  for b in padded:
    invalid = ~b["valid"]
    assert (b["input_ids"][invalid][:, :2] == [101, 102]).all() and (b["attention_mask"][invalid].sum(1) == 2).all()
    assert (b["spans"][invalid] == -1).all() and set(b["id"][invalid]) == {""}
    first_invalid = int(np.argmin(b["valid"]))
    assert b["valid"][:first_invalid].all() and not b["valid"][first_invalid:].any()
  assert same_batches(batches, list(pipeline.batches()))


def test_same_seed_same_batches_other_seed_other_order_and_epochs_reshuffle(data_dir):
  first = take(make(data_dir, seed=5), 40)
  assert same_batches(first, take(make(data_dir, seed=5), 40))
  other = take(make(data_dir, seed=6), 40)
  assert not same_batches(first, other)
  # One bucket, one language: the stream is the record order, so epochs show up as consecutive 300-row blocks,
  # each holding every row once, in a new order.
  stream = [i for b in take(make(data_dir, languages=["en"], bucket_boundaries=(64,)), 75) for i in b["id"]]
  epoch_1, epoch_2 = stream[:300], stream[300:600]
  assert len(set(epoch_1)) == 300 and set(epoch_1) == set(epoch_2)
  assert epoch_1 != epoch_2


def test_start_batch_resumes_exactly(data_dir):
  full = take(make(data_dir, seed=2), 30)
  assert same_batches(take(make(data_dir, seed=2), 12, start_batch=18), full[18:])
  evaluation = list(make(data_dir, "test").batches())
  assert same_batches(list(make(data_dir, "test").batches(start_batch=5)), evaluation[5:])


@pytest.mark.parametrize("process_count", [2, 3, 5])
def test_processes_read_disjoint_shares_that_cover_the_split(data_dir, process_count):
  # 4 shards per language: 2 and 3 processes split files; 5 falls back to splitting records.
  shares = []
  for index in range(process_count):
    pipeline = make(data_dir, "test", process_index=index, process_count=process_count)
    shares.append({i for b in pipeline.batches() for i, v in zip(b["id"], b["valid"]) if v})
  assert all(shares)
  assert sum(len(s) for s in shares) == len(set().union(*shares)) == 81


@pytest.mark.parametrize("mode", ["proportional", "uniform"])
def test_language_mixture_follows_the_weights(data_dir, mode):
  pipeline = make(data_dir, mixture=mode, batch_size=16)
  counts = collections.Counter(lang for b in take(pipeline, 150) for lang in b["lang"])
  expected = languages.mixture_weights({"en": 300, "de": 100}, mode)
  share = counts["en"] / sum(counts.values())
  assert abs(share - expected["en"]) < 0.05, (share, expected)


def test_bad_arguments_get_clear_errors(data_dir):
  with pytest.raises(ValueError, match="has no rows in \\['fr'\\]"):
    make(data_dir, languages=["fr"])
  with pytest.raises(ValueError, match="split 'dev' has no rows"):
    make(data_dir, "dev")
  with pytest.raises(ValueError, match="process_index"):
    make(data_dir, process_index=2, process_count=2)
  with pytest.raises(FileNotFoundError, match="prepare the data first"):
    Pipeline(data_dir.parent / "nowhere", "train", batch_size=8, shuffle=True, repeat=True)
