"""prepare: grouping, dev carving, truncation counts, rejects, reproducible bytes, tokenizer checks, SemEval."""

from __future__ import annotations

import collections
import csv
import json
import pathlib
import shutil

import pytest

from herberta_jax import cli
from herberta_jax import prepare as prepare_cli
from herberta_jax.data import preparation as prepare
from herberta_jax.data import records, smiler, tokenize
from herberta_jax.data import splits as splits_lib
from herberta_jax.data.example import Example

LONG_FILLER = " ".join(f"word{i}" for i in range(40))


def write_tsv(path: pathlib.Path, rows) -> pathlib.Path:
  with path.open("w", encoding="utf-8", newline="") as handle:
    writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
    writer.writerow(smiler.HEADER)
    writer.writerows(rows)
  return path


def row(row_id, e1, e2, label, template, lang):
  return (row_id, e1, e2, label, template.format(e1=f"<e1>{e1}</e1>", e2=f"<e2>{e2}</e2>"), lang)


def tiny_corpus(directory: pathlib.Path) -> list[pathlib.Path]:
  """en and de, SMiLER-named; one long en sentence cuts entity 2 off at max_seq_len 32."""
  directory.mkdir(parents=True, exist_ok=True)
  en_train = [row(f"en{i}", f"Person{i}", f"City{i}", "birth-place", "{e1} was born in {e2}.", "en")
              for i in range(8)]
  en_train += [row(f"en{i}", f"Firm{i}", f"Boss{i}", "org-has-founder", "{e1} was founded by {e2} long ago.", "en")
               for i in range(8, 12)]
  en_train.append(row("en-long", "Anna", "Oslo", "birth-place", "{e1} " + LONG_FILLER + " lived in {e2}.", "en"))
  en_train.append(row("en-neg", "Anna", "Rome", "no_relation", "{e1} liked {e2}.", "en"))
  de_train = [row(f"de{i}", f"Müller{i}", f"Köln{i}", "birth-place", "{e1} wurde in {e2} geboren.", "de")
              for i in range(8)]
  en_test = [row("t-en0", "Zoë", "Paris", "birth-place", "{e1} was born in {e2}.", "en"),
             row("t-en1", "Acme", "Bob", "org-has-founder", "{e2} founded {e1}.", "en")]
  de_test = [row("t-de0", "Jörg", "Bonn", "birth-place", "{e1} kam in {e2} zur Welt.", "de")]
  return [write_tsv(directory / "en_corpora_train.tsv", en_train), write_tsv(directory / "de_corpora_train.tsv", de_train),
          write_tsv(directory / "en_corpora_test.tsv", en_test), write_tsv(directory / "de_corpora_test.tsv", de_test)]


def all_files(directory: pathlib.Path) -> dict[str, bytes]:
  return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
  directory = tmp_path_factory.mktemp("corpus")
  tiny_corpus(directory)
  return directory


@pytest.fixture(scope="module")
def prepared(corpus, minilm_dir, tmp_path_factory) -> tuple[pathlib.Path, dict]:
  out = tmp_path_factory.mktemp("prepared") / "data"
  manifest = prepare.prepare([corpus], str(minilm_dir), out, max_seq_len=32, dev_fraction=0.25, seed=3,
                             progress=False)
  return out, manifest


def test_manifest_groups_languages_and_splits(prepared, minilm_dir):
  out, manifest = prepared
  assert manifest == prepare.load_manifest(out)
  assert manifest["labels"] == ["birth-place", "no_relation", "org-has-founder"]
  splits = manifest["splits"]
  # Stratified dev carving per language and label (9 + 4 + 1 en rows, 8 de rows at 25%).
  en_dev = {"birth-place": splits_lib.dev_count(9, 0.25), "org-has-founder": splits_lib.dev_count(4, 0.25)}
  assert splits["dev"]["en"]["labels"] == en_dev and splits_lib.dev_count(1, 0.25) == 0
  assert {s: {lang: info["count"] for lang, info in v.items()} for s, v in splits.items()} == {
      "train": {"de": 8 - splits_lib.dev_count(8, 0.25), "en": 14 - sum(en_dev.values())},
      "dev": {"de": splits_lib.dev_count(8, 0.25), "en": sum(en_dev.values())}, "test": {"de": 1, "en": 2}}
  assert splits["train"]["en"]["labels"]["no_relation"] == 1
  for split, by_lang in splits.items():
    for lang, info in by_lang.items():
      assert all(f.startswith(f"{split}/{lang}-") and (out / f).is_file() for f in info["files"])
      assert len(list(records.read_features([out / f for f in info["files"]]))) == info["count"]
  tok = manifest["tokenizer"]
  assert tok["source"] == str(minilm_dir) and tok["lowercase"] is True
  saved = tokenize.load_tokenizer(out / "tokenizer")
  assert (tok["cls_id"], tok["sep_id"], tok["pad_id"], tok["vocab_size"]) == (
      saved.cls_token_id, saved.sep_token_id, saved.pad_token_id, len(saved))
  for label, token in manifest["relation_tokens"].items():
    assert saved.encode(token, add_special_tokens=False) == [manifest["relation_token_ids"][label]]
    assert token.startswith("[unused")
  assert manifest["rejects"] == {"count": 0, "file": None}
  assert manifest["max_seq_len"] == 32


