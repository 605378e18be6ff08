# shellcheck shell=bash
# Helpers shared by the launch scripts (sourced, not run): quoting, DRY_RUN, argument checks, GPU counting.
#
# Every launcher builds its command as an array and hands it to `format_command` or `run_command`, so the line a
# dry run prints is exactly what a real run executes. tpu_pod.sh runs where gcloud runs, often macOS's bash 3.2:
# what it uses here must work there, where expanding an empty array under `set -u` is an error.

# True when DRY_RUN asks for printing instead of running (any value but empty or 0).
dry_run() {
  [[ ${DRY_RUN:-0} != 0 ]]
}

# One word, quoted for a POSIX shell: bare when it holds only safe characters, else in single quotes.
quote_word() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints one command line: `NAME=VALUE` environment assignments up to `--`, then the command's words.
# Assignments keep their name bare so a shell still reads them as assignments.
format_command() {
  local words=() word
  while (($#)) && [[ $1 != -- ]]; do
    words+=("${1%%=*}=$(quote_word "${1#*=}")")
    shift
  done
  shift  # the --
  for word in "$@"; do
    words+=("$(quote_word "$word")")
  done
  printf '%s\n' "${words[*]}"
}

# `run_command NAME=VALUE... -- COMMAND...`: prints the line under DRY_RUN, otherwise replaces this shell with it.
run_command() {
  if dry_run; then
    format_command "$@"
    exit 0
  fi
  local env_args=()
  while [[ $1 != -- ]]; do
    env_args+=("$1")
    shift
  done
  shift
  # ${a[@]+"${a[@]}"}: nothing for an empty array, where bash 3.2 would stop on "unbound variable".
  exec env ${env_args[@]+"${env_args[@]}"} "$@"
}

# The exit status of a training run stopped by a preemption notice (SIGTERM) after saving its checkpoint:
# herberta_jax.training.preemption.EXIT_REQUEUE. Running the same command again resumes from that checkpoint.
# shellcheck disable=SC2034  # read by the scripts that source this file
EXIT_REQUEUE=75

# A WORKDIR is a directory every host sees at the same path, or a gs:// URL (the trainer writes it through its path
# layer, the checkpoints through Orbax). Nothing is created here: a URL is not a local directory. Other URL schemes
# exit 2.
check_workdir() {
  if [[ $1 == *://* && $1 != gs://* ]]; then
    echo "error: WORKDIR '$1': only gs:// URLs are supported; pass a gs://BUCKET/PATH or a directory every host" \
         "sees at the same path" >&2
    exit 2
  fi
}

# Prints how many GPUs this host shows: the entries of CUDA_VISIBLE_DEVICES when it is set (what CUDA will show),
# else the GPUs `nvidia-smi -L` lists, else 0.
visible_gpus() {
  local entries=() entry count=0
  if [[ -n ${CUDA_VISIBLE_DEVICES+set} ]]; then
    IFS=, read -r -a entries <<<"$CUDA_VISIBLE_DEVICES"
    for entry in ${entries[@]+"${entries[@]}"}; do
      if [[ -n $entry && $entry != -1 && $entry != NoDevFiles ]]; then
        count=$((count + 1))
      fi
    done
  elif command -v nvidia-smi >/dev/null 2>&1; then
    count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  fi
  printf '%s\n' "${count:-0}"
}

# True unless JAX_PLATFORMS names platforms and no GPU among them (e.g. JAX_PLATFORMS=cpu for a CPU test run).
gpus_wanted() {
  [[ -z ${JAX_PLATFORMS:-} || ${JAX_PLATFORMS} == *cuda* || ${JAX_PLATFORMS} == *gpu* || ${JAX_PLATFORMS} == *rocm* ]]
}
