"""Tokenizes `Example`s into `Features`: WordPiece ids, character offsets and token spans of both entities.

Everything goes through a HuggingFace fast tokenizer (Rust), whose batch encoding runs on all cores and reports
each token's character span. Those offsets are what make entity spans exact: a token span is found by overlap
with the entity's character span in the original text, so lowercasing or accent stripping never shifts it.

The relation classifier reads `[CLS] sentence [SEP]`; the entity tagger reads `[CLS] [relation] [SEP] sentence
[SEP]`, two tokens longer, built on device (`herberta_jax.model.inputs`). The sentence is therefore cut to
`max_seq_len - 4` tokens so that both inputs fit `max_seq_len`.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence

from herberta_jax import storage
from herberta_jax.data.example import Example, Features
from herberta_jax.data.locations import looks_like_path

# Tokens a vocabulary-less run reserves, so relation tokens never grow its vocabulary.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NUM_RESERVED_UNUSED = 64
# Room the tagger input needs beyond `[CLS] sentence [SEP]`: the relation token and a second [SEP].
TAGGER_EXTRA_TOKENS = 2


def relation_input_limit(max_seq_len: int) -> int:
  """Most tokens of a relation input `[CLS] sentence [SEP]` (specials included), so the tagger's fits max_seq_len.

  The one truncation rule: `prepare` and inference both cut sentences by it.
  """
  return max_seq_len - TAGGER_EXTRA_TOKENS


_UNUSED = re.compile(r"^\[unused(\d+)\]$")
_HANGUL_SYLLABLE = "[\uac00-\ud7a3]"


def load_tokenizer(name_or_path: str | pathlib.Path):
  """Loads a fast (Rust-backed) HuggingFace tokenizer from a local directory, or from the hub by name.

  Args:
    name_or_path: a directory holding `tokenizer.json` (or `vocab.txt`) and `tokenizer_config.json` (local or a
      URL such as gs://bucket/run/data/tokenizer, loaded from a local copy), or a hub name such as
      "bert-base-cased" (needs network access).

  Returns:
    A `transformers.PreTrainedTokenizerFast`, with the truncation and padding a `tokenizer.json` may carry
    switched off: `encode` decides where to cut.

  Raises:
    FileNotFoundError: a path that does not exist, or a hub name that cannot be fetched (offline, unknown).
    ValueError: the tokenizer is a slow (pure Python) one, which gives no character offsets.
  """
  from transformers import AutoTokenizer, PreTrainedTokenizerFast

  if storage.is_url(name_or_path):
    return _load_remote_tokenizer(storage.path(name_or_path))
  text = str(name_or_path)
  path = pathlib.Path(text).expanduser()
  if looks_like_path(text) and not path.is_dir():
    raise FileNotFoundError(f"tokenizer {text!r}: no such directory. Pass a directory holding tokenizer.json "
                            "(e.g. a HuggingFace checkpoint) or a hub name such as bert-base-cased.")
  try:
    tokenizer = AutoTokenizer.from_pretrained(str(path) if path.is_dir() else text)
  except (OSError, ValueError) as err:
    if path.is_dir():
      raise ValueError(f"tokenizer directory {path} could not be loaded: {err}. It should hold tokenizer.json "
                       "(or vocab.txt) and tokenizer_config.json, as save_pretrained writes them.") from err
    raise FileNotFoundError(
        f"tokenizer {text!r} is not a local directory and could not be fetched from the HuggingFace hub "
        f"({type(err).__name__}: {err}). Without network access, download it elsewhere and pass its directory."
    ) from err
  if not isinstance(tokenizer, PreTrainedTokenizerFast):
    raise ValueError(f"tokenizer {text!r} loaded as {type(tokenizer).__name__}, a slow tokenizer without character "
                     "offsets; provide a tokenizer.json (any HuggingFace fast tokenizer)")
  disable_truncation(tokenizer)
  return tokenizer


def _load_remote_tokenizer(location):
  """`load_tokenizer` on a folder in a bucket: its files copied to a local folder, loaded, the copy removed."""
  if not location.is_dir():
    raise FileNotFoundError(f"tokenizer {storage.text(location)!r}: no such folder. Pass a folder holding "
                            "tokenizer.json (e.g. a prepared data dir's tokenizer/).")
  with storage.local_folder(location) as local:
    tokenizer = load_tokenizer(local)
  tokenizer.name_or_path = storage.text(location)  # where it came from, not the deleted copy
  return tokenizer


def save_tokenizer(tokenizer, out_dir) -> None:
  """`tokenizer.save_pretrained(out_dir)` for a local folder or a URL (saved to a local folder, then copied)."""
  out_dir = storage.path(out_dir)
  if storage.is_local(out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return
  storage.cache_root().mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix="tokenizer.", dir=storage.cache_root()) as local:
    tokenizer.save_pretrained(local)
    storage.copy_tree(pathlib.Path(local), out_dir)


def disable_truncation(tokenizer) -> None:
  """Switches off the truncation and padding a tokenizer.json may carry (in place): `encode` decides where to cut."""
  _switch_off_truncation(tokenizer.backend_tokenizer)


def _switch_off_truncation(backend) -> None:
  if backend.truncation is not None:
    backend.no_truncation()
  if backend.padding is not None:
    backend.no_padding()


def add_relation_tokens(tokenizer, labels: Sequence[str]) -> dict[str, str]:
  """Gives every relation label a token of its own, which the tagger reads after `[CLS]`.

  BERT vocabularies reserve `[unusedK]` tokens: the i-th label (in the given order) takes the i-th of them, with
  its existing id. Without enough of them, the labels get new tokens `[REL_i]` appended to the vocabulary (the
  model then resizes its embeddings to `len(tokenizer)`). Either way the tokens are registered as special tokens,
  so the tokenizer keeps each one whole (a fast tokenizer splits "[unused3]" into 4 pieces otherwise). Calling
  it again with the same labels changes nothing.

  Args:
    tokenizer: a fast tokenizer; modified in place.
    labels: the relation labels, in the order of their ids.

  Returns:
    label -> token string.

  Raises:
    ValueError: repeated labels, or a token that does not encode to exactly one id.
  """
  from tokenizers import AddedToken

  if len(set(labels)) != len(labels):
    raise ValueError(f"add_relation_tokens: repeated labels in {list(labels)}")
  vocab = tokenizer.get_vocab()
  unused = sorted((int(m.group(1)), token) for token in vocab if (m := _UNUSED.match(token)))
  if len(unused) >= len(labels):
    tokens = [token for _, token in unused[:len(labels)]]
  else:
    tokens = [f"[REL_{i}]" for i in range(len(labels))]
  # normalized=False: matched in the raw text, so a lowercasing normalizer cannot hide them.
  tokenizer.add_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
                        for t in tokens], special_tokens=True)
  mapping = dict(zip(labels, tokens))
  for label, token in mapping.items():
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
      raise ValueError(f"relation token {token!r} for label {label!r} encodes to {len(ids)} ids {ids}, not one")
  return mapping


def train_wordpiece(texts: Iterable[str], out_dir: str | pathlib.Path, vocab_size: int = 8000,
                    lowercase: bool = False):
  """Trains a BERT-style WordPiece vocabulary, for runs with no pretrained one (the demo corpus).

  BERT's normalizer, pre-tokenizer and `[CLS] .. [SEP]` post-processor; ids 0-4 are [PAD], [UNK], [CLS], [SEP],
  [MASK], then [unused0] .. [unused63] are reserved for relation tokens.

  Args:
    texts: the training sentences, read twice (a one-shot iterator is held in memory for that).
    out_dir: where the tokenizer is saved (`save_pretrained`), created if needed; may be a URL.
    vocab_size: the vocabulary size to aim for (fewer when the texts hold fewer distinct pieces).
    lowercase: lowercase (and strip accents), as uncased BERTs do.

  Returns:
    The saved tokenizer, loaded back with `load_tokenizer`.
  """
  from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
  from transformers import BertTokenizerFast

  reserved = list(SPECIAL_TOKENS) + [f"[unused{i}]" for i in range(NUM_RESERVED_UNUSED)]
  if vocab_size <= len(reserved):
    raise ValueError(f"train_wordpiece(vocab_size={vocab_size}): must exceed the {len(reserved)} reserved tokens")
  backend = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
  backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                  lowercase=lowercase)
  # Korean attaches particles to words ("새별제약은" = entity + "은"), so an entity often ends inside a
  # whitespace word. Training on isolated Hangul syllables keeps multi-syllable pieces out of the vocabulary;
  # with "##" twins of every syllable added below, encoding splits Hangul words into syllables and every
  # entity boundary falls on a token boundary.
  backend.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.BertPreTokenizer(), pre_tokenizers.Split(Regex(_HANGUL_SYLLABLE), behavior="isolated")])
  backend.decoder = decoders.WordPiece(prefix="##")
  if iter(texts) is texts:
    texts = list(texts)
  # The trainer numbers each continuation piece ("##a") when it first meets it, walking a hash map whose order
  # changes from process to process, and breaks ties between equally frequent merges by those numbers: on the demo
  # corpus 100 of the 6,282 vocabulary entries changed from run to run, and with them the trained model. Declared up
  # front in sorted order (as tokens it keeps anyway), they get the same numbers, and the merges the same order,
  # in every run.
  continuations = sorted({"##" + char for text in texts
                          for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))
                          for char in word[1:]})
  trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=reserved + continuations,
                                      show_progress=False, continuing_subword_prefix="##")
  backend.train_from_iterator(texts, trainer=trainer)
  # Ids in sorted order after the reserved ones: WordPiece encoding depends only on the set of pieces, and the
  # ids then depend on nothing else (not on the trainer's numbering, which a tokenizers release may change).
  learned = set(backend.get_vocab(with_added_tokens=True)) - set(reserved)
  learned |= {"##" + piece for piece in learned if re.fullmatch(_HANGUL_SYLLABLE, piece)}
  learned = sorted(learned)
  vocab = {token: i for i, token in enumerate(reserved + learned)}
  # BertTokenizerFast rebuilds the same normalizer, pre-tokenizer, decoder and post-processor from the vocabulary.
  tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=lowercase)
  out_dir = storage.path(out_dir)
  save_tokenizer(tokenizer, out_dir)
  return load_tokenizer(out_dir)


def tokenizer_fingerprint(tokenizer) -> str:
  """A sha256 hex digest of what decides the ids: model and vocabulary, added tokens, normalizer, pre-tokenizer.

  Truncation and padding settings are left out: they do not change which id a piece of text gets.
  """
  state = json.loads(tokenizer.backend_tokenizer.to_str())
  kept = {key: state.get(key) for key in ("model", "added_tokens", "normalizer", "pre_tokenizer")}
  kept["special_ids"] = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
  blob = json.dumps(kept, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def is_lowercase(tokenizer) -> bool:
  """Whether the tokenizer lowercases its input (an uncased model)."""
  if getattr(tokenizer, "do_lower_case", None) is not None:
    return bool(tokenizer.do_lower_case)
  state = json.loads(tokenizer.backend_tokenizer.to_str()).get("normalizer") or {}
  pending = [state]
  while pending:
    node = pending.pop()
    if node.get("type") == "Lowercase" or (node.get("type") == "BertNormalizer" and node.get("lowercase")):
      return True
    pending.extend(node.get("normalizers") or [])
  return False


def special_ids(tokenizer) -> tuple[int, int, int]:
  """(cls_id, sep_id, pad_id), with a clear error for a tokenizer that lacks one."""
  ids = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
  missing = [name for name, i in zip(("cls_token", "sep_token", "pad_token"), ids) if i is None]
  if missing:
    raise ValueError(f"tokenizer {tokenizer.name_or_path!r} defines no {', '.join(missing)}: HERBERTa needs "
                     "BERT-style [CLS]/[SEP]/[PAD] tokens")
  return ids


def encode(examples: Sequence[Example], tokenizer, max_seq_len: int,
           label_ids: Mapping[str, int]) -> list[Features]:
  """Tokenizes a batch of examples for the relation classifier (one multi-threaded call to the Rust tokenizer).

  `input_ids` is `[CLS] sentence [SEP]` with the sentence cut to `max_seq_len - 4` tokens (see the module
  docstring). An entity's start token is the first token overlapping its character span, its end token the last
  one (inclusive). An entity that truncation cuts, even partly, gets spans -1 and the row `truncated=True`; the
  row is kept. An entity no token covers (only characters the normalizer drops) also gets -1.

  Args:
    examples: the rows to encode.
    tokenizer: a fast tokenizer (`load_tokenizer`).
    max_seq_len: the longest model input, tagger input included.
    label_ids: label -> class id.

  Raises:
    ValueError: max_seq_len too small, or an example whose label is not in `label_ids`.
  """
  if max_seq_len < 8:
    raise ValueError(f"max_seq_len={max_seq_len}: must be at least 8 (4 special tokens plus the sentence)")
  cls_id, sep_id, _ = special_ids(tokenizer)
  backend = tokenizer.backend_tokenizer
  if backend.truncation is not None or backend.padding is not None:
    # A tokenizer.json (or an earlier call with truncation=True) may leave them set; work on a copy instead of
    # changing the caller's tokenizer.
    from tokenizers import Tokenizer
    backend = Tokenizer.from_str(backend.to_str())
    _switch_off_truncation(backend)
  limit = relation_input_limit(max_seq_len) - 2  # sentence tokens: [CLS] and [SEP] aside
  encodings = backend.encode_batch([example.text for example in examples], add_special_tokens=False)
  features = []
  for example, encoding in zip(examples, encodings):
    label = label_ids.get(example.label)
    if label is None:
      raise ValueError(f"{example.source or example.id}: label {example.label!r} is not among the "
                       f"{len(label_ids)} known labels")
    offsets = encoding.offsets
    spans = []
    truncated = False
    for char_start, char_end in (example.e1, example.e2):
      start, end = _token_span(offsets, char_start, char_end)
      if end >= limit:
        truncated = True
        start = end = -1
      elif start >= 0:
        start, end = start + 1, end + 1  # past [CLS]
      spans += (start, end)
    kept = offsets[:limit]
    features.append(Features(
        id=example.id, lang=example.lang, text=example.text, label=label,
        input_ids=(cls_id, *encoding.ids[:limit], sep_id),
        offsets=((0, 0), *kept, (0, 0)),
        spans=tuple(spans),
        char_spans=(example.e1[0], example.e1[1], example.e2[0], example.e2[1]),
        truncated=truncated))
  return features


def _token_span(offsets: Sequence[tuple[int, int]], char_start: int, char_end: int) -> tuple[int, int]:
  """(first, last) index of the tokens overlapping [char_start, char_end); (-1, -1) when none does."""
  first = last = -1
  for index, (start, end) in enumerate(offsets):
    if start >= char_end:
      break  # offsets never go backwards, so no later token overlaps
    if end > char_start:
      if first < 0:
        first = index
      last = index
  return first, last
