"""Model cards: the `README.md` the HuggingFace Hub shows as a model's page, for the export root and each checkpoint.

A card is YAML metadata between `---` lines (languages, base model, datasets, tags, and `model-index`: the test
scores the Hub displays) followed by Markdown. Everything in it comes from the run: languages from the training
manifest, scores from its test evaluation (`metrics.json`, copied at full precision so the card and the file
agree), the training command as it was typed and the resolved config. A run without a test evaluation gets a card
that says so and carries no `model-index`, never invented numbers.
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex

import yaml

from herberta_jax.data.locations import looks_like_path

# The scores of metrics.json that go into model-index, in the order of the README's tables.
METRICS = (("relation", "relation"), ("entity1", "entity 1"), ("entity2", "entity 2"),
           ("entity_pair", "entity pair"), ("combined", "combined"))
TAGS = ["relation-extraction", "entity-extraction", "joint-entity-relation-extraction", "herberta", "jax", "flax"]
TASK = {"type": "relation-extraction", "name": "Joint entity and relation extraction"}
PIPELINE_CODE_TAG = "custom_code"  # the Hub's tag for repositories whose loading runs code they ship


def dataset_of(config: dict) -> tuple[str, str | None]:
  """(a readable name, the Hub dataset id or None) of the run's training data."""
  card, data = config.get("card") or {}, config.get("data") or {}
  if card.get("dataset_name"):
    return card["dataset_name"], card.get("dataset_id") or None
  if data.get("demo"):
    return "the herberta_jax demo corpus (generated, SMiLER format)", None
  files = [f for f in str(data.get("train_files", "")).split(",") if f]
  names = ", ".join(f"{pathlib.Path(f).parent.name}/{pathlib.Path(f).name}".lstrip("/") for f in files)
  return (names or "unnamed SMiLER-format data"), card.get("dataset_id") or None


def base_model_of(config: dict) -> tuple[str | None, str]:
  """(the Hub id the run fine-tuned, or None; a sentence saying where the encoder came from)."""
  card, init_from = config.get("card") or {}, (config.get("model") or {}).get("init_from", "")
  if card.get("base_model") and init_from:  # a run from scratch has no base model, whatever the config names
    return card["base_model"], f"fine-tuned from `{card['base_model']}`" + (
        f" (a local copy: `{init_from}`)" if init_from and init_from != card["base_model"] else "")
  if init_from and not looks_like_path(init_from):
    return init_from, f"fine-tuned from `{init_from}`"
  if init_from:
    return None, f"fine-tuned from the local checkpoint `{init_from}`"
  return None, "trained from scratch (a BERT of `model.scratch`'s shape, randomly initialised)"


def languages_of(manifest: dict) -> list[str]:
  """Every language with training rows, as the manifest counts them."""
  return sorted(lang for lang, info in manifest.get("splits", {}).get("train", {}).items() if info.get("count", 1))


def _slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def model_index(name: str, dataset: tuple[str, str | None], metrics: dict) -> list[dict]:
  """The Hub's `model-index`: one result (the test split), precision, recall and F1 of each metric."""
  dataset_name, dataset_id = dataset
  entries = []
  for key, label in METRICS:
    for kind in ("precision", "recall", "f1"):
      entries.append({"type": kind, "value": float(metrics[key][kind]),
                      "name": f"{label} {'F1' if kind == 'f1' else kind} (micro, without no_relation)"})
  return [{"name": name, "results": [{"task": dict(TASK),
                                      "dataset": {"name": dataset_name, "type": dataset_id or _slug(dataset_name),
                                                  "split": "test"},
                                      "metrics": entries}]}]


