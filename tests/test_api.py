"""The Python API (`herberta_jax.load` -> `Model.extract`) and the quiet CLIs: predict's stderr is its progress bar and
one summary line, and --verbosity or HERBERTA_VERBOSITY brings the libraries' logs back."""

import json
import os
import re
import subprocess
import sys

import pytest
from tiny_run import REPO, tiny_config

import herberta_jax
from herberta_jax import api, console

SENTENCES = ["Marie Curie was born in Warsaw.", "Anna Weber wurde in Hamburg geboren.",
             "The novel Silent Harbor was written by Clara Hughes."]
# predict as a user runs it on a fresh clone: transformers without PyTorch (whose import-time advice must not
# show), JAX free to look for a TPU (whose absence it reports at INFO).
PREDICT_WITHOUT_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.argv[0] = 'predict'; "
                         "runpy.run_module('herberta_jax.predict', run_name='__main__')")


def user_env(**extra: str) -> dict:
  env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **extra}
  for name in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL", "HERBERTA_DEBUG", *(() if "HERBERTA_VERBOSITY" in extra
                                                                           else ("HERBERTA_VERBOSITY",))):
    if name not in extra:
      env.pop(name, None)
  return env


def test_importing_the_package_imports_neither_jax_nor_transformers():
  code = ("import sys, herberta_jax; herberta_jax.Extraction, herberta_jax.Model; "
          "print(sorted(m for m in ('jax', 'transformers', 'flax', 'torch') if m in sys.modules))")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=user_env(), capture_output=True, text=True)
  assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_extraction_is_predicts_json_line_as_typed_data():
  entity = lambda text, start, score: {"text": text, "start": start, "end": start + len(text), "score": score}
  best = {"relation": "birth-place", "relation_score": 0.9, "score": 0.9 * 0.8 * 0.7,
          "e1": entity("Marie Curie", 0, 0.8), "e2": entity("Warsaw", 24, 0.7)}
  prediction = {"relation": "birth-place", "score": 0.9, "e1": best["e1"], "e2": best["e2"],
                "tagged": "<e1>Marie Curie</e1> was born in <e2>Warsaw</e2>.", "nbest": [best]}
  result = api.Extraction.from_prediction(SENTENCES[0], prediction, truncated_at=None)
  assert result.e1 == api.Entity("Marie Curie", 0, 11, 0.8) and result.nbest[0].e2.text == "Warsaw"
  assert result.to_dict() == {"text": SENTENCES[0], **prediction}
  cut = api.Extraction.from_prediction(SENTENCES[0], prediction, truncated_at=20).to_dict()
  assert (cut["truncated"], cut["truncated_at"]) == (True, 20)
  failed = api.Extraction.from_prediction("", {"error": "line 2: empty sentence"})
  assert failed.error and failed.relation is None and failed.to_dict() == {"error": "line 2: empty sentence"}


@pytest.mark.parametrize("count, seconds, shown", [(1, 1.83, "0.546"), (3, 0.25, "12"), (2717, 22.12, "123"),
                                                   (12274.4, 1.0, "12,274"), (0, 1.0, "0")])
def test_rates_have_three_significant_digits(count, seconds, shown):
  assert console.rate(count, seconds) == shown


def test_the_progress_bar_shows_no_eta_until_a_step_after_the_first(capsys):
  with console.Progress(100, desc="relation", unit="step") as bar:
    bar.first_done()
    assert (bar.n, bar.initial) == (1, 1) and "<?" in str(bar)  # no ETA from the compiling step
    bar.update(1)
    assert "<?" not in str(bar)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  from herberta_jax import run as run_lib
  workdir = tmp_path_factory.mktemp("api")
  run_lib.train_and_evaluate(tiny_config(), workdir)
  return workdir


@pytest.fixture(scope="module")
def three_lines(tmp_path_factory):
  path = tmp_path_factory.mktemp("three") / "three.txt"
  path.write_text("".join(s + "\n" for s in SENTENCES), encoding="utf-8")
  return path


