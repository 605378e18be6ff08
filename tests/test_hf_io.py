"""Export -> transformers PyTorch -> same logits; import errors named clearly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from herberta_jax.model import hf
from herberta_jax.model.bert import BertConfig
from herberta_jax.model.heads import MASKED_LOGIT, EntityTagger, RelationClassifier

TOL = 1e-4
LABELS = {0: "no_relation", 1: "has-author", 2: "birth-place"}


def _small(model_type="bert"):
  if model_type == "bert":
    return BertConfig(vocab_size=120, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                      max_position_embeddings=40)
  return BertConfig(vocab_size=120, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                    max_position_embeddings=42, type_vocab_size=1, pad_token_id=1, model_type="xlm-roberta",
                    layer_norm_eps=1e-5)


def _batch(pad_id):
  ids = np.array([[5, 17, 33, 80, 9, 4, 6, 7], [5, 40, 41, 6, pad_id, pad_id, pad_id, pad_id]], np.int64)
  mask = (ids != pad_id).astype(np.int64)
  return ids, mask


def _loaded(cls, directory):
  model, info = cls.from_pretrained(str(directory), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  return model.eval()


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_relation_export_round_trip(tmp_path, model_type):
  config = _small(model_type)
  model = RelationClassifier(config, num_labels=len(LABELS))
  ids, mask = _batch(config.pad_token_id)
  params = model.init(jax.random.PRNGKey(0), jnp.asarray(ids), jnp.asarray(mask))["params"]
  hf.export_relation(tmp_path, config, jax.device_get(params), LABELS)
  torch_model = _loaded(transformers.AutoModelForSequenceClassification, tmp_path)
  assert torch_model.config.id2label == LABELS
  with torch.no_grad():
    expected = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
  ours = np.asarray(model.apply({"params": params}, ids, mask))
  assert np.abs(ours - expected).max() < TOL
  # And back into JAX: identical parameters.
  config_back, params_back, id2label = hf.load_relation_model(tmp_path)
  assert config_back == config and id2label == LABELS
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params_back)


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_tagger_export_round_trip(tmp_path, model_type):
  config = _small(model_type)
  model = EntityTagger(config)
  ids, mask = _batch(config.pad_token_id)
  types = np.zeros_like(ids)
  sentence = mask.copy()
  sentence[:, :3] = 0
  params = model.init(jax.random.PRNGKey(1), ids, mask, types, sentence)["params"]
  hf.export_tagger(tmp_path, config, jax.device_get(params))
  torch_model = _loaded(transformers.AutoModelForTokenClassification, tmp_path)
  assert list(torch_model.config.id2label.values()) == ["e1_start", "e1_end", "e2_start", "e2_end"]
  with torch.no_grad():
    expected = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                           token_type_ids=torch.tensor(types)).logits.numpy()
  ours = np.asarray(model.apply({"params": params}, ids, mask, types, sentence))
  inside = sentence.astype(bool)
  assert np.abs(ours[inside] - expected[inside]).max() < TOL
  assert np.all(ours[~inside] == MASKED_LOGIT)
  config_back, params_back = hf.load_tagger_model(tmp_path)
  assert config_back == config
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params_back)


def _save_random_bert(directory):
  cfg = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=16)
  transformers.BertModel(cfg).save_pretrained(directory)


def test_missing_directory_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such directory"):
    hf.load_encoder(tmp_path / "nowhere")


def test_non_bert_config_is_rejected(tmp_path):
  _save_random_bert(tmp_path)
  raw = json.loads((tmp_path / "config.json").read_text())
  raw["model_type"] = "gpt2"
  (tmp_path / "config.json").write_text(json.dumps(raw))
  with pytest.raises(ValueError, match="model_type 'gpt2' is not a BERT or RoBERTa encoder"):
    hf.load_encoder(tmp_path)


def test_truncated_safetensors_is_reported(tmp_path):
  _save_random_bert(tmp_path)
  data = (tmp_path / "model.safetensors").read_bytes()
  (tmp_path / "model.safetensors").write_bytes(data[:len(data) // 2])
  with pytest.raises(hf.CheckpointError, match="model.safetensors: cannot read safetensors file.*truncated"):
    hf.load_encoder(tmp_path)


def test_missing_and_misshapen_tensors_are_named(tmp_path):
  from safetensors.numpy import load_file, save_file
  _save_random_bert(tmp_path)
  tensors = load_file(str(tmp_path / "model.safetensors"))
  del tensors["encoder.layer.0.output.dense.weight"]
  tensors["embeddings.position_embeddings.weight"] = np.zeros((8, 16), np.float32)
  tensors["encoder.layer.0.mystery.weight"] = np.zeros((2,), np.float32)
  save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(hf.CheckpointError) as err:
    hf.load_encoder(tmp_path)
  message = str(err.value)
  assert "encoder.layer.0.output.dense.weight" in message
  assert "embeddings.position_embeddings.weight: checkpoint (8, 16), model expects (16, 16)" in message
  del tensors["encoder.layer.0.mystery.weight"]
  tensors["embeddings.position_embeddings.weight"] = np.zeros((16, 16), np.float32)
  tensors["encoder.layer.0.output.dense.weight"] = np.zeros((16, 32), np.float32)
  tensors["encoder.layer.0.mystery.weight"] = np.zeros((2,), np.float32)
  save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(hf.CheckpointError, match="unexpected tensors .*encoder.layer.0.mystery.weight"):
    hf.load_encoder(tmp_path)


def test_resize_adds_rows_and_keeps_old_ones(tmp_path):
  _save_random_bert(tmp_path)
  _, encoder = hf.load_encoder(tmp_path)
  grown = hf.resize_token_embeddings(encoder, 64, jax.random.PRNGKey(0))
  table = grown["embeddings"]["word_embeddings"]["embedding"]
  assert table.shape == (64, 16)
  np.testing.assert_array_equal(table[:60], encoder["embeddings"]["word_embeddings"]["embedding"])
  assert np.isfinite(table).all() and not np.allclose(table[60], table[61])
