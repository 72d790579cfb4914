"""A path's kind from its suffix, in the order a reader asks."""

from __future__ import annotations

import pytest

from quarry.operators.inputs.kinds import TABLE_KINDS, TABLE_SUFFIXES, kind_of

READ = ("tar", "parquet", "jsonl", "image")


@pytest.mark.parametrize("path, kinds, suffixes, expected", [
    ("a/b.tar", READ, None, "tar"),
    ("a/b.TAR.GZ", READ, None, "tar"),
    ("b.tgz", READ, None, "tar"),
    ("b.parquet", READ, None, "parquet"),
    ("b.jsonl.gz", READ, None, "jsonl"),
    ("b.ndjson", READ, None, "jsonl"),
    ("photo.JPEG", READ, None, "image"),
    ("x.tiff", READ, None, "image"),
    ("dir.jpg/file", READ, None, None),
    ("notes.md", READ, None, None),
    ("b.json", READ, None, None),
    ("b.json", TABLE_KINDS, TABLE_SUFFIXES, "jsonl"),
    ("b.tar", TABLE_KINDS, TABLE_SUFFIXES, None),
    ("icon.svgz", ("svg", "tar"), None, "svg"),
    ("urls.txt", ("urls", "parquet", "jsonl", "html"), {"html": (".html", ".htm")}, "urls"),
    ("site/Page.HTM", ("urls", "parquet", "jsonl", "html"), {"html": (".html", ".htm")}, "html"),
    ("urls.txt", ("urls", "html"), {"html": (".txt",)}, "urls"),  # the first kind asked wins
])
def test_kind_of(path, kinds, suffixes, expected):
    assert kind_of(path, kinds, suffixes) == expected
