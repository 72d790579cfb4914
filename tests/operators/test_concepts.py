"""quarry.operators.concepts: MetaCLIP matching, sampling, tiers, vocabulary loading."""

from __future__ import annotations

import json
import pickle

import pytest

from quarry.operators.base import Rejection
from quarry.operators.concepts import (
    CONCEPT_DOWNSAMPLED,
    NO_CONCEPT_MATCH,
    ConceptMatcher,
    VocabularyError,
    balance_verdict,
    caption_tier,
    keep_pair,
    load_vocabulary,
    rarest,
    sample_probability,
    spacing,
    tier_for_count,
)
from quarry.operators.ids import seeded_uniform
from quarry.schemas.common import TIERS

VOCAB = ["cat", "dog", "hot dog", "New York", "red car", "ice cream", "Paris", "a"]

# (caption, expected matches) with fold_case=False
MATCH_CASES = [
    ("a cat", ["a", "cat"]),
    ("cat", ["cat"]),  # the whole caption: padded at both ends
    ("cat on a mat", ["a", "cat"]),  # start of caption
    ("look at the cat", ["cat"]),  # end of caption
    ("the category of things", []),  # no match inside a word
    ("a bobcat", ["a"]),
    ("concatenate", []),
    ("cats", []),  # MetaCLIP does not stem
    ("cat, dog", ["cat", "dog"]),
    ("cat.dog", ["cat", "dog"]),
    ("the cat;", ["cat"]),
    ("the cat:", ["cat"]),
    ("the cat?", ["cat"]),
    ("the cat!", ["cat"]),
    ("`cat`", ["cat"]),  # backtick is padded
    ("(cat)", []),  # brackets are not padded in MetaCLIP's rule
    ('"cat"', []),  # nor are quotes
    ("cat's toy", []),  # nor apostrophes
    ("cat-like", []),  # nor hyphens
    ("the\tcat", ["cat"]),
    ("the\ncat\nsleeps", ["cat"]),
    ("the\r\ncat", ["cat"]),
    ("a hot dog stand", ["a", "dog", "hot dog"]),  # multi-word, and its words
    ("hot  dog", ["dog"]),  # entries match as written: two spaces are not one (as in the reference)
    ("New York at night", ["New York"]),
    ("sunset in New York", ["New York"]),
    ("New York.", ["New York"]),
    ("new york", []),  # case-sensitive
    ("CAT", []),
    ("Cat", []),
    ("a red car", ["a", "red car"]),
    ("ice cream, cat and dog", ["cat", "dog", "ice cream"]),
    ("cat cat cat", ["cat"]),  # unique
    ("", []),
    ("Paris,France", ["Paris"]),
]


@pytest.fixture(scope="module")
def matcher() -> ConceptMatcher:
    return ConceptMatcher(VOCAB)


@pytest.mark.parametrize("caption,expected", MATCH_CASES)
def test_match_metaclip_rule(matcher, caption, expected):
    assert matcher.match(caption) == expected


FOLD_CASES = [
    ("CAT", ["cat"]),
    ("Cat sat", ["cat"]),
    ("new york", ["New York"]),  # returned in the vocabulary's spelling
    ("NEW YORK!", ["New York"]),
    ("A Category", ["a"]),
    ("PARIS", ["Paris"]),
]


@pytest.mark.parametrize("caption,expected", FOLD_CASES)
def test_match_fold_case(caption, expected):
    assert ConceptMatcher(VOCAB, fold_case=True).match(caption) == expected


def test_han_and_kana_entries_match_as_substrings_others_keep_the_space_rule():
    m = ConceptMatcher(["猫", "沙发", "熊猫", "タワー", "cat", "밤"])
    assert m.match("一只黑猫坐在红色的沙发上。") == ["沙发", "猫"]
    assert m.match("两只熊猫") == ["熊猫", "猫"]  # as "black cat" and "cat" both match in English
    assert m.match("東京タワーの夜景") == ["タワー"]
    assert m.match("category 서울의밤") == []  # Latin and Hangul still need spaces around the entry
    assert m.match("서울의 밤") == ["밤"]


