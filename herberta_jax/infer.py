"""Two-stage inference in one jitted function: relation -> relation token -> tagger -> spans, all on device.

`make_two_stage_fn` builds the function; `Predictor` wraps it with a tokenizer and static-shape batching for raw
sentences. N-best: the top K relations, and for each the top M entity pairs; K = M = 1 is the paper's output.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from herberta_jax import spans as spans_lib
from herberta_jax.model import inputs as model_inputs
from herberta_jax.training import steps

EXPORT_FORMAT_VERSION = 1
DEFAULT_DECODING = {"max_span_len": 32, "disjoint_entities": False}  # for exports written without "decoding"


def make_two_stage_fn(relation_module, tagger_module, build: steps.TaggerInputs, *, top_k: int, top_m: int,
                      max_span_len: int, disjoint: bool = False):
  """`fn(relation_params, tagger_params, input_ids, attention_mask) -> dict of arrays`, jitted.

  Outputs ([B, K] or [B, K, M]): `relation` label ids and `relation_logprob`; `e1_start`, `e1_end`, `e2_start`,
  `e2_end` as positions in the relation input (ends inclusive), `pair_logprob` of the spans given the relation,
  and `joint_logprob` = relation + pair log-probabilities, the n-best ranking key.
  """

  def fn(relation_params, tagger_params, input_ids, attention_mask):
    logits = relation_module.apply({"params": relation_params}, input_ids, attention_mask, deterministic=True)
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
                                        disjoint=disjoint)
    out = {"relation": relation, "relation_logprob": relation_logprob}
    for key in ("e1_start", "e1_end", "e2_start", "e2_end"):
      out[key] = pairs[key].reshape(batch, top_k, top_m) - model_inputs.TAGGER_SHIFT
    out["pair_logprob"] = pairs["score"].reshape(batch, top_k, top_m)
    out["joint_logprob"] = out["pair_logprob"] + relation_logprob[:, :, None]
    return out

  return jax.jit(fn)


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
          "e1": {"text": text[e1[0]:e1[1]], "start": e1[0], "end": e1[1]},
          "e2": {"text": text[e2[0]:e2[1]], "start": e2[0], "end": e2[1]},
      })
  nbest.sort(key=lambda t: -t["score"])
  best = nbest[0]
  return {
      "relation": best["relation"], "score": best["relation_score"], "e1": best["e1"], "e2": best["e2"],
      "tagged": spans_lib.tag_text(text, (best["e1"]["start"], best["e1"]["end"]),
                                   (best["e2"]["start"], best["e2"]["end"])),
      "nbest": nbest,
  }


@dataclasses.dataclass
class Encoded:
  """A raw sentence tokenized for the relation classifier, or the reason it cannot be."""

  index: int
  text: str
  input_ids: list[int] | None = None
  offsets: list[tuple[int, int]] | None = None
  error: str | None = None


def export_directory(directory) -> pathlib.Path:
  """An export directory as given, or the `export/` of a training workdir."""
  directory = pathlib.Path(directory)
  if not (directory / "herberta.json").exists() and (directory / "export" / "herberta.json").exists():
    return directory / "export"
  return directory


class Predictor:
  """Both trained stages behind one call: sentences in, triples out, in static-shape batches."""

  def __init__(self, relation, tagger, meta: dict, tokenizer, *, batch_size: int = 64, top_k: int = 1,
               top_m: int = 1, max_span_len: int | None = None, disjoint_entities: bool | None = None):
    """Decoding settings left as None take the run's own (`meta["decoding"]`, written by the export)."""
    (self.relation_module, self.relation_params), (self.tagger_module, self.tagger_params) = relation, tagger
    self.meta = meta
    self.labels = meta["labels"]
    self.tokenizer = tokenizer
    self.batch_size = batch_size
    self.max_seq_len = meta["max_seq_len"]
    self.boundaries = sorted(b for b in meta["bucket_boundaries"] if b < self.max_seq_len) + [self.max_seq_len]
    table = [meta["relation_token_ids"][label] for label in self.labels]
    build = steps.TaggerInputs(table, cls_id=meta["cls_id"], sep_id=meta["sep_id"], pad_id=meta["pad_id"],
                               two_segments=meta["two_segments"])
    self.top_k = min(top_k, len(self.labels))
    decoding = {**DEFAULT_DECODING, **meta.get("decoding", {})}
    self.max_span_len = decoding["max_span_len"] if max_span_len is None else max_span_len
    self.disjoint_entities = decoding["disjoint_entities"] if disjoint_entities is None else disjoint_entities
    self.fn = make_two_stage_fn(self.relation_module, self.tagger_module, build, top_k=self.top_k, top_m=top_m,
                                max_span_len=self.max_span_len, disjoint=self.disjoint_entities)

  @classmethod
  def from_export(cls, directory, **kwargs) -> "Predictor":
    """Loads an export directory (or a training workdir holding `export/`)."""
    from herberta_jax.model import hf
    from herberta_jax.model.heads import EntityTagger, RelationClassifier
    from herberta_jax.data import tokenize
    directory = export_directory(directory)
    if not (directory / "herberta.json").exists():
      raise FileNotFoundError(f"{directory}: no herberta.json; pass an export directory or a training workdir "
                              "whose run finished (it writes export/)")
    meta = json.loads((directory / "herberta.json").read_text())
    if meta.get("format_version") != EXPORT_FORMAT_VERSION:
      raise ValueError(f"{directory}/herberta.json: format_version {meta.get('format_version')} is not "
                       f"{EXPORT_FORMAT_VERSION}; re-export with this version of herberta_jax")
    rel_config, rel_params, _ = hf.load_relation_model(directory / "relation")
    tag_config, tag_params = hf.load_tagger_model(directory / "tagger")
    relation = (RelationClassifier(rel_config, num_labels=len(meta["labels"])), rel_params)
    tagger = (EntityTagger(tag_config), tag_params)
    return cls(relation, tagger, meta, tokenize.load_tokenizer(directory / "tagger"), **kwargs)

  def encode(self, texts: Sequence[str]) -> list[Encoded]:
    """Tokenizes sentences as `prepare` does: [CLS] sentence [SEP], truncated to leave room for the tagger."""
    encoded = [Encoded(i, t) for i, t in enumerate(texts)]
    usable = [e for e in encoded if e.text.strip()]
    for e in encoded:
      if not e.text.strip():
        e.error = "empty sentence"
    if usable:
      batch = self.tokenizer([e.text for e in usable], add_special_tokens=True, truncation=True,
                             max_length=self.max_seq_len - 2, return_offsets_mapping=True)
      for e, ids, offs in zip(usable, batch["input_ids"], batch["offset_mapping"]):
        e.input_ids, e.offsets = ids, [tuple(o) for o in offs]
    return encoded

  def _bucket(self, length: int) -> int:
    return next(b for b in self.boundaries if length <= b)

  def run(self, encoded: Iterable[Encoded]) -> Iterator[tuple[Encoded, dict]]:
    """Predictions in input order; sentences are grouped by bucket length into full static-shape batches."""
    pending: dict[int, list[Encoded]] = {}
    results: dict[int, dict] = {}
    order: list[Encoded] = []
    for e in encoded:
      order.append(e)
      if e.error:
        continue
      bucket = self._bucket(len(e.input_ids))
      pending.setdefault(bucket, []).append(e)
      if len(pending[bucket]) == self.batch_size:
        results.update(self._predict_batch(bucket, pending.pop(bucket)))
    for bucket, rows in pending.items():
      results.update(self._predict_batch(bucket, rows))
    for e in order:
      yield e, ({"error": e.error} if e.error else results[e.index])

  def _predict_batch(self, length: int, rows: list[Encoded]) -> dict[int, dict]:
    ids = np.full((self.batch_size, length), self.meta["pad_id"], np.int32)
    mask = np.zeros((self.batch_size, length), np.int32)
    for i, e in enumerate(rows):
      ids[i, :len(e.input_ids)] = e.input_ids
      mask[i, :len(e.input_ids)] = 1
    mask[len(rows):, :2] = 1  # padding rows: a harmless [PAD] [PAD] sentence, discarded below
    outputs = jax.device_get(self.fn(self.relation_params, self.tagger_params, ids, mask))
    decoded = {}
    for i, e in enumerate(rows):
      offsets = np.zeros((length, 2), np.int64)
      offsets[:len(e.offsets)] = e.offsets
      decoded[e.index] = decode_row(outputs, i, offsets, e.text, self.labels)
    return decoded
