"""Bad inputs through the public CLIs: each ends with one line naming file:line / flag / config key, exit 2.

Table-driven: every case runs `python -m herberta_jax.<cli>` as a subprocess (all cases at once, in parallel, on
one tiny trained workdir) and checks the exit code, the one `error:` line and what it names, that no traceback is
printed, and what the command must leave (or not leave) on disk.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest
from tiny_run import REPO, TINY_FLAGS, tiny_config

from herberta_jax import run as run_lib

pytestmark = pytest.mark.slow

HEADER = "id\tentity_1\tentity_2\tlabel\ttext\tlang\n"


def good_row(i: int, label: str = "birth-place") -> str:
  return f"r{i}\tPerson{i}\tCity{i}\t{label}\t<e1>Person{i}</e1> was born in <e2>City{i}</e2>.\ten\n"


def good_rows(n: int, start: int = 0) -> str:
  return "".join(good_row(i, "birth-place" if i % 2 else "has-parent") for i in range(start, start + n))


def write(path: pathlib.Path, text: str, header: str = HEADER) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes((header + text).encode("utf-8"))
  return path


@dataclasses.dataclass
class World:
  """What every case may refer to: a tiny trained workdir, its export, the tokenizer, valid input files."""

  root: pathlib.Path
  workdir: pathlib.Path
  minilm: pathlib.Path
  train: pathlib.Path  # a valid SMiLER training file
  sentences: pathlib.Path  # a valid predict input

  @property
  def export(self) -> pathlib.Path:
    return self.workdir / "export"

  def demo_tests(self) -> list[str]:
    return sorted(str(p) for p in (self.workdir / "demo_corpus").glob("*_test.tsv"))[:3]


@dataclasses.dataclass
class Case:
  id: str
  cli: str
  args: Callable[[World, pathlib.Path], list[str]]
  says: tuple[str, ...] = ()  # str.format'ed with w (World) and d (the case's directory); must be in the error line
  code: int = 2
  setup: Callable[[World, pathlib.Path], None] | None = None
  check: Callable[[subprocess.CompletedProcess, World, pathlib.Path], None] | None = None


def prep(*extra: str):
  """prepare's arguments: the case directory's inputs (d/in), the tokenizer, d/out."""
  return lambda w, d: ["--input", str(d / "in"), "--tokenizer", str(w.minilm), "--out", str(d / "out"), *extra]


def train_file(body: str, header: str = HEADER, name: str = "en_corpora_train.tsv", raw: bytes | None = None):
  def setup(w, d):
    path = write(d / "in" / name, body, header)
    if raw is not None:
      path.write_bytes(raw)
  return setup


def not_blamed(name: str):
  def check(proc, w, d):
    assert not [line for line in proc.stderr.splitlines() if "error:" in line and name in line], proc.stderr
  return check


def nothing_at(*names: str):
  def check(proc, w, d):
    for name in names:
      assert not (d / name).exists(), f"{d / name} left behind"
  return check


def skip_accounting(rejected: int, lines_read: int):
  """--on_error skip accounts for every line: the printed counts add up and rejects.tsv holds each reject."""
  def check(proc, w, d):
    match = re.search(r"rows: (\d+) read, (\d+) written, (\d+) rejected", proc.stdout)
    assert match, proc.stdout
    read, written, rejects = map(int, match.groups())
    assert (read, rejects) == (lines_read, rejected) and written + rejects == read
    manifest = json.loads((d / "out" / "manifest.json").read_text())
    assert sum(i["count"] for by_lang in manifest["splits"].values() for i in by_lang.values()) == written
    with (d / "out" / "rejects.tsv").open(encoding="utf-8", newline="") as handle:
      rows = list(csv.reader(handle, delimiter="\t"))[1:]
    assert len(rows) == rejects and all(source.startswith(str(d)) and reason and json.loads(raw)
                                        for source, reason, raw in rows)
  return check


def all_rejected(proc, w, d):
  lines = (d / "out" / "rejects.tsv").read_text(encoding="utf-8").splitlines()[1:]
  assert len(lines) == 3 and "en_corpora_train.tsv:2" in lines[0]


def copy_workdir_without(*stages: str):
  """A workdir holding what the trained one does, except `stages` (symlinks: the original stays untouched)."""
  def setup(w, d):
    (d / "wd").mkdir(parents=True)
    for name in ("config.json", "data", "relation", "tagger"):
      if name not in stages:
        (d / "wd" / name).symlink_to(w.workdir / name)
  return setup


def stage_dir_not_created(stage: str):
  def check(proc, w, d):
    assert not (d / "wd" / stage).exists(), f"export created {d / 'wd' / stage}"
  return check


def evaluated_count(files: Callable[[World], list[str]]):
  def check(proc, w, d):
    expected = sum(len(pathlib.Path(f).read_text(encoding="utf-8").splitlines()) - 1 for f in files(w))
    assert json.loads((d / "report" / "metrics.json").read_text())["count"] == expected
  return check


def old_export_untouched(proc, w, d):
  assert (d / "exp" / "keep.txt").read_text() == "mine" and not (d / "exp" / "herberta.json").exists()


def export_replaced(proc, w, d):
  assert (d / "exp" / "herberta.json").exists() and not (d / "exp" / "keep.txt").exists()


def stale_export(w, d):
  (d / "exp").mkdir(parents=True)
  (d / "exp" / "keep.txt").write_text("mine")


def settings_kept(workdir: pathlib.Path, key: str, value) -> None:
  """The workdir's and each stage's recorded settings (which the trained workdir has) still say `key: value`."""
  for path in (workdir / "config.json", workdir / "relation" / "stage_config.json",
               workdir / "tagger" / "stage_config.json"):
    assert json.loads(path.read_text())[key] == value, f"a refused run must not replace {path}"


def train(*extra: str):
  return lambda w, d: ["--config", "configs/demo.py", "--workdir", str(d / "wd"), *TINY_FLAGS, *extra]


def predict(*extra: str, model=lambda w, d: w.export, input_=lambda w, d: w.sentences):
  return lambda w, d: ["--model", str(model(w, d)), "--input", str(input_(w, d)), "--out", str(d / "out.jsonl"),
                       *extra]


def evaluate(*extra: str, model=lambda w, d: w.export):
  return lambda w, d: ["--model", str(model(w, d)), "--out", str(d / "report"), *extra]


UNBALANCED = good_rows(3) + 'q1\tA\tB\tbirth-place\t"<e1>A</e1> said <e2>B</e2>\ten\n' + good_rows(4, 3)
CASES = [
    # prepare
    Case("prepare-missing-input", "prepare", lambda w, d: ["--input", str(d / "nope"), "--tokenizer", str(w.minilm),
                                                           "--out", str(d / "out")], ("{d}/nope", "no such file")),
    Case("prepare-missing-tokenizer-flag", "prepare", lambda w, d: ["--input", str(w.train), "--out", str(d / "o")],
         ("--tokenizer",)),
    Case("prepare-tokenizer-not-found", "prepare", lambda w, d: ["--input", str(w.train), "--tokenizer",
                                                                 str(d / "tok"), "--out", str(d / "out")],
         ("{d}/tok", "no such directory"), check=nothing_at("out")),
    Case("prepare-bad-on-error", "prepare", prep("--on_error", "ignore"), ("--on_error",)),
    Case("prepare-dev-fraction", "prepare", prep("--dev_fraction", "1.5"), ("--dev_fraction",),
         setup=train_file(good_rows(4))),
    Case("prepare-max-seq-len", "prepare", prep("--max_seq_len", "4"), ("--max_seq_len",),
         setup=train_file(good_rows(4))),
    Case("prepare-shards", "prepare", prep("--shards_per_split", "0"), ("--shards_per_split",),
         setup=train_file(good_rows(4))),
    Case("prepare-unknown-flag", "prepare", prep("--inptu", "x"), ("inptu",)),
    Case("prepare-bad-row", "prepare", prep(), ("{d}/in/en_corpora_train.tsv:4", "missing <e1>"),
         setup=train_file(good_rows(2) + "x\tA\tB\tbirth-place\tno tags\ten\n" + good_rows(2, 2))),
    Case("prepare-unbalanced-quote-fail", "prepare", prep(), ("en_corpora_train.tsv:5", "malformed CSV quoting"),
         setup=train_file(UNBALANCED)),
    Case("prepare-unbalanced-quote-skip", "prepare", prep("--on_error", "skip"), code=0,
         setup=train_file(UNBALANCED + "x\tA\tB\tbirth-place\tno tags\ten\n"),
         check=skip_accounting(rejected=2, lines_read=9)),
    Case("prepare-skip-with-blank-lines", "prepare", prep("--on_error", "skip", "--dev_fraction", "0"), code=0,
         setup=train_file(good_rows(3) + "\n" + "short\trow\n" + good_rows(2, 3)),
         check=skip_accounting(rejected=1, lines_read=6)),
    Case("prepare-every-row-bad", "prepare", prep("--on_error", "skip"),
         ("{d}/in/en_corpora_train.tsv", "every one of the 3 training rows was rejected", "rejects.tsv"),
         setup=train_file("a\tb\n" * 3), check=all_rejected),
    Case("prepare-header-only-train", "prepare", prep(), ("{d}/in/en_corpora_train.tsv", "no training rows"),
         setup=lambda w, d: (write(d / "in" / "en_corpora_train.tsv", ""),
                             write(d / "in" / "en_corpora_test.tsv", good_rows(2))),
         check=lambda proc, w, d: not_blamed("en_corpora_test.tsv")(proc, w, d)),
    Case("prepare-extra-header-column", "prepare", prep(), ("en_corpora_train.tsv:1", "'lang', 'notes']"),
         setup=train_file(good_rows(2), header=HEADER.rstrip("\n") + "\tnotes\n")),
    Case("prepare-cr-only", "prepare", prep(), ("en_corpora_train.tsv:1", "CR-only line endings", "dos2unix -c mac"),
         setup=train_file("", raw=(HEADER + good_rows(3)).replace("\n", "\r").encode())),
    Case("prepare-not-utf8", "prepare", prep(), ("en_corpora_train.tsv:3", "not UTF-8"),
         setup=train_file("", raw=(HEADER + good_rows(1)).encode() + b"x\tA\tB\tl\tcaf\xe9\ten\n")),
    Case("prepare-empty-file", "prepare", prep(), ("en_corpora_train.tsv:1", "empty file"),
         setup=train_file("", raw=b"")),
    Case("prepare-repeated-header", "prepare", prep(), ("en_corpora_train.tsv:4", "header appears again"),
         setup=train_file(good_rows(2) + HEADER + good_rows(2, 2))),
    Case("prepare-no-train-file", "prepare", prep(), ("no training file",),
         setup=train_file(good_rows(2), name="en_corpora_test.tsv")),
    Case("prepare-unnamed-split", "prepare", prep(), ("{d}/in/notes.tsv", "cannot tell the split"),
         setup=train_file(good_rows(2), name="notes.tsv")),
    Case("prepare-dir-without-tsv", "prepare", prep(), ("{d}/in", "no *.tsv"),
         setup=lambda w, d: (d / "in").mkdir(parents=True)),
    Case("prepare-out-holds-data", "prepare", lambda w, d: ["--input", str(w.train), "--tokenizer", str(w.minilm),
                                                            "--out", str(w.workdir / "data")],
         ("--out {w.workdir}/data", "lies inside the workdir")),
    # train
    Case("train-misspelt-key", "train", train("--config.relation.learnig_rate=1"),
         ("--config.relation.learnig_rate", "--config.relation.learning_rate")),
    Case("train-misspelt-section", "train", train("--config.relaton.batch_size=1"), ("--config.relaton",)),
    Case("train-batch-size-0", "train", train("--config.relation.batch_size=0"), ("--config.relation.batch_size=0",),
         check=nothing_at("wd")),
    Case("train-learning-rate-negative", "train", train("--config.tagger.learning_rate=-1"),
         ("--config.tagger.learning_rate",)),
    Case("train-dropout-1", "train", train("--config.tagger.attention_dropout=1.0"),
         ("--config.tagger.attention_dropout=1.0", "[0, 1)")),
    Case("train-unknown-kernel", "train", train("--config.model.kernels=layernorm"),
         ("--config.model.kernels='layernorm'", "layer_norm")),
    Case("train-num-epochs-0", "train", train("--config.relation.num_epochs=0"), ("--config.relation.num_epochs",)),
    Case("train-accum-steps-0", "train", train("--config.relation.accum_steps=0"), ("--config.relation.accum_steps",)),
    Case("train-patience-negative", "train", train("--config.tagger.patience=-1"), ("--config.tagger.patience",)),
    Case("train-dev-fraction-1", "train", train("--config.data.dev_fraction=1.0"), ("--config.data.dev_fraction",)),
    Case("train-buckets-descending", "train", train("--config.data.bucket_boundaries=(64,32)"),
         ("--config.data.bucket_boundaries",)),
    # (a tuple override adds to the tiny run's (32,64) instead of replacing it: shrink max_seq_len instead)
    Case("train-bucket-over-max-len", "train", train("--config.data.max_seq_len=32"),
         ("--config.data.bucket_boundaries", "--config.data.max_seq_len=32")),
    Case("train-log-every-0", "train", train("--config.log_every_steps=0"), ("--config.log_every_steps",)),
    Case("train-top-k-0", "train", train("--config.infer.top_k=0"), ("--config.infer.top_k",)),
    Case("train-not-a-number", "train", train("--config.relation.batch_size=abc"), ("--config.relation.batch_size",)),
    Case("train-dropout-rng-unknown", "train", train("--config.dropout_rng_impl=rgb"),
         ("--config.dropout_rng_impl='rgb'", "rbg, unsafe_rbg or threefry2x32"), check=nothing_at("wd")),
    Case("train-stage-unknown", "train", train("--config.stage=tagr"), ("--config.stage",)),
    Case("train-config-file-missing", "train", lambda w, d: ["--config", "configs/nope.py", "--workdir", str(d)],
         ("--config", "configs/nope.py")),
    Case("train-workdir-flag-missing", "train", lambda w, d: ["--config", "configs/demo.py"], ("--workdir",)),
    Case("train-positional-argument", "train", train("stray"), ("unexpected arguments", "stray")),
    Case("train-init-from-relation-fresh", "train",
         train("--config.stage=tagger", "--config.tagger.init_from_relation=True"),
         ("--config.tagger.init_from_relation", "relation/checkpoints"), check=nothing_at("wd")),
    Case("train-missing-train-files", "train",
         train("--config.data.demo=False", "--config.data.train_files=/nonexistent/x_train.tsv"),
         ("/nonexistent/x_train.tsv", "no such file")),
    Case("train-rerun-other-tokenizer", "train", lambda w, d: [*train()(w, d), f"--config.data.tokenizer={w.minilm}"],
         ("{d}/wd/data", "another tokenizer", "made with tokenizer"),
         setup=lambda w, d: ((d / "wd").mkdir(parents=True), (d / "wd" / "data").symlink_to(w.workdir / "data"))),
    Case("train-resume-other-dropout-key", "train", train("--config.dropout_rng_impl=unsafe_rbg"),
         ("--config.dropout_rng_impl='unsafe_rbg'", "{d}/wd", "trained with 'rbg'", "--config.dropout_rng_impl='rbg'"),
         setup=lambda w, d: shutil.copytree(w.workdir, d / "wd", symlinks=True),
         check=lambda proc, w, d: settings_kept(d / "wd", "dropout_rng_impl", "rbg")),
    # predict
    Case("predict-missing-input", "predict", predict(input_=lambda w, d: d / "nope.txt"), ("{d}/nope.txt",),
         check=nothing_at("out.jsonl")),
    Case("predict-model-not-a-model", "predict", predict(model=lambda w, d: w.root), ("{w.root}", "herberta.json"),
         check=nothing_at("out.jsonl")),
    Case("predict-top-k-0", "predict", predict("--top_k", "0"), ("--top_k",), check=nothing_at("out.jsonl")),
    Case("predict-top-k-negative", "predict", predict("--top_k", "-1"), ("--top_k",), check=nothing_at("out.jsonl")),
    Case("predict-top-m-0", "predict", predict("--top_m", "0"), ("--top_m",), check=nothing_at("out.jsonl")),
    Case("predict-batch-size-0", "predict", predict("--batch_size", "0"), ("--batch_size",),
         check=nothing_at("out.jsonl")),
    Case("predict-lengths-per-doubling-0", "predict", predict("--lengths_per_doubling", "0"),
         ("--lengths_per_doubling",), check=nothing_at("out.jsonl")),
    Case("predict-cpu-devices-0", "predict", predict("--cpu_devices", "0"), ("--cpu_devices=0",),
         check=nothing_at("out.jsonl")),
    Case("predict-cpu-devices-not-dividing-the-batch", "predict", predict("--cpu_devices", "3"),
         ("--cpu_devices=3", "--batch_size=64"), check=nothing_at("out.jsonl")),
    Case("predict-unknown-kernel", "predict", predict("--kernels", "attention,flash"),
         ("--kernels=attention,flash", "unknown kernel 'flash'"), check=nothing_at("out.jsonl")),
    Case("predict-bucket-step-retired", "predict", predict("--bucket_step", "4"),
         ("--bucket_step", "--lengths_per_doubling"), check=nothing_at("out.jsonl")),
    Case("predict-model-flag-missing", "predict", lambda w, d: ["--input", str(w.sentences)], ("--model",)),
    # evaluate
    Case("evaluate-data-globbed", "evaluate", lambda w, d: [*evaluate()(w, d), "--input", *w.demo_tests()], code=0,
         check=evaluated_count(World.demo_tests)),
    Case("evaluate-data-comma-list", "evaluate", lambda w, d: [*evaluate()(w, d), "--input", ",".join(w.demo_tests())],
         code=0, check=evaluated_count(World.demo_tests)),
    Case("evaluate-data-alias", "evaluate", lambda w, d: [*evaluate()(w, d), "--data", ",".join(w.demo_tests())],
         code=0, check=evaluated_count(World.demo_tests)),  # --data: --input's name before 0.2
    Case("evaluate-unknown-label", "evaluate", lambda w, d: [*evaluate()(w, d), "--input", str(d / "x_test.tsv")],
         ("{d}/x_test.tsv:3", "unknown label 'never-seen'"), check=nothing_at("report"),
         setup=lambda w, d: write(d / "x_test.tsv", "".join(pathlib.Path(w.demo_tests()[0]).read_text(
             encoding="utf-8").splitlines(keepends=True)[1:2]) + good_row(1, "never-seen"))),
    Case("evaluate-missing-data", "evaluate", lambda w, d: [*evaluate()(w, d), "--input", str(d / "nope_test.tsv")],
         ("{d}/nope_test.tsv", "no such file"), check=nothing_at("report")),
    Case("evaluate-header-only", "evaluate", lambda w, d: [*evaluate()(w, d), "--input", str(d / "x_test.tsv")],
         ("{d}/x_test.tsv", "no rows after the header"), check=nothing_at("report"),
         setup=lambda w, d: write(d / "x_test.tsv", "")),
    Case("evaluate-batch-size-0", "evaluate", lambda w, d: [*evaluate("--batch_size", "0")(w, d), "--input",
                                                             w.demo_tests()[0]], ("--batch_size=0",),
         check=nothing_at("report")),
    Case("evaluate-lengths-per-doubling-0", "evaluate",
         lambda w, d: [*evaluate("--lengths_per_doubling", "0")(w, d), "--input", w.demo_tests()[0]],
         ("--lengths_per_doubling=0",),
         check=nothing_at("report")),
    Case("evaluate-model-not-a-model", "evaluate",
         lambda w, d: [*evaluate(model=lambda w, d: d)(w, d), "--input", w.demo_tests()[0]], ("herberta.json",),
         check=nothing_at("report")),
    Case("evaluate-neither-data-nor-split", "evaluate", evaluate(), ("either --input or --split",),
         check=nothing_at("report")),
    Case("evaluate-positional-without-data", "evaluate",
         lambda w, d: [*evaluate(model=lambda w, d: w.workdir)(w, d), "--split", "dev", "stray.tsv"],
         ("unexpected arguments", "stray.tsv"), check=nothing_at("report")),
    # export
    Case("export-out-not-empty", "export", lambda w, d: ["--workdir", str(w.workdir), "--out", str(d / "exp")],
         ("--out {d}/exp", "--overwrite"), setup=stale_export, check=old_export_untouched),
    Case("export-overwrite-replaces", "export", lambda w, d: ["--workdir", str(w.workdir), "--out", str(d / "exp"),
                                                              "--overwrite"], code=0, setup=stale_export,
         check=export_replaced),
    Case("export-without-tagger", "export", lambda w, d: ["--workdir", str(d / "wd"), "--out", str(d / "exp")],
         ("tagger", "{d}/wd/tagger/checkpoints"), setup=copy_workdir_without("tagger"),
         check=lambda proc, w, d: (stage_dir_not_created("tagger")(proc, w, d), nothing_at("exp")(proc, w, d))),
    Case("export-empty-workdir", "export", lambda w, d: ["--workdir", str(d / "wd"), "--out", str(d / "exp")],
         ("--workdir {d}/wd", "config.json"), setup=lambda w, d: (d / "wd").mkdir(parents=True),
         check=lambda proc, w, d: stage_dir_not_created("relation")(proc, w, d)),
    Case("export-missing-workdir", "export", lambda w, d: ["--workdir", str(d / "nope"), "--out", str(d / "exp")],
         ("{d}/nope",), check=nothing_at("exp")),
    Case("export-out-is-workdir", "export", lambda w, d: ["--workdir", str(w.workdir), "--out", str(w.workdir),
                                                          "--overwrite"], ("--out", "workdir")),
]


@pytest.fixture(scope="session")
def world(tmp_path_factory, minilm_dir) -> World:
  root = tmp_path_factory.mktemp("bad_inputs")
  workdir = root / "run"
  run_lib.train_and_evaluate(tiny_config(), workdir)
  sentences = root / "sentences.txt"
  sentences.write_text("Marie Curie was born in Warsaw.\nAnna Weber wurde in Hamburg geboren.\n", encoding="utf-8")
  return World(root, workdir, minilm_dir, write(root / "given" / "en_corpora_train.tsv", good_rows(6)), sentences)


def _run(case: Case, w: World) -> subprocess.CompletedProcess:
  d = w.root / "cases" / case.id
  d.mkdir(parents=True)
  if case.setup:
    case.setup(w, d)
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
         "HF_HUB_OFFLINE": "1"}
  env.pop("HERBERTA_DEBUG", None)
  return subprocess.run([sys.executable, "-m", f"herberta_jax.{case.cli}", *map(str, case.args(w, d))], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def results(world, request) -> dict[str, subprocess.CompletedProcess]:
  # Only the selected cases run (pytest -k picks some); the tokenizer test needs its case whatever is selected.
  wanted = {item.callspec.params["case"].id for item in request.session.items
            if hasattr(item, "callspec") and "case" in item.callspec.params} | {"train-rerun-other-tokenizer"}
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    futures = {case.id: pool.submit(_run, case, world) for case in CASES if case.id in wanted}
    return {case_id: future.result() for case_id, future in futures.items()}


def test_there_are_enough_cases_and_every_cli_has_some():
  assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
  assert {c.cli for c in CASES} == {"prepare", "train", "predict", "evaluate", "export"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: World, results):
  proc = results[case.id]
  d = world.root / "cases" / case.id
  context = f"\nstdout: {proc.stdout[-1500:]}\nstderr: {proc.stderr[-3000:]}"
  assert "Traceback" not in proc.stderr, context
  assert proc.returncode == case.code, context
  if case.code == 2:
    errors = [line for line in proc.stderr.splitlines() if f"{case.cli}: error: " in line]
    assert len(errors) == 1, context
    for expected in case.says:
      assert expected.format(w=world, d=d) in errors[0], context
  if case.check:
    case.check(proc, world, d)


def test_a_rerun_with_another_tokenizer_is_refused_with_the_reason(world, results):
  proc = results["train-rerun-other-tokenizer"]
  assert proc.returncode == 2 and "another vocabulary, added tokens or normalizer" in proc.stderr


def test_debug_shows_the_traceback_of_a_user_error(world, tmp_path):
  args = ["--input", str(tmp_path / "nope"), "--tokenizer", str(world.minilm), "--out", str(tmp_path / "o")]
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  proc = subprocess.run([sys.executable, "-m", "herberta_jax.prepare", *args, "--debug"], cwd=REPO, env=env,
                        capture_output=True, text=True)
  assert proc.returncode != 0 and "Traceback" in proc.stderr and "DataError" in proc.stderr


# --- Exports, API and pipeline arguments (issue 34 items 2, 7, 8)
# Each export case edits its own copy of the tiny run's export as a user, a bad copy or another version might, then
# loads it through all three ways in: the predict CLI in a subprocess, `herberta_jax.load` in this process, and the
# shipped transformers pipeline in a process where JAX cannot be imported. The argument cases call the API and the
# pipeline with values out of range. Every case checks the exit code or exception type, that the one-line message
# names the file, flag or field, that no traceback is printed, and that every file under the inputs (the copy, the
# run's own export, the input sentences) is byte-identical afterwards.

import hashlib  # noqa: E402

import herberta_jax  # noqa: E402
from herberta_jax.errors import UserError  # noqa: E402


def tree_hashes(*roots: pathlib.Path) -> dict[str, str]:
  """sha256 of every file under each root (or of the root itself, a file)."""
  files = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob("*"))) if p.is_file()]
  return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def edit_meta(edit: Callable[[dict], None]):
  """An export corruption: `edit` applied to herberta.json (what herberta_jax reads) and to the root config.json's
  "herberta" (what the pipeline reads), so both backends meet the same fault."""
  def corrupt(export: pathlib.Path) -> None:
    meta_file, config_file = export / "herberta.json", export / "config.json"
    meta, config = json.loads(meta_file.read_text()), json.loads(config_file.read_text())
    edit(meta)
    edit(config["herberta"])
    meta_file.write_text(json.dumps(meta, indent=2))
    config_file.write_text(json.dumps(config, indent=2))
  return corrupt


def replace_file(relative: str, data: bytes | None):
  """An export corruption: the file replaced by `data`, or deleted (None)."""
  def corrupt(export: pathlib.Path) -> None:
    if data is None:
      (export / relative).unlink()
    else:
      (export / relative).write_bytes(data)
  return corrupt


def swap_first_labels(meta: dict) -> None:
  meta["labels"][0], meta["labels"][1] = meta["labels"][1], meta["labels"][0]


def drop_last_label(meta: dict) -> None:
  label = meta["labels"].pop()
  meta["relation_token_ids"].pop(label)
  meta["relation_tokens"].pop(label)


@dataclasses.dataclass
class ExportCase:
  id: str
  corrupt: Callable[[pathlib.Path], None]
  says: tuple[str, ...]  # in herberta_jax's message (file paths relative to the export)
  pipeline_says: tuple[str, ...] | None = None  # in the pipeline's (None: the pipeline does not read that file)


FIRST = "birth-place"  # the tiny run's first label
EXPORT_CASES = [
    ExportCase("format-version-2", edit_meta(lambda m: m.update(format_version=2)),
               ("herberta.json", "format_version is 2"), ("config.json", "format_version is 2")),
    ExportCase("herberta-json-truncated", replace_file("herberta.json", b'{"format_version": 1, "lab'),
               ("herberta.json", "not valid JSON")),
    ExportCase("herberta-json-a-list", replace_file("herberta.json", b"[]"), ("herberta.json", "not an object")),
    ExportCase("labels-a-string", edit_meta(lambda m: m.update(labels="birth-place")),
               ("herberta.json", "field labels"), ("config.json", "field labels")),
    ExportCase("label-a-number", edit_meta(lambda m: m["labels"].__setitem__(1, 7)),
               ("herberta.json", "field labels[1]"), ("config.json", "field labels[1]")),
    ExportCase("labels-repeated", edit_meta(lambda m: m["labels"].__setitem__(1, FIRST)),
               ("herberta.json", "field labels", "more than once"), ("config.json", "more than once")),
    ExportCase("labels-reordered", edit_meta(swap_first_labels),
               ("herberta.json", "field labels", "relation/config.json", "index 0"),
               ("config.json", "field labels", "relation/config.json", "index 0")),
    ExportCase("label-count-against-head", edit_meta(drop_last_label),
               ("herberta.json", "field labels", "classifier has 14 outputs"),
               ("config.json", "field labels", "classifier has 14 outputs")),
    ExportCase("negative-label-a-list", edit_meta(lambda m: m.update(negative_label=["no_relation"])),
               ("herberta.json", "field negative_label"), ("config.json", "field negative_label")),
    ExportCase("relation-token-outside-vocab", edit_meta(lambda m: m["relation_token_ids"].__setitem__(FIRST, 99999)),
               ("herberta.json", f"field relation_token_ids['{FIRST}']", "tagger/config.json vocab_size"),
               ("config.json", f"field relation_token_ids['{FIRST}']", "tagger/config.json vocab_size")),
    ExportCase("relation-token-negative", edit_meta(lambda m: m["relation_token_ids"].__setitem__(FIRST, -3)),
               ("herberta.json", f"field relation_token_ids['{FIRST}']"),
               ("config.json", f"field relation_token_ids['{FIRST}']")),
    ExportCase("relation-token-missing", edit_meta(lambda m: m["relation_token_ids"].pop(FIRST)),
               ("herberta.json", f"field relation_token_ids['{FIRST}']"),
               ("config.json", f"field relation_token_ids['{FIRST}']")),
    ExportCase("max-seq-len-a-string", edit_meta(lambda m: m.update(max_seq_len="64")),
               ("herberta.json", "field max_seq_len"), ("config.json", "field max_seq_len")),
    ExportCase("max-seq-len-past-positions", edit_meta(lambda m: m.update(max_seq_len=4096)),
               ("herberta.json", "field max_seq_len", "max_position_embeddings"),
               ("config.json", "field max_seq_len", "max_position_embeddings")),
    ExportCase("cls-id-null", edit_meta(lambda m: m.update(cls_id=None)),
               ("herberta.json", "field cls_id"), ("config.json", "field cls_id")),
    ExportCase("two-segments-a-string", edit_meta(lambda m: m.update(two_segments="yes")),
               ("herberta.json", "field two_segments"), ("config.json", "field two_segments")),
    ExportCase("decoding-top-k-0", edit_meta(lambda m: m["decoding"].update(top_k=0)),
               ("herberta.json", "field decoding.top_k"), ("config.json", "field decoding.top_k")),
    ExportCase("decoding-misspelt-key", edit_meta(lambda m: m["decoding"].update(topk=2)),
               ("herberta.json", "field decoding.topk"), ("config.json", "field decoding.topk")),
    ExportCase("tokenizer-json-corrupt", replace_file("tagger/tokenizer.json", b'{"version": "1.0", "trunc'),
               ("tagger/tokenizer.json", "cannot be read as a tokenizer")),
    ExportCase("relation-config-missing", replace_file("relation/config.json", None), ("relation", "config.json")),
]


def export_copy(world: World, case: ExportCase) -> pathlib.Path:
  """The case's corrupted copy of the run's export (made once; every interface reads it)."""
  export = world.root / "exports" / case.id
  if not export.exists():
    shutil.copytree(world.export, export)
    case.corrupt(export)
  return export


def user_env() -> dict:
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
         "HF_HUB_OFFLINE": "1"}
  env.pop("HERBERTA_DEBUG", None)
  return env


def assert_one_error_line(proc: subprocess.CompletedProcess, cli: str, says) -> str:
  context = f"\nstdout: {proc.stdout[-1500:]}\nstderr: {proc.stderr[-3000:]}"
  assert "Traceback" not in proc.stderr, context
  assert proc.returncode == 2, context
  errors = [line for line in proc.stderr.splitlines() if f"{cli}: error: " in line]
  assert len(errors) == 1, context
  for expected in says:
    assert expected in errors[0], context
  return errors[0]


@pytest.fixture(scope="session")
def export_predictions(world) -> dict[str, tuple[subprocess.CompletedProcess, dict, dict]]:
  """predict --model <each corrupted export>: (process, hashes before, hashes after), in parallel."""
  def predict_on(case: ExportCase):
    export = export_copy(world, case)
    out = world.root / "exports" / f"{case.id}.jsonl"
    before = tree_hashes(export, world.export, world.sentences)
    proc = subprocess.run([sys.executable, "-m", "herberta_jax.predict", "--model", str(export), "--input",
                           str(world.sentences), "--out", str(out)], cwd=REPO, env=user_env(), capture_output=True,
                          text=True, timeout=600)
    assert not out.exists(), f"{out} written for a bad export"
    return proc, before, tree_hashes(export, world.export, world.sentences)
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    futures = {case.id: pool.submit(predict_on, case) for case in EXPORT_CASES}
    return {case_id: future.result() for case_id, future in futures.items()}


@pytest.mark.parametrize("case", EXPORT_CASES, ids=[c.id for c in EXPORT_CASES])
def test_predict_refuses_a_bad_export_in_one_line(case: ExportCase, world, export_predictions):
  proc, before, after = export_predictions[case.id]
  line = assert_one_error_line(proc, "predict", case.says)
  assert str(world.root / "exports" / case.id) in line  # the export as the user named it
  assert after == before


@pytest.mark.parametrize("case", EXPORT_CASES, ids=[c.id for c in EXPORT_CASES])
def test_load_refuses_a_bad_export_with_a_user_error(case: ExportCase, world):
  export = export_copy(world, case)
  before = tree_hashes(export, world.export)
  with pytest.raises(UserError) as raised:
    herberta_jax.load(export)
  assert isinstance(raised.value, ValueError | FileNotFoundError)
  message = str(raised.value)
  assert "\n" not in message and str(export) in message
  for expected in case.says:
    assert expected in message
  assert tree_hashes(export, world.export) == before


PIPELINE_CASES = r"""
import json, sys
sys.modules["jax"] = None  # the shipped pipeline must not need JAX
from transformers import pipeline
spec = json.load(sys.stdin)
out, loaded = {}, {}

