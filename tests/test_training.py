"""The training loop: data-parallel equality, resume after SIGKILL, NaN stop, early stopping, config overrides."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_run import losses, tiny_config, tiny_pretrained_config, train_command, workdir_with_data

from herberta_jax import run
from herberta_jax.data import preparation as prepare
from herberta_jax.hub import writer
from herberta_jax.model import hf
from herberta_jax.model.bert import BertConfig
from herberta_jax.model.heads import RelationClassifier
from herberta_jax.training import data_setup, feeding, loop, parallel, precompile, stages, steps
from herberta_jax.training.prefetch import Prefetcher

pytestmark = pytest.mark.slow  # trains tiny models, some in subprocesses

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """One prepared tiny demo corpus shared by the tests (workdirs link to it)."""
  workdir = tmp_path_factory.mktemp("prepared")
  data_dir = data_setup.prepare_run_data(tiny_config(), workdir)
  return data_dir


def test_one_and_four_devices_give_the_same_losses(tmp_path, prepared):
  assert jax.device_count() == 4, "tests/conftest.py simulates 4 CPU devices"
  manifest = prepare.load_manifest(prepared)
  runs = {}
  for devices in (1, 4):
    config = tiny_config()
    config.mesh.num_devices = devices
    config.relation.num_epochs = 2
    config.relation.learning_rate = 5e-3  # the tiny encoder barely moves in two epochs at the demo's 1e-3
    workdir = workdir_with_data(tmp_path / f"d{devices}", prepared)
    loop.train_stage("relation", config, workdir, prepared, manifest, parallel.make_mesh(devices))
    runs[devices] = losses(workdir)
  assert len(runs[1]) >= 8
  np.testing.assert_allclose(runs[4], runs[1], rtol=1e-5)
  quarter = len(runs[1]) // 4  # single losses are noisy at this size; compare averages
  assert np.mean(runs[1][-quarter:]) < np.mean(runs[1][:quarter]), "the loss should fall over two epochs"


def test_the_fused_kernels_train_alike_on_one_and_four_devices_and_a_workdir_keeps_the_runs_choice(tmp_path,
                                                                                                   prepared):
  """Their dropout masks hash each element's position in the global batch, so sharding it does not change them;
  they are other masks than the plain model's. A stage rebuilt from its workdir takes the run's `model.kernels`."""
  manifest = prepare.load_manifest(prepared)
  runs = {}
  for devices, kernels in ((1, "all"), (4, "all"), (4, "")):
    config = tiny_config()
    config.model.kernels = kernels
    config.mesh.num_devices = devices
    workdir = workdir_with_data(tmp_path / f"d{devices}{kernels}", prepared)
    loop.train_stage("relation", config, workdir, prepared, manifest, parallel.make_mesh(devices))
    runs[devices, kernels] = losses(workdir)
  assert len(runs[1, "all"]) >= 4
  np.testing.assert_allclose(runs[4, "all"], runs[1, "all"], rtol=1e-5)
  assert not np.allclose(runs[4, ""], runs[4, "all"], rtol=1e-5)
  config.model.kernels = "attention"
  stage = stages.from_workdir(workdir / "relation", "relation", config, manifest, parallel.make_mesh(4))
  assert stage.bert_config.kernels == ("attention",)


def test_gradient_accumulation_matches_one_large_batch(tmp_path, prepared):
  manifest = prepare.load_manifest(prepared)
  runs = {}
  for accum in (1, 4):
    config = tiny_config(accum_steps=accum)
    config.model.scratch.update(hidden_dropout=0.0, attention_dropout=0.0)  # dropout keys differ per micro-batch
    workdir = workdir_with_data(tmp_path / f"a{accum}", prepared)
    loop.train_stage("relation", config, workdir, prepared, manifest, parallel.make_mesh(4))
    runs[accum] = losses(workdir)
  assert len(runs[1]) == len(runs[4]) >= 4
  np.testing.assert_allclose(runs[4], runs[1], rtol=1e-5)


def test_entity_auxiliary_loss_adds_the_weighted_span_cross_entropy():
  config = BertConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
  module = RelationClassifier(config, num_labels=3)
  ids = jnp.asarray(np.random.default_rng(0).integers(5, 50, (2, 7)), jnp.int32)
  mask = jnp.asarray([[1] * 7, [1] * 5 + [0] * 2], jnp.int32)
  params = module.init(jax.random.PRNGKey(0), ids, mask, with_entity_logits=True)["params"]
  # Row 1 has a truncated entity (-1): it adds its relation loss only.
  batch = {"input_ids": ids, "attention_mask": mask, "label": jnp.asarray([2, 0]),
           "spans": jnp.asarray([[1, 2, 4, 5], [-1, -1, 2, 3]]), "valid": jnp.asarray([True, True])}
  logits, entity_logits = module.apply({"params": params}, ids, mask, with_entity_logits=True)
  relation_ce = -jax.nn.log_softmax(logits)[jnp.arange(2), batch["label"]]
  positions = jax.nn.log_softmax(entity_logits[0], axis=0)  # over row 0's positions, per output
  entity_ce = -np.mean([positions[t, k] for k, t in enumerate([1, 2, 4, 5])])
  assert float(jnp.max(entity_logits[1, 5:])) < -1e8, "padding is never an entity position"
  plain, rows = steps.relation_loss_terms(module, params, batch, None, True)
  weighted, _ = steps.relation_loss_terms(module, params, batch, None, True, entity_loss_weight=0.5)
  assert float(rows) == 2
  np.testing.assert_allclose(float(plain), float(relation_ce.sum()), rtol=1e-5)
  np.testing.assert_allclose(float(weighted), float(relation_ce.sum() + 0.5 * entity_ce), rtol=1e-5)


def test_relation_run_with_the_entity_head_resumes_and_exports_without_it(tmp_path, prepared):
  manifest = prepare.load_manifest(prepared)
  config = tiny_config(learning_rate=5e-3, num_epochs=2)
  config.relation.entity_loss_weight = 1.0
  workdir = workdir_with_data(tmp_path, prepared)
  mesh = parallel.make_mesh(4)
  stage_model, trained = loop.train_stage("relation", config, workdir, prepared, manifest, mesh)
  assert set(trained) == {"bert", "classifier", "entity_classifier"}
  run_losses = losses(workdir)
  quarter = len(run_losses) // 4
  assert np.mean(run_losses[-quarter:]) < np.mean(run_losses[:quarter])
  _, restored = loop.restore_stage_params(workdir, "relation", config, manifest, mesh)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(trained)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  host = writer.host_params(trained)
  hf.export_relation(tmp_path / "export", stage_model.bert_config, host, dict(enumerate(manifest["labels"])))
  exported_config, exported, _ = hf.load_relation_model(tmp_path / "export")
  assert set(exported) == {"bert", "classifier"}
  ids = jnp.asarray(np.random.default_rng(1).integers(5, 100, (3, 12)), jnp.int32)
  mask = jnp.ones_like(ids)
  np.testing.assert_allclose(
      np.asarray(RelationClassifier(exported_config, len(manifest["labels"])).apply({"params": exported}, ids, mask)),
      np.asarray(stage_model.module.apply({"params": host}, ids, mask)), atol=1e-5)


def test_tagger_can_start_from_the_trained_relation_encoder(tmp_path, prepared):
  manifest = prepare.load_manifest(prepared)
  mesh = parallel.make_mesh(4)
  config = tiny_config(learning_rate=5e-3)
  config.tagger.learning_rate = 0.0  # the tagger's encoder stays where it started
  config.tagger.init_from_relation = True
  config.stage = "tagger"
  workdir = workdir_with_data(tmp_path, prepared)
  with pytest.raises(FileNotFoundError, match="init_from_relation needs the relation stage"):
    run.train_and_evaluate(config, workdir)
  _, relation = loop.train_stage("relation", config, workdir, prepared, manifest, mesh)
  run.train_and_evaluate(config, workdir)
  _, tagger = loop.restore_stage_params(workdir, "tagger", config, manifest, mesh)
  assert "pooler" in relation["bert"] and "pooler" not in tagger["bert"]
  relation_encoder = {k: v for k, v in relation["bert"].items() if k != "pooler"}
  assert jax.tree.structure(tagger["bert"]) == jax.tree.structure(relation_encoder)
  for a, b in zip(jax.tree.leaves(tagger["bert"]), jax.tree.leaves(relation_encoder)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  scratch = stages.build("tagger", config, manifest, mesh).initial_params(jax.random.PRNGKey(0))
  assert not np.allclose(np.asarray(scratch["bert"]["embeddings"]["word_embeddings"]["embedding"]),
                         np.asarray(tagger["bert"]["embeddings"]["word_embeddings"]["embedding"]))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, prepared):
  manifest = prepare.load_manifest(prepared)
  config = tiny_config(learning_rate=1e38, max_grad_norm=0.0, checkpoint_every_steps=1, warmup_fraction=0.0)
  workdir = workdir_with_data(tmp_path, prepared)
  mesh = parallel.make_mesh(4)
  with pytest.raises(loop.NonFiniteLossError, match="last good checkpoint"):
    loop.train_stage("relation", config, workdir, prepared, manifest, mesh)
  _, params = loop.restore_stage_params(workdir, "relation", config, manifest, mesh, best=False)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_early_stopping_stops_when_dev_stops_improving(tmp_path, prepared):
  manifest = prepare.load_manifest(prepared)
  config = tiny_config(learning_rate=0.0, num_epochs=10, patience=2, eval_every_steps=2)
  workdir = workdir_with_data(tmp_path, prepared)
  loop.train_stage("relation", config, workdir, prepared, manifest, parallel.make_mesh(4))
  summary = json.loads((workdir / "relation" / "summary.json").read_text())
  # A learning rate of 0 never improves on the first evaluation: stop after two more.
  assert summary["best_step"] == 2
  assert summary["final_step"] == 6 < summary["total_steps"]
  assert summary["stopped_early"]


def latest_params(workdir):
  config = tiny_config()
  manifest = prepare.load_manifest(workdir / "data")
  _, params = loop.restore_stage_params(workdir, "relation", config, manifest, parallel.make_mesh(4), best=False)
  return params


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, prepared):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  straight = workdir_with_data(tmp_path / "straight", prepared)
  subprocess.run(train_command(straight), cwd=REPO, env=env, check=True, capture_output=True)

  killed = workdir_with_data(tmp_path / "killed", prepared)
  latest = killed / "relation" / "checkpoints" / "latest"

  def saved_steps():
    return {int(p.name) for p in latest.iterdir() if p.name.isdigit()} if latest.exists() else set()

  def saving() -> bool:  # orbax writes a step into a temporary directory, renamed when complete
    return latest.exists() and any("tmp" in p.name for p in latest.iterdir())

  # First a kill between checkpoints; then runs that save at every step, killed while they are saving; the last
  # one the moment an asynchronous save is seen in flight.
  for every, delay, in_flight in ((10, 0.5, False), (1, 0.3, False), (1, 0.8, False), (1, 0.0, True)):
    before = max(saved_steps(), default=0)
    proc = subprocess.Popen(train_command(killed, f"--config.relation.checkpoint_every_steps={every}"), cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and max(saved_steps(), default=0) <= before:
      time.sleep(0.05)
    while in_flight and time.time() < deadline and not saving():
      time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed: make it longer"
  subprocess.run(train_command(killed), cwd=REPO, env=env, check=True, capture_output=True)

  assert losses(killed) == pytest.approx(losses(straight), rel=1e-6)
  for a, b in zip(jax.tree.leaves(latest_params(killed)), jax.tree.leaves(latest_params(straight))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_unreadable_latest_falls_back_and_best_without_latest_is_refused(tmp_path, prepared, caplog):
  manifest = prepare.load_manifest(prepared)
  config = tiny_config(checkpoint_every_steps=3)
  workdir = workdir_with_data(tmp_path, prepared)
  mesh = parallel.make_mesh(4)
  loop.train_stage("relation", config, workdir, prepared, manifest, mesh)
  latest = workdir / "relation" / "checkpoints" / "latest"
  final, previous = sorted((int(p.name) for p in latest.iterdir() if p.name.isdigit()), reverse=True)
  for path in (latest / str(final) / "state").rglob("*"):  # a save cut short after orbax renamed it
    if path.is_file():
      path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
  with caplog.at_level("WARNING"):
    loop.train_stage("relation", config, workdir, prepared, manifest, mesh)
  assert f"checkpoint step {final} is unreadable" in caplog.text and f"falling back to step {previous}" in caplog.text
  steps_logged = [json.loads(line)["step"] for line in (workdir / "relation" / "losses.jsonl").read_text().splitlines()]
  assert steps_logged == list(range(1, final + 1)), "a resumed run rewrites only the steps after its checkpoint"

  shutil.rmtree(latest)
  with pytest.raises(RuntimeError, match="latest/ holds nothing to resume from.*Delete"):
    loop.train_stage("relation", config, workdir, prepared, manifest, mesh)


def test_a_stage_restores_from_its_workdir_without_the_pretrained_checkpoint(tmp_path, prepared):
  manifest = prepare.load_manifest(prepared)
  pretrained = tmp_path / "pretrained"
  config = tiny_pretrained_config(pretrained)
  workdir = workdir_with_data(tmp_path, prepared)
  mesh = parallel.make_mesh(4)
  _, trained = loop.train_stage("relation", config, workdir, prepared, manifest, mesh)
  pretrained.rename(tmp_path / "moved_away")
  _, restored = loop.restore_stage_params(workdir, "relation", config, manifest, mesh)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(trained)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_resumed_stage_reads_no_pretrained_weights_and_traces_its_step_once_per_shape(tmp_path, prepared,
                                                                                           monkeypatch):
  manifest = prepare.load_manifest(prepared)
  config = tiny_pretrained_config(tmp_path / "pretrained")
  workdir = workdir_with_data(tmp_path, prepared)
  mesh = parallel.make_mesh(4)
  loop.train_stage("relation", config, workdir, prepared, manifest, mesh)
  first = json.loads((workdir / "relation" / "summary.json").read_text())["final_step"]

  def unused(*args, **kwargs):
    raise AssertionError("a resumed stage computed what its checkpoint replaces")

  monkeypatch.setattr(hf, "load_encoder", unused)
  monkeypatch.setattr(stages.Stage, "initial_params", unused)
  traced, make_train_step = [], steps.make_train_step

  def recording_train_step(*args, **kwargs):
    step = make_train_step(*args, **kwargs)

    def recorded(state, batch):  # runs when jit traces it: once per shape unless a compilation went unused
      traced.append(batch["input_ids"].shape)
      return step(state, batch)
    return recorded

  monkeypatch.setattr(steps, "make_train_step", recording_train_step)
  config.relation.num_epochs = 2  # the finished stage continues
  loop.train_stage("relation", config, workdir, prepared, manifest, mesh)
  summary = json.loads((workdir / "relation" / "summary.json").read_text())
  assert summary["final_step"] == 2 * first and summary["steps_run"] == first
  assert traced and len(traced) == len(set(traced)), traced


def test_checkpoint_interval_in_minutes_saves_at_log_boundaries(tmp_path, prepared):
  manifest = prepare.load_manifest(prepared)
  config = tiny_config(checkpoint_every_steps=0, checkpoint_every_minutes=1e-9)
  config.log_every_steps = 4
  config.checkpoint_keep_latest = 100
  workdir = workdir_with_data(tmp_path, prepared)
  loop.train_stage("relation", config, workdir, prepared, manifest, parallel.make_mesh(4))
  final = json.loads((workdir / "relation" / "summary.json").read_text())["final_step"]
  latest = workdir / "relation" / "checkpoints" / "latest"
  assert sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit()) == [*range(4, final, 4), final]


def test_prefetcher_reraises_in_the_consumer_and_closes_its_source():
  def failing():
    yield 1
    yield 2
    raise ValueError("broken record")

  with Prefetcher(failing(), depth=2) as items:
    assert [next(items), next(items)] == [1, 2]
    with pytest.raises(ValueError, match="broken record"):
      next(items)
  closed = []

  def endless():
    try:
      yield from iter(int, 1)
    finally:
      closed.append(True)

  items = Prefetcher(endless(), depth=2)
  assert next(items) == 0
  items.close()
  assert closed == [True] and not items._thread.is_alive()


def test_feeds_send_only_the_step_fields_on_the_bucket_lengths(prepared):
  manifest = prepare.load_manifest(prepared)
  config, mesh = tiny_config(), parallel.make_mesh(4)
  with pytest.raises(ValueError, match="relation.batch_size=6 .* 4 devices"):
    feeding.StageFeed(config, prepared, "train", stages.build("relation", config, manifest, mesh), mesh,
                      batch_size=6, batch_flag="relation.batch_size", train=True)
  for name in loop.STAGES:
    stage = stages.build(name, config, manifest, mesh)
    feed = feeding.StageFeed(config, prepared, "train", stage, mesh, batch_size=8, batch_flag="b", train=True)
    with feed.device_batches() as batches:
      seen = [next(batches) for _ in range(12)]
    assert {b["input_ids"].shape[1] for b in seen} == {32, 64}  # one compilation per bucket
    assert all(set(b) == set(stage.train_fields) for b in seen)
  # The tagger's rows leave two padding columns: its input fits the bucket and equals tagger_inputs' cut there.
  build = stage.input_builder()
  for batch in seen:
    assert not np.asarray(batch["attention_mask"])[:, -2:].any()
    fitted = build(batch["input_ids"], batch["attention_mask"], batch["label"])
    full = build.build(batch["input_ids"], batch["attention_mask"], batch["label"])
    length = batch["input_ids"].shape[1]
    for cut, whole in zip(fitted, full):
      assert cut.shape[1] == length
      np.testing.assert_array_equal(np.asarray(cut), np.asarray(whole)[:, :length])
    assert not np.asarray(full[1])[:, length:].any(), "the columns cut are padding"


def test_dev_counts_run_per_device_with_one_all_reduce_and_match_one_device(prepared):
  # Left to XLA's partitioner, the tagger's span decoding (lax.top_k) gathered the batch's scores onto every device.
  manifest, config = prepare.load_manifest(prepared), tiny_config()
  for name in loop.STAGES:
    totals, programs = [], []
    for devices in (4, 1):
      stage = stages.build(name, config, manifest, parallel.make_mesh(devices))
      params = stage.initial_params(jax.random.key(0))
      scorer = loop.DevScorer(stage, config, prepared)
      with scorer.feed.device_batches() as batches:
        batches = list(batches)
      totals.append(sum(np.asarray(scorer.counts(params, batch)) for batch in batches))
      programs.append(scorer.counts.lower(params, batches[0]).compile().as_text())
    np.testing.assert_array_equal(totals[0], totals[1])
    assert totals[0][2] > 0, f"{name}: the dev split should have rows to count"
    assert "all-reduce" in programs[0]
    assert not re.search(r"all-gather|all-to-all|collective-permute|reduce-scatter", programs[0]), name


def test_a_stage_sets_its_own_dropout_and_zero_makes_the_train_step_deterministic(tmp_path, prepared):
  manifest = prepare.load_manifest(prepared)
  mesh = parallel.make_mesh(1)
  config = tiny_pretrained_config(tmp_path / "hf")  # the checkpoint's rates: 0.1 and 0.1
  config.tagger.update(hidden_dropout=0.0, attention_dropout=0.0)
  config.relation.attention_dropout = 0.25
  relation, tagger = (stages.build(name, config, manifest, mesh) for name in loop.STAGES)
  assert (relation.bert_config.hidden_dropout, relation.bert_config.attention_dropout) == (0.1, 0.25)
  assert (tagger.bert_config.hidden_dropout, tagger.bert_config.attention_dropout) == (0.0, 0.0)
  loss_terms = {stage.name: stage.loss_terms() for stage in (relation, tagger)}
  feed = feeding.StageFeed(config, prepared, "train", tagger, mesh, batch_size=8, batch_flag="b", train=True)
  with feed.device_batches() as batches:
    batch = next(batches)
  for stage in (relation, tagger):
    params = stage.initial_params(jax.random.PRNGKey(0))
    first, second = (float(loss_terms[stage.name](params, batch, jax.random.key(seed), False)[0])
                     for seed in (1, 2))
    assert (first == second) == (stage is tagger), (stage.name, first, second)


@pytest.mark.parametrize("background", [True, False])
def test_steps_compiled_ahead_serve_every_batch_without_compiling_again(prepared, background):
  """feed.abstract_batch describes each real batch exactly, so the programs compiled ahead (the first length at
  once, the others in background threads or, without `background`, at once too) are the ones the loop runs: the
  jitted function itself never compiles."""
  manifest = prepare.load_manifest(prepared)
  config, mesh = tiny_config(), parallel.make_mesh(4)
  for name in loop.STAGES:
    stage = stages.build(name, config, manifest, mesh)
    feeds = {train: feeding.StageFeed(config, prepared, "train" if train else "dev", stage, mesh, batch_size=8,
                                      batch_flag="b", train=train) for train in (True, False)}
    params = jax.device_put(stage.initial_params(jax.random.key(0)), parallel.replicated(mesh))
    terms = stage.loss_terms()
    loss = jax.jit(lambda p, b, terms=terms: terms(p, b, jax.random.key(1), False)[0])
    counts = jax.jit(stage.dev_counts())
    compiling = precompile.AheadOfTime([(loss, params, feeds[True]), (counts, params, feeds[False])],
                                       first_length=32, name=name, background=background)
    if not background:
      assert all(program.done() for function in compiling.functions for program in function._programs.values())
    for (train, feed), compiled in zip(feeds.items(), compiling.functions):
      with feed.device_batches() as batches:
        seen = [next(batches) for _ in range(12)] if train else list(batches)
      assert {b["input_ids"].shape[1] for b in seen} == set(feed.lengths) == {32, 64}
      for batch in seen:
        spec = feed.abstract_batch(batch["input_ids"].shape[1])
        assert {k: (v.shape, v.dtype, v.sharding) for k, v in batch.items()} == \
            {k: (v.shape, v.dtype, v.sharding) for k, v in spec.items()}
        compiled(params, batch)
    compiling.close()
    assert loss._cache_size() == counts._cache_size() == 0, "a batch missed the programs compiled ahead"


def test_config_overrides_reach_the_run_and_bad_ones_are_refused(tmp_path):
  result = subprocess.run(train_command(tmp_path / "w", "--config.relation.no_such_knob=1"), cwd=REPO,
                          capture_output=True, text=True)
  assert result.returncode != 0
  assert "no_such_knob" in result.stderr
