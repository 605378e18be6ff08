"""`run_cli(main)`: every CLI's entry point; a user error ends as one line on stderr and exit status 2.

Known user errors are `errors.UserError` (the data layer's DataError, TokenizerMismatchError and hf.CheckpointError
derive from it), absl flag errors, a misspelt `--config.` key, and FileNotFoundError / FileExistsError (in a CLI
these come from the paths it was given), and the OSErrors of paths a user can act on (a full disk, an I/O error, a
broken pipe, a file where a folder belongs: `os_error_message`). Ctrl-C prints one line saying what was kept and
how to go on (`when_interrupted`) and exits 130; stdout's reader leaving (`predict ... | head -1`) ends the command
quietly with 141, as it would a shell tool. Anything else is a bug and keeps its full traceback, and `--debug` (or
HERBERTA_DEBUG=1) shows the traceback of user errors too.

What a CLI prints besides its results: a progress bar, its own status lines and every library's warnings. absl's
`--verbosity` (`-v`; default from HERBERTA_VERBOSITY, else -1) turns more on: 0 adds every library's INFO lines (XLA,
Orbax, transformers) in absl's format, 1 debug lines (`console.configure_logging`).
"""

from __future__ import annotations

import errno
import os
import platform
import re
import select
import sys
from collections.abc import Callable, Mapping, Sequence

from absl import app, flags

from herberta_jax import compile_cache, console, cpu_devices
from herberta_jax.errors import UserError

# Before the CLI imports jax or transformers, which read these once: XLA's C++ logs and transformers' import-time
# advice stay off unless asked for (the env var; --verbosity is parsed too late for them).
console.quiet_environment(console.verbosity_from_env())

HUGE_PAGES = "glibc.malloc.hugetlb=1"
_RESTARTED = "HERBERTA_HUGE_PAGES_RESTARTED"
_DEBUG = flags.DEFINE_bool("debug", False, "Show the full traceback of user errors (also HERBERTA_DEBUG=1).")
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C ended
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as `yes | head -1` ends: the reader of stdout left, nothing is wrong here
_USER_ERRORS = (UserError, flags.Error, app.UsageError, FileNotFoundError, FileExistsError)
# What an OSError from the paths a CLI writes or reads means, and what to do: one line, exit 2.
_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device; free some or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.EIO: "input/output error (a failing disk, or a network filesystem that went away); check the device",
    errno.EPIPE: "broken pipe: the program reading this output exited before it ended",
    errno.EEXIST: "exists and is a file where a folder is expected; give a folder (new or existing) instead",
    errno.ENOTDIR: "a file stands where a folder is expected on this path; give a folder path",
    errno.EISDIR: "is a folder where a file is expected; give a file path",
    errno.EACCES: "permission denied; check the path's permissions or write elsewhere",
    errno.EROFS: "read-only filesystem; write elsewhere",
}
_interrupt_note: list = [None]  # what a Ctrl-C says was kept (`when_interrupted`), for the running CLI


