"""The embedded demo corpus: deterministic, multilingual, varied, and readable by the SMiLER reader."""

import collections
import re

import pytest

from herberta_jax.data import demo_corpus, smiler
from herberta_jax.data.example import NEGATIVE_LABEL

ROUGH_TOKEN = re.compile(r"\w+|[^\w\s]")


@pytest.fixture(scope="module")
def rows():
  return demo_corpus.generate(seed=0)


def test_deterministic_for_a_seed(rows):
  assert demo_corpus.generate(seed=0) == rows
  assert demo_corpus.generate(seed=1) != rows


def test_languages_labels_and_splits(rows):
  assert len(rows) == 7 * 700
  by_lang = collections.Counter(row["lang"] for row in rows)
  assert set(by_lang) >= {"en", "de", "fr", "it", "es", "ru", "ko"} and set(by_lang.values()) == {700}
  for lang in by_lang:
    labels = collections.Counter(row["label"] for row in rows if row["lang"] == lang)
    assert NEGATIVE_LABEL in labels
    assert len(labels) >= 13 and min(labels.values()) >= 30
    assert set(labels) <= set(smiler.SMILER_LABELS)
    test_share = sum(row["split"] == "test" for row in rows if row["lang"] == lang) / 700
    assert 0.13 <= test_share <= 0.17
  assert len({row["id"] for row in rows}) == len(rows)
  assert all(re.search("[а-яА-Я]", row["text"]) for row in rows if row["lang"] == "ru")
  assert all(re.search("[가-힣]", row["text"]) for row in rows if row["lang"] == "ko")


def test_templates_are_filled_and_varied(rows):
  for row in rows:
    assert not re.search(r"[{}\[\]]", row["text"]), row["text"]
  e2_first = [row for row in rows if row["text"].index("<e2>") < row["text"].index("<e1>")]
  assert 0.1 < len(e2_first) / len(rows) < 0.6
  shapes = collections.defaultdict(set)  # distinct sentence shapes per (lang, label), entities masked
  for row in rows:
    shape = re.sub(r"<e([12])>.*?</e\1>", r"E\1", row["text"].split(". ")[0])
    shapes[row["lang"], row["label"]].add(shape)
  assert min(len(s) for s in shapes.values()) >= 3
  long_share = sum(len(ROUGH_TOKEN.findall(row["text"])) > 128 for row in rows) / len(rows)
  assert 0.02 < long_share < 0.1


def test_written_files_parse_back_exactly(tmp_path, rows):
  paths = demo_corpus.write_demo_corpus(tmp_path, seed=0)
  assert [p.name for p in paths] == sorted(f"{lang}_corpora_{split}.tsv" for lang in demo_corpus.LANGUAGES
                                           for split in ("train", "test"))
  assert all(smiler.parse_file_name(p)[1] in ("train", "test") for p in paths)
  by_id = {row["id"]: row for row in rows}
  parsed = [ex for path in paths for ex in smiler.read_tsv(path)]
  assert len(parsed) == len(rows)
  for example in parsed:
    row = by_id[example.id]
    assert (example.e1_text, example.e2_text) == (row["entity_1"], row["entity_2"])
    assert (example.label, example.lang) == (row["label"], row["lang"])
    assert example.text == smiler.TAG.sub("", row["text"])
    assert smiler.parse_file_name(example.source.rsplit(":", 1)[0])[1] == row["split"]
  assert any('"' in row["text"] for row in rows)  # the quoting path is exercised


def test_small_corpus_and_argument_check(tmp_path):
  small = demo_corpus.generate(seed=5, sentences_per_language=4)
  assert len(small) == 28
  for lang in demo_corpus.LANGUAGES:
    assert {row["split"] for row in small if row["lang"] == lang} == {"train", "test"}
  with pytest.raises(ValueError, match="sentences_per_language=1"):
    demo_corpus.generate(sentences_per_language=1)
