"""The two-stage pipeline in one jitted function: relation -> relation token -> tagger -> spans, all on device.

`make_two_stage_fn` builds the function; `decode_row` turns one row of its outputs into plain data with character
offsets. N-best: the top K relations, and for each the top M entity pairs; K = M = 1 is the paper's output.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from herberta_jax.model import decoding as spans_lib
from herberta_jax.model import inputs as model_inputs


def make_two_stage_fn(relation_module, tagger_module, build: model_inputs.TaggerInputs, *, top_k: int, top_m: int,
                      max_span_len: int, disjoint: bool = False, ordered: bool = False, mesh: Mesh | None = None,
                      sub_batches: int = 1):
  """`fn(relation_params, tagger_params, input_ids, attention_mask) -> dict of arrays`, jitted.

  Outputs ([B, K] or [B, K, M]): `relation` label ids and `relation_logprob`; `e1_start`, `e1_end`, `e2_start`,
  `e2_end` as positions in the relation input (ends inclusive), `pair_logprob` of the spans given the relation
  (the sum of `e1_logprob` and `e2_logprob`, each span's own), and `joint_logprob` = relation + pair
  log-probabilities, the n-best ranking key.

  `mesh`: a one-axis mesh whose devices split the batch (B must divide by their number; parameters replicated).
  Every step is per sentence, so each device runs its own rows with no communication; left to XLA's partitioner,
  `top_k` would gather the whole batch's scores onto every device.

  `sub_batches`: a device's rows, when they divide by it, are computed as that many independent sub-batches in one
  program. XLA's CPU runtime runs independent operations side by side, so one sub-batch's small operations
  (LayerNorm, softmax, transposes), which leave cores idle, overlap another's matrix multiplications: on the 2-core
  CPU two sub-batches made the SemEval pass 2-7% faster (README, "Inference speed"). A GPU runs one operation at a
  time: leave it at 1 there.
  """

  def per_device(relation_params, tagger_params, input_ids, attention_mask):
    rows = input_ids.shape[0]
    if sub_batches == 1 or rows % sub_batches:
      return both_stages(relation_params, tagger_params, input_ids, attention_mask)
    size = rows // sub_batches
    parts = [both_stages(relation_params, tagger_params, input_ids[i:i + size], attention_mask[i:i + size])
             for i in range(0, rows, size)]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)

  def both_stages(relation_params, tagger_params, input_ids, attention_mask):
    logits = relation_module.apply({"params": relation_params}, input_ids, attention_mask, deterministic=True,
                                   first_token_only=True)
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    relation_logprob, relation = jax.lax.top_k(logprobs, top_k)  # [B, K]
    batch, length = input_ids.shape
    # Each sentence is tagged once per candidate relation: [B * K, L] rows.
    repeated_ids = jnp.repeat(input_ids, top_k, axis=0)
    repeated_mask = jnp.repeat(attention_mask, top_k, axis=0)
    ids, mask, types, sentence_mask = build(repeated_ids, repeated_mask, relation.reshape(-1))
    tag_logits = tagger_module.apply({"params": tagger_params}, ids, mask, types, sentence_mask,
                                     deterministic=True)
    pairs = spans_lib.best_entity_pairs(tag_logits, sentence_mask, max_span_len=max_span_len, top_m=top_m,
                                        disjoint=disjoint, ordered=ordered)
    out = {"relation": relation, "relation_logprob": relation_logprob}
    for key in ("e1_start", "e1_end", "e2_start", "e2_end"):
      out[key] = pairs[key].reshape(batch, top_k, top_m) - model_inputs.TAGGER_SHIFT
    out["pair_logprob"] = pairs["score"].reshape(batch, top_k, top_m)
    out["e1_logprob"] = pairs["e1_score"].reshape(batch, top_k, top_m)
    out["e2_logprob"] = pairs["e2_score"].reshape(batch, top_k, top_m)
    out["joint_logprob"] = out["pair_logprob"] + relation_logprob[:, :, None]
    return out

  if mesh is None:
    return jax.jit(per_device)
  rows, replicated = PartitionSpec(mesh.axis_names), PartitionSpec()
  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(replicated, replicated, rows, rows), out_specs=rows))


def decode_row(outputs: dict, row: int, offsets: np.ndarray, text: str, labels: Sequence[str]) -> dict:
  """One sentence's prediction as plain data: the best triple plus the n-best list, in character offsets."""
  nbest = []
  top_k, top_m = outputs["e1_start"].shape[1:]
  for k in range(top_k):
    for m in range(top_m):
      e1 = spans_lib.token_span_to_chars(offsets, int(outputs["e1_start"][row, k, m]),
                                         int(outputs["e1_end"][row, k, m]))
      e2 = spans_lib.token_span_to_chars(offsets, int(outputs["e2_start"][row, k, m]),
                                         int(outputs["e2_end"][row, k, m]))
      nbest.append({
          "relation": labels[int(outputs["relation"][row, k])],
          "relation_score": float(np.exp(outputs["relation_logprob"][row, k])),
          "score": float(np.exp(outputs["joint_logprob"][row, k, m])),
          "e1": {"text": text[e1[0]:e1[1]], "start": e1[0], "end": e1[1],
                 "score": float(np.exp(outputs["e1_logprob"][row, k, m]))},
          "e2": {"text": text[e2[0]:e2[1]], "start": e2[0], "end": e2[1],
                 "score": float(np.exp(outputs["e2_logprob"][row, k, m]))},
      })
  nbest.sort(key=lambda t: -t["score"])
  best = nbest[0]
  return {
      "relation": best["relation"], "score": best["relation_score"], "e1": best["e1"], "e2": best["e2"],
      "tagged": spans_lib.tag_text(text, (best["e1"]["start"], best["e1"]["end"]),
                                   (best["e2"]["start"], best["e2"]["end"])),
      "nbest": nbest,
  }
