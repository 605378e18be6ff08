"""herberta_jax: HERBERTa-style joint entity and relation extraction in JAX/Flax.

From Python:

    import herberta_jax

    model = herberta_jax.load("/tmp/herberta_demo")  # a training workdir or an export directory
    print(model.extract(["Paul Schmidt wurde in Hamburg geboren."]))

`load` returns a `herberta_jax.Model`; see `herberta_jax.api` for `Model.extract` and its result types
(`Extraction`, `Entity`, `Candidate`). Importing the package is cheap: JAX is imported by `load`, not before.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from herberta_jax.api import Candidate, Entity, Extraction, Model, Rejected

__version__ = "0.3.0"
__all__ = ["Candidate", "Entity", "Extraction", "Model", "Rejected", "load", "__version__"]
_API_NAMES = {"Candidate", "Entity", "Extraction", "Model", "Rejected"}


def load(path: str | os.PathLike, **options) -> Model:
  """Loads a trained pipeline (an export directory or a finished training workdir, local or a `gs://` URL) as a
  `Model`, checked before use.

  `options` (all keyword): `top_k`, `top_m` (default n-best sizes), `batch_size`, `dtype`, `max_span_len`,
  `disjoint_entities`, `ordered_entities`; see `herberta_jax.api.load`. A wrong type raises TypeError, a value out of
  range ValueError, each naming the argument and the values it takes.
  """
  from herberta_jax import api
  return api.load(path, **options)


def __getattr__(name: str):
  if name in _API_NAMES:
    from herberta_jax import api
    return getattr(api, name)
  raise AttributeError(f"module 'herberta_jax' has no attribute {name!r}")
