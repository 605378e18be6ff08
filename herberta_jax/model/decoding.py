"""Span decoding for the entity tagger, plus the host-side helpers that turn token spans into text.

On device (jax.numpy, jit-friendly, static shapes): `best_spans` finds the best (start, end) token spans of one
entity from its start and end logits; `best_entity_pairs` does it for both entities of the tagger's [B, L, 4]
output (channels: e1 start, e1 end, e2 start, e2 end; the order of `Features.spans`).

A span's score is log p(start) + log p(end), with each softmax taken over the allowed (masked-in) positions only,
so scores are comparable across rows of different lengths. Where a row admits fewer valid spans than asked for
(an empty mask, or `top_m` larger than the number of spans), the missing candidates get score -inf and positions
-1: callers check `jnp.isfinite(score)` rather than trusting the positions.

On the host: `token_span_to_chars` maps token positions to a half-open character span, and `tag_text` writes
the SMiLER form of a sentence (`<e1>..</e1>`, `<e2>..</e2>`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

NO_SPAN = -1  # position reported for a candidate that does not exist (score -inf)


def _masked_log_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """log_softmax over the positions where `mask` is true; -inf elsewhere (and everywhere for an empty mask)."""
  masked = jnp.where(mask, logits, -jnp.inf)
  peak = jnp.max(masked, axis=-1, keepdims=True)
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)  # an empty row must not turn into NaN - NaN
  shifted = masked - peak
  log_norm = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
  return jnp.where(mask, shifted - log_norm, -jnp.inf)


def best_spans(start_logits: jax.Array, end_logits: jax.Array, mask: jax.Array, *, max_span_len: int,
               top_m: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The `top_m` best spans of one entity per row.

  A span (s, e) is valid when s <= e < s + max_span_len and both s and e lie inside the mask. Its score is
  log_softmax(start_logits)[s] + log_softmax(end_logits)[e], each softmax over the masked-in positions.
  Built as a [B, L, W] matrix of scores by (start, width), W = min(max_span_len, L), with one `lax.top_k`
  over it: the band of a [B, L, L] (start, end) matrix without the cells that can never be valid.

  Args:
    start_logits: [B, L] logits of the span start.
    end_logits: [B, L] logits of the span end.
    mask: [B, L], nonzero/True where a span may start or end.
    max_span_len: longest span in tokens (>= 1).
    top_m: number of spans to return per row, best first (>= 1); past the row's L * min(max_span_len, L)
      candidates, the rest are missing.

  Returns:
    (starts, ends, scores), each [B, top_m]: int32 token positions (ends inclusive) and float32 scores.
    Candidates that do not exist have score -inf and positions -1.

  Raises:
    ValueError: the shapes disagree, or `max_span_len` / `top_m` is out of range.
  """
  if start_logits.ndim != 2 or start_logits.shape != end_logits.shape or mask.shape != start_logits.shape:
    raise ValueError(f"best_spans: start_logits, end_logits and mask must share one [B, L] shape; got "
                     f"{start_logits.shape}, {end_logits.shape} and {mask.shape}")
  batch, length = start_logits.shape
  if max_span_len < 1:
    raise ValueError(f"best_spans: max_span_len must be >= 1, got {max_span_len} (config infer.max_span_len)")
  if top_m < 1:
    raise ValueError(f"best_spans: top_m must be >= 1, got {top_m} (config infer.top_m)")
  allowed = mask.astype(bool)
  start_lp = _masked_log_softmax(start_logits.astype(jnp.float32), allowed)
  end_lp = _masked_log_softmax(end_logits.astype(jnp.float32), allowed)
  # Only the band end - start < max_span_len can hold a valid span, so the score matrix is stored by
  # (start, width) as [B, L, W] rather than by (start, end) as [B, L, L]: the same top_k, L / W times less work.
  width = min(max_span_len, length)
  padded_end = jnp.pad(end_lp, ((0, 0), (0, width - 1)), constant_values=-jnp.inf)  # ends past L: invalid
  end_index = jnp.arange(length)[:, None] + jnp.arange(width)[None, :]  # [start, width] -> end
  ends_by_width = padded_end[:, end_index]  # [B, start, width]
  scores = (start_lp[:, :, None] + ends_by_width).reshape(batch, length * width)
  if top_m > length * width:  # a short batch has fewer spans than asked for: the rest are missing (-inf)
    scores = jnp.pad(scores, ((0, 0), (0, top_m - length * width)), constant_values=-jnp.inf)
  top_scores, flat = jax.lax.top_k(scores, top_m)
  found = jnp.isfinite(top_scores)
  starts = flat // width
  starts_out = jnp.where(found, starts, NO_SPAN).astype(jnp.int32)
  ends = jnp.where(found, starts + flat % width, NO_SPAN).astype(jnp.int32)
  return starts_out, ends, top_scores


