"""A tiny version of the demo run (seconds, not minutes), shared by the training and multi-process tests."""

import json
import pathlib
import sys

from configs import demo

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(**stage_overrides):
  """The demo config shrunk to seconds: 60 sentences per language, a one-layer encoder."""
  config = demo.get_config()
  config.data.demo_sentences_per_language = 60
  config.data.wordpiece_vocab_size = 800
  config.data.bucket_boundaries = (32, 64)
  config.data.max_seq_len = 64
  config.model.scratch.update(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
  for stage in (config.relation, config.tagger):
    stage.update({"batch_size": 8, "num_epochs": 1, "checkpoint_every_steps": 5, **stage_overrides})
  config.infer.batch_size = 8
  config.log_every_steps = 5
  return config


def tiny_pretrained_config(directory: pathlib.Path):
  """`tiny_config` fine-tuning a random one-layer BERT saved as a local HuggingFace checkpoint in `directory`."""
  import transformers
  transformers.BertModel(transformers.BertConfig(
      vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
      max_position_embeddings=64)).save_pretrained(directory)
  config = tiny_config()
  config.model.init_from = str(directory)
  return config


TINY_FLAGS = [
    "--config.data.demo_sentences_per_language=60", "--config.data.wordpiece_vocab_size=800",
    "--config.data.max_seq_len=64", "--config.data.bucket_boundaries=(32,64)",
    "--config.model.scratch.hidden_size=32", "--config.model.scratch.num_layers=1",
    "--config.model.scratch.num_heads=2", "--config.model.scratch.intermediate_size=64",
    "--config.relation.batch_size=8", "--config.infer.batch_size=8",
]


def workdir_with_data(tmp_path, data_dir) -> pathlib.Path:
  workdir = tmp_path / "run"
  workdir.mkdir(parents=True)
  (workdir / "data").symlink_to(data_dir)
  return workdir

def losses(workdir, stage="relation"):
  by_step = {}
  for line in (workdir / stage / "losses.jsonl").read_text().splitlines():
    record = json.loads(line)
    by_step[record["step"]] = record["loss"]  # a resumed run rewrites the steps after its checkpoint
  return [by_step[s] for s in sorted(by_step)]

def train_command(workdir, *extra):
  return [sys.executable, "-m", "herberta_jax.train", "--config", "configs/demo.py", "--workdir", str(workdir),
          "--config.stage=relation", "--config.data.dev_fraction=0.0", "--config.relation.num_epochs=3",
          "--config.relation.checkpoint_every_steps=10", *TINY_FLAGS, *extra]