def test_records_hold_exact_spans_and_count_truncation(prepared, corpus):
  out, manifest = prepared
  truncated_total = sum(info["truncated_entities"] for by_lang in manifest["splits"].values()
                        for info in by_lang.values())
  assert truncated_total == 1  # the long sentence's entity 2
  by_id = {}
  for by_lang in manifest["splits"].values():
    for info in by_lang.values():
      by_id.update({f.id: f for f in records.read_features([out / f for f in info["files"]])})
  originals = {ex.id: ex for path in smiler.expand_inputs([corpus]) for ex in smiler.read_tsv(path)}
  assert set(by_id) == set(originals)
  for row_id, features in by_id.items():
    example = originals[row_id]
    assert features.label == manifest["labels"].index(example.label)
    assert len(features.input_ids) <= 32 - 2
    for which, entity in enumerate((example.e1_text, example.e2_text)):
      start, end = features.spans[2 * which:2 * which + 2]
      if start >= 0:
        assert features.text[features.offsets[start][0]:features.offsets[end][1]] == entity
  long = by_id["en-long"]
  assert long.truncated and long.spans[2:] == (-1, -1) and long.spans[0] == 1
  assert long.char_spans[2:] == (long.text.index("Oslo"), long.text.index("Oslo") + 4)


def test_same_inputs_give_identical_bytes(corpus, minilm_dir, tmp_path):
  tokenizer = tokenize.load_tokenizer(minilm_dir)
  first = prepare.prepare([corpus], tokenizer, tmp_path / "a", max_seq_len=32, dev_fraction=0.25, progress=False)
  second = prepare.prepare([corpus], tokenizer, tmp_path / "b", max_seq_len=32, dev_fraction=0.25, progress=False)
  assert first == second
  files_a, files_b = all_files(tmp_path / "a"), all_files(tmp_path / "b")
  assert files_a == files_b and "manifest.json" in files_a and "tokenizer/tokenizer.json" in files_a
  assert len(tokenizer) == 30522 and "[unused0]" not in tokenizer.added_tokens_encoder  # caller's copy untouched
  with pytest.raises(FileExistsError, match="--overwrite"):
    prepare.prepare([corpus], tokenizer, tmp_path / "a", max_seq_len=32, progress=False)
  again = prepare.prepare([corpus], tokenizer, tmp_path / "a", max_seq_len=32, dev_fraction=0.25, progress=False,
                          overwrite=True)
  assert again == first and all_files(tmp_path / "a") == files_b


def test_check_tokenizer_accepts_the_source_and_the_saved_tokenizer_only(prepared, minilm_dir, tmp_path):
  out, manifest = prepared
  prepare.check_tokenizer(manifest, str(minilm_dir))
  prepare.check_tokenizer(manifest, out / "tokenizer")
  other = tokenize.train_wordpiece(iter(["some other words entirely"] * 5), tmp_path / "wp", vocab_size=100)
  with pytest.raises(prepare.TokenizerMismatchError, match="made with tokenizer .*differs"):
    prepare.check_tokenizer(manifest, other)


