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
    grey = img.convert("L")
    factor = min(grey.size) // REDUCE_TO
    if factor >= 2:
        grey = grey.reduce(factor)
    bits = imagehash.phash(grey, hash_size=8).hash
    return int.from_bytes(np.packbits(bits.reshape(-1)).tobytes(), "big")


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
