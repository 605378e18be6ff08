"""How much a background checkpoint save slows the thread that dispatches the train steps.

  python bench/bench_save_dispatch.py [--seconds 2] [--rounds 3] [--flat] [--switch_interval S]

Builds a BERT-base-sized train state (parameters and two Adam moments, 1.47 GB in float32), then counts calls of a
tiny jitted function from the main thread for `--seconds`: once idle, once while `StageCheckpoints.save_latest`
writes the state from its background thread. Rounds alternate the two, so a load change hits both alike. The
loop's steps are dispatched the same way, so a lower rate or long stalls here are what a save costs a loop
whose device outruns the host. `--flat` saves the same bytes as three arrays (one per tree) instead of 591: what
orbax's work per array costs. `--switch_interval` sets `sys.setswitchinterval` (Python's default: 0.005 s): how long
a thread waiting for the GIL lets the holder run before asking for it.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from herberta_jax.training.checkpoint import StageCheckpoints  # noqa: E402

# BERT-base's parameter sizes, roughly: the word embeddings, 72 hidden x hidden and 24 hidden x 4 hidden matrices,
# 100 vectors.
SIZES = [30522 * 768] + [768 * 768] * 72 + [768 * 3072] * 24 + [768] * 100


def dispatch(seconds: float) -> tuple[float, float]:
  """(calls per second, longest call in ms) of a tiny jitted function over `seconds`."""
  add_one = jax.jit(lambda x: x + 1)
  x = jnp.ones(8)
  add_one(x).block_until_ready()
  calls, longest, start = 0, 0.0, time.perf_counter()
  while (now := time.perf_counter()) - start < seconds:
    add_one(x)
    longest = max(longest, time.perf_counter() - now)
    calls += 1
  return calls / seconds, longest * 1e3


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seconds", type=float, default=2.0)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--flat", action="store_true", help="one array per tree instead of one per parameter")
  parser.add_argument("--switch_interval", type=float, default=None, help="seconds, for sys.setswitchinterval")
  args = parser.parse_args()
  if args.switch_interval is not None:
    sys.setswitchinterval(args.switch_interval)
  rng = np.random.default_rng(0)
  if args.flat:
    params = {"all": jnp.asarray(rng.standard_normal(sum(SIZES), np.float32))}
  else:
    params = {f"p{i}": jnp.asarray(rng.standard_normal(n, np.float32)) for i, n in enumerate(SIZES)}
  state = {"params": params, "mu": jax.tree.map(jnp.copy, params), "nu": jax.tree.map(jnp.copy, params)}
  print(f"state: {sum(x.nbytes for x in jax.tree.leaves(state)) / 1e9:.2f} GB in {len(jax.tree.leaves(state))} "
        f"arrays; {os.cpu_count()} CPUs; switch interval {sys.getswitchinterval() * 1e3:g} ms")
  idle, saving = [], []
  with tempfile.TemporaryDirectory() as directory:
    ckpts = StageCheckpoints(directory, keep_latest=1)
    try:
      for step in range(1, args.rounds + 1):
        idle.append(dispatch(args.seconds))
        started = time.perf_counter()
        ckpts.save_latest(step, state, {})
        handed_over = time.perf_counter() - started
        saving.append(dispatch(args.seconds))
        ckpts.wait()
        print(f"round {step}: save handed over in {handed_over * 1e3:.1f} ms, written after "
              f"{time.perf_counter() - started:.1f} s")
    finally:
      ckpts.close()
  for name, runs in (("idle", idle), ("during a save", saving)):
    rates, longest = zip(*runs)
    print(f"{name:>14}: {np.median(rates):,.0f} calls/s (median of {len(runs)}), longest call "
          f"{np.median(longest):.1f} ms (median)")
  print(f"rate during a save / idle: {np.median([s[0] / i[0] for s, i in zip(saving, idle)]):.2f}")


if __name__ == "__main__":
  main()