def test_a_restart_skips_loading_an_unchanged_tokenizer_and_still_catches_a_changed_one(prepared, minilm_dir,
                                                                                         tmp_path, monkeypatch):
  out, _ = prepared
  data_dir = tmp_path / "data"
  shutil.copytree(out, data_dir)
  tokenizer_dir = tmp_path / "tokenizer"
  shutil.copytree(minilm_dir, tokenizer_dir, ignore=shutil.ignore_patterns("*.safetensors"))
  loads = []
  load = prepare.tokenize.load_tokenizer
  monkeypatch.setattr(prepare.tokenize, "load_tokenizer", lambda *a, **k: loads.append(a) or load(*a, **k))
  prepare.check_prepared_tokenizer(data_dir, tokenizer_dir)
  prepare.check_prepared_tokenizer(data_dir, tokenizer_dir)
  assert len(loads) == 1  # the second start found the same files
  vocab = tokenizer_dir / "vocab.txt"
  vocab.write_text(vocab.read_text(encoding="utf-8").replace("\nthe\n", "\nteh\n", 1), encoding="utf-8")
  (tokenizer_dir / "tokenizer.json").unlink()  # the slow vocabulary file is then what the tokenizer is built from
  with pytest.raises(prepare.TokenizerMismatchError, match="made with tokenizer .*differs"):
    prepare.check_prepared_tokenizer(data_dir, tokenizer_dir)
  assert len(loads) == 2


def test_skip_mode_writes_rejects_and_unknown_test_labels_are_bad_rows(corpus, minilm_dir, tmp_path):
  inputs = tmp_path / "in"
  inputs.mkdir()
  for path in corpus.glob("*.tsv"):
    (inputs / path.name).write_bytes(path.read_bytes())
  with (inputs / "en_corpora_train.tsv").open("a", encoding="utf-8") as handle:
    handle.write("bad1\tX\tY\tbirth-place\tno tags here\ten\n")
  with (inputs / "en_corpora_test.tsv").open("a", encoding="utf-8") as handle:
    handle.write("bad2\tA\tB\tnever-seen\t<e1>A</e1> and <e2>B</e2>\ten\n")
  with pytest.raises(smiler.DataError, match="en_corpora_train.tsv:16"):
    prepare.prepare([inputs], str(minilm_dir), tmp_path / "fail", progress=False)
  manifest = prepare.prepare([inputs], str(minilm_dir), tmp_path / "skip", on_error="skip", dev_fraction=0,
                             progress=False)
  assert manifest["rejects"] == {"count": 2, "file": "rejects.tsv"}
  assert manifest["rows"] == {"read": 27, "written": 25, "rejected": 2}
  rejects = (tmp_path / "skip" / "rejects.tsv").read_text(encoding="utf-8")
  assert "en_corpora_train.tsv:16" in rejects and "never-seen" in rejects
  assert manifest["splits"]["train"]["en"]["count"] == 14 and manifest["splits"]["test"]["en"]["count"] == 2
  assert "dev" not in manifest["splits"]  # dev_fraction 0 disables carving


def test_a_given_dev_file_is_used_as_is_and_row_languages_name_plain_files(minilm_dir, tmp_path):
  inputs = tmp_path / "in"
  inputs.mkdir()
  write_tsv(inputs / "train.tsv", [row(f"{lang}{i}", f"P{i}", f"C{i}", "birth-place", "{e1} born in {e2}.", lang)
                                   for lang in ("fr", "it") for i in range(6)])
  write_tsv(inputs / "mine_dev.tsv", [row("d0", "Q", "R", "birth-place", "{e1} born in {e2}.", "fr")])
  manifest = prepare.prepare([inputs], str(minilm_dir), tmp_path / "out", dev_fraction=0.5, progress=False)
  counts = {s: {lang: i["count"] for lang, i in v.items()} for s, v in manifest["splits"].items()}
  assert counts == {"train": {"fr": 6, "it": 3}, "dev": {"fr": 1, "it": 3}}
  write_tsv(inputs / "notes.tsv", [])
  with pytest.raises(smiler.DataError, match="notes.tsv: cannot tell the split"):
    prepare.prepare([inputs], str(minilm_dir), tmp_path / "out2", progress=False)


