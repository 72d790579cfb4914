"""Single files: an image with sidecars (opener passed in), SVG values, saved pages, URL lists."""

from __future__ import annotations

import io

import pytest

from quarry.operators.inputs.files import ImageFile, image_file, page_bytes, svg_field, svg_value, url_lines

FILES = {"a.jpg": b"JPEG", "a.txt": b"cap", "a.json": b"{}", "b.png": b"PNG", "b.json": b"x" * 10}


def read(path: str, limit: int):
    data = FILES.get(path)
    if data is None:
        return f"cannot read {path}: gone"
    return data if len(data) <= limit else f"{path} is larger than {limit} bytes"


@pytest.mark.parametrize("path, limit, sidecars, expected", [
    ("a.jpg", 100, ("txt", "json"), ImageFile(b"JPEG", {"txt": b"cap", "json": b"{}"})),
    ("a.jpg", 100, ("json",), ImageFile(b"JPEG", {"json": b"{}"})),
    ("a.jpg", 2, ("txt", "json"), ImageFile("a.jpg is larger than 2 bytes", {})),
    ("c.jpg", 100, ("txt",), ImageFile("cannot read c.jpg: gone", {})),
])
def test_image_file(path, limit, sidecars, expected):
    assert image_file(path, read, FILES.__contains__, limit, sidecars) == expected


@pytest.mark.parametrize("v, expected", [("<svg/>", b"<svg/>"), (b"\x1f\x8b", b"\x1f\x8b"), (3, None), (None, None)])
def test_svg_value(v, expected):
    assert svg_value(v) == expected


def test_svg_field_takes_the_first_field_holding_svg():
    assert svg_field({"svg": None, "code": "<svg/>", "text": "x"}, ("svg", "code", "text")) == b"<svg/>"
    assert svg_field({"svg": 1}, ("svg",)) is None


def test_page_bytes_and_url_lines():
    assert page_bytes(io.BytesIO(b"12345"), 5) == b"12345" and page_bytes(io.BytesIO(b"123456"), 5) is None
    fh = io.BytesIO(b"# comment\nhttps://a/\n\n  https://b/  \n")
    assert list(url_lines(fh)) == [(2, "https://a/"), (4, "https://b/")]
