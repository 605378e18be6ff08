"""Layer-wise learning-rate decay in the stage optimizer."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from herberta_jax.model.bert import BertConfig
from herberta_jax.model.heads import RelationClassifier
from herberta_jax.training import optim


def params():
  """A two-layer classifier's tree, paths as the Flax models name them."""
  ones = lambda n: jnp.ones((n,))  # noqa: E731
  return {"bert": {"embeddings": {"word_embeddings": {"embedding": ones(4)}, "LayerNorm": {"scale": ones(4)}},
                   "encoder": {"layer_0": {"attention": {"kernel": ones(3)}}, "layer_1": {"output": {"bias": ones(2)}}},
                   "pooler": {"dense": {"kernel": ones(2)}}},
          "classifier": {"kernel": ones(2)}}


def stage(layer_decay=1.0):
  return ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_fraction=0.0, weight_decay=0.0,
                                        max_grad_norm=0.0, layer_decay=layer_decay))


def test_layer_scales_fall_from_the_heads_down_to_the_embeddings():
  scales = optim.layer_scales(params(), 0.5)
  assert scales["classifier"]["kernel"] == scales["bert"]["pooler"]["dense"]["kernel"] == 1.0
  assert scales["bert"]["encoder"]["layer_1"]["output"]["bias"] == 0.5
  assert scales["bert"]["encoder"]["layer_0"]["attention"]["kernel"] == 0.25
  assert scales["bert"]["embeddings"]["word_embeddings"]["embedding"] == 0.125
  assert scales["bert"]["embeddings"]["LayerNorm"]["scale"] == 0.125


def test_the_real_models_parameters_get_their_layers_scale():
  config = BertConfig(vocab_size=50, hidden_size=8, num_layers=3, num_heads=2, intermediate_size=16)
  model = RelationClassifier(config, num_labels=3)
  ids = jnp.ones((1, 6), jnp.int32)
  tree = model.init(jax.random.key(0), ids, ids, with_entity_logits=True)["params"]
  scales = optim.layer_scales(tree, 0.5)
  for name, layer in scales["bert"]["encoder"].items():
    assert set(jax.tree.leaves(layer)) == {0.5 ** (3 - int(name.removeprefix("layer_")))}
  assert set(jax.tree.leaves(scales["bert"]["embeddings"])) == {0.5 ** 4}
  for head in ("classifier", "entity_classifier"):
    assert set(jax.tree.leaves(scales[head])) == {1.0}
  assert set(jax.tree.leaves(scales["bert"]["pooler"])) == {1.0}
  assert set(scales["bert"]) == {"embeddings", "encoder", "pooler"}


@pytest.mark.parametrize("layer_decay", [0.5, 0.8])
def test_each_parameter_moves_its_layers_share_of_the_undecayed_step(layer_decay):
  grads = jax.tree.map(lambda p: jnp.linspace(-2.0, -0.5, p.size), params())

  def second_update(cfg):  # the schedule's warm-up starts at 0: the first step moves nothing
    tx, _ = optim.make_optimizer(cfg, total_steps=10)
    _, state = tx.update(grads, tx.init(params()), params())
    return tx.update(grads, state, params())[0]

  full, decayed = second_update(stage()), second_update(stage(layer_decay))
  scales = optim.layer_scales(params(), layer_decay)
  for step, decayed_step, scale in zip(*map(jax.tree.leaves, (full, decayed, scales)), strict=True):
    assert np.all(np.abs(step) > 0)  # the undecayed step moves every parameter
    np.testing.assert_allclose(decayed_step, step * scale, rtol=1e-6)
