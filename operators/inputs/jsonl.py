"""JSON lines of one opened file: objects with their line numbers, the first few, or lines of bounded size."""

from __future__ import annotations

import json
from typing import IO, Iterator, Optional, Union

_CHUNK = 1 << 20  # bytes read at a time by `bounded_lines`


def jsonl_lines(fh: IO[bytes]) -> Iterator[str]:
    """Text lines of a binary handle. Line by line from the raw handle: Beam's
    CompressedFile (.jsonl.gz) is not a full io object, so io.TextIOWrapper cannot wrap it."""
    for raw in iter(fh.readline, b""):
        yield raw.decode("utf-8", errors="replace")


def jsonl_objects(fh: IO[bytes]) -> Iterator[tuple[int, Union[dict, str]]]:
    """(1-based line number, the line's JSON object or why it is not one); blank lines skipped."""
    for lineno, raw in enumerate(jsonl_lines(fh), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            yield lineno, f"{e.msg} at column {e.colno}"
            continue
        yield lineno, rec if isinstance(rec, dict) else f"line is a JSON {type(rec).__name__}, not an object"


def first_objects(fh: IO[bytes], lines: int = 100) -> Iterator[dict]:
    """The JSON objects among the first `lines` lines of a JSONL file (to learn its columns)."""
    for lineno, rec in jsonl_objects(fh):
        if lineno > lines:
            return
        if isinstance(rec, dict):
            yield rec


def bounded_lines(fh: IO[bytes], limit: int) -> Iterator[tuple[int, Optional[bytes], int]]:
    """(1-based line number, the line, its length) per line; the line is None when
    longer than `limit`, whose bytes are skipped without being held (bounded memory)."""
    buf = bytearray()
    lineno = 0
    over = 0  # > 0 while skipping an overlong line: its length so far
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            break
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            if over:
                over += len(piece)
            else:
                buf += piece
                if len(buf) > limit:
                    over, buf = len(buf), bytearray()
            if nl < 0:
                break
            lineno += 1
            yield (lineno, None, over) if over else (lineno, bytes(buf), len(buf))
            buf, over = bytearray(), 0
            start = nl + 1
    if buf or over:
        lineno += 1
        yield (lineno, None, over) if over else (lineno, bytes(buf), len(buf))


def bounded_objects(fh: IO[bytes], limit: int) -> Iterator[tuple[int, Union[dict, str, None], int]]:
    """(line number, the line's JSON object | why it is not one | None when over `limit` bytes, its length);
    blank lines skipped. Memory stays bounded by `limit` however long a line is."""
    for lineno, raw, size in bounded_lines(fh, limit):
        if raw is None:
            yield lineno, None, size
            continue
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            yield lineno, f"not JSON ({e})"[:300], size
            continue
        if not isinstance(rec, dict):
            yield lineno, f"line is a JSON {type(rec).__name__}, not an object", size
            continue
        yield lineno, rec, size
