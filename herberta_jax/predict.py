r"""Raw sentences in, triples out, streamed in bounded memory:

  python -m herberta_jax.predict --model DIR --input FILE|- --output FILE|- [--top_k K] [--top_m M] [--resume]

`--model` is an export directory or a finished training workdir. Input lines are plain sentences, SMiLER TSV
rows (tags are stripped) or JSONL objects with a `text` field (`herberta_jax.inference.sources`). Output: one JSON
object per input line, in order, flushed as it goes; a line that cannot be predicted gets an `error` object, a
sentence longer than the model reads gets `"truncated": true` and `truncated_at` (the character offset where
reading stopped). `--resume` continues an interrupted run from the first unfinished window of --output (see
`sources.open_output`).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time

from absl import app, flags

from herberta_jax import cli

_MODEL_FLAGS = cli.ModelFlags()  # --model, --batch_size, --max_span_len, --disjoint_entities
_INPUT = flags.DEFINE_string("input", "-", "Input file, or - for stdin.")
_OUTPUT = flags.DEFINE_string("output", "-", "Output JSONL file, or - for stdout.")
_FORMAT = flags.DEFINE_enum("format", "auto", ["auto", "text", "tsv", "jsonl"], "Input format.")
_TOP_K = flags.DEFINE_integer("top_k", 1, "Relations kept per sentence.")
_TOP_M = flags.DEFINE_integer("top_m", 1, "Entity pairs kept per relation.")
_MAX_CHARS = flags.DEFINE_integer("max_chars", 5000, "Longer lines get an error object instead of a prediction.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (bfloat16: GPU/TPU).")
_RESUME = flags.DEFINE_bool("resume", False, "Keep the complete lines of --output and predict the rest only.")
flags.mark_flag_as_required("model")


def check_flags() -> None:
  """Every user error that needs no model, before any work and before --output is touched."""
  for flag in (_TOP_K, _TOP_M, _MODEL_FLAGS.batch_size):
    if flag.value < 1:
      raise app.UsageError(f"--{flag.name}={flag.value}: must be at least 1", exitcode=2)
  if _INPUT.value != "-" and not os.path.isfile(_INPUT.value):
    raise app.UsageError(f"--input {_INPUT.value}: no such file", exitcode=2)
  if _RESUME.value and _OUTPUT.value == "-":
    raise app.UsageError("--resume needs --output FILE: lines written to stdout cannot be counted", exitcode=2)


def main(argv):
  del argv
  check_flags()
  from herberta_jax.inference import sources
  from herberta_jax.inference.predictor import Predictor
  try:
    predictor = Predictor.from_export(_MODEL_FLAGS.model.value, top_k=_TOP_K.value, top_m=_TOP_M.value,
                                      **_MODEL_FLAGS.predictor_kwargs(),
                                      dtype=_DTYPE.value)
  except ValueError as e:  # a --batch_size the devices cannot share
    raise app.UsageError(str(e), exitcode=2) from e
  source = sys.stdin.buffer if _INPUT.value == "-" else open(_INPUT.value, "rb")
  _, items = sources.read_items(source, _FORMAT.value, _MAX_CHARS.value)
  out, done = (sys.stdout, 0) if _OUTPUT.value == "-" else sources.open_output(_OUTPUT.value, _RESUME.value,
                                                                                predictor.window_sizes())
  items = itertools.islice(items, done, None)  # rows already written by the interrupted run
  start, first, count, errors = time.perf_counter(), None, 0, 0
  for enc, result in predictor.run(predictor.encode_stream((item.text, item.error) for item in items),
                                           start_row=done):
    if "error" in result:
      errors += 1
      row = {"error": result["error"]}
    else:
      row = {"text": enc.text, **result}
      if enc.truncated_at is not None:
        row.update(truncated=True, truncated_at=enc.truncated_at)
    out.write(json.dumps(row, ensure_ascii=False) + "\n")
    count += 1
    if first is None:
      first = time.perf_counter() - start
    if count % predictor.batch_size == 0:
      out.flush()  # an interrupted run keeps whole batches
  out.flush()
  elapsed = time.perf_counter() - start
  print(f"predicted {count - errors} sentences ({errors} errors{f', {done} kept from --output' if done else ''}) "
        f"in {elapsed:.1f}s ({(count - errors) / max(elapsed, 1e-9):.0f} sentences/s; first line after "
        f"{first or 0:.2f}s); real-token share {predictor.real_token_share:.3f}", file=sys.stderr)


def run() -> None:
  """The `herberta-predict` console script."""
  cli.run_cli(main)


if __name__ == "__main__":
  run()
