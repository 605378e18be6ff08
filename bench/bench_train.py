"""Train-step speed per stage and model shape, JAX next to HuggingFace PyTorch, with model FLOP utilisation.

  python bench/bench_train.py [--shapes tiny,minilm,base] [--steps 10]

For each shape: the jitted JAX train step (AdamW, batch 32, length 64) of the relation classifier and of the
entity tagger, and the same model trained by transformers' PyTorch classes with torch.optim.AdamW. FLOP
utilisation compares the model's training FLOPs per second with a large float32 matmul timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from herberta_jax.model import inputs as model_inputs
from herberta_jax.model.bert import BertConfig  # noqa: E402
from herberta_jax.model.flops import train_flops_per_sequence  # noqa: E402
from herberta_jax.model.heads import EntityTagger, RelationClassifier  # noqa: E402
from herberta_jax.training import steps  # noqa: E402
from herberta_jax.training.state import TrainState  # noqa: E402

SHAPES = {
    "tiny": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512, vocab_size=8000),
    "minilm": dict(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, vocab_size=30522),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, vocab_size=28996),
}
BATCH, LENGTH, NUM_LABELS = 32, 64, 36


def timed(fn, steps_: int) -> float:
  """Seconds per call after one warm-up call (which compiles)."""
  fn()
  start = time.perf_counter()
  for _ in range(steps_):
    fn()
  return (time.perf_counter() - start) / steps_


def matmul_flops_per_second() -> float:
  a = jnp.ones((2048, 2048), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  seconds = timed(lambda: f(a).block_until_ready(), 10)
  return 2 * 2048 ** 3 / seconds


def batch(rng, vocab):
  ids = rng.integers(5, vocab, size=(BATCH, LENGTH)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 2, 3
  return {
      "input_ids": ids, "attention_mask": np.ones_like(ids), "label": rng.integers(0, NUM_LABELS, BATCH).astype(
          np.int32), "spans": np.tile(np.array([[1, 2, 4, 5]], np.int32), (BATCH, 1)),
      "valid": np.ones(BATCH, bool)}


def jax_step_seconds(stage: str, config: BertConfig, steps_: int) -> float:
  rng = np.random.default_rng(0)
  data = jax.device_put(batch(rng, config.vocab_size))
  tx = optax.adamw(1e-4)
  schedule = optax.constant_schedule(1e-4)
  if stage == "relation":
    module = RelationClassifier(config, num_labels=NUM_LABELS)
    params = module.init(jax.random.PRNGKey(0), data["input_ids"][:1], data["attention_mask"][:1])["params"]
    loss_terms = lambda p, b, r, d: steps.relation_loss_terms(module, p, b, r, d)
  else:
    module = EntityTagger(config)
    ids = data["input_ids"][:1]
    params = module.init(jax.random.PRNGKey(0), ids, ids, ids, ids)["params"]
    build = model_inputs.TaggerInputs(list(range(10, 10 + NUM_LABELS)), cls_id=2, sep_id=3, pad_id=0, two_segments=True)
    loss_terms = lambda p, b, r, d: steps.tagger_loss_terms(module, build, p, b, r, d)
  state = TrainState.create(params, tx, jax.random.PRNGKey(1))
  step = jax.jit(steps.make_train_step(loss_terms, schedule, 1, rng_impl="threefry2x32"), donate_argnums=0)
  holder = [state]

  def run():
    holder[0], metrics = step(holder[0], data)
    metrics["loss"].block_until_ready()
  return timed(run, steps_)


def torch_step_seconds(stage: str, shape: dict, steps_: int) -> float | None:
  try:
    import torch
    import transformers
  except ImportError:
    return None
  torch.manual_seed(0)
  hf_config = transformers.BertConfig(vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
                                      num_hidden_layers=shape["num_layers"], num_attention_heads=shape["num_heads"],
                                      intermediate_size=shape["intermediate_size"],
                                      num_labels=NUM_LABELS if stage == "relation" else 4)
  cls = transformers.BertForSequenceClassification if stage == "relation" else \
      transformers.BertForTokenClassification
  model = cls(hf_config).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
  data = batch(np.random.default_rng(0), shape["vocab_size"])
  ids = torch.tensor(data["input_ids"], dtype=torch.long)
  mask = torch.tensor(data["attention_mask"], dtype=torch.long)
  labels = torch.tensor(data["label"], dtype=torch.long)
  spans = torch.tensor(data["spans"], dtype=torch.long)

  def run():
    optimizer.zero_grad()
    if stage == "relation":
      loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    else:
      logits = model(input_ids=ids, attention_mask=mask).logits  # [B, L, 4]
      loss = sum(torch.nn.functional.cross_entropy(logits[:, :, k], spans[:, k]) for k in range(4)) / 4
    loss.backward()
    optimizer.step()
  return timed(run, steps_)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--shapes", default="tiny,minilm,base")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--json", default="", help="also write the figures to this JSON file")
  args = parser.parse_args()
  peak = matmul_flops_per_second()
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__}; "
        f"float32 matmul peak {peak / 1e9:.1f} GFLOP/s; batch {BATCH}, length {LENGTH}")
  print(f"{'shape':8} {'stage':9} {'jax s/step':>10} {'jax sent/s':>10} {'torch s/step':>12} "
        f"{'torch sent/s':>12} {'jax/torch':>9} {'MFU':>6}")
  rows = []
  for name in args.shapes.split(","):
    shape = SHAPES[name]
    config = BertConfig(vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
                        num_layers=shape["num_layers"], num_heads=shape["num_heads"],
                        intermediate_size=shape["intermediate_size"])
    for stage in ("relation", "tagger"):
      jax_s = jax_step_seconds(stage, config, args.steps)
      torch_s = torch_step_seconds(stage, shape, args.steps)
      length = LENGTH + (2 if stage == "tagger" else 0)
      flops = train_flops_per_sequence(config, length, stage, NUM_LABELS) * BATCH
      mfu = flops / jax_s / peak
      ratio = torch_s / jax_s if torch_s else float("nan")
      print(f"{name:8} {stage:9} {jax_s:10.4f} {BATCH / jax_s:10.1f} {torch_s or float('nan'):12.4f} "
            f"{BATCH / torch_s if torch_s else float('nan'):12.1f} {ratio:9.2f} {mfu:6.1%}", flush=True)
      rows.append(dict(shape=name, stage=stage, jax_seconds_per_step=jax_s, torch_seconds_per_step=torch_s,
                       speedup=ratio, mfu=mfu))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"matmul_flops_per_second": peak, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
