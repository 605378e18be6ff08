r"""Raw sentences in, triples out:

  python -m herberta_jax.predict --model DIR --input FILE|- --output FILE|- [--top_k K] [--top_m M]

`--model` is an export directory or a finished training workdir. Input lines are plain sentences, SMiLER TSV
rows (tags are stripped before prediction) or JSONL objects with a `text` field, detected from the first line or
set with --format. Output: one JSON object per input line, in order; a line that cannot be predicted gets an
`error` object in its place, so output line N always answers input line N (a TSV's header line aside).
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections.abc import Iterator

from absl import flags

_MODEL = flags.DEFINE_string("model", None, "Export directory or training workdir.")
_INPUT = flags.DEFINE_string("input", "-", "Input file, or - for stdin.")
_OUTPUT = flags.DEFINE_string("output", "-", "Output JSONL file, or - for stdout.")
_FORMAT = flags.DEFINE_enum("format", "auto", ["auto", "text", "tsv", "jsonl"], "Input format.")
_TOP_K = flags.DEFINE_integer("top_k", 1, "Relations kept per sentence.")
_TOP_M = flags.DEFINE_integer("top_m", 1, "Entity pairs kept per relation.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Sentences per batch.")
_MAX_CHARS = flags.DEFINE_integer("max_chars", 5000, "Longer lines get an error object instead of a prediction.")
_MAX_SPAN = flags.DEFINE_integer("max_span_len", None, "Longest entity, in tokens (default: the run's).")
_DISJOINT = flags.DEFINE_bool("disjoint_entities", None, "Rule out overlapping entity pairs (default: the run's).")
flags.mark_flag_as_required("model")

TAG = re.compile(r"</?e[12]>")
SMILER_HEADER = ["id", "entity_1", "entity_2", "label", "text", "lang"]


def detect_format(first_line: str) -> str:
  if first_line.lstrip().startswith("{"):
    return "jsonl"
  if first_line.rstrip("\r\n").split("\t") == SMILER_HEADER:
    return "tsv"
  return "text"


def sentences(raw_lines: list[bytes], fmt: str, max_chars: int) -> Iterator[tuple[str | None, str | None]]:
  """(sentence, error) per input line; a TSV header yields nothing."""
  for number, raw in enumerate(raw_lines, start=1):
    try:
      line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
      yield None, f"line {number}: not UTF-8 ({e.reason} at byte {e.start})"
      continue
    if fmt == "tsv":
      if number == 1:
        continue
      fields = next(csv.reader([line], delimiter="\t"))
      if len(fields) != len(SMILER_HEADER):
        yield None, f"line {number}: {len(fields)} TSV columns, expected {len(SMILER_HEADER)}"
        continue
      line = TAG.sub("", fields[4])
    elif fmt == "jsonl":
      try:
        obj = json.loads(line) if line.strip() else {}
      except json.JSONDecodeError as e:
        yield None, f"line {number}: invalid JSON ({e.msg})"
        continue
      line = obj.get("text") if isinstance(obj, dict) else None
      if not isinstance(line, str):
        yield None, f"line {number}: no string field 'text'"
        continue
    if not line.strip():
      yield None, f"line {number}: empty sentence"
    elif len(line) > max_chars:
      yield None, f"line {number}: {len(line)} characters, more than --max_chars={max_chars}"
    else:
      yield line, None


def main(argv):
  del argv
  import tqdm

  from herberta_jax.inference.predictor import Predictor
  predictor = Predictor.from_export(_MODEL.value, batch_size=_BATCH.value, top_k=_TOP_K.value, top_m=_TOP_M.value,
                                    max_span_len=_MAX_SPAN.value, disjoint_entities=_DISJOINT.value)
  stream = sys.stdin.buffer if _INPUT.value == "-" else open(_INPUT.value, "rb")
  raw_lines = stream.read().splitlines()
  fmt = _FORMAT.value if _FORMAT.value != "auto" else detect_format(
      raw_lines[0].decode("utf-8", "replace") if raw_lines else "")
  items = list(sentences(raw_lines, fmt, _MAX_CHARS.value))
  encoded = predictor.encode([text or "" for text, _ in items])
  for enc, (_, error) in zip(encoded, items):
    if error:
      enc.error = error
  out = sys.stdout if _OUTPUT.value == "-" else open(_OUTPUT.value, "w", encoding="utf-8")
  start = time.perf_counter()
  for enc, result in tqdm.tqdm(predictor.run(encoded), total=len(encoded), desc="predict", file=sys.stderr):
    out.write(json.dumps({"text": enc.text, **result} if "error" not in result else {"error": result["error"]},
                         ensure_ascii=False) + "\n")
  elapsed = time.perf_counter() - start
  if out is not sys.stdout:
    out.close()
  done = sum(1 for e in encoded if not e.error)
  print(f"predicted {done} sentences ({len(encoded) - done} errors) in {elapsed:.1f}s: "
        f"{done / max(elapsed, 1e-9):.0f} sentences/s", file=sys.stderr)


if __name__ == "__main__":
  from herberta_jax import cli
  cli.run_cli(main)
