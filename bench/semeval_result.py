"""Collects a finished `configs/semeval.py` run into bench/results/semeval_minilm.json.

  python -m herberta_jax.train --config configs/semeval.py --workdir RUN
  python bench/semeval_result.py --workdir RUN [--out FILE] [--command "the exact train command"] [--commit REV]
                                 [--overwrite]

Takes the test metrics (`RUN/metrics.json`: read once, at the end of the run), the training wall time of each
stage (`RUN/STAGE/summary.json`), the tuned hyper-parameters (`RUN/config.json`) and the commit the run trained at
(`--commit`; default: the one checked out).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "semeval_minilm.json"
SCORES = ("relation", "entity1", "entity2", "entity_pair", "combined")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, type=pathlib.Path)
  parser.add_argument("--command", default=None, help="defaults to the train command with this workdir")
  parser.add_argument("--out", type=pathlib.Path, default=OUT)
  parser.add_argument("--commit", default="HEAD", help="the commit the run trained at, if not the checked-out one")
  parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
  args = parser.parse_args()
  if args.out.exists() and not args.overwrite:  # the default file holds the figures the README cites
    raise SystemExit(f"{args.out} exists: name a new file with --out (e.g. semeval_minilm_runN.json), or pass "
                     f"--overwrite to replace it")

  metrics = json.loads((args.workdir / "metrics.json").read_text())
  config = json.loads((args.workdir / "config.json").read_text())
  stages = {s: json.loads((args.workdir / s / "summary.json").read_text()) for s in ("relation", "tagger")}
  if any(summary["steps_run"] != summary["final_step"] for summary in stages.values()):
    raise SystemExit(f"{args.workdir}: a stage was resumed, so its summary does not hold the whole training time")
  commit = subprocess.run(["git", "rev-parse", "--verify", f"{args.commit}^{{commit}}"], cwd=REPO,
                          capture_output=True, text=True).stdout.strip()
  if not commit:
    raise SystemExit(f"--commit {args.commit}: not a commit of this repository")
  result = {
      "date": time.strftime("%Y-%m-%d"),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no accelerator",
      "command": args.command or f"python -m herberta_jax.train --config configs/semeval.py --workdir {args.workdir}",
      "commit": commit,
      "test_sentences": metrics["count"],
      "scores": {name: {k: round(metrics[name][k], 4) for k in ("precision", "recall", "f1")} for name in SCORES},
      "entity_accuracy_on_gold_positives": {"e1": round(metrics["e1_accuracy"], 4),
                                            "e2": round(metrics["e2_accuracy"], 4)},
      "train_seconds": {s: round(summary["train_seconds"], 1) for s, summary in stages.items()},
      # From the stage's start to its first step: loading, and compiling what comes before the first step (on the
      # CPU since 1edde77 every program; train_seconds no longer holds any compilation there).
      "seconds_to_first_step": {s: round(summary["seconds_to_first_step"], 1) for s, summary in stages.items()},
      "train_steps": {s: summary["final_step"] for s, summary in stages.items()},
      "best_dev_score": {s: round(summary["best_score"], 4) for s, summary in stages.items()},
      "inference_seconds": round(metrics["inference_seconds"], 1),
      "inference_sentences_per_second": round(metrics["sentences_per_second"], 1),
      "hyper_parameters": {
          s: {k: config[s][k] for k in ("learning_rate", "num_epochs", "batch_size", "warmup_fraction",
                                        "layer_decay", "entity_loss_weight", "init_from_relation") if k in config[s]}
          for s in ("relation", "tagger")},
      "max_seq_len": config["data"]["max_seq_len"],
      "max_span_len": config["infer"]["max_span_len"],
      "relations_decoded": config["infer"].get("top_k", 1),  # the best triple among this many relations
  }
  result["train_seconds"]["both"] = round(sum(result["train_seconds"].values()), 1)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2) + "\n")
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