def test_cli_writes_the_same_manifest(corpus, minilm_dir, tmp_path, capsys):
  code = cli.invoke(prepare_cli.main, ["--input", str(corpus), "--tokenizer", str(minilm_dir), "--out",
                                       str(tmp_path / "cli"), "--max_seq_len", "32", "--dev_fraction", "0.25",
                                       "--seed", "3", "--shards_per_split", "2"], positional=True)
  assert code == 0
  manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
  assert manifest["splits"]["train"]["en"]["files"] == ["train/en-00000-of-00002.tfrecord",
                                                        "train/en-00001-of-00002.tfrecord"]
  out = capsys.readouterr().out
  assert "train: de 6, en 11" in out and "rows: 25 read, 25 written, 0 rejected" in out
  assert cli.invoke(prepare_cli.main, ["--input", str(tmp_path / "absent"), "--tokenizer", str(minilm_dir), "--out",
                                       str(tmp_path / "x")], positional=True) == 2
  err = capsys.readouterr().err
  assert "no such file or directory" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_semeval_every_row_prepared_with_exact_entity_spans(semeval_dir, minilm_dir, tmp_path):
  manifest = prepare.prepare([semeval_dir / "train.tsv", semeval_dir / "test.tsv"], str(minilm_dir), tmp_path / "out",
                             dev_fraction=0, progress=False)
  splits = manifest["splits"]
  assert splits["train"]["en"]["count"] == 8000 and splits["test"]["en"]["count"] == 2717
  assert len(manifest["labels"]) == 19 and "no_relation" in manifest["labels"]
  gold = {ex.id: ex for name in ("train.tsv", "test.tsv") for ex in smiler.read_tsv(semeval_dir / name)}
  seen = 0
  for split in ("train", "test"):
    for features in records.read_features([tmp_path / "out" / f for f in splits[split]["en"]["files"]]):
      example = gold[features.id]
      assert features.text == example.text and features.label == manifest["labels"].index(example.label)
      assert not features.truncated and min(features.spans) >= 1
      s1, e1, s2, e2 = features.spans
      assert features.text[features.offsets[s1][0]:features.offsets[e1][1]] == example.e1_text, features.id
      assert features.text[features.offsets[s2][0]:features.offsets[e2][1]] == example.e2_text, features.id
      seen += 1
  assert seen == 10717


@pytest.mark.parametrize("fraction,seed", [(0.02, 0), (0.25, 3), (0.5, 11)])
def test_the_streaming_dev_carver_picks_the_rows_carve_dev_picks(fraction, seed):
  import random
  draw = random.Random(seed)
  labels = [draw.choice(["a", "b", "c", "no_relation"]) for _ in range(500)] + ["lonely"]
  examples = [Example(id=str(i), text="x y", e1=(0, 1), e2=(2, 3), label=label, lang="en")
              for i, label in enumerate(labels)]
  _, dev = splits_lib.carve_dev(examples, fraction, seed)
  counts = collections.Counter(labels)
  carver = splits_lib.DevCarver(counts, fraction, seed)
  streamed = [ex for ex in examples if carver.is_dev(ex.label)]
  assert streamed == dev and carver.dev_rows == len(dev)
  assert collections.Counter(ex.label for ex in dev) == {
      label: splits_lib.dev_count(n, fraction) for label, n in counts.items() if splits_lib.dev_count(n, fraction)}
  other_seed = [ex for ex in examples if splits_lib.DevCarver(counts, fraction, seed + 1).is_dev(ex.label)]
  assert [ex.id for ex in other_seed] != [ex.id for ex in dev]


def test_prepare_carves_from_a_stream_the_dev_rows_carve_dev_picks_per_language(minilm_dir, tmp_path):
  # Two languages interleaved in one plain file (each language's rows are read back in a pass of their own), and
  # a second file: the carved dev rows of each language are those carve_dev picks from its rows in file order.
  labels = ["birth-place", "org-has-founder", "no_relation"]
  first = [row(f"{lang}{i}", f"P{i}", f"C{i}", labels[i % 3 if lang == "fr" else (i // 2) % 3],
               "{e1} born in {e2}.", lang) for i in range(40) for lang in ("fr", "it")]
  second = [row(f"b-fr{i}", f"Q{i}", f"D{i}", labels[i % 2], "{e2} has {e1}.", "fr") for i in range(17)]
  write_tsv(tmp_path / "a_train.tsv", first)
  write_tsv(tmp_path / "b_train.tsv", second)
  out = tmp_path / "out"
  manifest = prepare.prepare([tmp_path / "a_train.tsv", tmp_path / "b_train.tsv"], str(minilm_dir), out,
                             dev_fraction=0.2, seed=9, progress=False)
  for lang in ("fr", "it"):
    rows = [ex for name in ("a_train.tsv", "b_train.tsv") for ex in smiler.read_tsv(tmp_path / name)
            if ex.lang == lang]
    train, dev = splits_lib.carve_dev(rows, 0.2, 9)
    for split, expected in (("train", train), ("dev", dev)):
      files = [out / f for f in manifest["splits"][split][lang]["files"]]
      assert sorted(f.id for f in records.read_features(files)) == sorted(ex.id for ex in expected)
      assert manifest["splits"][split][lang]["count"] == len(expected)
