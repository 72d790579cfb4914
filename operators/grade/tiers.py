"""Difficulty tiers from rollouts (GLM-4.5V §5): pass@k, pass rates, the tier rule, sampling weights.

Plain functions, no Beam. Used by `pipelines/grade.py` and by the bare-loop
side of `benchmarks/bench_grade.py`.

Rule (defaults, all configurable in `grade.tiers`):

- per (sample, model): n rollouts, c correct (reward >= `grade.correct_at`),
  pass rate = the unbiased pass@k estimator 1 - C(n-c, k) / C(n, k) (Chen et
  al. 2021, "Codex"), with k = min(`grade.k`, n) (a model with fewer than k
  rollouts is scored at pass@n); k = 1 is the plain mean c / n;
- per sample: the mean of the per-model pass rates (each model weighs the
  same, however many rollouts it made);
- tier: pass rate >= very_easy_at (1.0) very_easy, >= easy_at (0.75) easy,
  >= medium_at (0.25) medium, > hard_above (0.0) hard, else very_hard;
- an offline human `label_tier` replaces the computed tier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from quarry.schemas.grade import GradeSection, TierBounds

_K, _BOUNDS = GradeSection().k, TierBounds()  # the defaults, written once in schemas/grade.py

TIER_ORDER = ("very_easy", "easy", "medium", "hard", "very_hard")

DEFAULT_WEIGHTS: dict[str, float] = {
    "very_easy": 0.2, "easy": 0.6, "medium": 1.0, "hard": 1.0, "very_hard": 0.3,
}


def pass_at_k(n: int, c: int, k: int = _K) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k).

    k is capped at n (pass@n when fewer than k rollouts exist); n == 0 is 0.0.
    Computed as a running product, so it is exact enough for any n and never
    builds huge binomials.
    """
    if n < 0 or c < 0 or c > n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
    if n == 0:
        return 0.0
    k = min(k, n)
    if n - c < k:
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


@dataclass
class ModelTally:
    """Running counts of one model's rollouts on one sample."""

    n: int = 0
    correct: int = 0
    reward_sum: float = 0.0

    def add(self, reward: float, correct_at: float) -> None:
        self.n += 1
        self.reward_sum += reward
        if reward >= correct_at:
            self.correct += 1


@dataclass
class SampleTally:
    """Per-model tallies of one sample, filled one rollout at a time (memory: one entry per model)."""

    correct_at: float
    models: dict[str, ModelTally] = field(default_factory=dict)

    def add(self, model: str, reward: float) -> None:
        tally = self.models.get(model)
        if tally is None:
            tally = self.models[model] = ModelTally()
        tally.add(reward, self.correct_at)

    @property
    def n(self) -> int:
        return sum(t.n for t in self.models.values())

    @property
    def correct(self) -> int:
        return sum(t.correct for t in self.models.values())

    @property
    def reward_sum(self) -> float:
        return sum(t.reward_sum for t in self.models.values())


def model_pass_rates(tally: SampleTally, k: int = _K) -> list[dict]:
    """`[{model, n, correct, pass_rate}]`, sorted by model name (stable output)."""
    return [
        {"model": m, "n": t.n, "correct": t.correct, "pass_rate": pass_at_k(t.n, t.correct, k)}
        for m, t in sorted(tally.models.items())
    ]


def merged_pass_rate(per_model: Iterable[Mapping]) -> float:
    """Mean of the per-model pass rates; 0.0 when there are none."""
    rates = [float(m["pass_rate"]) for m in per_model]
    return sum(rates) / len(rates) if rates else 0.0


@dataclass(frozen=True)
class TierRule:
    """Pass-rate boundaries; see the module docstring."""

    very_easy_at: float = _BOUNDS.very_easy_at
    easy_at: float = _BOUNDS.easy_at
    medium_at: float = _BOUNDS.medium_at
    hard_above: float = _BOUNDS.hard_above

    def __post_init__(self) -> None:
        if not (1.0 >= self.very_easy_at >= self.easy_at >= self.medium_at >= self.hard_above >= 0.0):
            raise ValueError("need 1 >= very_easy_at >= easy_at >= medium_at >= hard_above >= 0")

    def tier(self, pass_rate: float) -> str:
        # Float noise from the pass@k product must not demote a perfect sample.
        p = pass_rate + 1e-12
        if p >= self.very_easy_at:
            return "very_easy"
        if p >= self.easy_at:
            return "easy"
        if p >= self.medium_at:
            return "medium"
        if pass_rate > self.hard_above:
            return "hard"
        return "very_hard"


def tier_for(pass_rate: float, rule: TierRule = TierRule()) -> str:
    return rule.tier(pass_rate)


def final_tier(pass_tier: str, label_tier: str | None) -> str:
    """An offline human label wins over the rollout-derived tier."""
    return label_tier or pass_tier


def normalise_label(value: object) -> str | None | ValueError:
    """A `label_tier` cell as a tier name; None when empty; a ValueError (returned) when not a tier."""
    if value is None:
        return None
    if not isinstance(value, str):
        return ValueError(f"label_tier is a {type(value).__name__}, not a tier name")
    v = value.strip().lower().replace("-", "_").replace(" ", "_")
    if not v:
        return None
    if v not in TIER_ORDER:
        return ValueError(f"label_tier {value!r} is not one of {', '.join(TIER_ORDER)}")
    return v


def summarize(counts: Iterable[tuple[str, str, str, int]], weights: Mapping[str, float]) -> dict:
    """Tier counts by source, task and overall, plus sampling weights and the mix they give.

    `counts` holds (source, task, tier, n). `weighted_share[t]` is the share of
    tier t in a sample drawn with probability proportional to `weights[t]`.
    """
    total = {t: 0 for t in TIER_ORDER}
    by_source: dict[str, dict[str, int]] = {}
    by_task: dict[str, dict[str, int]] = {}
    by_source_task: dict[str, dict[str, int]] = {}
    for source, task, tier, n in counts:
        total[tier] += n
        for table, key in ((by_source, source), (by_task, task), (by_source_task, f"{source}/{task}")):
            row = table.setdefault(key, {t: 0 for t in TIER_ORDER})
            row[tier] += n
    mass = {t: total[t] * float(weights.get(t, 0.0)) for t in TIER_ORDER}
    all_mass = sum(mass.values())
    return {
        "tier_counts": {
            "total": total,
            "by_source": dict(sorted(by_source.items())),
            "by_task": dict(sorted(by_task.items())),
            "by_source_task": dict(sorted(by_source_task.items())),
        },
        "sampling_weights": {t: float(weights.get(t, 0.0)) for t in TIER_ORDER},
        "weighted_share": {t: (round(mass[t] / all_mass, 6) if all_mass else 0.0) for t in TIER_ORDER},
    }