def outcome(call):
  try:
    return {"result": call()}
  except Exception as error:  # what the user's program would see
    return {"error": [type(error).__name__, [c.__name__ for c in type(error).__mro__], str(error)]}

for case in spec["loads"]:
  out[case["id"]] = outcome(lambda: pipeline(model=case["export"], trust_remote_code=True, device="cpu") and "loaded")
extract = pipeline(model=spec["good"], trust_remote_code=True, device="cpu")
for case in spec["calls"]:
  out[case["id"]] = outcome(lambda: extract(case["inputs"], **case["kwargs"]))
out["construct-misspelt"] = outcome(lambda: pipeline(model=spec["good"], trust_remote_code=True, device="cpu",
                                                     topk=2) and "loaded")
out["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "herberta_jax") and sys.modules[m])
json.dump(out, sys.stdout)
"""
SENTENCE = "Marie Curie was born in Warsaw."
# (id, inputs, keyword arguments, exception type, what its message names); None: the call returns [].
PIPELINE_CALLS = [
    ("empty-list", [], {}, None, ()),
    ("top-k-0", SENTENCE, {"top_k": 0}, "ValueError", ("top_k=0", ">= 1")),
    ("top-m-0", SENTENCE, {"top_m": 0}, "ValueError", ("top_m=0", ">= 1")),
    ("max-span-len-0", SENTENCE, {"max_span_len": 0}, "ValueError", ("max_span_len=0", ">= 1")),
    ("top-k-a-string", SENTENCE, {"top_k": "2"}, "TypeError", ("top_k='2'",)),
    ("disjoint-a-string", SENTENCE, {"disjoint_entities": "yes"}, "TypeError", ("disjoint_entities='yes'",)),
    ("misspelt-keyword", SENTENCE, {"topk": 2}, "TypeError", ("unknown parameter topk", "top_k")),
    ("misspelt-keyword-on-empty", [], {"top_mm": 2}, "TypeError", ("unknown parameter top_mm",)),
    ("non-str-item", [SENTENCE, 7], {}, "TypeError", ("str", "int")),
]


@pytest.fixture(scope="session")
def pipeline_outcomes(world, tmp_path_factory) -> tuple[dict, subprocess.CompletedProcess, dict, dict]:
  """Every pipeline case in one process without JAX (its start-up is the slow part): (outcomes by id, process,
  hashes before, hashes after)."""
  exports = {case.id: export_copy(world, case) for case in EXPORT_CASES if case.pipeline_says}
  spec = {"good": str(world.export), "loads": [{"id": i, "export": str(e)} for i, e in exports.items()],
          "calls": [{"id": i, "inputs": inputs, "kwargs": kwargs} for i, inputs, kwargs, _, _ in PIPELINE_CALLS]}
  roots = [*exports.values(), world.export]
  before = tree_hashes(*roots)
  env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "XLA_FLAGS")}
  env.update(HF_MODULES_CACHE=str(tmp_path_factory.mktemp("modules")), HF_HUB_OFFLINE="1")
  cwd = tmp_path_factory.mktemp("no_herberta")  # herberta_jax not importable from here
  proc = subprocess.run([sys.executable, "-c", PIPELINE_CASES], input=json.dumps(spec), capture_output=True, text=True,
                        cwd=cwd, env=env, timeout=600)
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  outcomes = json.loads(proc.stdout)
  assert outcomes["imported"] == []
  return outcomes, proc, before, tree_hashes(*roots)


def assert_raised(outcome: dict, kind: str, says) -> None:
  assert "error" in outcome, outcome
  name, bases, message = outcome["error"]
  assert kind in bases, outcome
  assert "\n" not in message, message
  for expected in says:
    assert expected in message, message


@pytest.mark.parametrize("case", [c for c in EXPORT_CASES if c.pipeline_says],
                         ids=[c.id for c in EXPORT_CASES if c.pipeline_says])
def test_pipeline_refuses_a_bad_export_with_the_same_schema(case: ExportCase, world, pipeline_outcomes):
  outcomes, _, before, after = pipeline_outcomes
  assert_raised(outcomes[case.id], "ExportError", (str(world.root / "exports" / case.id), *case.pipeline_says))
  assert after == before


@pytest.mark.parametrize("case_id, inputs, kwargs, kind, says", PIPELINE_CALLS, ids=[c[0] for c in PIPELINE_CALLS])
def test_pipeline_checks_its_arguments_at_the_call(case_id, inputs, kwargs, kind, says, pipeline_outcomes):
  outcomes, _, before, after = pipeline_outcomes
  if kind is None:
    assert outcomes[case_id] == {"result": []}
  else:
    assert_raised(outcomes[case_id], kind, says)
  assert after == before


def test_pipeline_refuses_a_misspelt_keyword_when_built(pipeline_outcomes):
  assert_raised(pipeline_outcomes[0]["construct-misspelt"], "TypeError", ("unknown parameter topk", "top_k"))


# (id, keyword arguments of load, exception type, what its message names)
LOAD_ARGUMENTS = [
    ("dtype-banana", {"dtype": "banana"}, ValueError, ("dtype='banana'", "'bfloat16'")),
    ("dtype-a-number", {"dtype": 16}, TypeError, ("dtype=16",)),
    ("top-k-0", {"top_k": 0}, ValueError, ("top_k=0", ">= 1")),
    ("top-m-0", {"top_m": 0}, ValueError, ("top_m=0", ">= 1")),
    ("max-span-len-0", {"max_span_len": 0}, ValueError, ("max_span_len=0", ">= 1")),
    ("batch-size-a-string", {"batch_size": "8"}, TypeError, ("batch_size='8'",)),
    ("top-k-a-bool", {"top_k": True}, TypeError, ("top_k=True",)),
    ("disjoint-a-string", {"disjoint_entities": "yes"}, TypeError, ("disjoint_entities='yes'", "True, False")),
    ("lengths-per-doubling-0", {"lengths_per_doubling": 0}, ValueError, ("lengths_per_doubling=0",)),
    ("kernels-unknown", {"kernels": "flash"}, ValueError, ("kernels='flash'", "unknown kernel 'flash'")),
    ("kernels-a-list", {"kernels": ["attention"]}, TypeError, ("kernels=['attention']",)),
]


@pytest.mark.parametrize("case_id, kwargs, kind, says", LOAD_ARGUMENTS, ids=[c[0] for c in LOAD_ARGUMENTS])
def test_load_checks_its_arguments_at_the_call(case_id, kwargs, kind, says, world):
  before = tree_hashes(world.export)
  with pytest.raises(kind) as raised:
    herberta_jax.load(world.export, **kwargs)
  assert "\n" not in str(raised.value)
  for expected in says:
    assert expected in str(raised.value)
  assert tree_hashes(world.export) == before


def test_load_with_kernels_runs_both_encoders_through_them(world):
  """The switch reaches the encoders; off a GPU the kernels are their references, so the extractions are the
  plain model's."""
  sentences = world.sentences.read_text(encoding="utf-8").splitlines()[:8]
  fused = herberta_jax.load(world.export, kernels="attention,layer_norm")
  predictor = fused.predictor()
  assert predictor.relation_module.config.kernels == predictor.tagger_module.config.kernels == ("layer_norm",
                                                                                                  "attention")
  plain = herberta_jax.load(world.export)
  assert plain.predictor().relation_module.config.kernels == ()
  for a, b in zip(fused.extract(sentences), plain.extract(sentences)):
    assert (a.relation, a.e1, a.e2) == (b.relation, b.e1, b.e2)


def test_load_refuses_a_path_that_is_not_one(world):
  with pytest.raises(TypeError, match=r"path=42: expected a str or os.PathLike"):
    herberta_jax.load(42)


@pytest.fixture(scope="session")
def loaded_model(world):
  return herberta_jax.load(world.export)


# (id, sentences, keyword arguments of extract, exception type, what its message names)
EXTRACT_ARGUMENTS = [
    ("non-str-item", [SENTENCE, 7], {}, TypeError, ("sentences[1]", "expected a str, got int")),
    ("none-item", [None], {}, TypeError, ("sentences[0]", "NoneType")),
    ("not-iterable", 5, {}, TypeError, ("sentences", "got int")),
    ("bytes", SENTENCE.encode(), {}, TypeError, ("sentences", "got bytes")),
    ("top-k-0", [SENTENCE], {"top_k": 0}, ValueError, ("top_k=0",)),
    ("top-m-0", [SENTENCE], {"top_m": 0}, ValueError, ("top_m=0",)),
    ("top-m-a-float", [SENTENCE], {"top_m": 1.5}, TypeError, ("top_m=1.5",)),
]


@pytest.mark.parametrize("case_id, sentences, kwargs, kind, says", EXTRACT_ARGUMENTS,
                         ids=[c[0] for c in EXTRACT_ARGUMENTS])
def test_extract_checks_its_arguments_at_the_call(case_id, sentences, kwargs, kind, says, loaded_model):
  with pytest.raises(kind) as raised:
    loaded_model.extract(sentences, **kwargs)
  assert "\n" not in str(raised.value)
  for expected in says:
    assert expected in str(raised.value)


def test_extract_of_nothing_is_nothing(loaded_model):
  assert loaded_model.extract([]) == [] and list(loaded_model.extract_iter([])) == []


CONFIG_FILES = [
    ("config-raises", "def get_config():\n  raise RuntimeError('no such preset')\n",
     ("--config", "config.py", "RuntimeError: no such preset", "config.py:2")),
    ("config-returns-a-dict", "def get_config():\n  return {'stage': 'both'}\n",
     ("--config", "config.py", "returned dict, not an ml_collections.ConfigDict")),
    ("config-syntax-error", "def get_config(:\n  pass\n", ("--config", "config.py", "SyntaxError")),
]


@pytest.mark.parametrize("case_id, source, says", CONFIG_FILES, ids=[c[0] for c in CONFIG_FILES])
def test_a_broken_config_file_is_one_line(case_id, source, says, tmp_path):
  config = tmp_path / "config.py"
  config.write_text(source)
  before = tree_hashes(tmp_path)
  proc = subprocess.run([sys.executable, "-m", "herberta_jax.train", "--config", str(config), "--workdir",
                         str(tmp_path / "wd")], cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=600)
  assert_one_error_line(proc, "train", says)
  assert tree_hashes(tmp_path) == before and not (tmp_path / "wd").exists()


@pytest.mark.parametrize("cli, extra", [("predict", ["--input", "{s}", "--out", "{d}/out.jsonl"]),
                                        ("evaluate", ["--split", "test", "--out", "{d}/report"])])
def test_max_span_len_0_is_refused_by_the_clis(cli, extra, world, tmp_path):
  before = tree_hashes(world.export, world.sentences)
  args = [a.format(s=world.sentences, d=tmp_path) for a in extra]
  proc = subprocess.run([sys.executable, "-m", f"herberta_jax.{cli}", "--model", str(world.workdir), *args,
                         "--max_span_len", "0"], cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=600)
  assert_one_error_line(proc, cli, ("--max_span_len=0",))
  assert tree_hashes(world.export, world.sentences) == before and not any(tmp_path.iterdir())


def test_evaluate_refuses_a_bad_export_in_one_line(world, tmp_path):
  export = export_copy(world, EXPORT_CASES[[c.id for c in EXPORT_CASES].index("labels-reordered")])
  before = tree_hashes(export, world.export)
  proc = subprocess.run([sys.executable, "-m", "herberta_jax.evaluate", "--model", str(export), "--input",
                         world.demo_tests()[0], "--out", str(tmp_path / "report")], cwd=REPO, env=user_env(),
                        capture_output=True, text=True, timeout=600)
  assert_one_error_line(proc, "evaluate", (f"{export}/herberta.json", "field labels", "relation/config.json"))
  assert tree_hashes(export, world.export) == before and not (tmp_path / "report").exists()


def test_exports_are_written_with_the_users_umask(world, tmp_path):
  """safetensors writes 0600 and a staging folder is 0700: an export must be readable as the umask says."""
  out = tmp_path / "exp"
  proc = subprocess.run(["sh", "-c", 'umask 027 && exec "$0" "$@"', sys.executable, "-m", "herberta_jax.export",
                         "--workdir", str(world.workdir), "--out", str(out)], cwd=REPO, env=user_env(),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")]}
  assert modes["relation/model.safetensors"] == modes["herberta.json"] == 0o640
  assert {m for p, m in modes.items() if (out / p).is_dir()} == {0o750}
  assert {m for p, m in modes.items() if (out / p).is_file()} == {0o640}
  default = {p.stat().st_mode & 0o777 for p in world.export.rglob("*") if p.is_file()}  # the test's own umask
  mask = os.umask(0)
  os.umask(mask)
  assert default == {0o666 & ~mask}


# --- Rows, formats, resume, signals and I/O (issue 34 items 3-6)
# One bad row costs one error object; --resume checks every kept row; formats are not guessed wrong; Ctrl-C, full
# disks, closed pipes and odd --input files are one line. Each case runs a public interface in a subprocess (a CLI,
# the Python API, or the exported transformers pipeline without JAX) and checks its exit code, what its one line
# names, that no traceback is printed, and that every file under the case's folder (its inputs, and an output it
# refused to touch) and the export is byte-identical afterwards.


import random  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402

from herberta_jax.data import smiler  # noqa: E402

API_SCRIPT = r"""
import json, sys
import herberta_jax
model = herberta_jax.load(sys.argv[1], batch_size=8, top_m=int(sys.argv[2]))
sentences = json.loads(open(sys.argv[3], encoding="utf-8", errors="surrogatepass").read())
json.dump([r.to_dict() for r in model.extract(sentences)], sys.stdout)
"""

PIPELINE_SCRIPT = r"""
import json, sys
sys.modules["jax"] = None  # the shipped pipeline must need PyTorch and transformers only
from transformers import pipeline
extract = pipeline(model=sys.argv[1], trust_remote_code=True, device="cpu")
sentences = json.loads(open(sys.argv[3], encoding="utf-8", errors="surrogatepass").read())
rows = extract(sentences, batch_size=8, top_m=int(sys.argv[2]))
kept = ("relation", "e1", "e2", "nbest")
json.dump([{"error": r["error"]} if "error" in r else {k: r[k] for k in kept} for r in rows], sys.stdout)
"""

BAD_ROWS = ["Marie Curie was born in Warsaw.", "\ud800 x", "\u200b", "\x00", "Anna Weber wurde in Hamburg geboren."]
TAGGED = good_rows(3)


@dataclasses.dataclass
class IOCase:
  """A case of this section: `run` gives the command (a list, or a str for bash), `code` the exit status."""

  id: str
  run: Callable[[World, pathlib.Path], list[str] | str]
  says: tuple[str, ...] = ()  # str.format'ed with w and d; each must be in the one error (or interrupt) line
  code: int = 2
  setup: Callable[[World, pathlib.Path], None] | None = None
  check: Callable[[subprocess.CompletedProcess, World, pathlib.Path], None] | None = None
  interrupt_when: Callable[[pathlib.Path], bool] | None = None  # Ctrl-C once this holds of the case's folder


def cli_args(name: str, *args) -> Callable[[World, pathlib.Path], list[str]]:
  def command(w, d):
    fmt = lambda a: a.format(w=w, d=d) if isinstance(a, str) else str(a(w, d))
    return [sys.executable, "-m", f"herberta_jax.{name}", *map(fmt, args)]
  return command


def io_predict(*extra, input_="{d}/in/in.txt", out="{d}/out.jsonl"):
  return cli_args("predict", "--model", "{w.export}", "--input", input_, "--out", out, "--batch_size", "8", *extra)


def io_evaluate(*extra, input_="{d}/in/x_test.tsv", out="{d}/report"):
  return cli_args("evaluate", "--model", "{w.export}", "--input", input_, "--out", out, "--batch_size", "8", *extra)


def script(source: str, top_m: int = 1):
  def command(w, d):
    return [sys.executable, "-c", source, str(w.export), str(top_m), str(d / "in" / "sentences.json")]
  return command


def shell(template: str):
  return lambda w, d: template.format(w=w, d=d, python=sys.executable)


def given(name: str, text: str | bytes):
  def setup(w, d):
    path = d / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
  return setup


def jsonl(texts) -> str:
  return "".join(json.dumps({"text": t}) + "\n" for t in texts)


def sentences_json(texts):
  return given("sentences.json", json.dumps(texts))


def then(*setups):
  def setup(w, d):
    for step in setups:
      step(w, d)
  return setup


def output_rows(proc, w, d, name="out.jsonl") -> list[dict]:
  return [json.loads(line) for line in (d / name).read_text(encoding="utf-8").splitlines()]


def rows_are(*kinds: str, name="out.jsonl", stdout=False):
  """The output's rows, in order: "ok" a prediction, any other word an error naming it."""
  def check(proc, w, d):
    rows = json.loads(proc.stdout) if stdout else output_rows(proc, w, d, name)
    assert len(rows) == len(kinds), rows
    for row, kind in zip(rows, kinds):
      if kind == "ok":
        assert "error" not in row and row["relation"], row
      else:
        assert kind in row.get("error", ""), (kind, row)
  return check


def texts_are(*texts: str):
  def check(proc, w, d):
    assert [r.get("text") for r in output_rows(proc, w, d)] == list(texts)
  return check


def stderr_says(*parts: str):
  def check(proc, w, d):
    for part in parts:
      assert part.format(w=w, d=d) in proc.stderr, proc.stderr[-2000:]
  return check


def all_of(*checks):
  def check(proc, w, d):
    for each in checks:
      each(proc, w, d)
  return check


def nbest_of_length(n: int, stdout=False):
  def check(proc, w, d):
    rows = json.loads(proc.stdout) if stdout else output_rows(proc, w, d)
    assert rows and all(len(r["nbest"]) == n for r in rows), [len(r.get("nbest", ())) for r in rows]
    assert all(n["score"] == 0 or n["e1"]["end"] > 0 for r in rows for n in r["nbest"])  # missing: score 0
  return check


def written_for_another_input(w, d):
  """An output of six predicted rows (more than the first window, so --resume would keep them) for other text."""
  given("../out.jsonl", jsonl(["Someone else's sentence."] * 6).replace('{"text"', '{"relation": "x", "text"'))(w, d)


def fifo_fed(name: str, text: str):
  """A FIFO at in/NAME that a background thread writes `text` into once a reader opens it."""
  def setup(w, d):
    (d / "in").mkdir(parents=True, exist_ok=True)
    fifo = d / "in" / name
    os.mkfifo(fifo)

    def feed():
      with open(fifo, "w", encoding="utf-8") as pipe:  # blocks until predict opens it
        pipe.write(text)
    threading.Thread(target=feed, daemon=True).start()
  return setup


def evaluated(count: int):
  def check(proc, w, d):
    assert json.loads((d / "report" / "metrics.json").read_text())["count"] == count
  return check


def has_lines(name: str, count: int):
  def ready(d: pathlib.Path) -> bool:
    path = d / name
    return path.exists() and path.read_bytes().count(b"\n") >= count
  return ready


def exists(relative: str):
  return lambda d: any((d / relative).glob("*")) if (d / relative).is_dir() else False


def resumable_after_interrupt(proc, w, d):
  """The interrupted output resumes to exactly what an uninterrupted run writes."""
  first = d / "out.jsonl"
  resumed = subprocess.run(io_predict("--resume")(w, d), cwd=REPO, env=_io_env(), capture_output=True, text=True)
  assert resumed.returncode == 0 and "kept from --out" in resumed.stderr, resumed.stderr[-2000:]
  fresh = subprocess.run(io_predict(out="{d}/fresh.jsonl")(w, d), cwd=REPO, env=_io_env(), capture_output=True)
  assert fresh.returncode == 0 and first.read_bytes() == (d / "fresh.jsonl").read_bytes()


LINES = [f"Line {i} here." for i in range(6)]
MANY = "".join(f"Sentence number {i} was written in Hamburg by Anna Weber.\n" for i in range(12000))
KNOWN_ROWS = "".join(good_row(i) for i in range(4))  # labels the demo model knows
UNBALANCED_ROW = 'q1\tA\tB\tbirth-place\t"<e1>A</e1> said <e2>B</e2>\ten\n'  # a quote never closed
UNBALANCED_TSV = HEADER + good_row(0) + good_row(1) + UNBALANCED_ROW + good_row(3)
IO_CASES = [
    # item 3: one bad row costs one error object, everywhere
    IOCase("rows-predict-lone-surrogate-zero-width-nul", io_predict(input_="{d}/in/in.jsonl"), code=0,
           setup=given("in.jsonl", jsonl(BAD_ROWS)), check=rows_are("ok", "tokenizer cannot read", "empty sentence",
                                                                    "empty sentence", "ok")),
    IOCase("rows-api-lone-surrogate-zero-width-nul", script(API_SCRIPT), code=0, setup=sentences_json(BAD_ROWS),
           check=rows_are("ok", "tokenizer cannot read", "empty sentence", "empty sentence", "ok", stdout=True)),
    IOCase("rows-pipeline-lone-surrogate-zero-width-nul", script(PIPELINE_SCRIPT), code=0,
           setup=sentences_json(BAD_ROWS),
           check=rows_are("ok", "tokenizer cannot read", "empty sentence", "empty sentence", "ok", stdout=True)),
    IOCase("rows-predict-top-m-past-a-short-sentence", io_predict("--top_m", "300"), code=0,
           setup=given("in.txt", "Hi.\nAnna Weber wurde in Hamburg geboren.\n"), check=nbest_of_length(300)),
    IOCase("rows-api-top-m-past-a-short-sentence", script(API_SCRIPT, top_m=300), code=0,
           setup=sentences_json(["Hi.", "Ok"]), check=nbest_of_length(300, stdout=True)),
    IOCase("rows-pipeline-top-m-past-a-short-sentence", script(PIPELINE_SCRIPT, top_m=300), code=0,
           setup=sentences_json(["Hi.", "Ok"]), check=nbest_of_length(300, stdout=True)),
    IOCase("rows-predict-max-span-len-0", io_predict("--max_span_len", "0"), ("--max_span_len=0",),
           setup=given("in.txt", "Hi.\n"), check=nothing_at("out.jsonl")),
    IOCase("rows-evaluate-max-span-len-0", io_evaluate("--max_span_len", "0"), ("--max_span_len=0",),
           setup=given("x_test.tsv", HEADER + KNOWN_ROWS), check=nothing_at("report")),
    # item 4: --resume checks what it keeps
    # (the first window, which --resume keeps or redoes whole, is 2 or 4 rows here: the outputs hold more)
    IOCase("resume-output-of-another-input", io_predict("--resume"), ("--resume", "{d}/out.jsonl:1", "input line 1"),
           setup=then(given("in.txt", "Marie Curie was born in Warsaw.\n" * 6), written_for_another_input)),
    IOCase("resume-kept-row-edited", io_predict("--resume"),
           ("--resume", "{d}/out.jsonl:2", "input line 2", "'Edited.'"),
           setup=then(given("in.txt", "".join(f"Line {i} here.\n" for i in range(6))),
                      given("../out.jsonl", jsonl(["Line 0 here.", "Edited.", *LINES[2:6]])))),
    IOCase("resume-more-rows-than-the-input", io_predict("--resume"),
           ("--resume", "{d}/out.jsonl", "input ends after 1"),
           setup=then(given("in.txt", "Line 0 here.\n"),
                      given("../out.jsonl", jsonl([f"Line {i} here." for i in range(5)])))),
    IOCase("resume-error-row-for-a-sentence", io_predict("--resume"), ("{d}/out.jsonl:1", "expected a prediction"),
           setup=then(given("in.txt", "".join(f"Line {i} here.\n" for i in range(5))),
                      given("../out.jsonl", '{"error": "line 1: empty sentence"}\n' +
                            jsonl([f"Line {i} here." for i in range(1, 5)])))),
    # item 5: formats are not guessed wrong
    IOCase("format-tsv-without-header", io_predict(input_="{d}/in/rows.tsv"), code=0, setup=given("rows.tsv", TAGGED),
           check=texts_are(*(smiler.TAG.sub("", line.split("\t")[4]) for line in TAGGED.splitlines()))),
    IOCase("format-text-starting-with-a-brace", io_predict(), code=0,
           setup=given("in.txt", "{braces} open this sentence.\nA second one.\n"),
           check=all_of(texts_are("{braces} open this sentence.", "A second one."),
                        stderr_says("--input {d}/in/in.txt", "--format jsonl"))),
    IOCase("format-untagged-six-columns-suggests-format", io_predict(), code=0,
           setup=given("in.txt", "a\tb\tc\td\te\tf\n"), check=stderr_says("--format tsv")),
    IOCase("format-unbalanced-quote-as-prepare-reads-it", io_predict(input_="{d}/in/x.tsv"), code=0,
           setup=given("x.tsv", UNBALANCED_TSV), check=rows_are("ok", "ok", "line 4: malformed CSV quoting", "ok")),
    IOCase("format-blank-jsonl-line", io_predict(input_="{d}/in/in.jsonl"), code=0,
           setup=given("in.jsonl", jsonl(["One here."]) + "\n" + jsonl(["Two here."])),
           check=rows_are("ok", "line 2: blank line", "ok")),
    IOCase("format-evaluate-unbalanced-quote", io_evaluate(), ("{d}/in/x_test.tsv:4", "malformed CSV quoting"),
           setup=given("x_test.tsv", UNBALANCED_TSV), check=nothing_at("report")),
    # item 6: signals and I/O
    IOCase("io-predict-ctrl-c", io_predict(), ("interrupted", "{d}/out.jsonl", "--resume"), code=130,
           setup=given("in.txt", MANY), interrupt_when=has_lines("out.jsonl", 8), check=resumable_after_interrupt),
    IOCase("io-train-ctrl-c", cli_args("train", "--config", "configs/demo.py", "--workdir", "{d}/wd", *TINY_FLAGS,
                                       "--config.relation.checkpoint_every_steps=2"),
           ("interrupted", "last checkpoint", "rerun the same command"), code=130,
           interrupt_when=has_lines("wd/relation/losses.jsonl", 1)),  # flushed before each save, every 2 steps
    IOCase("io-predict-out-full-disk", io_predict(out="/dev/full"), ("--out /dev/full", "no space left"),
           setup=given("in.txt", "One here.\n")),
    IOCase("io-predict-into-head", shell("{python} -m herberta_jax.predict --model {w.export} --input {d}/in/in.txt "
                                         "--batch_size 8 | head -1; exit ${{PIPESTATUS[0]}}"), code=141,
           setup=given("in.txt", MANY[:200000]), check=lambda proc, w, d: not_blamed("")(proc, w, d)),
    IOCase("io-predict-input-fifo", io_predict(input_="{d}/in/fifo"), code=0,
           setup=fifo_fed("fifo", "One here.\nTwo here.\n"), check=rows_are("ok", "ok")),
    IOCase("io-predict-input-process-substitution",
           shell("{python} -m herberta_jax.predict --model {w.export} --input <(cat {d}/in/in.txt) "
                 "--out {d}/out.jsonl"),
           code=0, setup=given("in.txt", "One here.\nTwo here.\n"), check=rows_are("ok", "ok")),
    IOCase("io-predict-input-dev-null", io_predict(input_="/dev/null"), code=0, check=rows_are()),
    IOCase("io-predict-input-folder", io_predict(input_="{d}/in"), ("--input {d}/in", "is a folder"),
           setup=given("in.txt", "One here.\n"), check=nothing_at("out.jsonl")),
    IOCase("io-predict-out-folder", io_predict(out="{d}/in"), ("--out {d}/in", "is a folder"),
           setup=given("in.txt", "One here.\n")),
    IOCase("io-predict-out-in-a-missing-folder", io_predict(out="{d}/nope/out.jsonl"),
           ("--out {d}/nope/out.jsonl", "{d}/nope does not exist"), setup=given("in.txt", "One here.\n"),
           check=nothing_at("nope")),
    IOCase("io-evaluate-out-a-file", io_evaluate(out="{d}/in/notes.txt"), ("--out {d}/in/notes.txt", "is a file"),
           setup=then(given("x_test.tsv", HEADER + KNOWN_ROWS), given("notes.txt", "mine"))),
    IOCase("io-evaluate-input-process-substitution",
           shell("{python} -m herberta_jax.evaluate --model {w.export} --input <(cat {d}/in/x_test.tsv) "
                 "--out {d}/report"), code=0, setup=given("x_test.tsv", HEADER + KNOWN_ROWS),
           check=evaluated(4)),
    IOCase("io-evaluate-input-dev-null", io_evaluate(input_="/dev/null"), ("/dev/null", "empty file"),
           check=nothing_at("report")),
    IOCase("io-train-workdir-a-file", cli_args("train", "--config", "configs/demo.py", "--workdir",
                                               "{d}/in/notes.txt", *TINY_FLAGS),
           ("{d}/in/notes.txt", "a file where a folder is expected"), setup=given("notes.txt", "mine")),
]


def _io_env() -> dict[str, str]:
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
         "HF_HUB_OFFLINE": "1"}
  env.pop("HERBERTA_DEBUG", None)
  return env


def file_hashes(*folders: pathlib.Path) -> dict[str, str]:
  """sha256 of every regular file under `folders` (a FIFO is not a file a command could change)."""
  found = {}
  for folder in folders:
    for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
      if path.is_file() and not path.is_symlink():
        found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
  return found


def _run_io(case: IOCase, w: World, section: str = "io") -> tuple[subprocess.CompletedProcess, dict, dict]:
  d = w.root / section / case.id
  d.mkdir(parents=True)
  if case.setup:
    case.setup(w, d)
  command = case.run(w, d)
  env, cwd = _io_env(), REPO
  if isinstance(command, list) and PIPELINE_SCRIPT in command:  # without herberta_jax, as the export's users run it
    env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env["HF_MODULES_CACHE"], cwd = str(d / "modules"), d
  guarded = [d, w.workdir] if case.code == 2 else [d / "in", w.workdir]  # a refused command writes nothing
  before = file_hashes(*guarded)
  popen = subprocess.Popen(["bash", "-c", command] if isinstance(command, str) else command, env=env, cwd=cwd,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  if case.interrupt_when:
    deadline = time.monotonic() + 300
    while not case.interrupt_when(d) and popen.poll() is None and time.monotonic() < deadline:
      time.sleep(0.2)
    popen.send_signal(signal.SIGINT)
  stdout, stderr = popen.communicate(timeout=600)
  proc = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
  modules = d / "modules"
  after = {k: v for k, v in file_hashes(*guarded).items() if not k.startswith(str(modules))}
  return proc, {k: v for k, v in before.items() if not k.startswith(str(modules))}, after


@pytest.fixture(scope="session")
def io_results(world, request) -> dict[str, tuple]:
  wanted = {item.callspec.params["io_case"].id for item in request.session.items
            if hasattr(item, "callspec") and "io_case" in item.callspec.params}
  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    futures = {case.id: pool.submit(_run_io, case, world) for case in IO_CASES if case.id in wanted}
    return {case_id: future.result() for case_id, future in futures.items()}


def test_the_rows_formats_resume_and_io_section_has_enough_cases():
  assert len(IO_CASES) >= 25 and len({c.id for c in IO_CASES}) == len(IO_CASES)


@pytest.mark.parametrize("io_case", IO_CASES, ids=[c.id for c in IO_CASES])
def test_rows_formats_resume_and_io(io_case: IOCase, world: World, io_results):
  assert_io_case(io_case, world, *io_results[io_case.id], world.root / "io" / io_case.id)


def assert_io_case(io_case: IOCase, world: World, proc, before: dict, after: dict, d: pathlib.Path) -> None:
  """The exit code, one line naming what it should (no traceback), the user's files unchanged, the case's check."""
  context = f"\nstdout: {proc.stdout[-1500:]}\nstderr: {proc.stderr[-3000:]}"
  assert "Traceback" not in proc.stderr, context
  assert proc.returncode == io_case.code, context
  assert after == before, "a user's file changed"
  if io_case.code in (2, 130):
    word = "error: " if io_case.code == 2 else "interrupted: "
    lines = [line for line in proc.stderr.splitlines() if word in line]
    assert len(lines) == 1, context
    for expected in io_case.says:
      assert expected.format(w=world, d=d) in lines[0], context
  if io_case.check:
    io_case.check(proc, world, d)


def _code_points_by_category(limit: int = 0x3100) -> dict[str, list[str]]:
  """The BMP's first code points (Latin to CJK punctuation) and a few higher blocks, grouped by Unicode category."""
  found: dict[str, list[str]] = {}
  for point in [*range(limit), *range(0xAC00, 0xAC80), *range(0xFE00, 0xFF10), *range(0x1F600, 0x1F650)]:
    found.setdefault(unicodedata.category(chr(point)), []).append(chr(point))
  return found


def awkward_strings(count: int, seed: int = 34) -> list[str]:
  """A seeded mix: every Unicode category alone and mixed with words, lone surrogates, controls, zero-width and
  combining-only strings, whitespace of every kind, long runs of one character, and the empty string."""
  rng = random.Random(seed)
  by_category = _code_points_by_category()
  categories = sorted(by_category)
  surrogates = [chr(p) for p in (0xD800, 0xDBFF, 0xDC00, 0xDFFF)]
  words = ["Anna", "Weber", "wurde", "in", "Hamburg", "geboren", "Marie", "Curie", "Warsaw", "born", "."]

  def one() -> str:
    kind = rng.randrange(7)
    if kind == 0:  # one category only
      pool = by_category[rng.choice(categories)]
      return "".join(rng.choice(pool) for _ in range(rng.randint(1, 12)))
    if kind == 1:  # words with odd characters between them
      return " ".join(rng.choice(words) + rng.choice(by_category[rng.choice(categories)]) * rng.randint(0, 2)
                      for _ in range(rng.randint(1, 10)))
    if kind == 2:  # a lone surrogate somewhere
      text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))
      at = rng.randint(0, len(text))
      return text[:at] + rng.choice(surrogates) + text[at:]
    if kind == 3:  # controls, format and combining characters only
      pool = by_category["Cc"] + by_category["Cf"] + by_category["Mn"]
      return "".join(rng.choice(pool) for _ in range(rng.randint(1, 8)))
    if kind == 4:  # a long run of one character
      run = rng.choice([*rng.choice(words), "\u200b", " ", "\x00", "é", "漢", "😀", "\u0301"])
      return run * rng.randint(50, 3000)
    if kind == 5:  # whitespace of every kind
      spaces = by_category["Zs"] + ["\t", "\n", "\r", "\x0b", "\x0c"]
      return "".join(rng.choice(spaces) for _ in range(rng.randint(0, 6)))
    return "".join(rng.choice(by_category[rng.choice(categories)]) for _ in range(rng.randint(1, 30)))

  return [one() for _ in range(count)]


