#!/usr/bin/env bash
# Trains on one host with all its GPUs.
#
# By default ONE process drives every local GPU: JAX sees all of a host's GPUs from a single process, so no
# coordinator is needed. NUM_PROCESSES=N instead starts N processes on localhost, process i on GPU i, joined
# through jax.distributed (HERBERTA_COORDINATOR / HERBERTA_NUM_PROCESSES / HERBERTA_PROCESS_ID); the launcher
# waits for all of them, and when one fails it stops the others and exits with the failure's code.
#
# Each process is told the devices it must find (HERBERTA_EXPECT_PLATFORM=gpu, HERBERTA_EXPECT_DEVICES: all the
# host's GPUs, or 1 per process) when the host shows GPUs, so a JAX without its GPU backend fails at start-up
# instead of training on the CPU. Inside a SLURM job use it from a one-task step (`srun --pty bash`, or
# `srun --ntasks=1 launch/multi_gpu.sh ...`): the trainer then runs as one plain process on every GPU of the step.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$here/common.sh"

usage() {
  cat <<EOF
Usage: $(basename "$0") CONFIG WORKDIR [extra train flags...]

Runs python -m herberta_jax.train --config CONFIG --workdir WORKDIR [flags] on this host.

Environment:
  NUM_PROCESSES=N       one process per GPU (process i gets CUDA_VISIBLE_DEVICES=i); unset: one process, all GPUs
  COORDINATOR_PORT=P    localhost port of the jax.distributed coordinator with NUM_PROCESSES (default 12355)
  STOP_GRACE_SECONDS=S  after a process fails, seconds between SIGTERM and SIGKILL for the others (default 10)
  HERBERTA_PYTHON=BIN   the Python interpreter (default python3)
  JAX_PLATFORMS=cpu     train on the CPU: no GPU expectations are passed on
  DRY_RUN=1             print the command(s), one per line, and exit without running them
EOF
}

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  usage
  exit 0
fi
if (($# < 2)); then
  usage >&2
  exit 2
fi
config=$1
workdir=$2
shift 2
check_workdir "$workdir"

repo="$(dirname "$here")"
pythonpath="$repo${PYTHONPATH:+:$PYTHONPATH}"
train=("${HERBERTA_PYTHON:-python3}" -m herberta_jax.train --config "$config" --workdir "$workdir" "$@")

# GPUs this host shows (CUDA_VISIBLE_DEVICES, else nvidia-smi); none, or JAX_PLATFORMS=cpu: nothing is expected.
host_gpus=0
if gpus_wanted; then
  host_gpus=$(visible_gpus)
fi
# The devices one process must find; an explicit HERBERTA_EXPECT_* in the environment is left to the trainer.
expect_env() {
  expect=()
  if ((host_gpus > 0)); then
    [[ -n ${HERBERTA_EXPECT_PLATFORM:-} ]] || expect+=(HERBERTA_EXPECT_PLATFORM=gpu)
    [[ -n ${HERBERTA_EXPECT_DEVICES:-} ]] || expect+=(HERBERTA_EXPECT_DEVICES="$1")
  fi
}
# salloc without an interactive step leaves this shell on the login node, which is where the run would go.
if [[ -n ${SLURM_JOB_ID:-} && -z ${SLURM_STEP_ID:-} ]]; then
  echo "launch: note: SLURM job $SLURM_JOB_ID but no srun step: this trains on $(hostname), not necessarily on" \
       "the allocated nodes; use srun --ntasks=1 launch/multi_gpu.sh ..., or launch/slurm.sbatch" >&2
fi

if [[ -z ${NUM_PROCESSES:-} ]]; then
  expect_env "$host_gpus"
  run_command PYTHONPATH="$pythonpath" ${expect[@]+"${expect[@]}"} -- "${train[@]}"
fi

num_processes=$NUM_PROCESSES
port=${COORDINATOR_PORT:-12355}
grace=${STOP_GRACE_SECONDS:-10}
if ! [[ $num_processes =~ ^[1-9][0-9]*$ ]]; then
  echo "error: NUM_PROCESSES must be a positive integer, got '$num_processes'" >&2
  exit 2
fi
if ! [[ $port =~ ^[1-9][0-9]*$ ]] || ((port > 65535)); then
  echo "error: COORDINATOR_PORT must be a port number, got '$port'" >&2
  exit 2
fi
if ! [[ $grace =~ ^[0-9]+$ ]]; then
  echo "error: STOP_GRACE_SECONDS must be a whole number of seconds, got '$grace'" >&2
  exit 2
fi

# Process i takes the i-th visible GPU: the i-th entry of an existing CUDA_VISIBLE_DEVICES, else GPU i.
gpus=()
if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
  IFS=, read -r -a gpus <<<"$CUDA_VISIBLE_DEVICES"
  if ((${#gpus[@]} < num_processes)); then
    echo "error: NUM_PROCESSES=$num_processes but CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES lists ${#gpus[@]} GPUs" >&2
    exit 2
  fi
else
  for ((i = 0; i < num_processes; i++)); do
    gpus+=("$i")
  done
fi

expect_env 1
process_env() {
  local i=$1
  envs=(PYTHONPATH="$pythonpath" CUDA_VISIBLE_DEVICES="${gpus[i]}" HERBERTA_COORDINATOR="localhost:$port"
        HERBERTA_NUM_PROCESSES="$num_processes" HERBERTA_PROCESS_ID="$i" ${expect[@]+"${expect[@]}"})
}

if dry_run; then
  for ((i = 0; i < num_processes; i++)); do
    process_env "$i"
    format_command "${envs[@]}" -- "${train[@]}"
  done
  exit 0
fi

declare -A process_of_pid=()
alive=()

# True while any started process is still running (bash reaps ended children by itself, so they are gone).
any_alive() {
  local pid
  for pid in "${alive[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      return 0
    fi
  done
  return 1
}

# SIGTERM first; JAX's preemption service catches SIGTERM in distributed processes, so SIGKILL what is left
# after the grace period.
stop_all() {
  local deadline=$((SECONDS + grace))
  ((${#alive[@]})) || return 0
  kill -TERM "${alive[@]}" 2>/dev/null || true
  while ((SECONDS < deadline)) && any_alive; do
    sleep 0.2
  done
  kill -KILL "${alive[@]}" 2>/dev/null || true
  wait "${alive[@]}" 2>/dev/null || true
  alive=()
}
trap 'echo "launch: interrupted, stopping all processes" >&2; stop_all; exit 130' INT
trap 'echo "launch: terminated, stopping all processes" >&2; stop_all; exit 143' TERM

for ((i = 0; i < num_processes; i++)); do
  process_env "$i"
  env "${envs[@]}" "${train[@]}" &
  process_of_pid[$!]=$i
  alive+=("$!")
done

# `wait -n` returns as soon as any process ends; bash keeps each ended one's status for a later `wait PID`.
while ((${#alive[@]})); do
  wait -n "${alive[@]}" || true
  still=()
  failed=()
  for pid in "${alive[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
      continue
    fi
    status=0
    wait "$pid" || status=$?
    if ((status != 0)); then
      failed=("${process_of_pid[$pid]}" "$status")
    fi
  done
  alive=("${still[@]}")
  if ((${#failed[@]})); then
    echo "launch: process ${failed[0]} exited with status ${failed[1]}; stopping the others" >&2
    stop_all
    exit "${failed[1]}"
  fi
done
echo "launch: all $num_processes processes finished" >&2
