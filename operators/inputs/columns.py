"""Which column of a table holds what: the names readers look for, and sniffing by name or Arrow type."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import pyarrow as pa

IMAGE_COLUMNS = ("image", "jpg", "png", "webp", "image_bytes", "bytes", "img")
CAPTION_COLUMNS = ("caption", "text", "txt", "alt", "TEXT", "CAPTION")
SVG_COLUMNS = ("svg", "svg_code", "code", "text")
IMAGE_PATH_FIELDS = ("image", "image_path", "path", "file", "file_name")  # JSONL fields naming an image file
META_FIELDS = ("source", "url", "URL", "license", "LICENSE")


def sniff(names: Sequence[str], candidates: Iterable[str]) -> Optional[str]:
    """The first of `candidates` that is one of `names`."""
    return next((c for c in candidates if c in names), None)


def present(names: Sequence[str], wanted: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """The `wanted` columns a file has, in `wanted` order, without `exclude`."""
    skip = set(exclude)
    return [c for c in wanted if c in names and c not in skip]


def is_text_type(t: pa.DataType) -> bool:
    """A string column, or a list of strings."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return True
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and is_text_type(t.value_type)


def is_image_type(t: pa.DataType) -> bool:
    """A binary column, a `{bytes, ...}` struct (Hugging Face Image), or a list of them."""
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    if pa.types.is_struct(t):
        return any(t.field(i).name == "bytes" and is_image_type(t.field(i).type) for i in range(t.num_fields))
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and is_image_type(t.value_type)


def is_text_value(v: Any) -> bool:
    """A JSON value that is text: a string, or a non-empty list of strings."""
    return isinstance(v, str) or (isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v))


def first_values(objects: Iterable[dict]) -> dict[str, Any]:
    """Each key's first value over some JSON objects (the columns of a JSONL file, in first-seen order)."""
    first: dict[str, Any] = {}
    for rec in objects:
        for k, v in rec.items():
            first.setdefault(k, v)
    return first