def front_matter(*, name: str, manifest: dict, config: dict, metrics: dict | None, pipeline_tag: str | None,
                 extra_tags=()) -> dict:
  base_model, _ = base_model_of(config)
  dataset = dataset_of(config)
  front = {"language": languages_of(manifest), "library_name": "transformers"}
  if pipeline_tag:
    front["pipeline_tag"] = pipeline_tag
  front["tags"] = TAGS + list(extra_tags)
  if base_model:
    front["base_model"] = base_model
  if dataset[1]:
    front["datasets"] = [dataset[1]]
  if metrics:
    front["model-index"] = model_index(name, dataset, metrics)
  return front


def render(front: dict, body: str) -> str:
  return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n" + body


def parse(card: str) -> tuple[dict, str]:
  """(YAML metadata, Markdown body) of a rendered card."""
  if not card.startswith("---\n"):
    raise ValueError("a model card starts with its YAML metadata between --- lines")
  head, _, body = card[4:].partition("\n---\n")
  return yaml.safe_load(head), body


def _scores_table(metrics: dict | None) -> str:
  if not metrics:
    return ("**No test evaluation**: this run had no test split, so the card reports no scores. Evaluate the "
            "export on labelled data with `python -m herberta_jax.evaluate --model EXPORT --data TEST.tsv`.\n")
  rows = ["| test split, micro, without no_relation | precision | recall | F1 |", "| --- | --- | --- | --- |"]
  for key, label in METRICS:
    m = metrics[key]
    rows.append(f"| {label} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} |")
  count = metrics.get("count")
  note = (f"\nOn {count:,} test sentences" if count else "\nOn the test split") + (
      "; entity spans are compared as character offsets, exact match. Relation: the predicted relation is the gold "
      "one; entity 1 / 2 / pair: the span(s) exact on sentences that are predicted and gold positives; combined: "
      "relation and both spans right (the paper's metrics).\n")
  return "\n".join(rows) + "\n" + note


def _commands_block(commands: list[list[str]]) -> str:
  if not commands:
    return "The training command was not recorded (the run predates recording it); its resolved config follows.\n"
  lines = "\n".join(shlex.join(command) for command in commands)
  intro = ("Trained with" if len(commands) == 1 else
           f"Trained in {len(commands)} invocations on the same workdir (a run resumes where it stopped)")
  return f"{intro}:\n\n```bash\n{lines}\n```\n"


def _training_section(config: dict, commands: list[list[str]]) -> str:
  return ("## Training\n\n" + _commands_block(commands) + "\n<details><summary>Resolved config "
          "(<code>config.json</code> of the run)</summary>\n\n```json\n"
          + json.dumps(config, indent=2, ensure_ascii=False) + "\n```\n\n</details>\n")


def pair_rule(decoding: dict) -> str:
  """How the export's decoding picks the two entities, in words."""
  if decoding.get("ordered_entities"):
    return "as a non-overlapping pair with entity 1 first"
  return "as a non-overlapping pair" if decoding.get("disjoint_entities") else "independently"


