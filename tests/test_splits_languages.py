"""Dev carving (stratified, deterministic, order-keeping), language groups and mixture weights."""

import collections
import math

import pytest

from herberta_jax.data import languages, splits
from herberta_jax.data.example import Example


def make_examples(counts: dict) -> list:
  examples = []
  for label, n in counts.items():
    for i in range(n):
      examples.append(Example(id=f"{label}-{i}", text="a b", e1=(0, 1), e2=(2, 3), label=label, lang="en"))
  # Interleave labels so order preservation is visible.
  return sorted(examples, key=lambda ex: (int(ex.id.rsplit("-", 1)[1]), ex.label))


def test_carve_dev_is_stratified_by_label():
  examples = make_examples({"a": 100, "b": 40, "c": 3, "d": 2, "e": 1})
  train, dev = splits.carve_dev(examples, 0.05, seed=0)
  per_label = collections.Counter(ex.label for ex in dev)
  assert per_label == {"a": 5, "b": 2, "c": 1, "d": 1}
  assert sorted(ex.id for ex in train + dev) == sorted(ex.id for ex in examples)
  assert not {ex.id for ex in train} & {ex.id for ex in dev}


@pytest.mark.parametrize("n,fraction,expected", [
    (100, 0.02, 2), (10, 0.25, 3), (10, 0.05, 1), (2, 0.02, 1), (2, 0.9, 1), (1, 0.5, 0), (50, 0.0, 0)])
def test_dev_count_rule(n, fraction, expected):
  assert splits.dev_count(n, fraction) == expected


def test_carve_dev_is_deterministic_and_keeps_order():
  examples = make_examples({"a": 200, "b": 150})
  train, dev = splits.carve_dev(examples, 0.1, seed=3)
  again = splits.carve_dev(examples, 0.1, seed=3)
  assert (train, dev) == again
  other = splits.carve_dev(examples, 0.1, seed=4)
  assert {ex.id for ex in other[1]} != {ex.id for ex in dev}
  position = {ex.id: i for i, ex in enumerate(examples)}
  assert [position[ex.id] for ex in train] == sorted(position[ex.id] for ex in train)
  assert [position[ex.id] for ex in dev] == sorted(position[ex.id] for ex in dev)


def test_carve_dev_rejects_a_bad_fraction():
  examples = make_examples({"a": 5})
  assert splits.carve_dev(examples, 0.0, seed=0) == (examples, [])
  for bad in (-0.1, 1.0, 2):
    with pytest.raises(ValueError, match="fraction"):
      splits.carve_dev(examples, bad, seed=0)


def test_language_groups():
  euro = ["it", "fr", "pt", "de", "es", "en"]
  svo = euro + ["ru", "sv", "nl", "pl", "uk"]
  all_languages = svo + ["ar", "ko", "fa"]
  assert languages.resolve_languages("EURO") == euro
  assert languages.resolve_languages("svo") == svo
  assert languages.resolve_languages("ALL") == all_languages
  assert languages.resolve_languages("ALL-EN") == all_languages
  assert languages.resolve_languages("all-en_s") == [("en-small" if x == "en" else x) for x in all_languages]
  assert set(all_languages) | {"en-small", "en-full"} == set(languages.SMILER_LANGUAGES)


@pytest.mark.parametrize("spec,expected", [
    ("EN", ["en"]), ("EN_S", ["en-small"]), ("en-small", ["en-small"]), ("EN-FULL", ["en-full"]),
    ("ko", ["ko"]), ("KO+EN", ["ko", "en"]), ("ko-en", ["ko", "en"]), ("ko+en_s", ["ko", "en-small"]),
    ("de,fr", ["de", "fr"]), (" DE , fr, de ", ["de", "fr"]), ("ko,EURO", ["ko", "it", "fr", "pt", "de", "es", "en"]),
])
def test_resolve_languages(spec, expected):
  assert languages.resolve_languages(spec) == expected


@pytest.mark.parametrize("spec", ["xx", "EURO2", "ko+de", "", " , "])
def test_resolve_languages_lists_the_options(spec):
  with pytest.raises(ValueError, match="EURO, SVO, ALL") as info:
    languages.resolve_languages(spec)
  assert "KO" in str(info.value).upper() and "EN_S" in str(info.value)


def test_mixture_weights():
  counts = {"en": 900, "ko": 100, "de": 0}
  assert languages.mixture_weights(counts, "proportional") == pytest.approx({"en": 0.9, "ko": 0.1, "de": 0.0})
  assert languages.mixture_weights(counts, "uniform") == pytest.approx({"en": 0.5, "ko": 0.5, "de": 0.0})
  assert languages.mixture_weights(counts, "temperature", 1.0) == pytest.approx(
      languages.mixture_weights(counts, "proportional"))
  assert languages.mixture_weights(counts, "temperature", 2.0) == pytest.approx({"en": 0.75, "ko": 0.25, "de": 0})
  flat = languages.mixture_weights(counts, "temperature", 1000.0)
  assert flat["en"] == pytest.approx(0.5, abs=0.01)
  sharp = languages.mixture_weights({"en": 10**9, "ko": 10**8}, "temperature", 0.01)  # no overflow
  assert sharp["en"] == pytest.approx(1.0) and math.isfinite(sharp["ko"])
  for mode in languages.MIXTURE_MODES:
    assert sum(languages.mixture_weights(counts, mode, 3.0).values()) == pytest.approx(1.0)


@pytest.mark.parametrize("counts,mode,temperature,match", [
    ({"en": 1}, "random", 1.0, "mixture mode 'random'"),
    ({"en": 1}, "temperature", 0.0, "temperature 0.0"),
    ({"en": -1}, "uniform", 1.0, "negative"),
    ({"en": 0}, "uniform", 1.0, "no rows"),
    ({}, "proportional", 1.0, "no rows"),
])
def test_mixture_weights_errors(counts, mode, temperature, match):
  with pytest.raises(ValueError, match=match):
    languages.mixture_weights(counts, mode, temperature)
