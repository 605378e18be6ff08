"""bench/step_variants.py: its variants compute the step they claim to, its profile summary adds up, and its smoke
run works (it gets one try on a GPU machine)."""

import gzip
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "step_variants.py"


def _load():
  spec = importlib.util.spec_from_file_location("step_variants", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # its flax modules are dataclasses, which look their module up there
  spec.loader.exec_module(module)
  return module


def test_rewritten_variants_compute_the_same_loss_and_gradients():
  variants = _load()
  from herberta_jax.model.bert import BertConfig
  from herberta_jax.model.heads import RelationClassifier

  config = BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32)
  ids = jnp.asarray(np.random.default_rng(0).integers(1, 50, size=(3, 7)), jnp.int32)
  mask = jnp.ones_like(ids).at[0, 5:].set(0)

  def loss_and_grads(name):
    with variants.patched(name):
      model = RelationClassifier(config, num_labels=4)
      params = model.init(jax.random.PRNGKey(0), ids, mask)["params"]
      loss = lambda p: jnp.sum(model.apply({"params": p}, ids, mask, deterministic=True) ** 2)
      value, grads = jax.value_and_grad(loss)(params)
      return value, grads, variants.optax.tree.norm(grads)

  reference = loss_and_grads("baseline")
  for name in ("tokens_major_attention", "erfc_gelu", "recomputed_gelu", "stacked_grad_norm", "scanned_layers"):
    value, grads, norm = loss_and_grads(name)
    assert jax.tree.structure(grads) == jax.tree.structure(reference[1]), name  # same parameters, same names
    np.testing.assert_allclose(value, reference[0], rtol=1e-6)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(reference[1])):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(norm, reference[2], rtol=1e-6)
  # The tagger runs every layer in the scan (the relation classifier above runs its last one apart).
  from herberta_jax.model.heads import EntityTagger
  tagged = []
  for name in ("baseline", "scanned_layers"):
    with variants.patched(name):
      tagger = EntityTagger(config)
      params = tagger.init(jax.random.PRNGKey(0), ids, mask, jnp.zeros_like(ids), mask)["params"]
      tagged.append(tagger.apply({"params": params}, ids, mask, jnp.zeros_like(ids), mask))
  np.testing.assert_allclose(tagged[1], tagged[0], rtol=1e-5, atol=1e-6)
  assert variants.optax.tree.norm is not variants.stacked_norm  # the patches are undone
  assert variants.bert._Layers is not variants.ScannedLayers


def test_model_rewrites_versions_undo_the_rewrites_together_and_restore_them():
  spec = importlib.util.spec_from_file_location("model_rewrites", REPO / "bench" / "model_rewrites.py")
  rewrites = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(rewrites)
  from herberta_jax.model import bert

  model_attention, model_gelu = bert.SelfAttention, bert._ACTIVATIONS["gelu"]
  with rewrites.version("tokens_major_attention+erfc_gelu"):
    assert bert.SelfAttention.__name__ == "TokensMajorSelfAttention"
    assert bert._ACTIVATIONS["gelu"].func is jax.nn.gelu
  with rewrites.version("model"):
    assert (bert.SelfAttention, bert._ACTIVATIONS["gelu"]) == (model_attention, model_gelu)
  assert (bert.SelfAttention, bert._ACTIVATIONS["gelu"]) == (model_attention, model_gelu)


def test_device_time_adds_kernels_up_per_step_and_names_their_ops(tmp_path):
  variants = _load()
  events = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
            {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}}]
  for _ in range(3):  # three steps
    events += [{"ph": "X", "pid": 1, "name": "loop_gelu_fusion_3", "dur": 400.0},
               {"ph": "X", "pid": 1, "name": "loop_gelu_fusion_3", "dur": 200.0},  # a second layer's call
               {"ph": "X", "pid": 1, "name": "nvjet_sm90_tst_128x128", "dur": 900.0},
               {"ph": "X", "pid": 2, "name": "host work", "dur": 5000.0}]
  trace = tmp_path / "t.trace.json.gz"
  with gzip.open(trace, "wt") as f:
    json.dump({"traceEvents": events}, f)
  hlo = tmp_path / "step.txt"
  hlo.write_text(
      '  %loop_gelu_fusion.9 = bf16[8,4]{1,0} fusion(%p), kind=kLoop, calls=%c, metadata={op_name='
      '"jit(step)/while/body/eval_jaxpr/jvp(M)/encoder/layer_11/intermediate/mul" '
      'deduplicated_name="loop_gelu_fusion.3"}\n')
  profile = variants.device_time(trace, 3, hlo)
  assert profile["device_ms_per_step"] == pytest.approx(1.5)  # host events left out
  assert {row["name"]: row["ms_per_step"] for row in profile["by_kind"]} == pytest.approx(
      {"matmul": 0.9, "other": 0.6})
  by_op = {row["name"]: row["ms_per_step"] for row in profile["by_op"]}
  assert by_op["jvp(M)/encoder/layer_N/intermediate/mul"] == pytest.approx(0.6)
  assert by_op["(kernel) nvjet_sm90_tst_128x128"] == pytest.approx(0.9)
  kernel = next(row for row in profile["by_kernel"] if row["name"] == "loop_gelu_fusion_3")
  assert kernel["calls_per_step"] == 2


def test_combine_picks_the_flags_faster_than_the_baseline_by_the_margin_fastest_first():
  variants = _load()
  timed = {"baseline": {"seconds_per_step": 0.100},
           "xla:--a=true": {"seconds_per_step": 0.095}, "xla:--b=true": {"seconds_per_step": 0.098},
           "xla:--c=true": {"seconds_per_step": 0.0995}, "xla:--d=true": {"error": "Unknown flag"},
           "scanned_layers": {"seconds_per_step": 0.050}}
  assert variants.faster_flags(timed, 0.01) == ["--a=true", "--b=true"]
  assert variants.faster_flags(timed, 0.0) == ["--a=true", "--b=true", "--c=true"]
  assert variants.faster_flags({"xla:--a=true": {"seconds_per_step": 0.01}}, 0.0) == []  # no baseline, no pick


def test_variants_past_the_budget_are_skipped_and_recorded(tmp_path):
  variants = _load()
  out = tmp_path / "v.json"
  assert variants.main(["--smoke", "--json", str(out), "--variants", "baseline,no_dropout", "--budget_s", "0.5"]) == 0
  report = json.loads(out.read_text())
  assert report["variants"]["baseline"]["seconds_per_step"] > 0  # started at once; compiling takes over 0.5 s
  assert report["variants"]["no_dropout"] == {"skipped": "past --budget_s 0.5"}


@pytest.mark.slow
def test_smoke_run_times_every_variant(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  names = "baseline,no_dropout,fused_attention,recomputed_gelu,stacked_grad_norm,xla:--xla_backend_optimization_level=1"
  run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", str(tmp_path / "v.json"), "--variants",
                        names, "--profile_dir", str(tmp_path / "profile"), "--hlo_dump", str(tmp_path / "hlo")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  report = json.loads((tmp_path / "v.json").read_text())
  assert list(report["variants"]) == names.split(",")
  for name, result in report["variants"].items():
    assert result.get("seconds_per_step", 0) > 0, (name, result)
  assert "error" not in report["profile"], report["profile"]