def root_card(*, name: str, meta: dict, manifest: dict, config: dict, metrics: dict | None,
              commands: list[list[str]]) -> str:
  """The export root's card: what the two-stage model is, how to run it, how well it does, how it was trained."""
  _, origin = base_model_of(config)
  dataset_name, _ = dataset_of(config)
  labels = [label for label in meta["labels"] if label != meta.get("negative_label")]
  decoding = meta.get("decoding", {})
  body = f"""# {name}

Joint entity and relation extraction after HERBERTa (Seganti et al., EACL 2021), trained with herberta_jax
(JAX/Flax; exported by version {meta.get("herberta_jax_version", "unknown")}) on {dataset_name} and exported to PyTorch: two BERTs, a relation classifier on `[CLS]` (`relation/`)
and an entity tagger (`tagger/`) that reads `[CLS] [relation] [SEP] sentence [SEP]` and points at the start and
end of both entities. The encoder was {origin}. Languages: {", ".join(languages_of(manifest)) or "unknown"}.

## Usage

```python
from transformers import pipeline

extract = pipeline(model="PATH_OR_REPO_ID", trust_remote_code=True)
extract("Marie Curie was born in Warsaw.")
extract(["first sentence", "second sentence"], batch_size=32, top_k=2, top_m=2)  # n-best, batched
```

Each sentence gives its relation and score, both entities (`text`, character `start` and `end`), the sentence
with `<e1>..</e1>` and `<e2>..</e2>` tags, and the n-best list (`top_k` relations x `top_m` entity pairs, by joint
probability; the best triple is its first, so with `top_k` above 1 the tagger's confidence helps choose the
relation; the run's default: `top_k={decoding.get("top_k", 1)}`, `top_m={decoding.get("top_m", 1)}`).
`trust_remote_code` runs `herberta_pipeline.py` of this folder (PyTorch and transformers only), which chains the
two checkpoints exactly as herberta_jax's JAX predictor does. Sentences longer than
{meta["max_seq_len"] - 2} tokens are read up to there and marked `truncated`. Spans: at most
{decoding.get("max_span_len", 32)} tokens, entities decoded {pair_rule(decoding)} (the run's settings;
`max_span_len=`, `disjoint_entities=` and `ordered_entities=` override them).

Relations ({len(labels)} plus `{meta.get("negative_label", "no_relation")}`): {", ".join(f"`{label}`" for label in labels)}.

## Evaluation

{_scores_table(metrics)}
{_training_section(config, commands)}"""
  return render(front_matter(name=name, manifest=manifest, config=config, metrics=metrics,
                             pipeline_tag=None, extra_tags=[PIPELINE_CODE_TAG]), body)


def stage_card(stage: str, *, name: str, meta: dict, manifest: dict, config: dict, metrics: dict | None,
               commands: list[list[str]]) -> str:
  """A checkpoint folder's card: which half of the pipeline it is and how to use it on its own."""
  _, origin = base_model_of(config)
  if stage == "relation":
    what = ("the relation classifier: a sequence-classification BERT over `[CLS] sentence [SEP]`, one label per "
            "relation (`no_relation` included)")
    tag = "text-classification"
  else:
    what = ("the entity tagger: a token-classification BERT over `[CLS] [relation] [SEP] sentence [SEP]` with four "
            "outputs per token (`e1_start`, `e1_end`, `e2_start`, `e2_end`), decoded into the best span of each "
            "entity; the relation tokens are in its tokenizer (`relation_tokens` of `../herberta.json`)")
    tag = "token-classification"
  body = f"""# {name}: {stage}

This folder is half of a two-stage joint entity and relation extraction model, {what}. The encoder was {origin}.
It loads with transformers' `AutoModelFor{"SequenceClassification" if stage == "relation" else "TokenClassification"}`,
but the useful model is the pair: load the parent folder with
`pipeline(model="PATH_OR_REPO_ID", trust_remote_code=True)` (see its README).

## Evaluation (of the two-stage pipeline)

{_scores_table(metrics)}
{_training_section(config, commands)}"""
  return render(front_matter(name=f"{name}-{stage}", manifest=manifest, config=config, metrics=metrics,
                             pipeline_tag=tag), body)


def write_cards(out_dir, *, meta: dict, manifest: dict, config: dict, metrics: dict | None,
                commands: list[list[str]], name: str) -> list[pathlib.Path]:
  """Writes README.md into the export root, relation/ and tagger/; returns their paths. `name`: the model's
  name on its page (and in model-index)."""
  out_dir = pathlib.Path(out_dir)
  common = dict(name=name, meta=meta, manifest=manifest, config=config, metrics=metrics, commands=commands)
  written = [out_dir / "README.md", out_dir / "relation" / "README.md", out_dir / "tagger" / "README.md"]
  written[0].write_text(root_card(**common), encoding="utf-8")
  for path, stage in zip(written[1:], ("relation", "tagger")):
    path.write_text(stage_card(stage, **common), encoding="utf-8")
  return written
