"""Resuming a workdir with other settings: a change its checkpoints cannot be restored with is refused up front."""

import pathlib

import pytest

from herberta_jax.config_check import check_resume, flat_settings
from herberta_jax.errors import ConfigError


def settings(**changes) -> dict:
  """A config as config.json holds it (nested plain dicts), with `a__b=value` overrides."""
  config = {"seed": 0, "dropout_rng_impl": "rbg",
            "model": {"init_from": "", "scratch": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}},
            "relation": {"learning_rate": 1e-3, "max_grad_norm": 1.0, "layer_decay": 1.0, "entity_loss_weight": 0.0},
            "tagger": {"learning_rate": 1e-3, "max_grad_norm": 1.0, "layer_decay": 1.0},
            "data": {"bucket_boundaries": [32, 64]}}
  for key, value in changes.items():
    *parents, last = key.split("__")
    node = config
    for part in parents:
      node = node[part]
    node[last] = value
  return config


BOTH = ("relation", "tagger")


def test_flat_settings_names_nested_keys_with_dots():
  flat = flat_settings(settings())
  assert flat["model.scratch.hidden_size"] == 32 and flat["relation.max_grad_norm"] == 1.0
  assert flat["data.bucket_boundaries"] == [32, 64]


def test_changes_that_resume_fine_are_returned_for_the_record():
  changes = check_resume(settings(), settings(relation__learning_rate=5e-4, seed=1), BOTH, "/wd")
  assert changes == {"relation.learning_rate": (1e-3, 5e-4), "seed": (0, 1)}
  assert check_resume(settings(), settings(), BOTH, "/wd") == {}


def test_another_dropout_key_kind_is_refused_naming_key_values_and_the_way_out():
  with pytest.raises(ConfigError) as error:
    check_resume(settings(), settings(dropout_rng_impl="threefry2x32"), BOTH, "/runs/a")
  message = str(error.value)
  for part in ("--config.dropout_rng_impl='threefry2x32'", "relation and tagger checkpoints", "/runs/a", "'rbg'",
               "--config.dropout_rng_impl='rbg'", "new --workdir"):
    assert part in message


def test_a_config_from_before_the_key_meant_threefry():
  old = settings()
  del old["dropout_rng_impl"]
  assert check_resume(old, settings(dropout_rng_impl="threefry2x32"), BOTH, "/wd") == {}
  with pytest.raises(ConfigError, match="trained with 'threefry2x32'"):
    check_resume(old, settings(), BOTH, "/wd")


def test_clipping_switched_off_is_refused_only_for_a_stage_with_checkpoints():
  assert check_resume(settings(), settings(relation__max_grad_norm=0.5), BOTH, "/wd")  # still on: fine
  assert check_resume(settings(), settings(tagger__max_grad_norm=0.0), ("relation",), "/wd")  # no tagger yet
  with pytest.raises(ConfigError, match=r"--config.tagger.max_grad_norm=0.0: the tagger checkpoints"):
    check_resume(settings(), settings(tagger__max_grad_norm=0.0), BOTH, "/wd")


def test_layer_decay_switched_on_is_refused_and_retuned_resumes():
  with pytest.raises(ConfigError, match=r"--config.relation.layer_decay=0.8: the relation checkpoints"):
    check_resume(settings(), settings(relation__layer_decay=0.8), BOTH, "/wd")
  decayed = settings(relation__layer_decay=0.9)
  assert check_resume(decayed, settings(relation__layer_decay=0.8), BOTH, "/wd") == {
      "relation.layer_decay": (0.9, 0.8)}
  old = settings()
  del old["relation"]["layer_decay"]  # a workdir from before the key: no decay
  assert check_resume(old, settings(), BOTH, "/wd") == {}


def test_the_entity_head_switched_on_is_refused():
  with pytest.raises(ConfigError, match="entity head"):
    check_resume(settings(), settings(relation__entity_loss_weight=1.0), BOTH, "/wd")
  assert check_resume(settings(), settings(relation__entity_loss_weight=1.0), ("tagger",), "/wd")


def test_scratch_sizes_matter_only_for_a_run_from_scratch():
  with pytest.raises(ConfigError, match="model.scratch.hidden_size=64"):
    check_resume(settings(), settings(model__scratch__hidden_size=64), BOTH, "/wd")
  pretrained = {"model__init_from": "/models/minilm"}
  assert check_resume(settings(**pretrained), settings(model__scratch__hidden_size=64, **pretrained), BOTH, "/wd")
  # Heads do not shape the parameters (one hidden x hidden matrix for all of them).
  assert check_resume(settings(), settings(model__scratch__num_heads=4), BOTH, "/wd")


def resumable_workdir(tmp_path, config) -> pathlib.Path:
  """A workdir as a run leaves it: config.json and a relation checkpoint step directory."""
  (tmp_path / "relation" / "checkpoints" / "latest" / "5").mkdir(parents=True)
  (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
  return tmp_path


def test_a_resume_logs_what_changed_and_a_truncated_config_json_is_no_obstacle(tmp_path, caplog):
  from tiny_run import tiny_config

  from herberta_jax import run
  workdir = resumable_workdir(tmp_path, tiny_config())
  changed = tiny_config()
  changed.relation.learning_rate = 5e-4
  run._check_resume(changed, workdir)
  assert "resuming" in caplog.text and "relation.learning_rate: 0.001 -> 0.0005" in caplog.text
  caplog.clear()
  (workdir / "config.json").write_text('{"seed": 0, "rel')
  run._check_resume(changed, workdir)
  assert "is unreadable" in caplog.text
  changed.dropout_rng_impl = "threefry2x32"
  (workdir / "config.json").write_text(tiny_config().to_json_best_effort(indent=2))
  with pytest.raises(ConfigError, match="dropout_rng_impl"):
    run._check_resume(changed, workdir)


def test_each_stage_is_checked_against_the_settings_it_was_trained_with(tmp_path):
  from tiny_run import tiny_config

  from herberta_jax import run
  workdir = resumable_workdir(tmp_path, tiny_config())  # relation checkpoints, trained with an rbg key
  (workdir / "relation" / run.STAGE_SETTINGS).write_text(tiny_config().to_json_best_effort(indent=2))
  tagger_run = tiny_config()
  tagger_run.stage, tagger_run.dropout_rng_impl = "tagger", "threefry2x32"
  run._check_resume(tagger_run, workdir)  # the tagger has no checkpoints yet, and the relation's are not read
  tagger_run.tagger.init_from_relation = True  # now they are: the relation encoder starts the tagger
  with pytest.raises(ConfigError, match="the relation checkpoints .* trained with 'rbg'"):
    run._check_resume(tagger_run, workdir)
  # After a tagger-only run with a threefry key, config.json says threefry; the relation stage's record still
  # says what its checkpoints hold.
  (workdir / "config.json").write_text(tagger_run.to_json_best_effort(indent=2))
  relation_run = tiny_config()
  relation_run.stage, relation_run.dropout_rng_impl = "relation", "threefry2x32"
  with pytest.raises(ConfigError, match="trained with 'rbg'"):
    run._check_resume(relation_run, workdir)
  relation_run.dropout_rng_impl = "rbg"
  run._check_resume(relation_run, workdir)
