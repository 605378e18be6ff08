"""Streaming inference: all local devices, input order, resume after a kill, awkward input files, truncated rows.

The model is a random one-layer BERT with the MiniLM tokenizer (seconds to build); its classifier weights are
scaled up so that predictions are decided by clear margins and compare exactly across device counts.
"""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_run import REPO

from herberta_jax.data import tokenize
from herberta_jax.hub import writer
from herberta_jax.inference import sources
from herberta_jax.inference.predictor import Predictor, length_grid
from herberta_jax.model.bert import BertConfig
from herberta_jax.model.heads import EntityTagger, RelationClassifier

pytestmark = pytest.mark.slow  # predict in subprocesses and on four devices

LABELS = ["cause-effect", "member-collection", "other"]
SENTENCES = [
    "The fire was caused by a short circuit in the kitchen.",
    "A flock of geese flew over the lake.",
    "Marie Curie was born in Warsaw.",
    "The committee includes three professors and a student.",
    "Heavy rain led to flooding in the valley towns last spring after the dam broke.",
    "The orchestra has sixty musicians.",
    "Smoke rose.",
]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, minilm_dir):
  root = tmp_path_factory.mktemp("stream")
  tokenizer = tokenize.load_tokenizer(minilm_dir)
  tokens = tokenize.add_relation_tokens(tokenizer, LABELS)
  tokenizer.save_pretrained(root / "data" / "tokenizer")
  cls_id, sep_id, pad_id = tokenize.special_ids(tokenizer)
  manifest = {"tokenizer": {"cls_id": cls_id, "sep_id": sep_id, "pad_id": pad_id}, "labels": LABELS,
              "relation_tokens": tokens, "max_seq_len": 24,
              "relation_token_ids": {label: tokenizer.convert_tokens_to_ids(t) for label, t in tokens.items()}}
  meta = writer.export_meta(manifest, (16, 24), True, {"max_span_len": 6, "disjoint_entities": False})
  config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      max_position_embeddings=64)
  ids = jnp.ones((1, 8), jnp.int32)
  rel = RelationClassifier(config, num_labels=len(LABELS)).init(jax.random.PRNGKey(0), ids, ids)["params"]
  tag = EntityTagger(config).init(jax.random.PRNGKey(1), ids, ids, jnp.zeros_like(ids), ids)["params"]
  sharpen = lambda params: {**params, "classifier": jax.tree.map(lambda x: x * 200, params["classifier"])}
  return writer.write_export(root / "export", root / "data", meta, (config, sharpen(rel)), (config, sharpen(tag)))


def triples(results):
  return [(r["relation"], r["e1"]["start"], r["e1"]["end"], r["e2"]["start"], r["e2"]["end"]) for r in results]


def test_length_grid_pads_by_under_one_step_in_n_per_doubling():
  assert length_grid(40, 8) == [*range(1, 17), 18, 20, 22, 24, 26, 28, 30, 32, 36, 40]
  assert length_grid(130, 2) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 130]
  for max_tokens in (7, 62, 126, 510):
    for per_doubling in (1, 3, 8):
      grid = length_grid(max_tokens, per_doubling)
      assert grid[0] == 1 and grid[-1] == max_tokens and grid == sorted(set(grid))
      assert all(b - a <= max(1, a / per_doubling) for a, b in zip(grid, grid[1:]))
  assert len(length_grid(510, 8)) < len(range(4, 510, 4))  # a 4-token grid's lengths up to BERT's 512


