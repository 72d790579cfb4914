"""NearDuplicates and SplitDuplicates in TestPipeline."""

from __future__ import annotations

import io
import random
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image, ImageDraw

from quarry.operators.base import Rejection
from quarry.operators.phash import hamming, phash64, rank_key
from quarry.pipelines.dedup import DedupKey, NearDuplicates, SplitDuplicates

H = 0x9E37_79B9_7F4A_7C15  # an arbitrary 64-bit hash (top bit set: exercises the unsigned round trip)


def flip(h: int, *bits: int) -> int:
    for bit in bits:
        h ^= 1 << bit
    return h


def textured(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(im)
    w, h = size
    for _ in range(25):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = (x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2)))
        (draw.ellipse if rng.integers(2) else draw.rectangle)(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    noisy = np.asarray(im).astype(np.float32) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def jpeg_copy(im: Image.Image, size: tuple[int, int], quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.resize(size, Image.Resampling.LANCZOS).save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def key_of(sample_id: str, im: Image.Image) -> DedupKey:
    return DedupKey(sample_id, phash64(im), im.width, im.height)


def real_image_keys() -> list[DedupKey]:
    """Planted clusters of real pictures: an original plus resized/recompressed copies."""
    keys = []
    for c in range(3):
        original = textured(c, (640, 480))
        keys.append(key_of(f"orig{c}", original))
        keys.append(key_of(f"half{c}", jpeg_copy(original, (320, 240), 70)))
        keys.append(key_of(f"thumb{c}", jpeg_copy(original, (200, 150), 50)))
    keys.append(key_of("loner", textured(99, (400, 300))))
    return keys


def test_planted_clusters_of_real_images_keep_the_original():
    keys = real_image_keys()
    by_id = {k.sample_id: k for k in keys}
    expected = []
    for c in range(3):
        for copy in (f"half{c}", f"thumb{c}"):
            expected.append((copy, f"orig{c}", hamming(by_id[copy].phash, by_id[f"orig{c}"].phash)))
    assert all(d <= 4 for _, _, d in expected)
    with TestPipeline() as p:
        drops = p | beam.Create(keys) | NearDuplicates(4)
        assert_that(drops, equal_to(expected))


def test_synthetic_cases():
    keys = [
        # cluster: the 1024x768 original survives; copies within 1-4 bits name it
        DedupKey("orig", H, 1024, 768),
        DedupKey("copy1", flip(H, 0), 512, 384),
        DedupKey("copy2", flip(H, 5, 40), 800, 600),
        DedupKey("copy3", flip(H, 1, 20, 50, 63), 256, 192),
        # exact byte duplicates: same hash and size, the smallest id survives
        DedupKey("exact-b", 0x1234, 300, 300),
        DedupKey("exact-a", 0x1234, 300, 300),
        DedupKey("exact-c", 0x1234, 300, 300),
        # chain C1 ~ C2 ~ C3, C1 !~ C3, ranks C1 > C3 > C2: C1 and C3 both survive
        DedupKey("c1", 0xFFFF_0000_0000_0000, 900, 900),
        DedupKey("c2", flip(0xFFFF_0000_0000_0000, 0, 1, 2), 100, 100),
        DedupKey("c3", flip(0xFFFF_0000_0000_0000, 0, 1, 2, 3, 4, 5), 500, 500),
        # chain D1 ~ D2 ~ D3, D1 !~ D3, ranks D1 > D2 > D3: only D1 survives, D3 names D2
        DedupKey("d1", 0x0F0F_0000_0000_0000, 900, 900),
        DedupKey("d2", flip(0x0F0F_0000_0000_0000, 10, 11, 12), 500, 500),
        DedupKey("d3", flip(0x0F0F_0000_0000_0000, 10, 11, 12, 13, 14, 15), 100, 100),
        # distance 5: not duplicates
        DedupKey("far1", 0x00FF_00FF_0000_0000, 300, 300),
        DedupKey("far2", flip(0x00FF_00FF_0000_0000, 1, 2, 3, 4, 5), 300, 300),
        # singleton
        DedupKey("alone", 0x5555_5555_5555_5555, 300, 300),
    ]
    expected = [
        ("copy1", "orig", 1),
        ("copy2", "orig", 2),
        ("copy3", "orig", 4),
        ("exact-b", "exact-a", 0),
        ("exact-c", "exact-a", 0),
        ("c2", "c1", 3),
        ("d2", "d1", 3),
        ("d3", "d2", 3),
    ]
    with TestPipeline() as p:
        keys_pc = p | beam.Create(keys)
        assert_that(keys_pc | "Dedup4" >> NearDuplicates(4), equal_to(expected), label="max_hamming=4")
        exact_only = [e for e in expected if e[2] == 0]
        assert_that(keys_pc | "Dedup0" >> NearDuplicates(0), equal_to(exact_only), label="max_hamming=0")


def test_best_ranked_neighbour_is_named_and_no_two_kept_are_close():
    """Random clusters against a brute-force answer; max_hamming=3 (4 bands of 16 bits)."""
    rng = random.Random(7)
    keys = []
    for c in range(120):
        origin = rng.getrandbits(64)
        for k in range(rng.choice([1, 1, 2, 3, 5])):
            h = origin if k == 0 or rng.random() < 0.2 else flip(origin, *rng.sample(range(64), rng.randint(1, 5)))
            keys.append(DedupKey(f"s{c:03d}-{k}", h, rng.choice([100, 200, 300]), rng.choice([100, 200])))
    keys.append(keys[0])  # the same sample twice is one sample
    max_hamming = 3

    expected = {}
    for a in keys:
        for b in keys:
            d = hamming(a.phash, b.phash)
            ra, rb = rank_key(a.width, a.height, a.sample_id), rank_key(b.width, b.height, b.sample_id)
            if a.sample_id != b.sample_id and d <= max_hamming and rb < ra:
                cand = (rb, b.sample_id, d)
                if a.sample_id not in expected or cand < expected[a.sample_id]:
                    expected[a.sample_id] = cand
    expected_drops = [(s, best[1], best[2]) for s, best in expected.items()]
    kept = {k.sample_id: k for k in keys if k.sample_id not in expected}
    assert len(expected_drops) > 50
    for a in kept.values():  # the semantics: no two kept samples are within the distance
        for b in kept.values():
            assert a.sample_id == b.sample_id or hamming(a.phash, b.phash) > max_hamming

    with TestPipeline() as p:
        drops = p | beam.Create(keys) | NearDuplicates(max_hamming)
        assert_that(drops, equal_to(expected_drops))


class Record(NamedTuple):
    sample_id: str
    phash_hex: str
    width: int
    height: int
    caption: str


def record_key(r: Record) -> DedupKey:
    return DedupKey(r.sample_id, int(r.phash_hex, 16), r.width, r.height)


def test_split_duplicates_routes_records():
    records = [
        Record("big", f"{H:016x}", 1000, 1000, "the original"),
        Record("small", f"{flip(H, 3):016x}", 100, 100, "a thumbnail"),
        Record("exact", f"{H:016x}", 100, 100, "same bytes, another id"),
        # the same sample_id again (same content, another origin): the smallest repr is kept
        Record("other", f"{0x1111:016x}", 500, 500, "unrelated, copy 2"),
        Record("other", f"{0x1111:016x}", 500, 500, "unrelated, copy 1"),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(records) | SplitDuplicates(4, record_key)
        assert_that(
            out.kept | beam.Map(lambda r: (r.sample_id, r.caption)),
            equal_to([("big", "the original"), ("other", "unrelated, copy 1")]),
            label="kept",
        )
        assert_that(
            out.rejected | beam.MapTuple(lambda r, rej: (r.sample_id, r.caption, rej)),
            equal_to(
                [
                    ("small", "a thumbnail", Rejection("near_duplicate", "kept=big distance=1")),
                    ("exact", "same bytes, another id", Rejection("near_duplicate", "kept=big distance=0")),
                    ("other", "unrelated, copy 2", Rejection("near_duplicate", "kept=other distance=0")),
                ]
            ),
            label="rejected",
        )


def test_split_duplicates_order_key_picks_among_same_id_records():
    records = [Record("x", "0000000000000001", 10, 10, c) for c in ("b", "c", "a")]
    with TestPipeline() as p:
        out = p | beam.Create(records) | SplitDuplicates(4, record_key, order_key=lambda r: r.caption != "c")
        assert_that(out.kept | beam.Map(lambda r: r.caption), equal_to(["c"]), label="kept")
        assert_that(out.rejected | beam.MapTuple(lambda r, _rej: r.caption), equal_to(["a", "b"]), label="rejected")


@pytest.mark.parametrize("bad", [-1, 64])
def test_bad_max_hamming_fails_at_construction(bad):
    with pytest.raises(ValueError):
        NearDuplicates(bad)
    with pytest.raises(ValueError):
        SplitDuplicates(bad, record_key)


# --- orientations, exactness at scale, determinism --------------------------------------


def oriented_key(sample_id: str, im: Image.Image) -> DedupKey:
    from quarry.operators.phash import phash64_orientations

    hashes = phash64_orientations(im)
    return DedupKey(sample_id, hashes[0], im.width, im.height, hashes[1:])


def test_mirrored_and_turned_copies_collapse_when_keys_carry_orientations():
    from PIL import ImageOps

    original = textured(11, (640, 480))
    copies = {
        "mirrored": ImageOps.mirror(original),
        "rot90": original.rotate(90, expand=True),
        "rot180": original.rotate(180),
        "flipped": ImageOps.flip(original),
        "mirrored-small": jpeg_copy(ImageOps.mirror(original), (320, 240), 70),
        "rot270-small": jpeg_copy(original.rotate(270, expand=True), (240, 320), 70),
    }
    other = textured(12, (640, 480))
    # "a-original" wins the ties on pixels against its same-size copies by id.
    plain = [key_of("a-original", original), key_of("z-other", other)] + [key_of(k, im) for k, im in copies.items()]
    turned = [oriented_key("a-original", original), oriented_key("z-other", other)]
    turned += [oriented_key(k, im) for k, im in copies.items()]
    with TestPipeline() as p:
        drops_plain = p | "Plain" >> beam.Create(plain) | "DedupPlain" >> NearDuplicates(4)
        drops_turned = p | "Turned" >> beam.Create(turned) | "DedupTurned" >> NearDuplicates(4)
        assert_that(
            drops_plain | "CloseP" >> beam.MapTuple(lambda dropped, kept, d: (dropped, kept, d <= 4)),
            equal_to([("mirrored-small", "mirrored", True)]),
            label="without variants only the mirrored copy's own thumbnail collapses",
        )
        assert_that(
            drops_turned | "CloseT" >> beam.MapTuple(lambda dropped, kept, d: (dropped, kept, d <= 4)),
            equal_to([(k, "a-original", True) for k in copies]),
            label="with variants every copy names the original",
        )


def brute_drops(keys: list[DedupKey], max_hamming: int) -> list[tuple[str, str, int]]:
    """All-pairs reference: for each sample, its best-ranked neighbour under the orientation rule."""

    def hashes(k):
        return [(k.phash, False)] + [(v, True) for v in k.variants]

    by_id = {}
    for k in keys:
        by_id.setdefault(k.sample_id, k)
    ranked = sorted(by_id.values(), key=lambda k: rank_key(k.width, k.height, k.sample_id))
    drops = []
    for pos, a in enumerate(ranked):
        for b in ranked[:pos]:
            d = min(
                (hamming(x, y) for x, vx in hashes(a) for y, vy in hashes(b) if not (vx and vy)), default=99
            )
            if d <= max_hamming:
                drops.append((a.sample_id, b.sample_id, d))
                break
    return drops


def random_planted_keys(seed: int, n_clusters: int = 150) -> list[DedupKey]:
    """Random originals with 7 random variant hashes each; copies within 0..5 bits of an original's
    own hash or of one of its variants (a turned copy); shared band values so shards and runs are
    crowded; exact repeats and the same key twice."""
    rng = random.Random(seed)
    prefix = rng.getrandbits(16) << 48
    keys = []
    for c in range(n_clusters):
        own = (prefix | rng.getrandbits(48)) if rng.random() < 0.5 else rng.getrandbits(64)
        variants = tuple(rng.getrandbits(64) for _ in range(7)) if rng.random() < 0.7 else ()
        keys.append(DedupKey(f"c{c:03d}-0", own, rng.choice([100, 200]), 100, variants))
        for k in range(1, rng.choice([1, 2, 3, 5])):
            source = rng.choice((own,) + variants)
            h = source if rng.random() < 0.2 else flip(source, *rng.sample(range(64), rng.randint(1, 5)))
            copy_variants = tuple(rng.getrandbits(64) for _ in range(7)) if rng.random() < 0.5 else ()
            keys.append(DedupKey(f"c{c:03d}-{k}", h, rng.choice([100, 200, 300]), 100, copy_variants))
    keys.append(keys[3])
    return keys


@pytest.mark.parametrize("seed, max_hamming", [(1, 4), (2, 3), (3, 5), (4, 0)])
def test_beam_equals_all_pairs_on_random_and_planted_keys(seed, max_hamming):
    keys = random_planted_keys(seed)
    expected = brute_drops(keys, max_hamming)
    assert len(expected) > (10 if max_hamming else 3)
    with TestPipeline() as p:
        drops = p | beam.Create(keys) | NearDuplicates(max_hamming)
        assert_that(drops, equal_to(expected))


def test_same_drops_whatever_the_order_batching_and_sharding():
    """Which copy is kept depends on the data only: shuffled inputs, shard bits 0/3/6 and batches of
    any size give the same drops (Beam's bundles and chunk order differ between these runs)."""
    from quarry.pipelines import dedup

    keys = random_planted_keys(9)
    expected = brute_drops(keys, 4)
    for run, shard_bits in enumerate((0, 3, 6, 6)):
        shuffled = list(keys)
        random.Random(run).shuffle(shuffled)
        old = dedup.MAX_BATCH
        dedup.MAX_BATCH = [7, 50, 20_000, 1][run]
        try:
            with TestPipeline() as p:
                drops = p | beam.Create(shuffled, reshuffle=True) | NearDuplicates(4, shard_bits=shard_bits)
                assert_that(drops, equal_to(expected))
        finally:
            dedup.MAX_BATCH = old
