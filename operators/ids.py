"""Stable ids and id-seeded randomness (never global RNG state)."""

from __future__ import annotations

import hashlib

_ID_BYTES = 16  # 128-bit: collision-free at billions of samples


def content_id(*parts: bytes | str) -> str:
    """A hex id from the content parts, length-prefixed so ('ab','c') != ('a','bc')."""
    h = hashlib.blake2b(digest_size=_ID_BYTES)
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def digest(data: bytes) -> str:
    """Content digest of a blob (exact-duplicate key)."""
    return hashlib.blake2b(data, digest_size=_ID_BYTES).hexdigest()


def seeded_uniform(*parts: bytes | str) -> float:
    """A uniform float in [0, 1) that depends only on `parts` (reruns agree)."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return int.from_bytes(h.digest(), "little") / 2**64


def stable_bucket(key: str, buckets: int) -> int:
    """Which of `buckets` a key falls in, the same on every machine and run."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % buckets