@pytest.mark.slow
def test_extract_gives_what_predict_writes_and_predict_prints_a_bar_and_one_line(workdir, three_lines, tmp_path):
  out = tmp_path / "out.jsonl"
  proc = subprocess.run([sys.executable, "-c", PREDICT_WITHOUT_TORCH, "--model", str(workdir), "--input",
                         str(three_lines), "--out", str(out), "--top_k", "2", "--top_m", "2"], cwd=REPO,
                        env=user_env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # stderr: progress-bar frames (each starting "\r", the last ending the line) and the one summary line.
  lines = [part for line in proc.stderr.split("\n") for part in line.split("\r") if part.strip()]
  others = [line for line in lines if not line.startswith("predict: ")]
  assert len(others) == 1, proc.stderr
  assert re.fullmatch(r"predicted 3 sentences \(0 errors\) in \d+\.\d\d s: [\d.,]+ sentences/s, first line after "
                      r"\d+\.\d\d s, real-token share 0\.\d{3}, on 4 CPU devices", others[0]), others[0]
  assert re.search(r"predict: 100%\|.*\| 3/3 ", proc.stderr)
  for unwanted in ("traceback", "tpu", "pytorch was not found", "warning"):
    assert unwanted not in proc.stderr.lower()

  model = herberta_jax.load(workdir)
  assert model.path == workdir / "export" and "no_relation" in model.labels
  results = model.extract(SENTENCES, top_k=2, top_m=2)
  written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
  assert [r.to_dict() for r in results] == written
  for result, sentence in zip(results, SENTENCES):
    assert isinstance(result, herberta_jax.Extraction) and result.text == sentence and len(result.nbest) == 4
    for entity in (result.e1, result.e2):
      assert sentence[entity.start:entity.end] == entity.text and 0 < entity.score <= 1
    best = result.nbest[0]
    assert best.score == pytest.approx(best.relation_score * best.e1.score * best.e2.score, rel=1e-4)
  # One sentence, the load-time defaults (top 1), an empty sentence: typed answers, nothing raised.
  single = model.extract(SENTENCES[0])
  assert single.relation == results[0].relation and len(single.nbest) == 1
  empty, _ = model.extract(["", SENTENCES[1]])
  assert "empty" in empty.error and empty.relation is None


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "env"])
def test_verbosity_brings_the_library_logs_back(workdir, three_lines, tmp_path, how):
  args = ["--verbosity", "0"] if how == "flag" else []
  env = user_env(**({"HERBERTA_VERBOSITY": "0"} if how == "env" else {}))
  proc = subprocess.run([sys.executable, "-m", "herberta_jax.predict", "--model", str(workdir / "export"),
                         "--input", str(three_lines), "--out", str(tmp_path / "out.jsonl"), *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert re.search(r"^I\d{4} [\d:.]+ +\d+ \S+:\d+\] ", proc.stderr, re.M), proc.stderr  # absl's INFO format


@pytest.mark.slow
def test_lengths_per_doubling_sets_the_batch_lengths_and_keeps_the_triples(workdir):
  fine, coarse = herberta_jax.load(workdir), herberta_jax.load(workdir, lengths_per_doubling=1)
  assert fine.predictor().boundaries[14:20] == [15, 16, 18, 20, 22, 24]
  assert coarse.predictor().boundaries[:6] == [1, 2, 4, 8, 16, 32]
  triple = lambda r: (r.relation, r.e1.start, r.e1.end, r.e2.start, r.e2.end)
  assert [triple(r) for r in coarse.extract(SENTENCES)] == [triple(r) for r in fine.extract(SENTENCES)]
  assert {length for _, length in coarse.predictor().batch_shapes} <= {1, 2, 4, 8, 16, 32, 64}
  with pytest.raises(ValueError, match="^lengths_per_doubling=0: must be a whole number >= 1"):  # the argument, not the flag
    herberta_jax.load(workdir, lengths_per_doubling=0)


@pytest.mark.slow
@pytest.mark.parametrize("cpu_flag", [None, "1"])
def test_predict_splits_the_cpu_into_one_device_per_core_unless_told(workdir, three_lines, tmp_path, cpu_flag):
  from herberta_jax import cpu_devices
  env = user_env()
  env.pop("XLA_FLAGS", None)  # the tests' four simulated devices would take precedence
  out = tmp_path / "out.jsonl"
  proc = subprocess.run([sys.executable, "-m", "herberta_jax.predict", "--model", str(workdir), "--input",
                         str(three_lines), "--out", str(out), *(["--cpu_devices", cpu_flag] if cpu_flag else [])],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  devices = int(cpu_flag) if cpu_flag else cpu_devices.per_core_count(64)
  assert proc.stderr.rstrip().endswith(f", on {devices} CPU device{'s' * (devices != 1)}"), proc.stderr[-500:]
  written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
  expected = [r.to_dict() for r in herberta_jax.load(workdir).extract(SENTENCES)]  # here: on four devices
  triple = lambda r: (r["relation"], r["e1"]["start"], r["e1"]["end"], r["e2"]["start"], r["e2"]["end"])
  assert [triple(r) for r in written] == [triple(r) for r in expected]
  assert [r["score"] for r in written] == pytest.approx([r["score"] for r in expected], rel=1e-4)