def best_entity_pairs(logits: jax.Array, mask: jax.Array, *, max_span_len: int, top_m: int = 1,
                      disjoint: bool = False, ordered: bool = False, candidates: int = 8) -> dict:
  """The `top_m` best (entity 1 span, entity 2 span) pairs per row.

  Independent decoding (`disjoint=False`, the paper's): each entity keeps its `top_m` best spans (`best_spans`);
  the pairs are ranked by the sum of the two span scores, and the best `top_m` of the top_m x top_m sums are
  returned. This is exact: the best m pairs can only combine spans that are each among their entity's best m.
  The two spans may overlap.

  Disjoint decoding (`disjoint=True`): SMiLER's two entities never overlap, so pairs whose spans share a token
  are ruled out. Each entity keeps max(top_m, candidates) best spans and the best `top_m` non-overlapping pairs
  among them are returned; a row where every such pair overlaps falls back to independent decoding.

  Ordered decoding (`ordered=True`, for data whose entity 1 always comes first, as SemEval-2010 Task 8's): as
  disjoint decoding, with the pairs whose entity 1 does not end before entity 2 starts ruled out.

  Args:
    logits: [B, L, 4] tagger logits; channels e1 start, e1 end, e2 start, e2 end.
    mask: [B, L], nonzero/True where a span may start or end (the tagger's `sentence_mask`).
    max_span_len: longest span in tokens.
    top_m: pairs to return per row, best first.
    disjoint: rule out overlapping pairs.
    ordered: rule out pairs where entity 1 does not end before entity 2 starts (implies `disjoint`).
    candidates: spans kept per entity for disjoint and ordered decoding.

  Returns:
    A dict of [B, top_m] arrays: `e1_start`, `e1_end`, `e2_start`, `e2_end` (int32 positions, ends inclusive),
    `score` (float32 joint log-probability) and `e1_score`, `e2_score` (each span's own log-probability; they sum
    to `score`). A pair that does not exist has scores -inf and positions -1.
  """
  if logits.ndim != 3 or logits.shape[-1] != 4:
    raise ValueError(f"best_entity_pairs: logits must be [B, L, 4] (e1 start, e1 end, e2 start, e2 end); "
                     f"got shape {logits.shape}")
  batch, length = logits.shape[:2]
  constrained = disjoint or ordered
  keep = min(max(top_m, candidates), length * min(max_span_len, length)) if constrained else top_m
  e1_start, e1_end, e1_score = best_spans(logits[..., 0], logits[..., 1], mask, max_span_len=max_span_len,
                                          top_m=keep)
  e2_start, e2_end, e2_score = best_spans(logits[..., 2], logits[..., 3], mask, max_span_len=max_span_len,
                                          top_m=keep)
  pair_scores = e1_score[:, :, None] + e2_score[:, None, :]  # [B, keep, keep]
  if constrained:
    if ordered:
      ruled_out = e1_end[:, :, None] >= e2_start[:, None, :]
    else:
      ruled_out = (e1_start[:, :, None] <= e2_end[:, None, :]) & (e2_start[:, None, :] <= e1_end[:, :, None])
    allowed = jnp.where(ruled_out, -jnp.inf, pair_scores)
    any_allowed = jnp.isfinite(allowed).any(axis=(1, 2), keepdims=True)
    pair_scores = jnp.where(any_allowed, allowed, pair_scores)
  score, flat = jax.lax.top_k(pair_scores.reshape(batch, keep * keep), top_m)
  first, second = flat // keep, flat % keep
  found = jnp.isfinite(score)

  def pick(values, index):
    return jnp.where(found, jnp.take_along_axis(values, index, axis=1), NO_SPAN).astype(jnp.int32)

  def pick_score(values, index):
    return jnp.where(found, jnp.take_along_axis(values, index, axis=1), -jnp.inf)

  return {
      "e1_start": pick(e1_start, first), "e1_end": pick(e1_end, first),
      "e2_start": pick(e2_start, second), "e2_end": pick(e2_end, second),
      "score": score, "e1_score": pick_score(e1_score, first), "e2_score": pick_score(e2_score, second),
  }


def token_span_to_chars(offsets: np.ndarray | Sequence[Sequence[int]], start: int, end: int) -> tuple[int, int]:
  """Character span [offsets[start][0], offsets[end][1]) of the token span start..end (end inclusive).

  `offsets` is [L, 2]: each token's half-open character span in the text, for the same input the positions
  index. A negative `start` or `end` is the "no span" marker of `best_spans` (possibly shifted by a caller) and
  gives the empty span (0, 0), which matches no gold entity and `tag_text` leaves untagged.

  Raises:
    ValueError: start > end, a position past the end of `offsets`, or offsets that run backwards (the span
      covers special or padding tokens, whose offsets are (0, 0): decode with the tagger's sentence mask).
  """
  start, end = int(start), int(end)
  if start < 0 or end < 0:
    return (0, 0)
  if start > end or end >= len(offsets):
    raise ValueError(f"token_span_to_chars: token span ({start}, {end}) is not within 0 <= start <= end < "
                     f"{len(offsets)} (the number of offsets); pass the offsets of the input the span indexes")
  char_start, char_end = int(offsets[start][0]), int(offsets[end][1])
  if char_end < char_start:
    raise ValueError(f"token_span_to_chars: token span ({start}, {end}) maps to characters ({char_start}, "
                     f"{char_end}), which run backwards: the span covers special or padding tokens; decode "
                     "spans with the sentence mask")
  return (char_start, char_end)


def _check_char_span(name: str, span: tuple[int, int], text_len: int) -> tuple[int, int]:
  start, end = int(span[0]), int(span[1])
  if not 0 <= start <= end <= text_len:
    raise ValueError(f"tag_text: {name} span ({start}, {end}) is not within 0 <= start <= end <= {text_len} "
                     "(the text length); pass half-open character spans of this text")
  return start, end


def tag_text(text: str, e1: tuple[int, int], e2: tuple[int, int]) -> str:
  """The SMiLER form of `text`: entity 1 in `<e1>..</e1>`, entity 2 in `<e2>..</e2>`, in either order.

  Spans are half-open character spans. So that the result is always a sentence a SMiLER reader accepts, an
  entity with an empty span is left untagged, and when the two spans overlap only entity 1 is tagged (SMiLER
  has no nested or crossing tags). Both rules drop tags, never raise.

  Raises:
    ValueError: a span lies outside the text or ends before it starts.
  """
  e1 = _check_char_span("e1", e1, len(text))
  e2 = _check_char_span("e2", e2, len(text))
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
