"""The stage optimizer: AdamW under the linear schedule, and layer-wise learning-rate decay."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

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
