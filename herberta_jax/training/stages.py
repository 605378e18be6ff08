"""A training stage as one object: its module, initial parameters, loss, dev counts and the fields its step reads.

`RelationStage` and `TaggerStage` share one interface, so the training loop has no per-stage branch. A stage
writes its encoder config to `WORKDIR/<stage>/model_config.json` when training starts, so restoring it later
(export, the tagger's `init_from_relation`) needs only the workdir, not the pretrained checkpoint it started from.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp

from herberta_jax import storage
from herberta_jax.data.example import NEGATIVE_LABEL
from herberta_jax.data.tokenize import TAGGER_EXTRA_TOKENS
from herberta_jax.model import hf
from herberta_jax.model import inputs as model_inputs
from herberta_jax.model.bert import BertConfig
from herberta_jax.model.heads import EntityTagger, RelationClassifier
from herberta_jax.training import parallel, steps

STAGES = ("relation", "tagger")
MODEL_CONFIG = "model_config.json"


def scratch_bert_config(config, manifest: dict) -> BertConfig:
  """The encoder of a run from scratch: `model.scratch` over the prepared tokenizer's vocabulary."""
  scratch = config.model.scratch
  return BertConfig(vocab_size=manifest["tokenizer"]["vocab_size"], hidden_size=scratch.hidden_size,
                    num_layers=scratch.num_layers, num_heads=scratch.num_heads,
                    intermediate_size=scratch.intermediate_size, hidden_dropout=scratch.hidden_dropout,
                    attention_dropout=scratch.attention_dropout,
                    max_position_embeddings=scratch.max_position_embeddings,
                    pad_token_id=manifest["tokenizer"]["pad_id"], dtype=config.model.dtype)


class FittedTaggerInputs:
  """The tagger input `[CLS] [relation] [SEP] sentence [SEP]` built within the relation input's length L.

  `model.inputs.tagger_inputs` returns L + 2 columns; the last two are padding whenever every row of the batch
  is at most L - 2 tokens long, which the training feed guarantees (its pipeline buckets are 2 shorter than the
  padded length, feeding.py). Cutting them keeps the tagger on the bucket lengths: one compilation per bucket.
  """

  def __init__(self, build: model_inputs.TaggerInputs):
    self.build = build

  def __call__(self, input_ids, attention_mask, labels):
    length = input_ids.shape[1]
    return tuple(x[:, :length] for x in self.build(input_ids, attention_mask, labels))


class Stage:
  """The interface of a stage; subclasses set the module, the loss and the dev counts."""

  name: str
  extra_columns: int  # padding columns the stage needs after each row, beyond the record's own length
  train_fields: tuple[str, ...]  # the batch fields the train step reads (the only ones sent to the device)
  dev_fields: tuple[str, ...]

  def __init__(self, config, manifest: dict, mesh, bert_config: BertConfig, pretrained: dict | None):
    self.config, self.manifest, self.mesh = config, manifest, mesh
    if bert_config.kernels:  # the kernels run per device on the batch the mesh splits
      bert_config = bert_config.replace(kernel_mesh=mesh)
    self.bert_config, self.pretrained = bert_config, pretrained
    self.module = self.make_module()

  def make_module(self):
    raise NotImplementedError

  def dummy_inputs(self) -> tuple:
    raise NotImplementedError

  def init_kwargs(self) -> dict:
    return {}

  def loss_terms(self):
    """`loss_terms(params, batch, rng, deterministic)` for `steps.make_train_step`."""
    raise NotImplementedError

  def dev_counts(self):
    """`counts(params, batch) -> int32 [tp, predicted, gold]` summed over the batch's rows (jittable)."""
    raise NotImplementedError

  def init(self, rng):
    """Freshly initialised parameters (every head the training loss uses)."""
    return self.module.init(rng, *self.dummy_inputs(), **self.init_kwargs())["params"]

  def initial_params(self, rng):
    """Parameters created already replicated on the mesh; the encoder replaced by pretrained weights if any."""
    params = jax.jit(self.init, out_shardings=parallel.replicated(self.mesh))(rng)
    if self.pretrained is not None:
      encoder = self.pretrained
      if encoder["embeddings"]["word_embeddings"]["embedding"].shape[0] < self.bert_config.vocab_size:
        encoder = hf.resize_token_embeddings(encoder, self.bert_config.vocab_size, jax.random.fold_in(rng, 1))
      params = dict(params)
      params["bert"] = jax.device_put(encoder, parallel.replicated(self.mesh))
    return params

  def save_model_config(self, stage_dir) -> None:
    stage_dir = storage.path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    storage.write_atomically(stage_dir / MODEL_CONFIG, json.dumps(self.bert_config.checkpoint_fields(), indent=2)
                             + "\n")


