"""Near-duplicate image removal over 64-bit pHashes, at any scale.

Two composites:

- `NearDuplicates(max_hamming)`: ``PCollection[DedupKey]`` ->
  ``PCollection[tuple[str, str, int]]`` of ``(dropped_id, kept_id, distance)``.
- `SplitDuplicates(max_hamming, key_fn)`: ``PCollection[R]`` ->
  ``DedupOutputs(kept: PCollection[R], rejected: PCollection[tuple[R, Rejection]])``,
  rejections ``Rejection("near_duplicate", "kept=<id> distance=<d>")``.

What is dropped: every sample that has a better-ranked sample within
``max_hamming`` bits (rank: most pixels, then smallest sample_id; see
`quarry.operators.phash.rank_key`). In other words every near-duplicate pair
drops its worse-ranked member, so no two kept samples are within the
distance. For a cluster whose members are all within the distance of its
best member (the usual case: resized, recompressed, re-encoded copies of one
picture) that keeps exactly one representative, the best. A chain
A ~ B ~ C with A and C further apart keeps A and C when C outranks B (their
images are not duplicates of each other), and keeps only A when B outranks C.
Exact byte duplicates have distance 0 and take the same path; the same
sample_id given twice is one sample (and `SplitDuplicates` keeps one record
of it, rejecting the others as distance-0 duplicates of it).

For each dropped id the output names its best-ranked neighbour within the
distance ("kept_id"). That neighbour is the one the dropped sample
duplicates; in a chain it may itself be dropped in favour of a third sample.

How it scales (no all-pairs comparison, no whole dataset in one process):
FlatMap each hash to its ``max_hamming + 1`` band keys -> GroupByKey on
``(band_index, band_value)`` -> compare within each group (pigeonhole: every
close pair shares a group; each pair is reported by one group only) ->
CombinePerKey keeps the best neighbour per dropped id. The shuffle carries
``max_hamming + 1`` small tuples per sample. A group holds the samples whose
hashes agree on one band (~N / 8192 of them for the default 13-bit bands
with uniform hashes); a group is materialised in one worker's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from quarry.operators.base import Rejection
from quarry.operators.phash import Member, band_keys, band_layout, near_duplicates_in_group, rank_key

NEAR_DUPLICATE = "near_duplicate"  # the dedup step's (operators/phash.py finds pairs, decides nothing)
REASONS: tuple[str, ...] = (NEAR_DUPLICATE,)

_SIGN_BIT = 1 << 63
_TWO_64 = 1 << 64


class DedupKey(NamedTuple):
    """What dedup needs of a sample: its id, its 64-bit pHash (unsigned) and its size."""

    sample_id: str
    phash: int
    width: int
    height: int


class DedupOutputs(NamedTuple):
    """What `SplitDuplicates` returns, for input records of type R."""

    kept: beam.PCollection  # PCollection[R]
    rejected: beam.PCollection  # PCollection[tuple[R, Rejection]]


# On the wire a band entry is ((band_index, band_value), (sample_id, signed_phash, width, height)):
# Beam's int coder (VarIntCoder, chosen from the type hints) is signed 64-bit,
# so the unsigned hash travels as its two's-complement value.
BandEntry = tuple[tuple[int, int], tuple[str, int, int, int]]


def _to_signed(h: int) -> int:
    return h - _TWO_64 if h & _SIGN_BIT else h


def _to_unsigned(h: int) -> int:
    return h + _TWO_64 if h < 0 else h


def _band_entries(key: DedupKey, max_hamming: int) -> Iterator[BandEntry]:
    sample_id, phash, width, height = key
    if not 0 <= phash < _TWO_64:
        raise ValueError(f"DedupKey.phash must be an unsigned 64-bit int, got {phash} for {sample_id!r}")
    value = (sample_id, _to_signed(phash), width, height)
    for band_index, band_value in band_keys(phash, max_hamming):
        # max_hamming=0 has one 64-bit band, whose value may not fit a signed int64 either.
        yield (band_index, _to_signed(band_value)), value


class _CompareInBandFn(beam.DoFn):
    """All close pairs in one band group, as (worse_id, (better_rank, better_id, distance))."""

    def __init__(self, max_hamming: int) -> None:
        self.max_hamming = max_hamming
        self.groups = Metrics.counter("dedup", "band_groups")
        self.compared = Metrics.counter("dedup", "band_groups_compared")
        self.edges = Metrics.counter("dedup", "edges")
        self.group_size = Metrics.distribution("dedup", "band_group_size")

    def process(self, element: tuple[tuple[int, int], Iterable[tuple[str, int, int, int]]]):
        (band_index, _value), entries = element
        entries = list(entries)
        self.groups.inc()
        self.group_size.update(len(entries))
        if len(entries) < 2:
            return
        self.compared.inc()
        members = [Member(sid, _to_unsigned(h), rank_key(w, hgt, sid)) for sid, h, w, hgt in entries]
        edges = near_duplicates_in_group(members, self.max_hamming, band_index)
        if not edges:
            return
        self.edges.inc(len(edges))
        rank_of = {m.sample_id: m.rank for m in members}
        for worse_id, better_id, distance in edges:
            yield worse_id, (rank_of[better_id], better_id, distance)


class _BestNeighbourFn(beam.CombineFn):
    """Per dropped id, the best-ranked neighbour: min of (rank, id, distance)."""

    def create_accumulator(self):
        return None

    def add_input(self, best, candidate):
        return candidate if best is None or candidate < best else best

    def merge_accumulators(self, accumulators):
        best = None
        for acc in accumulators:
            if acc is not None and (best is None or acc < best):
                best = acc
        return best

    def extract_output(self, best):
        return best


@beam.typehints.with_input_types(DedupKey)
@beam.typehints.with_output_types(tuple[str, str, int])
class NearDuplicates(beam.PTransform):
    """``DedupKey`` -> ``(dropped_id, kept_id, distance)``, one per dropped sample.

    See the module docstring for what is dropped and why it scales.
    """

    def __init__(self, max_hamming: int, label: str | None = None) -> None:
        super().__init__(label)
        band_layout(max_hamming)  # validates: 0 <= max_hamming <= 63
        self.max_hamming = max_hamming

    def expand(self, keys: beam.PCollection) -> beam.PCollection:
        return (
            keys
            | "BandKeys"
            >> beam.FlatMap(_band_entries, self.max_hamming).with_output_types(
                tuple[tuple[int, int], tuple[str, int, int, int]]
            )
            | "GroupByBand" >> beam.GroupByKey()
            | "CompareInBand"
            >> beam.ParDo(_CompareInBandFn(self.max_hamming)).with_output_types(
                tuple[str, tuple[tuple[int, str], str, int]]
            )
            | "BestNeighbour" >> beam.CombinePerKey(_BestNeighbourFn())
            | "ToDrops"
            >> beam.MapTuple(lambda dropped, best: (dropped, best[1], best[2])).with_output_types(tuple[str, str, int])
        )


def _key_record(record, key_fn: Callable[[object], DedupKey]):
    key = key_fn(record)
    if not isinstance(key, DedupKey):
        raise TypeError(f"key_fn must return a DedupKey, got {type(key).__name__}")
    return key, record


class _RouteFn(beam.DoFn):
    """One sample_id's records and its drop (if any) -> kept or rejected."""

    REJECTED = "rejected"

    def __init__(self, order_key: Callable[[object], object]) -> None:
        self.order_key = order_key
        self.kept = Metrics.counter("dedup", "kept")
        self.rejected = Metrics.counter("dedup", "near_duplicate")

    def process(self, element):
        sample_id, grouped = element
        records = list(grouped["record"])
        drops = list(grouped["drop"])
        if drops:
            _dropped, kept_id, distance = drops[0]  # NearDuplicates emits one per dropped id
            rejection = Rejection(NEAR_DUPLICATE, f"kept={kept_id} distance={distance}")
            for record in records:
                self.rejected.inc()
                yield beam.pvalue.TaggedOutput(self.REJECTED, (record, rejection))
            return
        if not records:
            return
        if len(records) > 1:
            # The same sample_id again: the same content, perhaps from another origin.
            # Keep the same one on every run, whatever order the shuffle delivered.
            records.sort(key=self.order_key)
        self.kept.inc()
        yield records[0]
        same_id = Rejection(NEAR_DUPLICATE, f"kept={sample_id} distance=0")
        for record in records[1:]:
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(self.REJECTED, (record, same_id))


