"""Where TensorFlow is not installed: preparing data, streaming batches, TensorBoard scalars, and the CLIs."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tiny_run import TINY_FLAGS

from herberta_jax.data import demo_corpus
from herberta_jax.training.summary import SummaryWriter

REPO = pathlib.Path(__file__).resolve().parents[1]

_READ_A_BATCH = r"""
import sys
from herberta_jax.data.pipeline import Pipeline
from herberta_jax.training import loop  # the training loop and its summary writer import without TF
from herberta_jax import run  # composes evaluation, export and inference: the libraries behind the CLIs
pipeline = Pipeline(sys.argv[1], "train", batch_size=4, shuffle=True, repeat=True)
batch = next(pipeline.batches())
assert batch["input_ids"].shape[0] == 4 and batch["valid"].all(), batch
writer = loop.SummaryWriter(sys.argv[2])
writer.scalar("train/loss", 0.5, 1)
writer.close()
assert not any(name.split(".")[0] == "tensorflow" for name in sys.modules), "tensorflow got imported"
print("batch ok")
"""


def _without_tensorflow(tmp_path) -> dict:
  """The environment of a process where `import tensorflow` fails, as on a machine without TF: a `tensorflow`
  package first on the path that refuses to import."""
  blocker = tmp_path / "blocker" / "tensorflow"
  blocker.mkdir(parents=True)
  (blocker / "__init__.py").write_text('raise ImportError("TensorFlow is not installed (test blocker)")\n')
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(REPO)]), "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
  assert check.returncode != 0 and "test blocker" in check.stderr
  return env


def test_prepare_and_pipeline_run_without_tensorflow(tmp_path, minilm_dir):
  env = _without_tensorflow(tmp_path)

  corpus = tmp_path / "corpus"
  demo_corpus.write_demo_corpus(corpus, seed=0, sentences_per_language=20)
  out = tmp_path / "prepared"
  prepared = subprocess.run([sys.executable, "-m", "herberta_jax.prepare", "--input", str(corpus), "--tokenizer",
                             str(minilm_dir), "--out", str(out), "--max_seq_len", "64"],
                            env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
  assert prepared.returncode == 0, prepared.stderr
  assert (out / "manifest.json").is_file()
  read = subprocess.run([sys.executable, "-c", _READ_A_BATCH, str(out), str(tmp_path / "tb")], env=env,
                        capture_output=True, text=True, cwd=tmp_path, timeout=300)
  assert read.returncode == 0, read.stderr
  assert "batch ok" in read.stdout


def test_summary_writer_scalars_read_back_in_tensorboard(tmp_path):
  with SummaryWriter(tmp_path / "tb") as writer:
    for step in range(1, 4):
      writer.scalar("train/loss", 1.0 / step, step)
    writer.scalar("dev/score", 0.75, 3)
    writer.flush()
  second = SummaryWriter(tmp_path / "tb")  # a resumed run: a second file in the same directory
  second.scalar("train/loss", 0.125, 4)
  second.close()
  assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2
  accumulator = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
  accumulator.Reload()
  assert sorted(accumulator.Tags()["scalars"]) == ["dev/score", "train/loss"]
  loss = [(e.step, e.value) for e in accumulator.Scalars("train/loss")]
  assert [step for step, _ in loss] == [1, 2, 3, 4]
  assert [value for _, value in loss] == [1.0, 0.5, float.fromhex("0x1.555556p-2"), 0.125]  # float32 1/3
  assert [(e.step, e.value) for e in accumulator.Scalars("dev/score")] == [(3, 0.75)]


@pytest.mark.slow
def test_train_predict_evaluate_and_export_run_without_tensorflow(tmp_path):
  """The four CLIs of a user's day, in a process where `import tensorflow` fails."""
  env = _without_tensorflow(tmp_path)
  workdir, export = tmp_path / "run", tmp_path / "export_again"

  def cli(name, *args):
    done = subprocess.run([sys.executable, "-m", f"herberta_jax.{name}", *args], env=env, capture_output=True,
                          text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
    assert "tensorflow" not in done.stderr.lower(), done.stderr[-3000:]
    return done

  cli("train", "--config", "configs/demo.py", "--workdir", str(workdir), *TINY_FLAGS)
  (tmp_path / "in.txt").write_text("Anna Berg was born in Oslo.\nThe company was founded by Karl Ruiz.\n")
  cli("predict", "--model", str(workdir), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "out.jsonl"),
      "--batch_size", "8")
  assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
  tests = sorted((workdir / "demo_corpus").glob("*_test.tsv"))
  cli("evaluate", "--model", str(workdir / "export"), "--input", *map(str, tests), "--out", str(tmp_path / "report"),
      "--batch_size", "8")
  assert (tmp_path / "report" / "metrics.json").is_file()
  cli("export", "--workdir", str(workdir), "--out", str(export))
  assert (export / "herberta.json").is_file() and (export / "tagger" / "model.safetensors").is_file()
