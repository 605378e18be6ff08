"""Two-stage inference speed on real sentences: the jitted JAX pipeline next to HuggingFace PyTorch.

  python bench/bench_infer.py --model RUN_OR_EXPORT [--data ../shared/data/semeval2010_task8/test.tsv]

`--model` is a finished training run (for the MiniLM shape: `configs/semeval.py`) or its export. Both sides go
from raw sentences to (relation, entity 1, entity 2) with character offsets, tokenization included:
- JAX: `Predictor`'s streaming path (as `predict`), one jitted function for both stages, sentences sorted by
  length inside windows into static shapes, tokenization on a background thread, one batch in flight; on a host
  without an accelerator, the CPU split into one device per core as `predict` splits it (`--cpu_devices`);
- PyTorch: the exported relation and tagger models from transformers, one after the other, batches in input
  order padded to their longest sentence (dynamic padding), greedy span decoding.
Each side runs once to warm up (JAX compiles one function per batch shape); then the two sides take turns
(`--repeats`) over all sentences and each keeps its fastest pass, so a burst of other work on a shared machine
does not decide the ratio. `--calls_only` adds a third turn: the same batches' jitted calls alone, tokenized and
placed beforehand, every call queued and one wait; the JAX pipeline's time over theirs is what tokenizing,
decoding and the Python between batches add.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import jax  # noqa: E402

from herberta_jax import cpu_devices  # noqa: E402
from herberta_jax.data import smiler  # noqa: E402
from herberta_jax.hub.format import export_directory  # noqa: E402
from herberta_jax.inference.predictor import Predictor  # noqa: E402
from herberta_jax.model import flops  # noqa: E402
from herberta_jax.model import inputs as model_inputs  # noqa: E402

PAPER_PAIRS = {"disjoint_entities": False, "ordered_entities": False}  # the two entities decoded independently
DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared/data/semeval2010_task8/test.tsv"


def jax_pass(predictor: Predictor, sentences: list[str]) -> list[dict]:
  """The streaming path of `predict`: background tokenization, sorted windows, one batch in flight."""
  return [prediction for _, prediction in predictor.run(predictor.encode_stream((s, None) for s in sentences))]


def calls_pass(predictor: Predictor, placed: list) -> None:
  """The jitted function alone over batches tokenized and placed beforehand: every call queued, one wait."""
  jax.block_until_ready([predictor.fn(predictor.relation_params, predictor.tagger_params, ids, mask)
                         for ids, mask in placed])


def passes_in_turns(predictors: dict[str, Predictor], sentences: list[str], rounds: int) -> dict[str, dict]:
  """Each predictor's `jax_pass` over `sentences`, once to compile, then the predictors taking turns `rounds`
  times: per predictor the median and best seconds, the passes, and how many triples equal the first one's."""
  triple = lambda p: (p["relation"], p["e1"]["start"], p["e1"]["end"], p["e2"]["start"], p["e2"]["end"])
  triples = {name: [triple(p) for p in jax_pass(predictor, sentences)] for name, predictor in predictors.items()}
  reference = next(iter(triples.values()))
  seconds = {name: [] for name in predictors}
  for _ in range(rounds):
    for name, predictor in predictors.items():
      start = time.perf_counter()
      jax_pass(predictor, sentences)
      seconds[name].append(time.perf_counter() - start)
  return {name: {"median_seconds": round(statistics.median(passes), 2), "best_seconds": round(min(passes), 2),
                 "passes": [round(s, 2) for s in passes],
                 "same_triples_as_first": f"{sum(a == b for a, b in zip(reference, triples[name]))}/{len(sentences)}"}
          for name, passes in seconds.items()}


def pipeline_flops(predictor: Predictor) -> int:
  """Forward FLOPs of both stages over the batches run so far (`Predictor.batch_shapes`; the tagger input is
  TAGGER_SHIFT tokens longer; the relation classifier's last layer computes [CLS] only)."""
  relation_config = predictor.relation_module.config
  tagger_config = predictor.tagger_module.config
  labels = len(predictor.labels)
  return sum(batches * rows * (
      flops.forward_flops_per_sequence(relation_config, length, "relation", labels, first_token_only=True)
      + predictor.top_k * flops.forward_flops_per_sequence(tagger_config, length + model_inputs.TAGGER_SHIFT,
                                                             "tagger", labels))
      for (rows, length), batches in predictor.batch_shapes.items())


