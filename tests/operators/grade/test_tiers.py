"""Pass@k, per-model tallies, the tier rule, labels and the summary: plain function calls."""

from __future__ import annotations

from math import comb

import pytest

from quarry.operators.grade import tiers
from quarry.operators.grade.tiers import SampleTally, TierRule, pass_at_k


@pytest.mark.parametrize("n,c,k", [(10, 3, 1), (10, 3, 2), (10, 3, 5), (20, 1, 10), (7, 0, 3), (7, 7, 3),
                                   (100, 37, 10), (5, 4, 2)])
def test_pass_at_k_matches_the_binomial_formula(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_1_is_the_mean_and_edge_cases():
    assert pass_at_k(8, 6, 1) == pytest.approx(0.75)
    assert pass_at_k(0, 0, 1) == 0.0
    assert pass_at_k(3, 1, 10) == 1.0  # k capped at n: pass@3 with one correct
    assert pass_at_k(3, 0, 10) == 0.0
    assert pass_at_k(10_000, 1, 1) == pytest.approx(1e-4)
    for bad in ((3, 4, 1), (-1, 0, 1), (3, 1, 0)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_tier_rule_defaults_and_boundaries():
    rule = TierRule()
    assert [rule.tier(p) for p in (1.0, 0.999, 0.75, 0.74, 0.25, 0.2499, 1e-9, 0.0)] == [
        "very_easy", "easy", "easy", "medium", "medium", "hard", "hard", "very_hard"]
    assert rule.tier(1 - 1e-15) == "very_easy"  # float noise from the pass@k product
    assert tiers.tier_for(0.5) == "medium"
    custom = TierRule(very_easy_at=0.9, easy_at=0.8, medium_at=0.5, hard_above=0.1)
    assert [custom.tier(p) for p in (0.95, 0.85, 0.6, 0.2, 0.1)] == ["very_easy", "easy", "medium", "hard", "very_hard"]
    with pytest.raises(ValueError):
        TierRule(easy_at=0.2, medium_at=0.5)


def test_tallies_merge_models_by_mean_pass_rate():
    t = SampleTally(correct_at=0.999)
    for r in (1.0, 1.0, 1.0, 1.0):
        t.add("a", r)
    for r in (1.0, 0.0):
        t.add("b", r)
    t.add("b", 0.9)  # a partial OCR reward is not correct
    per = tiers.model_pass_rates(t)
    assert per == [{"model": "a", "n": 4, "correct": 4, "pass_rate": 1.0},
                   {"model": "b", "n": 3, "correct": 1, "pass_rate": pytest.approx(1 / 3)}]
    assert tiers.merged_pass_rate(per) == pytest.approx((1 + 1 / 3) / 2)  # each model weighs the same
    assert (t.n, t.correct) == (7, 5) and t.reward_sum == pytest.approx(5.9)
    assert tiers.merged_pass_rate([]) == 0.0


def test_labels_override_and_are_validated():
    assert tiers.final_tier("easy", None) == "easy"
    assert tiers.final_tier("easy", "very_hard") == "very_hard"
    assert tiers.normalise_label(" Very-Hard ") == "very_hard"
    assert tiers.normalise_label("") is None and tiers.normalise_label(None) is None
    assert isinstance(tiers.normalise_label("trivial"), ValueError)
    assert isinstance(tiers.normalise_label(3), ValueError)


def test_summary_counts_and_weighted_share():
    s = tiers.summarize([("a", "math", "easy", 10), ("a", "ocr", "very_easy", 5), ("b", "math", "easy", 2)],
                        tiers.DEFAULT_WEIGHTS)
    assert s["tier_counts"]["total"]["easy"] == 12
    assert s["tier_counts"]["by_source"]["a"] == {"very_easy": 5, "easy": 10, "medium": 0, "hard": 0, "very_hard": 0}
    assert s["tier_counts"]["by_task"]["math"]["easy"] == 12
    assert s["tier_counts"]["by_source_task"]["b/math"]["easy"] == 2
    mass = {"easy": 12 * 0.6, "very_easy": 5 * 0.2}
    assert s["weighted_share"]["easy"] == pytest.approx(mass["easy"] / sum(mass.values()), abs=1e-6)
    assert tiers.summarize([], tiers.DEFAULT_WEIGHTS)["weighted_share"]["medium"] == 0.0