def test_four_devices_share_each_batch_and_agree_with_one(export_dir):
  assert jax.local_device_count() == 4  # tests/conftest.py simulates four CPU devices
  texts = SENTENCES * 5
  seen = []
  by_devices = {}
  for devices in (jax.local_devices(), jax.local_devices()[:1]):
    predictor = Predictor.from_export(export_dir, batch_size=8, devices=devices, window_batches=2)
    fn = predictor.fn
    predictor.fn = lambda *args, fn=fn: (seen.append(len(args[2].sharding.device_set)), fn(*args))[1]
    by_devices[len(devices)] = triples(r for _, r in predictor.run(predictor.encode(texts)))
    assert 0 < predictor.real_token_share <= 1
  assert seen[0] == 4 and seen[-1] == 1
  assert by_devices[4] == by_devices[1]
  # Each device runs its own rows: the compiled program moves nothing between devices.
  predictor = Predictor.from_export(export_dir, batch_size=8)
  batch = predictor.place(predictor.encode(SENTENCES), predictor.max_tokens)
  program = predictor.fn.lower(predictor.relation_params, predictor.tagger_params, *batch).compile().as_text()
  assert not re.search(r"all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter", program)
  with pytest.raises(ValueError, match="--batch_size=6"):
    Predictor.from_export(export_dir, batch_size=6)


def test_stream_keeps_input_order_across_windows(export_dir):
  predictor = Predictor.from_export(export_dir, batch_size=4, window_batches=1)
  texts = [s for i in range(4) for s in SENTENCES[i:] + SENTENCES[:i]]
  pairs = [(t, None) if i % 5 else (None, "bad line") for i, t in enumerate(texts)]
  out = list(predictor.run(predictor.encode_stream(iter(pairs))))
  assert [e.text if not e.error else None for e, _ in out] == [t for t, _ in pairs]
  whole = dict(zip(texts, triples(r for _, r in predictor.run(predictor.encode(texts)))))
  for enc, result in out:
    assert ("error" in result) == (enc.error is not None)
    if enc.error is None:
      assert triples([result])[0] == whole[enc.text]


def test_planned_and_placed_batches_are_the_calls_run_makes(export_dir):
  predictor = Predictor.from_export(export_dir, batch_size=4, window_batches=1)
  texts = SENTENCES * 3 + ["  "]  # an empty sentence is never in a batch
  called = []
  fn = predictor.fn
  predictor.fn = lambda *args, fn=fn: (called.append((np.asarray(args[2]), np.asarray(args[3]))), fn(*args))[1]
  list(predictor.run(predictor.encode(texts)))
  planned = list(predictor.planned_batches(predictor.encode(texts)))
  assert sorted(e.index for rows, _ in planned for e in rows) == list(range(len(SENTENCES) * 3))
  placed = [tuple(np.asarray(a) for a in predictor.place(rows, length)) for rows, length in planned]
  assert len(placed) == len(called) > 1
  for (ids, mask), (run_ids, run_mask) in zip(placed, called):
    np.testing.assert_array_equal(ids, run_ids)
    np.testing.assert_array_equal(mask, run_mask)


def test_long_sentence_is_marked_truncated(export_dir):
  predictor = Predictor.from_export(export_dir, batch_size=4)
  long = " ".join(["word"] * 40)
  encoded = predictor.encode([long, SENTENCES[2]])
  assert len(encoded[0].input_ids) == tokenize.relation_input_limit(24)
  assert encoded[0].truncated_at == len(" ".join(["word"] * (tokenize.relation_input_limit(24) - 2)))
  assert encoded[1].truncated_at is None


def read_all(data: bytes, fmt="auto"):
  import io
  fmt, items = sources.read_items(io.BytesIO(data), fmt)
  return fmt, [(item.text, item.error) for item in items]


def test_sources_bom_blank_lines_and_lone_carriage_returns():
  header = "\t".join(sources.smiler.HEADER)
  row = "1\tfire\tcircuit\tcause\t<e1>fire</e1> from a <e2>circuit</e2>\ten"
  fmt, items = read_all(("\ufeff\n" + header + "\r\n" + row + "\r\n").encode())
  assert fmt == "tsv" and items[1] == ("fire from a circuit", None) and "empty" in items[0][1]
  fmt, items = read_all(b"\xef\xbb\xbf" + b'{"text": "a\rb"}\n\n{"text": "c"}\n')
  assert fmt == "jsonl" and items[0] == ("a\rb", None) and items[2] == ("c", None) and len(items) == 3
  fmt, items = read_all(b"\n  \nfirst\rstill first\nsecond\r\n")
  assert fmt == "text" and [t for t, _ in items][2:] == ["first\rstill first", "second"]


