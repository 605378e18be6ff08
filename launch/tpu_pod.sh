#!/usr/bin/env bash
# Trains on a Cloud TPU VM (a single host or a pod slice): the same command on every worker at once, through
# `gcloud compute tpus tpu-vm ssh --worker=all`. `--install` first sets up every worker's Python environment.
#
# Every worker runs one process that drives its local TPU chips. WORKDIR is a gs:// URL (the usual choice on a
# pod: no shared disk) or a path that every worker sees as the same directory (NFS / Filestore): process 0
# prepares the data and writes the outputs there, and every process reads the prepared data and checkpoints from
# it.
#
# On SIGTERM (a maintenance event or a preemption notice) the workers agree on a step through JAX's preemption
# service, save it and exit with status 75. RESTARTS=N makes each worker start the trainer again, up to N times,
# while it exits with 75: a run whose VMs survive resumes by itself. A spot VM that was taken away must be
# recreated first; then run this script again, and the run resumes from its last checkpoint.
#
# Stock TPU VM images ship Python 3.10, the pins need 3.11: the install step makes REPO_DIR/.venv with uv, which
# downloads a Python 3.11 of its own, and the training command runs that venv's python. This script itself runs
# where gcloud does, often macOS's bash 3.2: no empty-array expansions, no bash 4 features.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$here/common.sh"

usage() {
  cat <<EOF
Usage: $(basename "$0") TPU_NAME ZONE CONFIG WORKDIR [extra train flags...]
       $(basename "$0") --install TPU_NAME ZONE

Runs cd REPO_DIR && .venv/bin/python -m herberta_jax.train --config CONFIG --workdir WORKDIR [flags] on every
worker of the TPU VM TPU_NAME. Relative CONFIG / WORKDIR paths are taken from REPO_DIR on the workers.
--install creates REPO_DIR/.venv on every worker instead: Python 3.11 through uv (the images have 3.10), then
requirements.txt and jax[tpu]. The repository must already be in REPO_DIR on every worker.

Environment:
  REPO_DIR=DIR          the repository on the workers (default herberta_jax, i.e. ~/herberta_jax)
  HERBERTA_PYTHON=BIN   the Python interpreter on the workers (default .venv/bin/python, made by --install)
  RESTARTS=N            restart the trainer on each worker, up to N times, while it exits with status 75 (it
                        saved and stopped on SIGTERM); default 0
  DRY_RUN=1             print the gcloud command and exit without running it
gcloud's own settings apply (e.g. CLOUDSDK_CORE_PROJECT for the project).
EOF
}

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  usage
  exit 0
fi
install=0
if [[ ${1:-} == --install ]]; then
  install=1
  shift
fi
if (($# < (install ? 2 : 4))); then
  usage >&2
  exit 2
fi
tpu_name=$1
zone=$2
repo_dir=$(quote_word "${REPO_DIR:-herberta_jax}")
gcloud=(gcloud compute tpus tpu-vm ssh "$tpu_name" --zone "$zone" --worker=all --command)

if ((install)); then
  # The JAX version of the pins, so the TPU backend matches the jax they install.
  jax_version=$(sed -n 's/^jax\[cpu\]==\([0-9.]*\).*/\1/p' "$here/../requirements.txt")
  if [[ -z $jax_version ]]; then
    echo "error: no jax[cpu]==VERSION pin in $here/../requirements.txt" >&2
    exit 2
  fi
  # The last step fails the install on a worker whose venv did not get what the pins need.
  check='import sys, jax; assert sys.version_info >= (3, 11), sys.version; '
  check+='print("python", sys.version.split()[0], "jax", jax.__version__)'
  # python3 (3.10 on the images) only installs uv; uv fetches a managed Python 3.11 when the worker has none.
  steps=(
    "$(format_command -- python3 -m pip install --user --upgrade uv)"
    "$(format_command -- python3 -m uv venv --allow-existing --python 3.11 .venv)"
    "$(format_command -- python3 -m uv pip install --python .venv/bin/python -r requirements.txt \
         "jax[tpu]==$jax_version")"
    "$(format_command -- .venv/bin/python -c "$check")"
  )
  remote="cd $repo_dir"
  for step in "${steps[@]}"; do
    remote+=" && $step"
  done
  run_command -- "${gcloud[@]}" "$remote"
fi

config=$3
workdir=$4
shift 4
check_workdir "$workdir"

# The remote command is one string for the workers' shell: every word in it is quoted for that shell.
# HERBERTA_DISTRIBUTED=1: a pod slice's workers learn of each other from the TPU metadata server, not from the
# environment, so the trainer is told to call jax.distributed.initialize() and let JAX find them.
# HERBERTA_EXPECT_PLATFORM=tpu: a worker whose JAX lacks the TPU backend fails at start-up instead of using the CPU.
train=("${HERBERTA_PYTHON:-.venv/bin/python}" -m herberta_jax.train --config "$config" --workdir "$workdir")
line=$(format_command HERBERTA_DISTRIBUTED=1 HERBERTA_EXPECT_PLATFORM=tpu -- "${train[@]}" ${1+"$@"})
restarts=${RESTARTS:-0}
if ! [[ $restarts =~ ^[0-9]+$ ]]; then
  echo "error: RESTARTS must be a whole number of restarts, got '$restarts'" >&2
  exit 2
fi
if ((restarts == 0)); then
  remote="cd $repo_dir && $line"
else
  # Every worker's trainer stops at the same step (JAX's preemption sync point), so they all restart together.
  remote="cd $repo_dir && n=0 && while :; do $line; s=\$?; if [ \$s -ne $EXIT_REQUEUE ] || [ \$n -ge $restarts ]; then"
  remote+=" exit \$s; fi; n=\$((n + 1)); echo \"launch: preempted (status $EXIT_REQUEUE), restart \$n of $restarts\" >&2;"
  remote+=" done"
fi

run_command -- "${gcloud[@]}" "$remote"
