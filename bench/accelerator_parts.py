"""The five parts of bench/accelerator_check.py: what one accelerator run measures, each part a function that fills
its entry of the report (`entry`) and may rewrite the report file as rows finish (`report.write()`).

1. train_step (`part_train_step`): seconds per train step (20 steps, one sync at the end, after a compiling warm-up
   call) of both stages at the MiniLM and BERT-base shapes, batch 256, length 128, bfloat16 and float32; MFU against
   the device's bf16 dense peak; transformers' PyTorch models (SDPA attention, bf16 autocast, fused AdamW) on the
   same shapes in the same run, and the JAX/PyTorch speed ratio. A JAX row below SLOW_RATIO of PyTorch's speed is
   timed again without dropout and with threefry dropout bits (`diagnose_step`). With `--kernels` (default "all")
   each row also times the JAX step through the fused kernels (herberta_jax/model/kernels), with its MFU.
   variants (`part_variants`): BERT-base's bfloat16 step of both stages with one thing changed at a time (an XLA
   flag, one kernel), each in its own process (XLA reads its flags once), against a baseline process in the same
   run; then the XLA flags that each made the step at least `--combine_margin` faster, together.
2. loop (`part_loop`): `train_and_evaluate` on the demo corpus (BERT-base scratch shape, relation stage, bfloat16,
   ~100 steps or `--loop_steps`, a checkpoint every 50 or `--loop_checkpoint_every`, one dev evaluation), cold and
   then warm from the compilation cache, against the bare jitted step over the loop's own batches.
3. inference (`part_inference`): two-stage sentences/s on SemEval-test-length sentences, a random MiniLM-shape
   export read by `Predictor` (JAX, also through the `--kernels`) and by transformers' PyTorch classes, float32
   and bfloat16.
4. numerics (`part_numerics`): bfloat16 vs float32 loss curves of a tiny BERT over 300 steps from the same init and
   data, and parity of our Flax models with transformers' PyTorch BERT at the highest matmul precision.

Imported by accelerator_check.py after it has set the environment (XLA flags, memory fractions) and sys.path.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

import jax
import jax.numpy as jnp
import numpy as np
import optax
from step_builders import (
  NUM_LABELS,
  RNG_IMPL,
  SHAPES,
  bert_config,
  dropout_key_data,
  input_length,
  jax_runner,
  seconds_per_step,
  torch_runner,
)

from herberta_jax.data import demo_corpus, smiler, tokenize
from herberta_jax.data.example import NEGATIVE_LABEL
from herberta_jax.model import hf
from herberta_jax.model.bert import BertEncoder
from herberta_jax.model.flops import train_flops_per_sequence
from herberta_jax.model.heads import TAGGER_OUTPUTS, EntityTagger, RelationClassifier
from herberta_jax.training import steps
from herberta_jax.training.state import TrainState


# The upper layers (inference, hub, run) are imported when a part needs them, so a missing dependency fails only
# the part that uses it.
def _predictor_class():
  from herberta_jax.inference.predictor import Predictor
  return Predictor


def _write_export(out_dir, data_dir, manifest, relation, tagger, buckets, decoding):
  from herberta_jax.hub import writer
  meta = writer.export_meta(manifest, buckets, relation[0].type_vocab_size >= 2, decoding)
  return writer.write_export(out_dir, data_dir, meta, relation, tagger)


def _train_and_evaluate():
  from herberta_jax.run import train_and_evaluate
  return train_and_evaluate


def _bench_infer():
  import bench_infer  # imports herberta_jax.inference
  return bench_infer


# bf16 dense (no sparsity) tensor-core peaks from the vendors' datasheets, matched in order on the device kind.
PEAK_BF16_DENSE = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989.4e12), ("H200", 989.4e12),
                   ("GH200", 989.4e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))
# --smoke's model: one small layer, since compile time grows with layers and is most of a smoke run.
SMOKE_SHAPE = dict(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=256, vocab_size=1000)
SLOW_RATIO = 0.7  # a JAX step below this share of PyTorch's speed gets diagnose_step's variants
# Word counts of the 2,717 sentences of SemEval-2010 task 8's test split (tags stripped): count -> sentences.
# Synthetic sentences follow it when the data is not on the machine.
SEMEVAL_TEST_WORDS = {
    4: 2, 5: 12, 6: 36, 7: 76, 8: 107, 9: 123, 10: 148, 11: 143, 12: 154, 13: 154, 14: 146, 15: 150, 16: 157,
    17: 137, 18: 140, 19: 136, 20: 115, 21: 113, 22: 104, 23: 84, 24: 96, 25: 69, 26: 59, 27: 36, 28: 36, 29: 28,
    30: 25, 31: 15, 32: 10, 33: 20, 34: 7, 35: 9, 36: 9, 37: 9, 38: 7, 39: 5, 40: 7, 41: 6, 42: 6, 43: 1, 44: 2,
    45: 1, 46: 1, 47: 2, 48: 1, 49: 1, 50: 6, 54: 1, 57: 3, 58: 1, 60: 1}
SEMEVAL_TEST = REPO.parent / "shared/data/semeval2010_task8/test.tsv"
SENTENCES_COPY = REPO / "bench/data/semeval_test_sentences.txt"

START = time.perf_counter()  # the log clock and the report's elapsed time


def log(message: str) -> None:
  print(f"[{time.perf_counter() - START:6.1f}s] {message}", flush=True)


def torch_module():
  """PyTorch, or None where it is missing (imported after JAX has claimed its device)."""
  try:
    import torch
    return torch
  except ImportError:
    return None


def has_cuda(torch) -> bool:
  return torch is not None and torch.cuda.is_available()


def torch_device(torch) -> str:
  """"cuda", or "cpu" when JAX has no accelerator either; raises where only JAX has one, since PyTorch on the CPU
  at the accelerator's shapes would spend the whole budget on one row."""
  if torch is None:
    raise ImportError("torch is not installed")
  if has_cuda(torch):
    return "cuda"
  if jax.default_backend() != "cpu":
    raise RuntimeError(f"PyTorch {torch.__version__} sees no CUDA device while JAX runs on "
                       f"{jax.default_backend()}: PyTorch side skipped")
  return "cpu"


