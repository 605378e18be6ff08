"""The Flax encoder against HuggingFace's PyTorch models: random BERT, real all-MiniLM-L6-v2, random XLM-R."""

import numpy as np
import pytest
import torch
import transformers

from herberta_jax.model import hf
from herberta_jax.model.bert import BertEncoder

TOL = 1e-4


def _inputs(vocab: int, pad_id: int, seed: int = 0, length: int = 12):
  rng = np.random.default_rng(seed)
  ids = rng.integers(pad_id + 1 + 3, vocab, size=(3, length)).astype(np.int64)
  mask = np.ones_like(ids)
  ids[1, 8:], mask[1, 8:] = pad_id, 0  # a padded row
  ids[2, 5:], mask[2, 5:] = pad_id, 0
  types = np.zeros_like(ids)
  types[0, 6:] = 1
  return ids, mask, types


def _compare(directory, torch_model, pad_id: int, use_types: bool, length: int = 12, tol: float = TOL, **changes):
  """`changes` to the loaded encoder's config (kernels, dtype) before it runs; `tol` bounds the max abs error."""
  config, params = hf.load_encoder(directory, add_pooler=True)
  config = config.replace(**changes)
  ids, mask, types = _inputs(config.vocab_size, pad_id, length=length)
  types = types if use_types else np.zeros_like(types)
  with torch.no_grad():
    out = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                      token_type_ids=torch.tensor(types))
  sequence, pooled = BertEncoder(config, add_pooler=True).apply({"params": params}, ids, mask, types)
  valid = mask.astype(bool)  # padded positions' hidden states are not defined by either side
  seq_err = np.abs(np.asarray(sequence) - out.last_hidden_state.numpy())[valid].max()
  pool_err = np.abs(np.asarray(pooled) - out.pooler_output.numpy()).max()
  print(f"{directory}: max abs error, hidden states {seq_err:.1e}, pooled {pool_err:.1e}")  # shown with -s
  assert seq_err < tol, seq_err
  assert pool_err < tol, pool_err
  # Inference's relation classifier: the last layer computes [CLS] alone, which must not change it.
  first, first_pooled = BertEncoder(config, add_pooler=True).apply({"params": params}, ids, mask, types,
                                                                    first_token_only=True)
  assert first.shape == (ids.shape[0], 1, config.hidden_size)
  np.testing.assert_allclose(np.asarray(first[:, 0]), np.asarray(sequence[:, 0]), atol=tol / 10)
  np.testing.assert_allclose(np.asarray(first_pooled), np.asarray(pooled), atol=tol / 10)


def _random_bert(directory):
  """A random 3-layer PyTorch BERT, saved to `directory` as a HuggingFace checkpoint."""
  torch.manual_seed(0)
  cfg = transformers.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=64)
  model = transformers.BertModel(cfg).eval()
  model.save_pretrained(directory)
  return model


def test_random_bert_matches_pytorch(tmp_path):
  _compare(tmp_path, _random_bert(tmp_path), pad_id=0, use_types=True)


@pytest.mark.parametrize("dtype, tol", [("float32", TOL), ("bfloat16", 0.1)])
def test_random_bert_with_the_fused_kernels_matches_pytorch(tmp_path, dtype, tol):
  """The inference path through the three kernels (Pallas' interpreter: the code a GPU compiles), at a length the
  attention kernel takes (20: padded to 32 inside). bfloat16 against PyTorch's float32: 0.1, as the bfloat16
  rounding of three layers' activations allows."""
  _compare(tmp_path, _random_bert(tmp_path), pad_id=0, use_types=True, length=20, tol=tol, kernels="all", kernel_impl="interpret",
           dtype=dtype)


def test_real_minilm_matches_pytorch(minilm_dir):
  model = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
  _compare(minilm_dir, model, pad_id=0, use_types=True)


def test_random_xlm_roberta_matches_pytorch(tmp_path):
  torch.manual_seed(1)
  cfg = transformers.XLMRobertaConfig(vocab_size=250, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=128, max_position_embeddings=40, type_vocab_size=1,
                                      pad_token_id=1)
  model = transformers.XLMRobertaModel(cfg).eval()
  model.save_pretrained(tmp_path)
  config, _ = hf.load_encoder(tmp_path)
  assert config.is_roberta and config.pad_token_id == 1
  _compare(tmp_path, model, pad_id=1, use_types=False)


def test_pytorch_bin_checkpoint_loads_like_safetensors(tmp_path):
  torch.manual_seed(2)
  cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=32)
  model = transformers.BertModel(cfg).eval()
  model.save_pretrained(tmp_path)
  (tmp_path / "model.safetensors").unlink()
  torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
  _compare(tmp_path, model, pad_id=0, use_types=True)
