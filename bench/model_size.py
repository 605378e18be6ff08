"""Parameter and FLOP counts per model shape: `python bench/model_size.py [--seq_len 64]`.

Counts come from `herberta_jax.model.flops`; the parameter count is checked against the initialised Flax model.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from herberta_jax.model import flops  # noqa: E402
from herberta_jax.model.bert import BertConfig  # noqa: E402
from herberta_jax.model.heads import EntityTagger, RelationClassifier  # noqa: E402

SHAPES = {
    "tiny (demo)": BertConfig(vocab_size=8000, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512),
    "MiniLM L6/H384": BertConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536),
    "BERT-base cased": BertConfig(vocab_size=28996),
    "mBERT base": BertConfig(vocab_size=119547),
    "XLM-R base": BertConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                             model_type="xlm-roberta", layer_norm_eps=1e-5),
}
NUM_LABELS = 36


def initialised_parameters(config: BertConfig, stage: str) -> int:
  ids = jnp.zeros((1, 4), jnp.int32)
  if stage == "relation":
    model, args = RelationClassifier(config, NUM_LABELS), (ids, ids)
  else:
    model, args = EntityTagger(config), (ids, ids, ids, ids)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args)["params"])
  return sum(int(x.size) for x in flax.traverse_util.flatten_dict(shapes).values())


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--seq_len", type=int, default=64)
  args = parser.parse_args()
  print(f"{'shape':18} {'stage':9} {'params':>12} {'train GFLOP/seq':>16}  (seq_len {args.seq_len}, "
        f"{NUM_LABELS} labels)")
  for name, config in SHAPES.items():
    for stage in ("relation", "tagger"):
      counted = flops.model_parameters(config, stage, NUM_LABELS)
      actual = initialised_parameters(config, stage)
      if counted != actual:
        raise AssertionError(f"{name} {stage}: formula gives {counted:,} parameters, the model has {actual:,}")
      gflop = flops.train_flops_per_sequence(config, args.seq_len, stage, NUM_LABELS) / 1e9
      print(f"{name:18} {stage:9} {actual:>12,} {gflop:>16.3f}")


if __name__ == "__main__":
  main()
