"""The export's contract, checked: what `herberta.json` must hold and how it must agree with the two checkpoints.

Shipped, unchanged, beside `herberta_pipeline.py` in every export, and imported both by herberta_jax (loading an
export for `predict`, `evaluate` and `herberta_jax.load`) and by that pipeline: one schema, one copy. It therefore
imports nothing but the standard library.

An export is a folder a user may edit, copy half of, or be handed by someone else. Every field the two stages read
is checked before any sentence is: a label list reordered against the relation model's `id2label` would otherwise
give wrong relation names, and a relation token id outside the tagger's vocabulary empty entities, silently.
Each failure is one `ExportError` line naming the file and the field.
"""

from __future__ import annotations

FORMAT_VERSION = 1
# What an export written without "decoding" (or without one of its keys) decodes with.
DEFAULT_DECODING = {"max_span_len": 32, "disjoint_entities": False, "ordered_entities": False, "top_k": 1, "top_m": 1}
_DECODING_COUNTS = ("max_span_len", "top_k", "top_m")  # whole numbers >= 1
_DECODING_SWITCHES = ("disjoint_entities", "ordered_entities")  # booleans
_SPECIAL_IDS = ("cls_id", "sep_id", "pad_id")
_FIX = "re-export the run (python -m herberta_jax.export) or restore the file from the export"


class ExportError(Exception):
  """An export whose files do not match the schema; the message names the file and the field.

  Not a ValueError on purpose: `transformers.pipeline` catches a ValueError (or OSError, TypeError, RuntimeError)
  from a model's loading and re-raises it buried in a page of tracebacks. herberta_jax raises its own
  `InvalidExportError` (a ValueError) in its place."""


def _fail(source: str, field: str, problem: str) -> ExportError:
  return ExportError(f"{source}: field {field} {problem}; {_FIX}")


def _is_count(value, minimum: int) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _type_name(value) -> str:
  return "null" if value is None else type(value).__name__


def check_meta(meta, source: str) -> dict:
  """Checks an export's metadata (a parsed `herberta.json`, or the `herberta` of the export root's config.json) on
  its own; returns it. `source` names the file in the error, e.g. `EXPORT/herberta.json`."""
  if not isinstance(meta, dict):
    raise ExportError(f"{source}: holds a JSON {_type_name(meta)}, not an object; {_FIX}")
  version = meta.get("format_version")
  if version != FORMAT_VERSION or isinstance(version, bool):
    raise ExportError(f"{source}: field format_version is {version!r}, this version of herberta reads "
                      f"{FORMAT_VERSION}; re-export the run with this version (python -m herberta_jax.export)")
  labels = meta.get("labels")
  if not isinstance(labels, list) or not labels:
    raise _fail(source, "labels", f"must be a non-empty list of relation names, not {labels!r}")
  for i, label in enumerate(labels):
    if not isinstance(label, str) or not label:
      raise _fail(source, f"labels[{i}]", f"must be a non-empty string, not {label!r}")
  repeated = sorted({label for label in labels if labels.count(label) > 1})
  if repeated:
    raise _fail(source, "labels", f"names {', '.join(map(repr, repeated))} more than once")
  if not isinstance(meta.get("negative_label"), str):  # (a label set may lack it: a corpus without negatives)
    raise _fail(source, "negative_label", f"must be a string, not {meta.get('negative_label')!r}")
  token_ids = meta.get("relation_token_ids")
  if not isinstance(token_ids, dict):
    raise _fail(source, "relation_token_ids", f"must be an object mapping each label to a token id, not "
                f"{_type_name(token_ids)}")
  for label in labels:
    if not _is_count(token_ids.get(label), 0):
      raise _fail(source, f"relation_token_ids[{label!r}]", f"must be a token id (a whole number >= 0), not "
                  f"{token_ids.get(label)!r}")
  tokens = meta.get("relation_tokens", {})
  if not isinstance(tokens, dict) or not all(isinstance(v, str) for v in tokens.values()):
    raise _fail(source, "relation_tokens", "must be an object mapping labels to token strings")
  if not _is_count(meta.get("max_seq_len"), 4):
    raise _fail(source, "max_seq_len", f"must be a whole number >= 4, not {meta.get('max_seq_len')!r}")
  for name in _SPECIAL_IDS:
    if not _is_count(meta.get(name), 0):
      raise _fail(source, name, f"must be a token id (a whole number >= 0), not {meta.get(name)!r}")
  if not isinstance(meta.get("two_segments"), bool):
    raise _fail(source, "two_segments", f"must be true or false, not {meta.get('two_segments')!r}")
  boundaries = meta.get("bucket_boundaries", [])
  if not isinstance(boundaries, list) or not all(_is_count(b, 1) for b in boundaries):
    raise _fail(source, "bucket_boundaries", f"must be a list of whole numbers >= 1, not {boundaries!r}")
  _check_decoding(meta.get("decoding", {}), source)
  return meta


