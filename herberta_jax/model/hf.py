"""HuggingFace checkpoints in and out: BERT / RoBERTa encoders, and HERBERTa's two models as PyTorch classes.

Our parameter tree mirrors HF's module names (see `bert.py`), so a tensor name converts by rule:
`encoder/layer_3/output/dense/kernel` <-> `encoder.layer.3.output.dense.weight` (transposed), `embedding` and
LayerNorm `scale` <-> `weight`. Relation models export as `BertForSequenceClassification` (RoBERTa family:
`XLMRobertaForSequenceClassification`, whose dense+tanh+out_proj head is our pooler + classifier), taggers as
`...ForTokenClassification` with the four labels e1_start, e1_end, e2_start, e2_end.
"""

from __future__ import annotations

import json
import logging
import pathlib

import flax
import jax
import jax.numpy as jnp
import numpy as np

from herberta_jax.data.locations import looks_like_path
from herberta_jax.errors import UserError
from herberta_jax.model.bert import BertConfig, BertEncoder
from herberta_jax.model.heads import TAGGER_OUTPUTS

log = logging.getLogger(__name__)

# Tensors of pre-training or task heads that an encoder import leaves behind on purpose.
_HEAD_PREFIXES = ("cls.", "lm_head.", "classifier.", "qa_outputs.", "pre_classifier.", "score.")
# Buffers, not parameters.
_IGNORED_SUFFIXES = ("position_ids", "token_type_ids")
_CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "camembert": "Camembert"}


class CheckpointError(UserError, ValueError):
  """A checkpoint that does not fit: missing or unexpected tensors, wrong shapes, unreadable files."""


# ----------------------------------------------------------------------------------------------- locating files


def resolve_checkpoint(name_or_path) -> pathlib.Path:
  """A local checkpoint directory, or a hub name downloaded (where there is network) to the HF cache."""
  text = str(name_or_path)
  path = pathlib.Path(text).expanduser()
  if path.is_dir():
    return path
  if looks_like_path(text):
    raise FileNotFoundError(f"checkpoint {text!r}: no such directory. Pass a directory holding config.json and "
                            "model.safetensors (or pytorch_model.bin), or a hub name such as bert-base-cased.")
  try:
    import huggingface_hub
    return pathlib.Path(huggingface_hub.snapshot_download(
        text, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "pytorch_model.bin"]))
  except Exception as err:  # offline, unknown repository, ...: say both things we tried
    raise FileNotFoundError(
        f"checkpoint {text!r} is not a local directory and could not be fetched from the HuggingFace hub "
        f"({type(err).__name__}: {err}). Without network access, download it elsewhere and pass its directory."
    ) from err


def read_config(directory: pathlib.Path) -> tuple[BertConfig, dict]:
  file = directory / "config.json"
  if not file.exists():
    raise FileNotFoundError(f"{directory}: no config.json; is this a HuggingFace checkpoint directory?")
  try:
    raw = json.loads(file.read_text())
  except json.JSONDecodeError as err:
    raise CheckpointError(f"{file}: not valid JSON ({err})") from err
  return BertConfig.from_hf_dict(raw, source=str(file)), raw