class TorchPipeline:
  """The two exported models run by transformers' PyTorch classes, as a user without JAX would."""

  def __init__(self, export: pathlib.Path, max_span_len: int, *, device: str = "cpu", autocast_dtype=None,
               attn_implementation: str | None = None):
    """`autocast_dtype` (e.g. torch.bfloat16) runs both models under torch.autocast; None runs float32."""
    import contextlib

    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer
    self.torch = torch
    self.device = device
    self.autocast = (lambda: torch.autocast(torch.device(device).type, dtype=autocast_dtype)) if autocast_dtype \
        else contextlib.nullcontext
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    self.meta = json.loads((export / "herberta.json").read_text())
    self.tokenizer = AutoTokenizer.from_pretrained(export / "tagger")
    self.relation = AutoModelForSequenceClassification.from_pretrained(export / "relation", **extra).to(device).eval()
    self.tagger = AutoModelForTokenClassification.from_pretrained(export / "tagger", **extra).to(device).eval()
    self.max_span_len = max_span_len
    self.max_len = self.meta["max_seq_len"]

  def best_spans(self, start, end):
    """Greedy decoding per row: argmax of start + end logits with start <= end < start + max_span_len."""
    torch = self.torch
    n = start.shape[1]
    ones = torch.ones(n, n, dtype=torch.bool, device=start.device)
    allowed = ones.triu() & ~ones.triu(self.max_span_len)
    scores = (start[:, :, None] + end[:, None, :]).masked_fill(~allowed, -float("inf"))
    flat = scores.flatten(1).argmax(1)
    return flat // n, flat % n

  def __call__(self, sentences: list[str]) -> list[dict]:
    torch = self.torch
    with torch.inference_mode(), self.autocast():
      batch = self.tokenizer(sentences, padding=True, truncation=True, max_length=self.max_len - 2,
                             return_tensors="pt").to(self.device)
      labels = self.relation(**batch).logits.argmax(-1).tolist()
      names = [self.relation.config.id2label[i] for i in labels]
      pairs = self.tokenizer([self.meta["relation_tokens"][name] for name in names], sentences, padding=True,
                             truncation="only_second", max_length=self.max_len, return_tensors="pt",
                             return_offsets_mapping=True)
      offsets = pairs.pop("offset_mapping")
      in_sentence = torch.tensor([[s == 1 for s in pairs.sequence_ids(i)] for i in range(len(sentences))],
                                 device=self.device)
      logits = self.tagger(**pairs.to(self.device)).logits.float().masked_fill(~in_sentence[:, :, None], -1e9)
      (s1, e1), (s2, e2) = self.best_spans(logits[..., 0], logits[..., 1]), self.best_spans(logits[..., 2],
                                                                                            logits[..., 3])
    s1, e1, s2, e2 = (x.cpu() for x in (s1, e1, s2, e2))
    out = []
    for i in range(len(sentences)):
      span = lambda s, e: (int(offsets[i, s, 0]), int(offsets[i, e, 1]))
      out.append({"relation": names[i], "e1": span(s1[i], e1[i]), "e2": span(s2[i], e2[i])})
    return out


def torch_pass(pipeline: TorchPipeline, sentences: list[str], batch_size: int) -> list[dict]:
  out = []
  for i in range(0, len(sentences), batch_size):
    out.extend(pipeline(sentences[i:i + batch_size]))
  return out


