"""Writes a trained pipeline as HuggingFace checkpoints plus `herberta.json`, the glue between the two.

    DIR/relation/       BertForSequenceClassification (+ tokenizer)
    DIR/tagger/         BertForTokenClassification with labels e1_start, e1_end, e2_start, e2_end (+ tokenizer
                        with its relation tokens)
    DIR/herberta.json   labels, relation-token mapping, max length, negative label, format version
    DIR/config.json, DIR/herberta_pipeline.py, DIR/herberta_schema.py, DIR/tokenizer*
                        the root as a transformers custom pipeline (`pipeline(model=DIR, trust_remote_code=True)`):
                        a config naming the pipeline code beside it, the code and the export schema it checks, and
                        the tagger's tokenizer

Every file is written with the modes the user's umask gives (`apply_umask`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import jax
import numpy as np

from herberta_jax import __version__, storage
from herberta_jax.data import tokenize
from herberta_jax.data.example import NEGATIVE_LABEL
from herberta_jax.hub.herberta_schema import FORMAT_VERSION as EXPORT_FORMAT_VERSION
from herberta_jax.model import hf


def host_params(params):
  """Parameters as numpy on this host (replicated arrays: the local copy; works in multi-process runs too)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x),
                      params)


def decoding_of(config) -> dict:
  """The run's decoding settings, which an export carries as the defaults of predict, evaluate and the PyTorch
  pipeline: the spans, and the relations (`top_k`) and pairs (`top_m`) each sentence's best triple is chosen
  among by joint probability."""
  return {"max_span_len": int(config.infer.max_span_len),
          "disjoint_entities": bool(config.infer.disjoint_entities),
          "ordered_entities": bool(config.infer.get("ordered_entities", False)),  # absent from older workdirs
          "top_k": int(config.infer.top_k), "top_m": int(config.infer.top_m)}


def export_meta(manifest: dict, bucket_boundaries, two_segments: bool, decoding: dict) -> dict:
  """The contents of herberta.json: what a reader of the two checkpoints needs to chain them."""
  tok = manifest["tokenizer"]
  return {
      "format_version": EXPORT_FORMAT_VERSION,
      "herberta_jax_version": __version__,  # which release wrote it, for the card and bug reports
      "labels": list(manifest["labels"]),
      "negative_label": manifest.get("negative_label", NEGATIVE_LABEL),
      "relation_tokens": dict(manifest["relation_tokens"]),
      "relation_token_ids": dict(manifest["relation_token_ids"]),
      "max_seq_len": manifest["max_seq_len"],
      "bucket_boundaries": [int(b) for b in bucket_boundaries],
      "cls_id": tok["cls_id"], "sep_id": tok["sep_id"], "pad_id": tok["pad_id"],
      "two_segments": bool(two_segments),
      "tagger_input": "[CLS] [relation] [SEP] sentence [SEP]",
      "decoding": dict(decoding),
  }


def write_export(out_dir, data_dir, meta: dict, relation, tagger) -> pathlib.Path:
  """`relation` and `tagger` are (BertConfig, params) pairs; `meta` from `export_meta`; the tokenizer is the
  prepared one in `data_dir`."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  tokenizer = tokenize.load_tokenizer(storage.path(data_dir) / "tokenizer")  # data_dir may be a URL
  rel_config, rel_params = relation
  tag_config, tag_params = tagger
  id2label = dict(enumerate(meta["labels"]))
  hf.export_relation(out_dir / "relation", rel_config, host_params(rel_params), id2label, tokenizer)
  hf.export_tagger(out_dir / "tagger", tag_config, host_params(tag_params), tokenizer)
  (out_dir / "herberta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
  write_pipeline_files(out_dir, meta, tokenizer)
  apply_umask(out_dir)
  return out_dir


def current_umask() -> int:
  """The process's umask, read without changing it where Linux shows it (changing it races other threads)."""
  try:
    with open("/proc/self/status", encoding="ascii") as status:
      for line in status:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def apply_umask(folder) -> None:
  """Gives `folder` and everything under it the modes the user's umask gives new files (normally 0644, folders
  0755). safetensors writes its files 0600, and a staging folder from `tempfile.mkdtemp` is 0700: an export on a
  shared cluster must be readable by the users the umask lets read it."""
  mask = current_umask()
  os.chmod(folder, 0o777 & ~mask)
  for root, folders, files in os.walk(folder):
    for name in folders:
      os.chmod(os.path.join(root, name), 0o777 & ~mask)
    for name in files:
      os.chmod(os.path.join(root, name), 0o666 & ~mask)


PIPELINE_SOURCE = pathlib.Path(__file__).with_name("herberta_pipeline.py")  # shipped as-is (torch, transformers)
PIPELINE_MODULE = PIPELINE_SOURCE.stem
# Shipped beside it: the export schema the pipeline checks on load (it imports it relatively, as transformers'
# remote code allows), the very file herberta_jax checks exports with.
SCHEMA_SOURCE = pathlib.Path(__file__).with_name("herberta_schema.py")


def pipeline_config(meta: dict) -> dict:
  """The export root's config.json: transformers finds the pipeline class and its model class through it
  (`custom_pipelines`, `auto_map`, both loaded with trust_remote_code) in the module copied beside it."""
  import transformers
  return {
      "model_type": "herberta-two-stage",
      "architectures": ["HerbertaTwoStageModel"],
      "auto_map": {"AutoConfig": f"{PIPELINE_MODULE}.HerbertaConfig",
                   "AutoModel": f"{PIPELINE_MODULE}.HerbertaTwoStageModel"},
      "custom_pipelines": {"relation-extraction": {"impl": f"{PIPELINE_MODULE}.RelationExtractionPipeline",
                                                   "pt": ["AutoModel"], "tf": [], "type": "text"}},
      "relation": "relation",
      "tagger": "tagger",
      "herberta": meta,
      "transformers_version": transformers.__version__,
  }


def write_pipeline_files(out_dir, meta: dict, tokenizer) -> None:
  """Makes the export root loadable by `transformers.pipeline`: config.json, the pipeline's code, and the
  tagger's tokenizer (the one whose vocabulary holds the relation tokens), which `pipeline` loads from the root."""
  out_dir = pathlib.Path(out_dir)
  (out_dir / "config.json").write_text(json.dumps(pipeline_config(meta), indent=2, ensure_ascii=False) + "\n")
  for source in (PIPELINE_SOURCE, SCHEMA_SOURCE):
    shutil.copyfile(source, out_dir / source.name)
  tokenizer.save_pretrained(str(out_dir))
