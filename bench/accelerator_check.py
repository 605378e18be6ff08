"""One run proves the stack on one accelerator and always leaves a JSON: every part fails alone, and is recorded.

  python bench/accelerator_check.py --json check.json [--budget_s 420] [--sentences FILE] [--smoke]

On the GPU box (no network, no TensorFlow; ml_collections travels as a wheel in .whl/):

  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
    PYTHONPATH=/tmp/site python3 bench/accelerator_check.py --json $OUT/accelerator_check.json

Contract: each part runs in its own try/except that records the error string and moves on; the JSON is rewritten
after every part (and every row of part 1), so a run killed by a timeout still leaves what it measured; once
`--budget_s` seconds have passed, the remaining parts are skipped with the reason recorded. Parts (run in the order train_step,
inference, numerics, loop: the loop, longest and most likely to fail, last) live in bench/accelerator_parts.py,
whose docstring says what each measures.

`--smoke` runs every part at tiny shapes on the CPU in about a minute (tests/test_accelerator_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network on the accelerator box: never wait on the hub
# JAX and PyTorch share the GPU in one process: JAX grows its pool on demand (instead of taking 75% at start) and
# never past this share, so PyTorch's models fit beside it.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.7")
if "--smoke" in sys.argv[1:]:
  # The smoke run checks plumbing, not speed: XLA's CPU backend without LLVM optimisation compiles about twice as
  # fast, and compiling is most of a smoke run on a shared two-core machine.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # herberta_jax and configs; the sibling bench modules

import accelerator_parts as parts  # noqa: E402
import jax  # noqa: E402
from accelerator_parts import PARTS, free_memory, has_cuda, log, torch_module  # noqa: E402

from herberta_jax import compile_cache  # noqa: E402

# ----------------------------------------------------------------------------------------------------- report


class Report:
  """The JSON being built: meta, then one entry per part; written atomically after every change that matters."""

  def __init__(self, path: pathlib.Path, args):
    self.path = path
    self.budget_s = args.budget_s
    device = jax.devices()[0]
    torch = torch_module()
    self.env = {"device_kind": device.device_kind, "jax": jax.__version__,
                "torch": torch.__version__ if torch else None, "date": time.strftime("%Y-%m-%d")}
    meta = {**self.env, "platform": device.platform, "devices": [str(d) for d in jax.devices()],
            "jaxlib": _version("jaxlib"), "flax": _version("flax"), "optax": _version("optax"),
            "transformers": _version("transformers"), "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "time": time.strftime("%H:%M:%S %Z"),
            "argv": sys.argv[1:], "smoke": args.smoke, "budget_s": args.budget_s}
    if torch is not None:
      meta["torch_cuda"] = torch.version.cuda
      meta["torch_device"] = torch.cuda.get_device_name(0) if has_cuda(torch) else "cpu"
      if has_cuda(torch) and device.platform == "cpu":
        meta["warning"] = "PyTorch sees a GPU but JAX runs on the CPU: JAX's CUDA plugin did not load"
    self.data = {"meta": meta, "parts": {}}
    self.write()

  def elapsed(self) -> float:
    return time.perf_counter() - parts.START

  def write(self) -> None:
    self.data["meta"]["elapsed_seconds"] = round(self.elapsed(), 1)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = self.path.with_name(self.path.name + ".tmp")
    tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
    os.replace(tmp, self.path)

  def run_part(self, name: str, fn, args) -> None:
    entry = {"status": "running", **self.env}
    self.data["parts"][name] = entry
    if self.elapsed() > self.budget_s:
      entry.update(status="skipped", reason=f"budget of {self.budget_s} s spent ({self.elapsed():.0f} s elapsed)")
      log(f"{name}: skipped, budget spent")
      self.write()
      return
    log(f"{name}: start")
    self.write()
    start = time.perf_counter()
    try:
      fn(entry, args, self)
      failed = [row for row in entry.get("rows", []) if _row_failed(row)]
      entry["status"] = "partial" if failed else "ok"
    except Exception as error:  # the contract: record, go on to the next part
      entry.update(status="error", error=f"{type(error).__name__}: {error}",
                   traceback=traceback.format_exc().splitlines()[-12:])
      log(f"{name}: ERROR {type(error).__name__}: {error}")
    finally:
      entry["seconds"] = round(time.perf_counter() - start, 2)
      free_memory()
      self.write()
    log(f"{name}: {entry['status']} in {entry['seconds']:.1f} s")


def _version(module: str) -> str | None:
  try:
    from importlib.metadata import version
    return version(module)
  except Exception:
    return None


def _row_failed(row: dict) -> bool:
  return bool(row.get("skipped")) or any(isinstance(v, dict) and v.get("error") for v in row.values())




def summary_lines(report: Report) -> list[str]:
  parts = report.data["parts"]
  lines = [f"device {report.env['device_kind']}, jax {report.env['jax']}, torch {report.env['torch']}, "
           f"{report.elapsed():.0f} s"]
  for name, entry in parts.items():
    lines.append(f"{name:10} {entry['status']:8} {entry.get('seconds', 0):6.1f} s  "
                 f"{entry.get('error') or entry.get('reason') or ''}")
  for row in parts.get("train_step", {}).get("rows", []):
    j, t = row["jax"], row["torch"]
    lines.append(f"  {row['shape']:6} {row['stage']:8} {row['dtype']:8} jax {j.get('seconds_per_step') or 0:.4f} s "
                 f"MFU {j.get('mfu') or 0:6.1%}  torch {t.get('seconds_per_step') or 0:.4f} s  "
                 f"x{row.get('jax_speedup_over_torch') or 0:.2f}")
    if row.get("jax_kernels", {}).get("seconds_per_step"):
      k = row["jax_kernels"]
      lines.append(f"    with kernels {k['kernels']}: {k['seconds_per_step']:.4f} s MFU {k.get('mfu') or 0:6.1%} "
                   f"x{row.get('kernels_speedup') or 0:.3f} over without, "
                   f"x{row.get('jax_kernels_speedup_over_torch') or 0:.2f} torch")
  for row in parts.get("variants", {}).get("rows", []):
    timings = [f"{stage} {row[stage]['seconds_per_step']:.4f} s" for stage in ("relation", "tagger") if stage in row]
    lines.append(f"  variant {row['variant']}: {row.get('error') or row.get('skipped') or ', '.join(timings)} "
                 f"x{row.get('speedup_over_baseline') or 0:.3f}")
  loop = parts.get("loop", {})
  if "loop_over_bare" in loop:
    lines.append(f"  loop {loop['loop_steps_per_second']:.2f} steps/s, bare {loop['bare_steps_per_second']:.2f}, "
                 f"ratio {loop['loop_over_bare']:.2f} (median window {loop['median_window_over_bare']:.2f})")
    if "warm_switch_interval" in loop:
      other = loop["warm_switch_interval"]
      lines.append(f"  loop, switch interval {other['switch_interval_seconds']} s: ratio {other['loop_over_bare']:.2f} "
                   f"(median window {other['median_window_over_bare']:.2f})")
  for row in parts.get("inference", {}).get("rows", []):
    lines.append(f"  infer {row['dtype']:8} jax {row['jax'].get('sentences_per_second') or 0:.0f} sent/s "
                 f"(real tokens {row['jax'].get('real_token_share') or 0:.2f}), torch "
                 f"{row['torch'].get('sentences_per_second') or 0:.0f} sent/s, same {row.get('same_triples')}")
    if "jax_kernels" in row:
      lines.append(f"    with kernels: jax {row['jax_kernels'].get('sentences_per_second') or 0:.0f} sent/s, "
                   f"x{row.get('jax_speedup_over_torch_kernels') or 0:.2f} torch, "
                   f"same {row.get('same_triples_kernels')}")
  numerics = parts.get("numerics", {})
  if "max_abs_diff" in numerics.get("loss_curves", {}):
    curves = numerics["loss_curves"]
    lines.append(f"  loss bf16 vs f32: max |diff| {curves['max_abs_diff']:.4f}, final {curves['final_abs_diff']:.4f}")
  for stage in ("relation", "tagger"):
    if stage in numerics.get("parity", {}):
      p = numerics["parity"][stage]
      lines.append(f"  parity {stage}: hidden {p['hidden_max_abs_diff']:.1e}, logits {p['logits_max_abs_diff']:.1e}")
  return lines


# The variants part's leads (issue 35): cuBLASLt's bias and GELU epilogues, Triton for every GEMM, XLA's
# block-level fusion rewriter, and each fused kernel alone. The smoke run swaps in a flag the CPU also knows.
DEFAULT_VARIANTS = ("xla:--xla_gpu_enable_cublaslt=true", "xla:--xla_gpu_triton_gemm_any=true",
                    "xla:--xla_gpu_experimental_enable_fusion_block_level_rewriter=true", "kernels:layer_norm",
                    "kernels:bias_gelu", "kernels:attention")
SMOKE_VARIANTS = ("xla:--xla_backend_optimization_level=1", "kernels:attention")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--json", default="accelerator_check.json", help="the report, rewritten after every part")
  parser.add_argument("--budget_s", type=float, default=420.0, help="seconds after which remaining parts are skipped")
  parser.add_argument("--smoke", action="store_true", help="tiny shapes, a few steps: a CPU check in about a minute")
  parser.add_argument("--sentences", default="", help="inference sentences: SMiLER TSV or one sentence a line")
  parser.add_argument("--workdir", default="", help="scratch directory (default: a new temporary one)")
  parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
  parser.add_argument("--dtypes", default="bfloat16,float32", help="the train_step part's compute dtypes")
  parser.add_argument("--shapes", default="base,minilm", help="the train_step part's model shapes")
  parser.add_argument("--no_torch", action="store_true", help="the train_step part times JAX only")
  parser.add_argument("--kernels_only", action="store_true",
                      help="the train_step part times JAX through --kernels only (not also without them)")
  parser.add_argument("--inference_dtypes", default="float32,bfloat16", help="the inference part's compute dtypes")
  parser.add_argument("--kernels", default="all",
                      help="the train_step part also times the step with these fused kernels ('' skips it)")
  parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                      help="the variants part: baseline, xla:FLAGS or kernels:NAMES, comma-separated")
  parser.add_argument("--combine_margin", type=float, default=0.01,
                      help="the variants part then runs together the XLA flags at least this much faster")
  parser.add_argument("--train_step_share", type=float, default=0.55,
                      help="part 1 starts no new row past this share of the budget (parts after it need the rest)")
  parser.add_argument("--profile_dir", default="", help="a profiler trace of the first slow train step goes here")
  parser.add_argument("--loop_steps", type=int, default=100, help="the loop part's steps (logging every 25)")
  parser.add_argument("--loop_checkpoint_every", type=int, default=50, help="the loop part's checkpoint interval")
  parser.add_argument("--loop_switch_interval", type=float, default=0.0,
                      help="seconds: also run the warm loop with this sys.setswitchinterval")
  args = parser.parse_args(argv)
  if args.smoke and args.variants == ",".join(DEFAULT_VARIANTS):
    args.variants = ",".join(SMOKE_VARIANTS)
  args.workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="accelerator_check_"))
  # Before the first compilation (JAX decides once per process): the loop part's second run reads what its first
  # wrote, as a restarted training run would.
  compile_cache.enable(str(args.workdir / "xla_cache"))
  unknown = set(args.parts.split(",")) - set(PARTS)
  if unknown:
    parser.error(f"--parts: unknown {sorted(unknown)}")
  report = Report(pathlib.Path(args.json), args)
  log(f"device {report.env['device_kind']} ({jax.default_backend()}), jax {report.env['jax']}, "
      f"torch {report.env['torch']}; report in {args.json}; scratch in {args.workdir}")
  for name in args.parts.split(","):
    report.run_part(name, PARTS[name], args)
  report.data["meta"]["total_seconds"] = round(report.elapsed(), 1)
  report.write()
  print("\n".join(summary_lines(report)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
