"""HERBERTa's two-stage relation extraction as a transformers pipeline; shipped inside every export.

`herberta_jax.hub.writer` copies this file, unchanged, into the export root beside a `config.json` that names it
(`auto_map`, `custom_pipelines`), so that with PyTorch and transformers alone

    from transformers import pipeline
    extract = pipeline(model=EXPORT_DIR, trust_remote_code=True)   # a local export or its Hub repository
    extract("Marie Curie was born in Warsaw.", top_k=2, top_m=2)    # a str, or a list with batch_size=N

returns the relation, both entities with character offsets, scores and the n-best list. It therefore imports
nothing but torch, transformers and `herberta_schema.py`, shipped beside it (no JAX, no herberta_jax): the export
schema herberta_jax checks exports with, which this pipeline checks them with too when it loads one.

It is a copy, in PyTorch, of herberta_jax's inference, and must stay one (`tests/test_hf_pipeline.py` checks
its triples against the JAX predictor's): the relation input and its truncation are `Predictor._tokenize`'s,
the tagger input is `model/inputs.tagger_inputs`'s, span decoding is `model/decoding.best_entity_pairs`'s
(ties broken towards the lower index, as `lax.top_k` does), and the output is `inference/two_stage.decode_row`'s.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    Pipeline,
    PreTrainedConfig,
    PreTrainedModel,
)

from .herberta_schema import DEFAULT_DECODING, check_against_models, check_meta

TASK = "relation-extraction"
TAGGER_SHIFT = 2  # [CLS] [relation] [SEP] puts relation-input token i at tagger position i + 2
TAGGER_EXTRA_TOKENS = 2  # the relation token and a second [SEP]: the relation input is cut this much shorter
NO_SPAN = -1  # position of a candidate that does not exist (score -inf)
EMPTY_SENTENCE = "empty sentence"  # the error of a row with no token, as herberta_jax's predictor says
DISJOINT_CANDIDATES = 8  # spans kept per entity for disjoint decoding, as best_entity_pairs' `candidates`
# The call parameters (of `pipeline(...)` and of each call): anything else is refused, a misspelling included.
COUNT_PARAMETERS = ("top_k", "top_m", "max_span_len")  # whole numbers >= 1
SWITCH_PARAMETERS = ("disjoint_entities", "ordered_entities")  # booleans
_LOADING_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "proxies", "dtype",
                   "device_map")


class HerbertaConfig(PreTrainedConfig):
  """The export root's config: `herberta` holds the export's herberta.json (labels, relation token ids, max
  length, special ids, decoding); `relation` and `tagger` name the two sub-checkpoints' folders."""

  model_type = "herberta-two-stage"

  def __init__(self, herberta: dict | None = None, relation: str = "relation", tagger: str = "tagger", **kwargs):
    self.herberta = dict(herberta or {})
    self.relation = relation
    self.tagger = tagger
    super().__init__(**kwargs)


