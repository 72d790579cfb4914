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

Orientations: a `DedupKey` may carry `variants`, the hashes of the sample's other
orientations (`quarry.operators.phash.phash64_orientations`: rotations by 90, 180,
270 degrees and their mirrors). Two samples are then near duplicates when any
hash of one and any hash of the other, not both variants, are within
``max_hamming`` (so a mirrored or turned copy collapses onto the original); the
distance is the smallest such. Keys without variants compare their own hashes only.

How it scales (no all-pairs comparison, no whole dataset in one process):
batches of keys -> per batch, each hash (own and variants) goes to the shard
``(band b, top SHARD_BITS bits of band b)`` of each of its ``max_hamming + 1``
bands, packed per shard as one element of arrays -> GroupByKey on the shard ->
per shard, the two-level sorted-key search of `quarry.operators.phash`
(`edges_in_band`: exact band b, then one of max_hamming + 1 sub-bands of the
other bits exact; each close pair reported once) -> CombinePerKey keeps the best
neighbour per dropped id. The shuffle carries ``(max_hamming + 1) * (1 +
variants)`` hashes per sample, a few hundred per element; a shard holds
``(1 + variants) * N / 2**SHARD_BITS`` of them (~125,000 at 1M keys with 7
variants, 8 bytes each plus the id), and the search inside it costs one sort per
sub-band plus ~(max_hamming + 1) * n**2 / 2**(w_band + w_sub + 1) compared pairs.
Which copy is kept depends on ranks and hashes only, never on bundle order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from quarry.operators.base import Rejection
from quarry.operators.phash import SearchStats, band_layout, best_neighbours, edges_in_band, rank_key

NEAR_DUPLICATE = "near_duplicate"  # the dedup step's (operators/phash.py finds pairs, decides nothing)
REASONS: tuple[str, ...] = (NEAR_DUPLICATE,)

# A shard is (band index, the top SHARD_BITS bits of that band's value): 5 * 64 shards for the default
# max_hamming of 4. Memory per shard: (1 + variants) * N / 2**SHARD_BITS hashes.
SHARD_BITS = 6
# Keys per batch when they are packed into shard chunks (BatchElements adapts below this).
MAX_BATCH = 20_000
_TWO_64 = 1 << 64


class DedupKey(NamedTuple):
    """What dedup needs of a sample: its id, its 64-bit pHash (unsigned), its size, and optionally the
    unsigned hashes of its other orientations (`phash64_orientations(img)[1:]`)."""

    sample_id: str
    phash: int
    width: int
    height: int
    variants: tuple[int, ...] = ()


class DedupOutputs(NamedTuple):
    """What `SplitDuplicates` returns, for input records of type R."""

    kept: beam.PCollection  # PCollection[R]
    rejected: beam.PCollection  # PCollection[tuple[R, Rejection]]


# On the wire a shard chunk is ((band_index, prefix), (hashes, pixels, is_variant, sample_ids)):
# uint64 / int64 / uint8 arrays as bytes and a tuple of str, so one element carries hundreds of hashes.
Chunk = tuple[bytes, bytes, bytes, tuple[str, ...]]


def _shard_prefix(max_hamming: int, shard_bits: int) -> list[tuple[int, int]]:
    """Per band, ``(shift, keep)``: the shard prefix is ``hash >> shift`` masked to `keep` bits."""
    out = []
    for shift, width in band_layout(max_hamming):
        keep = min(shard_bits, width)
        out.append((shift + width - keep, keep))
    return out


