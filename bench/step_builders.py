"""Builds one timed train step per stage for any shape, in JAX (our step) and in transformers' PyTorch, on one batch.

Shared by bench_train.py (CPU comparison) and accelerator_parts.py (one GPU): both time `run()` closures that
do one optimizer step on a fixed, device-resident batch, so the two scripts measure the same work.
Neither side syncs inside `run()`; callers sync once after their timed loop (`sync()`).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
import optax

from herberta_jax.model.bert import BertConfig
from herberta_jax.model.heads import EntityTagger, RelationClassifier
from herberta_jax.model.inputs import TAGGER_SHIFT, TaggerInputs
from herberta_jax.training import steps
from herberta_jax.training.state import TrainState

SHAPES = {
    "tiny": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512, vocab_size=8000),
    "minilm": dict(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, vocab_size=30522),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, vocab_size=28996),
}
NUM_LABELS = 36
CLS_ID, SEP_ID, PAD_ID = 2, 3, 0
SPANS = (1, 2, 4, 5)  # entity token positions in the relation input: inside even the shortest bench length


def bert_config(shape: dict, dtype: str = "float32") -> BertConfig:
  return BertConfig(vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"], num_layers=shape["num_layers"],
                    num_heads=shape["num_heads"], intermediate_size=shape["intermediate_size"], dtype=dtype)


def input_length(stage: str, length: int) -> int:
  """The model's sequence length: the tagger reads `[CLS] [relation] [SEP] sentence [SEP]`, two tokens more."""
  return length + (TAGGER_SHIFT if stage == "tagger" else 0)


def synthetic_batch(batch: int, length: int, vocab: int, num_labels: int = NUM_LABELS, seed: int = 0) -> dict:
  """A full batch of relation-classifier input (no padding) as a prepared pipeline batch looks."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, vocab, size=(batch, length)).astype(np.int32)
  ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
  return {"input_ids": ids, "attention_mask": np.ones_like(ids),
          "label": rng.integers(0, num_labels, batch).astype(np.int32),
          "spans": np.tile(np.array([SPANS], np.int32), (batch, 1)), "valid": np.ones(batch, bool)}


@dataclasses.dataclass
class Runner:
  """`run()` does one optimizer step; `sync()` waits for all of it; `close()` frees what it holds."""
  run: object
  sync: object
  close: object


RNG_IMPL = "rbg"  # the training default (configs/base.py: dropout_rng_impl)


def dropout_key_data(seed: int, rng_impl: str = RNG_IMPL) -> jax.Array:
  """A dropout key as the train state stores it: the raw data of a key of `rng_impl`."""
  return jax.random.key_data(jax.random.key(seed, impl=rng_impl))


def jax_runner(stage: str, config: BertConfig, batch: int, length: int, num_labels: int = NUM_LABELS,
               rng_impl: str = RNG_IMPL) -> Runner:
  """Our jitted, state-donating train step (herberta_jax.training.steps) with AdamW, on one device batch.

  Parameters are initialised by a jitted init: one compile, where eager init dispatches every operation alone.
  """
  data = jax.device_put(synthetic_batch(batch, length, config.vocab_size, num_labels))
  tx = optax.adamw(1e-4)
  schedule = optax.constant_schedule(1e-4)
  if stage == "relation":
    module = RelationClassifier(config, num_labels=num_labels)
    params = jax.jit(module.init)(jax.random.PRNGKey(0), data["input_ids"][:1], data["attention_mask"][:1])["params"]
    loss_terms = lambda p, b, r, d: steps.relation_loss_terms(module, p, b, r, d)
  else:
    module = EntityTagger(config)
    ids = data["input_ids"][:1]
    params = jax.jit(module.init)(jax.random.PRNGKey(0), ids, ids, ids, ids)["params"]
    build = TaggerInputs(list(range(10, 10 + num_labels)), cls_id=CLS_ID, sep_id=SEP_ID, pad_id=PAD_ID,
                               two_segments=True)
    loss_terms = lambda p, b, r, d: steps.tagger_loss_terms(module, build, p, b, r, d)
  step = jax.jit(steps.make_train_step(loss_terms, schedule, 1, rng_impl=rng_impl), donate_argnums=0)
  holder = {"state": TrainState.create(params, tx, dropout_key_data(1, rng_impl)), "metrics": None}

  def run():
    holder["state"], holder["metrics"] = step(holder["state"], data)

  def sync():
    jax.block_until_ready((holder["state"], holder["metrics"]))

  def close():
    holder.clear()
    data.clear()

  return Runner(run, sync, close)


def torch_runner(stage: str, shape: dict, batch: int, length: int, *, device: str = "cpu", autocast_dtype=None,
                 fused: bool = False, attn_implementation: str | None = None,
                 num_labels: int = NUM_LABELS) -> Runner:
  """The same stage as transformers' BertForSequenceClassification / BertForTokenClassification with AdamW.

  The tagger gets the tagger's input length (two tokens longer) and the mean of the four position
  cross-entropies, so both frameworks do the same FLOPs. `autocast_dtype` (e.g. torch.bfloat16) runs the
  forward pass under torch.autocast with float32 parameters, as our `BertConfig.dtype` does.
  """
  import torch
  import transformers

  torch.manual_seed(0)
  extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
  hf_config = transformers.BertConfig(vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
                                      num_hidden_layers=shape["num_layers"], num_attention_heads=shape["num_heads"],
                                      intermediate_size=shape["intermediate_size"],
                                      num_labels=num_labels if stage == "relation" else 4, **extra)
  cls = transformers.BertForSequenceClassification if stage == "relation" else \
      transformers.BertForTokenClassification
  with torch.device(device):  # parameters created on the device: no host copy of a large model
    model = cls(hf_config).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
  data = synthetic_batch(batch, input_length(stage, length), shape["vocab_size"], num_labels)
  ids = torch.tensor(data["input_ids"], dtype=torch.long, device=device)
  mask = torch.tensor(data["attention_mask"], dtype=torch.long, device=device)
  labels = torch.tensor(data["label"], dtype=torch.long, device=device)
  spans = torch.tensor(data["spans"], dtype=torch.long, device=device) + (TAGGER_SHIFT if stage == "tagger" else 0)
  device_type = torch.device(device).type

  def forward_loss():
    if stage == "relation":
      return model(input_ids=ids, attention_mask=mask, labels=labels).loss
    logits = model(input_ids=ids, attention_mask=mask).logits.float()  # [B, L, 4]
    return sum(torch.nn.functional.cross_entropy(logits[:, :, k], spans[:, k]) for k in range(4)) / 4

  def run():
    optimizer.zero_grad(set_to_none=True)
    if autocast_dtype is not None:
      with torch.autocast(device_type, dtype=autocast_dtype):
        loss = forward_loss()
    else:
      loss = forward_loss()
    loss.backward()
    optimizer.step()

  def sync():
    if device_type == "cuda":
      torch.cuda.synchronize()

  def close():
    nonlocal model, optimizer, ids, mask, labels, spans
    model = optimizer = ids = mask = labels = spans = None
    if device_type == "cuda":
      torch.cuda.empty_cache()

  return Runner(run, sync, close)


def seconds_per_step(runner: Runner, steps_: int, warmup: int = 1) -> tuple[float, float]:
  """(seconds of the warm-up calls, which compile; seconds per step over `steps_` more with one sync at the end)."""
  start = time.perf_counter()
  for _ in range(warmup):
    runner.run()
  runner.sync()
  warm = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps_):
    runner.run()
  runner.sync()
  return warm, (time.perf_counter() - start) / steps_
