"""JSON lines of one opened file: objects with their line numbers, the first few, or lines of bounded size."""

from __future__ import annotations

import json
from typing import IO, Iterator, Optional, Union

from quarry.operators.inputs import reasons

_CHUNK = 1 << 20  # bytes read at a time by `bounded_lines`
MAX_LINE_BYTES = 16 << 20  # a longer JSONL line is skipped unread by `jsonl_objects` (record_too_large)
JSON_ERRORS = (json.JSONDecodeError, RecursionError)  # RecursionError: nesting deeper than the interpreter's limit


class LineTooLong(str):
    """Why a JSONL line was not parsed: it is longer than the reader's limit (its bytes were never held)."""


def line_reason(why: str) -> str:
    """The read reason for a line that gave no object: `record_too_large` for a `LineTooLong`, else `invalid_json`."""
    return reasons.RECORD_TOO_LARGE if isinstance(why, LineTooLong) else reasons.INVALID_JSON


def _not_json(e: Exception) -> str:
    if isinstance(e, RecursionError):
        return "JSON nested too deeply"
    return f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else f"not JSON ({e})"[:300]


def jsonl_objects(fh: IO[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[tuple[int, Union[dict, str]]]:
    """(1-based line number, the line's JSON object or why it is not one); blank lines skipped.

    A line longer than `limit` bytes is skipped without being held (its reason is a `LineTooLong`), so
    memory stays bounded however long a line is (a 1 GiB line of a gzip bomb included).
    """
    for lineno, raw, size in bounded_lines(fh, limit):
        if raw is None:
            yield lineno, LineTooLong(f"line of {size} bytes is longer than the {limit} bytes a JSONL line may have")
            continue
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8", errors="replace"))
        except JSON_ERRORS as e:
            yield lineno, _not_json(e)
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
    # read1 where there is one: a gzip stream that breaks off then loses only its last buffer, not the
    # lines decompressed earlier in the same 1 MiB read
    read = getattr(fh, "read1", None) or fh.read
    while True:
        chunk = read(_CHUNK)
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
        except (*JSON_ERRORS, UnicodeDecodeError) as e:
            yield lineno, (_not_json(e) if isinstance(e, RecursionError) else f"not JSON ({e})"[:300]), size
            continue
        if not isinstance(rec, dict):
            yield lineno, f"line is a JSON {type(rec).__name__}, not an object", size
            continue
        yield lineno, rec, size
