"""The tagger input is the relation input shifted right by two behind [CLS] [relation] [SEP]."""

import jax.numpy as jnp
import numpy as np

from herberta_jax.model import inputs

CLS, SEP, PAD = 101, 102, 0


def test_tagger_inputs_layout_masks_and_segments():
  # Two sentences: 3 and 1 tokens, padded to length 6.
  ids = jnp.array([[CLS, 7, 8, 9, SEP, PAD], [CLS, 5, SEP, PAD, PAD, PAD]])
  mask = (ids != PAD).astype(jnp.int32)
  rel = jnp.array([11, 12])
  t_ids, t_mask, t_types, sentence = inputs.tagger_inputs(ids, mask, rel, cls_id=CLS, sep_id=SEP, pad_id=PAD)
  np.testing.assert_array_equal(t_ids, [[CLS, 11, SEP, 7, 8, 9, SEP, PAD], [CLS, 12, SEP, 5, SEP, PAD, PAD, PAD]])
  np.testing.assert_array_equal(t_mask, [[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(t_types, [[0, 0, 0, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(sentence, [[0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0]])


def test_single_segment_models_get_type_zero_everywhere():
  ids = jnp.array([[CLS, 7, SEP]])
  _, _, types, _ = inputs.tagger_inputs(ids, jnp.ones_like(ids), jnp.array([3]), cls_id=CLS, sep_id=SEP,
                                        pad_id=PAD, two_segments=False)
  assert int(types.sum()) == 0


def test_shift_spans_keeps_truncated_marker():
  spans = jnp.array([[1, 2, 3, 3], [-1, -1, 4, 5]])
  np.testing.assert_array_equal(inputs.shift_spans(spans), [[3, 4, 5, 5], [-1, -1, 6, 7]])