class ModelFlags:
  """The flags `predict` and `evaluate` share: the trained pipeline, the batch, the compute dtype, the
  decoding, the compilation cache and the CPU's devices.

  Defined by each of those CLIs at import (flags are global: a module that defined them for every CLI would give
  `train` a --model).
  """

  def __init__(self):
    self.model = flags.DEFINE_string("model", None, "Export directory or training workdir.")
    self.batch_size = flags.DEFINE_integer("batch_size", 64, "Sentences per batch over all local devices "
                                           "(divisible by their number).")
    self.top_k = flags.DEFINE_integer("top_k", None, "Relations kept per sentence; the best triple is the most "
                                      "probable of theirs (default: the run's, 1 unless its config said more).")
    self.top_m = flags.DEFINE_integer("top_m", None, "Entity pairs kept per relation (default: the run's).")
    self.max_span_len = flags.DEFINE_integer("max_span_len", None, "Longest entity, in tokens (default: the run's).")
    self.disjoint_entities = flags.DEFINE_bool("disjoint_entities", None, "Rule out overlapping entity pairs "
                                               "(default: the run's).")
    self.ordered_entities = flags.DEFINE_bool("ordered_entities", None, "Rule out entity pairs where entity 1 does "
                                              "not end before entity 2 starts (default: the run's).")
    self.dtype = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (bfloat16: GPU/TPU; "
                                   "parameters stay float32).")
    self.lengths_per_doubling = flags.DEFINE_integer(
        "lengths_per_doubling", 8, "Padded batch lengths per doubling of the length (8: ..., 16, 18, ..., 32, 36, "
        "...): a batch is padded by under 1/N of its length. More pads less but compiles more programs (each about "
        "2 s on a CPU, 12 s on a GPU, once: they are cached).")
    self.kernels = flags.DEFINE_string(
        "kernels", "", "Fused GPU kernels for the encoders: 'all' or a comma-separated subset of layer_norm, "
        "bias_gelu, attention ('': none). Off a GPU they run as their pure-JAX references.")
    self.retired_bucket_step = flags.DEFINE_integer("bucket_step", None, "Retired: see --lengths_per_doubling.")
    self.compilation_cache_dir = flags.DEFINE_string(
        "compilation_cache_dir", compile_cache.DEFAULT_DIR, "XLA's persistent compilation cache ('' turns it off): "
        "a later run reads the programs this one compiled from there.")
    self.cpu_devices = flags.DEFINE_integer(
        "cpu_devices", None, "Without an accelerator: JAX devices the CPU is split into, each computing its share "
        "of every batch (default: one per core, as many as divide --batch_size; 1: JAX's single CPU device). "
        f"XLA_FLAGS={cpu_devices.FORCE_FLAG}=N takes precedence.")

  def configure_jax(self) -> None:
    """Before the first JAX operation: the compilation cache and the CPU's devices."""
    compile_cache.enable(self.compilation_cache_dir.value)
    cpu_devices.split_host(self.batch_size.value, self.cpu_devices.value)

  def check(self) -> None:
    """The values no model is needed to refuse."""
    if self.retired_bucket_step.value is not None:
      raise app.UsageError("--bucket_step is retired: batch lengths now follow a grid of --lengths_per_doubling "
                           "lengths per doubling (default 8: a batch is padded by under an eighth of its length). "
                           "Drop the flag.", exitcode=2)
    for flag in (self.top_k, self.top_m, self.max_span_len, self.batch_size, self.lengths_per_doubling,
                 self.cpu_devices):
      if flag.value is not None and flag.value < 1:
        raise app.UsageError(f"--{flag.name}={flag.value}: must be at least 1", exitcode=2)
    from herberta_jax.model import kernels  # the model layer: only once the flags are being checked
    try:
      kernels.parse(self.kernels.value)
    except ValueError as error:
      raise app.UsageError(f"--kernels={self.kernels.value}: {error}", exitcode=2) from None
    if self.cpu_devices.value and self.batch_size.value % self.cpu_devices.value:
      raise app.UsageError(f"--cpu_devices={self.cpu_devices.value}: must divide --batch_size={self.batch_size.value} "
                           f"(each device computes an equal share of every batch)", exitcode=2)

  def predictor_kwargs(self) -> dict:
    return {"top_k": self.top_k.value, "top_m": self.top_m.value, "max_span_len": self.max_span_len.value,
            "disjoint_entities": self.disjoint_entities.value, "ordered_entities": self.ordered_entities.value,
            "batch_size": self.batch_size.value, "dtype": self.dtype.value,
            "lengths_per_doubling": self.lengths_per_doubling.value, "kernels": self.kernels.value}


def debugging(argv: Sequence[str] = ()) -> bool:
  # Flags may not be parsed yet when parsing itself fails: then the raw arguments decide.
  parsed = flags.FLAGS.is_parsed() and _DEBUG.value
  return parsed or "--debug" in argv or os.environ.get("HERBERTA_DEBUG", "") not in ("", "0")


def _message(error: BaseException) -> str:
  # KeyError's str() is its key's repr; ml_collections wraps that KeyError in an AttributeError.
  while isinstance(error, (KeyError, AttributeError)) and error.args:
    if not isinstance(error.args[0], BaseException):
      return str(error.args[0])
    error = error.args[0]
  return str(error)


def one_line(error: BaseException) -> str:
  """The error's message with its lines joined, so it reads as one line whatever raised it."""
  text = _message(error)
  return " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(error).__name__


def _prog() -> str:
  prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "herberta_jax"
  if prog == "__main__.py" or prog.endswith(".py"):
    prog = prog.removesuffix(".py")
  return prog


