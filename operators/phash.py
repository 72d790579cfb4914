"""Perceptual hashes and the near-duplicate search over them.

`phash64` is imagehash's DCT pHash (hash_size 8) as an unsigned 64-bit int;
`hamming` is the distance between two of them. Two images are near
duplicates when their distance is <= `max_hamming` (`DedupConfig`, default 4):
resized, recompressed or lightly re-encoded copies land within a few bits.

Finding all such pairs without comparing all pairs (pigeonhole banding,
as in multi-index hashing, Norouzi et al. 2012): split the 64 bits into
``max_hamming + 1`` bands. Two hashes that differ in at most ``max_hamming``
bits cannot differ in every band, so they share at least one
``(band_index, band_value)`` key. Grouping by those keys and comparing only
inside groups finds every pair exactly (no false negatives), and
`near_duplicates_in_group` reports each pair from one group only (the lowest
band the two share), so the pair count does not depend on the band count.

Cost: uniform hashes put ``N / 2**bits`` members in a group (bits = 64 /
(max_hamming+1), 13 for the default), so the comparisons are
``(max_hamming+1) * N**2 / 2**(bits+1)``: linear while groups stay small,
quadratic beyond ``N`` of a few million per band (numpy makes each compared
pair cost ~1 ns, so that is ~1 s of CPU at N = 1M). Degenerate hashes (solid
colours, which the heuristics drop first) make big groups at any N.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import imagehash
import numpy as np
from PIL import Image

HASH_BITS = 64
_MASK64 = (1 << HASH_BITS) - 1
# Groups with at least this many distinct hashes are compared with numpy
# (pairwise XOR + popcount on a block of rows); smaller ones in plain Python.
_NUMPY_MIN_GROUP = 24
_NUMPY_BLOCK_ROWS = 512  # a 512 x n block of uint64: 4 MiB at n = 1,000
_HASH_THEN_RANK = operator.itemgetter(1, 2)


class Member(NamedTuple):
    """One sample in a band group: the id, its hash and its `rank_key`."""

    sample_id: str
    phash: int
    rank: tuple[int, str]


class Edge(NamedTuple):
    """`worse_id` has the better-ranked `better_id` within `distance` bits."""

    worse_id: str
    better_id: str
    distance: int


# Images whose shorter side is at least twice this are box-reduced by an integer factor before hashing
# (`Image.reduce`), leaving a shorter side in [REDUCE_TO, 2 * REDUCE_TO).
REDUCE_TO = 256


def phash64(img: Image.Image) -> int:
    """imagehash's pHash (8x8 DCT bits of a 32x32 grey thumbnail) as an unsigned int.

    Bit order is imagehash's (row-major, first bit most significant), so
    ``to_hex(phash64(img)) == str(imagehash.phash(img))`` for images under 2 * REDUCE_TO px on the
    shorter side. Larger ones are first box-reduced to that size: imagehash's antialiased resize of a
    full photo to 32x32 cost ~5x the rest (its filter support grows with the scale factor), and the
    hash barely moves: on the 78 demo images at 1x, 3x and 6x scale, 72 hash identically and 6 differ
    in 2 bits (tests/operators/test_phash.py measures it).
    """
    bits = imagehash.phash(_hash_input(img), hash_size=8).hash
    return int.from_bytes(np.packbits(bits.reshape(-1)).tobytes(), "big")


def _hash_input(img: Image.Image) -> Image.Image:
    """The grey image both hash functions start from (box-reduced when large, see `phash64`)."""
    grey = img.convert("L")
    factor = min(grey.size) // REDUCE_TO
    if factor >= 2:
        grey = grey.reduce(factor)
    return grey


# The 8 orientations of a picture (the dihedral group of the square), in the order
# `phash64_orientations` returns their hashes. PIL names: rot90 is `img.rotate(90, expand=True)`
# (counter-clockwise), mirror is `ImageOps.mirror(img)` (left-right).
ORIENTATIONS: tuple[str, ...] = (
    "identity", "rot90", "rot180", "rot270", "mirror", "mirror_rot90", "mirror_rot180", "mirror_rot270",
)


def phash64_orientations(img: Image.Image) -> tuple[int, ...]:
    """`phash64` of `img` in each of the 8 `ORIENTATIONS`: element 0 is exactly ``phash64(img)``.

    One resize to the 32x32 grey thumbnail (imagehash's step, the costly one) and one DCT; the other 7
    orientations' DCTs follow from it without another transform. The DCT-II of a signal reversed along
    an axis is the DCT with coefficient k multiplied by (-1)**k on that axis, and turning an array by 90
    degrees is a transpose plus a reversal, so the 8x8 low-frequency block of each orientation is the
    block transposed and/or sign-flipped on odd rows / columns; each then gets imagehash's median
    threshold. This equals imagehash's DCT of the turned thumbnail up to float round-off
    (tests/operators/test_phash.py checks the bits on the demo photos). Turning the thumbnail instead of
    the image is the same up to resampling round-off (the resize is separable and symmetric): on the
    demo photos the hash of ``ImageOps.mirror(img)`` or ``img.rotate(90, expand=True)`` is within 2 bits
    of the matching element here. Cost: one resize and one DCT, plus 8 medians of 64 numbers.
    """
    import scipy.fftpack

    small = _hash_input(img).resize((32, 32), imagehash.ANTIALIAS)
    pixels = np.asarray(small)
    low = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:8, :8]
    out = []
    for d in _orientation_blocks(low):
        bits = d > np.median(d)
        out.append(int.from_bytes(np.packbits(bits.reshape(-1)).tobytes(), "big"))
    return tuple(out)


_ODD = np.array([(-1.0) ** k for k in range(8)])  # (-1)**k: the DCT of a reversed axis


def _orientation_blocks(low: np.ndarray) -> list[np.ndarray]:
    """The 8x8 low-frequency DCT block of each of the `ORIENTATIONS`, from the identity's block `low`.

    With F(k) the DCT along an axis, reversing that axis gives (-1)**k F(k) (rows: ``_ODD[:, None] * d``,
    columns: ``d * _ODD``); np.rot90(a) is ``a.T`` reversed along axis 0, and np.fliplr reverses axis 1.
    """
    rows, cols = _ODD[:, None], _ODD[None, :]
    out = []
    for d in (low, low * cols):  # identity, fliplr (mirror)
        r1 = rows * d.T  # rot90: transpose, then reverse axis 0
        r2 = rows * d * cols  # rot180: reverse both axes
        r3 = d.T * cols  # rot270: transpose, then reverse axis 1
        out.extend((d, r1, r2, r3))
    return out


def to_hex(h: int) -> str:
    """16 lowercase hex digits (imagehash's text form; `imagehash.hex_to_hash` reads it)."""
    if not 0 <= h <= _MASK64:
        raise ValueError(f"not an unsigned 64-bit hash: {h}")
    return f"{h:016x}"


def from_hex(s: str) -> int:
    if len(s) != 16:
        raise ValueError(f"a 64-bit hash is 16 hex digits, got {len(s)}: {s!r}")
    return int(s, 16)


def hamming(a: int, b: int) -> int:
    """Number of differing bits."""
    return (a ^ b).bit_count()


@functools.lru_cache(maxsize=None)
def band_layout(max_hamming: int) -> tuple[tuple[int, int], ...]:
    """``(shift, width)`` of each of the ``max_hamming + 1`` bands, widths within one bit.

    Band 0 holds the most significant bits; the first ``64 % bands`` bands are
    one bit wider.
    """
    if not 0 <= max_hamming < HASH_BITS:
        raise ValueError(f"max_hamming must be in [0, {HASH_BITS - 1}], got {max_hamming}")
    bands = max_hamming + 1
    base, extra = divmod(HASH_BITS, bands)
    layout = []
    top = HASH_BITS
    for i in range(bands):
        width = base + (1 if i < extra else 0)
        top -= width
        layout.append((top, width))
    return tuple(layout)


@functools.lru_cache(maxsize=None)
def _band_masks(max_hamming: int) -> tuple[tuple[int, int], ...]:
    """``(shift, mask)`` per band: `band_layout` ready for extraction."""
    return tuple((shift, (1 << width) - 1) for shift, width in band_layout(max_hamming))


def band_keys(h: int, max_hamming: int) -> list[tuple[int, int]]:
    """The ``(band_index, band_value)`` keys of `h`; hashes within `max_hamming` share one."""
    return [(i, (h >> shift) & mask) for i, (shift, mask) in enumerate(_band_masks(max_hamming))]


def rank_key(width: int, height: int, sample_id: str) -> tuple[int, str]:
    """Sorts the sample to keep first: most pixels, then the smallest id (a stable tie-break)."""
    return (-(width * height), sample_id)


def near_duplicates_in_group(
    members: Iterable[Member | tuple[str, int, tuple[int, str]]], max_hamming: int, band_index: int
) -> list[Edge]:
    """Edges ``(worse_id, better_id, distance)`` between members within `max_hamming`.

    `members` share the key ``(band_index, band_value)``. Identical hashes are
    collapsed first: inside a set of identical hashes every member gets an
    edge to the set's best member (distance 0), and distinct hashes are
    compared once, the best member of each set standing for it; an edge then
    goes from every member of the worse set to the better set's best member.
    So the worse-ranked end of every close pair gets an edge to a member at
    least as good as the better end; per worse id, the best `better_id` over
    all groups is its best-ranked neighbour.

    A pair is reported only by the lowest band index it shares (identical
    hashes share every band: band 0), so across all groups of all bands each
    pair comes out once. A sample id given twice counts once.
    """
    masks = _band_masks(max_hamming)
    if not 0 <= band_index < len(masks):
        raise ValueError(f"band_index {band_index} outside the {len(masks)} bands of max_hamming={max_hamming}")

    # Classes of identical hashes, each best member first: one sort in C, one pass.
    hashes: list[int] = []
    classes: list[list[tuple[str, tuple[int, str]]]] = []
    for sample_id, h, rank in sorted(members, key=_HASH_THEN_RANK):
        if not hashes or h != hashes[-1]:
            hashes.append(h)
            classes.append([(sample_id, rank)])
        elif sample_id != classes[-1][-1][0]:  # the same sample given twice is one sample
            classes[-1].append((sample_id, rank))

    edges: list[Edge] = []
    if band_index == 0:
        for ranked in classes:
            if len(ranked) > 1:
                best_id = ranked[0][0]
                edges.extend(Edge(sid, best_id, 0) for sid, _rank in ranked[1:] if sid != best_id)
    if len(classes) < 2:
        return edges

    for i, j, dist in _close_pairs(hashes, max_hamming):
        if _first_shared_band(hashes[i] ^ hashes[j], masks) != band_index:
            continue  # reported by the group of a lower band
        ranked_i, ranked_j = classes[i], classes[j]
        better, worse = (ranked_i, ranked_j) if ranked_i[0][1] < ranked_j[0][1] else (ranked_j, ranked_i)
        better_id = better[0][0]
        edges.extend(Edge(sid, better_id, dist) for sid, _rank in worse if sid != better_id)
    return edges


def _close_pairs(hashes: Sequence[int], max_hamming: int) -> Iterable[tuple[int, int, int]]:
    """Index pairs ``(i, j, distance)``, i < j, of distinct hashes within `max_hamming`."""
    n = len(hashes)
    if n < _NUMPY_MIN_GROUP:
        for i in range(n):
            hi = hashes[i]
            for j in range(i + 1, n):
                d = (hi ^ hashes[j]).bit_count()
                if d <= max_hamming:
                    yield i, j, d
        return
    arr = np.fromiter(hashes, dtype=np.uint64, count=n)
    for start in range(0, n, _NUMPY_BLOCK_ROWS):
        block = arr[start : start + _NUMPY_BLOCK_ROWS]
        dist = np.bitwise_count(block[:, None] ^ arr[None, :])
        rows, cols = np.nonzero(dist <= max_hamming)
        rows = rows + start
        upper = cols > rows  # each unordered pair once, no self-pairs
        for i, j in zip(rows[upper].tolist(), cols[upper].tolist()):
            yield i, j, int(dist[i - start, j])


def _first_shared_band(diff: int, masks: Sequence[tuple[int, int]]) -> int:
    """Lowest band index on which two hashes differing in the bits `diff` agree (-1 if none)."""
    for index, (shift, mask) in enumerate(masks):
        if (diff >> shift) & mask == 0:
            return index
    return -1


# --- the scalable search: two-level pigeonhole over sorted keys -------------------------------------
#
# Level 1 (`band_layout`): two hashes within `max_hamming` bits agree exactly on one of the
# ``max_hamming + 1`` bands (13 bits each for the default 4). Level 2 (`sub_band_layout`): two hashes
# that agree on band b differ in at most `max_hamming` of the other 64 - w_b bits, so, split those
# into ``max_hamming + 1`` sub-bands, they also agree exactly on one sub-band. The join key
# (band b value, sub-band j value) has ~23 bits for the default instead of 13, so with N uniform
# hashes each of the 25 (b, j) key spaces pairs up ~N**2 / 2**24 candidates: ~3 per hash at 1M,
# ~15 per hash at 10M (13-bit bands alone: ~600 and ~6,100). Each key space is one argsort plus a walk
# along runs of equal keys, so the work is O(N log N) plus the candidates plus the output.
# Candidate pairs are reported by their lowest shared band and, inside it, their lowest shared
# sub-band only, so every pair of distinct hashes is found exactly once over all (b, j).


@functools.lru_cache(maxsize=None)
def sub_band_layout(max_hamming: int, band_index: int) -> tuple[tuple[int, int], ...]:
    """``(shift, width)`` of the ``max_hamming + 1`` sub-bands of the bits outside band `band_index`.

    Shifts are into the ``64 - w_b``-bit number `_outside_band` makes (the bits above the band moved
    down over it); widths within one bit, the first ones wider. Widths may be 0 when there are fewer
    bits than sub-bands (large max_hamming): a 0-bit sub-band always agrees.
    """
    layout = band_layout(max_hamming)
    if not 0 <= band_index < len(layout):
        raise ValueError(f"band_index {band_index} outside the {len(layout)} bands of max_hamming={max_hamming}")
    rest = HASH_BITS - layout[band_index][1]
    parts = max_hamming + 1
    base, extra = divmod(rest, parts)
    out = []
    top = rest
    for j in range(parts):
        width = base + (1 if j < extra else 0)
        top -= width
        out.append((top, width))
    return tuple(out)


def _u64(x: int) -> np.uint64:
    return np.uint64(x)


def _mask(width: int) -> np.uint64:
    return np.uint64((1 << width) - 1) if width < 64 else np.uint64(_MASK64)


def _band_values(h: np.ndarray, shift: int, width: int) -> np.ndarray:
    return (h >> _u64(shift)) & _mask(width)


def _outside_band(h: np.ndarray, shift: int, width: int) -> np.ndarray:
    """The 64 - width bits of `h` outside ``[shift, shift + width)``, packed to the low end."""
    low = h & _mask(shift) if shift else np.zeros_like(h)
    top = shift + width
    high = (h >> _u64(top)) << _u64(shift) if top < 64 else np.zeros_like(h)
    return high | low


def _first_zero_band(x: np.ndarray, layout: Sequence[tuple[int, int]]) -> np.ndarray:
    """Per element, the lowest band index whose bits of `x` are all 0 (len(layout) if none)."""
    first = np.full(x.shape, len(layout), dtype=np.int64)
    for index in range(len(layout) - 1, -1, -1):
        shift, width = layout[index]
        first[_band_values(x, shift, width) == 0] = index
    return first


class SearchStats:
    """Work counters a caller may pass down: `candidates` (hash pairs compared), `pairs` (found)."""

    def __init__(self) -> None:
        self.candidates = 0
        self.pairs = 0


def close_pairs_in_band(
    hashes: np.ndarray, band_index: int, max_hamming: int, stats: SearchStats | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays ``(i, j, distance)`` of the pairs of `hashes` within `max_hamming` bits whose
    lowest shared band is `band_index`, each pair once (i < j not promised).

    `hashes` must be distinct (collapse identical ones first: their pairs are distance 0). Pairs
    that share band `band_index` are found whatever else is in the array, so a caller may pass only
    the hashes of one band-value range (a shard) and get exactly the pairs that range holds.
    """
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    layout = band_layout(max_hamming)
    b_shift, b_width = layout[band_index]
    subs = sub_band_layout(max_hamming, band_index)
    n = h.size
    found_i, found_j, found_d = [], [], []
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    band = _band_values(h, b_shift, b_width)
    rest = _outside_band(h, b_shift, b_width)
    index_bits = (n - 1).bit_length()
    for sub_index, (s_shift, s_width) in enumerate(subs):
        key = (band << _u64(s_width)) | _band_values(rest, s_shift, s_width) if s_width else band
        if b_width + s_width + index_bits <= 64:  # sort (key, index) packed in one uint64: a plain sort, ~3x faster
            packed = np.sort((key << _u64(index_bits)) | np.arange(n, dtype=np.uint64))
            order = (packed & _mask(index_bits)).astype(np.int64)
            sorted_key = packed >> _u64(index_bits)
        else:
            order = np.argsort(key, kind="stable")
            sorted_key = key[order]
        starts = np.flatnonzero(sorted_key[1:] == sorted_key[:-1])  # positions p with key[p] == key[p + 1]
        offset = 1
        while starts.size:
            i = order[starts]
            j = order[starts + offset]
            x = h[i] ^ h[j]
            dist = np.bitwise_count(x)
            if stats is not None:
                stats.candidates += int(x.size)
            close = dist <= max_hamming
            if close.any():
                i, j, x, dist = i[close], j[close], x[close], dist[close]
                mine = _first_zero_band(x, layout) == band_index
                if mine.any():
                    i, j, x, dist = i[mine], j[mine], x[mine], dist[mine]
                    mine = _first_zero_band(_outside_band(x, b_shift, b_width), subs) == sub_index
                    found_i.append(i[mine])
                    found_j.append(j[mine])
                    found_d.append(dist[mine].astype(np.int64))
            offset += 1
            starts = starts[starts + offset < n]  # runs are contiguous: extend the ones that go on
            starts = starts[sorted_key[starts + offset] == sorted_key[starts]]
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    if stats is not None:
        stats.pairs += sum(int(a.size) for a in found_i)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


class HashClasses(NamedTuple):
    """Entries, one per (hash, owner), sorted by hash then owner; the classes of equal hashes."""

    hashes: np.ndarray
    owners: np.ndarray
    variant: np.ndarray
    starts: np.ndarray  # first entry of each class
    sizes: np.ndarray  # entries per class
    unique: np.ndarray  # the class's hash


def hash_classes(hashes: np.ndarray, owners: np.ndarray, variant: np.ndarray) -> HashClasses:
    """One entry per (hash, owner), an own hash winning over a variant; then classes of equal
    hashes, each class's members in rank order (owner ordinal)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    owners = np.asarray(owners, dtype=np.int64)
    variant = np.asarray(variant, dtype=bool)
    order = np.lexsort((variant, owners, hashes))
    h, o, v = hashes[order], owners[order], variant[order]
    keep = np.ones(h.size, dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (o[1:] != o[:-1])
    if not keep.all():
        h, o, v = h[keep], o[keep], v[keep]
    new_class = np.ones(h.size, dtype=bool)
    new_class[1:] = h[1:] != h[:-1]
    starts = np.flatnonzero(new_class)
    sizes = np.diff(np.append(starts, h.size))
    return HashClasses(h, o, v, starts, sizes, h[starts])


class Edges(NamedTuple):
    """Parallel arrays: `worse` has the better-ranked `better` within `distance` (owner ordinals)."""

    worse: np.ndarray
    better: np.ndarray
    distance: np.ndarray


def edges_in_band(
    hashes: np.ndarray,
    owners: np.ndarray,
    variant: np.ndarray,
    band_index: int,
    max_hamming: int,
    stats: SearchStats | None = None,
    classes: HashClasses | None = None,
) -> Edges:
    """Near-duplicate edges among entries ``(hash, owner, variant)`` found in band `band_index`.

    An entry is one hash of one sample: its own (``variant`` False) or the hash of one of its other
    orientations (``variant`` True, see `phash64_orientations`). `owners` are sample ordinals in rank
    order: a smaller ordinal is a better-ranked sample (`rank_key`). Two samples A, B are near
    duplicates when an entry of A and an entry of B, not both variants, are within `max_hamming`
    bits; their distance is the smallest such. Every worse-ranked end of such a pair gets an edge
    (in some band) to a neighbour at least as good as the better end, as in `near_duplicates_in_group`;
    the minimum `better` per `worse` over all bands is its best-ranked neighbour. Identical hashes
    (distance 0) give their edges in band 0 only.
    """
    classes = hash_classes(hashes, owners, variant) if classes is None else classes
    h, o, v, starts, sizes, uniq = classes

    worse_parts, better_parts, dist_parts = [], [], []
    if band_index == 0:
        w, b = [], []
        for c in np.flatnonzero(sizes > 1).tolist():
            lo, hi = starts[c], starts[c] + sizes[c]
            first_own = -1
            for k in range(lo, hi):
                if k > lo:
                    if not v[k]:  # an own hash pairs with any entry: the class's best
                        w.append(o[k]), b.append(o[lo])
                    elif first_own >= 0:  # a variant pairs with own hashes only: the best of them
                        w.append(o[k]), b.append(o[first_own])
                if first_own < 0 and not v[k]:
                    first_own = k
        if w:
            worse_parts.append(np.array(w, dtype=np.int64))
            better_parts.append(np.array(b, dtype=np.int64))
            dist_parts.append(np.zeros(len(w), dtype=np.int64))

    ci, cj, cd = close_pairs_in_band(uniq, band_index, max_hamming, stats)
    if ci.size:
        single = (sizes[ci] == 1) & (sizes[cj] == 1)
        # Fast path, one sample per hash on both ends.
        oi, oj = o[starts[ci[single]]], o[starts[cj[single]]]
        valid = ~(v[starts[ci[single]]] & v[starts[cj[single]]]) & (oi != oj)
        worse_parts.append(np.maximum(oi, oj)[valid])
        better_parts.append(np.minimum(oi, oj)[valid])
        dist_parts.append(cd[single][valid])
        w, b, d = [], [], []
        for c1, c2, dist in zip(ci[~single].tolist(), cj[~single].tolist(), cd[~single].tolist()):
            for src, dst in ((c1, c2), (c2, c1)):
                dst_lo, dst_hi = starts[dst], starts[dst] + sizes[dst]
                for k in range(starts[src], starts[src] + sizes[src]):
                    for m in range(dst_lo, dst_hi):
                        if o[m] >= o[k]:
                            break  # the rest of dst ranks below this member: they find it from their side
                        if not (v[k] and v[m]):
                            w.append(o[k]), b.append(o[m]), d.append(dist)
                            break
        if w:
            worse_parts.append(np.array(w, dtype=np.int64))
            better_parts.append(np.array(b, dtype=np.int64))
            dist_parts.append(np.array(d, dtype=np.int64))
    if not worse_parts:
        empty = np.zeros(0, dtype=np.int64)
        return Edges(empty, empty, empty)
    return Edges(np.concatenate(worse_parts), np.concatenate(better_parts), np.concatenate(dist_parts))


def best_neighbours(edges: Edges) -> Edges:
    """One edge per worse owner: its best-ranked neighbour (smallest ordinal), at the smallest distance."""
    if edges.worse.size == 0:
        return edges
    order = np.lexsort((edges.distance, edges.better, edges.worse))
    w = edges.worse[order]
    first = np.ones(w.size, dtype=bool)
    first[1:] = w[1:] != w[:-1]
    return Edges(w[first], edges.better[order][first], edges.distance[order][first])


def near_duplicate_edges(
    hashes: np.ndarray, owners: np.ndarray, variant: np.ndarray, max_hamming: int, stats: SearchStats | None = None
) -> Edges:
    """`best_neighbours` over every band of `edges_in_band`: the whole search in one process."""
    bands = range(len(band_layout(max_hamming)))
    classes = hash_classes(hashes, owners, variant)
    parts = [edges_in_band(hashes, owners, variant, b, max_hamming, stats, classes) for b in bands]
    return best_neighbours(Edges(*(np.concatenate([getattr(e, f) for e in parts]) for f in Edges._fields)))
