"""MetaCLIP concept matching and concept-balanced sampling (no Beam here).

The recipe (GLM-4.5V §3.1, step 3; MetaCLIP, Xu et al. 2023, §3.3):

1. Match every caption against a vocabulary of visual concepts and proper
   nouns with MetaCLIP's substring rule: the caption is padded with a space
   at each end, each of ``, . ; : ? !`` and the backtick gets a space on
   either side, tabs, newlines and carriage returns become spaces, and an
   entry matches where `` entry `` (the entry padded with one space on each
   side) occurs in that text. So ``cat`` matches "a cat." and "Cat" only with
   ``fold_case``, never "category"; multi-word entries match as written. As in
   the reference, entries are *not* re-spaced: an entry that itself contains
   one of the padded marks (``St. Louis``) can never match. Matching is
   case-sensitive, as in the reference, unless ``fold_case`` folds both sides.
   Each entry counts once per caption.
   Entries in a script written without spaces (any Han character or kana: Chinese, Japanese) cannot
   follow the space rule, since their captions have no word boundaries ("一只猫坐在沙发上"), so they
   match as plain substrings: ``猫`` matches that caption, and also ``熊猫`` (panda), as ``man``
   would match inside a longer name in English if it were spaced. Prefer two-character entries
   (``沙发``, ``熊猫``) where one character is ambiguous. Hangul is written with spaces and keeps the rule.
2. Count, over the whole dataset, how many pairs match each entry.
3. Keep a pair if any of its entries samples it, where an entry with count
   ``c`` samples with probability ``t / max(c, t)`` (t = 20,000 at MetaCLIP's
   400M scale): head entries are capped near ``t`` pairs, tail entries keep
   every pair. The draw for (pair, entry) is ``seeded_uniform(sample_id,
   entry)``, so a rerun keeps exactly the same pairs.

Caption tiers come from the rarity of the rarest matched entry (tail
concepts are harder): with ``c`` its dataset-wide count, ``c >= t`` is
`very_easy`, ``c >= t/10`` `easy`, ``c >= t/100`` `medium`, ``c >= t/1000``
`hard`, else `very_hard`; a kept pair that matched nothing is `medium`.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

import ahocorasick

from quarry.operators.base import Rejection
from quarry.operators.ids import seeded_uniform
from quarry.operators.inputs.opening import read_text
from quarry.operators.scripts import UNSPACED  # Han and kana entries match as plain substrings
from quarry.schemas.caption import BalanceConfig
from quarry.schemas.common import Tier

NO_CONCEPT_MATCH = "no_concept_match"
CONCEPT_DOWNSAMPLED = "concept_downsampled"
REASONS: tuple[str, ...] = (NO_CONCEPT_MATCH, CONCEPT_DOWNSAMPLED)

DEFAULT_T: int = BalanceConfig().t  # MetaCLIP's t (written once, in schemas/caption.py)
UNMATCHED_TIER = Tier.medium.value

# MetaCLIP's spacing rule: marks padded with spaces, line breaks and tabs to spaces.
_PADDED_MARKS = ",.;:?!`"
_TO_SPACE = "\t\n\r"
_SPACING = str.maketrans({**{m: f" {m} " for m in _PADDED_MARKS}, **{c: " " for c in _TO_SPACE}})

_DEFAULT_VOCABULARY = "data/vocabulary.txt"

PathLike = Union[str, os.PathLike]


class VocabularyError(ValueError):
    """The vocabulary file is missing, unreadable, malformed or empty."""


# --------------------------------------------------------------------------- vocabulary


def load_vocabulary(path: Optional[PathLike] = None) -> list[str]:
    """The vocabulary entries, in file order, stripped and without duplicates.

    `path` is a text file with one entry per line (blank lines and lines that
    start with ``#`` are skipped; an entry that starts with ``#`` needs the
    JSON form), or a file ending in ``.json`` that holds a JSON list of
    strings (MetaCLIP's ``metadata.json``). `None` loads the small default
    vocabulary shipped with quarry. Local paths only (read before the
    pipeline starts). Raises `VocabularyError` with the path in the message.
    """
    if path is None:
        resource = importlib.resources.files("quarry.operators").joinpath(_DEFAULT_VOCABULARY)
        where = f"default vocabulary (quarry.operators/{_DEFAULT_VOCABULARY})"
        try:
            text = resource.read_text(encoding="utf-8")
        except OSError as e:  # a broken install
            raise VocabularyError(f"cannot read the {where}: {e}") from e
        entries = _parse_text(text)
    else:
        path = str(path)
        where = f"vocabulary file {path!r}"
        if "://" not in path and not Path(path).is_file():
            raise VocabularyError(f"{where} does not exist or is not a file")
        try:
            text = read_text(path, 1 << 30, "utf-8-sig")  # any Beam path (gs:// for remote workers)
        except (OSError, ValueError) as e:
            raise VocabularyError(f"cannot read {where}: {e}") from e
        entries = _parse_json(text, where) if path.lower().endswith(".json") else _parse_text(text)
    if not entries:
        raise VocabularyError(f"{where} has no entries")
    return entries


def _parse_text(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return _unique(line for line in lines if line and not line.startswith("#"))


def _parse_json(text: str, where: str) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise VocabularyError(f"{where} is not valid JSON: {e}") from e
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise VocabularyError(f"{where} must be a JSON list of strings (MetaCLIP's metadata.json)")
    return _unique(s for s in (x.strip() for x in data) if s)


def _unique(entries: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(entries))


# --------------------------------------------------------------------------- matching


def spacing(caption: str) -> str:
    """MetaCLIP's normalisation of a caption before substring matching."""
    return f" {caption} ".translate(_SPACING)


class ConceptMatcher:
    """Finds the vocabulary entries a caption mentions (MetaCLIP's rule).

    The Aho-Corasick automaton is built by `load()` (or on the first
    `match`), and is left out of the pickled state, so the matcher ships
    cheaply to workers and each worker builds it once.
    """

    def __init__(self, entries: Iterable[str], fold_case: bool = False) -> None:
        self.entries: tuple[str, ...] = tuple(_unique(entries))
        if not self.entries:
            raise ValueError("ConceptMatcher needs at least one vocabulary entry")
        for e in self.entries:
            if not isinstance(e, str) or not e.strip():
                raise ValueError(f"vocabulary entries must be non-blank strings, got {e!r}")
        self.fold_case = bool(fold_case)
        self._automaton: Optional[ahocorasick.Automaton] = None

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_automaton"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def loaded(self) -> bool:
        return self._automaton is not None

    def _key(self, text: str) -> str:
        return text.casefold() if self.fold_case else text

    def load(self) -> "ConceptMatcher":
        """Build the automaton (idempotent); returns self."""
        if self._automaton is None:
            # key -> every original spelling with that key (several when case is folded)
            spellings: dict[str, list[str]] = {}
            for entry in self.entries:
                key = self._key(entry)
                spellings.setdefault(key if UNSPACED.search(entry) else f" {key} ", []).append(entry)
            automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
            for key, originals in spellings.items():
                automaton.add_word(key, tuple(originals))
            automaton.make_automaton()
            self._automaton = automaton
        return self

    def match(self, caption: str) -> list[str]:
        """The entries `caption` matches: sorted, unique, in the vocabulary's spelling."""
        automaton = self.load()._automaton
        found: set[str] = set()
        for _end, originals in automaton.iter(self._key(spacing(caption))):
            found.update(originals)
        return sorted(found)


# --------------------------------------------------------------------------- sampling and tiers


def sample_probability(count: int, t: int = DEFAULT_T) -> float:
    """MetaCLIP's per-entry sampling probability: ``t / max(count, t)``."""
    if t < 1:
        raise ValueError(f"t must be >= 1, got {t}")
    return t / max(count, t)


def _count(entry: str, counts: Mapping[str, int]) -> int:
    try:
        return counts[entry]
    except KeyError:
        raise KeyError(f"matched entry {entry!r} has no dataset-wide count") from None


def keep_pair(sample_id: str, matched: Iterable[str], counts: Mapping[str, int], t: int = DEFAULT_T) -> bool:
    """True if any matched entry samples the pair (False when nothing matched).

    Entry `e` samples pair `sample_id` when ``seeded_uniform(sample_id, e) <
    t / max(counts[e], t)``; an entry at or under `t` always samples.
    """
    return any(
        seeded_uniform(sample_id, entry) < sample_probability(_count(entry, counts), t) for entry in matched
    )


def rarest(matched: Iterable[str], counts: Mapping[str, int]) -> Optional[tuple[str, int]]:
    """The matched entry with the smallest dataset-wide count (ties: first by name), or None."""
    pairs = [(_count(e, counts), e) for e in matched]
    if not pairs:
        return None
    c, e = min(pairs)
    return e, c


def balance_verdict(
    sample_id: str,
    matched: Sequence[str],
    counts: Mapping[str, int],
    t: int = DEFAULT_T,
    keep_unmatched: bool = False,
) -> Optional[Rejection]:
    """None to keep the pair, else a `Rejection` (`no_concept_match` / `concept_downsampled`)."""
    if not matched:
        if keep_unmatched:
            return None
        return Rejection(NO_CONCEPT_MATCH, "caption matches no vocabulary entry")
    if keep_pair(sample_id, matched, counts, t):
        return None
    entry, c = rarest(matched, counts)  # type: ignore[misc]  # matched is non-empty
    return Rejection(
        CONCEPT_DOWNSAMPLED,
        f"sampled out by all {len(matched)} matched entries; rarest {entry!r} "
        f"matched {c} pairs (p={sample_probability(c, t):.3g}, t={t})",
    )


def tier_thresholds(t: int = DEFAULT_T, tier_counts: Optional[Sequence[float]] = None) -> tuple[float, ...]:
    """Minimum rarest-entry counts for very_easy, easy, medium and hard (below: very_hard).

    Default: t, t/10, t/100, t/1000 (head concepts easy, tail concepts hard).
    """
    if t < 1:
        raise ValueError(f"t must be >= 1, got {t}")
    if tier_counts is None:
        return (t, t / 10, t / 100, t / 1000)
    if len(tier_counts) != 4 or list(tier_counts) != sorted(tier_counts, reverse=True):
        raise ValueError(f"tier_counts must be 4 descending counts, got {list(tier_counts)}")
    return tuple(tier_counts)


def tier_for_count(count: Optional[int], t: int = DEFAULT_T, tier_counts: Optional[Sequence[float]] = None) -> str:
    """The caption tier for the rarest matched entry's count (None: nothing matched)."""
    limits = tier_thresholds(t, tier_counts)
    if count is None:
        return UNMATCHED_TIER
    for tier, limit in zip((Tier.very_easy, Tier.easy, Tier.medium, Tier.hard), limits):
        if count >= limit:
            return tier.value
    return Tier.very_hard.value


def caption_tier(matched: Iterable[str], counts: Mapping[str, int], t: int = DEFAULT_T,
                 tier_counts: Optional[Sequence[float]] = None) -> str:
    """Tier of a pair from the rarity of its rarest matched entry (tail concepts are harder)."""
    r = rarest(matched, counts)
    return tier_for_count(None if r is None else r[1], t, tier_counts)