def fail(error: BaseException | str) -> None:
  """Prints `PROG: error: MESSAGE` on stderr and exits with status 2."""
  message = error if isinstance(error, str) else one_line(error)
  print(f"{_prog()}: error: {message}", file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def _config_key_error(error: Exception, argv: Sequence[str]) -> str | None:
  """A misspelt `--config.a.b=v` override: ml_collections raises a chained KeyError/AttributeError for it."""
  text = _message(error)
  bad = re.match(r"'?([A-Za-z_][\w]*)'?", text)
  if not bad:
    return None
  for arg in argv:
    flag = arg.split("=", 1)[0]
    parts = flag.split(".")
    if flag.startswith("--config.") and bad.group(1) in parts[1:]:
      suggestion = re.search(r'Did you mean "([^"]+)"', text)
      at = parts.index(bad.group(1), 1)
      fix = (f"; did you mean {'.'.join(parts[:at] + [suggestion.group(1)] + parts[at + 1:])}?" if suggestion
             else "; see the config file for the valid keys")
      return f"{flag}: no such config key{fix}"
  return None


def _parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's parsing, with a flag error or misspelt config key as one line (absl prints usage hints and exits 1)."""
  try:
    return flags.FLAGS(list(argv))
  except (KeyError, AttributeError) as error:
    message = _config_key_error(error, argv)
    if message is None or debugging(argv):
      raise
    fail(message)
  except flags.Error as error:
    if debugging(argv):
      raise
    fail(error)
  raise AssertionError("unreachable")


def when_interrupted(note: str | Callable[[], str] | None) -> None:
  """What a Ctrl-C in the running CLI prints after "interrupted: ": what was kept and how to go on (a callable is
  asked at that moment, so it can count what was written)."""
  _interrupt_note[0] = note


def interrupted() -> None:
  """Prints `PROG: interrupted: NOTE` on stderr and exits with status 130."""
  note = _interrupt_note[0]
  note = note() if callable(note) else note
  print(f"{_prog()}: interrupted: {note or 'stopped by Ctrl-C'}", file=sys.stderr)
  sys.exit(EXIT_INTERRUPTED)


def _stdout_is_broken() -> bool:
  """Whether stdout is a pipe whose reader has gone: its write end then polls as an error (Linux, macOS)."""
  try:
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))
  except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout: ask the stream itself
    try:
      sys.stdout.flush()
    except BrokenPipeError:
      return True
    except (OSError, ValueError):
      pass
    return False


def quiet_broken_pipe() -> None:
  """Exits with status 141 and no message: stdout's reader (`head`) has read what it wanted. Stdout is pointed at
  /dev/null first, so the interpreter's own flush at exit does not complain about the pipe."""
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, sys.stdout.fileno())
  except (OSError, ValueError):
    pass
  finally:
    os.close(devnull)
  sys.exit(EXIT_BROKEN_PIPE)


def os_error_message(error: OSError) -> str | None:
  """One line for an OSError a user can act on (a full disk, a broken pipe, a file where a folder belongs ...),
  naming the path when the error knows it; None for any other."""
  what = _OS_ERRORS.get(error.errno)
  if what is None or (error.errno == errno.EEXIST and error.filename and os.path.isdir(error.filename)):
    return None
  where = error.filename if error.filename is not None else "writing the output"
  return f"{where}: {what}"


def os_error_reason(error: OSError) -> str:
  """What went wrong, without the path: the advice for an error a user can act on, else the system's words."""
  return _OS_ERRORS.get(error.errno) or error.strerror or one_line(error)


def guarded(main: Callable[[list[str]], int | None], argv: list[str]) -> int | None:
  """Runs `main(argv)`, turning a known user error into one line and exit status 2, Ctrl-C into one line and exit
  status 130, and stdout's reader leaving (`| head`) into a quiet exit."""
  try:
    return main(argv)
  except KeyboardInterrupt:
    if debugging(argv):
      raise
    interrupted()
  except BrokenPipeError as error:
    if _stdout_is_broken():
      quiet_broken_pipe()
    if debugging(argv):
      raise
    fail(os_error_message(error))
  except _USER_ERRORS as error:
    if debugging(argv):
      raise
    plain_os_error = isinstance(error, OSError) and not isinstance(error, UserError)
    fail(plain_os_error and os_error_message(error) or error)
  except OSError as error:
    message = os_error_message(error)
    if message is None or debugging(argv):
      raise
    fail(message)


