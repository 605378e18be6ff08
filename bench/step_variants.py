"""Where a train step's time goes on an accelerator: the step as it is, and with one thing changed at a time.

  python bench/step_variants.py --json variants.json [--shape base] [--stage relation] [--dtype bfloat16]
      [--variants baseline,no_attention_dropout,...] [--profile_dir DIR] [--torch]

Each variant is our jitted train step (bench/step_builders.py, batch 256, length 128 unless told) with one change,
timed as accelerator_check.py times it: a compiling warm-up call, then 20 steps and one sync. Variants:

- baseline: the step as trained;
- no_attention_dropout / no_dropout: the cost of the attention probabilities' dropout, of all dropout;
- tokens_major_attention: the attention contractions on [B, L, heads, d] operands, as before 2026-11-27 (the model
  now moves the heads ahead of the rows first);
- erfc_gelu: the exact GELU as `jax.nn.gelu(approximate=False)` computes it, through erfc (the model now uses erf);
  bench/model_rewrites.py times these two against the model on the CPU;
- fused_attention: attention through `jax.nn.dot_product_attention` (cuDNN's fused kernel on a GPU) without
  dropout on the probabilities, which that function has no argument for;
- recomputed_gelu: the feed-forward's activation recomputed in the backward pass from the matmul's output
  (jax.checkpoint) instead of autodiff keeping what the exact GELU's derivative needs;
- stacked_grad_norm: the gradient-norm metric from independent per-leaf reductions summed once, where
  `optax.tree.norm` adds them one after the other (a chain of ~200 small kernels for BERT-base);
- scanned_layers: the encoder's layers run by one `lax.scan` over their parameters, stacked inside the program
  (the stored parameters keep their per-layer names): one layer traced instead of twelve. On the 2-core CPU
  (2026-11-27, BERT-base relation bf16, batch 64, length 128) tracing the step took 0.78 s against 1.57 s and
  compiling it 6.7 s against 9.0 s; what it costs per step on an accelerator is what this variant measures;
- xla:FLAGS: the baseline in a child process with XLA_FLAGS=FLAGS (flags are read once, at backend start);
  `--combine MARGIN` then runs the flags of every such variant at least MARGIN faster than the baseline together.

`--profile_dir` writes a profiler trace of three baseline steps and prints where the device time went: matmul
kernels against the rest, and by kernel or (with `--hlo_dump`) by the model op each kernel computes; the summary
goes into the JSON. `--breakdown TRACE HLO` makes that summary from saved files. `--torch` times transformers'
model on the same shape. `--smoke` runs it all at a tiny shape on the CPU.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.7")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from profile_step import instruction_ops, trace_events  # noqa: E402
from step_builders import SHAPES, bert_config, input_length, jax_runner, seconds_per_step, torch_runner  # noqa: E402

from herberta_jax import compile_cache  # noqa: E402
from herberta_jax.model import bert  # noqa: E402
from herberta_jax.model.flops import train_flops_per_sequence  # noqa: E402

NUM_LABELS = 36
SMOKE_SHAPE = dict(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=256, vocab_size=1000)
IN_PROCESS = ("baseline", "no_attention_dropout", "no_dropout", "tokens_major_attention", "erfc_gelu",
              "fused_attention", "recomputed_gelu", "stacked_grad_norm", "scanned_layers")


def _tokens_major_heads(cfg: bert.BertConfig, x, queries):
  """bert.SelfAttention's query, key and value projections (its parameters, made in the calling module), each as
  [B, rows, heads, head_dim]."""
  batch, head_dim = x.shape[0], cfg.hidden_size // cfg.num_heads

  def heads(name, rows):
    return bert._dense(cfg.hidden_size, cfg, name)(rows).reshape(batch, rows.shape[1], cfg.num_heads, head_dim)

  return heads("query", queries), heads("key", x), heads("value", x)


class FusedSelfAttention(nn.Module):
  """bert.SelfAttention's parameters and inputs, attention by `jax.nn.dot_product_attention` (no dropout)."""
  config: bert.BertConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool, queries=None):
    queries = x if queries is None else queries
    q, k, v = _tokens_major_heads(self.config, x, queries)
    out = jax.nn.dot_product_attention(q, k, v, mask=bias == 0)  # bias: [B, 1, 1, L], 0 where attended
    return out.reshape(x.shape[0], queries.shape[1], self.config.hidden_size)