class SplitDuplicates(beam.PTransform):
    """Records -> ``DedupOutputs(kept, rejected)`` by near-duplicate pHash.

    `key_fn(record) -> DedupKey` extracts the id, hash and size of a record.
    ``rejected`` holds ``(record, Rejection("near_duplicate", "kept=<id> distance=<d>"))``.
    The records are joined with the dropped ids by sample_id (CoGroupByKey),
    so every record travels through one shuffle.

    Records sharing one sample_id are one sample: the one with the smallest
    `order_key(record)` is kept (default `repr`, deterministic for dataclasses,
    NamedTuples and pydantic models; pass e.g. the input path for a cheaper
    key), the others are rejected as ``kept=<that id> distance=0``.
    """

    def __init__(
        self,
        max_hamming: int,
        key_fn: Callable[[object], DedupKey],
        order_key: Callable[[object], object] = repr,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        band_layout(max_hamming)
        self.max_hamming = max_hamming
        self.key_fn = key_fn
        self.order_key = order_key

    def expand(self, records: beam.PCollection) -> DedupOutputs:
        keyed = records | "ExtractDedupKey" >> beam.Map(_key_record, self.key_fn)
        by_id = keyed | "KeyBySampleId" >> beam.MapTuple(lambda key, record: (key.sample_id, record))
        drops = (
            keyed
            | "DedupKeys" >> beam.MapTuple(lambda key, _record: key).with_output_types(DedupKey)
            | "NearDuplicates" >> NearDuplicates(self.max_hamming)
            | "KeyDropsById" >> beam.Map(lambda drop: (drop[0], drop))
        )
        routed = (
            {"record": by_id, "drop": drops}
            | "JoinDrops" >> beam.CoGroupByKey()
            | "Route" >> beam.ParDo(_RouteFn(self.order_key)).with_outputs(_RouteFn.REJECTED, main="kept")
        )
        return DedupOutputs(kept=routed.kept, rejected=routed[_RouteFn.REJECTED])
