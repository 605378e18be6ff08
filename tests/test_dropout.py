"""The model's 16-bit dropout: the rate it drops, the expectation it keeps, the keys it follows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from herberta_jax.model.dropout import Dropout, random_words


def apply(rate, x, *, seed=0, deterministic=False, impl="rbg"):
  return Dropout(rate).apply({}, x, deterministic, rngs={"dropout": jax.random.key(seed, impl=impl)})


@pytest.mark.parametrize("rate", [0.1, 0.5])
@pytest.mark.parametrize("impl", ["rbg", "threefry2x32"])
def test_drops_the_rate_and_keeps_the_mean(rate, impl):
  x = jnp.full((63, 11, 33, 31), 2.0, jnp.float32)  # odd last axis: each row's last 32-bit word is half used
  out = np.asarray(apply(rate, x, impl=impl))
  dropped = np.mean(out == 0.0)
  n = x.size
  assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n)  # five standard deviations
  kept = out[out != 0.0]
  assert np.allclose(kept, 2.0 / (round((1 - rate) * 65536) / 65536))
  assert abs(out.mean() - 2.0) < 5 * 2.0 * np.sqrt(rate / ((1 - rate) * n))


def test_masks_follow_the_key_and_differ_between_positions():
  x = jnp.ones((8, 4096), jnp.float32)
  a, b, again = apply(0.5, x, seed=1), apply(0.5, x, seed=2), apply(0.5, x, seed=1)
  assert np.array_equal(a, again)
  assert np.mean(np.asarray(a) != np.asarray(b)) > 0.4  # independent masks disagree half the time
  kept = (np.asarray(a) != 0).reshape(-1)
  assert np.mean(kept[0::2] != kept[1::2]) > 0.4  # neighbours share a 32-bit word, not a decision


def test_deterministic_and_rate_zero_are_the_identity_and_bfloat16_stays_bfloat16():
  x = jax.random.normal(jax.random.key(3), (5, 7), jnp.bfloat16)
  assert apply(0.3, x, deterministic=True) is x
  assert np.array_equal(apply(0.0, x), x)
  out = apply(0.3, x)
  assert out.dtype == jnp.bfloat16 and out.shape == x.shape
  kept = np.asarray(out != 0)
  expected = (np.asarray(x, np.float32) * (65536 / round(0.7 * 65536))).astype(jnp.bfloat16)
  np.testing.assert_array_equal(np.asarray(out)[kept], expected[kept])  # scaled in float32, rounded once
  assert apply(0.3, jnp.float32(2.0)).shape == ()  # a scalar has no last axis to halve


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg", "threefry2x32"])
def test_words_are_uniform_and_rbg_keys_on_the_cpu_skip_philox(impl):
  key = jax.random.key(4, impl=impl)
  words = np.asarray(random_words(key, (64, 512)))
  assert words.dtype == np.uint32 and words.shape == (64, 512)
  bits = np.unpackbits(words.view(np.uint8)).reshape(-1, 32)  # one row per word, one column per bit position
  sigma = 0.5 / np.sqrt(bits.shape[0])
  assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 5 * sigma), "every bit position is a fair coin"
  assert not np.array_equal(words, np.asarray(random_words(jax.random.key(5, impl=impl), (64, 512))))
  philox = np.asarray(jax.random.bits(key, (64, 512), jnp.uint32))
  # Philox is XLA's default for rbg keys and jax.random.bits's; on the CPU its threefry generator is faster.
  assert np.array_equal(words, philox) == (impl == "threefry2x32" or jax.default_backend() != "cpu")