def verdict(row: dict) -> str:
  """"triple", or the kind of error: its text up to the first parenthesis (the backends' details differ)."""
  if "error" in row:
    assert isinstance(row["error"], str) and row["error"], row
    return "error: " + row["error"].split("(")[0].strip()
  assert isinstance(row["relation"], str) and row["e1"] is not None and row["e2"] is not None, row
  return "triple"


def test_thousands_of_awkward_strings_get_a_triple_or_an_error_and_both_backends_agree(world, tmp_path):
  import herberta_jax
  strings = awkward_strings(3000)
  model = herberta_jax.load(world.export, batch_size=64)
  jax_verdicts = [verdict(r.to_dict()) for r in model.extract(strings)]
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "sentences.json").write_text(json.dumps(strings), encoding="utf-8")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
  proc = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT.replace("batch_size=8", "batch_size=64"),
                         str(world.export), "1", str(tmp_path / "in" / "sentences.json")], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  torch_verdicts = [verdict(r) for r in json.loads(proc.stdout)]
  assert len(jax_verdicts) == len(torch_verdicts) == len(strings)
  disagree = [(s[:30], j, t) for s, j, t in zip(strings, jax_verdicts, torch_verdicts) if j != t]
  assert not disagree, disagree[:10]
  kinds = set(jax_verdicts)  # the generator reaches every outcome
  assert "triple" in kinds and "error: empty sentence" in kinds
  assert any(k.startswith("error: the tokenizer cannot read") for k in kinds), kinds