def timed(fn):
  start = time.perf_counter()
  result = fn()
  return result, time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, type=pathlib.Path, help="training workdir or export directory")
  parser.add_argument("--data", default=str(DEFAULT_DATA), help="SMiLER-format TSV whose sentences are used")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--lengths_per_doubling", type=int, default=8, help="padded batch lengths per doubling")
  parser.add_argument("--max_span_len", type=int, default=None, help="default: the run's, from its export")
  parser.add_argument("--cpu_devices", type=int, default=None,
                      help="JAX devices a CPU is split into, as predict's flag (default: one per core that divides "
                           "the batch)")
  parser.add_argument("--repeats", type=int, default=2, help="timed passes per side, taken in turns; best kept")
  parser.add_argument("--no_torch", action="store_true", help="time the JAX side only")
  parser.add_argument("--calls_only", action="store_true",
                      help="also time the same batches' jitted calls alone, tokenized and placed beforehand, in turn "
                           "with the others: what tokenizing, decoding and the Python between batches add")
  parser.add_argument("--json", default="", help="also write the figures to this JSON file")
  args = parser.parse_args()
  cpu_devices.split_host(args.batch_size, args.cpu_devices)  # before any JAX work

  sentences = [example.text for example in smiler.read_tsv(args.data)]
  export = export_directory(args.model)
  # The PyTorch side's decoding on both, so the two pipelines compute the same triples: the top relation alone
  # and its best independently decoded pair (the paper's output, whatever decoding the run chose).
  predictor = Predictor.from_export(export, batch_size=args.batch_size, max_span_len=args.max_span_len,
                                    lengths_per_doubling=args.lengths_per_doubling, top_k=1, top_m=1, **PAPER_PAIRS)
  _, warmup_seconds = timed(lambda: jax_pass(predictor, sentences))  # compiles each batch shape once
  pipeline = None
  if not args.no_torch:
    import torch
    torch.set_num_threads(os.cpu_count())
    pipeline = TorchPipeline(export, predictor.max_span_len)
    torch_pass(pipeline, sentences[:args.batch_size], args.batch_size)  # warm-up
  placed = [predictor.place(rows, length) for rows, length in predictor.planned_batches(predictor.encode(sentences))] \
      if args.calls_only else []
  # On a shared machine other work comes and goes: the two sides take turns and each keeps its fastest pass.
  jax_times, torch_times, calls_times = [], [], []
  for _ in range(args.repeats):
    if placed:
      calls_times.append(timed(lambda: calls_pass(predictor, placed))[1])
    predictor.real_tokens = predictor.padded_tokens = 0
    predictor.batch_shapes.clear()
    jax_out, seconds = timed(lambda: jax_pass(predictor, sentences))
    jax_times.append(seconds)
    if pipeline:
      torch_out, seconds = timed(lambda: torch_pass(pipeline, sentences, args.batch_size))
      torch_times.append(seconds)
  jax_seconds = min(jax_times)
  result = {
      "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "date": time.strftime("%Y-%m-%d"),
      "model": str(export), "data": args.data, "sentences": len(sentences), "batch_size": args.batch_size,
      "devices": f"{len(predictor.devices)} {predictor.devices[0].platform}",
      "real_token_share": round(predictor.real_token_share, 4), "batch_shapes": len(predictor.batch_shapes),
      "jax": {"seconds": round(jax_seconds, 2), "sentences_per_second": round(len(sentences) / jax_seconds, 1),
              "model_gflop_per_second": round(pipeline_flops(predictor) / jax_seconds / 1e9, 1),
              "passes": [round(t, 2) for t in jax_times],
              "first_pass_seconds": round(warmup_seconds, 2)},  # compiling each of the batch_shapes included
  }
  if calls_times:
    result["jax"]["calls_only"] = {"seconds": round(min(calls_times), 2), "passes": [round(t, 2) for t in calls_times],
                                   "pipeline_over_calls": round(jax_seconds / min(calls_times), 3)}
  if pipeline:
    torch_seconds = min(torch_times)
    same = sum(j["relation"] == t["relation"] and (j["e1"]["start"], j["e1"]["end"]) == t["e1"]
               and (j["e2"]["start"], j["e2"]["end"]) == t["e2"] for j, t in zip(jax_out, torch_out))
    result["torch"] = {"seconds": round(torch_seconds, 2),
                       "sentences_per_second": round(len(sentences) / torch_seconds, 1),
                       "passes": [round(t, 2) for t in torch_times], "version": torch.__version__}
    result["speedup"] = round(torch_seconds / jax_seconds, 2)
    result["same_triples"] = f"{same}/{len(sentences)}"
  print(json.dumps(result, indent=2))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
