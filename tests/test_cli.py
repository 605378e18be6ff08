"""The CLIs' start-up: the one re-execution that gives glibc's malloc transparent huge pages."""

import errno
import os
import pathlib
import platform
import subprocess
import sys

import pytest

from herberta_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
GLIBC = ("glibc", "2.36")
COMMAND = ["python", "-m", "herberta_jax.train", "--workdir", "w"]


def test_huge_pages_are_added_to_the_tunables_already_set_with_a_restart_marker():
  env = cli.huge_pages_restart({"PATH": "/bin"}, COMMAND, GLIBC)
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "HERBERTA_HUGE_PAGES_RESTARTED": "1"}
  env = cli.huge_pages_restart({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, COMMAND, GLIBC)
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  # A restarted process never restarts again, even where glibc dropped the tunables from its environment.
  assert cli.huge_pages_restart({k: v for k, v in env.items() if k != "GLIBC_TUNABLES"}, COMMAND, GLIBC) is None


def test_no_restart_when_set_opted_out_not_a_recent_glibc_or_not_rerunnable():
  assert cli.huge_pages_restart({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, COMMAND, GLIBC) is None
  assert cli.huge_pages_restart({"HERBERTA_HUGE_PAGES": "0"}, COMMAND, GLIBC) is None
  assert cli.huge_pages_restart({}, COMMAND, ("glibc", "2.34")) is None  # glibc has the tunable from 2.35
  assert cli.huge_pages_restart({}, COMMAND, ("glibc", "2.x")) is None
  assert cli.huge_pages_restart({}, COMMAND, ("", "")) is None  # musl, macOS
  for argv in (["python"], ["python", "-"], ["python", "-i", "script.py"]):  # a REPL, stdin's script (read)
    assert cli.huge_pages_restart({}, argv, GLIBC) is None, argv


def run_python(code: str) -> subprocess.CompletedProcess:
  """`python -c code` in an environment without any huge-pages setting."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", "HERBERTA_HUGE_PAGES", "HERBERTA_HUGE_PAGES_RESTARTED")}
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  return proc


@pytest.mark.slow  # a subprocess
def test_a_command_runs_its_main_once_in_the_restarted_process():
  code = ("import os, sys; from herberta_jax import cli; "
          "cli.run_cli(lambda argv: print('main', os.environ.get('GLIBC_TUNABLES')))")
  proc = run_python(code)
  lines = [line.split() for line in proc.stdout.splitlines() if line.startswith("main")]
  assert len(lines) == 1, proc.stdout
  name, version = platform.libc_ver()
  restarts = name == "glibc" and tuple(int(part) for part in version.split(".")[:2]) >= (2, 35)
  assert lines[0][1] == ("glibc.malloc.hugetlb=1" if restarts else "None")


@pytest.mark.slow  # a subprocess
def test_called_from_a_notebook_or_program_it_does_not_restart():
  code = ("import os; from herberta_jax import cli\n"
          "def main(argv): print('main', os.environ.get('GLIBC_TUNABLES'))\n"
          "main.__module__ = 'notebook'  # as herberta_jax.train.run() called from elsewhere\n"
          "cli.run_cli(main)")
  proc = run_python(code)
  assert [line for line in proc.stdout.splitlines() if line.startswith("main")] == ["main None"]


def _raising(error: BaseException):
  def main(argv):
    raise error
  return main


def _exit_status(main) -> int:
  """The status `main` exits with, run as a CLI runs it once its flags are parsed (`cli.guarded`). Not `cli.invoke`,
  whose parsing would check the required flags other CLI modules imported in this process registered."""
  try:
    return cli.guarded(main, ["prog"]) or 0
  except SystemExit as exit_:
    return exit_.code


def test_ctrl_c_is_one_line_saying_what_was_kept_and_exit_130(capsys):
  cli.when_interrupted(lambda: "12 lines written to out.jsonl; rerun with --resume")
  try:
    assert _exit_status(_raising(KeyboardInterrupt())) == cli.EXIT_INTERRUPTED == 130
  finally:
    cli.when_interrupted(None)
  assert capsys.readouterr().err.splitlines() == [
      f"{cli._prog()}: interrupted: 12 lines written to out.jsonl; rerun with --resume"]


@pytest.mark.parametrize("error, says", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/out.jsonl"), "/data/out.jsonl: no space left"),
    (OSError(errno.EIO, "Input/output error"), "writing the output: input/output error"),
    (FileExistsError(errno.EEXIST, "File exists", "/tmp/notes.txt"), "/tmp/notes.txt: exists and is a file"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/tmp/f/x"), "/tmp/f/x: a file stands where a folder"),
    (BrokenPipeError(errno.EPIPE, "Broken pipe", "/tmp/fifo"), "/tmp/fifo: broken pipe"),
])
def test_os_errors_a_user_can_act_on_are_one_line_and_exit_2(capsys, error, says):
  assert _exit_status(_raising(error)) == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith(f"{cli._prog()}: error: ") and says in line


def test_other_os_errors_keep_their_traceback():
  with pytest.raises(OSError, match="Bad file descriptor"):
    _exit_status(_raising(OSError(errno.EBADF, "Bad file descriptor")))


def test_an_os_errors_reason_is_the_advice_or_else_the_systems_words_without_the_path():
  assert cli.os_error_reason(OSError(errno.ENOSPC, "No space left on device", "/o")).startswith("no space left")
  assert cli.os_error_reason(OSError(errno.ESTALE, "Stale file handle", "/mnt/nfs/o")) == "Stale file handle"
  assert cli.os_error_reason(OSError("the bucket said no")) == "the bucket said no"


def test_a_closed_stdout_pipe_ends_quietly_with_141():
  code = ("import sys; from herberta_jax import cli\n"
          "def main(argv):\n"
          "  for i in range(10**6): print('line', i)\n"
          "cli.run_cli(main)\n")
  env = {**os.environ, "PYTHONPATH": str(REPO), "HERBERTA_HUGE_PAGES": "0"}
  result = subprocess.run(["bash", "-c", f"{sys.executable} -c \"$CODE\" | head -1; exit ${{PIPESTATUS[0]}}"],
                          env={**env, "CODE": code}, capture_output=True, text=True, timeout=120)
  assert result.returncode == cli.EXIT_BROKEN_PIPE and result.stdout == "line 0\n" and result.stderr == ""
