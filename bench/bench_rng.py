"""Dropout on the MiniLM relation train step: key implementations and mask schemes, seconds per step, interleaved.

  python bench/bench_rng.py [--rounds 5] [--steps 5] [--impls threefry2x32,rbg,unsafe_rbg]
                            [--masks ours,philox,flax,none]

Masks: `ours` is the model's dropout (16 random bits per element, herberta_jax/model/dropout.py), `philox` the same
with its words from `jax.random.bits` (for an rbg-family key, XLA's default Philox bit generator, where `ours` on
the CPU asks for its threefry one; for a threefry2x32 key the same as `ours`), `flax` swaps in flax's nn.Dropout
(32 bits per element) while the step is traced, `none` trains without dropout (the floor).
Each round times `--steps` steps of every variant in turn, so a load change on a shared machine hits all of them
alike; the median over rounds is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import flax.linen as nn
import jax
import numpy as np

from herberta_jax.model import bert, dropout, heads
from herberta_jax.model.bert import BertConfig
from herberta_jax.model.heads import RelationClassifier
from herberta_jax.training import optim, steps
from herberta_jax.training.state import TrainState

MINILM = dict(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, vocab_size=8000)
BATCH, LENGTH, NUM_LABELS = 32, 64, 19


@contextlib.contextmanager
def philox_words():
  """Our dropout drawing its words with `jax.random.bits` while this is open (tracing happens inside)."""
  ours = dropout.random_words
  dropout.random_words = lambda key, shape: jax.random.bits(key, shape, jax.numpy.uint32)
  try:
    yield
  finally:
    dropout.random_words = ours


@contextlib.contextmanager
def flax_dropout():
  """The model built with flax's nn.Dropout in place of ours while this is open (tracing happens inside)."""
  ours = bert.Dropout
  bert.Dropout = heads.Dropout = nn.Dropout
  try:
    yield
  finally:
    bert.Dropout = heads.Dropout = ours


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--impls", default="threefry2x32,rbg,unsafe_rbg")
  parser.add_argument("--masks", default="ours,philox,flax,none")
  args = parser.parse_args()
  module = RelationClassifier(BertConfig(**MINILM), num_labels=NUM_LABELS)
  rng = np.random.default_rng(0)
  batch = {"input_ids": jax.numpy.asarray(rng.integers(5, MINILM["vocab_size"], (BATCH, LENGTH)), jax.numpy.int32),
           "attention_mask": jax.numpy.ones((BATCH, LENGTH), jax.numpy.int32),
           "label": jax.numpy.asarray(rng.integers(0, NUM_LABELS, BATCH), jax.numpy.int32),
           "valid": jax.numpy.ones(BATCH, bool)}
  params = module.init(jax.random.key(0), batch["input_ids"][:1], batch["attention_mask"][:1])["params"]
  config = type("Cfg", (), dict(learning_rate=1e-4, warmup_fraction=0.1, weight_decay=0.01, max_grad_norm=1.0))
  tx, schedule = optim.make_optimizer(config, 1000)
  runs = {}
  for impl, mask in itertools.product(args.impls.split(","), args.masks.split(",")):
    no_dropout = mask == "none"
    step = jax.jit(steps.make_train_step(
        lambda p, b, r, d, no_dropout=no_dropout: steps.relation_loss_terms(module, p, b, r, d or no_dropout),
        schedule, 1, rng_impl=impl), donate_argnums=0)
    state = TrainState.create(jax.tree.map(jax.numpy.copy, params), tx,
                              jax.random.key_data(jax.random.key(1, impl=impl)))
    patch = {"flax": flax_dropout, "philox": philox_words}.get(mask, contextlib.nullcontext)
    with patch():
      state, metrics = step(state, batch)  # traces and compiles
    jax.block_until_ready(metrics)
    runs[f"{impl} {mask}"] = [step, state, []]
  for _ in range(args.rounds):
    for run in runs.values():
      start = time.perf_counter()
      for _ in range(args.steps):
        run[1], metrics = run[0](run[1], batch)
      jax.block_until_ready(metrics)
      run[2].append((time.perf_counter() - start) / args.steps)
  for name, run in runs.items():
    print(f"{name:>20}: {np.median(run[2]):.3f} s/step (median of {args.rounds} rounds; "
          f"min {min(run[2]):.3f}, max {max(run[2]):.3f})")


if __name__ == "__main__":
  main()