class HerbertaTwoStageModel(PreTrainedModel):
  """Both stages on one device: the relation classifier and the entity tagger, each a transformers model loaded
  from its own sub-checkpoint (the root holds no weights of its own)."""

  config_class = HerbertaConfig
  base_model_prefix = "herberta"

  def __init__(self, config: HerbertaConfig, relation=None, tagger=None):
    super().__init__(config)
    self.relation = relation
    self.tagger = tagger

  @classmethod
  def from_pretrained(cls, pretrained_model_name_or_path, *args, config=None, **kwargs):
    """Loads `relation/` and `tagger/` of an export directory or Hub repository (`subfolder`, so both work)."""
    del args
    loading = {key: kwargs[key] for key in _LOADING_KWARGS if key in kwargs}
    if not isinstance(config, HerbertaConfig):
      config = HerbertaConfig.from_pretrained(pretrained_model_name_or_path,
                                              **{k: v for k, v in loading.items() if k not in ("dtype", "device_map")})
    root = str(pretrained_model_name_or_path).rstrip("/")
    source = f"{root}/config.json (its \"herberta\")"
    check_meta(config.herberta, source)  # before the weights are read
    relation = AutoModelForSequenceClassification.from_pretrained(pretrained_model_name_or_path,
                                                                  subfolder=config.relation, **loading)
    tagger = AutoModelForTokenClassification.from_pretrained(pretrained_model_name_or_path, subfolder=config.tagger,
                                                             **loading)
    check_against_models(config.herberta, source, id2label={int(k): v for k, v in relation.config.id2label.items()},
                         id2label_source=f"{root}/{config.relation}/config.json",
                         head_outputs=relation.config.num_labels, vocab_size=tagger.config.vocab_size,
                         max_positions=tagger.config.max_position_embeddings,
                         tagger_source=f"{root}/{config.tagger}/config.json")
    config._name_or_path = str(pretrained_model_name_or_path)
    return cls(config, relation, tagger).eval()

  def forward(self, input_ids, attention_mask, *, top_k: int | None = None, top_m: int | None = None,
              max_span_len: int | None = None, disjoint_entities: bool | None = None,
              ordered_entities: bool | None = None) -> dict:
    """Relation inputs `[CLS] sentence [SEP] pad..` [B, L] -> the top K relations and, for each, the top M entity
    pairs, as `two_stage.make_two_stage_fn` returns them: `relation` [B, K] label ids, `relation_logprob` [B, K];
    `e1_start`, `e1_end`, `e2_start`, `e2_end` [B, K, M] positions in the relation input (ends inclusive; a
    missing candidate is negative), `pair_logprob` and `joint_logprob` [B, K, M]. A setting left None is the
    trained run's (the export's "decoding")."""
    meta = self.config.herberta
    decoding = {**DEFAULT_DECODING, **meta.get("decoding", {})}
    max_span_len = decoding["max_span_len"] if max_span_len is None else int(max_span_len)
    disjoint = decoding["disjoint_entities"] if disjoint_entities is None else bool(disjoint_entities)
    ordered = decoding["ordered_entities"] if ordered_entities is None else bool(ordered_entities)
    labels = meta["labels"]
    top_k = min(int(decoding["top_k"] if top_k is None else top_k), len(labels))
    top_m = int(decoding["top_m"] if top_m is None else top_m)
    logits = self.relation(input_ids=input_ids, attention_mask=attention_mask).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    relation_logprob, relation = _top_k(logprobs, top_k)  # [B, K]
    batch = input_ids.shape[0]
    # Each sentence is tagged once per candidate relation: [B * K, L + 2] rows.
    token_table = torch.tensor([meta["relation_token_ids"][label] for label in labels], device=input_ids.device)
    ids, mask, types, sentence_mask = tagger_inputs(
        input_ids.repeat_interleave(top_k, dim=0), attention_mask.repeat_interleave(top_k, dim=0),
        token_table[relation.reshape(-1)], cls_id=meta["cls_id"], sep_id=meta["sep_id"], pad_id=meta["pad_id"],
        two_segments=meta["two_segments"])
    tag_logits = self.tagger(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    pairs = best_entity_pairs(tag_logits.float(), sentence_mask, max_span_len=max_span_len, top_m=top_m,
                              disjoint=disjoint, ordered=ordered)
    out = {"relation": relation, "relation_logprob": relation_logprob}
    for key in ("e1_start", "e1_end", "e2_start", "e2_end"):
      out[key] = pairs[key].reshape(batch, top_k, -1) - TAGGER_SHIFT
    out["pair_logprob"] = pairs["score"].reshape(batch, top_k, -1)
    out["e1_logprob"] = pairs["e1_score"].reshape(batch, top_k, -1)
    out["e2_logprob"] = pairs["e2_score"].reshape(batch, top_k, -1)
    out["joint_logprob"] = out["pair_logprob"] + relation_logprob[:, :, None]
    return out


class RelationExtractionPipeline(Pipeline):
  """Sentences in, (relation, entity 1, entity 2) out, with character offsets, scores and n-best lists.

  Call parameters (also accepted by `pipeline(...)`): `top_k` relations per sentence and `top_m` entity pairs per
  relation, the best triple being the most probable of them; `max_span_len`, `disjoint_entities` and
  `ordered_entities`. Each defaults to the trained run's, from the export. A list of sentences is run in batches
  of `batch_size`; `device` as for any pipeline.
  """

  _load_tokenizer = True  # the export root carries the tagger's tokenizer (relation tokens included)
  _load_processor = False
  _load_image_processor = False
  _load_video_processor = False
  _load_feature_extractor = False

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    # As herberta_jax's `tokenize.load_tokenizer`: a tokenizer.json may carry truncation or padding; cutting is
    # `preprocess`'s job, padding the collator's (on the right, where the relation input expects it).
    backend = self.tokenizer.backend_tokenizer
    if backend.truncation is not None:
      backend.no_truncation()
    if backend.padding is not None:
      backend.no_padding()
    self.tokenizer.padding_side = "right"

  def __call__(self, inputs, *args, **kwargs):
    """`inputs`: a sentence (str) or a list of them (then a list of results, `[]` for `[]`); the parameters as in
    the class docstring, plus `batch_size` and `num_workers`. Raises TypeError for an unknown parameter or a wrong
    type, ValueError for a value out of range; each message names the parameter and the values it takes."""
    self._sanitize_parameters(**{k: v for k, v in kwargs.items() if k not in ("batch_size", "num_workers")})
    if isinstance(inputs, list | tuple) and not inputs:
      return []
    return super().__call__(inputs, *args, **kwargs)

  def _sanitize_parameters(self, **given):
    unknown = sorted(set(given) - set(COUNT_PARAMETERS) - set(SWITCH_PARAMETERS))
    if unknown:
      raise TypeError(f"{TASK}: unknown parameter{'s' * (len(unknown) > 1)} {', '.join(unknown)}; it takes "
                      f"{', '.join(COUNT_PARAMETERS + SWITCH_PARAMETERS)} (and batch_size, num_workers)")
    forward = {name: value for name, value in given.items() if value is not None}
    for name, value in forward.items():
      if name in SWITCH_PARAMETERS and not isinstance(value, bool):
        raise TypeError(f"{TASK}: {name}={value!r}: expected True, False or None, got {type(value).__name__}")
      if name in COUNT_PARAMETERS:
        if isinstance(value, bool) or not isinstance(value, int):
          raise TypeError(f"{TASK}: {name}={value!r}: expected a whole number >= 1 or None, got "
                          f"{type(value).__name__}")
        if value < 1:
          raise ValueError(f"{TASK}: {name}={value!r}: must be a whole number >= 1 or None")
    return {}, forward, {}

  def preprocess(self, text: str) -> dict:
    if not isinstance(text, str):
      raise TypeError(f"{TASK}: expected a sentence (str), got {type(text).__name__}")
    meta = self.model.config.herberta
    limit = meta["max_seq_len"] - TAGGER_EXTRA_TOKENS
    error, truncated_at = None, None
    encoded = self._encode(text) if text.strip() else EMPTY_SENTENCE
    if isinstance(encoded, str):  # a placeholder row keeps the batch whole; postprocess answers it with the error
      error, ids, offsets = encoded, [meta["cls_id"], meta["sep_id"]], [(0, 0), (0, 0)]
    else:
      ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
      if len(ids) > limit:  # the sentence's beginning and its [SEP], as `prepare` and `predict` cut it
        keep = limit - 1
        ids, offsets = ids[:keep] + ids[-1:], offsets[:keep] + offsets[-1:]
        truncated_at = int(offsets[keep - 1][1])
    return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "text": text, "offsets": offsets, "truncated_at": truncated_at, "error": error}

  def _encode(self, text: str):
    """The tokenizer's encoding of one sentence, or its error: whatever the tokenizer raises (a lone surrogate is
    a TypeError), or no token at all (only zero-width or control characters), as `Predictor._tokenize` says."""
    try:
      encoded = self.tokenizer(text, add_special_tokens=True, truncation=False, return_offsets_mapping=True,
                               return_special_tokens_mask=True)
    except Exception as error:  # noqa: BLE001 - becomes this row's error object, never its batch's
      detail = " ".join(str(error).split()) or type(error).__name__
      return (f"the tokenizer cannot read this sentence ({type(error).__name__}: {detail}); check it for lone "
              "surrogates or other text that is not valid Unicode")
    return EMPTY_SENTENCE if all(encoded["special_tokens_mask"]) else encoded

  def _forward(self, model_inputs: dict, top_k=None, top_m=None, max_span_len=None, disjoint_entities=None,
               ordered_entities=None):
    outputs = self.model(model_inputs["input_ids"], model_inputs["attention_mask"], top_k=top_k, top_m=top_m,
                         max_span_len=max_span_len, disjoint_entities=disjoint_entities,
                         ordered_entities=ordered_entities)
    # Tensors first: the pipeline's batch unrolling reads the batch size from the first value.
    return {**outputs, **{key: model_inputs[key] for key in ("text", "offsets", "truncated_at", "error")}}

  def postprocess(self, model_outputs: dict) -> dict:
    if model_outputs["error"]:
      return {"error": model_outputs["error"]}
    text, offsets = model_outputs["text"], model_outputs["offsets"]
    labels = self.model.config.herberta["labels"]
    values = {key: value[0].tolist() for key, value in model_outputs.items() if isinstance(value, torch.Tensor)}
    nbest = []
    for k, relation in enumerate(values["relation"]):
      for m, joint in enumerate(values["joint_logprob"][k]):
        e1 = token_span_to_chars(offsets, values["e1_start"][k][m], values["e1_end"][k][m])
        e2 = token_span_to_chars(offsets, values["e2_start"][k][m], values["e2_end"][k][m])
        nbest.append({
            "relation": labels[relation],
            "relation_score": float(torch.tensor(values["relation_logprob"][k]).exp()),
            "score": float(torch.tensor(joint).exp()),
            "e1": {"text": text[e1[0]:e1[1]], "start": e1[0], "end": e1[1],
                   "score": float(torch.tensor(values["e1_logprob"][k][m]).exp())},
            "e2": {"text": text[e2[0]:e2[1]], "start": e2[0], "end": e2[1],
                   "score": float(torch.tensor(values["e2_logprob"][k][m]).exp())},
        })
    nbest.sort(key=lambda t: -t["score"])
    best = nbest[0]
    result = {"relation": best["relation"], "score": best["relation_score"], "e1": best["e1"], "e2": best["e2"],
              "tagged": tag_text(text, (best["e1"]["start"], best["e1"]["end"]),
                                 (best["e2"]["start"], best["e2"]["end"])),
              "nbest": nbest}
    if model_outputs["truncated_at"] is not None:
      result.update(truncated=True, truncated_at=model_outputs["truncated_at"])
    return result


