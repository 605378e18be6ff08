"""How much a background checkpoint save slows the thread that dispatches the train steps.

  python bench/bench_save_dispatch.py [--seconds 2] [--rounds 3] [--flat] [--switch_interval S] [--work host_copy]

Builds a BERT-base-sized train state (parameters and two Adam moments, 1.47 GB in float32), then counts calls of a
tiny jitted function from the main thread for `--seconds`: once idle, once while `StageCheckpoints.save_latest`
writes a fresh device copy of the state from its background thread (a copy per round, as the loop saves a new
snapshot each time: an array copied to the host once keeps that copy). Rounds alternate the two, so a load change
hits both alike. The loop's steps are dispatched the same way, so a lower rate or long stalls here are what a save
costs a loop whose device outruns the host. `--work host_copy` runs only the save's first part in that thread:
each array's copy to the host started (`copy_to_host_async`), then each read as a numpy array, as orbax does.
`--flat` saves the same bytes as three arrays (one per tree) instead of 591: what orbax's work per array costs.
`--switch_interval` sets `sys.setswitchinterval` (Python's default: 0.005 s): how long a thread waiting for the
GIL lets the holder run before asking for it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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


def host_copy(state) -> list[np.ndarray]:
  """What orbax's save does first, in its caller's thread: every array's copy to the host started, then each read."""
  leaves = jax.tree.leaves(state)
  for leaf in leaves:
    leaf.copy_to_host_async()
  return [np.asarray(leaf) for leaf in leaves]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seconds", type=float, default=2.0)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--flat", action="store_true", help="one array per tree instead of one per parameter")
  parser.add_argument("--switch_interval", type=float, default=None, help="seconds, for sys.setswitchinterval")
  parser.add_argument("--work", choices=("save", "host_copy"), default="save",
                      help="what the background thread does: the checkpoint save, or its copy to the host alone")
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
  copier = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  with tempfile.TemporaryDirectory() as directory:
    ckpts = StageCheckpoints(directory, keep_latest=1)
    try:
      for step in range(1, args.rounds + 1):
        idle.append(dispatch(args.seconds))
        fresh = jax.block_until_ready(jax.tree.map(jnp.copy, state))
        started = time.perf_counter()
        if args.work == "save":
          ckpts.save_latest(step, fresh, {})
          done = ckpts.wait
        else:
          done = copier.submit(host_copy, fresh).result
        handed_over = time.perf_counter() - started
        saving.append(dispatch(args.seconds))
        done()
        print(f"round {step}: {args.work} handed over in {handed_over * 1e3:.1f} ms, done after "
              f"{time.perf_counter() - started:.1f} s")
        del fresh
    finally:
      ckpts.close()
      copier.shutdown()
  for name, runs in (("idle", idle), (f"during {args.work}", saving)):
    rates, longest = zip(*runs)
    print(f"{name:>14}: {np.median(rates):,.0f} calls/s (median of {len(runs)}), longest call "
          f"{np.median(longest):.1f} ms (median)")
  print(f"rate during {args.work} / idle: {np.median([s[0] / i[0] for s, i in zip(saving, idle)]):.2f}")


if __name__ == "__main__":
  main()
