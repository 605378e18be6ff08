"""SMiLER TSV reading: the real SemEval files, every kind of bad row, both error modes, file names and inputs."""

import csv
import json
import re

import pytest

from herberta_jax.data import smiler

HEADER = "id\tentity_1\tentity_2\tlabel\ttext\tlang\n"


def write(path, body: str, header: str = HEADER):
  path.write_text(header + body, encoding="utf-8")
  return path


def retag(example) -> str:
  """Puts the tags back into the clean text at the example's spans."""
  text = example.text
  inserts = [(example.e1[0], "<e1>"), (example.e1[1], "</e1>"), (example.e2[0], "<e2>"), (example.e2[1], "</e2>")]
  for pos, tag in sorted(inserts, key=lambda x: x[0], reverse=True):
    text = text[:pos] + tag + text[pos:]
  return text


@pytest.mark.parametrize("name,rows", [("train.tsv", 8000), ("test.tsv", 2717)])
def test_semeval_files_parse_fully_and_spans_round_trip(semeval_dir, name, rows):
  path = semeval_dir / name
  rejects = smiler.Rejects()
  examples = list(smiler.read_tsv(path, on_error="skip", rejects=rejects))
  assert len(rejects) == 0, rejects.rows[:3]
  assert len(examples) == rows
  with path.open(encoding="utf-8", newline="") as handle:
    raw = list(csv.DictReader(handle, delimiter="\t"))
  assert len(raw) == rows
  for example, row in zip(examples, raw):
    assert example.e1_text == row["entity_1"]
    assert example.e2_text == row["entity_2"]
    assert retag(example) == row["text"]
    assert (example.id, example.label, example.lang) == (row["id"], row["label"], row["lang"])
  assert examples[0].source == f"{path}:2"
  assert examples[-1].source == f"{path}:{rows + 1}"


def test_e2_before_e1_and_quoted_fields(tmp_path):
  path = tmp_path / "x.tsv"
  with path.open("w", encoding="utf-8", newline="") as handle:
    writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
    writer.writerow(smiler.HEADER)
    writer.writerow(["7", "Bob", "Paris", "birth-place", 'In <e2>Paris</e2>, "says" <e1>Bob</e1>.', "en"])
    writer.writerow(["8", '"Q"', "tab\there", "has-author", '<e1>"Q"</e1> by <e2>tab\there</e2>', "en"])
  first, second = smiler.read_tsv(path)
  assert first.text == 'In Paris, "says" Bob.'
  assert (first.e1_text, first.e2_text) == ("Bob", "Paris")
  assert first.e2 < first.e1
  assert (first.id, first.label, first.lang, first.source) == ("7", "birth-place", "en", f"{path}:2")
  assert (second.e1_text, second.e2_text) == ('"Q"', "tab\there")
  assert second.source == f"{path}:3"


def test_whitespace_inside_tags_is_kept_in_text_but_not_in_span(tmp_path):
  path = write(tmp_path / "x.tsv", "1\t Paris \tFrance\tis-where\tSee <e1> Paris </e1>  in <e2>France</e2>.\ten\n")
  (example,) = smiler.read_tsv(path)
  assert example.text == "See  Paris   in France."
  assert example.e1_text == "Paris"
  assert example.e1 == (5, 10)


def test_each_physical_line_is_one_row_so_an_unbalanced_quote_spoils_only_its_line(tmp_path):
  body = ('1\ta\tb\tx\t"<e1>a</e1> line one\n'
          'line two <e2>b</e2>"\ten\n'
          "2\ta\tb\tx\t<e1>a</e1> <e2>b</e2>\ten\n"
          "3\ta\tb\tx\tno tags here\ten\n")
  path = write(tmp_path / "x.tsv", body)
  with pytest.raises(smiler.DataError, match=r"x\.tsv:2: malformed CSV quoting"):
    next(smiler.read_tsv(path))
  rejects = smiler.Rejects()
  examples = list(smiler.read_tsv(path, on_error="skip", rejects=rejects))
  assert [ex.source for ex in examples] == [f"{path}:4"]
  assert [r.source for r in rejects] == [f"{path}:2", f"{path}:3", f"{path}:5"]
  assert rejects.read == len(examples) + len(rejects) == 4
  assert rejects.rows[0].raw == '1\ta\tb\tx\t"<e1>a</e1> line one'