class RelationStage(Stage):
  name = "relation"
  extra_columns = 0
  dev_fields = ("input_ids", "attention_mask", "label", "valid")

  def __init__(self, config, manifest, mesh, bert_config, pretrained):
    # The auxiliary entity head exists only when its loss is on (its checkpoints hold it). `.get`: configs saved
    # in workdirs before the knob existed.
    self.entity_loss_weight = float(config.relation.get("entity_loss_weight", 0.0))
    self.train_fields = self.dev_fields + (("spans",) if self.entity_loss_weight else ())
    super().__init__(config, manifest, mesh, bert_config, pretrained)

  def make_module(self):
    return RelationClassifier(self.bert_config, num_labels=len(self.manifest["labels"]))

  def dummy_inputs(self):
    return (jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), jnp.int32))

  def init_kwargs(self):
    return {"with_entity_logits": True} if self.entity_loss_weight else {}

  def loss_terms(self):
    module, weight = self.module, self.entity_loss_weight
    return lambda p, b, r, d: steps.relation_loss_terms(module, p, b, r, d, entity_loss_weight=weight)

  def dev_counts(self):
    labels = self.manifest["labels"]
    negative = labels.index(NEGATIVE_LABEL) if NEGATIVE_LABEL in labels else -1
    module = self.module
    return lambda params, batch: steps.relation_counts(module, params, batch, negative=negative)


class TaggerStage(Stage):
  name = "tagger"
  extra_columns = TAGGER_EXTRA_TOKENS
  train_fields = dev_fields = ("input_ids", "attention_mask", "label", "spans", "valid")

  def make_module(self):
    return EntityTagger(self.bert_config)

  def dummy_inputs(self):
    ids, mask = jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), jnp.int32)
    return (ids, mask, jnp.zeros_like(ids), mask)

  def input_builder(self) -> FittedTaggerInputs:
    table = [self.manifest["relation_token_ids"][label] for label in self.manifest["labels"]]
    tok = self.manifest["tokenizer"]
    return FittedTaggerInputs(model_inputs.TaggerInputs(
        table, cls_id=tok["cls_id"], sep_id=tok["sep_id"], pad_id=tok["pad_id"],
        two_segments=self.bert_config.type_vocab_size >= 2))

  def loss_terms(self):
    module, build = self.module, self.input_builder()
    return lambda p, b, r, d: steps.tagger_loss_terms(module, build, p, b, r, d)

  def dev_counts(self):
    module, build, infer = self.module, self.input_builder(), self.config.infer
    return lambda params, batch: steps.tagger_counts(module, build, params, batch, max_span_len=infer.max_span_len,
                                                     disjoint=infer.disjoint_entities,
                                                     ordered=infer.ordered_entities)


_CLASSES = {cls.name: cls for cls in (RelationStage, TaggerStage)}


def build(name: str, config, manifest: dict, mesh, *, load_pretrained: bool = True) -> Stage:
  """The stage to train: encoder from `model.init_from` (its weights loaded when `load_pretrained`) or scratch."""
  pretrained = None
  if config.model.init_from:
    if load_pretrained:
      bert_config, pretrained = hf.load_encoder(config.model.init_from, add_pooler=(name == "relation"))
    else:
      bert_config = hf.read_config(hf.resolve_checkpoint(config.model.init_from))[0]
    bert_config = bert_config.replace(vocab_size=max(manifest["tokenizer"]["vocab_size"], bert_config.vocab_size),
                                      dtype=config.model.dtype)
  else:
    bert_config = scratch_bert_config(config, manifest)
  bert_config = with_kernels(with_stage_dropout(bert_config, config[name]), config)
  return _CLASSES[name](config, manifest, mesh, bert_config, pretrained)


def with_kernels(bert_config: BertConfig, config) -> BertConfig:
  """The encoder config with the run's `model.kernels` (a runtime choice: any checkpoint trains or runs with or
  without them)."""
  return bert_config.replace(kernels=config.model.get("kernels", ""))


def with_stage_dropout(bert_config: BertConfig, stage_config) -> BertConfig:
  """The encoder config with the stage's dropout rates where it sets them (>= 0; -1 keeps the encoder's)."""
  rates = {key: stage_config.get(key, -1.0) for key in ("hidden_dropout", "attention_dropout")}
  return bert_config.replace(**{key: rate for key, rate in rates.items() if rate >= 0})


def from_workdir(stage_dir, name: str, config, manifest: dict, mesh) -> Stage:
  """The stage a workdir trained, its module built from the saved encoder config: no pretrained weights read.
  Workdirs from before model_config.json fall back to the config's encoder (reading only its config.json)."""
  path = storage.path(stage_dir) / MODEL_CONFIG
  if not path.exists():
    return build(name, config, manifest, mesh, load_pretrained=False)
  return _CLASSES[name](config, manifest, mesh, with_kernels(BertConfig(**json.loads(path.read_text())), config), None)
