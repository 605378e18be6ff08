"""The MiniLM encoder's kernels on this CPU, JAX next to PyTorch: its dense matmul shapes (float32 and bfloat16)
and the exact GELU's two forms.

  python bench/cpu_kernels.py [--rounds 20] [--json FILE]

Shapes are those of the two-stage inference function at batch 64, length 40 (2,560 rows): the query/key/value
and attention-output projections (384 -> 384), the feed-forward's two matmuls (384 -> 1536 -> 384). Each kernel
is compiled (JAX) or warmed up (PyTorch) once, then the two sides take turns for `--rounds` calls each; medians.
The GELU rows time `jax.nn.gelu(approximate=False)` (through erfc) against the model's x/2 (1 + erf(x/sqrt 2)) on a
[2688, 1536] float32 activation (bench/model_rewrites.py times the same change inside the model).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from herberta_jax.model import bert  # noqa: E402

ROWS = 64 * 40
MATMULS = {"projection 384x384": (ROWS, 384, 384), "feed-forward in 384x1536": (ROWS, 384, 1536),
           "feed-forward out 1536x384": (ROWS, 1536, 384)}


def median_seconds(call, rounds: int) -> float:
  call()
  seconds = []
  for _ in range(rounds):
    start = time.perf_counter()
    call()
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rounds", type=int, default=20)
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  import torch
  torch.set_num_threads(os.cpu_count())
  rng = np.random.default_rng(0)
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "date": time.strftime("%Y-%m-%d %H:%M"),
            "jax": jax.__version__, "torch": torch.__version__, "rounds": args.rounds, "matmul_gflop_per_second": {},
            "gelu_ms": {}}
  matmul = jax.jit(jnp.matmul)
  for name, (m, k, n) in MATMULS.items():
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    for dtype, torch_dtype in ((jnp.float32, torch.float32), (jnp.bfloat16, torch.bfloat16)):
      ja, jb = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
      ta, tb = torch.from_numpy(a).to(torch_dtype), torch.from_numpy(b).to(torch_dtype)
      flops = 2 * m * k * n
      row = {}
      for _ in range(2):  # turns: JAX, PyTorch, JAX, PyTorch; each side's better median kept
        row["jax"] = max(row.get("jax", 0), flops / median_seconds(lambda: matmul(ja, jb).block_until_ready(),
                                                                      args.rounds) / 1e9)
        with torch.inference_mode():
          row["torch"] = max(row.get("torch", 0), flops / median_seconds(lambda: ta @ tb, args.rounds) / 1e9)
      result["matmul_gflop_per_second"][f"{name} {jnp.dtype(dtype).name}"] = {k: round(v, 1) for k, v in row.items()}
      print(name, jnp.dtype(dtype).name, result["matmul_gflop_per_second"][f"{name} {jnp.dtype(dtype).name}"],
            flush=True)
  x = jnp.asarray(rng.standard_normal((2688, 1536), np.float32) * 2)
  forms = {"erfc (jax.nn.gelu)": jax.jit(lambda x: jax.nn.gelu(x, approximate=False)),
           "erf": jax.jit(bert._ACTIVATIONS["gelu"])}  # the model's
  np.testing.assert_allclose(forms["erf"](x), forms["erfc (jax.nn.gelu)"](x), atol=1e-5)
  medians = {name: [] for name in forms}
  for _ in range(3):
    for name, form in forms.items():
      medians[name].append(median_seconds(lambda f=form: f(x).block_until_ready(), args.rounds))
  result["gelu_ms"] = {name: round(1e3 * min(m), 2) for name, m in medians.items()}
  print("gelu ms", result["gelu_ms"])
  print(json.dumps(result, indent=2))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
