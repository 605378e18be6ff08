# shellcheck shell=bash
# Helpers shared by the launch scripts (sourced, not run): quoting, DRY_RUN and argument checks.
#
# Every launcher builds its command as an array and hands it to `print_command` or `run_command`, so the line a
# dry run prints is exactly what a real run executes.

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
  exec env "${env_args[@]}" "$@"
}

# The code reads and writes the workdir through local paths (pathlib), so a gs:// URL would silently become a
# local directory named `gs:` on every host. Exits 2 with a pointer to a mounted bucket instead.
check_workdir() {
  if [[ $1 == gs://* ]]; then
    echo "error: WORKDIR '$1' is a gs:// URL, but the training code writes through local paths." >&2
    echo "Mount the bucket on every host (e.g. gcsfuse) or use NFS, and pass the mounted path." >&2
    exit 2
  fi
}
