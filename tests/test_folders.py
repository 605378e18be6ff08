"""herberta_jax.folders: folder kinds, the output checks every CLI runs before any work, and the workdir lock."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from herberta_jax import folders
from herberta_jax.errors import UserError, UserFileExistsError


@pytest.fixture
def workdir(tmp_path):
  w = tmp_path / "run"
  folders.mark(w, folders.WORKDIR)
  (w / "relation" / "checkpoints").mkdir(parents=True)
  (w / "export").mkdir()
  (w / "export" / "herberta.json").write_text("{}")
  return w


def test_kinds_by_marker_and_legacy_layout(tmp_path, workdir):
  assert folders.kind_of(workdir) == folders.WORKDIR
  assert folders.kind_of(workdir / "export") == folders.EXPORT
  assert folders.kind_of(workdir / "relation") is None
  legacy = tmp_path / "old"
  (legacy / "data").mkdir(parents=True)
  (legacy / "config.json").write_text("{}")
  (legacy / "data" / "manifest.json").write_text("{}")
  assert folders.kind_of(legacy) == folders.WORKDIR
  assert folders.kind_of(tmp_path / "missing") is None
  assert folders.owners_of(workdir / "relation" / "checkpoints") == [(folders.WORKDIR, workdir.resolve())]
  assert folders.owners_of(workdir / "export" / "relation") == [(folders.EXPORT, (workdir / "export").resolve()),
                                                                (folders.WORKDIR, workdir.resolve())]
  assert folders.owners_of(tmp_path / "elsewhere" / "x.jsonl") == []


def test_output_that_is_an_input_is_refused_also_through_a_link(tmp_path):
  source = tmp_path / "in.txt"
  source.write_text("a sentence\n")
  link = tmp_path / "link.txt"
  link.symlink_to(source)
  for out in (source, link):
    with pytest.raises(UserError, match=r"--out .*: is --input .* or holds it"):
      folders.check_output("--out", str(out), kind=None, inputs=[("--input", str(source))])
  folders.check_output("--out", str(tmp_path / "out.jsonl"), kind=None, inputs=[("--input", str(source))])
  assert source.read_text() == "a sentence\n"


def test_folder_output_holding_an_input_is_refused(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  (data / "en_test.tsv").write_text("x")
  with pytest.raises(UserError, match="--out .*: is --input .* or holds it"):
    folders.check_output("--out", str(data), kind=folders.REPORT, inputs=[("--input", str(data / "en_test.tsv"))])


def test_outputs_inside_a_workdir_or_export_are_refused_but_the_own_export(workdir):
  with pytest.raises(UserError, match="lies inside the workdir"):
    folders.check_output("--out", str(workdir / "relation"), kind=folders.EXPORT, own=workdir, overwrite=True)
  with pytest.raises(UserError, match="is the workdir"):
    folders.check_output("--out", str(workdir), kind=folders.REPORT)
  with pytest.raises(UserError, match="lies inside the export"):
    folders.check_output("--out", str(workdir / "export" / "preds.jsonl"), kind=None)
  with pytest.raises(UserError, match="lies inside the workdir"):
    folders.check_output("--workdir", str(workdir / "relation"), kind=folders.WORKDIR)
  folders.check_output("--out", str(workdir / "export"), kind=folders.EXPORT, own=workdir, overwrite=True)
  folders.check_output("--workdir", str(workdir), kind=folders.WORKDIR)  # a resume


def test_another_workdirs_export_is_not_this_exports_place(tmp_path, workdir):
  other = tmp_path / "other"
  folders.mark(other, folders.WORKDIR)
  with pytest.raises(UserError, match=r"--out .*run/export: lies inside the workdir .*run, which"):
    folders.check_output("--out", str(workdir / "export"), kind=folders.EXPORT, own=other, overwrite=True)
  standalone = tmp_path / "exports" / "v1"
  standalone.mkdir(parents=True)
  (standalone / "herberta.json").write_text("{}")
  folders.check_output("--out", str(standalone), kind=folders.EXPORT, own=other, overwrite=True)


def test_non_empty_unmarked_folder_needs_overwrite(tmp_path):
  hf = tmp_path / "hf_checkpoint"
  hf.mkdir()
  (hf / "config.json").write_text('{"model_type": "bert"}')
  with pytest.raises(UserFileExistsError, match="--workdir .*: exists, is not empty and is not a herberta_jax "
                     "workdir.*--overwrite"):
    folders.check_output("--workdir", str(hf), kind=folders.WORKDIR)
  folders.check_output("--workdir", str(hf), kind=folders.WORKDIR, overwrite=True)
  empty = tmp_path / "empty"
  empty.mkdir()
  folders.check_output("--workdir", str(empty), kind=folders.WORKDIR)
  seeded = tmp_path / "seeded"  # data prepared ahead for a run that has not started: its workdir-to-be
  (seeded / "data").mkdir(parents=True)
  (seeded / "data" / "manifest.json").write_text("{}")
  folders.check_output("--workdir", str(seeded), kind=folders.WORKDIR)
  assert folders.kind_of(seeded) is None  # not a workdir to other commands: --out may lie in it
  (seeded / "notes.txt").write_text("a project folder that happens to hold data/")
  with pytest.raises(UserFileExistsError, match="--overwrite"):
    folders.check_output("--workdir", str(seeded), kind=folders.WORKDIR)


def test_file_where_a_folder_is_expected_and_folder_where_a_file_is(tmp_path):
  file = tmp_path / "f.txt"
  file.write_text("x")
  with pytest.raises(UserFileExistsError, match="--out .*f.txt: is a file where a folder is expected"):
    folders.check_output("--out", str(file), kind=folders.REPORT)
  with pytest.raises(UserError, match="--out .*: is a directory; give a file path"):
    folders.check_output("--out", str(tmp_path), kind=None)


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path, caplog):
  with folders.WorkdirLock(tmp_path):
    with pytest.raises(UserError, match=r"another training run \(pid \d+ on .*\) is using this workdir"):
      folders.WorkdirLock(tmp_path).acquire()
  assert not (tmp_path / folders.LOCK).exists()  # released
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  (tmp_path / folders.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                                   "renewed": time.time()}))
  with caplog.at_level("WARNING"), folders.WorkdirLock(tmp_path):
    held = json.loads((tmp_path / folders.LOCK).read_text())
    assert held["pid"] == os.getpid()
  assert "taking over a stale lock" in caplog.text and "no longer exists" in caplog.text


def test_lock_left_by_this_pid_after_a_restart_and_a_forced_exit_leaves_none(tmp_path):
  (tmp_path / folders.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                   "renewed": time.time()}))
  lock = folders.WorkdirLock(tmp_path).acquire()  # not held by this process: an earlier life's
  folders.release_held_locks()  # what a forced exit on preemption does before os._exit
  assert not (tmp_path / folders.LOCK).exists()
  lock.release()


def test_lock_of_another_host_is_stale_only_when_not_renewed(tmp_path):
  lock = tmp_path / folders.LOCK
  lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "renewed": time.time()}))
  with pytest.raises(UserError, match="pid 1 on elsewhere"):
    folders.WorkdirLock(tmp_path).acquire()
  lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "renewed": time.time() - 2 * folders.STALE_AFTER_SECONDS}))
  with folders.WorkdirLock(tmp_path):
    assert json.loads(lock.read_text())["host"] == socket.gethostname()


@pytest.mark.gcs
def test_checks_and_lock_on_a_bucket(gcs_bucket):
  from herberta_jax import storage
  workdir = f"{gcs_bucket}/run"
  folders.mark(workdir, folders.WORKDIR)
  storage.write_atomically(storage.path(f"{workdir}/export/herberta.json"), "{}")
  assert folders.kind_of(workdir) == folders.WORKDIR
  assert folders.owners_of(f"{workdir}/relation/checkpoints")[0][0] == folders.WORKDIR
  with pytest.raises(UserError, match="lies inside the workdir"):
    folders.check_output("--out", f"{workdir}/relation", kind=folders.EXPORT, own=workdir, overwrite=True)
  folders.check_output("--out", f"{workdir}/export", kind=folders.EXPORT, own=workdir, overwrite=True)
  source = f"{gcs_bucket}/in.txt"
  storage.write_atomically(storage.path(source), "x\n")
  with pytest.raises(UserError, match="is --input"):
    folders.check_output("--out", source, kind=None, inputs=[("--input", source)])
  with folders.WorkdirLock(workdir):
    with pytest.raises(UserError, match="another training run"):
      folders.WorkdirLock(workdir).acquire()
  assert not storage.path(f"{workdir}/{folders.LOCK}").exists()