def _top_k(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
  """The k largest along the last axis, equal values in index order (as `lax.top_k`; torch.topk promises no
  order among ties)."""
  ordered, index = torch.sort(values, dim=-1, descending=True, stable=True)
  return ordered[..., :k], index[..., :k]


def tagger_inputs(input_ids, attention_mask, relation_token_ids, *, cls_id: int, sep_id: int, pad_id: int,
                  two_segments: bool):
  """`[CLS] s_1 .. s_n [SEP] pad..` [B, L] -> the tagger's `[CLS] [relation] [SEP] s_1 .. s_n [SEP] pad..` [B, L + 2]:
  (input_ids, attention_mask, token_type_ids, sentence_mask), sentence_mask marking s_1 .. s_n only."""
  batch, device = input_ids.shape[0], input_ids.device
  prefix = torch.stack([torch.full((batch,), cls_id, device=device), relation_token_ids.to(input_ids.dtype),
                        torch.full((batch,), sep_id, device=device)], dim=1).to(input_ids.dtype)
  body_mask = attention_mask[:, 1:].long()
  ids = torch.cat([prefix, torch.where(body_mask > 0, input_ids[:, 1:], pad_id)], dim=1)
  mask = torch.cat([torch.ones(batch, 3, dtype=torch.long, device=device), body_mask], dim=1)
  lengths = attention_mask.long().sum(dim=1)  # n + 2
  positions = torch.arange(ids.shape[1], device=device)[None, :]
  sentence_mask = (positions >= 3) & (positions < (lengths + 1)[:, None])
  if two_segments:
    token_type_ids = ((positions >= 3) & (mask > 0)).long()
  else:
    token_type_ids = torch.zeros_like(mask)
  return ids, mask, token_type_ids, sentence_mask


def _masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """log_softmax over the positions where `mask` is true; -inf elsewhere (and everywhere for an empty mask)."""
  masked = logits.masked_fill(~mask, float("-inf"))
  peak = masked.max(dim=-1, keepdim=True).values
  peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))  # an empty row must not turn into NaN
  shifted = masked - peak
  log_norm = torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
  return torch.where(mask, shifted - log_norm, torch.full_like(shifted, float("-inf")))


