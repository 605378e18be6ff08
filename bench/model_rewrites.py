"""The model's CPU rewrites against what they replaced, interleaved in one process.

  python bench/model_rewrites.py --model RUN_OR_EXPORT [--lengths 40,80] [--rounds 10] [--json FILE]

Versions of the model (bench/step_variants.py's variants; `a+b` is both at once):
- model: as it is;
- tokens_major_attention: the attention contractions on [B, L, heads, d] operands, as before 2026-11-27;
- erfc_gelu: the exact GELU through erfc (`jax.nn.gelu(approximate=False)`), as before 2026-11-27;
- tokens_major_attention+erfc_gelu: the model before both.
Two workloads, each compiled once per version and then timed in turns (`--rounds`), medians kept:
- the two-stage inference function of `Predictor` (the export's MiniLM encoders), batch 64 at each length;
- the MiniLM train step of bench_train.py (both stages, batch 32, length 64).
Each version's figure is its median over the model's: above 1, the model is faster. The script also checks that
every version's inference gives the model's relations and spans.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import jax  # noqa: E402
import numpy as np  # noqa: E402
from step_builders import SHAPES, bert_config, jax_runner  # noqa: E402
from step_variants import patched  # noqa: E402

from herberta_jax.hub.format import export_directory  # noqa: E402
from herberta_jax.inference.predictor import Predictor, load_export  # noqa: E402

VERSIONS = ("model", "tokens_major_attention", "erfc_gelu", "tokens_major_attention+erfc_gelu")


@contextlib.contextmanager
def version(name: str):
  """The model changed as version `name` says, for what is traced inside."""
  with contextlib.ExitStack() as stack:
    for variant in name.split("+"):
      stack.enter_context(patched("baseline" if variant == "model" else variant))
    yield


def inference_calls(export: pathlib.Path, length: int) -> dict:
  """Per version, (a call of its compiled two-stage function on one batch of 64 sentences of `length` tokens, the
  call's output)."""
  loaded = load_export(export)
  rng = np.random.default_rng(0)
  ids = rng.integers(1000, loaded.tokenizer.vocab_size, (64, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[::3, length - length // 5:] = 0  # a third of the rows shorter, as in a sorted batch
  ids[:, 0], ids[np.arange(64), mask.sum(1) - 1] = loaded.meta["cls_id"], loaded.meta["sep_id"]
  calls = {}
  for name in VERSIONS:
    predictor = Predictor(loaded.relation, loaded.tagger, loaded.meta, loaded.tokenizer, batch_size=64, top_k=1,
                          top_m=1, disjoint_entities=False, ordered_entities=False)
    batch = jax.device_put((ids, mask), predictor.batch_sharding)
    call = (lambda p=predictor, b=batch: jax.block_until_ready(p.fn(p.relation_params, p.tagger_params, *b)))
    with version(name):  # traced and compiled here
      calls[name] = (call, call())
  return calls


def train_calls(stage: str) -> dict:
  calls = {}
  for name in VERSIONS:
    with version(name):
      runner = jax_runner(stage, bert_config(SHAPES["minilm"]), 32, 64)
      runner.run()
      runner.sync()
    calls[name] = ((lambda r=runner: (r.run(), r.sync())), None)
  return calls


def interleaved(calls: dict, rounds: int) -> dict:
  seconds = {name: [] for name in calls}
  for _ in range(rounds):
    for name, (call, _) in calls.items():
      start = time.perf_counter()
      call()
      seconds[name].append(time.perf_counter() - start)
  medians = {name: statistics.median(s) for name, s in seconds.items()}
  return {"median_seconds": {k: round(v, 4) for k, v in medians.items()},
          "over_model": {k: round(v / medians["model"], 3) for k, v in medians.items() if k != "model"}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, type=pathlib.Path, help="training workdir or export directory")
  parser.add_argument("--lengths", default="40,80", help="inference batch lengths")
  parser.add_argument("--rounds", type=int, default=10)
  parser.add_argument("--no_train", action="store_true", help="time the inference function only")
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "date": time.strftime("%Y-%m-%d %H:%M"),
            "jax": jax.__version__, "rounds": args.rounds, "inference": {}, "train_step": {}}
  for length in map(int, args.lengths.split(",")):
    calls = inference_calls(export_directory(args.model), length)
    model_out = calls["model"][1]
    same = all(np.array_equal(out[key], model_out[key]) for _, out in calls.values()
               for key in ("relation", "e1_start", "e1_end", "e2_start", "e2_end"))
    result["inference"][f"batch 64, length {length}"] = {**interleaved(calls, args.rounds), "same_outputs": same}
    print(json.dumps(result["inference"]), flush=True)
  if not args.no_train:
    for stage in ("relation", "tagger"):
      result["train_step"][f"minilm {stage}, batch 32, length 64"] = interleaved(train_calls(stage), args.rounds)
      print(json.dumps(result["train_step"]), flush=True)
  print(json.dumps(result, indent=2))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