# --- Where outputs may go (issue 34 item 1)
# No command writes over one of its inputs, into a workdir or an export that is not its own designated place, over
# a folder of other files without --overwrite, or into a workdir another run holds. Each case runs a CLI in a
# subprocess, and every file under the case's folder and the tiny run's workdir (its export included) is
# byte-identical afterwards.

import socket  # noqa: E402

from herberta_jax import folders  # noqa: E402


def linked(name: str, target: str):
  def setup(w, d):
    (d / name).symlink_to(target.format(w=w, d=d))
  return setup


def marked_workdir(name: str = "wd"):
  """A folder marked as a training workdir (what `train` leaves), with a config.json of its own."""
  def setup(w, d):
    folders.mark(d / name, folders.WORKDIR)
    (d / name / "config.json").write_text('{"seed": 1}')
  return setup


def foreign_folder(name: str):
  """A non-empty folder that is none of ours: a HuggingFace checkpoint, say."""
  def setup(w, d):
    (d / name).mkdir(parents=True)
    (d / name / "config.json").write_text('{"model_type": "bert"}')
    (d / name / "model.safetensors").write_bytes(b"\x00" * 64)
  return setup


def lock_held_by(pid: Callable[[], int], name: str = "wd"):
  def setup(w, d):
    marked_workdir(name)(w, d)
    (d / name / folders.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": pid(),
                                                     "renewed": time.time()}))
  return setup