class TokensMajorSelfAttention(nn.Module):
  """bert.SelfAttention's parameters and computation, its contractions on [B, L, heads, d] operands."""
  config: bert.BertConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool, queries=None):
    cfg = self.config
    queries = x if queries is None else queries
    q, k, v = _tokens_major_heads(cfg, x, queries)
    head_dim = q.shape[-1]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
    probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(v.dtype)
    probs = bert.Dropout(cfg.attention_dropout)(probs, deterministic=deterministic)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(x.shape[0], queries.shape[1], cfg.hidden_size)


def _biased_activation(name: str, y, bias):
  return bert._ACTIVATIONS[name](y + bias)


class RecomputedIntermediate(nn.Module):
  """bert._Intermediate's parameters, with activation(y + bias) under jax.checkpoint: the backward pass
  recomputes it from the matmul's output `y` instead of keeping what the exact GELU's derivative needs (two more
  tensors of the feed-forward's width)."""
  config: bert.BertConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    kernel, bias = _KernelAndBias(cfg.intermediate_size, name="dense")(x.shape[-1])
    y = jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype), (((x.ndim - 1,), (0,)), ((), ())))
    activate = jax.checkpoint(_biased_activation, static_argnums=(0,))
    return activate(cfg.hidden_act, y, bias.astype(dtype))


class _KernelAndBias(nn.Module):
  """nn.Dense's two parameters under its names and initialisers, returned rather than applied."""
  features: int

  @nn.compact
  def __call__(self, in_features: int):
    return (self.param("kernel", nn.initializers.normal(stddev=0.02), (in_features, self.features)),
            self.param("bias", nn.initializers.zeros_init(), (self.features,)))


class ScannedLayers(nn.Module):
  """bert._Layers' parameters (`layer_0` .. `layer_{n-1}`), applied by one `lax.scan` over them stacked. With
  `first_token_only` the last layer runs apart, on [CLS] alone, as in bert._Layers. Each layer's dropout key is
  split from one key, so with dropout the masks differ from bert._Layers' (the same distribution)."""
  config: bert.BertConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool, first_token_only: bool = False):
    cfg, n = self.config, self.config.num_layers
    if self.is_initializing():  # creates the per-layer parameters as bert._Layers does
      for i in range(n):
        x = bert.Layer(cfg, name=f"layer_{i}")(x, bias, deterministic, x[:, :1] if first_token_only and
                                               i == n - 1 else None)
      return x
    per_layer = [self.scope.get_variable("params", f"layer_{i}") for i in range(n)]
    keys = None if deterministic else jax.random.split(self.make_rng("dropout"), n)

    def apply(params, x, key, queries=None):
      return bert.Layer(cfg, parent=None).apply({"params": params}, x, bias, deterministic, queries,
                                                rngs=None if key is None else {"dropout": key})

    scanned = n - 1 if first_token_only else n
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_layer[:scanned])
    x, _ = jax.lax.scan(lambda x, xs: (apply(xs[0], x, xs[1]), None), x,
                        (stacked, None if keys is None else keys[:scanned]))
    if first_token_only:
      x = apply(per_layer[-1], x, None if keys is None else keys[-1], x[:, :1])
    return x


def stacked_norm(tree):
  """optax.tree.norm's value from independent per-leaf reductions summed once, not added one after the other."""
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(jnp.sum(jnp.stack([jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in leaves])))