def test_default_vocabulary_matches_chinese_captions():
    m = ConceptMatcher(load_vocabulary())
    assert {"猫", "沙发"} <= set(m.match("一只黑猫坐在红色的沙发上"))
    assert {"城市", "高楼", "街道"} <= set(m.match("城市的夜景，高楼和街道"))


def test_fold_case_keeps_every_spelling():
    m = ConceptMatcher(["US", "us", "Apple", "apple"], fold_case=True)
    assert m.match("apple for us") == ["Apple", "US", "apple", "us"]
    exact = ConceptMatcher(["US", "us", "Apple", "apple"])
    assert exact.match("apple for us") == ["apple", "us"]


def test_spacing_is_metaclips():
    assert spacing("a,b") == " a , b "
    assert spacing("x\ty\nz") == " x y z "
    assert spacing("`q`") == "  ` q `  "


def test_entries_with_padded_marks_never_match():
    # as in the reference: entries are not re-spaced
    assert ConceptMatcher(["St. Louis"]).match("St. Louis") == []


def test_matcher_is_lazy_and_pickles_without_automaton(matcher):
    fresh = ConceptMatcher(VOCAB)
    assert not fresh.loaded
    fresh.match("a cat")
    assert fresh.loaded
    blob = pickle.dumps(fresh)
    clone = pickle.loads(blob)
    assert not clone.loaded
    assert clone.match("hot dog") == ["dog", "hot dog"]
    assert clone.fold_case is False and clone.entries == fresh.entries
    assert len(blob) < 1000


def test_matcher_validates():
    with pytest.raises(ValueError):
        ConceptMatcher([])
    with pytest.raises(ValueError):
        ConceptMatcher(["cat", "  "])
    assert ConceptMatcher(["cat", "cat", "dog"]).entries == ("cat", "dog")


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    "count,t,p",
    [(0, 20, 1.0), (1, 20, 1.0), (20, 20, 1.0), (40, 20, 0.5), (200, 20, 0.1), (20_000, 20_000, 1.0), (80_000, 20_000, 0.25)],
)
def test_sample_probability(count, t, p):
    assert sample_probability(count, t) == pytest.approx(p)


def test_sample_probability_rejects_bad_t():
    with pytest.raises(ValueError):
        sample_probability(5, 0)


def test_keep_pair_tail_always_kept():
    counts = {"cat": 5, "dog": 10_000}
    assert all(keep_pair(f"id{i}", ["cat"], counts, t=20) for i in range(200))
    # a tail entry rescues a pair whose head entry samples it out
    assert all(keep_pair(f"id{i}", ["cat", "dog"], counts, t=20) for i in range(200))


def test_keep_pair_is_seeded_and_matches_the_rule():
    counts = {"dog": 1000}
    ids = [f"sample-{i}" for i in range(2000)]
    first = [keep_pair(i, ["dog"], counts, t=100) for i in ids]
    assert first == [keep_pair(i, ["dog"], counts, t=100) for i in ids]  # reruns agree
    assert first == [seeded_uniform(i, "dog") < 0.1 for i in ids]
    assert 150 <= sum(first) <= 250  # ~ t/count * n = 200


def test_keep_pair_any_entry():
    counts = {"dog": 10_000, "cat": 10_000}
    t = 100
    for i in range(500):
        sid = f"x{i}"
        expected = seeded_uniform(sid, "dog") < 0.01 or seeded_uniform(sid, "cat") < 0.01
        assert keep_pair(sid, ["dog", "cat"], counts, t) == expected


def test_keep_pair_nothing_matched():
    assert keep_pair("x", [], {}, t=20) is False


def test_keep_pair_missing_count_is_an_error():
    with pytest.raises(KeyError, match="cat"):
        keep_pair("x", ["cat"], {}, t=20)


def test_balance_verdict():
    counts = {"dog": 10**9, "cat": 3}
    assert balance_verdict("x", ["cat"], counts, t=20) is None
    rej = balance_verdict("x", [], counts, t=20)
    assert isinstance(rej, Rejection) and rej.reason == NO_CONCEPT_MATCH
    assert balance_verdict("x", [], counts, t=20, keep_unmatched=True) is None
    # p = 2e-8: sampled out for every id we try
    rej = balance_verdict("x", ["dog"], counts, t=20)
    assert rej is not None and rej.reason == CONCEPT_DOWNSAMPLED
    assert "'dog'" in rej.detail and "1000000000" in rej.detail


