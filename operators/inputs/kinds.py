"""What kind of input a path is, from its suffix: one table of suffixes for every reader."""

from __future__ import annotations

from typing import Mapping, Optional

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PARQUET_SUFFIXES = (".parquet",)
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
SVG_SUFFIXES = (".svg", ".svgz")
URL_LIST_SUFFIXES = (".txt", ".urls", ".lst")

SUFFIXES: dict[str, tuple[str, ...]] = {
    "tar": TAR_SUFFIXES,
    "parquet": PARQUET_SUFFIXES,
    "jsonl": JSONL_SUFFIXES,
    "image": tuple(f".{e}" for e in IMAGE_EXTS),
    "svg": SVG_SUFFIXES,
    "urls": URL_LIST_SUFFIXES,
}
TABLE_KINDS = ("parquet", "jsonl")
TABLE_SUFFIXES = {"jsonl": JSONL_SUFFIXES + (".json",)}  # a table reader takes a .json file of JSON lines too


def kind_of(path: str, kinds: tuple[str, ...],
            suffixes: Optional[Mapping[str, tuple[str, ...]]] = None) -> Optional[str]:
    """The first of `kinds` whose suffixes `path` ends with (case-insensitive); None for none of them.

    `suffixes` adds kinds of a reader's own or replaces the table's suffixes of a kind.
    """
    low = path.lower()
    table = {**SUFFIXES, **(suffixes or {})}
    for kind in kinds:
        if low.endswith(tuple(s.lower() for s in table[kind])):
            return kind
    return None
