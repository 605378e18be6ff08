"""The Python API: load a trained pipeline, get (relation, entity 1, entity 2) triples with character offsets.

    import herberta_jax

    model = herberta_jax.load("/tmp/herberta_demo")  # a training workdir or an export directory
    [result] = model.extract(["Paul Schmidt wurde in Hamburg geboren."])
    print(result.relation, result.e1.text, result.e2.text, result.tagged)

`herberta_jax.load` returns a `Model`; `Model.extract` takes sentences and returns one `Extraction` per sentence, in
order: the best relation with its probability, both entities as `Entity` (text, character offsets, probability),
the sentence re-tagged with `<e1>..</e1>` / `<e2>..</e2>`, and the n-best list of `Candidate`s (`top_k` relations x
`top_m` entity pairs each). `Model.extract_iter` streams in bounded memory, which `predict` uses: the CLI is this API
plus files. The work is done by `herberta_jax.inference.predictor.Predictor` (all local devices, one jitted function
for both stages); importing this module (or `herberta_jax`) does not import JAX, `load` does.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, overload

from herberta_jax.errors import ArgumentError

if TYPE_CHECKING:
  from herberta_jax.inference.predictor import Predictor


@dataclasses.dataclass(frozen=True)
class Entity:
  """An entity span of the input sentence: `text == sentence[start:end]` (character offsets, end exclusive).

  `score`: the tagger's probability of this span (start times end) given the relation; the two entities' scores
  multiply to the pair's probability.
  """

  text: str
  start: int
  end: int
  score: float

  @classmethod
  def from_dict(cls, d: dict) -> Entity:
    return cls(d["text"], int(d["start"]), int(d["end"]), float(d["score"]))


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One n-best candidate: a relation and an entity pair tagged for it.

  `relation_score` is the relation's probability; `score` = relation_score x e1.score x e2.score, the ranking key.
  """

  relation: str
  relation_score: float
  score: float
  e1: Entity
  e2: Entity

  @classmethod
  def from_dict(cls, d: dict) -> Candidate:
    return cls(d["relation"], float(d["relation_score"]), float(d["score"]), Entity.from_dict(d["e1"]),
               Entity.from_dict(d["e2"]))


@dataclasses.dataclass(frozen=True)
class Extraction:
  """The prediction for one sentence, or the reason there is none (`error`; every other field then None/empty).

  Attributes:
    text: the sentence as given.
    relation: the best relation (the classifier's top label, possibly the run's negative label `no_relation`).
    score: its probability.
    e1, e2: the entities tagged for it.
    tagged: `text` with `<e1>..</e1>` and `<e2>..</e2>` around the entities.
    nbest: every candidate (top_k relations x top_m pairs), best `score` first.
    truncated_at: for a sentence longer than the model reads, the character offset where reading stopped
      (entities are only found before it); None otherwise.
    error: why the sentence was not predicted (empty, or rejected by the reader), else None.
  """

  text: str
  relation: str | None
  score: float | None
  e1: Entity | None
  e2: Entity | None
  tagged: str | None
  nbest: tuple[Candidate, ...] = ()
  truncated_at: int | None = None
  error: str | None = None

  @classmethod
  def from_prediction(cls, text: str, prediction: dict, truncated_at: int | None = None) -> Extraction:
    """From the Predictor's plain-data prediction (`inference.two_stage.decode_row`, or `{"error": ...}`)."""
    if "error" in prediction:
      return cls(text, None, None, None, None, None, error=prediction["error"])
    return cls(text, prediction["relation"], float(prediction["score"]), Entity.from_dict(prediction["e1"]),
               Entity.from_dict(prediction["e2"]), prediction["tagged"],
               tuple(Candidate.from_dict(c) for c in prediction["nbest"]), truncated_at)

  def to_dict(self) -> dict[str, Any]:
    """The JSON object `predict` writes for this sentence (an error row holds only `error`)."""
    if self.error is not None:
      return {"error": self.error}
    row: dict[str, Any] = {"text": self.text, "relation": self.relation, "score": self.score,
                           "e1": dataclasses.asdict(self.e1), "e2": dataclasses.asdict(self.e2),
                           "tagged": self.tagged, "nbest": [dataclasses.asdict(c) for c in self.nbest]}
    if self.truncated_at is not None:
      row.update(truncated=True, truncated_at=self.truncated_at)
    return row


