"""Builds the entity tagger's input from the relation classifier's, on device.

The relation classifier reads `[CLS] s_1 .. s_n [SEP] pad..` (length L). The tagger reads
`[CLS] [relation] [SEP] s_1 .. s_n [SEP] pad..` (length L + 2): the same sentence shifted right by two, so one
stored record serves both stages and inference can chain them without leaving the device.
"""

from __future__ import annotations

import jax.numpy as jnp

TAGGER_SHIFT = 2  # positions a relation-input token moves to in the tagger input


def tagger_inputs(input_ids, attention_mask, relation_token_ids, *, cls_id: int, sep_id: int, pad_id: int,
                  two_segments: bool = True):
  """Returns (input_ids, attention_mask, token_type_ids, sentence_mask) of the tagger, each [B, L + 2].

  `relation_token_ids` is [B]: the vocabulary id of each row's relation token. `sentence_mask` marks the
  sentence tokens only (not the prefix, the final [SEP] or padding): the positions a span may take.
  `two_segments` gives the sentence token type 1 as BERT's pair encoding does; RoBERTa-style models have a
  single token type and pass False.
  """
  batch = input_ids.shape[0]
  prefix = jnp.stack([
      jnp.full((batch,), cls_id, input_ids.dtype),
      relation_token_ids.astype(input_ids.dtype),
      jnp.full((batch,), sep_id, input_ids.dtype),
  ], axis=1)
  body = input_ids[:, 1:]
  body_mask = attention_mask[:, 1:].astype(jnp.int32)
  ids = jnp.concatenate([prefix, jnp.where(body_mask > 0, body, pad_id)], axis=1)
  mask = jnp.concatenate([jnp.ones((batch, 3), jnp.int32), body_mask], axis=1)
  lengths = attention_mask.astype(jnp.int32).sum(axis=1)  # n + 2
  positions = jnp.arange(ids.shape[1])[None, :]
  # Sentence tokens sit at 3 .. n + 2; the final [SEP] at n + 3.
  sentence_mask = (positions >= 3) & (positions < (lengths + 1)[:, None])
  if two_segments:
    token_type_ids = ((positions >= 3) & (mask > 0)).astype(jnp.int32)
  else:
    token_type_ids = jnp.zeros_like(mask)
  return ids, mask, token_type_ids, sentence_mask.astype(jnp.int32)


def shift_spans(spans):
  """Relation-input token positions -> tagger-input positions; -1 (truncated) stays -1."""
  return jnp.where(spans >= 0, spans + TAGGER_SHIFT, -1)


class TaggerInputs:
  """Builds the tagger's input for a batch from the relation token of each row's (gold or predicted) label."""

  def __init__(self, relation_token_ids, *, cls_id: int, sep_id: int, pad_id: int, two_segments: bool):
    self.relation_token_ids = jnp.asarray(relation_token_ids, jnp.int32)  # [num_labels]
    self.kwargs = dict(cls_id=cls_id, sep_id=sep_id, pad_id=pad_id, two_segments=two_segments)

  def __call__(self, input_ids, attention_mask, labels):
    return tagger_inputs(input_ids, attention_mask, self.relation_token_ids[labels], **self.kwargs)
