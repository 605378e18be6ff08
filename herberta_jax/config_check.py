"""`check_config(config)`: every value a run reads is checked before any work, naming the key as `--config.a.b`.

A bad value otherwise surfaces minutes later, deep inside training, as an error that names no key (or not at all:
a zero learning rate trains nothing). Checks are by range and choice only; paths are checked where they are used.
"""

from __future__ import annotations

from herberta_jax.errors import ConfigError
from herberta_jax.model import kernels

_STAGES = ("relation", "tagger")


def _get(config, key: str):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _require(config, key: str, ok, expected: str) -> None:
  value = _get(config, key)
  try:
    good = bool(ok(value))
  except TypeError:  # e.g. None compared with a number
    good = False
  if not good:
    raise ConfigError(f"--config.{key}={value!r}: {expected}")


def _positive_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_config(config) -> None:
  """Raises ConfigError naming the first out-of-range config value, with the values that would do."""
  _require(config, "stage", lambda v: v in _STAGES + ("both",), "use relation, tagger or both")
  _require(config, "log_every_steps", _positive_int, "use a whole number >= 1")
  _require(config, "data.dev_fraction", lambda v: 0 <= v < 1, "use a share in [0, 1), e.g. 0.02 (0 disables)")
  _require(config, "data.max_seq_len", lambda v: _positive_int(v) and v >= 8, "use a whole number >= 8, e.g. 128")
  _require(config, "data.on_error", lambda v: v in ("fail", "skip"), "use fail or skip")
  _require(config, "data.mixture", lambda v: v in ("proportional", "uniform", "temperature"),
           "use proportional, uniform or temperature")
  _require(config, "data.temperature", lambda v: v > 0, "use a number > 0")
  _require(config, "data.host_reading", lambda v: v in ("shards", "all"), "use shards or all")
  _require(config, "data.wordpiece_vocab_size", _positive_int, "use a whole number >= 1, e.g. 8000")
  max_len = config.data.max_seq_len
  _require(config, "data.bucket_boundaries",
           lambda v: len(v) >= 1 and all(_positive_int(b) for b in v) and list(v) == sorted(set(v)),
           "use ascending whole numbers, e.g. (32,64,128)")
  _require(config, "data.bucket_boundaries", lambda v: v[-1] <= max_len,
           f"the largest bucket must not exceed --config.data.max_seq_len={max_len}")
  for stage in _STAGES:
    # 0 is allowed: it freezes a stage (e.g. a tagger kept at the relation encoder it starts from).
    _require(config, f"{stage}.learning_rate", lambda v: v >= 0, "use a number > 0, e.g. 3e-5")
    _require(config, f"{stage}.batch_size", _positive_int, "use a whole number >= 1")
    _require(config, f"{stage}.num_epochs", lambda v: v > 0, "use a number > 0")
    _require(config, f"{stage}.accum_steps", _positive_int, "use a whole number >= 1 (1: no accumulation)")
    _require(config, f"{stage}.batch_size", lambda v, stage=stage: v % config[stage].accum_steps == 0,
             f"must be a multiple of --config.{stage}.accum_steps={config[stage].accum_steps}")
    _require(config, f"{stage}.patience", lambda v: isinstance(v, int) and v >= 0, "use 0 (no early stopping) or more")
    _require(config, f"{stage}.warmup_fraction", lambda v: 0 <= v < 1, "use a share in [0, 1), e.g. 0.1")
    _require(config, f"{stage}.weight_decay", lambda v: v >= 0, "use a number >= 0")
    _require(config, f"{stage}.max_grad_norm", lambda v: v >= 0, "use a number >= 0")
    _require(config, f"{stage}.layer_decay", lambda v: 0 < v <= 1, "use a number in (0, 1], e.g. 0.9 (1: off)")
    for rate in ("hidden_dropout", "attention_dropout"):
      _require(config, f"{stage}.{rate}", lambda v: v == -1 or 0 <= v < 1,
               "use a rate in [0, 1), or -1 for the encoder's own")
    _require(config, f"{stage}.eval_every_steps", lambda v: isinstance(v, int) and v >= 0,
             "use 0 (once per epoch) or more")
    _require(config, f"{stage}.checkpoint_every_steps", _positive_int, "use a whole number >= 1")
  for key in ("batch_size", "max_span_len", "top_k", "top_m"):
    _require(config, f"infer.{key}", _positive_int, "use a whole number >= 1")
  _require(config, "mesh.num_devices", lambda v: v == -1 or _positive_int(v), "use -1 (every device) or >= 1")
  _require(config, "model.dtype", lambda v: v in ("float32", "bfloat16", "float16"),
           "use float32, bfloat16 or float16")
  _require(config, "model.kernels", _kernel_names,
           f"use \"\" (none), \"all\" or a comma-separated subset of {', '.join(kernels.NAMES)}")
  _require(config, "dropout_rng_impl", lambda v: v in ("rbg", "unsafe_rbg", "threefry2x32"),
           "use rbg, unsafe_rbg or threefry2x32")


