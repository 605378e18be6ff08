"""HERBERTa's two models (paper section 4): a relation classifier on the pooled [CLS] and an entity tagger.

Each is an encoder under `bert` plus a dense layer under `classifier`, the layout of HuggingFace's
`BertForSequenceClassification` and `BertForTokenClassification`, so an export is a rename.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from herberta_jax.model.bert import BertConfig, BertEncoder
from herberta_jax.model.dropout import Dropout

TAGGER_OUTPUTS = ("e1_start", "e1_end", "e2_start", "e2_end")
MASKED_LOGIT = -1e9  # finite, so a fully masked row gives a uniform softmax rather than NaN


class RelationClassifier(nn.Module):
  """[CLS] pooled output -> dropout -> dense over the run's relation labels. Returns float32 logits [B, labels].

  With `with_entity_logits=True` it also returns [B, L, 4] logits of the two entities' start and end positions
  in its own input (the tagger's outputs, without the relation): a training-only auxiliary task that points
  the encoder at the entities whose relation [CLS] must classify. Its dense layer (`entity_classifier`) is
  left out of exports, and inference never calls it.
  """
  config: BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids=None, *, deterministic: bool = True,
               with_entity_logits: bool = False, first_token_only: bool = False):
    # `first_token_only` (inference): the last layer computes [CLS] alone; the entity logits need every row.
    sequence, pooled = BertEncoder(self.config, add_pooler=True, name="bert")(
        input_ids, attention_mask, token_type_ids, deterministic=deterministic,
        first_token_only=first_token_only and not with_entity_logits)
    pooled = Dropout(self.config.hidden_dropout)(pooled, deterministic=deterministic)
    logits = nn.Dense(self.num_labels, kernel_init=nn.initializers.normal(0.02), name="classifier")(pooled)
    if not with_entity_logits:
      return logits
    sequence = Dropout(self.config.hidden_dropout)(sequence, deterministic=deterministic)
    entity_logits = nn.Dense(len(TAGGER_OUTPUTS), kernel_init=nn.initializers.normal(0.02),
                             name="entity_classifier")(sequence)
    return logits, jnp.where(attention_mask[..., None] > 0, entity_logits, MASKED_LOGIT)


class EntityTagger(nn.Module):
  """Per-token dense with 4 outputs (e1 start, e1 end, e2 start, e2 end). Returns float32 logits [B, L, 4].

  Positions outside `sentence_mask` (the [CLS] [relation] [SEP] prefix, the final [SEP], padding) get
  MASKED_LOGIT, so a softmax over positions never picks them.
  """
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids, sentence_mask, *, deterministic: bool = True):
    sequence, _ = BertEncoder(self.config, add_pooler=False, name="bert")(
        input_ids, attention_mask, token_type_ids, deterministic=deterministic)
    sequence = Dropout(self.config.hidden_dropout)(sequence, deterministic=deterministic)
    logits = nn.Dense(len(TAGGER_OUTPUTS), kernel_init=nn.initializers.normal(0.02), name="classifier")(sequence)
    return jnp.where(sentence_mask[..., None] > 0, logits, MASKED_LOGIT)
