"""The SemEval-2010 Task 8 converter, offline: a distribution zip built here from known rows converts back."""

import csv
import pathlib
import subprocess
import sys
import zipfile

from herberta_jax.data import semeval, smiler

REPO = pathlib.Path(__file__).resolve().parents[1]


def fetch(*args: str) -> subprocess.CompletedProcess:
  """The CLI in a subprocess: CLI modules define global absl flags, and prepare's --out would clash here."""
  return subprocess.run([sys.executable, "-m", "herberta_jax.fetch_semeval", *args], cwd=REPO, capture_output=True,
                        text=True)

TRAIN = (
    '1\t"The system as described above has its greatest application in an arrayed <e1>configuration</e1> of '
    'antenna <e2>elements</e2>."\nComponent-Whole(e2,e1)\nComment: Not a whole, just a part.\n\n'
    '2\t"The <e1>child</e1> said "hello" to the <e2>cradle</e2>."\nOther\nComment:\n\n'
)
TEST = '8001\t"The most common <e1>audits</e1> were about <e2>waste</e2> and recycling."\nMessage-Topic(e1,e2)\n' \
       'Comment:\n\n'


def _zip(path, files: dict[str, str]):
  with zipfile.ZipFile(path, "w") as archive:
    for name, text in files.items():
      archive.writestr(name, text)
  return path


def test_converts_the_distribution_to_smiler_rows_that_the_reader_accepts(tmp_path):
  source = _zip(tmp_path / "all.zip", {"SemEval2010_task8_training/TRAIN_FILE.TXT": TRAIN,
                                       "SemEval2010_task8_testing_keys/TEST_FILE_FULL.TXT": TEST})
  done = fetch("--source", str(source), "--out", str(tmp_path / "out"))
  assert done.returncode == 0, done.stderr
  train = list(smiler.read_tsv(tmp_path / "out" / "train.tsv"))
  assert [(ex.id, ex.label) for ex in train] == [("1", "Component-Whole(e2,e1)"), ("2", "no_relation")]
  assert train[1].text == 'The child said "hello" to the cradle.'
  assert train[1].text[slice(*train[1].e2)] == "cradle"
  test = list(smiler.read_tsv(tmp_path / "out" / "test.tsv"))
  assert [(ex.id, ex.text[slice(*ex.e1)], ex.text[slice(*ex.e2)]) for ex in test] == [("8001", "audits", "waste")]


def test_a_file_of_another_format_is_refused_with_file_and_line(tmp_path):
  source = _zip(tmp_path / "bad.zip", {"TRAIN_FILE.TXT": "id\ttext\n", "TEST_FILE_FULL.TXT": TEST})
  done = fetch("--source", str(source), "--out", str(tmp_path / "out"))
  assert done.returncode == 2 and "TRAIN_FILE.TXT:1: expected" in done.stderr and "Traceback" not in done.stderr


def test_round_trip_reproduces_the_shared_conversion(tmp_path, semeval_dir):
  """Writing the shared SMiLER files back into the distribution's layout and converting gives the same bytes."""
  files = {}
  for split, name in semeval.SPLIT_FILES.items():
    with open(semeval_dir / f"{split}.tsv", encoding="utf-8", newline="") as handle:
      rows = list(csv.DictReader(handle, delimiter="\t"))
    files[name] = "".join(f'{r["id"]}\t"{r["text"]}"\n{"Other" if r["label"] == "no_relation" else r["label"]}\n'
                          "Comment:\n\n" for r in rows)
  out = tmp_path / "out"
  semeval.convert_zip(zipfile.ZipFile(_zip(tmp_path / "all.zip", files)), out)
  for split in semeval.SPLIT_FILES:
    assert (out / f"{split}.tsv").read_bytes() == (semeval_dir / f"{split}.tsv").read_bytes(), split