def free_memory() -> None:
  """Between parts: drop compiled executables and host references, and hand PyTorch's cached blocks back."""
  gc.collect()
  jax.clear_caches()
  torch = sys.modules.get("torch")
  if has_cuda(torch):
    torch.cuda.empty_cache()




def guarded(section: dict, fn) -> None:
  """Runs one side of a row; an exception becomes the row's recorded error instead of ending the part."""
  try:
    fn(section)
  except Exception as error:
    section["error"] = f"{type(error).__name__}: {error}"
    log(f"  ERROR {section['error']}")




# ---------------------------------------------------------------------------------------------- part 1: step


def peak_bf16_flops(device_kind: str) -> tuple[float | None, str]:
  for name, peak in PEAK_BF16_DENSE:
    if name.lower() in device_kind.lower():
      return peak, f"datasheet bf16 dense peak of {name}"
  return None, f"no datasheet peak known for {device_kind!r}"


def measured_matmul_flops(smoke: bool) -> dict:
  """A large bf16 matmul on random data (zeros run faster than real data), 20 products, one sync."""
  n = 512 if smoke or jax.default_backend() == "cpu" else 8192
  a, b = (jax.random.normal(jax.random.PRNGKey(i), (n, n), jnp.bfloat16) for i in (0, 1))
  f = jax.jit(lambda x, y: x @ y)
  for _ in range(3):
    out = f(a, b)
  out.block_until_ready()
  reps = 20
  start = time.perf_counter()
  for _ in range(reps):
    out = f(a, b)
  out.block_until_ready()
  seconds = (time.perf_counter() - start) / reps
  return {"n": n, "dtype": "bfloat16", "seconds": seconds, "flops_per_second": 2 * n ** 3 / seconds}