def test_cr_only_line_endings_get_a_hint(tmp_path):
  path = tmp_path / "mac.tsv"
  path.write_bytes((HEADER + GOOD).replace("\n", "\r").encode())
  with pytest.raises(smiler.DataError, match=r"mac\.tsv:1: CR-only line endings: convert with dos2unix -c mac"):
    list(smiler.read_tsv(path))
  crlf = tmp_path / "crlf.tsv"
  crlf.write_bytes((HEADER + GOOD).replace("\n", "\r\n").encode())
  assert [ex.text for ex in smiler.read_tsv(crlf)] == ["a and b"]


def test_a_wrong_header_is_shown_whole(tmp_path):
  path = write(tmp_path / "x.tsv", GOOD, header=HEADER.rstrip("\n") + "\tnotes\n")
  with pytest.raises(smiler.DataError, match=r"x\.tsv:1: expected the header, found .*'lang', 'notes'\]"):
    list(smiler.read_tsv(path))


BAD_ROWS = [
    ("1\ta\tb\tx\t<e1>a</e1> <e2>b</e2>\n", "expected 6 tab-separated columns, found 5"),
    ("1\ta\tb\tx\t<e1>a</e1> <e2>b</e2>\ten\textra\n", "found 7"),
    ("1\ta\tb\tx\ta <e2>b</e2>\ten\n", "missing <e1>"),
    ("1\ta\tb\tx\t<e1>a</e1> <e1>a</e1> <e2>b</e2>\ten\n", "<e1> appears twice"),
    ("1\ta\tb\tx\t<e1>a <e2>b</e2></e1>\ten\n", "nested or overlap"),
    ("1\ta\tb\tx\t<e1>a <e2>b</e1></e2>\ten\n", "nested or overlap"),
    ("1\ta\tb\tx\t<e1> </e1> <e2>b</e2>\ten\n", "empty entity <e1>"),
    ("1\ta\tb\tx\t<e1>a <e2>b</e2>\ten\n", "<e1> is never closed"),
    ("1\ta\tb\tx\t</e1>a<e1> <e2>b</e2>\ten\n", "</e1> comes before <e1>"),
    ("1\tz\tb\tx\t<e1>a</e1> <e2>b</e2>\ten\n", "entity_1 column 'z' disagrees"),
    ("1\ta\tz\tx\t<e1>a</e1> <e2>b</e2>\ten\n", "entity_2 column 'z' disagrees"),
    ("1\ta\tb\tx\t  \ten\n", "empty text"),
    ("1\ta\tb\t\t<e1>a</e1> <e2>b</e2>\ten\n", "empty label"),
    ("1\ta\tb\tx\t<e1>a</e1> <e2>b</e2>\t\n", "empty lang"),
    ('1\ta\tb\tx\t"<e1>a</e1>" <e2>b</e2>\ten\n', "malformed CSV quoting"),
]
GOOD = "9\ta\tb\tx\t<e1>a</e1> and <e2>b</e2>\ten\n"


@pytest.mark.parametrize("bad,reason", BAD_ROWS)
def test_bad_row_fails_with_file_and_line(tmp_path, bad, reason):
  path = write(tmp_path / "bad.tsv", GOOD + bad + GOOD)
  rows = smiler.read_tsv(path)
  assert next(rows).id == "9"  # streamed: the good row comes out before the bad one is read
  with pytest.raises(smiler.DataError) as info:
    next(rows)
  message = str(info.value)
  assert message.startswith(f"{path}:3: ")
  assert reason in message
  assert "on_error='skip'" in message
  assert (info.value.path, info.value.line) == (str(path), 3)


@pytest.mark.parametrize("bad,reason", BAD_ROWS)
def test_bad_row_is_skipped_into_rejects(tmp_path, bad, reason):
  path = write(tmp_path / "bad.tsv", GOOD + bad + GOOD)
  rejects = smiler.Rejects()
  examples = list(smiler.read_tsv(path, on_error="skip", rejects=rejects))
  assert [ex.source for ex in examples] == [f"{path}:2", f"{path}:4"]
  assert len(rejects) == 1
  (reject,) = rejects
  assert reject.source == f"{path}:3"
  assert reason in reject.reason


def test_unknown_label_only_with_known_labels(tmp_path):
  path = write(tmp_path / "x.tsv", GOOD.replace("\tx\t", "\tmystery\t"))
  assert len(list(smiler.read_tsv(path))) == 1
  with pytest.raises(smiler.DataError, match="unknown label 'mystery'"):
    list(smiler.read_tsv(path, known_labels={"x", "no_relation"}))


