r"""`prepare`'s peak memory and speed at two corpus sizes: does memory stay flat as the corpus grows tenfold?

  python bench/bench_prepare_memory.py [--rows 110000,1100000] [--tokenizer DIR] [--repo DIR] [--json FILE]

Builds a training TSV by repeating the SemEval-2010 Task 8 training sentences (read from ../shared/data, never
copied into the repository) with fresh ids, in a temporary folder, once per size; SemEval's test file is the test
split. Each size is prepared in a fresh subprocess (MiniLM's tokenizer by default, the default 2% dev carving);
its peak resident memory is the child's ru_maxrss, its speed the rows written over the seconds `prepare` took
(the child times it, so interpreter start and imports are left out). Goal: peak RSS at the largest size within
20% of that at the smallest, and rows/s not lower. `--repo` runs another checkout's code (to compare with it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

from bench_data import default_tokenizer, synthetic_corpus  # the same corpus and tokenizer as bench_data

REPO = pathlib.Path(__file__).resolve().parents[1]

# Run in the child: prepare once, timed, and print what was written as one JSON line.
CHILD = r"""
import json, sys, time
from herberta_jax.data import preparation
inputs, tokenizer, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
start = time.perf_counter()
manifest = preparation.prepare(inputs, tokenizer, out, progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "rows": manifest["rows"]["written"]}))
"""


def run_prepare(inputs: list[pathlib.Path], tokenizer: str, out: pathlib.Path, repo: pathlib.Path) -> dict:
  """Prepares in a child process; returns its seconds, rows and peak RSS (bytes, from wait4's rusage)."""
  env = {**os.environ, "PYTHONPATH": str(repo), "TOKENIZERS_PARALLELISM": "true"}
  args = [sys.executable, "-c", CHILD, json.dumps([str(p) for p in inputs]), tokenizer, str(out)]
  with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True) as child:
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
  if child.returncode:
    raise SystemExit(f"prepare failed (exit {child.returncode}) on {inputs}")
  result = json.loads(output.strip().splitlines()[-1])
  result["peak_rss_bytes"] = usage.ru_maxrss * 1024  # Linux reports kilobytes
  return result


def cpu_model() -> str:
  try:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    return platform.processor() or "unknown"


def provenance() -> dict:
  """When, on what and from which code a benchmark ran: the date (UTC), the CPU and the checkout's commit."""
  commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
  return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
          "cpu": f"{cpu_model()}, {os.cpu_count()} cores", "commit": commit}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", default="110000,1100000", help="comma-separated corpus sizes, smallest first")
  parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the installed MiniLM)")
  parser.add_argument("--repo", default=str(REPO), help="the checkout whose herberta_jax is run")
  parser.add_argument("--json", default=str(REPO / "bench" / "results" / "prepare_memory_cpu.json"),
                      help="where the results go ('' for nowhere)")
  args = parser.parse_args()
  sizes = [int(n) for n in args.rows.split(",")]
  tokenizer = args.tokenizer or default_tokenizer()
  results = []
  with tempfile.TemporaryDirectory(prefix="bench_prepare_memory.") as tmp:
    for size in sizes:
      start = time.perf_counter()
      inputs = synthetic_corpus(pathlib.Path(tmp) / f"corpus{size}", size)  # SemEval's train rows repeated, its test
      print(f"corpus of {size:,} rows written in {time.perf_counter() - start:.1f} s", flush=True)
      result = run_prepare(inputs, tokenizer, pathlib.Path(tmp) / f"out{size}", pathlib.Path(args.repo))
      result.update(train_rows=size, rows_per_s=result["rows"] / result["seconds"])
      results.append(result)
      print(f"{size:>9,} train rows: peak RSS {result['peak_rss_bytes'] / 2**30:.2f} GiB, "
            f"{result['rows']:,} rows in {result['seconds']:.1f} s = {result['rows_per_s']:,.0f} rows/s", flush=True)
  small, large = results[0], results[-1]
  rss_ratio = large["peak_rss_bytes"] / small["peak_rss_bytes"]
  speed_ratio = large["rows_per_s"] / small["rows_per_s"]
  print(f"largest/smallest: peak RSS x{rss_ratio:.3f} (goal <= 1.2), rows/s x{speed_ratio:.3f} (goal >= 1.0)")
  if args.json:
    record = {
        "command": "python bench/bench_prepare_memory.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "tokenizer": tokenizer, "repo": args.repo,
        "runs": results, "peak_rss_ratio": rss_ratio, "rows_per_s_ratio": speed_ratio,
    }
    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
  main()