def part_train_step(entry: dict, args, report) -> None:
  torch = torch_module()
  cuda = has_cuda(torch)
  # BERT-base first: JAX's memory pool keeps what it grew to, and BERT-base's float32 step needs one 30 GiB block;
  # after the MiniLM rows and the loop had grown the pool in smaller pieces it found no room under
  # XLA_PYTHON_CLIENT_MEM_FRACTION on an 80 GB H100 (run 4, 2026-11-26;
  # git show 78d3b3b:bench/results/accelerator_h100_float32_background_save.json).
  shapes = {"smoke": SMOKE_SHAPE} if args.smoke else {name: SHAPES[name] for name in args.shapes.split(",")}
  dtypes = ("bfloat16",) if args.smoke else args.dtypes.split(",")  # smoke: the float32 path is the same code
  batch, length, n_steps = (8, 32, 3) if args.smoke else (256, 128, 20)
  peak, source = peak_bf16_flops(report.env["device_kind"])
  matmul = {}
  guarded(matmul, lambda section: section.update(measured_matmul_flops(args.smoke)))
  if cuda:
    # Float32 rows: JAX's default matmul precision on GPUs uses TF32 tensor cores; let PyTorch do the same.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
  entry.update(batch=batch, length=length, steps=n_steps, num_labels=NUM_LABELS, peak_bf16_flops=peak,
               peak_source=source, measured_matmul=matmul,
               timing="one warm-up call (compiles), then `steps` steps and one sync; params float32, compute dtype "
                      "as the row says; float32 matmuls use TF32 on both sides on GPUs",
               torch_setup={"device": "cuda" if cuda else "cpu", "attn_implementation": "sdpa",
                            "autocast": "bfloat16 on bfloat16 rows" if cuda else None, "fused_adamw": cuda})
  rows = entry["rows"] = []
  deadline = args.train_step_share * args.budget_s
  diagnosed = False  # only the first row slower than SLOW_RATIO of PyTorch is taken apart: it costs compiles
  for dtype, shape_name, stage in itertools.product(dtypes, shapes, ("relation", "tagger")):
    shape = shapes[shape_name]
    config = bert_config(shape, dtype)
    seq_len = input_length(stage, length)
    flops = train_flops_per_sequence(config, seq_len, stage, NUM_LABELS) * batch
    row = {"shape": shape_name, "stage": stage, "dtype": dtype, "input_shape": [batch, seq_len],
           "model": {k: v for k, v in shape.items()}, "train_flops_per_step": flops, "jax": {}, "torch": {}}
    rows.append(row)
    if report.elapsed() > deadline:
      row["skipped"] = f"part 1's share of the budget ({deadline:.0f} s) spent"
      continue
    log(f"  {shape_name} {stage} {dtype} [{batch}, {seq_len}]")

    # PyTorch first: its blocks go back to the driver (empty_cache) before JAX's pool grows for the same shape.
    def torch_side(section):
      device = torch_device(torch)
      runner = torch_runner(stage, shape, batch, length, device=device,
                            autocast_dtype=torch.bfloat16 if dtype == "bfloat16" and cuda else None, fused=cuda,
                            attn_implementation="sdpa")
      try:
        # Two warm-up steps: the first allocates AdamW's state, the second is a plain step.
        warm, per_step = seconds_per_step(runner, n_steps, warmup=2)
      finally:
        runner.close()
      section.update(warmup_seconds=warm, seconds_per_step=per_step, sentences_per_second=batch / per_step,
                     model_flops_per_second=flops / per_step, mfu=flops / per_step / peak if peak else None,
                     autocast=dtype == "bfloat16" and cuda)

    def jax_side(section, kernels=""):
      runner = jax_runner(stage, config.replace(kernels=kernels), batch, length)
      try:
        warm, per_step = seconds_per_step(runner, n_steps)
      finally:
        runner.close()
      section.update(compile_and_first_step_seconds=warm, seconds_per_step=per_step,
                     sentences_per_second=batch / per_step, model_flops_per_second=flops / per_step,
                     mfu=flops / per_step / peak if peak else None,
                     mfu_vs_measured_matmul=flops / per_step / matmul["flops_per_second"] if matmul.get(
                         "flops_per_second") else None)

    if not args.no_torch:
      guarded(row["torch"], torch_side)
      free_memory()
    if not args.kernels_only:
      guarded(row["jax"], jax_side)
      free_memory()
    if args.kernels:
      row["jax_kernels"] = {"kernels": args.kernels}
      guarded(row["jax_kernels"], lambda section: jax_side(section, args.kernels))
      free_memory()
      kernels_step = row["jax_kernels"].get("seconds_per_step")
      if row["jax"].get("seconds_per_step") and kernels_step:
        row["kernels_speedup"] = row["jax"]["seconds_per_step"] / kernels_step
      if row["torch"].get("seconds_per_step") and kernels_step:
        row["jax_kernels_speedup_over_torch"] = row["torch"]["seconds_per_step"] / kernels_step
    if row["jax"].get("seconds_per_step") and row["torch"].get("seconds_per_step"):
      row["jax_speedup_over_torch"] = row["torch"]["seconds_per_step"] / row["jax"]["seconds_per_step"]
      if row["jax_speedup_over_torch"] < SLOW_RATIO and not diagnosed:
        diagnosed = True
        row["diagnosis"] = {}
        guarded(row["diagnosis"], lambda section: diagnose_step(section, stage, config, batch, length, n_steps, args))
        free_memory()
    j, t = row["jax"], row["torch"]
    log(f"    jax {j.get('seconds_per_step', float('nan')):.4f} s/step (MFU {j.get('mfu') or float('nan'):.1%}), "
        f"torch {t.get('seconds_per_step', float('nan')):.4f} s/step, "
        f"speedup {row.get('jax_speedup_over_torch', float('nan')):.2f}, "
        f"with kernels x{row.get('kernels_speedup', float('nan')):.3f}")
    report.write()


def diagnose_step(section: dict, stage: str, config, batch: int, length: int, n_steps: int, args) -> None:
  """Where a slow JAX step loses its time: the same step without dropout and with threefry dropout bits, and
  (with --profile_dir) a profiler trace of a few steps of the step as configured."""
  variants = {"no_dropout": (config.replace(hidden_dropout=0.0, attention_dropout=0.0), RNG_IMPL),
              "threefry_dropout": (config, "threefry2x32")}
  for name, (variant, rng_impl) in variants.items():
    runner = jax_runner(stage, variant, batch, length, rng_impl=rng_impl)
    try:
      section[f"{name}_seconds_per_step"] = seconds_per_step(runner, n_steps)[1]
    finally:
      runner.close()
    free_memory()
    log(f"    diagnosis: {name} {section[f'{name}_seconds_per_step']:.4f} s/step")
  if args.profile_dir:
    runner = jax_runner(stage, config, batch, length)
    try:
      seconds_per_step(runner, 2)
      with jax.profiler.trace(args.profile_dir):
        seconds_per_step(runner, 3, warmup=0)
      section["profile_dir"] = args.profile_dir
    finally:
      runner.close()


# ------------------------------------------------------------------------------------------ part 1b: variants


def _variant_env_and_args(variant: str) -> tuple[dict, list[str]]:
  """The environment and train_step arguments of a variant: "baseline", "xla:FLAGS" or "kernels:NAMES"."""
  # The child's JAX shares the device with this process's, whose memory pool keeps what the earlier parts grew it
  # to: a BERT-base bfloat16 step needs well under this share of an 80 GB card.
  env = {**os.environ, "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45"}
  if variant.startswith("xla:"):
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {variant[4:]}".strip()
    return env, ["--kernels", ""]
  if variant.startswith("kernels:"):  # the baseline process times the step without them
    return env, ["--kernels", variant[len("kernels:"):], "--kernels_only"]
  if variant == "baseline":
    return env, ["--kernels", ""]
  raise ValueError(f"variant {variant!r}: use baseline, xla:FLAGS or kernels:NAMES")