def _check_decoding(decoding, source: str) -> None:
  if not isinstance(decoding, dict):
    raise _fail(source, "decoding", f"must be an object, not {_type_name(decoding)}")
  unknown = sorted(set(decoding) - set(DEFAULT_DECODING))
  if unknown:
    raise _fail(source, f"decoding.{unknown[0]}", f"is not a decoding setting (known: {', '.join(DEFAULT_DECODING)})")
  for name in _DECODING_COUNTS:
    if name in decoding and not _is_count(decoding[name], 1):
      raise _fail(source, f"decoding.{name}", f"must be a whole number >= 1, not {decoding[name]!r}")
  for name in _DECODING_SWITCHES:
    if name in decoding and not isinstance(decoding[name], bool):
      raise _fail(source, f"decoding.{name}", f"must be true or false, not {decoding[name]!r}")


def check_against_models(meta: dict, source: str, *, id2label: dict, id2label_source: str, head_outputs: int,
                         vocab_size: int, max_positions: int, tagger_source: str) -> None:
  """Checks a valid `meta` (`check_meta`) against the checkpoints it chains.

  Args:
    meta, source: the metadata and the file it came from.
    id2label, id2label_source: the relation model's `id2label` (int keys) and its config.json.
    head_outputs: the relation classifier's output count (the rows of its head).
    vocab_size, max_positions, tagger_source: the tagger's embedding rows, its longest input, its config.json.
  """
  labels = meta["labels"]
  if head_outputs != len(labels):
    raise _fail(source, "labels", f"lists {len(labels)} relations, but the relation model's classifier has "
                f"{head_outputs} outputs (see {id2label_source})")
  first = next((i for i, label in enumerate(labels) if id2label.get(i) != label), None)
  if first is not None or len(id2label) != len(labels):
    where = (f"index {first}: {labels[first]!r} here, {id2label.get(first)!r} there" if first is not None
             else f"{len(labels)} labels here, {len(id2label)} there")
    raise _fail(source, "labels", f"disagrees with the id2label of {id2label_source} ({where}): relation names "
                "would be wrong")
  for label in labels:
    if meta["relation_token_ids"][label] >= vocab_size:
      raise _fail(source, f"relation_token_ids[{label!r}]", f"= {meta['relation_token_ids'][label]} is outside the "
                  f"tagger's vocabulary of {vocab_size} tokens ({tagger_source} vocab_size)")
  for name in _SPECIAL_IDS:
    if meta[name] >= vocab_size:
      raise _fail(source, name, f"= {meta[name]} is outside the tagger's vocabulary of {vocab_size} tokens "
                  f"({tagger_source} vocab_size)")
  if meta["max_seq_len"] > max_positions:
    raise _fail(source, "max_seq_len", f"= {meta['max_seq_len']} is longer than the tagger reads "
                f"({tagger_source} max_position_embeddings {max_positions})")