def best_spans(start_logits, end_logits, mask, *, max_span_len: int, top_m: int = 1):
  """The `top_m` best spans (s, e), s <= e < s + max_span_len, both inside the mask, by log p(s) + log p(e);
  scores by (start, width) as [B, L, W], one top-k over it. Returns (starts, ends, scores), each [B, top_m];
  a missing candidate has score -inf and positions -1."""
  batch, length = start_logits.shape
  allowed = mask.bool()
  start_lp = _masked_log_softmax(start_logits.float(), allowed)
  end_lp = _masked_log_softmax(end_logits.float(), allowed)
  width = min(max_span_len, length)
  padded_end = torch.nn.functional.pad(end_lp, (0, width - 1), value=float("-inf"))  # ends past L: invalid
  device = start_logits.device
  end_index = torch.arange(length, device=device)[:, None] + torch.arange(width, device=device)[None, :]
  scores = (start_lp[:, :, None] + padded_end[:, end_index]).reshape(batch, length * width)
  if top_m > length * width:  # the JAX function refuses this; here the extra candidates are simply missing
    scores = torch.nn.functional.pad(scores, (0, top_m - length * width), value=float("-inf"))
  top_scores, flat = _top_k(scores, top_m)
  found = torch.isfinite(top_scores)
  starts = flat // width
  no_span = torch.full_like(flat, NO_SPAN)
  return torch.where(found, starts, no_span), torch.where(found, starts + flat % width, no_span), top_scores


