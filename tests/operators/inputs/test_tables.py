"""Rows of Parquet and JSONL files: keys, bad lines, column selection."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from quarry.operators.inputs.jsonl import first_objects
from quarry.operators.inputs.tables import table_rows


def test_jsonl_rows_keep_line_numbers_and_say_why_a_line_is_not_an_object():
    fh = io.BytesIO(b'{"q": "a"}\n\nnot json\n[1, 2]\n{"q": "b"}\n')
    rows = list(table_rows(fh, "jsonl"))
    assert rows[0] == ("line:1", {"q": "a"}) and rows[-1] == ("line:5", {"q": "b"})
    assert [k for k, _ in rows] == ["line:1", "line:3", "line:4", "line:5"]
    assert rows[1][1].startswith("Expecting value") and rows[2][1] == "line is a JSON list, not an object"


def test_parquet_rows_read_only_the_columns_the_file_has():
    buf = io.BytesIO()
    pq.write_table(pa.table({"q": ["a", "b", "c"], "big": [b"x", b"y", b"z"]}), buf)
    buf.seek(0)
    rows = list(table_rows(buf, "parquet", ["q", "missing", "q"], batch_size=2))
    assert rows == [("row:0", {"q": "a"}), ("row:1", {"q": "b"}), ("row:2", {"q": "c"})]


def test_first_objects_stop_after_the_given_lines():
    fh = io.BytesIO(b"".join(b'{"n": %d}\n' % i for i in range(10)))
    assert [r["n"] for r in first_objects(fh, lines=3)] == [0, 1, 2]
