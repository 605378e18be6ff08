"""predict and evaluate with gs:// inputs and outputs (issue 32's streaming side), on the local fake GCS server:
the same lines as a local run, --resume on an object (which cannot be appended to) with its kept rows checked,
and an evaluation report uploaded to a bucket."""

import json
import os
import subprocess
import sys

import pytest
from test_predict_streaming import SENTENCES, export_dir  # noqa: F401 - export_dir is the fixture used here
from tiny_run import REPO

from herberta_jax import storage

pytestmark = [pytest.mark.slow, pytest.mark.gcs]
TSV = ("id\tentity_1\tentity_2\tlabel\ttext\tlang\n"
       "1\tfire\tcircuit\tcause-effect\tThe <e1>fire</e1> was caused by a short <e2>circuit</e2>.\ten\n"
       "2\tgeese\tflock\tmember-collection\tA <e2>flock</e2> of <e1>geese</e1> flew over the lake.\ten\n"
       "3\tSmoke\tfire\tother\t<e1>Smoke</e1> rose from the <e2>fire</e2>.\ten\n")


def run(module: str, gcs_server, *args) -> subprocess.CompletedProcess:
  env = {**os.environ, **gcs_server, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", f"herberta_jax.{module}", *map(str, args)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def lines():
  return [SENTENCES[i % len(SENTENCES)] + f" ({i})" for i in range(40)] + ["", "\u200b"]


def test_predict_from_and_to_a_bucket_gives_the_local_lines_and_resumes_there(export_dir, gcs_server,  # noqa: F811
                                                                              gcs_bucket, tmp_path, lines):
  text = "\n".join(lines) + "\n"
  (tmp_path / "in.txt").write_text(text, encoding="utf-8")
  storage.path(f"{gcs_bucket}/in.txt").write_text(text, encoding="utf-8")
  flags = ("--model", export_dir, "--batch_size", "4")
  local = run("predict", gcs_server, *flags, "--input", tmp_path / "in.txt", "--out", tmp_path / "out.jsonl")
  assert local.returncode == 0, local.stderr[-2000:]
  full = (tmp_path / "out.jsonl").read_bytes()
  assert len(full.splitlines()) == len(lines)

  remote = run("predict", gcs_server, *flags, "--input", f"{gcs_bucket}/in.txt", "--out", f"{gcs_bucket}/out.jsonl")
  assert remote.returncode == 0, remote.stderr[-2000:]
  assert storage.path(f"{gcs_bucket}/out.jsonl").read_bytes() == full

  # An interrupted run's object: whole rows and half of the next. --resume keeps the rows, checks them, redoes
  # the rest, and the object ends as the uninterrupted run's.
  cut = full[:full.index(b"\n", len(full) // 2) + 20]
  storage.path(f"{gcs_bucket}/part.jsonl").write_bytes(cut)
  resumed = run("predict", gcs_server, *flags, "--input", f"{gcs_bucket}/in.txt", "--out", f"{gcs_bucket}/part.jsonl",
                "--resume")
  assert resumed.returncode == 0 and "kept from --out" in resumed.stderr, resumed.stderr[-2000:]
  assert storage.path(f"{gcs_bucket}/part.jsonl").read_bytes() == full


def test_resume_on_a_bucket_refuses_another_inputs_rows_and_leaves_the_object(export_dir, gcs_server,  # noqa: F811
                                                                              gcs_bucket, tmp_path, lines):
  storage.path(f"{gcs_bucket}/in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
  other = "".join(json.dumps({"text": f"another sentence {i}", "relation": "other"}) + "\n" for i in range(6))
  storage.path(f"{gcs_bucket}/out.jsonl").write_text(other, encoding="utf-8")
  result = run("predict", gcs_server, "--model", export_dir, "--batch_size", "4", "--input", f"{gcs_bucket}/in.txt",
               "--out", f"{gcs_bucket}/out.jsonl", "--resume")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert f"{gcs_bucket}/out.jsonl:1 does not answer input line 1" in result.stderr
  assert storage.path(f"{gcs_bucket}/out.jsonl").read_text(encoding="utf-8") == other


def test_evaluate_reads_and_reports_to_a_bucket_as_it_does_locally(export_dir, gcs_server, gcs_bucket,  # noqa: F811
                                                                   tmp_path):
  (tmp_path / "x_test.tsv").write_text(TSV, encoding="utf-8")
  storage.path(f"{gcs_bucket}/data/x_test.tsv").write_text(TSV, encoding="utf-8")
  flags = ("--model", export_dir, "--batch_size", "4")
  local = run("evaluate", gcs_server, *flags, "--input", tmp_path / "x_test.tsv", "--out", tmp_path / "report")
  assert local.returncode == 0, local.stderr[-2000:]
  remote = run("evaluate", gcs_server, *flags, "--input", f"{gcs_bucket}/data/x_test.tsv", "--out",
               f"{gcs_bucket}/report")
  assert remote.returncode == 0, remote.stderr[-2000:]
  report = storage.path(f"{gcs_bucket}/report")
  assert sorted(storage.files_under(report)) == sorted(p.name for p in (tmp_path / "report").iterdir())
  assert (report / "predictions.jsonl").read_bytes() == (tmp_path / "report" / "predictions.jsonl").read_bytes()
  got, want = (json.loads(p.read_text()) for p in (report / "metrics.json", tmp_path / "report" / "metrics.json"))
  timeless = lambda metrics: {k: v for k, v in metrics.items() if "second" not in k}  # speeds differ run to run
  assert timeless(got) == timeless(want)


def test_evaluate_names_the_url_of_a_bad_row(export_dir, gcs_server, gcs_bucket):  # noqa: F811
  storage.path(f"{gcs_bucket}/data/x_test.tsv").write_text(TSV + "4\ta\tb\tother\tno tags here\ten\n",
                                                           encoding="utf-8")
  result = run("evaluate", gcs_server, "--model", export_dir, "--input", f"{gcs_bucket}/data/x_test.tsv", "--out",
               f"{gcs_bucket}/report")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert f"{gcs_bucket}/data/x_test.tsv:5" in result.stderr
  assert not storage.path(f"{gcs_bucket}/report").exists()
