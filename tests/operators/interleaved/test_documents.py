"""Document parsing in the three shapes, validation, density, context, tiers."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from quarry.operators.base import Rejection
from quarry.operators.interleaved.documents import (
    IMAGE_DENSE,
    INVALID_DOCUMENT,
    POSITION_OUT_OF_RANGE,
    TOO_MANY_IMAGES,
    UNEQUAL_LENGTHS,
    UNKNOWN_SHAPE,
    ImageRef,
    RawDocument,
    check_density,
    clean_text,
    count_words,
    diagram_score,
    neighbour_texts,
    parse_document,
    tail_flags,
    tier_for,
)
from quarry.operators.interleaved.text_quality import TOO_MUCH_TEXT
from quarry.schemas.interleaved import DensityConfig, DocumentConfig, TierConfig

CFG = DocumentConfig()
FILES = {"a.jpg": b"AAAA", "b.png": b"BBBB"}


def load(path: str):
    return FILES.get(path, f"cannot read {path}: no such file")


def parse(rec, key="line:1", cfg=CFG):
    return parse_document(rec, "docs.jsonl", key, load, cfg)


def shape_of(doc: RawDocument) -> list:
    return [s if isinstance(s, str) else (s.data, s.missing != "") for s in doc.segments]


def test_obelics_shape():
    doc = parse({"texts": ["intro", None, "outro"], "images": [None, "a.jpg", None],
                 "general_metadata": '{"url": "https://example.org/p"}'})
    assert doc.shape == "obelics" and doc.url == "https://example.org/p"
    assert shape_of(doc) == ["intro", (b"AAAA", False), "outro"]


def test_mmc4_shape_places_each_image_before_its_sentence():
    doc = parse({"url": "https://e.org", "text_list": ["s0", "s1", "s2"],
                 "image_info": [{"image_name": "b.png", "matched_text_index": 2, "raw_url": "https://e.org/b.png"},
                                {"image_name": "a.jpg", "matched_text_index": 0}]})
    assert doc.shape == "mmc4"
    assert shape_of(doc) == [(b"AAAA", False), "s0", "s1", (b"BBBB", False), "s2"]
    assert doc.images[1].url == "https://e.org/b.png"


def test_segments_shape_and_image_encodings():
    jpeg = b"\xff\xd8 fake jpeg"
    doc = parse({"segments": [
        {"type": "text", "text": "t"},
        {"type": "image", "path": "a.jpg"},
        {"type": "image", "image": {"bytes": b"raw", "path": None}},
        {"type": "image", "image": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()},
        {"type": "image", "url": "https://cdn.example.org/x.jpg"},
        {"type": "image", "path": "gone.jpg"},
        {"text": "untyped text"},
    ]})
    assert doc.shape == "segments"
    assert shape_of(doc) == ["t", (b"AAAA", False), (b"raw", False), (jpeg, False), (None, True), (None, True),
                             "untyped text"]
    assert "remote URL not fetched" in doc.images[3].missing and doc.images[3].url == "https://cdn.example.org/x.jpg"
    assert "no such file" in doc.images[4].missing


@pytest.mark.parametrize("rec, reason, detail", [
    ({"texts": ["a", None], "images": [None, "a.jpg", None]}, UNEQUAL_LENGTHS, "len(texts)=2 != len(images)=3"),
    ({"texts": ["a", "b"], "images": [None, "a.jpg"]}, INVALID_DOCUMENT, "position 1 holds both a text and an image"),
    ({"texts": [None], "images": [None]}, INVALID_DOCUMENT, "position 0 holds neither a text nor an image"),
    ({"texts": "abc", "images": []}, INVALID_DOCUMENT, "texts/images must be lists, got str/list"),
    ({"text_list": ["a"], "image_info": [{"image_name": "a.jpg", "matched_text_index": 1}]}, POSITION_OUT_OF_RANGE,
     "image_info[0].matched_text_index=1 outside text_list[0:1]"),
    ({"text_list": ["a"], "image_info": [{"image_name": "a.jpg", "matched_text_index": -1}]}, POSITION_OUT_OF_RANGE,
     None),
    ({"text_list": ["a"], "image_info": [{"image_name": "a.jpg", "matched_text_index": "0"}]}, POSITION_OUT_OF_RANGE,
     None),
    ({"text_list": ["a"], "image_info": [{"image_name": "a.jpg", "matched_text_index": True}]}, POSITION_OUT_OF_RANGE,
     None),
    ({"text_list": ["a"], "image_info": [{"image_name": "a.jpg"}]}, POSITION_OUT_OF_RANGE, None),
    ({"text_list": ["a", 3], "image_info": []}, INVALID_DOCUMENT, "text_list holds a non-string"),
    ({"segments": [{"type": "video", "src": "x"}]}, INVALID_DOCUMENT, "segments[0] has type 'video' (text or image)"),
    ({"segments": "text"}, INVALID_DOCUMENT, None),
    ({"segments": [3]}, INVALID_DOCUMENT, None),
    ({"title": "no shape"}, UNKNOWN_SHAPE, None),
])
def test_bad_documents(rec, reason, detail):
    r = parse(rec)
    assert isinstance(r, Rejection) and r.reason == reason, r
    if detail is not None:
        assert r.detail == detail


def test_size_caps_are_checked_before_the_work():
    cfg = DocumentConfig(max_text_chars=100, max_images=2)
    assert parse({"segments": [{"text": "x" * 101}]}, cfg=cfg).reason == TOO_MUCH_TEXT
    assert parse({"texts": ["x" * 60, "y" * 41], "images": [None, None]}, cfg=cfg).reason == TOO_MUCH_TEXT
    calls = []

    def counting_load(path):
        calls.append(path)
        return b"x"

    many = {"segments": [{"type": "image", "path": "a.jpg"}] * 3}
    r = parse_document(many, "d.jsonl", "k", counting_load, cfg)
    assert r.reason == TOO_MANY_IMAGES and calls == []  # no image was read
    assert parse({"text_list": ["a"], "image_info": [{"image_name": "a.jpg", "matched_text_index": 0}] * 3},
                 cfg=cfg).reason == TOO_MANY_IMAGES


def test_document_ids_are_stable_and_follow_content_and_position():
    rec = {"segments": [{"text": "hello"}, {"type": "image", "path": "a.jpg"}]}
    a, b = parse(rec), parse(dict(rec))
    assert a.sample_id == b.sample_id and len(a.sample_id) == 32
    assert parse(rec, key="line:2").sample_id != a.sample_id
    assert parse({"segments": [{"text": "hello"}, {"type": "image", "path": "b.png"}]}).sample_id != a.sample_id
    assert parse({"segments": [{"text": "hello!"}, {"type": "image", "path": "a.jpg"}]}).sample_id != a.sample_id


def test_clean_text_strips_html_and_drops_empty_segments():
    img = ImageRef(b"x")
    doc = RawDocument("id", "k", "segments", ["<p>Hello <b>there</b></p>", img, "  ", "<script>x()</script>", "plain"])
    out = clean_text(doc, strip=True)
    assert out.segments == ["Hello there", img, "plain"] and out.html_stripped == 2
    assert out.joined == "Hello there\n\nplain"
    raw = clean_text(doc, strip=False)
    assert raw.texts[0] == "<p>Hello <b>there</b></p>" and raw.html_stripped == 0


def test_count_words():
    assert count_words("Two words") == 2
    assert count_words("  ") == 0
    assert count_words("猫が好き") == 4  # each Han/kana character is a word


@pytest.mark.parametrize("words, images, dense", [
    (30, 6, True),  # a photo album: 5 words per image
    (200, 6, False),
    (5, 1, False),  # one image: not an album, whatever the text (the text filters judge it)
    (39, 2, True),
    (40, 2, False),
    (0, 0, False),
])
def test_density(words, images, dense):
    r = check_density(words, images, DensityConfig())
    assert (r is not None) == dense
    if dense:
        assert r.reason == IMAGE_DENSE
    assert check_density(words, images, DensityConfig(enabled=False)) is None


def test_tail_flags_and_neighbours():
    img = ImageRef(b"x")
    long = "one two three four five six seven eight nine ten eleven"
    segs = [img, long, img, "short caption", img, long, img, "Follow us", img]
    assert tail_flags(segs, 10) == [False, False, False, True, True]
    assert neighbour_texts(segs, 2, 3, 2) == ["nine ten eleven", "short caption"]
    assert neighbour_texts(segs, 2, 3, 1) == ["nine ten eleven"]
    assert neighbour_texts(segs, 0, 2, 1) == ["one two"]  # nothing before: the paragraph after
    assert neighbour_texts([img], 0, 5, 2) == []


def _chart() -> Image.Image:
    im = Image.new("RGB", (300, 200), "white")
    d = ImageDraw.Draw(im)
    for i, (v, c) in enumerate(zip([50, 120, 90], ["red", "blue", "green"])):
        d.rectangle([30 + 80 * i, 190 - v, 80 + 80 * i, 190], fill=c)
    return im


def test_diagram_score_separates_charts_from_photos():
    from importlib import resources

    assert diagram_score(_chart()) > 0.9
    buf = io.BytesIO()
    _chart().save(buf, "JPEG", quality=75)
    assert diagram_score(Image.open(buf)) > 0.8
    for name in ("astronaut.jpg", "coffee.jpg", "chelsea.jpg", "coins.jpg", "grass.jpg", "brick.jpg", "rocket.jpg",
                 "camera.jpg", "cell.jpg", "hubble_deep_field.jpg"):
        data = resources.files("quarry.dags").joinpath("demo_data", name).read_bytes()
        assert diagram_score(Image.open(io.BytesIO(data))) < TierConfig().diagram_score, name
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert diagram_score(noise) < 0.05


@pytest.mark.parametrize("words, scores, tier", [
    (400, [0.9, 0.8], "very_hard"),  # charts with explanation
    (100, [0.9, 0.1], "hard"),  # half the images are charts, but 50 words per image < 80
    (400, [0.1], "hard"),
    (100, [0.1], "medium"),
    (40, [0.1], "easy"),
    (20, [0.1, 0.2], "very_easy"),
    (50, [], "medium"),  # text-only
])
def test_tiers(words, scores, tier):
    got, per_image, share = tier_for(words, scores, TierConfig())
    assert got == tier
    if scores:
        assert per_image == words / len(scores)
        assert share == sum(s >= 0.75 for s in scores) / len(scores)
    else:
        assert per_image is None and share is None


def test_control_characters_and_lone_surrogates_are_cleaned():
    doc = parse({"url": "https://e.org/\ud800", "segments": [{"text": "bad\x00 text\x0b with \ud83d alone"},
                                                           {"text": "<p>tag\x01</p>"}]})
    out = clean_text(doc, strip=True)
    assert out.texts == ["bad text with \ufffd alone", "tag"]
    assert doc.url == "https://e.org/\ufffd"
    "\n".join(out.texts).encode("utf-8")