def _kernel_names(value) -> bool:
  try:
    return isinstance(value, str) and kernels.parse(value) is not None
  except ValueError:
    return False


def _changed(old, new) -> bool:
  return old != new


def _switched(old, new) -> bool:
  return bool(old) != bool(new)


def _decay_switched(old, new) -> bool:
  return (old == 1.0) != (new == 1.0)  # 1.0 leaves the per-layer scaling out of the optimizer


# Settings a stage's checkpoints are shaped by: (key, stages it shapes, whether a change breaks the restore, why).
# Other changes resume fine (a learning rate, the epochs): they are only recorded.
_CHECKPOINT_SHAPING = (
    ("dropout_rng_impl", _STAGES, _changed, "the train state stores a dropout key of that kind"),
    *((f"model.scratch.{size}", _STAGES, _changed, "the encoder's parameters have other shapes")
      for size in ("hidden_size", "num_layers", "intermediate_size", "max_position_embeddings")),
    *((f"{stage}.max_grad_norm", (stage,), _switched, "clipping on or off changes the optimizer state")
      for stage in _STAGES),
    *((f"{stage}.layer_decay", (stage,), _decay_switched, "layer-wise decay on or off changes the optimizer state")
      for stage in _STAGES),
    ("relation.entity_loss_weight", ("relation",), _switched,
     "the auxiliary entity head's parameters come or go with it"),
)
# What a workdir's config.json written before a key existed meant by its absence.
_BEFORE_THE_KEY = {"dropout_rng_impl": "threefry2x32", "relation.entity_loss_weight": 0.0,
                   "relation.layer_decay": 1.0, "tagger.layer_decay": 1.0}


def flat_settings(config: dict, prefix: str = "") -> dict:
  """A config as a plain (JSON) dict, flattened to `a.b.c` keys."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat.update(flat_settings(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def check_resume(previous: dict, current: dict, stages_with_checkpoints, workdir) -> dict:
  """The settings that changed since the run that wrote a workdir's checkpoints, as {key: (old, new)}.

  `previous` and `current` are configs as plain (JSON) dicts. Raises ConfigError, naming the key and both values,
  when a change would leave a stage's checkpoints unrestorable (a run would otherwise fail at its restore, or
  suggest deleting them).
  """
  old, new = {**_BEFORE_THE_KEY, **flat_settings(previous)}, flat_settings(current)
  changes = {key: (old.get(key), new.get(key)) for key in sorted(old.keys() | new.keys())
             if old.get(key) != new.get(key)}
  from_scratch = not new.get("model.init_from") and not old.get("model.init_from")
  for key, stages, breaks, why in _CHECKPOINT_SHAPING:
    if key not in changes or (key.startswith("model.scratch.") and not from_scratch):
      continue
    affected = [stage for stage in stages if stage in stages_with_checkpoints]
    was, now = changes[key]
    if affected and was is not None and breaks(was, now):
      raise ConfigError(
          f"--config.{key}={now!r}: the {' and '.join(affected)} checkpoints in --workdir {workdir} were trained "
          f"with {was!r} and cannot be restored with {now!r} ({why}); resume with --config.{key}={was!r}, or "
          "train in a new --workdir")
  return changes
