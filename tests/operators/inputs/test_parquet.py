"""Parquet: footers, and rows streamed from the chosen columns."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quarry.operators.inputs.parquet import parquet_names, parquet_rows, parquet_schema


def parquet(table: pa.Table) -> io.BytesIO:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    buf.seek(0)
    return buf


TABLE = pa.table({"q": ["a", "b", "c"], "big": [b"x", b"y", b"z"], "n": [1, 2, 3]})


@pytest.mark.parametrize("columns, expected", [
    (None, [(0, {"q": "a", "big": b"x", "n": 1}), (1, {"q": "b", "big": b"y", "n": 2}),
            (2, {"q": "c", "big": b"z", "n": 3})]),
    (["n", "q"], [(0, {"n": 1, "q": "a"}), (1, {"n": 2, "q": "b"}), (2, {"n": 3, "q": "c"})]),
    (["q", "q", "missing"], [(0, {"q": "a"}), (1, {"q": "b"}), (2, {"q": "c"})]),
])
def test_rows_from_chosen_columns(columns, expected):
    assert list(parquet_rows(parquet(TABLE), columns, batch_size=2)) == expected


def test_footer_names_and_types():
    assert parquet_names(parquet(TABLE)) == ["q", "big", "n"]
    assert parquet_schema(parquet(TABLE)).field("big").type == pa.binary()


def test_not_parquet_raises_what_readers_catch():
    with pytest.raises((OSError, ValueError)):
        list(parquet_rows(io.BytesIO(b"PAR1 not really")))
