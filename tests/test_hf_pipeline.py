"""The transformers pipeline shipped in every export (`hub/herberta_pipeline.py`) and the exports' model cards.

The pipeline is a PyTorch copy of the JAX inference: its decoding is checked against `model/decoding.py` here on
random logits (fast), and a fresh export loaded with `transformers.pipeline(..., trust_remote_code=True)` in a
process where JAX cannot be imported must give the JAX predictor's triples (slow: trains a tiny pipeline).
"""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from tiny_run import tiny_config

from herberta_jax import run as run_lib
from herberta_jax.data import smiler
from herberta_jax.hub import card
from herberta_jax.hub import herberta_pipeline as hp
from herberta_jax.inference.predictor import Predictor
from herberta_jax.model import decoding
from herberta_jax.model import inputs as model_inputs

PAIR_KEYS = ("e1_start", "e1_end", "e2_start", "e2_end")


@pytest.mark.parametrize("top_m,max_span_len,disjoint,ordered", [(1, 32, False, False), (3, 4, False, False),
                                                                  (2, 6, True, False), (5, 1, True, False),
                                                                  (1, 32, False, True), (4, 3, False, True)])
def test_torch_span_decoding_equals_jax(top_m, max_span_len, disjoint, ordered):
  rng = np.random.default_rng(top_m * 10 + max_span_len)
  batch, length = 16, 21
  logits = rng.normal(size=(batch, length, 4)).astype(np.float32)
  logits[:3, :, :] = np.round(logits[:3], 1)  # ties: both sides must break them towards the lower index
  lengths = rng.integers(0, length - 3, size=batch)
  mask = (np.arange(length)[None, :] >= 3) & (np.arange(length)[None, :] < 3 + lengths[:, None])
  expected = decoding.best_entity_pairs(jnp.asarray(logits), jnp.asarray(mask), max_span_len=max_span_len,
                                        top_m=top_m, disjoint=disjoint, ordered=ordered)
  got = hp.best_entity_pairs(torch.from_numpy(logits), torch.from_numpy(mask), max_span_len=max_span_len,
                             top_m=top_m, disjoint=disjoint, ordered=ordered)
  for key in PAIR_KEYS:
    np.testing.assert_array_equal(got[key].numpy(), np.asarray(expected[key]), err_msg=key)
  for key in ("score", "e1_score", "e2_score"):
    np.testing.assert_allclose(got[key].numpy(), np.asarray(expected[key]), rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("two_segments", [True, False])
def test_torch_tagger_inputs_equal_jax(two_segments):
  ids = np.array([[2, 10, 11, 12, 3, 0], [2, 13, 3, 0, 0, 0]], np.int32)
  mask = (ids != 0).astype(np.int32)
  relation_tokens = np.array([7, 8], np.int32)
  kwargs = dict(cls_id=2, sep_id=3, pad_id=0, two_segments=two_segments)
  expected = model_inputs.tagger_inputs(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(relation_tokens), **kwargs)
  got = hp.tagger_inputs(torch.from_numpy(ids).long(), torch.from_numpy(mask).long(),
                         torch.from_numpy(relation_tokens).long(), **kwargs)
  for g, e in zip(got, expected):
    np.testing.assert_array_equal(g.long().numpy(), np.asarray(e))


def test_tag_text_equals_jax():
  text = "Marie Curie was born in Warsaw."
  for e1, e2 in [((0, 11), (24, 30)), ((24, 30), (0, 11)), ((0, 11), (5, 15)), ((0, 0), (24, 30))]:
    assert hp.tag_text(text, e1, e2) == decoding.tag_text(text, e1, e2)


# --- a fresh export, end to end (slow) ---

NO_JAX_PIPELINE = r"""
import json, sys
sys.modules["jax"] = None  # `import jax` now fails: the shipped pipeline must need PyTorch and transformers only
from transformers import pipeline
extract = pipeline(model=sys.argv[1], trust_remote_code=True, device="cpu")
sentences = json.load(sys.stdin)
out = {"batched": extract(sentences, batch_size=8, top_k=2, top_m=2),
       "single": extract(sentences[0]),
       "imported": sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "herberta_jax") and sys.modules[m])}
json.dump(out, sys.stdout)
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("hfpipe") / "run"
  config = tiny_config()
  config.tagger.num_epochs = 2
  # The pipeline must take these from the export.
  config.infer.update(max_span_len=12, ordered_entities=True, top_m=2)
  command = ["python", "-m", "herberta_jax.train", "--config", "configs/demo.py", "--workdir", str(workdir)]
  metrics = run_lib.train_and_evaluate(config, workdir, command=command)
  return workdir, metrics, command


def corpus_sentences(workdir) -> list[str]:
  """Every demo sentence of the run (tags stripped), long ones included, plus an empty line."""
  sentences = []
  for path in sorted((workdir / "demo_corpus").glob("*.tsv")):
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
      sentences.append(smiler.TAG.sub("", line.split("\t")[4]))
  return sentences[:240] + [""]


def spans(result: dict) -> tuple:
  return (result["relation"], result["e1"]["start"], result["e1"]["end"], result["e2"]["start"], result["e2"]["end"])


@pytest.mark.slow
def test_pipeline_without_jax_gives_the_jax_predictors_triples(run, tmp_path):
  workdir, _, _ = run
  export = workdir / "export"
  sentences = corpus_sentences(workdir)
  env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "XLA_FLAGS")}
  env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
  result = subprocess.run([sys.executable, "-c", NO_JAX_PIPELINE, str(export)], input=json.dumps(sentences),
                          capture_output=True, text=True, cwd=tmp_path, env=env)  # cwd: herberta_jax not importable
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout)
  assert out["imported"] == []
  torch_results = out["batched"]

  predictor = Predictor.from_export(export, batch_size=8, top_k=2, top_m=2)
  jax_results = [r for _, r in predictor.run(predictor.encode(sentences))]
  assert len(torch_results) == len(jax_results) == len(sentences) > 100
  assert torch_results[-1] == jax_results[-1] == {"error": "empty sentence"}
  truncated = 0
  for sentence, got, expected, encoded in zip(sentences[:-1], torch_results, jax_results, predictor.encode(sentences)):
    assert spans(got) == spans(expected), sentence
    assert [spans(n) for n in got["nbest"]] == [spans(n) for n in expected["nbest"]], sentence
    assert got["tagged"] == expected["tagged"]
    for key in ("score", "relation_score"):
      np.testing.assert_allclose([n[key] for n in got["nbest"]], [n[key] for n in expected["nbest"]], rtol=1e-3)
    for entity in ("e1", "e2"):  # each entity's own score, as predict writes it
      np.testing.assert_allclose([n[entity]["score"] for n in got["nbest"]],
                                 [n[entity]["score"] for n in expected["nbest"]], rtol=1e-3)
    assert got.get("truncated_at") == encoded.truncated_at
    truncated += encoded.truncated_at is not None
  assert truncated > 0  # the demo corpus has sentences longer than the model reads
  assert len({r["relation"] for r in torch_results[:-1] for r in r["nbest"]}) > 1
  single = out["single"]  # the run's decoding: the top relation and its two best pairs
  default = Predictor.from_export(export, batch_size=8)
  [(_, expected)] = default.run(default.encode(sentences[:1]))
  assert len(single["nbest"]) == len(expected["nbest"]) == 2
  assert [spans(n) for n in single["nbest"]] == [spans(n) for n in expected["nbest"]]


@pytest.mark.slow
def test_demo_export_model_cards_parse_and_carry_the_test_metrics(run):
  workdir, metrics, command = run
  written = json.loads((workdir / "metrics.json").read_text())
  manifest = json.loads((workdir / "data" / "manifest.json").read_text())
  for path in ("README.md", "relation/README.md", "tagger/README.md"):
    front, body = card.parse((workdir / "export" / path).read_text(encoding="utf-8"))
    assert front["language"] == sorted(manifest["splits"]["train"]) == ["de", "en", "es", "fr", "it", "ko", "ru"]
    assert front["library_name"] == "transformers" and "relation-extraction" in front["tags"]
    assert "base_model" not in front  # trained from scratch
    assert_model_index_equals(front, written)
    assert " ".join(command) in body and '"demo_sentences_per_language": 60' in body  # command and config
  root, _ = card.parse((workdir / "export" / "README.md").read_text())
  assert "custom_code" in root["tags"] and written["combined"]["f1"] == pytest.approx(metrics["combined"]["f1"])


def assert_model_index_equals(front: dict, metrics: dict) -> None:
  (result,) = front["model-index"][0]["results"]
  assert result["dataset"]["split"] == "test"
  values = {(entry["name"].split(" (")[0]): entry["value"] for entry in result["metrics"]}
  assert len(values) == 15
  for key, label in card.METRICS:
    for kind in ("precision", "recall", "f1"):
      assert values[f"{label} {'F1' if kind == 'f1' else kind}"] == metrics[key][kind]  # exact, not rounded


@pytest.mark.slow
def test_semeval_export_model_card(semeval_dir, tmp_path):
  """A SemEval run (a tiny encoder from scratch, a fraction of an epoch): its card names the dataset on the Hub,
  English, and the test metrics; a re-export writes the same cards."""
  from configs import semeval
  config = semeval.get_config()
  config.data.update(train_files=str(semeval_dir / "train.tsv"), test_files=str(semeval_dir / "test.tsv"),
                     tokenizer="wordpiece", wordpiece_vocab_size=2000)
  config.model.init_from = ""
  config.model.scratch.update(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
  for stage in (config.relation, config.tagger):
    stage.update(batch_size=64, num_epochs=0.25, checkpoint_every_steps=50)
  config.relation.entity_loss_weight = 0.0
  config.infer.batch_size = 64
  workdir = tmp_path / "semeval"
  run_lib.train_and_evaluate(config, workdir, command=["python", "-m", "herberta_jax.train", "--config",
                                                       "configs/semeval.py", "--workdir", str(workdir)])
  metrics = json.loads((workdir / "metrics.json").read_text())
  front, body = card.parse((workdir / "export" / "README.md").read_text())
  assert front["language"] == ["en"] and front["datasets"] == ["SemEvalWorkshop/sem_eval_2010_task_8"]
  assert front["model-index"][0]["name"] == "herberta-semeval2010-minilm"
  assert "base_model" not in front  # this test's encoder is trained from scratch, whatever the config names
  assert_model_index_equals(front, metrics)
  assert "configs/semeval.py" in body and "SemEval-2010 Task 8" in body
  run_lib.export_workdir(workdir, tmp_path / "again")
  for path in ("README.md", "relation/README.md", "tagger/README.md"):
    assert (tmp_path / "again" / path).read_text() == (workdir / "export" / path).read_text()