@dataclasses.dataclass(frozen=True)
class Rejected:
  """A placeholder for an input that cannot be predicted, passed to `Model.extract_iter` in its place: the output
  keeps one `Extraction` per input (its `error` is `reason`), so output N still answers input N."""

  reason: str


class Model:
  """A trained two-stage pipeline, ready to extract triples. Made by `herberta_jax.load`."""

  def __init__(self, path: pathlib.Path, relation, tagger, meta: dict, tokenizer, *, top_k: int, top_m: int,
               options: dict):
    self.path = path
    self._parts = (relation, tagger, meta, tokenizer)
    self._options = options
    self._predictors: dict[tuple[int, int], Predictor] = {}
    self.top_k, self.top_m = top_k, top_m
    self.predictor()  # places the parameters on the devices and checks the options now, not on the first call

  @property
  def labels(self) -> tuple[str, ...]:
    """The relations the model knows, `no_relation` included."""
    return tuple(self._parts[2]["labels"])

  @property
  def max_seq_len(self) -> int:
    """The longest input in tokens: longer sentences are read up to `max_seq_len - 2` tokens (`truncated_at`)."""
    return int(self._parts[2]["max_seq_len"])

  def predictor(self, top_k: int | None = None, top_m: int | None = None) -> Predictor:
    """The `Predictor` behind `extract` for these n-best sizes (compiled once per pair, parameters shared)."""
    key = (self.top_k if top_k is None else check_count("top_k", top_k),
           self.top_m if top_m is None else check_count("top_m", top_m))
    if key not in self._predictors:
      from herberta_jax.inference.predictor import Predictor
      relation, tagger, meta, tokenizer = self._parts
      self._predictors[key] = Predictor(relation, tagger, meta, tokenizer, top_k=key[0], top_m=key[1],
                                        **self._options)
    return self._predictors[key]

  @overload
  def extract(self, sentences: str, *, top_k: int | None = None, top_m: int | None = None) -> Extraction: ...

  @overload
  def extract(self, sentences: Iterable[str], *, top_k: int | None = None,
              top_m: int | None = None) -> list[Extraction]: ...

  def extract(self, sentences, *, top_k=None, top_m=None):
    """Triples for `sentences`, in order: a list of `Extraction`s (one `Extraction` for a single string).

    Args:
      sentences: raw sentences (no entity tags), or one sentence as a string.
      top_k: relations kept per sentence in `nbest` (default: `load`'s).
      top_m: entity pairs kept per relation in `nbest` (default: `load`'s).

    A sentence that cannot be predicted (empty, no token at all such as "\u200b", or text the tokenizer raises on
    such as a lone surrogate "\ud800") gets an `Extraction` whose `error` says why; nothing is raised for it, and
    the other sentences are predicted as they would be without it.
    An empty list gives [].

    Raises:
      TypeError: `sentences` is neither a str nor an iterable of str (the message names the first bad item).
      ValueError: a `top_k` or `top_m` under 1.
    """
    if isinstance(sentences, str):
      return self.extract([sentences], top_k=top_k, top_m=top_m)[0]
    sentences = list(_checked_sentences(_iterable_of_sentences(sentences)))  # every item checked before any work
    self.predictor(top_k, top_m)  # the n-best sizes too
    return list(self.extract_iter(sentences, top_k=top_k, top_m=top_m)) if sentences else []

  def extract_iter(self, sentences: Iterable[str | Rejected], *, top_k: int | None = None, top_m: int | None = None,
                   start_row: int = 0) -> Iterator[Extraction]:
    """`extract` as a stream, in bounded memory: sentences are read and tokenized ahead on a thread, predicted in
    sorted windows and yielded in input order as each window finishes (so the first ones come out early).

    A `Rejected` in place of a sentence yields an `Extraction` with its reason as `error`. `start_row` (for a
    resumed run) says that `sentences` starts at that row of a longer input, on a window boundary
    (`predictor().window_sizes()`), so batches, and thus scores to the last digit, match an uninterrupted run.
    """
    predictor = self.predictor(top_k, top_m)
    pairs = ((None, s.reason) if isinstance(s, Rejected) else (s, None)
             for s in _checked_sentences(_iterable_of_sentences(sentences)))
    for enc, prediction in predictor.run(predictor.encode_stream(pairs), start_row=start_row):
      yield Extraction.from_prediction(enc.text, prediction, enc.truncated_at)

  def __repr__(self) -> str:
    return f"Model({str(self.path)!r}, {len(self.labels)} relations, top_k={self.top_k}, top_m={self.top_m})"


