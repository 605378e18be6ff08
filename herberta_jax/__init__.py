"""herberta_jax: HERBERTa-style joint entity and relation extraction in JAX/Flax."""

__version__ = "0.1.0"
