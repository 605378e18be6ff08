"""A tiny run of both stages, end to end: metrics, report and export, then the predict and evaluate CLIs on it
and the README's PyTorch one-liner on its export."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from tiny_run import REPO, tiny_config, tiny_pretrained_config

from herberta_jax import run as run_lib
from herberta_jax.data import smiler
from herberta_jax.inference.predictor import Predictor

pytestmark = pytest.mark.slow  # trains a tiny pipeline and runs the CLIs in subprocesses

SENTENCES = [
    "Anna Weber wurde in Hamburg geboren.",
    "The novel Silent Harbor was written by Clara Hughes.",
    "새별제약은 최현우를 새 회장으로 선임했다.",
    "Marie Curie was born in Warsaw.",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("e2e")
  config = tiny_config()
  config.tagger.num_epochs = 2
  # The export carries these to predict and evaluate; the run's own test evaluation decodes with them too.
  config.infer.update(max_span_len=12, disjoint_entities=True, ordered_entities=True, top_k=2)
  metrics = run_lib.train_and_evaluate(config, workdir)
  return workdir, metrics


def cli(module: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
  result = subprocess.run([sys.executable, "-m", f"herberta_jax.{module}", *args], cwd=REPO, input=stdin,
                          capture_output=True)
  assert result.returncode == 0, result.stderr.decode()[-3000:]
  return result


def test_run_writes_metrics_report_and_export(run):
  workdir, metrics = run
  written = json.loads((workdir / "metrics.json").read_text())
  for name in ("relation", "entity1", "entity2", "entity_pair", "combined"):
    assert set(written[name]) >= {"precision", "recall", "f1"}
    assert written[name]["f1"] == pytest.approx(metrics[name]["f1"])
  for name in ("metrics.json", "predictions.jsonl", "report.md", "f1_per_language.png", "f1_heatmap.png",
               "entity1_vs_entity2.png"):
    assert (workdir / "report" / name).stat().st_size > 0
  for name in ("herberta.json", "relation/config.json", "relation/model.safetensors", "tagger/config.json",
               "tagger/model.safetensors", "tagger/tokenizer.json"):
    assert (workdir / "export" / name).exists()
  meta = json.loads((workdir / "export" / "herberta.json").read_text())
  assert meta["decoding"] == {"max_span_len": 12, "disjoint_entities": True, "ordered_entities": True, "top_k": 2,
                              "top_m": 1}
  predictor = Predictor.from_export(workdir / "export")
  assert (predictor.max_span_len, predictor.disjoint_entities, predictor.ordered_entities, predictor.top_k) == \
      (12, True, True, 2)
  overridden = Predictor.from_export(workdir / "export", max_span_len=5, disjoint_entities=False,
                                     ordered_entities=False, top_k=1)
  assert (overridden.max_span_len, overridden.disjoint_entities, overridden.ordered_entities, overridden.top_k) == \
      (5, False, False, 1)
  # The run's predictions are the best of two relations each, by joint probability.
  predictions = [json.loads(line) for line in (workdir / "report" / "predictions.jsonl").read_text().splitlines()]
  assert all(len(p["pred"]["nbest"]) == 2 for p in predictions)
  assert all(p["pred"]["label"] == p["pred"]["nbest"][0]["relation"] for p in predictions)


def test_predict_keeps_output_aligned_with_input_and_reports_bad_lines(run, tmp_path):
  workdir, _ = run
  lines = [SENTENCES[0].encode(), b"", b"x" * 300, b"caf\xe9 \xff broken", SENTENCES[1].encode()]
  (tmp_path / "in.txt").write_bytes(b"\n".join(lines) + b"\n")
  cli("predict", "--model", str(workdir), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "out"),
      "--top_k", "2", "--top_m", "2", "--max_chars", "200")
  out = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
  assert len(out) == len(lines)
  assert "empty" in out[1]["error"] and "max_chars" in out[2]["error"] and "UTF-8" in out[3]["error"]
  for record, sentence in ((out[0], SENTENCES[0]), (out[4], SENTENCES[1])):
    assert record["text"] == sentence
    assert len(record["nbest"]) == 4  # top 2 relations x top 2 entity pairs
    scores = [n["score"] for n in record["nbest"]]
    assert scores == sorted(scores, reverse=True)
    for entity in ("e1", "e2"):
      best = record["nbest"][0][entity]
      assert sentence[best["start"]:best["end"]] == best["text"]
    assert smiler.TAG.sub("", record["tagged"]) == sentence


def test_predict_reads_tsv_and_jsonl_from_stdin(run):
  workdir, _ = run
  tsv = (b"id\tentity_1\tentity_2\tlabel\ttext\tlang\n"
         b"1\tMarie Curie\tWarsaw\tbirth-place\t<e1>Marie Curie</e1> was born in <e2>Warsaw</e2>.\ten\n")
  from_tsv = cli("predict", "--model", str(workdir), stdin=tsv).stdout.decode().splitlines()
  jsonl = (json.dumps({"text": SENTENCES[3]}) + "\n" + json.dumps({"txt": "no text field"}) + "\n").encode()
  from_jsonl = cli("predict", "--model", str(workdir), stdin=jsonl).stdout.decode().splitlines()
  assert len(from_tsv) == 1 and json.loads(from_tsv[0])["text"] == SENTENCES[3]  # tags stripped
  assert len(json.loads(from_tsv[0])["nbest"]) == 2  # the run's top_k
  assert json.loads(from_jsonl[0])["relation"] == json.loads(from_tsv[0])["relation"]
  assert "text" in json.loads(from_jsonl[1])["error"]


def test_evaluate_on_the_test_files_reproduces_the_runs_metrics(run, tmp_path):
  workdir, metrics = run
  test_files = sorted(str(p) for p in (workdir / "demo_corpus").glob("*_test.tsv"))
  cli("evaluate", "--model", str(workdir / "export"), "--out", str(tmp_path / "report"),
      *[f"--input={f}" for f in test_files])
  evaluated = json.loads((tmp_path / "report" / "metrics.json").read_text())
  for name in ("relation", "entity1", "entity2", "combined"):
    assert evaluated[name]["f1"] == pytest.approx(metrics[name]["f1"], abs=1e-9)
  assert (tmp_path / "report" / "predictions.jsonl").exists()


def test_evaluate_reads_the_prepared_dev_and_test_splits_of_a_workdir(run, tmp_path):
  workdir, metrics = run
  manifest = json.loads((workdir / "data" / "manifest.json").read_text())
  for split in ("dev", "test"):
    cli("evaluate", "--model", str(workdir), "--split", split, "--out", str(tmp_path / split))
    evaluated = json.loads((tmp_path / split / "metrics.json").read_text())
    assert evaluated["count"] == sum(info["count"] for info in manifest["splits"][split].values())
    assert (tmp_path / split / "f1_vs_train_size.png").exists()  # a workdir knows its training-set sizes
  assert evaluated["combined"]["f1"] == pytest.approx(metrics["combined"]["f1"], abs=1e-9)
  both = subprocess.run([sys.executable, "-m", "herberta_jax.evaluate", "--model", str(workdir), "--split", "dev",
                         "--input", "x.tsv", "--out", str(tmp_path / "both")], cwd=REPO, capture_output=True)
  assert both.returncode != 0 and b"either --input or --split" in both.stderr


def readme_snippet() -> str:
  """The README's example of the export with PyTorch alone: its Python block that builds the pipeline."""
  blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
  return next(block for block in blocks if "from transformers import pipeline" in block)


