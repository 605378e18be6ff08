"""`predict` streams in bounded memory: peak RSS at 10k and 200k lines, time to the first written line, and a run
killed halfway then `--resume`d gives the same file as an uninterrupted one.

  python bench/bench_predict_stream.py --model EXPORT_OR_RUN [--data ../shared/data/semeval2010_task8/test.tsv]
  python bench/bench_predict_stream.py --random_export   # a random 1-layer model: memory, not quality, is measured

The input is the data's sentences repeated, written under --tmp (never into the repository). Peak RSS is the
predict process's VmHWM, sampled from /proc by a thread until it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared/data/semeval2010_task8/test.tsv"


def write_input(sentences: list[str], count: int, path: pathlib.Path) -> pathlib.Path:
  with open(path, "w", encoding="utf-8") as f:
    for i in range(count):
      f.write(sentences[i % len(sentences)] + "\n")
  return path


def vm_hwm_kib(pid: int) -> int | None:
  try:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
      if line.startswith("VmHWM:"):
        return int(line.split()[1])
  except OSError:
    return None
  return None


def run_predict(model: str, source: pathlib.Path, output: pathlib.Path, *extra: str, kill_after_lines: int = 0):
  """Runs predict; returns (seconds, peak RSS MiB, seconds to the first written line, killed)."""
  command = [sys.executable, "-m", "herberta_jax.predict", "--model", model, "--input", str(source), "--out",
             str(output), *extra]
  if "--resume" not in extra:
    output.unlink(missing_ok=True)  # a stale file would pass for the first line
  start = time.perf_counter()
  # stderr to a file, not a pipe: predict's progress bar would fill a pipe nobody reads until the end.
  stderr_file = tempfile.TemporaryFile("w+", encoding="utf-8")
  process = subprocess.Popen(command, cwd=REPO, stderr=stderr_file, text=True)
  peak = [0]

  def sample():
    while process.poll() is None:
      peak[0] = max(peak[0], vm_hwm_kib(process.pid) or 0)
      time.sleep(0.1)
  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  first_line, killed = None, False
  while process.poll() is None:
    size = output.stat().st_size if output.exists() else 0
    if first_line is None and size > 0:
      first_line = time.perf_counter() - start
    if kill_after_lines and size > 0 and count_lines(output) >= kill_after_lines:
      process.send_signal(signal.SIGKILL)
      killed = True
      break
    time.sleep(0.05)
  process.wait()
  sampler.join()
  stderr_file.seek(0)
  stderr = stderr_file.read().replace("\r", "\n")
  stderr_file.close()
  if not killed and process.returncode != 0:
    raise RuntimeError(f"predict failed:\n{stderr[-3000:]}")
  summary = stderr.strip().splitlines()[-1] if stderr.strip() else ""
  return time.perf_counter() - start, peak[0] / 1024, first_line, killed, summary


def count_lines(path: pathlib.Path) -> int:
  with open(path, "rb") as f:
    return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="", help="export directory or training workdir")
  parser.add_argument("--random_export", action="store_true",
                      help="instead of --model: a random 1-layer export (the accelerator check's smoke shape)")
  parser.add_argument("--data", default=str(DEFAULT_DATA), help="SMiLER TSV whose sentences are repeated")
  parser.add_argument("--sizes", default="10000,200000", help="input lines of the peak-memory runs")
  parser.add_argument("--resume_lines", type=int, default=20000, help="input lines of the kill-and-resume check")
  parser.add_argument("--tmp", default="/tmp/bench_predict_stream")
  args = parser.parse_args()
  if bool(args.model) == args.random_export:
    parser.error("give --model or --random_export")
  from herberta_jax.data import smiler
  sentences = [example.text for example in smiler.read_tsv(args.data)]
  tmp = pathlib.Path(args.tmp)
  tmp.mkdir(parents=True, exist_ok=True)
  if args.random_export:
    sys.path.insert(0, str(REPO / "bench"))
    import accelerator_parts  # the accelerator check's parts: its random export and smoke shape
    args.model = str(accelerator_parts.build_export(tmp / "random_model", accelerator_parts.SMOKE_SHAPE, smoke=True))
  result = {"model": args.model, "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores",
            "runs": {}}
  for size in (int(s) for s in args.sizes.split(",")):
    source = write_input(sentences, size, tmp / f"in_{size}.txt")
    seconds, peak, first, _, summary = run_predict(args.model, source, tmp / f"out_{size}.jsonl")
    result["runs"][size] = {"seconds": round(seconds, 1), "peak_rss_mib": round(peak, 1),
                            "first_line_seconds": round(first or 0, 2), "lines_out": count_lines(
                                tmp / f"out_{size}.jsonl"), "summary": summary}
    print(json.dumps({size: result["runs"][size]}), flush=True)
  peaks = [run["peak_rss_mib"] for run in result["runs"].values()]
  result["peak_rss_ratio"] = round(max(peaks) / min(peaks), 3)

  source = write_input(sentences, args.resume_lines, tmp / "in_resume.txt")
  full, part = tmp / "resume_full.jsonl", tmp / "resume_part.jsonl"
  run_predict(args.model, source, full)
  part.unlink(missing_ok=True)
  _, _, _, killed, _ = run_predict(args.model, source, part, kill_after_lines=args.resume_lines // 2)
  kept = count_lines(part)
  run_predict(args.model, source, part, "--resume")
  result["resume"] = {"lines": args.resume_lines, "killed": killed, "lines_before_resume": kept,
                      "identical": full.read_bytes() == part.read_bytes()}
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