def read_tensors(directory: pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of a checkpoint as float32 numpy: model.safetensors (or its sharded index), else
  pytorch_model.bin through torch."""
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  index = directory / "model.safetensors.index.json"
  files = [directory / "model.safetensors"]
  if index.exists():
    files = [directory / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
  if all(f.exists() for f in files):
    tensors = {}
    for f in files:
      try:
        tensors.update(load_file(str(f)))
      except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{f}: cannot read safetensors file ({err}); it may be truncated or corrupt, "
                              "download or export it again") from err
    return {k: _float32(v) for k, v in tensors.items()}
  bin_file = directory / "pytorch_model.bin"
  if bin_file.exists():
    try:
      import torch
    except ImportError as err:
      raise CheckpointError(f"{bin_file}: reading a PyTorch checkpoint needs torch installed (pip install torch), "
                            "or convert it to model.safetensors") from err
    try:
      state = torch.load(str(bin_file), map_location="cpu", weights_only=True)
    except Exception as err:
      raise CheckpointError(f"{bin_file}: cannot read PyTorch checkpoint ({err})") from err
    return {k: v.float().numpy() for k, v in state.items()}
  raise FileNotFoundError(f"{directory}: no model.safetensors or pytorch_model.bin")


def _float32(x: np.ndarray) -> np.ndarray:
  return x.astype(np.float32) if np.issubdtype(x.dtype, np.floating) else x


# ------------------------------------------------------------------------------------------------ name mapping


def hf_name(path: tuple[str, ...]) -> str:
  """Our parameter path -> HF tensor name (without the model prefix)."""
  parts = [p.replace("layer_", "layer.") if p.startswith("layer_") else p for p in path[:-1]]
  leaf = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}[path[-1]]
  return ".".join(parts + [leaf])


def _to_hf(path, value: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(value.T) if path[-1] == "kernel" else np.ascontiguousarray(value)


def _from_hf(path, value: np.ndarray) -> np.ndarray:
  return value.T if path[-1] == "kernel" else value


def _legacy_rename(name: str) -> str:
  """Old TF-converted checkpoints name LayerNorm parameters gamma/beta."""
  return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def encoder_shapes(config: BertConfig, add_pooler: bool) -> dict[tuple[str, ...], tuple[int, ...]]:
  abstract = jax.eval_shape(
      lambda: BertEncoder(config, add_pooler=add_pooler).init(
          jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), jnp.int32))["params"])
  return {path: leaf.shape for path, leaf in flax.traverse_util.flatten_dict(abstract).items()}


def _strip_prefix(tensors: dict, model_type: str) -> tuple[dict, str]:
  """Removes the `bert.` / `roberta.` prefix task models put before encoder tensors."""
  for prefix in (model_type.replace("xlm-", "") + ".", "bert.", "roberta.", "model."):
    if any(k.startswith(prefix) for k in tensors):
      return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in tensors.items()}, prefix
  return tensors, ""


def encoder_from_tensors(tensors: dict, config: BertConfig, *, add_pooler: bool, source: str,
                         rng=None) -> tuple[dict, dict]:
  """Builds our encoder tree from HF tensors. Returns (encoder params, tensors not used by the encoder).

  Raises CheckpointError naming every missing tensor and every shape that does not fit. A missing pooler is
  initialised at random (with a logged note): some checkpoints ship without one.
  """
  tensors = {_legacy_rename(k): v for k, v in tensors.items() if not k.endswith(_IGNORED_SUFFIXES)}
  tensors, _ = _strip_prefix(tensors, config.model_type)
  expected = encoder_shapes(config, add_pooler)
  flat, missing, wrong = {}, [], []
  for path, shape in expected.items():
    name = hf_name(path)
    if name not in tensors:
      missing.append(name)
      continue
    value = _from_hf(path, tensors[name])
    if value.shape != shape:
      wrong.append(f"{name}: checkpoint {tuple(tensors[name].shape)}, model expects "
                   f"{tuple(_to_hf(path, np.empty(shape, np.float32)).shape)}")
    flat[path] = value
  pooler_missing = [m for m in missing if m.startswith("pooler.")]
  if pooler_missing and len(pooler_missing) == len(missing):
    log.warning("%s has no pooler (%s): initialising it at random", source, ", ".join(pooler_missing))
    rng = jax.random.PRNGKey(0) if rng is None else rng
    for path, shape in expected.items():
      if path[0] == "pooler":
        flat[path] = (np.zeros(shape, np.float32) if path[-1] == "bias"
                      else 0.02 * np.asarray(jax.random.normal(rng, shape), np.float32))
    missing = []
  if missing or wrong:
    problems = ([f"missing tensors: {', '.join(missing)}"] if missing else []) + (
        [f"shape mismatches: {'; '.join(wrong)}"] if wrong else [])
    raise CheckpointError(f"{source} does not fit a {config.model_type} encoder of this config: "
                          + " | ".join(problems))
  used = {hf_name(p) for p in expected}
  rest = {k: v for k, v in tensors.items() if k not in used}
  return flax.traverse_util.unflatten_dict(flat), rest


# ------------------------------------------------------------------------------------------------------- import


def load_encoder(name_or_path, add_pooler: bool = True) -> tuple[BertConfig, dict]:
  """A pretrained encoder (BERT, mBERT, MiniLM, RoBERTa, XLM-R, ...) as (config, numpy params).

  Tensors of pre-training heads (`cls.*`, `lm_head.*`) are left out with a logged note; any other tensor the
  encoder does not use is an error naming it, as are missing tensors and wrong shapes.
  """
  directory = resolve_checkpoint(name_or_path)
  config, _ = read_config(directory)
  tensors = read_tensors(directory)
  params, rest = encoder_from_tensors(tensors, config, add_pooler=add_pooler, source=str(directory))
  heads = sorted(k for k in rest if k.startswith(_HEAD_PREFIXES) or (not add_pooler and k.startswith("pooler.")))
  unexpected = sorted(set(rest) - set(heads))
  if unexpected:
    raise CheckpointError(f"{directory}: unexpected tensors not part of a {config.model_type} encoder: "
                          f"{', '.join(unexpected)}")
  if heads:
    log.info("%s: not using %d head tensors (%s%s)", directory, len(heads), ", ".join(heads[:4]),
             ", ..." if len(heads) > 4 else "")
  return config, params


def resize_token_embeddings(encoder: dict, new_vocab_size: int, rng) -> dict:
  """Grows the word embeddings to `new_vocab_size` rows (added relation tokens), new rows drawn around the
  mean of the existing ones so they start in-distribution."""
  table = np.asarray(encoder["embeddings"]["word_embeddings"]["embedding"])
  old = table.shape[0]
  if new_vocab_size <= old:
    return encoder
  log.info("resizing word embeddings from %d to %d rows for added tokens", old, new_vocab_size)
  noise = 0.02 * np.asarray(jax.random.normal(rng, (new_vocab_size - old, table.shape[1])), np.float32)
  grown = np.concatenate([table, table.mean(axis=0, keepdims=True) + noise]).astype(np.float32)
  embeddings = dict(encoder["embeddings"], word_embeddings={"embedding": grown})
  return dict(encoder, embeddings=embeddings)


def _task_model(directory, num_outputs_key: str):
  directory = pathlib.Path(directory)
  config, raw = read_config(directory)
  tensors = read_tensors(directory)
  add_pooler = num_outputs_key == "relation"
  head_names = ("classifier.weight", "classifier.bias")
  if config.is_roberta and add_pooler:
    # XLMRobertaForSequenceClassification: classifier.dense is our pooler, classifier.out_proj our classifier.
    tensors = {("roberta.pooler." + k[len("classifier."):] if k.startswith("classifier.dense.") else k): v
               for k, v in tensors.items()}
    head_names = ("classifier.out_proj.weight", "classifier.out_proj.bias")
  params, rest = encoder_from_tensors(tensors, config, add_pooler=add_pooler, source=str(directory))
  missing = [k for k in head_names if k not in rest]
  if missing:
    raise CheckpointError(f"{directory}: missing tensors {', '.join(missing)}")
  head = {"kernel": rest.pop(head_names[0]).T, "bias": rest.pop(head_names[1])}
  rest = {k: v for k, v in rest.items() if not (not add_pooler and k.startswith("pooler."))}
  if rest:
    raise CheckpointError(f"{directory}: unexpected tensors {', '.join(sorted(rest))}")
  return config, raw, {"bert": params, "classifier": head}


def load_relation_model(directory) -> tuple[BertConfig, dict, dict[int, str]]:
  """An exported relation classifier: (config, params, id2label)."""
  config, raw, params = _task_model(directory, "relation")
  id2label = {int(k): v for k, v in raw.get("id2label", {}).items()}
  return config, params, id2label


def load_tagger_model(directory) -> tuple[BertConfig, dict]:
  """An exported entity tagger: (config, params)."""
  config, raw, params = _task_model(directory, "tagger")
  labels = [raw.get("id2label", {}).get(str(i)) for i in range(len(TAGGER_OUTPUTS))]
  if labels != list(TAGGER_OUTPUTS):
    raise CheckpointError(f"{directory}/config.json: id2label {raw.get('id2label')} is not the tagger's "
                          f"{list(TAGGER_OUTPUTS)}")
  return config, params


# ------------------------------------------------------------------------------------------------------- export


def _encoder_tensors(config: BertConfig, encoder: dict) -> dict[str, np.ndarray]:
  prefix = "roberta." if config.is_roberta else "bert."
  return {prefix + hf_name(path): _to_hf(path, np.asarray(value, np.float32))
          for path, value in flax.traverse_util.flatten_dict(encoder).items()}


def _write(out_dir, config: BertConfig, architecture: str, tensors: dict, labels: dict[int, str], tokenizer):
  from safetensors.numpy import save_file
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  hf = config.to_hf_dict()
  hf.update(architectures=[architecture], id2label={str(i): name for i, name in labels.items()},
            label2id={name: i for i, name in labels.items()}, torch_dtype="float32")
  (out_dir / "config.json").write_text(json.dumps(hf, indent=2, ensure_ascii=False) + "\n")
  save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
  if tokenizer is not None:
    tokenizer.save_pretrained(str(out_dir))
  return out_dir


def export_relation(out_dir, config: BertConfig, params: dict, id2label: dict[int, str], tokenizer=None):
  """Writes a `...ForSequenceClassification` checkpoint (+ tokenizer) loadable by transformers' PyTorch."""
  encoder = dict(params["bert"])
  head = params["classifier"]
  if config.is_roberta:
    pooler = encoder.pop("pooler")["dense"]
    tensors = _encoder_tensors(config, encoder)
    tensors.update({"classifier.dense.weight": pooler["kernel"].T, "classifier.dense.bias": pooler["bias"],
                    "classifier.out_proj.weight": head["kernel"].T, "classifier.out_proj.bias": head["bias"]})
  else:
    tensors = _encoder_tensors(config, encoder)
    tensors.update({"classifier.weight": head["kernel"].T, "classifier.bias": head["bias"]})
  tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in tensors.items()}
  architecture = _CLASS_PREFIX[config.model_type] + "ForSequenceClassification"
  return _write(out_dir, config, architecture, tensors, dict(id2label), tokenizer)


def export_tagger(out_dir, config: BertConfig, params: dict, tokenizer=None):
  """Writes a `...ForTokenClassification` checkpoint with labels e1_start, e1_end, e2_start, e2_end."""
  tensors = _encoder_tensors(config, params["bert"])
  head = params["classifier"]
  tensors.update({"classifier.weight": np.asarray(head["kernel"]).T, "classifier.bias": head["bias"]})
  tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in tensors.items()}
  architecture = _CLASS_PREFIX[config.model_type] + "ForTokenClassification"
  return _write(out_dir, config, architecture, tensors, dict(enumerate(TAGGER_OUTPUTS)), tokenizer)
