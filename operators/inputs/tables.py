"""Rows of one table file, Parquet or JSONL, under one key scheme: `row:N` (0-based) and `line:N` (1-based)."""

from __future__ import annotations

from typing import IO, Iterator, Optional, Sequence, Union

from quarry.operators.inputs.jsonl import first_objects, jsonl_objects
from quarry.operators.inputs.parquet import parquet_names, parquet_rows


def table_rows(fh: IO[bytes], kind: str, columns: Optional[Sequence[str]] = None,
               batch_size: int = 1024) -> Iterator[tuple[str, Union[dict, str]]]:
    """(key, row or why the line is not a JSON object) of one "parquet" or "jsonl" file, streamed.

    Parquet reads only `columns` (those the file has); pyarrow raises
    OSError/ValueError for a corrupt file.
    """
    if kind == "jsonl":
        for lineno, rec in jsonl_objects(fh):
            yield f"line:{lineno}", rec
        return
    for row, rec in parquet_rows(fh, columns, batch_size):
        yield f"row:{row}", rec


def table_columns(fh: IO[bytes], kind: str) -> list[str]:
    """Column names of a Parquet file (footer) or a JSONL file (union of the first 100 objects' keys)."""
    if kind == "parquet":
        return parquet_names(fh)
    names: dict[str, None] = {}
    for rec in first_objects(fh):
        names.update(dict.fromkeys(rec))
    return list(names)


def first_columns(fh: IO[bytes], kind: str) -> Optional[list[str]]:
    """Column names of a Parquet file (footer), or the keys of a JSONL file's first object (None if it has none)."""
    if kind == "parquet":
        return parquet_names(fh)
    first = next(first_objects(fh), None)
    return list(first) if first is not None else None
