"""Column sniffing: by name, by Arrow type, by the first JSON values."""

from __future__ import annotations

import pyarrow as pa
import pytest

from quarry.operators.inputs.columns import (
    IMAGE_COLUMNS,
    first_values,
    is_image_type,
    is_text_type,
    is_text_value,
    present,
    sniff,
)


@pytest.mark.parametrize("names, expected", [
    (["caption", "jpg", "image"], "image"),
    (["img", "caption"], "img"),
    (["pixels"], None),
])
def test_sniff(names, expected):
    assert sniff(names, IMAGE_COLUMNS) == expected


def test_present_keeps_the_wanted_order():
    assert present(["b", "a", "c"], ["a", "b", "z"], exclude=["b"]) == ["a"]


@pytest.mark.parametrize("t, text, image", [
    (pa.string(), True, False),
    (pa.large_string(), True, False),
    (pa.list_(pa.string()), True, False),
    (pa.binary(), False, True),
    (pa.struct([("bytes", pa.binary()), ("path", pa.string())]), False, True),
    (pa.list_(pa.struct([("bytes", pa.binary())])), False, True),
    (pa.struct([("path", pa.string())]), False, False),
    (pa.int64(), False, False),
])
def test_arrow_types(t, text, image):
    assert (is_text_type(t), is_image_type(t)) == (text, image)


@pytest.mark.parametrize("v, expected", [("a", True), (["a", "b"], True), ([], False), (["a", 1], False), (3, False)])
def test_is_text_value(v, expected):
    assert is_text_value(v) is expected


def test_first_values_keep_each_keys_first_value():
    assert first_values([{"a": 1}, {"a": 2, "b": "x"}]) == {"a": 1, "b": "x"}
