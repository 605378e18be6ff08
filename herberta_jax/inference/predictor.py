"""Raw sentences in, triples out: `Predictor` wraps the two-stage function with a tokenizer and static-shape
batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import jax
import numpy as np

from herberta_jax.data import tokenize
from herberta_jax.hub import format as export_format
from herberta_jax.inference.two_stage import decode_row, make_two_stage_fn
from herberta_jax.model import hf
from herberta_jax.model import inputs as model_inputs
from herberta_jax.model.heads import EntityTagger, RelationClassifier


@dataclasses.dataclass
class Encoded:
  """A raw sentence tokenized for the relation classifier, or the reason it cannot be."""

  index: int
  text: str
  input_ids: list[int] | None = None
  offsets: list[tuple[int, int]] | None = None
  error: str | None = None


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
    build = model_inputs.TaggerInputs(table, cls_id=meta["cls_id"], sep_id=meta["sep_id"], pad_id=meta["pad_id"],
                               two_segments=meta["two_segments"])
    self.top_k = min(top_k, len(self.labels))
    decoding = {**export_format.DEFAULT_DECODING, **meta.get("decoding", {})}
    self.max_span_len = decoding["max_span_len"] if max_span_len is None else max_span_len
    self.disjoint_entities = decoding["disjoint_entities"] if disjoint_entities is None else disjoint_entities
    self.fn = make_two_stage_fn(self.relation_module, self.tagger_module, build, top_k=self.top_k, top_m=top_m,
                                max_span_len=self.max_span_len, disjoint=self.disjoint_entities)

  @classmethod
  def from_export(cls, directory, **kwargs) -> Predictor:
    """Loads an export directory (or a training workdir holding `export/`)."""
    directory, meta = export_format.read_meta(directory)
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
