"""Tokenization (spans through offsets, truncation, relation tokens, WordPiece, fingerprints) and TFRecord I/O."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from herberta_jax.data import records, smiler, tokenize
from herberta_jax.data.example import Example


@pytest.fixture(scope="module")
def minilm(minilm_dir):
  return tokenize.load_tokenizer(minilm_dir)


def tagged_example(tagged: str, label: str = "r1", lang: str = "en", row_id: str = "1") -> Example:
  """An Example from a `<e1>..</e1>`-tagged sentence, as the SMiLER reader makes it."""
  text, e1, e2 = smiler.strip_tags(tagged)
  return Example(id=row_id, text=text, e1=e1, e2=e2, label=label, lang=lang, source=f"t:{row_id}")


def entity_via_offsets(features, which: int) -> str:
  start, end = features.spans[2 * which], features.spans[2 * which + 1]
  return features.text[features.offsets[start][0]:features.offsets[end][1]]


def test_spans_map_through_offsets_exactly(minilm):
  examples = [
      tagged_example("The <e1>cat</e1> sat on the <e2>mat</e2>."),
      tagged_example("<e2>São Paulo</e2> is the birthplace of <e1>Zoë Müller-Lüdenscheidt</e1>, a painter."),
      tagged_example("Der   <e1>Fußballverein</e1>\twurde in <e2>Köln (NRW)</e2> gegründet."),
  ]
  features = tokenize.encode(examples, minilm, max_seq_len=64, label_ids={"r1": 0})
  assert features[0].input_ids[0] == minilm.cls_token_id and features[0].input_ids[-1] == minilm.sep_token_id
  # "[CLS] the cat sat on the mat . [SEP]": cat is token 2, mat token 6.
  assert features[0].spans == (2, 2, 6, 6)
  assert minilm.convert_ids_to_tokens(list(features[0].input_ids)) == [
      "[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"]
  for example, row in zip(examples, features):
    assert not row.truncated
    assert row.offsets[0] == (0, 0) and row.offsets[-1] == (0, 0)
    assert len(row.offsets) == len(row.input_ids)
    assert entity_via_offsets(row, 0) == example.e1_text  # exact on the original (cased, accented) text
    assert entity_via_offsets(row, 1) == example.e2_text
    assert row.char_spans == (*example.e1, *example.e2)
    assert row.spans[1] - row.spans[0] >= 0 and row.spans[3] - row.spans[2] >= 0
  # Multi-piece entities really span several tokens.
  assert features[1].spans[1] > features[1].spans[0]


def test_an_entity_inside_a_word_takes_the_covering_tokens(minilm):
  [row] = tokenize.encode([tagged_example("The <e1>net</e1>work failed near <e2>Oslo</e2>.")], minilm, 64, {"r1": 0})
  start, end = row.spans[0], row.spans[1]
  assert row.offsets[start][0] <= 4 and row.offsets[end][1] >= 7  # covers "net", may reach into "work"
  assert entity_via_offsets(row, 1) == "Oslo"


def test_truncation_cuts_to_leave_room_for_the_tagger_and_marks_cut_entities(minilm):
  words = [f"w{i}" for i in range(30)]
  words[1] = "<e1>alpha</e1>"
  words[6], words[7] = "<e2>gamma", "delta</e2>"  # straddles the cut below (8 sentence tokens)
  straddling = tagged_example(" ".join(words))
  words = [f"w{i}" for i in range(30)]
  words[2], words[25] = "<e1>alpha</e1>", "<e2>omega</e2>"
  far = tagged_example(" ".join(words))
  short = tagged_example("<e1>alpha</e1> and <e2>omega</e2>")
  max_seq_len = 12
  cut_straddling, cut_far, kept = tokenize.encode([straddling, far, short], minilm, max_seq_len, {"r1": 0})
  for row in (cut_straddling, cut_far):
    assert len(row.input_ids) == max_seq_len - 2  # [CLS] + 8 tokens + [SEP]: the tagger's 2 extra tokens fit
    assert row.input_ids[-1] == minilm.sep_token_id
    assert row.truncated
  assert cut_straddling.spans[2:] == (-1, -1) and cut_straddling.spans[0] >= 1
  assert entity_via_offsets(cut_straddling, 0) == "alpha"
  assert cut_far.spans[2:] == (-1, -1) and entity_via_offsets(cut_far, 0) == "alpha"
  assert cut_far.char_spans == (*far.e1, *far.e2)  # character spans survive for scoring
  assert not kept.truncated and kept.spans[0] == 1


def test_encode_rejects_an_unknown_label_and_a_tiny_max_seq_len(minilm):
  example = tagged_example("<e1>a</e1> b <e2>c</e2>", label="mystery")
  with pytest.raises(ValueError, match="t:1.*mystery"):
    tokenize.encode([example], minilm, 32, {"r1": 0})
  with pytest.raises(ValueError, match="max_seq_len"):
    tokenize.encode([example], minilm, 6, {"mystery": 0})


def test_relation_tokens_reuse_unused_tokens_and_stay_whole(minilm_dir):
  tokenizer = tokenize.load_tokenizer(minilm_dir)
  before = tokenizer.convert_tokens_to_ids(["[unused0]", "[unused1]", "[unused2]"])
  size = len(tokenizer)
  assert len(tokenizer.tokenize("[unused1]")) > 1  # split into pieces until registered
  mapping = tokenize.add_relation_tokens(tokenizer, ["b-rel", "a-rel", "no_relation"])
  assert mapping == {"b-rel": "[unused0]", "a-rel": "[unused1]", "no_relation": "[unused2]"}
  assert len(tokenizer) == size  # no new ids
  assert tokenizer.convert_tokens_to_ids(list(mapping.values())) == before
  for token in mapping.values():
    assert tokenizer.encode(token, add_special_tokens=False) == [tokenizer.convert_tokens_to_ids(token)]
  assert tokenize.add_relation_tokens(tokenizer, ["b-rel", "a-rel", "no_relation"]) == mapping  # idempotent
  assert len(tokenizer) == size


def test_wordpiece_training_and_new_relation_tokens_when_unused_run_out(tmp_path):
  texts = ["Anna Weber was born in Berlin.", "Der Hund heißt Bello.", "Paris est une ville."] * 20
  tokenizer = tokenize.train_wordpiece(iter(texts), tmp_path / "wp", vocab_size=300)
  assert tokenizer.convert_ids_to_tokens(list(range(6))) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                             "[unused0]"]
  assert tokenizer.convert_tokens_to_ids("[unused63]") == 5 + 63
  assert tokenizer.tokenize("Anna Weber")[0] == "Anna"  # cased by default
  assert tokenize.is_lowercase(tokenize.train_wordpiece(iter(texts), tmp_path / "wp_lower", 300, lowercase=True))
  # Learned pieces are numbered in sorted order after the reserved ones (the trainer's own order varies by run).
  learned = tokenizer.convert_ids_to_tokens(list(range(5 + 64, len(tokenizer))))
  assert learned == sorted(learned) and "Berlin" in learned

  size = len(tokenizer)
  labels = [f"rel{i}" for i in range(70)]  # more than the 64 reserved tokens
  mapping = tokenize.add_relation_tokens(tokenizer, labels)
  assert mapping["rel0"] == "[REL_0]" and mapping["rel69"] == "[REL_69]"
  assert len(tokenizer) == size + 70
  ids = [tokenizer.encode(t, add_special_tokens=False) for t in mapping.values()]
  assert all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == 70


def test_wordpiece_splits_korean_words_so_entities_ending_before_a_particle_stay_exact(tmp_path):
  texts = ["새별제약은 최현우를 새 회장으로 선임했다.", "장현우는 딸 강다은을 키웠다."] * 20
  tokenizer = tokenize.train_wordpiece(iter(texts), tmp_path / "wp", vocab_size=300)
  assert tokenizer.tokenize("새별제약은") == ["새", "##별", "##제", "##약", "##은"]
  text = "새별제약은 최현우를 새 회장으로 선임했다."
  example = Example(id="ko-1", lang="ko", text=text, label="org-leader", e1=(0, 4), e2=(6, 9))
  [features] = tokenize.encode([example], tokenizer, 32, {"org-leader": 0})
  offsets = features.offsets
  e1_start, e1_end = features.spans[0], features.spans[1]
  assert (offsets[e1_start][0], offsets[e1_end][1]) == (0, 4)  # "새별제약", without "은"


def test_fingerprint_follows_vocabulary_and_added_tokens_and_survives_saving(minilm_dir, tmp_path):
  tokenizer = tokenize.load_tokenizer(minilm_dir)
  original = tokenize.tokenizer_fingerprint(tokenizer)
  assert tokenize.tokenizer_fingerprint(tokenize.load_tokenizer(minilm_dir)) == original
  tokenize.add_relation_tokens(tokenizer, ["x"])
  registered = tokenize.tokenizer_fingerprint(tokenizer)
  assert registered != original
  tokenizer.save_pretrained(str(tmp_path / "saved"))
  assert tokenize.tokenizer_fingerprint(tokenize.load_tokenizer(tmp_path / "saved")) == registered
  wordpiece = tokenize.train_wordpiece(iter(["a b c"] * 5), tmp_path / "wp", vocab_size=100)
  assert tokenize.tokenizer_fingerprint(wordpiece) != original


def test_load_tokenizer_says_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such directory"):
    tokenize.load_tokenizer(tmp_path / "absent")


def test_records_round_trip_round_robin_and_bytes_are_reproducible(minilm, tmp_path):
  examples = [tagged_example(f"<e1>Item{i}</e1> belongs to <e2>group {i % 3}</e2>.", row_id=str(i),
                             label="r1" if i % 2 else "r2") for i in range(10)]
  features = tokenize.encode(examples, minilm, 32, {"r1": 0, "r2": 1})
  features[3] = dataclasses.replace(features[3], truncated=True, spans=(1, 2, -1, -1))
  paths = records.write_shards(features, tmp_path / "a", "en", num_shards=3)
  assert [p.name for p in paths] == [f"en-0000{i}-of-00003.tfrecord" for i in range(3)]
  back = list(records.read_features(paths))
  assert [f.id for f in back] == ["0", "3", "6", "9", "1", "4", "7", "2", "5", "8"]  # row i -> shard i % 3
  assert sorted(back, key=lambda f: int(f.id)) == features
  again = records.write_shards(features, tmp_path / "b", "en", num_shards=3)
  assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]

  chunk = records.parse_chunk([records.serialize(f) for f in features[:4]])
  splits = chunk["row_splits"]
  for i, row in enumerate(features[:4]):
    assert tuple(chunk["ids"][splits[i]:splits[i + 1]]) == row.input_ids
    assert [tuple(o) for o in chunk["offsets"][splits[i]:splits[i + 1]]] == list(row.offsets)
    assert tuple(chunk["spans"][i]) == row.spans and bool(chunk["truncated"][i]) == row.truncated
    assert chunk["id"][i] == row.id and chunk["text"][i] == row.text and chunk["label"][i] == row.label
  with pytest.raises(ValueError, match="num_shards"):
    records.write_shards(features, tmp_path / "c", "en", num_shards=0)


_TRAIN_IN_A_FRESH_PROCESS = """
import sys
from herberta_jax.data import demo_corpus, tokenize
rows = demo_corpus.generate(seed=0, sentences_per_language=200)
tokenize.train_wordpiece((row["text"] for row in rows), sys.argv[1], vocab_size=8000)
"""


@pytest.mark.slow  # three processes
def test_wordpiece_vocabulary_is_the_same_in_every_process(tmp_path):
  # The trainer's tie-breaking follows a hash map's order, which each process draws anew: train three times in
  # fresh processes on the demo corpus's sentences (where that changed about a hundred pieces) and compare.
  vocabularies = []
  for run in range(3):
    out = tmp_path / f"wp{run}"
    subprocess.run([sys.executable, "-c", _TRAIN_IN_A_FRESH_PROCESS, str(out)], check=True)
    vocabularies.append(tokenize.load_tokenizer(out).get_vocab())
  assert len(vocabularies[0]) > 1000
  assert vocabularies[1] == vocabularies[0] and vocabularies[2] == vocabularies[0]