def _run_variant(index: int, variant: str, args, report, scratch: pathlib.Path) -> dict:
  """One child accelerator_check.py timing the train_step part (JAX only) under the variant; its figures."""
  env, extra = _variant_env_and_args(variant)
  child_json = scratch / f"variant_{index}.json"
  remaining = max(30.0, args.budget_s - report.elapsed())
  command = [sys.executable, str(REPO / "bench" / "accelerator_check.py"), "--parts", "train_step", "--no_torch",
             "--shapes", "base", "--dtypes", "bfloat16", "--json", str(child_json), "--budget_s", str(remaining),
             "--train_step_share", "1", "--workdir", str(scratch / "work"), *extra,
             *(["--smoke"] if args.smoke else [])]
  start = time.perf_counter()
  result = {"variant": variant}
  try:
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=remaining + 60)
  except subprocess.TimeoutExpired:
    return {**result, "error": f"still running after {remaining + 60:.0f} s: stopped"}
  result["seconds"] = round(time.perf_counter() - start, 1)
  if not child_json.exists():
    result["error"] = f"exit {run.returncode}: {(run.stderr or run.stdout)[-600:]}"
    return result
  rows = json.loads(child_json.read_text())["parts"]["train_step"].get("rows", [])
  for row in rows:
    side = row.get("jax_kernels") if row.get("jax_kernels") else row.get("jax", {})
    if side.get("seconds_per_step"):
      result[row["stage"]] = {"seconds_per_step": side["seconds_per_step"], "mfu": side.get("mfu")}
    else:
      result.setdefault("error", side.get("error") or row.get("skipped") or f"exit {run.returncode}")
  return result


def part_variants(entry: dict, args, report) -> None:
  args.workdir.mkdir(parents=True, exist_ok=True)
  # A new folder each run: --workdir may be the user's, and nothing in it is removed.
  scratch = pathlib.Path(tempfile.mkdtemp(prefix="variants_", dir=args.workdir))
  variants = ["baseline"] + [v for v in args.variants.split(",") if v and v != "baseline"]
  entry.update(shape="smoke" if args.smoke else "base", dtype="bfloat16", combine_margin=args.combine_margin,
               timing="each variant in its own process: a compiling warm-up call, then the part's steps and a sync")
  rows = entry["rows"] = []

  def faster(result) -> float | None:
    """The variant's speed over the baseline's, the geometric mean of the two stages."""
    base = rows[0]
    stages = [s for s in ("relation", "tagger") if s in result and s in base]
    if len(stages) < 2:
      return None
    ratio = np.prod([base[s]["seconds_per_step"] / result[s]["seconds_per_step"] for s in stages])
    return float(ratio ** (1 / len(stages)))

  def run(variant):
    if report.elapsed() > args.budget_s:
      rows.append({"variant": variant, "skipped": f"budget of {args.budget_s} s spent"})
    else:
      log(f"  variant {variant}")
      result = _run_variant(len(rows), variant, args, report, scratch)
      rows.append(result)
      if rows[0].get("relation") and "error" not in result:
        result["speedup_over_baseline"] = faster(result)
      log(f"    {result.get('error') or result.get('speedup_over_baseline')}")
    report.write()

  for variant in variants:
    run(variant)
  winners = [r["variant"][4:] for r in rows[1:]
             if r["variant"].startswith("xla:") and (r.get("speedup_over_baseline") or 0) >= 1 + args.combine_margin]
  entry["combined_flags"] = winners
  if len(winners) >= 2:
    run("xla:" + " ".join(winners))


# ---------------------------------------------------------------------------------------------- part 2: loop