def test_undecodable_bytes_name_the_line_and_skip_mode_goes_on(tmp_path):
  path = tmp_path / "latin1.tsv"
  good = GOOD.encode()
  path.write_bytes(HEADER.encode() + good + "9\ta\tb\tx\t<e1>a</e1> caf\xe9 <e2>b</e2>\ten\n".encode("latin-1")
                   + good)
  with pytest.raises(smiler.DataError, match=r"latin1\.tsv:3: bytes that are not UTF-8"):
    list(smiler.read_tsv(path))
  rejects = smiler.Rejects()
  examples = list(smiler.read_tsv(path, on_error="skip", rejects=rejects))
  assert [ex.source for ex in examples] == [f"{path}:2", f"{path}:4"]
  assert rejects.rows[0].source == f"{path}:3"


@pytest.mark.parametrize("content,reason", [
    (GOOD, "expected the header"),
    ("", "empty file"),
    ("id,entity_1,entity_2,label,text,lang\n", "expected the header"),
])
def test_wrong_header_always_fails(tmp_path, content, reason):
  path = tmp_path / "x.tsv"
  path.write_text(content, encoding="utf-8")
  with pytest.raises(smiler.DataError, match=reason) as info:
    list(smiler.read_tsv(path, on_error="skip", rejects=smiler.Rejects()))
  assert "header" in str(info.value)


def test_duplicate_header_always_fails(tmp_path):
  path = write(tmp_path / "x.tsv", GOOD + HEADER + GOOD)
  with pytest.raises(smiler.DataError, match=r"x\.tsv:3: the header appears again"):
    list(smiler.read_tsv(path, on_error="skip", rejects=smiler.Rejects()))


def test_byte_order_mark_and_blank_lines_are_accepted(tmp_path):
  path = write(tmp_path / "x.tsv", GOOD + "\n" + GOOD, header="\ufeff" + HEADER)
  examples = list(smiler.read_tsv(path))
  assert [ex.source for ex in examples] == [f"{path}:2", f"{path}:4"]


def test_argument_errors(tmp_path):
  path = write(tmp_path / "x.tsv", GOOD)
  with pytest.raises(ValueError, match="on_error='ignore'"):
    smiler.read_tsv(path, on_error="ignore")
  with pytest.raises(ValueError, match="rejects=Rejects"):
    smiler.read_tsv(path, on_error="skip")
  with pytest.raises(smiler.DataError, match="no such file"):
    smiler.read_tsv(tmp_path / "missing.tsv")


def test_rejects_write_a_tsv(tmp_path):
  path = write(tmp_path / "x.tsv", "1\ta\tb\tx\tno tags\ten\n" + GOOD + "2\tshort\n")
  rejects = smiler.Rejects()
  assert len(list(smiler.read_tsv(path, on_error="skip", rejects=rejects))) == 1
  out = tmp_path / "out" / "rejects.tsv"
  rejects.write(out)
  with out.open(encoding="utf-8", newline="") as handle:
    rows = list(csv.reader(handle, delimiter="\t"))
  assert rows[0] == ["source", "reason", "raw"]
  assert [r[0] for r in rows[1:]] == [f"{path}:2", f"{path}:4"]
  assert json.loads(rows[1][2]) == "1\ta\tb\tx\tno tags\ten"
  assert json.loads(rows[2][2]) == "2\tshort"


def test_expand_inputs(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for name in ("ko_corpora_train.tsv", "en_corpora_test.tsv", "notes.txt"):
    (corpus / name).write_text(HEADER)
  extra = tmp_path / "extra.data"
  extra.write_text(HEADER)
  found = smiler.expand_inputs([corpus, str(extra), corpus / "ko_corpora_train.tsv"])
  assert found == [corpus / "en_corpora_test.tsv", corpus / "ko_corpora_train.tsv", extra]
  with pytest.raises(smiler.DataError, match=re.escape(f"{tmp_path / 'nope'}: no such file")):
    smiler.expand_inputs([corpus, tmp_path / "nope"])
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(smiler.DataError, match=r"no \*\.tsv"):
    smiler.expand_inputs([empty])


@pytest.mark.parametrize("name,expected", [
    ("en-small_corpora_train.tsv", ("en-small", "train")),
    ("data/en_corpora_test.tsv", ("en", "test")),
    ("ko_corpora_train.tsv", ("ko", "train")),
    ("en-full_corpora_train.tsv", ("en-full", "train")),
    ("train.tsv", (None, "train")),
    ("dev.tsv", (None, "dev")),
    ("semeval.tsv", (None, None)),
    ("en_corpora_val.tsv", (None, None)),
])
def test_parse_file_name(name, expected):
  assert smiler.parse_file_name(name) == expected


def test_smiler_labels():
  assert len(smiler.SMILER_LABELS) == len(set(smiler.SMILER_LABELS)) == 36
  assert smiler.SMILER_LABELS[0] == "has-genre"
  assert smiler.SMILER_LABELS[-1] == "no_relation"
