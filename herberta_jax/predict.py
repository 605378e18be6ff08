r"""Raw sentences in, triples out, streamed in bounded memory:

  python -m herberta_jax.predict --model DIR --input FILE|- --out FILE|- [--top_k K] [--top_m M] [--resume]

`--model` is an export directory or a finished training workdir. Input lines are plain sentences, SMiLER TSV
rows (tags are stripped) or JSONL objects with a `text` field (`herberta_jax.inference.sources`). Output: one JSON
object per input line, in order, flushed as it goes (`herberta_jax.api.Extraction.to_dict`); a line that cannot be
predicted gets an `error` object, a sentence longer than the model reads gets `"truncated": true` and
`truncated_at` (the character offset where reading stopped). `--resume` continues an interrupted run from the first
unfinished window of --out, once every kept row is checked against its input line (`sources.Output`). --input and
--out may be gs:// URLs; --input may be any readable file (a FIFO, `<(zcat f.gz)`). Ctrl-C says what was kept
and exits 130. This CLI is the Python API (`herberta_jax.load`,
`Model.extract_iter`) plus files; stderr gets a progress bar and one summary line.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

from herberta_jax import cli, console, folders, storage
from herberta_jax.errors import UserError

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
  check_input(_INPUT.value)
  if _OUT.value != "-":
    out = storage.path(_OUT.value)
    if out.is_dir():
      raise app.UsageError(f"--out {_OUT.value}: is a folder; --out is the JSONL file to write (e.g. "
                           f"{storage.text(out / 'predictions.jsonl')})", exitcode=2)
    if storage.is_local(out) and not out.absolute().parent.is_dir():
      raise app.UsageError(f"--out {_OUT.value}: its folder {out.absolute().parent} does not exist; create it "
                           f"first", exitcode=2)
    # Never over the input, into a workdir or an export (its files are the model), or over a folder.
    folders.check_output("--out", _OUT.value, kind=None, inputs=[("--input", _INPUT.value),
                                                                 ("--model", _MODEL_FLAGS.model.value)])
  if _RESUME.value and _OUT.value == "-":
    raise app.UsageError("--resume needs --out FILE: lines written to stdout cannot be counted", exitcode=2)


def check_input(location: str) -> None:
  """--input is stdin, or a path to anything readable that is not a folder: a file, a FIFO, `<(zcat f.gz)`,
  /dev/null, or an object in a bucket."""
  if location == "-":
    return
  path = storage.path(location)
  if path.is_dir():
    raise app.UsageError(f"--input {location}: is a folder; give one file (for many: cat {location}/* | predict "
                         f"--input - ...)", exitcode=2)
  if not path.exists():
    raise app.UsageError(f"--input {location}: no such file", exitcode=2)


def open_input(location: str):
  """The input as a binary stream."""
  if location == "-":
    return sys.stdin.buffer
  return storage.path(location).open("rb")


def count_lines(path: str) -> int | None:
  """Lines of the input, for the progress bar: None for stdin, a pipe or a device (which cannot be read twice)
  and for a URL (which would be downloaded twice)."""
  if path == "-" or storage.is_url(path) or not os.path.isfile(path):
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
  notes: list[str] = []
  fmt, items = sources.read_items(open_input(_INPUT.value), _FORMAT.value, _MAX_CHARS.value, notes)
  for note in notes:
    print(f"predict: note: --input {_INPUT.value}: {note}", file=sys.stderr)
  if total and fmt == "tsv" and sources.starts_with_header(_INPUT.value):
    total -= 1
  output = None if _OUT.value == "-" else sources.Output(_OUT.value, _RESUME.value, predictor.window_sizes())
  try:
    done = 0
    if output is not None:
      output.check_kept(items)  # reads the kept rows' input lines off `items`; refuses another input's output
      done = output.done
      out = output.open()
    else:
      out = sys.stdout
    written = [0]
    cli.when_interrupted(lambda: interrupted_note(done + written[0]))
    count, errors, seconds, first = write_rows(model, predictor, items, out, output, done, total, written)
  except BaseException:
    if output is not None:
      output.close(quiet=True)  # keeps what was written (uploads it, for a URL) without hiding the first error
    raise
  if output is not None:
    output.close()
  print(summary(count, errors, done, seconds, first, predictor), file=sys.stderr)


def interrupted_note(lines: int) -> str:
  """What a Ctrl-C leaves: the output's complete lines, and how to go on from them."""
  if _OUT.value == "-":
    return f"{lines} line{'s' * (lines != 1)} printed; stdout cannot be resumed, rerun with --out FILE to resume"
  return (f"{lines} line{'s' * (lines != 1)} written to {_OUT.value}; rerun the same command with --resume to "
          f"continue (it redoes the last unfinished window of rows)")


def write_rows(model, predictor, items, out, output, done: int, total: int | None, written: list[int]):
  """Predicts `items` from row `done` on and writes one JSON line each; (count, errors, seconds, first line's
  seconds). `written[0]` counts the lines handed to `out`, for the Ctrl-C note."""
  from herberta_jax import api
  sentences = (api.Rejected(item.error) if item.error else item.text for item in items)
  start, first, count, errors = time.perf_counter(), None, 0, 0
  with console.Progress(total, desc="predict", unit="line", initial=done) as bar:
    for result in model.extract_iter(sentences, start_row=done):
      errors += result.error is not None
      write_out(out, json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
      count += 1
      written[0] = count
      if first is None:
        first = time.perf_counter() - start
        bar.first_done()  # the first batch compiles: the rate counts from its end
      else:
        bar.update(1)
      if count % predictor.batch_size == 0:
        write_out(out, None, output)  # an interrupted run keeps whole batches
    write_out(out, None, output)
  return count, errors, time.perf_counter() - start, first


def write_out(out, line: str | None, output=None) -> None:
  """Writes `line` (None: flushes) to --out; a full disk or an I/O error there is one line naming --out."""
  try:
    if line is not None:
      out.write(line)
    elif output is not None:
      output.flush()
    else:
      out.flush()
  except BrokenPipeError:
    raise  # cli.guarded: quiet when stdout's reader left, one line otherwise
  except OSError as error:
    raise UserError(f"--out {_OUT.value}: cannot write ({cli.os_error_reason(error)})") from error


def run() -> None:
  """The `herberta-predict` console script."""
  cli.run_cli(main, interrupted_note="nothing written yet; rerun the same command")


if __name__ == "__main__":
  run()