def part_loop(entry: dict, args, report) -> None:

  from configs import demo
  from herberta_jax.training import data_setup, parallel

  train_and_evaluate = _train_and_evaluate()
  shape_name, shape = ("smoke", SMOKE_SHAPE) if args.smoke else ("base", SHAPES["base"])
  batch, target_steps = (8, 10) if args.smoke else (64, args.loop_steps)
  config = demo.get_config()
  config.stage = "relation"
  config.model.dtype = "bfloat16"
  config.model.scratch.update(hidden_size=shape["hidden_size"], num_layers=shape["num_layers"],
                              num_heads=shape["num_heads"], intermediate_size=shape["intermediate_size"])
  # One compile per bucket length, in the loop and again for the bare step: the smoke run keeps one length.
  config.data.bucket_boundaries = (128,) if args.smoke else (32, 64, 128)
  if args.smoke:
    config.data.demo_sentences_per_language = 40
  config.log_every_steps = 5 if args.smoke else 25
  rel = config.relation
  rel.batch_size = batch
  rel.learning_rate = 1e-4  # demo's 1e-3 is for its 4-layer model; BERT-base in bf16 wants less
  rel.checkpoint_every_steps = 5 if args.smoke else args.loop_checkpoint_every
  rel.eval_every_steps = 10 ** 9  # the loop evaluates at its last step too: one dev evaluation
  rel.patience = 0
  config.compilation_cache_dir = str(args.workdir / "xla_cache")  # main() turned it on; the loop keeps it
  workdir = args.workdir / "loop_cold"

  start = time.perf_counter()
  data_dir = data_setup.prepare_run_data(config, workdir)  # the loop reuses it; we need its size first
  manifest = json.loads((data_dir / "manifest.json").read_text())
  train_rows = sum(info["count"] for info in manifest["splits"]["train"].values())
  rel.num_epochs = target_steps / max(1, train_rows // batch)
  prepare_seconds = time.perf_counter() - start
  log(f"  data prepared in {prepare_seconds:.1f} s ({train_rows} train rows); loop of ~{target_steps} steps")
  entry.update(shape=shape_name, model=dict(shape), dtype="bfloat16", batch=batch, target_steps=target_steps,
               checkpoint_every_steps=rel.checkpoint_every_steps, log_every_steps=config.log_every_steps,
               bucket_boundaries=list(config.data.bucket_boundaries), train_rows=train_rows,
               data_prepare_seconds=prepare_seconds,
               timing="two runs of the same loop in fresh workdirs: `cold` compiles every program (and fills the "
                      "persistent compilation cache), `warm` reads them from that cache, as a restarted run does; "
                      "in-memory caches are cleared between them (and before `warm_switch_interval`, the warm run "
                      "again with another sys.setswitchinterval, when asked for). The ratio uses the warm run's "
                      "steps after its first.")
  # With --loop_switch_interval a third run repeats the warm one with that `sys.setswitchinterval`: how long a thread
  # waiting for the GIL (the loop's) lets a running one (a save's, a compilation's) go on before asking for it.
  runs = ("cold", "warm") + (("warm_switch_interval",) if args.loop_switch_interval else ())
  default_interval = sys.getswitchinterval()
  for run in runs:
    run_dir = args.workdir / f"loop_{run}"
    if run != "cold":
      free_memory()  # drops the in-memory executables: only the persistent cache is left
      for keep in ("demo_corpus", "wordpiece", "data"):  # the prepared records, not the stage's checkpoints
        if (workdir / keep).exists():
          shutil.copytree(workdir / keep, run_dir / keep)
    sys.setswitchinterval(args.loop_switch_interval if run == "warm_switch_interval" else default_interval)
    start = time.perf_counter()
    try:
      train_and_evaluate(config, run_dir)
    finally:
      sys.setswitchinterval(default_interval)
    wall = time.perf_counter() - start
    summary = json.loads((run_dir / "relation" / "summary.json").read_text())
    steps_run = summary["steps_run"]
    rate = (steps_run - 1) / summary["seconds_after_first_step"]
    entry[run] = {"loop_wall_seconds": wall, "summary": summary, "loop_steps_per_second": rate,
                  "median_window_steps_per_second": float(np.median(summary["window_sentences_per_second"])) / batch}
    if run == "warm_switch_interval":
      entry[run]["switch_interval_seconds"] = args.loop_switch_interval
    report.write()
    log(f"  loop ({run}): {steps_run} steps, {summary['seconds_to_first_step']:.1f} s to the first step, "
        f"{rate:.2f} steps/s after it")
  loop_rate = entry["loop_steps_per_second"] = entry["warm"]["loop_steps_per_second"]
  # A short run spends a large share in its start, checkpoints and evaluation; the median logging window
  # (25 steps) is the loop's rate between them once the windows that pay for those are fewer than half.
  window_rate = entry["warm"]["median_window_steps_per_second"]

  # The bare step: the same model, optimizer and batches (the loop's feed replayed from its seed), all on the
  # device before timing, every shape compiled first (bench/bench_loop.py, shared with the CPU bench).
  free_memory()  # the loop's executables and last state
  import bench_loop
  bare_rate = bench_loop.bare_rate(config, data_dir, manifest, parallel.make_mesh(1), steps_run, batch) / batch
  entry.update(bare_steps_per_second=bare_rate, loop_over_bare=loop_rate / bare_rate,
               median_window_steps_per_second=window_rate, median_window_over_bare=window_rate / bare_rate)
  log(f"  bare step: {bare_rate:.2f} steps/s; loop/bare {loop_rate / bare_rate:.2f}, median window/bare "
      f"{window_rate / bare_rate:.2f}")
  if "warm_switch_interval" in entry:
    other = entry["warm_switch_interval"]
    other.update(loop_over_bare=other["loop_steps_per_second"] / bare_rate,
                 median_window_over_bare=other["median_window_steps_per_second"] / bare_rate)
    log(f"  with switch interval {args.loop_switch_interval} s: loop/bare {other['loop_over_bare']:.2f}, "
        f"median window/bare {other['median_window_over_bare']:.2f}")


# ----------------------------------------------------------------------------------------- part 3: inference


def synthesise_sentences(count: int = 2717, seed: int = 0) -> list[str]:
  """English demo-corpus text cut to word counts drawn from SemEval's test split (no SemEval text is used)."""
  rows = demo_corpus.generate(seed=seed, sentences_per_language=300)
  words = [w for r in rows if r["lang"] == "en" for w in smiler.strip_tags(r["text"])[0].split()]
  targets = [n for n, c in SEMEVAL_TEST_WORDS.items() for _ in range(c)]
  rng = random.Random(seed)
  rng.shuffle(targets)
  targets = (targets * (count // len(targets) + 1))[:count]
  out, position = [], 0
  for n in targets:
    if position + n > len(words):
      position = 0
    out.append(" ".join(words[position:position + n]))
    position += n
  return out


def load_sentences(args) -> tuple[list[str], str]:
  """--sentences FILE (SMiLER TSV or one sentence a line), else SemEval's test split beside the repository or
  its copy in bench/data, else synthetic sentences of SemEval's length distribution."""
  candidates = [pathlib.Path(args.sentences)] if args.sentences else [SEMEVAL_TEST, SENTENCES_COPY]
  for path in candidates:
    if path.is_file():
      if path.suffix == ".tsv":
        return [example.text for example in smiler.read_tsv(path)], str(path)
      return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()], str(path)
    if args.sentences:
      raise FileNotFoundError(f"--sentences {path}: no such file")
  return synthesise_sentences(), "synthetic: demo-corpus English cut to SemEval test word counts (not found: " + \
      ", ".join(str(p) for p in candidates) + ")"


def build_export(out_dir: pathlib.Path, shape: dict, smoke: bool) -> pathlib.Path:
  """A real export of random-initialised models, written without TensorFlow: a WordPiece tokenizer trained on the
  demo corpus with relation tokens added, a manifest of what the export needs, and `write_export`."""
  rows = demo_corpus.generate(seed=0, sentences_per_language=40 if smoke else 300)
  texts = [smiler.strip_tags(r["text"])[0] for r in rows]
  tokenizer = tokenize.train_wordpiece(texts, out_dir / "wordpiece", vocab_size=2000 if smoke else 6000)
  labels = sorted({r["label"] for r in rows} | {NEGATIVE_LABEL})
  relation_tokens = tokenize.add_relation_tokens(tokenizer, labels)
  data_dir = out_dir / "data"
  tokenizer.save_pretrained(str(data_dir / "tokenizer"))
  cls_id, sep_id, pad_id = tokenize.special_ids(tokenizer)
  manifest = {"labels": labels, "relation_tokens": relation_tokens,
              "relation_token_ids": {label: tokenizer.convert_tokens_to_ids(token)
                                     for label, token in relation_tokens.items()},
              "max_seq_len": 128, "tokenizer": {"cls_id": cls_id, "sep_id": sep_id, "pad_id": pad_id}}
  config = bert_config(shape).replace(vocab_size=max(shape["vocab_size"], len(tokenizer)))
  ids = jnp.zeros((1, 8), jnp.int32)
  # Jitted inits: one compile instead of one dispatch (and compile) per operation.
  relation = jax.jit(RelationClassifier(config, num_labels=len(labels)).init)(jax.random.PRNGKey(0), ids, ids + 1)
  tagger = jax.jit(EntityTagger(config).init)(jax.random.PRNGKey(1), ids, ids + 1, ids, ids + 1)
  relation, tagger = relation["params"], tagger["params"]
  # One jitted function per bucket length: the smoke run keeps one.
  buckets = (128,) if smoke else (32, 64, 128)
  return _write_export(out_dir / "export", data_dir, manifest, (config, relation), (config, tagger), buckets,
                         {"max_span_len": 32, "disjoint_entities": False})


def part_inference(entry: dict, args, report) -> None:
  torch = torch_module()
  cuda = has_cuda(torch)
  Predictor = _predictor_class()
  bench_infer = _bench_infer()
  sentences, source = load_sentences(args)
  if args.smoke:
    sentences = sentences[:64]
  shape_name, shape = ("smoke", SMOKE_SHAPE) if args.smoke else ("minilm", SHAPES["minilm"])
  batch_size = 64
  # A coarser length grid than predict's default of 8: 13 programs to compile per dtype instead of 21 at SemEval's
  # lengths (some 12 s each on an H100), for about the padding of the steps of 4 this check's earlier runs used.
  lengths_per_doubling = 4
  export = build_export(args.workdir / "inference", shape, args.smoke)
  base = Predictor.from_export(export, batch_size=batch_size, top_k=1, top_m=1, **bench_infer.PAPER_PAIRS,
                               lengths_per_doubling=lengths_per_doubling)
  tokens = np.array([len(e.input_ids) for e in base.encode(sentences)])
  entry.update(sentences=len(sentences), source=source, shape=shape_name, model=dict(shape),
               batch_size=batch_size, lengths_per_doubling=lengths_per_doubling, export=str(export),
               relation_input_tokens={"mean": float(tokens.mean()), "p50": float(np.percentile(tokens, 50)),
                                      "p90": float(np.percentile(tokens, 90)), "max": int(tokens.max())},
               timing="one full warm-up pass per side (JAX compiles one function per batch shape), then one timed "
                      "pass; both sides tokenize, run both stages and decode spans; JAX runs predict's streaming "
                      "path (parameters on the device once, sorted windows), PyTorch pads each batch to its "
                      "longest sentence in input order", rows=[])
  report.write()
  for dtype in ("float32",) if args.smoke else args.inference_dtypes.split(","):
    row = {"dtype": dtype, "jax": {}, "torch": {}}
    entry["rows"].append(row)
    log(f"  {shape_name} two-stage inference, {dtype}, {len(sentences)} sentences")
    outputs = {}

    def jax_side(section, kernels=""):
      predictor = Predictor.from_export(export, batch_size=batch_size, top_k=1, top_m=1, **bench_infer.PAPER_PAIRS,
                                        lengths_per_doubling=lengths_per_doubling,
                                        dtype=None if dtype == "float32" else dtype, kernels=kernels)
      warm_start = time.perf_counter()
      bench_infer.jax_pass(predictor, sentences)
      warm = time.perf_counter() - warm_start
      predictor.real_tokens = predictor.padded_tokens = 0
      predictor.batch_shapes.clear()
      name = "jax_kernels" if kernels else "jax"
      outputs[name], seconds = bench_infer.timed(lambda: bench_infer.jax_pass(predictor, sentences))
      section.update(warmup_seconds=warm, seconds=seconds, sentences_per_second=len(sentences) / seconds,
                     model_flops_per_second=bench_infer.pipeline_flops(predictor) / seconds,
                     real_token_share=predictor.real_token_share, batch_shapes=len(predictor.batch_shapes))

    def torch_side(section):
      device = torch_device(torch)
      autocast = torch.bfloat16 if dtype == "bfloat16" and cuda else None
      if not cuda:
        torch.set_num_threads(os.cpu_count())
      pipeline = bench_infer.TorchPipeline(export, base.max_span_len, device=device,
                                           autocast_dtype=autocast, attn_implementation="sdpa")
      warm_start = time.perf_counter()
      bench_infer.torch_pass(pipeline, sentences, batch_size)
      warm = time.perf_counter() - warm_start
      outputs["torch"], seconds = bench_infer.timed(lambda: bench_infer.torch_pass(pipeline, sentences, batch_size))
      section.update(warmup_seconds=warm, seconds=seconds, sentences_per_second=len(sentences) / seconds,
                     autocast=autocast is not None, device=device,
                     allow_tf32=bool(cuda and torch.backends.cuda.matmul.allow_tf32))
      del pipeline

    guarded(row["jax"], jax_side)
    if args.kernels:
      row["jax_kernels"] = {"kernels": args.kernels}
      guarded(row["jax_kernels"], lambda section: jax_side(section, args.kernels))
    guarded(row["torch"], torch_side)
    for name, suffix in (("jax", ""), ("jax_kernels", "_kernels")):
      if name in outputs and "torch" in outputs:
        same = sum(j["relation"] == t["relation"] and (j["e1"]["start"], j["e1"]["end"]) == t["e1"]
                   and (j["e2"]["start"], j["e2"]["end"]) == t["e2"] for j, t in zip(outputs[name], outputs["torch"]))
        row[f"same_triples{suffix}"] = f"{same}/{len(sentences)}"
      if row.get(name, {}).get("seconds") and row["torch"].get("seconds"):
        row[f"jax_speedup_over_torch{suffix}"] = row["torch"]["seconds"] / row[name]["seconds"]
    log(f"    jax {row['jax'].get('sentences_per_second', float('nan')):.0f} sent/s "
        f"(real tokens {row['jax'].get('real_token_share', float('nan')):.2f}), torch "
        f"{row['torch'].get('sentences_per_second', float('nan')):.0f} sent/s, same {row.get('same_triples')}")
    free_memory()
    report.write()


# ----------------------------------------------------------------------------------------- part 4: numerics


def loss_curves(smoke: bool) -> dict:
  """bfloat16 and float32 training of one tiny BERT from the same init on the same batches (dropout off, so the
  curves differ only by precision). The label is a function of the first token: learnable, so loss falls."""
  n_steps, batch, length = (30, 16, 32) if smoke else (300, 64, 64)
  vocab, labels = 1000, 4
  shape = SMOKE_SHAPE if smoke else dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512,
                                         vocab_size=vocab)
  rng = np.random.default_rng(0)
  data = []
  for _ in range(8):
    ids = rng.integers(5, vocab, size=(batch, length)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    data.append(jax.device_put({"input_ids": ids, "attention_mask": np.ones_like(ids),
                                "label": (ids[:, 1] % labels).astype(np.int32), "valid": np.ones(batch, bool)}))
  init = None
  curves = {}
  for dtype in ("float32", "bfloat16"):
    config = bert_config(shape, dtype).replace(hidden_dropout=0.0, attention_dropout=0.0)
    module = RelationClassifier(config, num_labels=labels)
    if init is None:  # float32 parameters either way: one init serves both
      init = jax.jit(module.init)(jax.random.PRNGKey(0), data[0]["input_ids"][:1],
                                  data[0]["attention_mask"][:1])["params"]
    tx = optax.adamw(1e-3)
    step = jax.jit(steps.make_train_step(lambda p, b, r, d: steps.relation_loss_terms(module, p, b, r, d),
                                         optax.constant_schedule(1e-3), 1, rng_impl=RNG_IMPL), donate_argnums=0)
    state = TrainState.create(jax.tree.map(jnp.array, init), tx, dropout_key_data(1))  # a copy: donated
    losses = []
    for i in range(n_steps):
      state, metrics = step(state, data[i % len(data)])
      losses.append(metrics["loss"])
    curves[dtype] = np.asarray(jax.device_get(losses), np.float64)
    del state
  every = [i for i in range(n_steps) if i % 10 == 0 or i == n_steps - 1]
  diff = np.abs(curves["bfloat16"] - curves["float32"])
  return {"steps": n_steps, "batch": batch, "length": length, "model": shape, "labels": labels, "learning_rate": 1e-3,
          "recorded_steps": every,
          "loss_float32": [float(curves["float32"][i]) for i in every],
          "loss_bfloat16": [float(curves["bfloat16"][i]) for i in every],
          "max_abs_diff": float(diff.max()), "final_abs_diff": float(diff[-1]),
          "max_abs_diff_recorded": float(diff[every].max()),
          "loss_drop_float32": float(curves["float32"][0] - curves["float32"][-1]),
          "loss_drop_bfloat16": float(curves["bfloat16"][0] - curves["bfloat16"][-1])}


def parity(smoke: bool, workdir: pathlib.Path) -> dict:
  """Our Flax relation classifier and tagger against transformers' PyTorch models from the same random weights
  (written by PyTorch, read by herberta_jax.model.hf): max |difference| of the last hidden states and logits over
  real tokens, JAX at the highest matmul precision and PyTorch in float32 with TF32 off (tests/test_bert_parity.py
  does the same under pytest)."""
  import torch
  import transformers
  shape = SMOKE_SHAPE if smoke else SHAPES["minilm"]
  batch, length = (4, 32) if smoke else (8, 128)
  device = "cuda" if has_cuda(torch) else "cpu"
  tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
  rng = np.random.default_rng(0)
  ids = rng.integers(5, shape["vocab_size"], size=(batch, length)).astype(np.int64)
  mask = np.ones_like(ids)
  for row, keep in ((1, length * 2 // 3), (2, length // 3)):  # padded rows, as real batches have
    ids[row, keep:], mask[row, keep:] = 0, 0
  types = np.zeros_like(ids)
  types[0, length // 2:] = 1
  valid = mask.astype(bool)
  result = {"model": dict(shape), "input_shape": [batch, length], "torch_device": device, "tolerance": 1e-4}
  try:
    for stage in ("relation", "tagger"):
      torch.manual_seed(0)
      extra = dict(num_labels=NUM_LABELS) if stage == "relation" else \
          dict(num_labels=len(TAGGER_OUTPUTS), id2label=dict(enumerate(TAGGER_OUTPUTS)))
      hf_config = transformers.BertConfig(vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
                                          num_hidden_layers=shape["num_layers"],
                                          num_attention_heads=shape["num_heads"],
                                          intermediate_size=shape["intermediate_size"], attn_implementation="sdpa",
                                          **extra)
      cls = transformers.BertForSequenceClassification if stage == "relation" else \
          transformers.BertForTokenClassification
      model = cls(hf_config).eval()
      directory = workdir / f"parity_{stage}"
      model.save_pretrained(directory)
      model.to(device)
      with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, device=device), attention_mask=torch.tensor(mask, device=device),
                    token_type_ids=torch.tensor(types, device=device), output_hidden_states=True)
      torch_hidden = out.hidden_states[-1].float().cpu().numpy()
      torch_logits = out.logits.float().cpu().numpy()
      if stage == "relation":
        config, params, _ = hf.load_relation_model(directory)
        module = RelationClassifier(config, num_labels=NUM_LABELS)
        apply_logits = lambda: jax.jit(lambda p: module.apply({"params": p}, ids, mask, types))(params)
      else:
        config, params = hf.load_tagger_model(directory)
        module = EntityTagger(config)
        apply_logits = lambda: jax.jit(lambda p: module.apply({"params": p}, ids, mask, types, mask))(params)
      encoder = BertEncoder(config, add_pooler=stage == "relation")
      # Jitted (eager apply dispatches op by op), parameters as arguments rather than constants baked into the
      # program; a new jit per call, so each traces under the precision context it is called in.
      hidden = lambda: jax.jit(lambda p: encoder.apply({"params": p}, ids, mask, types)[0])(params["bert"])
      with jax.default_matmul_precision("highest"):
        hidden_diff = np.abs(np.asarray(hidden()) - torch_hidden)[valid].max()
        logits = np.asarray(apply_logits())
      logit_diff = np.abs(logits - torch_logits)[valid].max() if stage == "tagger" else \
          np.abs(logits - torch_logits).max()
      result[stage] = {"hidden_max_abs_diff": float(hidden_diff), "logits_max_abs_diff": float(logit_diff),
                       "within_tolerance": bool(max(hidden_diff, logit_diff) < result["tolerance"])}
      if jax.default_backend() != "cpu":  # what the accelerator's default (TF32 / bf16-pass) matmuls cost
        default_diff = np.abs(np.asarray(hidden()) - torch_hidden)[valid].max()
        result[stage]["hidden_max_abs_diff_default_precision"] = float(default_diff)
      del model, out
  finally:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
  return result


def part_numerics(entry: dict, args, report) -> None:
  entry["loss_curves"], entry["parity"] = {}, {}
  guarded(entry["loss_curves"], lambda section: section.update(loss_curves(args.smoke)))
  report.write()
  guarded(entry["parity"], lambda section: section.update(parity(args.smoke, args.workdir)))
  if entry["loss_curves"].get("error") or entry["parity"].get("error"):
    raise RuntimeError(entry["loss_curves"].get("error") or entry["parity"].get("error"))


# ------------------------------------------------------------------------------------------------------ main


# The loop runs last: it is the longest part and, until the data pipeline is TensorFlow-free, fails on the GPU box;
# the budget check then leaves it, not the cheap parts, to be skipped.
PARTS = {"train_step": part_train_step, "variants": part_variants, "inference": part_inference,
         "numerics": part_numerics, "loop": part_loop}


