"""Checkpoint saves are handed to a background thread: the caller goes on, and a failed save is not lost."""

import threading

import jax.numpy as jnp
import numpy as np
import pytest

from herberta_jax.training.checkpoint import StageCheckpoints, abstract_like
from herberta_jax.training.parallel import make_mesh, replicated


def test_save_returns_before_the_write_and_later_calls_wait_for_it(tmp_path):
  ckpts = StageCheckpoints(tmp_path, keep_latest=2)
  state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(7)}
  release, entered = threading.Event(), threading.Event()
  orbax_save = ckpts.latest.save

  def slow_save(*args, **kwargs):  # stands for a long copy off the device
    entered.set()
    assert release.wait(30)
    return orbax_save(*args, **kwargs)

  ckpts.latest.save = slow_save
  try:
    ckpts.save_latest(7, state, {"best_score": 0.5})  # returns although the save is held
    assert entered.wait(30)
    assert not (tmp_path / "latest" / "7").exists()
    release.set()
    assert ckpts.latest_step() == 7  # waits for the handed-over save
    target = abstract_like(state, replicated(make_mesh()))
    restored, progress, step = ckpts.restore_latest(target, drop_unreadable=False)
    assert step == 7 and progress == {"best_score": 0.5}
    np.testing.assert_array_equal(restored["w"], state["w"])
  finally:
    release.set()
    ckpts.close()


def test_a_failed_background_save_raises_once_at_the_next_call_or_at_close(tmp_path, caplog):
  def failing_save(*args, **kwargs):
    raise OSError("disk full")

  ckpts = StageCheckpoints(tmp_path / "a", keep_latest=2)
  ckpts.best.save = failing_save
  ckpts.save_best(3, {"w": jnp.ones(3)}, {})
  with pytest.raises(OSError, match="disk full"):
    ckpts.wait()
  ckpts.wait()  # raised once
  ckpts.close()

  ckpts = StageCheckpoints(tmp_path / "b", keep_latest=2)
  ckpts.best.save = failing_save
  ckpts.save_best(3, {"w": jnp.ones(3)}, {})
  with pytest.raises(OSError, match="disk full"):
    ckpts.close()  # nobody asked before: close raises it, and still releases the managers
  assert ckpts._saver._shutdown

  ckpts = StageCheckpoints(tmp_path / "c", keep_latest=2)
  ckpts.best.save = failing_save
  ckpts.save_best(3, {"w": jnp.ones(3)}, {})
  ckpts.close(raise_errors=False)  # closing because of another error: this one is logged, not raised
  assert "a checkpoint save failed: OSError: disk full" in caplog.text


def test_at_most_one_save_waits_behind_the_one_being_written(tmp_path):
  ckpts = StageCheckpoints(tmp_path, keep_latest=3)
  release = threading.Event()
  orbax_save = ckpts.latest.save
  ckpts.latest.save = lambda *a, **k: release.wait(30) and orbax_save(*a, **k)
  state = {"w": jnp.ones(3)}
  try:
    ckpts.save_latest(1, state, {})  # being written (held)
    ckpts.save_latest(2, state, {})  # waits behind it: handed over at once
    third = threading.Thread(target=ckpts.save_latest, args=(3, state, {}))
    third.start()
    third.join(0.5)
    assert third.is_alive()  # a third device copy would pile up: the caller waits instead
    release.set()
    third.join(30)
    assert not third.is_alive()
    assert ckpts.latest_step() == 3
  finally:
    release.set()
    ckpts.close()
