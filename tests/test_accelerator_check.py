"""bench/accelerator_check.py --smoke runs every part (bench/accelerator_parts.py) without an error and reports positive, finite figures.

The script gets one try on a GPU machine, so its plumbing is proved here first, at tiny shapes on the CPU.
"""

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # runs the whole accelerator check at tiny shapes

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "accelerator_check.py"


def _numbers(tree, path=""):
  """(path, value) of every number in a JSON tree (booleans left out)."""
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _numbers(value, f"{path}.{key}")
  elif isinstance(tree, list):
    for i, value in enumerate(tree):
      yield from _numbers(value, f"{path}[{i}]")
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    yield path, tree


def _errors(tree, path=""):
  if isinstance(tree, dict):
    for key, value in tree.items():
      if key in ("error", "skipped") and value:
        yield f"{path}.{key}: {value}"
      yield from _errors(value, f"{path}.{key}")
  elif isinstance(tree, list):
    for i, value in enumerate(tree):
      yield from _errors(value, f"{path}[{i}]")


def test_smoke_run_reports_every_part(tmp_path):
  report_path = tmp_path / "check.json"
  # One CPU device, as the GPU box has one GPU (conftest simulates four for the data-parallel tests).
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", str(report_path), "--workdir",
                        str(tmp_path / "work")], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  report = json.loads(report_path.read_text())
  parts = report["parts"]
  assert set(parts) == {"train_step", "variants", "loop", "inference", "numerics"}
  assert not list(_errors(report)), list(_errors(report))
  for name, entry in parts.items():
    assert entry["status"] == "ok", (name, entry)
    assert entry["device_kind"] and entry["jax"] and entry["torch"] and entry["date"], entry
  bad = [(p, v) for p, v in _numbers(report) if not math.isfinite(v)]
  assert not bad, bad

  key_figures = []
  for row in parts["train_step"]["rows"]:
    key_figures += [row["jax"]["seconds_per_step"], row["torch"]["seconds_per_step"], row["jax_speedup_over_torch"],
                    row["jax"]["mfu_vs_measured_matmul"], row["jax_kernels"]["seconds_per_step"],
                    row["kernels_speedup"], row["jax_kernels_speedup_over_torch"]]
    assert row["jax_kernels"]["kernels"] == "all"
  variants = parts["variants"]["rows"]
  # Each variant ran in its own process and timed both stages: the baseline, an XLA flag, one kernel.
  assert [row["variant"] for row in variants] == ["baseline", "xla:--xla_backend_optimization_level=1",
                                                  "kernels:attention"]
  for row in variants:
    key_figures += [row["relation"]["seconds_per_step"], row["tagger"]["seconds_per_step"]]
  key_figures += [row["speedup_over_baseline"] for row in variants[1:]]
  loop = parts["loop"]
  key_figures += [loop["loop_steps_per_second"], loop["bare_steps_per_second"], loop["loop_over_bare"],
                  loop["warm"]["summary"]["seconds_after_first_step"]]
  for row in parts["inference"]["rows"]:
    key_figures += [row["jax"]["sentences_per_second"], row["torch"]["sentences_per_second"],
                    row["jax_kernels"]["sentences_per_second"]]
    # Off a GPU the kernels run as their references: the same triples as the plain model's, up to a near tie that
    # float rounding (another summation order) may flip in a random model.
    same, same_kernels = (int(row[key].split("/")[0]) for key in ("same_triples", "same_triples_kernels"))
    assert same_kernels >= same - 1, row
  curves = parts["numerics"]["loss_curves"]
  key_figures += curves["loss_float32"] + curves["loss_bfloat16"]
  assert all(x > 0 for x in key_figures), key_figures
  assert len(curves["loss_float32"]) == len(curves["loss_bfloat16"]) == len(curves["recorded_steps"]) > 1
  assert curves["max_abs_diff"] < 0.1, curves
  for stage in ("relation", "tagger"):
    assert parts["numerics"]["parity"][stage]["within_tolerance"], parts["numerics"]["parity"]
  assert loop["cold"]["summary"]["steps_run"] == loop["warm"]["summary"]["steps_run"] >= 5
  # The warm run reads its programs from the persistent cache the cold one filled.
  assert loop["warm"]["summary"]["seconds_to_first_step"] < loop["cold"]["summary"]["seconds_to_first_step"]


def test_synthetic_sentences_follow_semeval_word_counts():
  spec = importlib.util.spec_from_file_location("accelerator_check", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  parts = module.parts  # the script's parts live in bench/accelerator_parts.py
  sentences = parts.synthesise_sentences()
  assert len(sentences) == sum(parts.SEMEVAL_TEST_WORDS.values()) == 2717
  counts = sorted(len(s.split()) for s in sentences)
  assert counts == sorted(n for n, c in parts.SEMEVAL_TEST_WORDS.items() for _ in range(c))
  assert "<e1>" not in "".join(sentences)
