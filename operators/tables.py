"""Rows of Parquet and JSONL files as plain generators (no Beam), shared by every DAG's readers."""

from __future__ import annotations

import json
from typing import IO, Iterator, Optional, Sequence, Union

import pyarrow.parquet as pq


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


def table_rows(fh: IO[bytes], kind: str, columns: Optional[Sequence[str]] = None,
               batch_size: int = 1024) -> Iterator[tuple[str, Union[dict, str]]]:
    """(key, row or why the line is not a JSON object) of one "parquet" or "jsonl" file, streamed.

    Keys are "row:N" (0-based) for Parquet and "line:N" (1-based) for JSONL.
    Parquet reads only `columns` (those the file has); pyarrow raises
    OSError/ValueError for a corrupt file.
    """
    if kind == "jsonl":
        for lineno, rec in jsonl_objects(fh):
            yield f"line:{lineno}", rec
        return
    pf = pq.ParquetFile(fh)
    names = pf.schema_arrow.names
    cols = list(dict.fromkeys(c for c in columns if c in names)) if columns else None
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=cols):
        for rec in batch.to_pylist():
            yield f"row:{row}", rec
            row += 1


def first_objects(fh: IO[bytes], lines: int = 100) -> Iterator[dict]:
    """The JSON objects among the first `lines` lines of a JSONL file (to learn its columns)."""
    for lineno, rec in jsonl_objects(fh):
        if lineno > lines:
            return
        if isinstance(rec, dict):
            yield rec