DTYPES = ("float32", "bfloat16", "float16")  # compute dtypes `load` takes (None: float32)


def _iterable_of_sentences(sentences) -> Iterable:
  if isinstance(sentences, bytes | bytearray) or not isinstance(sentences, Iterable):
    raise TypeError(f"sentences: expected a str or an iterable of str, got {type(sentences).__name__}")
  return sentences


def _checked_sentences(sentences: Iterable) -> Iterator:
  """The items of `sentences`, raising TypeError at the first that is not a str (or a `Rejected`)."""
  for i, sentence in enumerate(sentences):
    if not isinstance(sentence, str | Rejected):
      raise TypeError(f"sentences[{i}]: expected a str, got {type(sentence).__name__} ({sentence!r:.40})")
    yield sentence


def check_count(name: str, value, *, optional: bool = False) -> int | None:
  """`value` as a whole number >= 1 (None too where `optional`): TypeError or ValueError naming `name` otherwise."""
  if value is None and optional:
    return None
  if isinstance(value, bool) or not isinstance(value, int):
    raise TypeError(f"{name}={value!r}: expected a whole number >= 1{' or None' * optional}, got "
                    f"{type(value).__name__}")
  if value < 1:
    raise ArgumentError(f"{name}={value!r}: must be a whole number >= 1{' or None' * optional}")
  return value


def _check_load_arguments(path, *, top_k, top_m, batch_size, dtype, max_span_len, disjoint_entities,
                          ordered_entities, lengths_per_doubling) -> None:
  """`load`'s arguments, checked at the call rather than at the first `extract`."""
  if not isinstance(path, str | os.PathLike):
    raise TypeError(f"path={path!r}: expected a str or os.PathLike (an export directory, a training workdir or a "
                    f"gs:// URL), got {type(path).__name__}")
  for name, value in (("top_k", top_k), ("top_m", top_m), ("max_span_len", max_span_len)):
    check_count(name, value, optional=True)
  check_count("batch_size", batch_size)
  check_count("lengths_per_doubling", lengths_per_doubling)
  if dtype is not None and dtype not in DTYPES:
    raise (ArgumentError if isinstance(dtype, str) else TypeError)(
        f"dtype={dtype!r}: use None (float32) or one of {', '.join(map(repr, DTYPES))}")
  for name, value in (("disjoint_entities", disjoint_entities), ("ordered_entities", ordered_entities)):
    if value is not None and not isinstance(value, bool):
      raise TypeError(f"{name}={value!r}: expected True, False or None, got {type(value).__name__}")


def _check_kernels(names) -> None:
  if not isinstance(names, str):
    raise TypeError(f"kernels={names!r}: expected a str (\"all\" or comma-separated names), got "
                    f"{type(names).__name__}")
  from herberta_jax.model import kernels
  try:
    kernels.parse(names)
  except ValueError as error:
    raise ArgumentError(f"kernels={names!r}: {error}") from None


