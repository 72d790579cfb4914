"""Image-text records from parsed records: (input, expected reason) tables for the caption and ocr readers."""

from __future__ import annotations

import pytest

from quarry.operators.inputs import reasons as r
from quarry.operators.inputs.files import ImageFile
from quarry.operators.inputs.image_text import CaptionRecords, PictureRecords, caption_of
from quarry.operators.inputs.records import Unreadable
from quarry.operators.inputs.tar import TarDamage, TarSample
from quarry.schemas.common import ImageText

CAPTION = CaptionRecords("/in/shard.tar", "web", None, 100)
PICTURE = PictureRecords("/in/shard.tar", "web", 100)


def outcome(rec):
    return rec.reason if isinstance(rec, Unreadable) else (rec.caption, rec.source)


@pytest.mark.parametrize("item, expected", [
    (TarSample("k", {"jpg": b"J", "txt": b" a cap "}, None, {}), ("a cap", "web")),
    (TarSample("k", {"jpg": b"J"}, None, {"caption": "from json", "source": "shop"}), ("from json", "shop")),
    (TarSample("k", {"jpg": b"J", "txt": b"\xff"}, None, {}), r.CAPTION_NOT_TEXT),
    (TarSample("k", {"jpg": b"J"}, None, {}), r.MISSING_CAPTION),
    (TarSample("k", {"txt": b"c"}, None, {}), r.MISSING_IMAGE),
    (TarSample("k", {"jpg": None, "txt": b"c"}, 500, {}), r.FILE_TOO_LARGE),
    (TarSample("k", {"jpg": b"J"}, None, "metadata JSON is not an object"), r.INVALID_METADATA),
    (TarDamage("k#unreadable", "ReadError: x"), r.UNREADABLE_TAR),
])
def test_caption_from_tar(item, expected):
    assert outcome(CAPTION.from_tar(item)) == expected


@pytest.mark.parametrize("item, expected", [
    (TarSample("k", {"png": b"P"}, None, {"text": "t"}), ("t", "web")),
    (TarSample("k", {"png": b"P"}, None, {}), ("", "web")),
    (TarSample("k", {"png": None}, 500, {}), r.FILE_TOO_LARGE),
    (TarSample("k", {"json": b"{}"}, None, {}), r.MISSING_IMAGE),
])
def test_picture_from_tar(item, expected):
    assert outcome(PICTURE.from_tar(item)) == expected


@pytest.mark.parametrize("rec, expected", [
    ({"image": b"J", "caption": " c ", "source": "s"}, ("c", "s")),
    ({"image": {"bytes": b"J", "path": None}, "caption": "c"}, ("c", "web")),
    ({"image": None, "caption": "c"}, r.MISSING_IMAGE),
    ({"image": b"J", "caption": None}, r.MISSING_CAPTION),
    ({"image": b"J" * 101, "caption": "c"}, r.FILE_TOO_LARGE),
])
def test_caption_from_row(rec, expected):
    assert outcome(CAPTION.from_row(0, rec, "image", "caption")) == expected


@pytest.mark.parametrize("obj, expected", [
    ({"image": "a.jpg", "caption": "c"}, ("c", "web")),
    ({"path": "missing.jpg", "caption": "c"}, r.MISSING_IMAGE),
    ({"image": "big.jpg", "caption": "c"}, r.FILE_TOO_LARGE),
    ({"caption": "c"}, r.MISSING_IMAGE),
    ({"image": "a.jpg"}, r.MISSING_CAPTION),
    ("Expecting value at column 1", r.INVALID_JSON),
])
def test_caption_from_line(obj, expected):
    def load(rel):
        return {"a.jpg": b"J"}.get(rel) or ("big.jpg is larger than 100 bytes" if rel == "big.jpg"
                                           else f"cannot read {rel}: gone")

    assert outcome(CAPTION.from_line(3, obj, load)) == expected


def test_keys_ids_and_sources_stay_what_they_were():
    one = CAPTION.from_line(3, {"image": "a.jpg", "caption": "c", "id": 7}, lambda rel: b"J")
    assert isinstance(one, ImageText) and one.origin.key == "line:3:7"
    bad = CAPTION.from_row(4, {"image": None, "caption": "c", "source": "s"}, "image", "caption")
    assert bad == Unreadable("row:4", r.MISSING_IMAGE, "column 'image' holds NoneType", "s")


@pytest.mark.parametrize("f, expected", [
    (ImageFile(b"J", {"txt": b"side"}), ("side", "web")),
    (ImageFile(b"J", {"json": b"[1]"}), r.INVALID_METADATA),
    (ImageFile("x is larger than 100 bytes", {}), r.FILE_TOO_LARGE),
    (ImageFile("cannot read x: gone", {}), r.MISSING_IMAGE),
])
def test_caption_from_image_file(f, expected):
    assert outcome(CAPTION.from_image_file(f)) == expected


@pytest.mark.parametrize("f, expected", [
    (ImageFile(b"J", {"json": b""}), ("", "web")),  # an empty sidecar is no metadata for ocr_search
    (ImageFile(b"J", {"json": b'{"source": "maps"}'}), ("", "maps")),
    (ImageFile(b"J", {"json": b"nope"}), r.INVALID_METADATA),
])
def test_picture_from_image_file(f, expected):
    assert outcome(PICTURE.from_image_file(f)) == expected


@pytest.mark.parametrize("raw, meta, field, expected", [
    (b" x ", {}, None, "x"),
    (None, {"alt": "a", "text": "t"}, None, "t"),
    (None, {"alt": "a", "mine": "m"}, "mine", "m"),
    (None, {}, None, (r.MISSING_CAPTION, "no caption file or caption field")),
])
def test_caption_of(raw, meta, field, expected):
    assert caption_of(raw, meta, field) == expected


def test_reasons_are_listed_once():
    assert len(set(r.REASONS)) == len(r.REASONS)
    assert {r.UNREADABLE_TAR, r.MISSING_IMAGE, r.CAPTION_NOT_TEXT, r.INVALID_METADATA, r.MISSING_SVG} <= set(r.REASONS)