class _ShardEntriesFn(beam.DoFn):
    """A batch of DedupKeys -> one chunk per shard its hashes fall in."""

    def __init__(self, max_hamming: int, shard_bits: int) -> None:
        self.max_hamming = max_hamming
        self.shard_bits = shard_bits
        self.hashes = Metrics.counter("dedup", "hashes")

    def process(self, batch: list[DedupKey]):
        hs: list[int] = []
        ids: list[str] = []
        px: list[int] = []
        var: list[bool] = []
        for key in batch:
            sample_id, phash, width, height = key[:4]
            variants = key.variants if isinstance(key, DedupKey) else ()
            if not 0 <= phash < _TWO_64:
                raise ValueError(f"DedupKey.phash must be an unsigned 64-bit int, got {phash} for {sample_id!r}")
            pixels = width * height
            hs.append(phash), ids.append(sample_id), px.append(pixels), var.append(False)
            seen = {phash}
            for v in variants:
                if v not in seen:
                    if not 0 <= v < _TWO_64:
                        raise ValueError(f"DedupKey.variants must be unsigned 64-bit ints, got {v} for {sample_id!r}")
                    seen.add(v)
                    hs.append(v), ids.append(sample_id), px.append(pixels), var.append(True)
        self.hashes.inc(len(hs))
        h = np.array(hs, dtype=np.uint64)
        p = np.array(px, dtype=np.int64)
        v = np.array(var, dtype=np.uint8)
        id_arr = np.array(ids, dtype=object)
        for band_index, (shift, keep) in enumerate(_shard_prefix(self.max_hamming, self.shard_bits)):
            prefix = (h >> np.uint64(shift)) & np.uint64((1 << keep) - 1)
            order = np.argsort(prefix, kind="stable")
            sp = prefix[order]
            cuts = np.flatnonzero(sp[1:] != sp[:-1]) + 1
            for idx in np.split(order, cuts):
                chunk = (h[idx].tobytes(), p[idx].tobytes(), v[idx].tobytes(), tuple(id_arr[idx].tolist()))
                yield (band_index, int(prefix[idx[0]])), chunk


class _SearchShardFn(beam.DoFn):
    """One shard's chunks -> the near-duplicate edges its band finds, best neighbour per worse id,
    as (worse_id, (better_rank, better_id, distance))."""

    def __init__(self, max_hamming: int) -> None:
        self.max_hamming = max_hamming
        self.shards = Metrics.counter("dedup", "shards")
        self.candidates = Metrics.counter("dedup", "candidate_pairs")
        self.pairs = Metrics.counter("dedup", "close_pairs")
        self.edges = Metrics.counter("dedup", "edges")
        self.shard_size = Metrics.distribution("dedup", "shard_hashes")

    def process(self, element: tuple[tuple[int, int], Iterable[Chunk]]):
        (band_index, _prefix), chunks = element
        chunks = list(chunks)
        h = np.concatenate([np.frombuffer(c[0], dtype=np.uint64) for c in chunks])
        p = np.concatenate([np.frombuffer(c[1], dtype=np.int64) for c in chunks])
        v = np.concatenate([np.frombuffer(c[2], dtype=np.uint8) for c in chunks]).astype(bool)
        ids = np.array([sid for c in chunks for sid in c[3]])
        self.shards.inc()
        self.shard_size.update(int(h.size))
        if h.size < 2:
            return
        # Owner ordinals in rank order (most pixels, then smallest id), whatever order the chunks came in.
        uniq, inverse = np.unique(ids, return_inverse=True)
        pixels = np.zeros(uniq.size, dtype=np.int64)
        np.maximum.at(pixels, inverse, p)
        by_rank = np.lexsort((np.arange(uniq.size), -pixels))  # uniq is sorted: its index orders ids
        ordinal = np.empty(uniq.size, dtype=np.int64)
        ordinal[by_rank] = np.arange(uniq.size)
        stats = SearchStats()
        edges = best_neighbours(edges_in_band(h, ordinal[inverse], v, band_index, self.max_hamming, stats))
        self.candidates.inc(stats.candidates)
        self.pairs.inc(stats.pairs)
        self.edges.inc(int(edges.worse.size))
        for worse, better, distance in zip(edges.worse.tolist(), edges.better.tolist(), edges.distance.tolist()):
            u = by_rank[better]
            better_id = str(uniq[u])
            yield str(uniq[by_rank[worse]]), (rank_key(int(pixels[u]), 1, better_id), better_id, distance)


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

    def __init__(self, max_hamming: int, label: str | None = None, shard_bits: int = SHARD_BITS) -> None:
        super().__init__(label)
        band_layout(max_hamming)  # validates: 0 <= max_hamming <= 63
        if not 0 <= shard_bits <= 16:
            raise ValueError(f"shard_bits must be in [0, 16], got {shard_bits}")
        self.max_hamming = max_hamming
        self.shard_bits = shard_bits

    def expand(self, keys: beam.PCollection) -> beam.PCollection:
        return (
            keys
            | "Batch" >> beam.BatchElements(min_batch_size=MAX_BATCH, max_batch_size=MAX_BATCH)
            | "ShardHashes" >> beam.ParDo(_ShardEntriesFn(self.max_hamming, self.shard_bits))
            | "GroupByShard" >> beam.GroupByKey()
            | "SearchShard"
            >> beam.ParDo(_SearchShardFn(self.max_hamming)).with_output_types(
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
