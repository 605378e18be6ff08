#!/usr/bin/env bash
# Trains on a Cloud TPU VM (a single host or a pod slice): the same command on every worker at once, through
# `gcloud compute tpus tpu-vm ssh --worker=all`.
#
# Every worker runs one process that drives its local TPU chips. WORKDIR must be a path that every worker sees
# as the same directory (NFS / Filestore, or a bucket mounted with gcsfuse at the same path): process 0 prepares
# the data and writes the outputs there, and every process reads the prepared data and checkpoints from it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$here/common.sh"

usage() {
  cat <<EOF
Usage: $(basename "$0") TPU_NAME ZONE CONFIG WORKDIR [extra train flags...]

Runs cd REPO_DIR && python -m herberta_jax.train --config CONFIG --workdir WORKDIR [flags] on every worker of
the TPU VM TPU_NAME. Relative CONFIG / WORKDIR paths are taken from REPO_DIR on the workers.

Environment:
  REPO_DIR=DIR          the repository on the workers (default herberta_jax, i.e. ~/herberta_jax)
  HERBERTA_PYTHON=BIN   the Python interpreter on the workers (default python3)
  DRY_RUN=1             print the gcloud command and exit without running it
gcloud's own settings apply (e.g. CLOUDSDK_CORE_PROJECT for the project).
EOF
}

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  usage
  exit 0
fi
if (($# < 4)); then
  usage >&2
  exit 2
fi
tpu_name=$1
zone=$2
config=$3
workdir=$4
shift 4
check_workdir "$workdir"

# The remote command is one string for the workers' shell: every word in it is quoted for that shell.
# HERBERTA_DISTRIBUTED=1: a pod slice's workers learn of each other from the TPU metadata server, not from the
# environment, so the trainer is told to call jax.distributed.initialize() and let JAX find them.
remote="cd $(quote_word "${REPO_DIR:-herberta_jax}") && HERBERTA_DISTRIBUTED=1 $(format_command -- "${HERBERTA_PYTHON:-python3}" \
  -m herberta_jax.train --config "$config" --workdir "$workdir" "$@")"

run_command -- gcloud compute tpus tpu-vm ssh "$tpu_name" --zone "$zone" --worker=all --command "$remote"