def dead_pid() -> int:
  return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                            text=True).stdout)


def tiny_train(workdir: str, *extra: str):
  return cli_args("train", "--config", str(REPO / "configs" / "demo.py"), "--workdir", workdir, *TINY_FLAGS, *extra)


SENTENCES = "Marie Curie was born in Warsaw.\nAnna Weber wurde in Hamburg geboren.\n"
OUTPUT_CASES = [
    IOCase("predict-out-is-input", io_predict(out="{d}/in/in.txt"), ("--out {d}/in/in.txt", "is --input"),
           setup=given("in.txt", SENTENCES)),
    IOCase("predict-resume-out-is-input", io_predict("--resume", out="{d}/in/in.txt"), ("--out", "is --input"),
           setup=given("in.txt", SENTENCES)),
    IOCase("predict-out-links-to-input", io_predict(out="{d}/link.txt"), ("--out {d}/link.txt", "is --input"),
           setup=then(given("in.txt", SENTENCES), linked("link.txt", "{d}/in/in.txt"))),
    IOCase("predict-out-inside-export", io_predict(out="{w.export}/predictions.jsonl"),
           ("--out {w.export}/predictions.jsonl", "lies inside the export"), setup=given("in.txt", SENTENCES)),
    IOCase("predict-out-inside-workdir", io_predict(out="{d}/wd/predictions.jsonl"),
           ("--out {d}/wd/predictions.jsonl", "lies inside the workdir"),
           setup=then(given("in.txt", SENTENCES), marked_workdir())),
    IOCase("export-out-inside-its-workdir", cli_args("export", "--workdir", "{w.workdir}", "--out",
                                                     "{w.workdir}/relation", "--overwrite"),
           ("--out {w.workdir}/relation", "lies inside the workdir")),
    IOCase("export-out-another-workdirs-export", cli_args("export", "--workdir", "{w.workdir}", "--out",
                                                          "{d}/wd/export", "--overwrite"),
           ("--out {d}/wd/export", "lies inside the workdir {d}/wd"),
           setup=lambda w, d: (marked_workdir()(w, d), shutil.copytree(w.export, d / "wd" / "export"))),
    IOCase("export-out-holds-workdir", cli_args("export", "--workdir", "{w.workdir}", "--out", "{w.root}",
                                                "--overwrite"), ("--out {w.root}", "is --workdir")),
    IOCase("evaluate-out-is-workdir", io_evaluate(out="{w.workdir}"), ("--out {w.workdir}", "holds it"),
           setup=given("x_test.tsv", HEADER + KNOWN_ROWS)),
    IOCase("evaluate-out-inside-workdir", io_evaluate(out="{w.workdir}/report_dev"),
           ("--out {w.workdir}/report_dev", "lies inside the workdir"), setup=given("x_test.tsv", HEADER + KNOWN_ROWS)),
    IOCase("evaluate-out-holds-input", io_evaluate(out="{d}/in"), ("--out {d}/in", "is --input", "holds it"),
           setup=given("x_test.tsv", HEADER + KNOWN_ROWS)),
    IOCase("evaluate-out-foreign-folder", io_evaluate(out="{d}/hf"), ("--out {d}/hf", "not a herberta_jax report",
                                                                     "--overwrite"),
           setup=then(given("x_test.tsv", HEADER + KNOWN_ROWS), foreign_folder("hf"))),
    IOCase("evaluate-out-foreign-folder-overwrite", io_evaluate("--overwrite", out="{d}/hf"), code=0,
           setup=then(given("x_test.tsv", HEADER + KNOWN_ROWS), foreign_folder("hf")),
           check=lambda proc, w, d: folders.kind_of(d / "hf") == folders.REPORT or pytest.fail("report not marked")),
    # Evaluating twice into one report folder is a rerun, not an overwrite: the second run finds its own marker.
    IOCase("evaluate-again-into-its-report",
           shell("{python} -m herberta_jax.evaluate --model {w.export} --input {d}/in/x_test.tsv --out {d}/report "
                 "--batch_size 8 && {python} -m herberta_jax.evaluate --model {w.export} --input {d}/in/x_test.tsv "
                 "--out {d}/report --batch_size 8"), code=0, setup=given("x_test.tsv", HEADER + KNOWN_ROWS),
           check=lambda proc, w, d: (d / "report" / "metrics.json").is_file() or pytest.fail("no metrics.json")),
    IOCase("prepare-out-holds-input", cli_args("prepare", "--input", "{d}/in", "--tokenizer", "{w.minilm}", "--out",
                                               "{d}", "--overwrite"), ("--out {d}", "is --input", "holds it"),
           setup=given("en_corpora_train.tsv", HEADER + KNOWN_ROWS)),
    IOCase("prepare-out-inside-workdir", cli_args("prepare", "--input", "{d}/in", "--tokenizer", "{w.minilm}",
                                                  "--out", "{w.workdir}/relation"),
           ("--out {w.workdir}/relation", "lies inside the workdir"),
           setup=given("en_corpora_train.tsv", HEADER + KNOWN_ROWS)),
    IOCase("train-workdir-foreign-folder", tiny_train("{d}/hf"), ("--workdir {d}/hf", "not a herberta_jax workdir",
                                                                  "--overwrite"), setup=foreign_folder("hf")),
    IOCase("train-workdir-inside-workdir", tiny_train("{w.workdir}/relation"),
           ("--workdir {w.workdir}/relation", "lies inside the workdir")),
    IOCase("train-workdir-is-export", tiny_train("{w.export}"), ("--workdir {w.export}", "is the export")),
    IOCase("train-workdir-locked", tiny_train("{d}/wd"), ("{d}/wd", "another training run", "is using this workdir"),
           setup=lock_held_by(os.getpid)),
    IOCase("train-workdir-stale-lock", tiny_train("{d}/wd", "--config.stage=relation"), code=0,
           setup=lock_held_by(dead_pid), check=stderr_says("taking over a stale lock")),
]

@pytest.fixture(scope="session")
def output_results(world, request) -> dict[str, tuple]:
  wanted = {item.callspec.params["output_case"].id for item in request.session.items
            if hasattr(item, "callspec") and "output_case" in item.callspec.params}
  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    futures = {case.id: pool.submit(_run_io, case, world, "outputs") for case in OUTPUT_CASES if case.id in wanted}
    return {case_id: future.result() for case_id, future in futures.items()}


@pytest.mark.parametrize("output_case", OUTPUT_CASES, ids=[c.id for c in OUTPUT_CASES])
def test_outputs_never_destroy_inputs_or_project_folders(output_case: IOCase, world: World, output_results):
  assert_io_case(output_case, world, *output_results[output_case.id], world.root / "outputs" / output_case.id)