@contextlib.contextmanager
def patched(name: str):
  """The model and step changed as variant `name` says, for the steps traced inside (the dropout variants change
  the config only)."""
  saved = bert.SelfAttention, bert._Intermediate, bert._Layers, optax.tree.norm, bert._ACTIVATIONS["gelu"]
  try:
    if name == "scanned_layers":
      bert._Layers = ScannedLayers
    elif name == "fused_attention":
      bert.SelfAttention = FusedSelfAttention
    elif name == "tokens_major_attention":
      bert.SelfAttention = TokensMajorSelfAttention
    elif name == "erfc_gelu":
      bert._ACTIVATIONS["gelu"] = functools.partial(jax.nn.gelu, approximate=False)
    elif name == "recomputed_gelu":
      bert._Intermediate = RecomputedIntermediate
    elif name == "stacked_grad_norm":
      optax.tree.norm = stacked_norm  # the train step's grad_norm metric calls it at trace time
    yield
  finally:
    bert.SelfAttention, bert._Intermediate, bert._Layers, optax.tree.norm, bert._ACTIVATIONS["gelu"] = saved


def variant_config(name: str, config: bert.BertConfig) -> bert.BertConfig:
  if name == "no_dropout":
    return config.replace(hidden_dropout=0.0, attention_dropout=0.0)
  if name in ("no_attention_dropout", "fused_attention"):
    return config.replace(attention_dropout=0.0)
  return config


def time_variant(name: str, args, config, flops: float) -> dict:
  with patched(name):
    runner = jax_runner(args.stage, variant_config(name, config), args.batch, args.length)
    try:
      warm, per_step = seconds_per_step(runner, args.steps)
    finally:
      runner.close()
  jax.clear_caches()
  return {"compile_and_first_step_seconds": warm, "seconds_per_step": per_step,
          "model_flops_per_second": flops / per_step}


def _kind(kernel: str) -> str:
  if kernel.startswith(("nvjet", "gemm_fusion", "cutlass")) or "gemm" in kernel or "xmma" in kernel:
    return "matmul"
  return "other"


def device_time(trace_file: pathlib.Path, steps: int, hlo_file: pathlib.Path | None = None, top: int = 40) -> dict:
  """Device time per step from a trace jax.profiler wrote: by kernel and, given the step's optimised HLO, by the
  model op each kernel computes; matmul kernels against the rest."""
  events = trace_events(trace_file)
  process_names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
                   if e.get("ph") == "M" and e.get("name") == "process_name"}
  device_pids = {pid for pid, name in process_names.items() if "GPU" in name or "TPU" in name or "/device" in name}
  ops = instruction_ops(hlo_file.read_text(), kernel_names=True) if hlo_file else {}
  by_kernel, by_op, by_kind = collections.Counter(), collections.Counter(), collections.Counter()
  calls: collections.Counter = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("pid") in device_pids:
      micros = e.get("dur", 0.0)
      by_kernel[e["name"]] += micros
      calls[e["name"]] += 1
      by_op[ops.get(e["name"], "(kernel) " + e["name"])] += micros
      by_kind[_kind(e["name"])] += micros
  busy = sum(by_kernel.values())

  def rows(counter, count=None):
    return [{"name": name[:200], "ms_per_step": us / 1e3 / steps, "share": us / busy if busy else None,
             **({"calls_per_step": count[name] / steps} if count else {})} for name, us in counter.most_common(top)]

  return {"trace": str(trace_file), "processes": sorted(process_names.values()), "steps": steps,
          "device_ms_per_step": busy / 1e3 / steps, "by_kind": rows(by_kind), "by_kernel": rows(by_kernel, calls),
          **({"by_op": rows(by_op)} if ops else {})}


