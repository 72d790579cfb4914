"""Single files read whole: an image with its sidecars, an SVG value, a saved HTML page, a URL list.

The opener is passed in (`read(path) -> bytes | why not`, `exists(path)`), so
these work on any file system the caller reaches.
"""

from __future__ import annotations

from typing import IO, Any, Callable, Iterator, NamedTuple, Optional, Union

from quarry.operators.inputs.records import ReadBytes

SIDECAR_BYTES = 1 << 20  # `stem.txt` / `stem.json` beside an image: read up to this


class ImageFile(NamedTuple):
    """A plain image file: its bytes (or why not), and the sidecars found beside it."""

    data: Union[bytes, str]
    sidecars: dict[str, bytes]  # extension -> bytes, for those that exist and read


def image_file(path: str, read: Callable[[str, int], Union[bytes, str]], exists: Callable[[str], bool],
               max_bytes: int, sidecars: tuple[str, ...] = ("txt", "json")) -> ImageFile:
    """`path` read up to `max_bytes`; then `stem.<ext>` for each sidecar extension that exists.

    Sidecars are read only when the image reads, each up to `SIDECAR_BYTES`; one
    that cannot be read counts as absent.
    """
    data = read(path, max_bytes)
    if isinstance(data, str):
        return ImageFile(data, {})
    stem = path.rsplit(".", 1)[0]
    found: dict[str, bytes] = {}
    for ext in sidecars:
        side = f"{stem}.{ext}"
        if exists(side):
            raw = read(side, SIDECAR_BYTES)
            if isinstance(raw, bytes):
                found[ext] = raw
    return ImageFile(data, found)


def svg_value(v: Any) -> Optional[bytes]:
    """SVG source from a cell or JSON field: text (encoded UTF-8) or bytes (as they are, maybe gzipped)."""
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    return None


def svg_field(obj: dict, fields: tuple[str, ...]) -> Optional[bytes]:
    """The SVG source in the first of `fields` that holds one."""
    return next((svg_value(obj[k]) for k in fields if svg_value(obj.get(k)) is not None), None)


def page_bytes(fh: IO[bytes], max_bytes: int) -> Optional[bytes]:
    """A saved page's bytes, or None when it is larger than `max_bytes` (never more than that held)."""
    data = fh.read(max_bytes + 1)
    return data if len(data) <= max_bytes else None


def url_lines(fh: IO[bytes]) -> Iterator[tuple[int, str]]:
    """(1-based line number, URL) of a URL list; blank lines and `#` comments skipped."""
    for lineno, raw in enumerate(iter(fh.readline, b""), start=1):
        line = raw.decode("utf-8", errors="replace").strip()
        if not line or line.startswith("#"):
            continue
        yield lineno, line


__all__ = ["ImageFile", "ReadBytes", "SIDECAR_BYTES", "image_file", "page_bytes", "svg_field", "svg_value",
           "url_lines"]
