"""Parameter and FLOP counts of our models, for model FLOP utilisation (MFU) figures.

FLOPs count multiply-adds of the dense and attention matmuls as 2 each (embedding lookups, LayerNorm, softmax and
activations are left out, as MFU conventions do). A train step is 3x a forward pass: forward, and backward
through activations and weights.
"""

from __future__ import annotations

from herberta_jax.model.bert import BertConfig


def encoder_parameters(config: BertConfig, add_pooler: bool = True) -> int:
  h, i = config.hidden_size, config.intermediate_size
  embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * h + 2 * h
  layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h
  pooler = h * h + h if add_pooler else 0
  return embeddings + config.num_layers * layer + pooler


def model_parameters(config: BertConfig, stage: str, num_labels: int) -> int:
  """Relation classifier (pooler + dense over labels) or entity tagger (dense with 4 outputs)."""
  outputs = num_labels if stage == "relation" else 4
  return encoder_parameters(config, add_pooler=stage == "relation") + config.hidden_size * outputs + outputs


def forward_flops_per_sequence(config: BertConfig, seq_len: int, stage: str, num_labels: int, *,
                               first_token_only: bool = False) -> int:
  """`first_token_only`: the relation classifier as inference runs it, its last layer computing [CLS] alone
  (keys and values of every row, the rest for one)."""
  h, i, n = config.hidden_size, config.intermediate_size, seq_len
  per_layer = 2 * n * (4 * h * h + 2 * h * i) + 2 * 2 * n * n * h  # projections + feed-forward; QK^T and PV
  if stage == "relation":
    head = 2 * h * h + 2 * h * num_labels  # pooler and classifier, on [CLS] only
  else:
    head = 2 * n * h * 4  # four outputs at every position
  if stage == "relation" and first_token_only:
    last = 2 * n * 2 * h * h + 2 * (2 * h * h + 2 * h * i) + 2 * 2 * n * h
    return (config.num_layers - 1) * per_layer + last + head
  return config.num_layers * per_layer + head


def train_flops_per_sequence(config: BertConfig, seq_len: int, stage: str, num_labels: int) -> int:
  return 3 * forward_flops_per_sequence(config, seq_len, stage, num_labels)