def profile_baseline(args, config) -> dict:
  trace_dir = pathlib.Path(args.profile_dir)
  if args.hlo_dump:  # compiled here, not read from the cache, so that the newest dumped module is this program
    jax.config.update("jax_enable_compilation_cache", False)
  runner = jax_runner(args.stage, config, args.batch, args.length)
  try:
    seconds_per_step(runner, 2)
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
      seconds_per_step(runner, 3, warmup=0)
  finally:
    runner.close()
  jax.clear_caches()
  found = sorted(trace_dir.rglob("*.trace.json.gz"))
  if not found:
    return {"error": f"no trace file under {trace_dir}"}
  dumps = sorted(pathlib.Path(args.hlo_dump).glob("*jit_step*after_optimizations.txt"),
                 key=lambda f: f.stat().st_mtime) if args.hlo_dump else []
  return device_time(found[-1], 3, dumps[-1] if dumps else None)


def xla_flags_variant(flags: str, args) -> dict:
  """The baseline in a child process started with XLA_FLAGS=flags."""
  with tempfile.TemporaryDirectory() as scratch:  # the child's report is read back into this one
    out = pathlib.Path(scratch) / "baseline.json"
    child = [sys.executable, __file__, "--json", str(out), "--variants", "baseline", "--shape", args.shape,
             "--stage", args.stage, "--dtype", args.dtype, "--batch", str(args.batch), "--length", str(args.length),
             "--steps", str(args.steps)] + (["--smoke"] if args.smoke else [])
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()}
    done = subprocess.run(child, env=env, capture_output=True, text=True, timeout=args.child_timeout_s)
    if done.returncode:
      return {"error": (done.stderr or done.stdout)[-1500:]}
    return json.loads(out.read_text())["variants"]["baseline"]


def faster_flags(variants: dict, margin: float) -> list[str]:
  """The flags of the `xla:` variants at least `margin` (a fraction) faster than the baseline, fastest first."""
  base = variants.get("baseline", {}).get("seconds_per_step")
  if not base:
    return []
  timed = [(result["seconds_per_step"], name[4:]) for name, result in variants.items()
           if name.startswith("xla:") and result.get("seconds_per_step")]
  return [flags for seconds, flags in sorted(timed) if seconds <= base * (1 - margin)]


