"""The paper's language groups, and how much of each language a training batch takes.

SMiLER names its files by language; English comes in three sizes: `en-full`, `en` (the paper's EN-mid) and
`en-small`. The paper trains on groups: EURO (European SVO languages), SVO (all SVO languages) and ALL, whose
English part is EN-mid ("ALL-EN") or EN-small ("ALL-EN_S"); single languages, alone or joined with EN-mid
("KO+EN").
"""

from __future__ import annotations

import math
from collections.abc import Mapping

SMILER_LANGUAGES = ("en-full", "en", "en-small", "ko", "it", "fr", "de", "pt", "nl", "pl", "es", "ar", "ru", "sv",
                    "fa", "uk")

EURO = ("it", "fr", "pt", "de", "es", "en")
SVO = EURO + ("ru", "sv", "nl", "pl", "uk")
ALL = SVO + ("ar", "ko", "fa")
GROUPS = {"euro": EURO, "svo": SVO, "all": ALL}

# Other spellings of the English variants (the paper writes EN_S; EN-mid is the file language "en").
_ENGLISH = {"en": "en", "en-mid": "en", "en_mid": "en", "en_s": "en-small", "en-s": "en-small",
            "en_small": "en-small", "en-small": "en-small", "en_full": "en-full", "en-full": "en-full"}

MIXTURE_MODES = ("proportional", "uniform", "temperature")


def _valid_options() -> str:
  return ("groups EURO, SVO, ALL (their English is EN-mid), GROUP-EN (the same), GROUP-EN_S (English as "
          "EN-small), e.g. ALL-EN_S; English EN, EN_S, EN-FULL; languages " + ", ".join(SMILER_LANGUAGES) +
          "; a language with EN-mid as LANG+EN or LANG-EN (LANG+EN_S for EN-small); comma lists like 'de,fr'")


def _resolve_item(item: str) -> list[str] | None:
  if item in _ENGLISH:
    return [_ENGLISH[item]]
  if item in SMILER_LANGUAGES:
    return [item]
  if item in GROUPS:
    return list(GROUPS[item])
  for joiner in ("+", "-"):
    head, sep, tail = item.partition(joiner)
    if not sep or tail not in _ENGLISH:
      continue
    english = _ENGLISH[tail]
    if head in GROUPS:  # ALL-EN, EURO-EN_S: the group with that English variant in place of EN-mid
      return [english if lang == "en" else lang for lang in GROUPS[head]]
    if head in SMILER_LANGUAGES or head in _ENGLISH:  # KO+EN, ko-en
      return [_ENGLISH.get(head, head), english]
  return None


def resolve_languages(spec: str) -> list[str]:
  """The SMiLER file languages a spec names, in group order, without repeats.

  Case-insensitive. Examples: "EURO", "SVO", "ALL", "ALL-EN" (= ALL), "ALL-EN_S" (ALL with EN-small as English),
  "EN", "EN_S", "ko", "KO+EN" / "ko-en" (-> ["ko", "en"]), "de,fr".

  Raises:
    ValueError: an empty spec or an item that names no language; the message lists the valid options.
  """
  items = [item.strip().lower() for item in spec.split(",")]
  if not any(items):
    raise ValueError(f"empty language spec {spec!r}: use {_valid_options()}")
  languages: dict[str, None] = {}
  for item in items:
    if not item:
      continue
    resolved = _resolve_item(item)
    if resolved is None:
      raise ValueError(f"unknown language spec {item!r} in {spec!r}: use {_valid_options()}")
    for lang in resolved:
      languages.setdefault(lang, None)
  return list(languages)


def mixture_weights(counts: Mapping[str, int], mode: str, temperature: float = 1.0) -> dict[str, float]:
  """Sampling weight of each language in a training batch; the weights sum to 1.

  Modes: "proportional" (n_i / sum n), "uniform" (equal), "temperature" (n_i^(1/T), normalised: T=1 is
  proportional, larger T flattens towards uniform). A language with no rows gets weight 0 in every mode.

  Raises:
    ValueError: an unknown mode, a temperature <= 0, a negative count, or no rows at all.
  """
  if mode not in MIXTURE_MODES:
    raise ValueError(f"mixture mode {mode!r}: use one of {', '.join(MIXTURE_MODES)}")
  if mode == "temperature" and not temperature > 0:
    raise ValueError(f"mixture temperature {temperature}: use a value > 0 (1 = proportional)")
  negative = {lang: n for lang, n in counts.items() if n < 0}
  if negative:
    raise ValueError(f"negative row counts {negative}")
  present = [lang for lang, n in counts.items() if n > 0]
  if not present:
    raise ValueError(f"no rows in any language ({dict(counts)}): nothing to mix")
  if mode == "uniform":
    raw = {lang: 1.0 for lang in present}
  elif mode == "proportional":
    raw = {lang: float(counts[lang]) for lang in present}
  else:
    # In log space relative to the largest count, so big counts with a small T do not overflow.
    top = max(math.log(counts[lang]) for lang in present)
    raw = {lang: math.exp((math.log(counts[lang]) - top) / temperature) for lang in present}
  total = sum(raw.values())
  return {lang: raw.get(lang, 0.0) / total for lang in counts}