# --------------------------------------------------------------------------- tiers


@pytest.mark.parametrize(
    "count,tier",
    [
        (None, "medium"),
        (20_000, "very_easy"),
        (1_000_000, "very_easy"),
        (19_999, "easy"),
        (2_000, "easy"),
        (1_999, "medium"),
        (200, "medium"),
        (199, "hard"),
        (20, "hard"),
        (19, "very_hard"),
        (1, "very_hard"),
    ],
)
def test_tier_for_count(count, tier):
    assert tier_for_count(count, 20_000) == tier
    assert tier in TIERS


def test_tier_small_t_uses_fractional_thresholds():
    # t=50: 50 / 5 / 0.5 / 0.05
    assert [tier_for_count(c, 50) for c in (50, 49, 5, 4, 1)] == ["very_easy", "easy", "easy", "medium", "medium"]


def test_caption_tier_uses_the_rarest_entry():
    counts = {"dog": 50_000, "axolotl": 3, "cat": 5_000}
    assert caption_tier(["dog"], counts, 20_000) == "very_easy"
    assert caption_tier(["dog", "cat"], counts, 20_000) == "easy"
    assert caption_tier(["dog", "cat", "axolotl"], counts, 20_000) == "very_hard"
    assert caption_tier([], counts, 20_000) == "medium"
    assert rarest(["dog", "axolotl"], counts) == ("axolotl", 3)
    assert rarest([], counts) is None


# --------------------------------------------------------------------------- vocabulary files


def test_load_text_vocabulary(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_text("# comment\ncat\n\n  dog  \nhot dog\ncat\n# another\nNew York\n", encoding="utf-8")
    assert load_vocabulary(p) == ["cat", "dog", "hot dog", "New York"]
    assert load_vocabulary(str(p)) == ["cat", "dog", "hot dog", "New York"]


def test_load_text_vocabulary_with_bom(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_bytes("\ufeffcat\ndog\n".encode("utf-8"))
    assert load_vocabulary(p) == ["cat", "dog"]


def test_load_metadata_json(tmp_path):
    p = tmp_path / "metadata.json"
    p.write_text(json.dumps(["cat", "#hashtag", "dog", "", "cat", " ice cream "]), encoding="utf-8")
    assert load_vocabulary(p) == ["cat", "#hashtag", "dog", "ice cream"]


@pytest.mark.parametrize("content", ['{"cat": 1}', "[1, 2]", "not json"])
def test_load_bad_metadata_json(tmp_path, content):
    p = tmp_path / "metadata.json"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(VocabularyError, match="metadata.json"):
        load_vocabulary(p)


def test_load_missing_vocabulary(tmp_path):
    with pytest.raises(VocabularyError, match="does not exist"):
        load_vocabulary(tmp_path / "nope.txt")
    with pytest.raises(VocabularyError):
        load_vocabulary(tmp_path)  # a directory


@pytest.mark.parametrize("name,content", [("empty.txt", ""), ("comments.txt", "# only\n\n  \n"), ("empty.json", "[]")])
def test_load_empty_vocabulary(tmp_path, name, content):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    with pytest.raises(VocabularyError, match="no entries"):
        load_vocabulary(p)


def test_default_vocabulary():
    vocab = load_vocabulary()
    assert 300 <= len(vocab) <= 2000
    assert len(vocab) == len(set(vocab))
    for entry in ("cat", "dog", "Eiffel Tower", "New York", "pizza", "red car"):
        assert entry in vocab
    # none can be unmatchable under MetaCLIP's rule
    assert not [e for e in vocab if any(c in e for c in ",.;:?!`\t")]
    m = ConceptMatcher(vocab)
    assert m.match("A dog and a cat in front of the Eiffel Tower.") == ["Eiffel Tower", "cat", "dog"]
