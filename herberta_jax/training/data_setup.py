"""Turns a run's `config.data` into prepared TFRecords under `workdir/data`, once.

Composition only: the demo corpus, the tokenizer choice and `prepare` live in the data layer. A workdir that
already holds prepared data is reused (that is what makes a restarted run cheap), after checking it was made with
the same tokenizer (else the run stops with a TokenizerMismatchError).
"""

from __future__ import annotations

import logging
import pathlib

import jax
from jax.experimental import multihost_utils

from herberta_jax import storage
from herberta_jax.data import demo_corpus, smiler, tokenize
from herberta_jax.data import preparation as prepare
from herberta_jax.errors import ConfigError, UserFileNotFoundError

log = logging.getLogger(__name__)


def _split_paths(value: str) -> list[str]:
  return [p.strip() for p in value.split(",") if p.strip()]


def run_inputs(data_cfg, workdir: pathlib.Path) -> list[pathlib.Path]:
  """The TSV files of the run: the demo corpus written into the workdir, or the configured files."""
  workdir = storage.path(workdir)
  if data_cfg.demo:
    corpus_dir = workdir / "demo_corpus"
    if not corpus_dir.exists():
      demo_corpus.write_demo_corpus(corpus_dir, seed=data_cfg.demo_seed,
                                    sentences_per_language=data_cfg.demo_sentences_per_language)
    return smiler.expand_inputs([corpus_dir])
  paths = _split_paths(data_cfg.train_files) + _split_paths(data_cfg.test_files)
  if not _split_paths(data_cfg.train_files):
    raise ConfigError("no training data: set --config.data.train_files=a.tsv,b.tsv (or a directory), or "
                     "--config.data.demo=True for the embedded demo corpus")
  return smiler.expand_inputs(paths)


class _Texts:
  """The sentences of SMiLER files, read from the files again at every iteration (nothing held in memory)."""

  def __init__(self, files: list[pathlib.Path]):
    self.files = files

  def __iter__(self):
    return (ex.text for path in self.files for ex in smiler.read_tsv(path, on_error="skip", rejects=smiler.Rejects()))


def _tokenizer_source(config, inputs: list[pathlib.Path], workdir: pathlib.Path) -> str:
  """A tokenizer directory: the configured one, the init checkpoint's, or WordPiece trained on the train files."""
  workdir = storage.path(workdir)
  choice = config.data.tokenizer or config.model.init_from
  if not choice:
    raise ConfigError("no tokenizer: set --config.data.tokenizer (a HF tokenizer dir or name, or 'wordpiece') or "
                     "--config.model.init_from")
  if choice != "wordpiece":
    return choice
  out = workdir / "wordpiece"
  if not (out / "tokenizer.json").exists():
    train_files = [p for p in inputs if smiler.parse_file_name(p)[1] != "test"]
    log.info("training a WordPiece vocabulary of %d on %d files", config.data.wordpiece_vocab_size,
             len(train_files))
    tokenize.train_wordpiece(_Texts(train_files), out, vocab_size=config.data.wordpiece_vocab_size,
                             lowercase=config.data.lowercase)
  return storage.text(out)


def run_data_dir(data_config, workdir) -> storage.Path:
  """Where a run's prepared records are: `data.prepared_dir` when given, else `workdir/data`."""
  prepared = data_config.get("prepared_dir", "")  # .get: workdirs from before the key
  return storage.path(prepared) if prepared else storage.path(workdir) / "data"


def prepare_run_data(config, workdir: pathlib.Path) -> pathlib.Path:
  """Prepared records for the run: `data.prepared_dir` as it is, or `workdir/data`, prepared there on the first
  run (process 0 writes; the workdir is a shared filesystem or a bucket URL such as gs://b/run)."""
  workdir = storage.path(workdir)
  data_dir = run_data_dir(config.data, workdir)
  if config.data.prepared_dir and not (data_dir / "manifest.json").exists():
    raise UserFileNotFoundError(f"--config.data.prepared_dir={config.data.prepared_dir}: no manifest.json there; "
                                f"run python -m herberta_jax.prepare --out {config.data.prepared_dir} first")
  if jax.process_index() == 0 and (data_dir / "manifest.json").exists():
    # Reused records hold token ids: with another tokenizer they would silently mean other words. A WordPiece
    # vocabulary is trained from the data it prepared, so only one already in the workdir can differ.
    choice = config.data.tokenizer or config.model.init_from
    tokenizer = workdir / "wordpiece" if choice == "wordpiece" else choice
    if choice and (choice != "wordpiece" or (tokenizer / "tokenizer.json").exists()):
      try:
        prepare.check_prepared_tokenizer(data_dir, tokenizer)
      except prepare.TokenizerMismatchError as error:
        raise prepare.TokenizerMismatchError(f"{data_dir} was prepared with another tokenizer than this run's "
                                             f"(--config.data.tokenizer / --config.model.init_from): {error}") from None
  elif jax.process_index() == 0:
    inputs = run_inputs(config.data, workdir)
    tokenizer = _tokenizer_source(config, inputs, workdir)
    prepare.prepare([storage.text(p) for p in inputs], tokenizer, data_dir, max_seq_len=config.data.max_seq_len,
                    on_error=config.data.on_error, dev_fraction=config.data.dev_fraction, seed=config.seed)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("prepared data")
  return data_dir