def _show_flags_in_help(module_name: str) -> None:
  """--help lists the key flags of `sys.argv[0]`: for a console script (`herberta-train`) that is the generated
  launcher, so the CLI module's own flags, and --debug, are declared key flags of it too."""
  for name in (module_name, __name__):
    for flag in flags.FLAGS.get_key_flags_for_module(name):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def verbosity() -> int:
  """--verbosity when given on the command line, else HERBERTA_VERBOSITY, else -1 (absl's own default, after
  `app.run`, is 0: every library's INFO lines)."""
  flag = flags.FLAGS["verbosity"]
  return flag.value if flag.present else console.verbosity_from_env()


def huge_pages_restart(environ: Mapping[str, str], argv: Sequence[str],
                       libc: tuple[str, str] | None = None) -> dict[str, str] | None:
  """The environment to re-execute this command line (`argv`, as `sys.orig_argv`) in so that glibc's malloc asks
  for transparent huge pages, or None: already restarted or set, opted out of (HERBERTA_HUGE_PAGES=0), not
  glibc >= 2.35, or a command line that cannot run again (stdin's script, an interactive session).

  Why: XLA's CPU runtime allocates each execution's temporaries as one large buffer that glibc maps afresh every
  step and faults in 4 KiB at a time; with `glibc.malloc.hugetlb=1` it is 2 MiB at a time (measured by
  bench/bench_host_alloc.py: `git show 78d3b3b:bench/bench_host_alloc.py`).
  glibc reads the setting once, when a process starts.
  """
  name, version = libc or platform.libc_ver()
  if (environ.get("HERBERTA_HUGE_PAGES", "1") == "0" or _RESTARTED in environ or name != "glibc"
      or argv[1:2] in ([], ["-"], ["-i"]) or _version(version) < (2, 35)):
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb" in tunables:
    return None
  # The marker stops a second restart where glibc drops GLIBC_TUNABLES (setuid or file-capability binaries).
  return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, HUGE_PAGES))), _RESTARTED: "1"}


def _version(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(part) for part in text.split(".")[:2])
  except ValueError:
    return ()


def run_cli(main: Callable[[list[str]], int | None], *, positional: bool = False,
            interrupted_note: str | None = None) -> None:
  """`app.run(main)` with one-line user errors and quiet logs (see the module docstring). Positional arguments are
  refused unless `positional`. Started as a command (`python -m`, a console script), the process first
  re-executes itself once with huge pages for glibc's malloc (`huge_pages_restart`); called from a notebook or
  another program, it does not. `interrupted_note`: what a Ctrl-C says was kept, until the CLI says more
  (`when_interrupted`)."""
  as_command = main.__module__ == "__main__" or os.path.basename(sys.argv[0]).startswith("herberta-")
  if as_command and (environment := huge_pages_restart(os.environ, sys.orig_argv)) is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
  _show_flags_in_help(main.__module__)
  when_interrupted(interrupted_note)

  def checked(argv: list[str]) -> int | None:
    console.configure_logging(verbosity())
    if len(argv) > 1 and not positional:
      raise app.UsageError(f"unexpected arguments {' '.join(argv[1:])!r}: every input is given with a --flag")
    return main(argv)

  app.run(lambda argv: guarded(checked, argv), flags_parser=_parse_flags)


def invoke(main: Callable[[list[str]], int | None], args: Sequence[str], *, positional: bool = False) -> int:
  """Runs a CLI in this process as `python -m` would (flags parsed from `args`); returns its exit status.

  For tests and notebooks: the flags are reset afterwards, so it can be called again.
  """
  argv = [sys.argv[0] if sys.argv else "herberta_jax", *args]
  try:
    try:
      remaining = _parse_flags(argv)
      if len(remaining) > 1 and not positional:
        fail(f"unexpected arguments {' '.join(remaining[1:])!r}: every input is given with a --flag")
      return guarded(main, remaining) or 0
    except SystemExit as exit_:
      return exit_.code if isinstance(exit_.code, int) else 1
  finally:
    flags.FLAGS.unparse_flags()
