"""The training state of one stage: everything a resumed run needs, as one pytree."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax


class TrainState(flax.struct.PyTreeNode):
  """Step, parameters, optimizer state and the base dropout key.

  `rng` is the key's raw data (`jax.random.key_data`): plain uint32 arrays checkpoint and restore like any other
  leaf, whatever the key's implementation; the train step wraps it back with the configured implementation.

  The input-pipeline position is the step itself: every step consumes exactly one batch per process, so a
  restored step tells the pipeline where to resume.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    return cls(step=jax.numpy.zeros((), jax.numpy.int32), params=params, opt_state=tx.init(params), rng=rng, tx=tx)

  def apply_gradients(self, grads) -> TrainState:
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates), opt_state=opt_state)