def best_entity_pairs(logits, mask, *, max_span_len: int, top_m: int = 1, disjoint: bool = False,
                      ordered: bool = False, candidates: int = DISJOINT_CANDIDATES) -> dict:
  """The `top_m` best (entity 1, entity 2) span pairs of [B, L, 4] tagger logits (e1 start, e1 end, e2 start,
  e2 end) by the sum of their span scores; `disjoint` rules out overlapping pairs, `ordered` pairs whose entity 1
  does not end before entity 2 starts (each falling back to independent decoding where it rules out every
  candidate pair). Returns [B, top_m] `e1_start`, `e1_end`, `e2_start`, `e2_end`
  (tagger positions, ends inclusive, -1 where missing) and `score`."""
  batch, length = logits.shape[:2]
  constrained = disjoint or ordered
  keep = min(max(top_m, candidates), length * min(max_span_len, length)) if constrained else top_m
  e1_start, e1_end, e1_score = best_spans(logits[..., 0], logits[..., 1], mask, max_span_len=max_span_len, top_m=keep)
  e2_start, e2_end, e2_score = best_spans(logits[..., 2], logits[..., 3], mask, max_span_len=max_span_len, top_m=keep)
  pair_scores = e1_score[:, :, None] + e2_score[:, None, :]  # [B, keep, keep]
  if constrained:
    if ordered:
      ruled_out = e1_end[:, :, None] >= e2_start[:, None, :]
    else:
      ruled_out = (e1_start[:, :, None] <= e2_end[:, None, :]) & (e2_start[:, None, :] <= e1_end[:, :, None])
    allowed = pair_scores.masked_fill(ruled_out, float("-inf"))
    any_allowed = torch.isfinite(allowed).flatten(1).any(dim=1)[:, None, None]
    pair_scores = torch.where(any_allowed, allowed, pair_scores)
  score, flat = _top_k(pair_scores.reshape(batch, keep * keep), top_m)
  first, second = flat // keep, flat % keep
  found = torch.isfinite(score)

  def pick(values, index):
    return torch.where(found, torch.gather(values, 1, index), torch.full_like(index, NO_SPAN))

  def pick_score(values, index):
    return torch.where(found, torch.gather(values, 1, index), torch.full_like(score, float("-inf")))

  return {"e1_start": pick(e1_start, first), "e1_end": pick(e1_end, first), "e2_start": pick(e2_start, second),
          "e2_end": pick(e2_end, second), "score": score, "e1_score": pick_score(e1_score, first),
          "e2_score": pick_score(e2_score, second)}


def token_span_to_chars(offsets, start: int, end: int) -> tuple[int, int]:
  """Half-open character span of tokens start..end (end inclusive); a negative position (no span) gives (0, 0)."""
  if start < 0 or end < 0:
    return (0, 0)
  return (int(offsets[start][0]), int(offsets[end][1]))


def tag_text(text: str, e1: tuple[int, int], e2: tuple[int, int]) -> str:
  """The SMiLER form of `text` (`<e1>..</e1>`, `<e2>..</e2>`); an empty span is left untagged and, where the two
  overlap, only entity 1 is tagged (SMiLER has no nested tags)."""
  tags = []
  if e1[0] < e1[1]:
    tags.append((e1, "e1"))
  if e2[0] < e2[1] and not (e1[0] < e1[1] and e2[0] < e1[1] and e1[0] < e2[1]):
    tags.append((e2, "e2"))
  pieces, pos = [], 0
  for (start, end), name in sorted(tags):
    pieces += [text[pos:start], f"<{name}>", text[start:end], f"</{name}>"]
    pos = end
  pieces.append(text[pos:])
  return "".join(pieces)
