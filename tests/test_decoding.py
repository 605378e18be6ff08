"""Span decoding against a brute-force enumeration, plus the host helpers."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from herberta_jax.data import smiler
from herberta_jax.model import decoding as spans


def _log_softmax(x, mask):
  x = np.where(mask, x, -np.inf)
  peak = x[mask].max()
  return x - peak - np.log(np.exp(x[mask] - peak).sum())


def _brute_force(start, end, mask, max_span_len):
  """Every valid span of one row with its score, best first."""
  mask = mask.astype(bool)
  ls, le = _log_softmax(start, mask), _log_softmax(end, mask)
  found = [(ls[s] + le[e], s, e) for s in range(len(start)) for e in range(s, min(s + max_span_len, len(start)))
           if mask[s] and mask[e]]
  return sorted(found, key=lambda t: -t[0])


@pytest.mark.parametrize("max_len", [1, 3, 50])  # 50: longer than the sequence
def test_best_spans_match_brute_force_top_m(max_len):
  rng = np.random.default_rng(max_len)
  batch, length, top_m = 3, 9, 3
  start = rng.normal(size=(batch, length)).astype(np.float32) * 3
  end = rng.normal(size=(batch, length)).astype(np.float32) * 3
  mask = np.zeros((batch, length), np.int32)
  mask[0, 2:8] = 1
  mask[1, 1:4] = 1
  mask[2, :] = 1
  fn = jax.jit(lambda a, b, m: spans.best_spans(a, b, m, max_span_len=max_len, top_m=top_m))
  starts, ends, scores = (np.asarray(x) for x in fn(start, end, mask))
  assert starts.shape == ends.shape == scores.shape == (batch, top_m)
  for row in range(batch):
    expected = _brute_force(start[row], end[row], mask[row], max_len)[:top_m]
    np.testing.assert_allclose(scores[row], [t[0] for t in expected], rtol=1e-5)
    assert list(zip(starts[row], ends[row])) == [(t[1], t[2]) for t in expected]
    # Validity: inside the mask, ordered, short enough.
    for s, e in zip(starts[row], ends[row]):
      assert mask[row, s] and mask[row, e] and s <= e < s + max_len


def test_best_spans_respects_band_even_against_strong_logits():
  # Unconstrained, start 5 / end 1 would win (end before start), then start 0 / end 7 (8 tokens, too long).
  start = np.full((1, 8), -5.0, np.float32)
  end = np.full((1, 8), -5.0, np.float32)
  start[0, 5], start[0, 0] = 10.0, 4.0
  end[0, 1], end[0, 7] = 10.0, 9.0
  mask = np.ones((1, 8), bool)
  s, e, _ = spans.best_spans(start, end, mask, max_span_len=3, top_m=1)
  assert (int(s[0, 0]), int(e[0, 0])) == (5, 7)
  s, e, _ = spans.best_spans(start, end, mask, max_span_len=8, top_m=1)
  assert (int(s[0, 0]), int(e[0, 0])) == (5, 7)  # still: (0, 7) scores 4 + 9 < 10 + 9
  s, e, _ = spans.best_spans(start, end, mask, max_span_len=1, top_m=1)
  assert int(s[0, 0]) == int(e[0, 0])  # single tokens only


def test_best_spans_marks_missing_candidates():
  start = np.zeros((2, 5), np.float32)
  end = np.zeros((2, 5), np.float32)
  mask = np.array([[0, 0, 0, 0, 0], [0, 1, 1, 0, 0]])
  s, e, score = (np.asarray(x) for x in spans.best_spans(start, end, mask, max_span_len=4, top_m=4))
  assert np.all(s[0] == -1) and np.all(e[0] == -1) and np.all(np.isneginf(score[0]))
  # Row 1 has three valid spans: (1,1), (1,2), (2,2); the fourth candidate does not exist.
  assert sorted(zip(s[1, :3], e[1, :3])) == [(1, 1), (1, 2), (2, 2)]
  assert s[1, 3] == -1 and np.isneginf(score[1, 3]) and np.all(np.isfinite(score[1, :3]))
  assert not np.any(np.isnan(score))


def test_top_m_past_a_short_rows_candidates_pads_with_missing_spans_as_the_pytorch_pipeline_does():
  import torch

  from herberta_jax.hub import herberta_pipeline as hp
  rng = np.random.default_rng(3)
  start, end = (rng.normal(size=(2, 4)).astype(np.float32) for _ in range(2))
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
  got = [np.asarray(x) for x in spans.best_spans(start, end, mask, max_span_len=2, top_m=11)]  # 8 spans exist
  want = [x.numpy() for x in hp.best_spans(torch.tensor(start), torch.tensor(end), torch.tensor(mask),
                                           max_span_len=2, top_m=11)]
  assert got[0].shape == (2, 11)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])
  np.testing.assert_allclose(got[2], want[2], rtol=1e-6)
  assert np.all(got[0][0, 7:] == -1) and np.all(np.isneginf(got[2][0, 7:]))  # 7 valid spans in row 0
  assert np.all(np.isfinite(got[2][0, :7]))


def test_best_spans_rejects_bad_arguments():
  x = np.zeros((2, 4), np.float32)
  with pytest.raises(ValueError, match="max_span_len"):
    spans.best_spans(x, x, x, max_span_len=0)
  with pytest.raises(ValueError, match="top_m"):
    spans.best_spans(x, x, x, max_span_len=2, top_m=0)
  with pytest.raises(ValueError, match="shape"):
    spans.best_spans(x, x[:, :3], x, max_span_len=2)


def test_best_entity_pairs_is_the_exact_top_m_of_all_pairs():
  rng = np.random.default_rng(1)
  batch, length, max_len, top_m = 2, 7, 3, 3
  logits = rng.normal(size=(batch, length, 4)).astype(np.float32) * 2
  mask = np.zeros((batch, length), np.int32)
  mask[0, 1:6] = 1
  mask[1, 2:7] = 1
  out = jax.jit(lambda x, m: spans.best_entity_pairs(x, m, max_span_len=max_len, top_m=top_m))(logits, mask)
  out = {k: np.asarray(v) for k, v in out.items()}
  assert set(out) == {"e1_start", "e1_end", "e2_start", "e2_end", "score", "e1_score", "e2_score"}
  np.testing.assert_allclose(out["e1_score"] + out["e2_score"], out["score"], rtol=1e-6)
  for row in range(batch):
    e1 = _brute_force(logits[row, :, 0], logits[row, :, 1], mask[row], max_len)
    e2 = _brute_force(logits[row, :, 2], logits[row, :, 3], mask[row], max_len)
    pairs = sorted(((a[0] + b[0], a[1], a[2], b[1], b[2]) for a, b in itertools.product(e1, e2)),
                   key=lambda t: -t[0])[:top_m]
    np.testing.assert_allclose(out["score"][row], [p[0] for p in pairs], rtol=1e-5)
    np.testing.assert_allclose(out["e1_score"][row], [e1[[x[1:] for x in e1].index(p[1:3])][0] for p in pairs],
                               rtol=1e-5)
    got = list(zip(out["e1_start"][row], out["e1_end"][row], out["e2_start"][row], out["e2_end"][row]))
    assert got == [p[1:] for p in pairs]


ALLOWED_PAIRS = {  # (score, start, end) spans of entity 1 and entity 2 -> whether the rule keeps the pair
    "disjoint": lambda a, b: a[2] < b[1] or b[2] < a[1],
    "ordered": lambda a, b: a[2] < b[1],
}


@pytest.mark.parametrize("rule", ["disjoint", "ordered"])
def test_constrained_pairs_are_the_exact_top_m_of_the_allowed_pairs_when_every_span_is_a_candidate(rule):
  rng = np.random.default_rng(2)
  batch, length, max_len, top_m = 3, 6, 3, 4
  logits = rng.normal(size=(batch, length, 4)).astype(np.float32) * 2
  logits[:, :, 2:] = logits[:, :, :2] + rng.normal(size=(batch, length, 2)) * 0.3  # both entities like one spot
  mask = np.ones((batch, length), np.int32)
  mask[:, 0] = 0
  every_span = length * max_len
  out = spans.best_entity_pairs(logits, mask, max_span_len=max_len, top_m=top_m, disjoint=rule == "disjoint",
                                ordered=rule == "ordered", candidates=every_span)
  independent = spans.best_entity_pairs(logits, mask, max_span_len=max_len, top_m=1)
  overlapping_rows = 0
  for row in range(batch):
    e1 = _brute_force(logits[row, :, 0], logits[row, :, 1], mask[row], max_len)
    e2 = _brute_force(logits[row, :, 2], logits[row, :, 3], mask[row], max_len)
    pairs = sorted(((a[0] + b[0], a[1], a[2], b[1], b[2]) for a, b in itertools.product(e1, e2)
                    if ALLOWED_PAIRS[rule](a, b)), key=lambda t: -t[0])[:top_m]
    np.testing.assert_allclose(out["score"][row], [p[0] for p in pairs], rtol=1e-5)
    np.testing.assert_allclose(out["e1_score"][row], [e1[[x[1:] for x in e1].index(p[1:3])][0] for p in pairs],
                               rtol=1e-5)
    got = list(zip(out["e1_start"][row], out["e1_end"][row], out["e2_start"][row], out["e2_end"][row]))
    assert got == [p[1:] for p in pairs]
    e1_span = (int(independent["e1_start"][row, 0]), int(independent["e1_end"][row, 0]))
    e2_span = (int(independent["e2_start"][row, 0]), int(independent["e2_end"][row, 0]))
    overlapping_rows += e1_span[0] <= e2_span[1] and e2_span[0] <= e1_span[1]
  assert overlapping_rows > 0, "the data should make independent decoding overlap somewhere"


def test_disjoint_pairs_fall_back_to_independent_decoding_when_every_pair_overlaps():
  logits = np.zeros((1, 5, 4), np.float32)
  mask = np.array([[0, 0, 1, 0, 0]])  # one token: both entities can only be (2, 2)
  out = spans.best_entity_pairs(logits, mask, max_span_len=3, disjoint=True)
  assert [int(out[k][0, 0]) for k in ("e1_start", "e1_end", "e2_start", "e2_end")] == [2, 2, 2, 2]
  assert np.isfinite(out["score"][0, 0])


def test_best_entity_pairs_accepts_bfloat16_and_checks_channels():
  logits = np.zeros((1, 5, 4), np.float32)
  logits[0, 1, 0] = logits[0, 2, 1] = logits[0, 3, 2] = logits[0, 3, 3] = 8.0
  out = spans.best_entity_pairs(jax.numpy.asarray(logits, jax.numpy.bfloat16), np.ones((1, 5)), max_span_len=4)
  assert [int(out[k][0, 0]) for k in ("e1_start", "e1_end", "e2_start", "e2_end")] == [1, 2, 3, 3]
  assert out["score"].dtype == np.float32
  with pytest.raises(ValueError, match=r"\[B, L, 4\]"):
    spans.best_entity_pairs(np.zeros((1, 5, 3)), np.ones((1, 5)), max_span_len=4)


def test_token_span_to_chars():
  offsets = np.array([[0, 0], [0, 3], [4, 9], [9, 10], [0, 0]])
  assert spans.token_span_to_chars(offsets, 1, 1) == (0, 3)
  assert spans.token_span_to_chars(offsets, 2, 3) == (4, 10)
  assert spans.token_span_to_chars(offsets.tolist(), 1, 3) == (0, 10)
  assert spans.token_span_to_chars(offsets, -1, -1) == (0, 0)  # the "no span" marker
  with pytest.raises(ValueError, match="not within"):
    spans.token_span_to_chars(offsets, 3, 2)
  with pytest.raises(ValueError, match="not within"):
    spans.token_span_to_chars(offsets, 2, 5)
  with pytest.raises(ValueError, match="special or padding"):
    spans.token_span_to_chars(offsets, 2, 4)


@pytest.mark.parametrize("e1, e2, expected", [
    ((0, 4), (9, 14), "<e1>John</e1> met <e2>Maria</e2> in Rome."),
    ((18, 22), (0, 4), "<e2>John</e2> met Maria in <e1>Rome</e1>."),
    ((18, 22), (22, 23), "John met Maria in <e1>Rome</e1><e2>.</e2>"),  # adjacent, not overlapping
    ((0, 8), (5, 14), "<e1>John met</e1> Maria in Rome."),  # overlap: only e1 is tagged
    ((0, 4), (0, 4), "<e1>John</e1> met Maria in Rome."),
    ((0, 0), (9, 14), "John met <e2>Maria</e2> in Rome."),  # empty span: untagged
])
def test_tag_text(e1, e2, expected):
  text = "John met Maria in Rome."
  tagged = spans.tag_text(text, e1, e2)
  assert tagged == expected
  if "<e1>" in tagged and "<e2>" in tagged:
    # What we write, the SMiLER reader reads back to the same text and spans.
    assert smiler.strip_tags(tagged) == (text, e1, e2)


def test_tag_text_rejects_spans_outside_the_text():
  with pytest.raises(ValueError, match="e2 span"):
    spans.tag_text("short", (0, 1), (3, 9))
  with pytest.raises(ValueError, match="e1 span"):
    spans.tag_text("short", (3, 2), (0, 1))