def _import_transformers_quietly() -> None:
  """Imports transformers without its import-time advice ("PyTorch was not found": the API needs no PyTorch),
  leaving its logging as it would otherwise be. A TRANSFORMERS_VERBOSITY the user set is kept."""
  if "transformers" in sys.modules or "TRANSFORMERS_VERBOSITY" in os.environ:
    return
  os.environ["TRANSFORMERS_VERBOSITY"] = "error"
  try:
    import transformers.utils.logging as hf_logging
  finally:
    del os.environ["TRANSFORMERS_VERBOSITY"]
  hf_logging.set_verbosity(hf_logging.WARNING)  # transformers' default


def load(path: str | os.PathLike, *, top_k: int | None = None, top_m: int | None = None, batch_size: int = 64,
         dtype: str | None = None, max_span_len: int | None = None, disjoint_entities: bool | None = None,
         ordered_entities: bool | None = None, lengths_per_doubling: int = 8, kernels: str = "") -> Model:
  """Loads a trained pipeline for `Model.extract`.

  Args:
    path: an export directory (holding `herberta.json`, `relation/`, `tagger/`) or a finished training workdir
      (its `export/` is used); local, or a URL such as `gs://bucket/export` (read through a local copy).
    top_k, top_m: the default n-best sizes of `extract` (relations per sentence, entity pairs per relation; each
      sentence's best triple is the most probable of them); None takes the run's own (recorded in the export:
      1 and 1, the paper's output, unless the run's `infer.top_k` / `infer.top_m` said otherwise).
    batch_size: sentences per batch over all local devices (must divide by their number).
    dtype: compute dtype, e.g. "bfloat16" on GPU/TPU (parameters stay float32); None: float32.
    max_span_len, disjoint_entities, ordered_entities: span decoding; None takes the run's own (recorded in the
      export).
    lengths_per_doubling: padded batch lengths per doubling of the length (8: ..., 16, 18, ..., 32, 36, ...; more
      pads less and compiles more programs).
    kernels: fused GPU kernels for the encoders: "all" or a comma-separated subset of "layer_norm", "bias_gelu",
      "attention" ("": none). Off a GPU they run as their pure-JAX references.

  Raises:
    herberta_jax.errors.UserError: `path` is not an export or workdir, or its files are incomplete or disagree
      with each other (the message names the file and the field).
    TypeError: an argument of the wrong type (the message names it).
    ValueError: a `batch_size` the devices cannot share, a `top_k`/`top_m`/`max_span_len`/`lengths_per_doubling`
      under 1, a `dtype` not in `DTYPES`, or an unknown kernel.
  """
  _check_load_arguments(path, top_k=top_k, top_m=top_m, batch_size=batch_size, dtype=dtype,
                        max_span_len=max_span_len, disjoint_entities=disjoint_entities,
                        ordered_entities=ordered_entities, lengths_per_doubling=lengths_per_doubling)
  _check_kernels(kernels)
  _import_transformers_quietly()
  from herberta_jax.hub import format as export_format
  from herberta_jax.inference.predictor import load_export

  loaded = load_export(path)
  decoding = export_format.run_decoding(loaded.meta)
  top_k = decoding["top_k"] if top_k is None else top_k
  top_m = decoding["top_m"] if top_m is None else top_m
  options = {"batch_size": batch_size, "dtype": dtype, "max_span_len": max_span_len,
             "disjoint_entities": disjoint_entities, "ordered_entities": ordered_entities,
             "lengths_per_doubling": lengths_per_doubling, "kernels": kernels}
  return Model(loaded.directory, loaded.relation, loaded.tagger, loaded.meta, loaded.tokenizer, top_k=top_k,
               top_m=top_m, options=options)
