r"""Raw sentences in, triples out, streamed in bounded memory:

  python -m herberta_jax.predict --model DIR --input FILE|- --out FILE|- [--top_k K] [--top_m M] [--resume]

`--model` is an export directory or a finished training workdir. Input lines are plain sentences, SMiLER TSV
rows (tags are stripped) or JSONL objects with a `text` field (`herberta_jax.inference.sources`). Output: one JSON
object per input line, in order, flushed as it goes (`herberta_jax.api.Extraction.to_dict`); a line that cannot be
predicted gets an `error` object, a sentence longer than the model reads gets `"truncated": true` and
`truncated_at` (the character offset where reading stopped). `--resume` continues an interrupted run from the first
unfinished window of --out (see `sources.open_output`). This CLI is the Python API (`herberta_jax.load`,
`Model.extract_iter`) plus files; stderr gets a progress bar and one summary line.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time

from absl import app, flags

from herberta_jax import cli, console

_MODEL_FLAGS = cli.ModelFlags()  # --model, --batch_size, --dtype, --max_span_len, --disjoint_entities, ...
_INPUT = flags.DEFINE_string("input", "-", "Input file, or - for stdin.")
_OUT = flags.DEFINE_string("out", "-", "Output JSONL file, or - for stdout.")
flags.DEFINE_alias("output", "out")  # the flag's name before 0.2
_FORMAT = flags.DEFINE_enum("format", "auto", ["auto", "text", "tsv", "jsonl"], "Input format.")
_MAX_CHARS = flags.DEFINE_integer("max_chars", 5000, "Longer lines get an error object instead of a prediction.")
_RESUME = flags.DEFINE_bool("resume", False, "Keep the complete lines of --out and predict the rest only.")
flags.mark_flag_as_required("model")


def check_flags() -> None:
  """Every user error that needs no model, before any work and before --out is touched."""
  _MODEL_FLAGS.check()
  if _INPUT.value != "-" and not os.path.isfile(_INPUT.value):
    raise app.UsageError(f"--input {_INPUT.value}: no such file", exitcode=2)
  if _RESUME.value and _OUT.value == "-":
    raise app.UsageError("--resume needs --out FILE: lines written to stdout cannot be counted", exitcode=2)


def count_lines(path: str) -> int | None:
  """Lines of the input file (None for stdin)."""
  if path == "-":
    return None
  with open(path, "rb") as f:
    count = last = 0
    while chunk := f.read(1 << 20):
      count += chunk.count(b"\n")
      last = chunk[-1]
  return count + (last not in (0, ord("\n")))


def summary(count: int, errors: int, kept: int, seconds: float, first: float | None, predictor) -> str:
  """predict's one summary line."""
  predicted = count - errors
  kept_note = f", {kept} kept from --out" if kept else ""
  devices = predictor.devices
  return (f"predicted {predicted} sentence{'s' * (predicted != 1)} ({errors} error{'s' * (errors != 1)}{kept_note}) "
          f"in {seconds:.2f} s: {console.rate(predicted, seconds)} sentences/s, first line after {first or 0:.2f} s, "
          f"real-token share {predictor.real_token_share:.3f}, on {len(devices)} {devices[0].platform.upper()} "
          f"device{'s' * (len(devices) != 1)}")


def main(argv):
  del argv
  check_flags()
  from herberta_jax import api
  from herberta_jax.inference import sources
  _MODEL_FLAGS.configure_jax()
  kwargs = _MODEL_FLAGS.predictor_kwargs()
  model = api.load(_MODEL_FLAGS.model.value, **kwargs)
  predictor = model.predictor()
  total = count_lines(_INPUT.value)  # the progress bar's: one output row per line but a TSV header
  source = sys.stdin.buffer if _INPUT.value == "-" else open(_INPUT.value, "rb")
  fmt, items = sources.read_items(source, _FORMAT.value, _MAX_CHARS.value)
  if total and fmt == "tsv" and sources.starts_with_header(_INPUT.value):
    total -= 1
  out, done = (sys.stdout, 0) if _OUT.value == "-" else sources.open_output(_OUT.value, _RESUME.value,
                                                                             predictor.window_sizes())
  items = itertools.islice(items, done, None)  # rows already written by the interrupted run
  sentences = (api.Rejected(item.error) if item.error else item.text for item in items)
  start, first, count, errors = time.perf_counter(), None, 0, 0
  with console.Progress(total, desc="predict", unit="line", initial=done) as bar:
    for result in model.extract_iter(sentences, start_row=done):
      errors += result.error is not None
      out.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
      count += 1
      if first is None:
        first = time.perf_counter() - start
        bar.first_done()  # the first batch compiles: the rate counts from its end
      else:
        bar.update(1)
      if count % predictor.batch_size == 0:
        out.flush()  # an interrupted run keeps whole batches
    out.flush()
  print(summary(count, errors, done, time.perf_counter() - start, first, predictor), file=sys.stderr)


def run() -> None:
  """The `herberta-predict` console script."""
  cli.run_cli(main)


if __name__ == "__main__":
  run()
