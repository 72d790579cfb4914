"""Parquet of one opened file: the footer (column names and types), and rows streamed batch by batch.

Never the whole file: only the chosen columns, a batch at a time. pyarrow
raises OSError or ValueError (ArrowInvalid) for a file that is not Parquet or
has a corrupt page; callers turn that into a reject or a planning error.
"""

from __future__ import annotations

from typing import IO, Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq


def parquet_schema(fh: IO[bytes]) -> pa.Schema:
    """The Arrow schema in a Parquet file's footer."""
    return pq.ParquetFile(fh).schema_arrow


def parquet_names(fh: IO[bytes]) -> list[str]:
    """The column names in a Parquet file's footer."""
    return parquet_schema(fh).names


def parquet_rows(fh: IO[bytes], columns: Optional[Sequence[str]] = None,
                 batch_size: int = 1024) -> Iterator[tuple[int, dict]]:
    """(0-based row number, row) of a Parquet file, `batch_size` rows in memory at a time.

    Only `columns` are read, those of them the file has (once each); all columns without `columns`.
    """
    pf = pq.ParquetFile(fh)
    names = pf.schema_arrow.names
    cols = list(dict.fromkeys(c for c in columns if c in names)) if columns else None
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=cols):
        for rec in batch.to_pylist():
            yield row, rec
            row += 1