def print_profile(profile: dict) -> None:
  for row in profile.get("by_kind", []):
    print(f"  {row['ms_per_step']:8.3f} ms  {row['share']:6.1%}  {row['name']}")
  for row in profile.get("by_op", profile.get("by_kernel", []))[:25]:
    print(f"  {row['ms_per_step']:8.3f} ms  {row['share']:6.1%}  {row['name'][:120]}")
  print(f"device busy {profile.get('device_ms_per_step', float('nan')):.2f} ms/step")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", default="step_variants.json")
  parser.add_argument("--shape", default="base", choices=sorted(SHAPES))
  parser.add_argument("--stage", default="relation", choices=("relation", "tagger"))
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--variants", default=",".join(IN_PROCESS),
                      help="comma-separated; `xla:FLAGS` runs the baseline with those XLA flags in a child process")
  parser.add_argument("--profile_dir", default="")
  parser.add_argument("--hlo_dump", default="",
                      help="with --profile_dir: dump optimised HLO here, to name the model op behind each kernel")
  parser.add_argument("--breakdown", nargs=2, metavar=("TRACE", "HLO"),
                      help="only summarise a saved trace (.trace.json.gz of 3 steps) with its optimised HLO")
  parser.add_argument("--torch", action="store_true", help="also time transformers' model on the same shape")
  parser.add_argument("--compilation_cache_dir", default="")
  parser.add_argument("--child_timeout_s", type=float, default=240)
  parser.add_argument("--budget_s", type=float, default=float("inf"),
                      help="seconds after which the variants not yet started are skipped")
  parser.add_argument("--combine", type=float, default=None, metavar="MARGIN",
                      help="then run the flags of every `xla:` variant at least MARGIN (e.g. 0.01) faster than "
                           "the baseline together, when there are two or more")
  parser.add_argument("--smoke", action="store_true", help="a tiny shape on the CPU, 2 steps")
  args = parser.parse_args(argv)
  if args.breakdown:
    profile = device_time(pathlib.Path(args.breakdown[0]), 3, pathlib.Path(args.breakdown[1]))
    pathlib.Path(args.json).write_text(json.dumps(profile, indent=2) + "\n")
    print_profile(profile)
    return 0
  if args.hlo_dump:  # read when the backend starts, which is after this
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={args.hlo_dump} --xla_dump_hlo_as_text"
  compile_cache.enable(args.compilation_cache_dir)  # the profile's baseline reads the baseline variant's program back
  shape = SMOKE_SHAPE if args.smoke else SHAPES[args.shape]
  if args.smoke:
    args.batch, args.length, args.steps = 4, 16, 2
  config = bert_config(shape, args.dtype)
  flops = train_flops_per_sequence(config, input_length(args.stage, args.length), args.stage, NUM_LABELS) * args.batch
  report = {"meta": {"device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
                     "date": time.strftime("%Y-%m-%d %H:%M %Z"), "shape": args.shape, "stage": args.stage,
                     "dtype": args.dtype, "batch": args.batch, "length": args.length, "steps": args.steps,
                     "train_flops_per_step": flops, "xla_flags": os.environ.get("XLA_FLAGS", "")},
            "variants": {}}
  path = pathlib.Path(args.json)
  path.parent.mkdir(parents=True, exist_ok=True)

  def save():
    path.write_text(json.dumps(report, indent=2) + "\n")

  if args.torch:
    import torch
    cuda = torch.cuda.is_available()
    try:
      runner = torch_runner(args.stage, shape, args.batch, args.length, device="cuda" if cuda else "cpu",
                            autocast_dtype=torch.bfloat16 if cuda and args.dtype == "bfloat16" else None,
                            fused=cuda, attn_implementation="sdpa")
      try:
        per_step = seconds_per_step(runner, args.steps, warmup=2)[1]
      finally:
        runner.close()
      report["torch"] = {"seconds_per_step": per_step, "model_flops_per_second": flops / per_step}
    except Exception as error:  # a bench of variants: record and go on
      report["torch"] = {"error": f"{type(error).__name__}: {error}"}
    print(f"torch: {report['torch']}", flush=True)
    save()
  started = time.perf_counter()

  def run_variant(name: str) -> None:
    if time.perf_counter() - started > args.budget_s:
      result = {"skipped": f"past --budget_s {args.budget_s:g}"}
    else:
      try:
        if name.startswith("xla:"):
          result = xla_flags_variant(name[4:], args)
        else:
          result = time_variant(name, args, config, flops)
      except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}"[:1500]}
    report["variants"][name] = result
    print(f"{name}: {json.dumps(result)}", flush=True)
    save()

  for name in args.variants.split(","):
    run_variant(name)
  if args.combine is not None:
    winners = faster_flags(report["variants"], args.combine)
    report["combined_from"] = winners
    save()
    if len(winners) > 1:
      run_variant("xla:" + " ".join(winners))
  if args.profile_dir:
    try:
      report["profile"] = profile_baseline(args, config)
    except Exception as error:
      report["profile"] = {"error": f"{type(error).__name__}: {error}"[:1500]}
    save()
    print_profile(report["profile"])

  base = report["variants"].get("baseline", {}).get("seconds_per_step")
  print(f"\n{args.shape} {args.stage} {args.dtype} [{args.batch}, {args.length}] on {report['meta']['device_kind']}")
  for name, result in report["variants"].items():
    s = result.get("seconds_per_step")
    if s:
      print(f"  {name:40s} {s * 1e3:8.2f} ms/step  {flops / s / 1e12:7.1f} TFLOP/s"
            + (f"  x{base / s:.3f} of baseline speed" if base else ""))
    else:
      print(f"  {name:40s} {result.get('error', '?')[:200]}")
  if report.get("torch", {}).get("seconds_per_step"):
    print(f"  {'torch':40s} {report['torch']['seconds_per_step'] * 1e3:8.2f} ms/step")
  return 0


if __name__ == "__main__":
  sys.exit(main())
