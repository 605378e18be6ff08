"""The CLIs' start-up: the one re-execution that gives glibc's malloc transparent huge pages."""

import os
import pathlib
import platform
import subprocess
import sys

import pytest

from herberta_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
GLIBC = ("glibc", "2.36")


def test_huge_pages_are_added_to_the_tunables_already_set():
  assert cli.huge_pages_restart({"PATH": "/bin"}, ["python", "-m", "x"], GLIBC) == {
      "PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  env = cli.huge_pages_restart({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, ["python"], GLIBC)
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


def test_no_restart_when_set_opted_out_or_not_a_recent_glibc():
  assert cli.huge_pages_restart({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, ["python"], GLIBC) is None
  assert cli.huge_pages_restart({"HERBERTA_HUGE_PAGES": "0"}, ["python"], GLIBC) is None
  assert cli.huge_pages_restart({}, ["python"], ("glibc", "2.34")) is None  # glibc has the tunable from 2.35
  assert cli.huge_pages_restart({}, ["python"], ("", "")) is None  # musl, macOS
  assert cli.huge_pages_restart({}, [], GLIBC) is None  # no command line to run again


@pytest.mark.slow  # a subprocess
def test_a_cli_runs_once_in_the_restarted_process():
  code = ("import os, sys; from herberta_jax import cli; "
          "cli.run_cli(lambda argv: print('main', os.getpid(), os.environ.get('GLIBC_TUNABLES')))")
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "HERBERTA_HUGE_PAGES")}
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  lines = [line.split() for line in proc.stdout.splitlines() if line.startswith("main")]
  assert len(lines) == 1, proc.stdout
  name, version = platform.libc_ver()
  restarts = name == "glibc" and tuple(int(part) for part in version.split(".")[:2]) >= (2, 35)
  assert lines[0][2] == ("glibc.malloc.hugetlb=1" if restarts else "None")