def test_readme_pytorch_snippet_matches_the_jax_pipeline(run, capsys):
  workdir, _ = run
  code = readme_snippet().replace('"runs/demo/export"', repr(str(workdir / "export")))
  assert repr(str(workdir / "export")) in code
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
  assert capsys.readouterr().out.strip().startswith("{'relation':")
  # The pipeline decodes with the run's settings, as the predictor does (tests/test_hf_pipeline.py checks more).
  predictor = Predictor.from_export(workdir / "export", batch_size=4)
  for encoded, jax_result in predictor.run(predictor.encode(SENTENCES)):
    torch_result = namespace["extract"](encoded.text)
    assert torch_result["relation"] == jax_result["relation"]
    for entity in ("e1", "e2"):  # the span exactly; its probability as float32 arithmetic allows
      got, expected = dict(torch_result[entity]), dict(jax_result[entity])
      assert got.pop("score") == pytest.approx(expected.pop("score"), rel=1e-4)
      assert got == expected
  assert np.isfinite(predictor.meta["max_seq_len"])


def test_export_and_evaluate_need_only_the_workdir_not_the_pretrained_checkpoint(tmp_path):
  """A run fine-tuned from a local checkpoint, which is then moved away: re-export and evaluation still work."""
  pretrained = tmp_path / "pretrained"
  config = tiny_pretrained_config(pretrained)
  workdir = tmp_path / "run"
  run_lib.train_and_evaluate(config, workdir)
  pretrained.rename(tmp_path / "moved_away")
  cli("export", "--workdir", str(workdir), "--out", str(tmp_path / "export"))
  assert json.loads((tmp_path / "export" / "herberta.json").read_text()) == json.loads(
      (workdir / "export" / "herberta.json").read_text())
  cli("evaluate", "--model", str(workdir), "--split", "test", "--out", str(tmp_path / "report"), "--batch_size", "8")
  assert json.loads((tmp_path / "report" / "metrics.json").read_text())["combined"]["gold"] > 0