def test_a_tsv_header_is_told_apart_for_the_progress_total(tmp_path):
  header = "\t".join(sources.smiler.HEADER)
  with_header, without = tmp_path / "a.tsv", tmp_path / "b.txt"
  with_header.write_bytes(("\ufeff\n" + header + "\r\nrow\n").encode())
  without.write_text("\nsentence one\t" + header + "\n", encoding="utf-8")
  assert sources.starts_with_header(str(with_header)) and not sources.starts_with_header(str(without))


def predict(export_dir, *args, check=True):
  result = subprocess.run([sys.executable, "-m", "herberta_jax.predict", "--model", str(export_dir), *args],
                          cwd=REPO, capture_output=True, text=True)
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_resume_after_a_cut_matches_a_full_run_and_truncation_is_marked(export_dir, tmp_path):
  long = " ".join(["word"] * 40)
  # Batch 4 sorts a window of 4 lines, then windows of 256 (ending at lines 4, 260, 516): the cut falls in the one
  # from 260 to 516, which a resumed run redoes with the same batches.
  lines = [SENTENCES[i % len(SENTENCES)] + f" ({i})" for i in range(600)] + [long, ""]
  (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
  predict(export_dir, "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "full.jsonl"),
          "--batch_size", "4")
  full = (tmp_path / "full.jsonl").read_bytes()
  rows = [json.loads(line) for line in full.decode().splitlines()]
  assert len(rows) == len(lines) and rows[-2]["truncated"] and rows[-2]["truncated_at"] > 0
  assert "truncated" not in rows[0] and "empty" in rows[-1]["error"]
  cut = full[:full.index(b"\n", len(full) // 2) + 20]  # ~300 whole lines and part of the next
  (tmp_path / "part.jsonl").write_bytes(cut)
  predict(export_dir, "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "part.jsonl"),
          "--batch_size", "4", "--resume")
  assert (tmp_path / "part.jsonl").read_bytes() == full


@pytest.mark.parametrize("args, named", [
    (["--top_k", "0"], "--top_k"), (["--top_m", "0"], "--top_m"), (["--batch_size", "0"], "--batch_size"),
    (["--input", "/nonexistent/in.txt"], "/nonexistent/in.txt"), (["--resume"], "--resume"),
])
def test_bad_flags_fail_early_with_exit_code_2(export_dir, tmp_path, args, named):
  out = tmp_path / "out.jsonl"  # --output: --out's name before 0.2, still accepted
  result = predict(export_dir, *args, *(["--output", str(out)] if "--resume" not in args else []), check=False)
  assert result.returncode == 2 and named in result.stderr and "Traceback" not in result.stderr
  assert not out.exists()


def test_a_second_run_reads_its_programs_from_the_compilation_cache(export_dir, tmp_path):
  cache = tmp_path / "xla"
  (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n")
  outputs, entries = [], []
  for run in ("cold", "warm"):
    out = tmp_path / f"{run}.jsonl"
    predict(export_dir, "--input", str(tmp_path / "in.txt"), "--out", str(out), "--compilation_cache_dir", str(cache))
    outputs.append(out.read_bytes())
    entries.append(sorted(path.name for path in cache.iterdir()))
  assert entries[0], "the first run left no programs in the cache"
  assert entries[1] == entries[0]  # the second compiled nothing new
  assert outputs[1] == outputs[0]


ROW = "1\tfire\tcircuit\tcause\t<e1>fire</e1> from a <e2>circuit</e2>\ten"


@pytest.mark.parametrize("first, fmt, note", [
    (ROW, "tsv", None),  # a tagged six-column row is TSV without its header
    ("\t".join(sources.smiler.HEADER), "tsv", None),
    ('{"text": "a"}', "jsonl", None),
    ("{not json} but a sentence", "text", "--format jsonl"),
    ('{"text": "a"', "text", "--format jsonl"),  # a cut JSON line: the user is told how to force JSONL
    ("a\tb\tc\td\te\tf", "text", "--format tsv"),  # six columns without tags
    ("Plain sentence.", "text", None),
])
def test_format_detection_does_not_guess_wrong_silently(first, fmt, note):
  notes = []
  import io
  got, _ = sources.read_items(io.BytesIO((first + "\n").encode()), "auto", notes=notes)
  assert got == fmt
  assert (note is None and not notes) or (len(notes) == 1 and note in notes[0])


def test_tsv_rows_use_prepares_quoting_rule_and_blank_jsonl_lines_say_so():
  header = "\t".join(sources.smiler.HEADER)
  unbalanced = '2\tA\tB\tcause\t"<e1>A</e1> said <e2>B</e2>\ten'
  quoted = '3\tA\tB\tcause\t"<e1>A</e1> said ""hi"" to <e2>B</e2>"\ten'
  _, items = read_all(f"{header}\n{unbalanced}\n{quoted}\n{ROW}\n".encode())
  assert "line 2: malformed CSV quoting" in items[0][1]
  assert items[1] == ('A said "hi" to B', None) and items[2] == ("fire from a circuit", None)
  _, items = read_all(b'{"text": "a"}\n\n[1]\n{"text": 3}\n')
  assert items[0] == ("a", None) and "line 2: blank line" in items[1][1]
  assert "line 3: a JSON list" in items[2][1] and "line 4: no string field 'text'" in items[3][1]


def test_resume_checks_every_kept_row_against_its_line_before_touching_the_output(tmp_path):
  import io
  row = lambda text: json.dumps({"text": text, "relation": "other"}) + "\n"
  out = tmp_path / "out.jsonl"
  out.write_text(row("one") + '{"error": "empty sentence"}\n' + row("three") + '{"text": "fo', encoding="utf-8")
  before = out.read_bytes()
  output = sources.Output(str(out), True, iter([2, 2]))
  assert output.done == 2
  _, items = sources.read_items(io.BytesIO(b"one\ntwo\nthree\nfour\n"), "text")
  output.check_kept(items)  # row 2, the model's error for a sentence, answers line 2
  assert next(items).text == "three"  # the kept rows' lines were read off the input
  for lines, says in [(b"one\nTWO\n", None), (b"uno\ntwo\n", "out.jsonl:1 does not answer input line 1"),
                      (b"one\n", "holds 2 rows but the input ends after 1"),
                      (b"one\n\n", "out.jsonl:2 does not answer input line 2")]:
    _, items = sources.read_items(io.BytesIO(lines), "text")
    if says is None:
      sources.Output(str(out), True, iter([2, 2])).check_kept(items)
      continue
    with pytest.raises(sources.ResumeMismatch, match=says):
      sources.Output(str(out), True, iter([2, 2])).check_kept(items)
  assert out.read_bytes() == before
  stream = output.open()
  assert out.read_bytes() == before[:before.index(b'{"text": "three')]  # cut after the last whole window
  stream.close()


def test_a_bad_row_costs_its_own_row_only(export_dir):
  predictor = Predictor.from_export(export_dir, batch_size=4)
  bad = ["\ud800 x", "\u200b", "\x00", "a\udfffb"]
  mixed = [SENTENCES[0], bad[0], SENTENCES[1], bad[1], bad[2], SENTENCES[2], bad[3]]
  results = [r for _, r in predictor.run(predictor.encode(mixed))]
  alone = iter(r for _, r in predictor.run(predictor.encode(SENTENCES[:3])))
  for text, result in zip(mixed, results):
    if text in bad:
      assert set(result) == {"error"}
      assert ("tokenizer cannot read" in result["error"]) == ("\ud800" in text or "\udfff" in text), result
    else:
      assert result == next(alone)  # its neighbours' failures changed nothing of it
