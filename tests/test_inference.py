"""The jitted two-stage function equals running the two models one after the other on the host."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from herberta_jax.inference import two_stage
from herberta_jax.model import inputs as model_inputs
from herberta_jax.model.bert import BertConfig
from herberta_jax.model.heads import EntityTagger, RelationClassifier

CLS, SEP, PAD = 2, 3, 0
NUM_LABELS = 5
RELATION_TOKENS = [10, 11, 12, 13, 14]


def tiny_models():
  config = BertConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                      max_position_embeddings=64)
  relation, tagger = RelationClassifier(config, num_labels=NUM_LABELS), EntityTagger(config)
  ids = jnp.ones((1, 8), jnp.int32)
  rel_params = relation.init(jax.random.PRNGKey(0), ids, ids)["params"]
  tag_params = tagger.init(jax.random.PRNGKey(1), ids, ids, jnp.zeros_like(ids), ids)["params"]
  return relation, rel_params, tagger, tag_params


def batch_of_sentences(rng, lengths, width):
  ids = np.full((len(lengths), width), PAD, np.int32)
  for row, n in enumerate(lengths):
    ids[row, :n + 2] = [CLS] + list(rng.integers(20, 64, size=n)) + [SEP]
  return ids, (ids != PAD).astype(np.int32)


def host_best_span(start, end, allowed, max_span_len):
  """Brute force over every (start, end) pair: the reference for on-device span decoding."""
  positions = np.flatnonzero(allowed)
  log_start = start[positions] - np.logaddexp.reduce(start[positions])
  log_end = end[positions] - np.logaddexp.reduce(end[positions])
  best = max(((log_start[i] + log_end[j], positions[i], positions[j])
              for i, j in itertools.product(range(len(positions)), repeat=2)
              if positions[i] <= positions[j] < positions[i] + max_span_len), key=lambda t: t[0])
  return best


def test_jitted_pipeline_equals_sequential_host_run():
  relation, rel_params, tagger, tag_params = tiny_models()
  build = model_inputs.TaggerInputs(RELATION_TOKENS, cls_id=CLS, sep_id=SEP, pad_id=PAD, two_segments=True)
  fn = two_stage.make_two_stage_fn(relation, tagger, build, top_k=1, top_m=1, max_span_len=4)
  ids, mask = batch_of_sentences(np.random.default_rng(0), [5, 9, 3, 12], width=16)
  out = jax.device_get(fn(rel_params, tag_params, ids, mask))

  # Stage 1 on its own, back to the host.
  logits = np.asarray(relation.apply({"params": rel_params}, ids, mask))
  predicted = logits.argmax(-1)
  np.testing.assert_array_equal(out["relation"][:, 0], predicted)
  # Stage 2 on its own: the tagger input built on the host from the predicted relation.
  for row in range(len(ids)):
    n = int(mask[row].sum()) - 2
    t_ids = np.concatenate([[CLS, RELATION_TOKENS[predicted[row]], SEP], ids[row, 1:n + 2]])[None]
    t_mask = np.ones_like(t_ids)
    t_types = np.array([[0, 0, 0] + [1] * (n + 1)])
    sentence = np.array([[0, 0, 0] + [1] * n + [0]])
    tag_logits = np.asarray(tagger.apply({"params": tag_params}, t_ids, t_mask, t_types, sentence))[0]
    e1 = host_best_span(tag_logits[:, 0], tag_logits[:, 1], sentence[0], 4)
    e2 = host_best_span(tag_logits[:, 2], tag_logits[:, 3], sentence[0], 4)
    # Positions come back in relation-input coordinates (two less than in the tagger input).
    assert (out["e1_start"][row, 0, 0] + 2, out["e1_end"][row, 0, 0] + 2) == (e1[1], e1[2])
    assert (out["e2_start"][row, 0, 0] + 2, out["e2_end"][row, 0, 0] + 2) == (e2[1], e2[2])
    np.testing.assert_allclose(out["pair_logprob"][row, 0, 0], e1[0] + e2[0], rtol=1e-4, atol=1e-4)


def test_nbest_lists_relations_in_score_order():
  relation, rel_params, tagger, tag_params = tiny_models()
  build = model_inputs.TaggerInputs(RELATION_TOKENS, cls_id=CLS, sep_id=SEP, pad_id=PAD, two_segments=True)
  fn = two_stage.make_two_stage_fn(relation, tagger, build, top_k=3, top_m=2, max_span_len=4)
  ids, mask = batch_of_sentences(np.random.default_rng(1), [6, 4], width=16)
  out = jax.device_get(fn(rel_params, tag_params, ids, mask))
  assert out["relation"].shape == (2, 3) and out["e1_start"].shape == (2, 3, 2)
  assert np.all(np.diff(out["relation_logprob"], axis=1) <= 0)
  assert np.all(np.diff(out["pair_logprob"], axis=2) <= 1e-6)
  # Every span lies inside its sentence (relation-input positions 1 .. n).
  for row, n in enumerate([6, 4]):
    for key in ("e1_start", "e1_end", "e2_start", "e2_end"):
      assert out[key][row].min() >= 1 and out[key][row].max() <= n


def test_disjoint_decoding_separates_overlapping_pairs_and_keeps_the_others():
  relation, rel_params, tagger, tag_params = tiny_models()
  build = model_inputs.TaggerInputs(RELATION_TOKENS, cls_id=CLS, sep_id=SEP, pad_id=PAD, two_segments=True)
  ids, mask = batch_of_sentences(np.random.default_rng(2), [3, 5, 8, 2, 6, 4, 9, 3], width=16)
  outputs = {}
  for disjoint in (False, True):
    fn = two_stage.make_two_stage_fn(relation, tagger, build, top_k=1, top_m=1, max_span_len=4, disjoint=disjoint)
    out = jax.device_get(fn(rel_params, tag_params, ids, mask))
    outputs[disjoint] = [tuple(int(out[k][row, 0, 0]) for k in ("e1_start", "e1_end", "e2_start", "e2_end"))
                         for row in range(len(ids))]

  def overlaps(s):
    return s[0] <= s[3] and s[2] <= s[1]
  assert any(overlaps(s) for s in outputs[False]), "an untrained tagger should produce an overlapping pair"
  assert not any(overlaps(s) for s in outputs[True])
  for independent, disjoint in zip(outputs[False], outputs[True]):
    if not overlaps(independent):
      assert disjoint == independent


def test_sub_batches_compute_the_same_outputs_as_one_batch():
  relation, rel_params, tagger, tag_params = tiny_models()
  build = model_inputs.TaggerInputs(RELATION_TOKENS, cls_id=CLS, sep_id=SEP, pad_id=PAD, two_segments=True)
  make = lambda n: two_stage.make_two_stage_fn(relation, tagger, build, top_k=2, top_m=2, max_span_len=4,
                                               sub_batches=n)
  whole, split = make(1), make(2)
  for lengths in ([5, 9, 3, 12, 7, 2], [4, 8, 6]):  # the second's 3 rows do not split in two: one batch
    ids, mask = batch_of_sentences(np.random.default_rng(3), lengths, width=16)
    expected, got = jax.device_get(whole(rel_params, tag_params, ids, mask)), jax.device_get(
        split(rel_params, tag_params, ids, mask))
    assert got.keys() == expected.keys()
    for key in ("relation", "e1_start", "e1_end", "e2_start", "e2_end"):
      np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    for key in ("relation_logprob", "pair_logprob", "joint_logprob"):
      np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
