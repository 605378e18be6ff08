"""The performance page's chart: JAX's speed over transformers' PyTorch, per device, from bench/results/.

  python docs/gen/performance_chart.py [--out performance.png]

Each bar is one row of a current result file (docs/performance.md names each file, its command and date): the train
step of each stage and shape (bench_train.py on the CPU, accelerator_check.py's train_step part on the GPUs) and
two-stage inference (bench_infer.py, accelerator_check.py's inference part). 1.0 means the same speed.
"""

from __future__ import annotations

import argparse
import json
import pathlib

RESULTS = pathlib.Path(__file__).resolve().parents[2] / "bench" / "results"
SHAPE_NAMES = {"minilm": "MiniLM", "base": "BERT-base"}


def ratios() -> dict[str, list[tuple[str, float]]]:
  """Device label -> [(what was timed, JAX speed / PyTorch speed)], read from the current result files."""
  out = {}
  cpu = [(f"train {SHAPE_NAMES[r['shape']]} {r['stage']}", r["speedup"])
         for r in json.loads((RESULTS / "bench_train_cpu.json").read_text())["rows"]]
  cpu.append(("inference MiniLM", json.loads((RESULTS / "bench_infer_cpu.json").read_text())["speedup"]))
  out["CPU, 2 cores (float32)"] = cpu
  for device in ("h100", "h200"):
    report = json.loads((RESULTS / f"accelerator_check_{device}.json").read_text())
    rows = []
    for r in report["parts"].get("train_step", {}).get("rows", []):
      if r.get("jax_speedup_over_torch"):
        rows.append((f"train {SHAPE_NAMES[r['shape']]} {r['stage']}", r["jax_speedup_over_torch"]))
    for r in report["parts"].get("inference", {}).get("rows", []):
      if r.get("jax_speedup_over_torch"):
        rows.append((f"inference MiniLM ({r['dtype']})", r["jax_speedup_over_torch"]))
    out[f"{report['meta']['device_kind'].replace('NVIDIA ', '')} (train bfloat16)"] = rows
  return out


def draw(out) -> None:
  """Writes the chart as PNG to `out` (a path or a binary file object)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  groups = ratios()
  fig, axes = plt.subplots(1, len(groups), figsize=(12, 4.2), sharey=True)
  for ax, (device, rows) in zip(axes, groups.items()):
    labels, values = zip(*rows)
    bars = ax.bar(range(len(values)), values, color=["#5b8def" if "train" in x else "#f29e4c" for x in labels])
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(values)), labels, rotation=35, ha="right", fontsize=8)
    ax.set_title(device, fontsize=10)
  axes[0].set_ylabel("JAX speed / PyTorch speed (same run)")
  fig.suptitle("herberta_jax against transformers' PyTorch: train steps (blue) and two-stage inference (orange)",
               fontsize=11)
  fig.tight_layout()
  fig.savefig(out, format="png", dpi=110, metadata={"Software": None})  # no version string: same bytes per data
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="performance.png")
  draw(parser.parse_args(argv).out)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
