"""MetaCLIP concept-balanced resampling as one composite Beam transform.

    balanced = pairs | "Balance" >> BalanceConcepts(cfg.balance)
    balanced.kept      # BalancedPair(element, concepts, rarest_count, tier)
    balanced.rejected  # (element, Rejection)  reasons: no_concept_match, concept_downsampled
    balanced.counts    # (entry, count) for every entry matched at least once

Stages (stable labels): ``Match`` attaches the matched vocabulary entries to
each element; ``CountEntries`` counts pairs per entry over the whole dataset
(a Beam combine, so only vocabulary-sized counts ever meet in one place);
``Sample`` keeps or rejects each pair with the counts as a dict side input.
The rules themselves live in `quarry.operators.concepts`.

The transform is generic over the element type: it reads the caption and the
sample id through `caption_fn` and `id_fn` (by default the ``.caption`` and
``.sample_id`` attributes, which `CaptionRow` and the caption DAG's
intermediate records have). Elements pass through unchanged.

With ``cfg.enabled`` False every pair is kept (matched or not), but entries are
still matched and counted so rows get concepts and tiers.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from quarry.operators.concepts import (
    CONCEPT_DOWNSAMPLED,
    NO_CONCEPT_MATCH,
    ConceptMatcher,
    balance_verdict,
    load_vocabulary,
    rarest,
    tier_for_count,
)
from quarry.operators.ids import content_id
from quarry.schemas.caption import BalanceConfig

STAGE = "balance"  # the `stage` of reject rows this transform produces
_METRICS = "quarry.balance"
_KEPT = "kept"
_REJECTED = "rejected"


class Matched(NamedTuple):
    """An element and the entries its caption matched (sorted, unique)."""

    element: Any
    concepts: tuple[str, ...]


class BalancedPair(NamedTuple):
    """A kept element with what the caption row needs from balancing."""

    element: Any
    concepts: tuple[str, ...]  # -> CaptionRow.concepts
    rarest_count: Optional[int]  # -> CaptionRow.rarest_concept_count (None: matched nothing)
    tier: str  # -> CaptionRow.tier (one of quarry.schemas.common.TIERS)


class Balanced(NamedTuple):
    """Outputs of `BalanceConcepts`."""

    kept: beam.PCollection  # BalancedPair
    rejected: beam.PCollection  # tuple[element, Rejection]
    counts: beam.PCollection  # tuple[str, int]: dataset-wide pairs per matched entry


class _MatchFn(beam.DoFn):
    """Match: element -> Matched(element, concepts). One automaton per worker process."""

    def __init__(self, matcher: ConceptMatcher, caption_fn: Callable[[Any], str]) -> None:
        self._matcher = matcher  # pickles without its automaton
        self._tag = content_id("fold" if matcher.fold_case else "exact", *matcher.entries)
        self._shared = shared.Shared()
        self._caption_fn = caption_fn
        self._live: Optional[ConceptMatcher] = None
        self._with_match = Metrics.counter(_METRICS, "pairs_with_match")
        self._without_match = Metrics.counter(_METRICS, "pairs_without_match")

    def setup(self) -> None:
        matcher = self._matcher
        self._live = self._shared.acquire(matcher.load, tag=self._tag)

    def process(self, element: Any):
        concepts = tuple(self._live.match(self._caption_fn(element) or ""))
        (self._with_match if concepts else self._without_match).inc()
        yield Matched(element, concepts)


def _concepts(m: Matched) -> tuple[str, ...]:
    return m.concepts


class _CountEntries(beam.PTransform):
    """CountEntries: Matched -> (entry, number of pairs that matched it)."""

    def expand(self, matched):
        return (
            matched
            | "Entries" >> beam.FlatMap(_concepts)
            | "PerEntry" >> beam.combiners.Count.PerElement()
        )


class _SampleFn(beam.DoFn):
    """Sample: Matched + counts -> BalancedPair, or (element, Rejection) on `rejected`."""

    def __init__(self, cfg: BalanceConfig, id_fn: Callable[[Any], str]) -> None:
        self._enabled = cfg.enabled
        self._t = cfg.t
        self._tier_counts = cfg.tier_counts
        self._keep_unmatched = cfg.keep_unmatched
        self._id_fn = id_fn
        self._kept = Metrics.counter(_METRICS, "kept")
        self._rejected = {
            NO_CONCEPT_MATCH: Metrics.counter(_METRICS, NO_CONCEPT_MATCH),
            CONCEPT_DOWNSAMPLED: Metrics.counter(_METRICS, CONCEPT_DOWNSAMPLED),
        }

    def process(self, matched: Matched, counts: dict):
        element, concepts = matched
        if self._enabled:
            rejection = balance_verdict(self._id_fn(element), concepts, counts, self._t, self._keep_unmatched)
            if rejection is not None:
                self._rejected[rejection.reason].inc()
                yield beam.pvalue.TaggedOutput(_REJECTED, (element, rejection))
                return
        r = rarest(concepts, counts)
        count = None if r is None else r[1]
        self._kept.inc()
        yield BalancedPair(element, concepts, count, tier_for_count(count, self._t, self._tier_counts))


class BalanceConcepts(beam.PTransform):
    """MetaCLIP concept-balanced resampling over a PCollection of caption pairs.

    Args:
        cfg: the ``balance`` section of the caption config.
        vocabulary: the entries; None loads ``cfg.vocabulary`` (or the
            packaged default) with `load_vocabulary`, at construction time.
        caption_fn: element -> caption text (default: ``element.caption``).
        id_fn: element -> stable sample id that seeds sampling (default:
            ``element.sample_id``).

    Returns `Balanced(kept, rejected, counts)`; see the module docstring.
    """

    def __init__(
        self,
        cfg: BalanceConfig,
        vocabulary: Optional[Sequence[str]] = None,
        *,
        caption_fn: Callable[[Any], str] = operator.attrgetter("caption"),
        id_fn: Callable[[Any], str] = operator.attrgetter("sample_id"),
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        self._cfg = cfg
        entries = load_vocabulary(cfg.vocabulary) if vocabulary is None else list(vocabulary)
        self._matcher = ConceptMatcher(entries, fold_case=cfg.fold_case)  # validates now, builds on workers
        self._caption_fn = caption_fn
        self._id_fn = id_fn

    def expand(self, pairs) -> Balanced:
        matched = pairs | "Match" >> beam.ParDo(_MatchFn(self._matcher, self._caption_fn))
        counts = matched | "CountEntries" >> _CountEntries()
        sampled = matched | "Sample" >> beam.ParDo(
            _SampleFn(self._cfg, self._id_fn), counts=beam.pvalue.AsDict(counts)
        ).with_outputs(_REJECTED, main=_KEPT)
        return Balanced(kept=sampled[_KEPT], rejected=sampled[_REJECTED], counts=counts)


__all__ = ["STAGE", "Balanced", "BalancedPair", "BalanceConcepts", "Matched"]
