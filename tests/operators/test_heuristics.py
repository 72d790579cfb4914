"""Heuristic filters: tables of (input, expected reason)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from quarry.operators.decode import DecodedImage
from quarry.operators.heuristics import (
    CaptionStats,
    HeuristicFilter,
    caption_stats,
    image_stats,
)
from quarry.schemas.caption import HeuristicsConfig

CFG = HeuristicsConfig()
FILTER = HeuristicFilter(CFG)
GOOD_CAPTION = "A brown dog running along a sandy beach at sunset"


def decoded(im: Image.Image) -> DecodedImage:
    return DecodedImage(image=im, width=im.width, height=im.height, format="PNG", mode=im.mode)


def textured(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (width, height), (200, 180, 150))
    draw = ImageDraw.Draw(im)
    for _ in range(30):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = (x0, y0, x0 + int(rng.integers(5, max(6, width // 3))), y0 + int(rng.integers(5, max(6, height // 3))))
        draw.rectangle(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return im


def solid(width: int, height: int, color=(40, 90, 200)) -> Image.Image:
    return Image.new("RGB", (width, height), color)


def solid_with_jpeg_noise(width: int, height: int) -> Image.Image:
    """A flat colour with +-1 dither, saved as a JPEG: the noise floor of real solid images."""
    rng = np.random.default_rng(3)
    arr = np.full((height, width, 3), (120, 130, 140), np.int16) + rng.integers(-1, 2, (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, "JPEG", quality=85)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def faint_gradient(width: int, height: int) -> Image.Image:
    """Grey 120 -> 126 left to right: no structure a caption could describe."""
    row = np.linspace(120, 126, width).astype(np.uint8)
    return Image.fromarray(np.repeat(np.repeat(row[None, :, None], height, 0), 3, 2))


def split_equal_luminance(width: int, height: int) -> Image.Image:
    """Left half pure red, right half green of the same grey level: not a solid colour."""
    im = Image.new("RGB", (width, height), (255, 0, 0))
    im.paste((0, 130, 0), (width // 2, 0, width, height))
    return im


@pytest.mark.parametrize(
    "image, expected",
    [
        pytest.param(textured(640, 480), None, id="normal-photo-like"),
        pytest.param(textured(100, 100), "too_small", id="tiny"),
        pytest.param(textured(199, 300), "too_small", id="short-side-199"),
        pytest.param(textured(200, 300), None, id="short-side-200-kept"),
        pytest.param(textured(2000, 200), "bad_aspect_ratio", id="banner-10-to-1"),
        pytest.param(textured(200, 601), "bad_aspect_ratio", id="tall-just-over-3"),
        pytest.param(textured(600, 200), None, id="exactly-3-kept"),
        pytest.param(textured(1500, 150), "too_small", id="small-banner-too-small-first"),
        pytest.param(solid(300, 300), "solid_color", id="solid"),
        pytest.param(solid(300, 300, (255, 255, 255)), "solid_color", id="white"),
        pytest.param(solid(3000, 300), "bad_aspect_ratio", id="solid-banner-aspect-first"),
        pytest.param(solid_with_jpeg_noise(400, 300), "solid_color", id="near-uniform-jpeg"),
        pytest.param(faint_gradient(400, 300), "solid_color", id="faint-gradient"),
        pytest.param(split_equal_luminance(400, 300), None, id="two-colours-same-grey"),
    ],
)
def test_check_image(image, expected):
    rejection = FILTER.check_image(image_stats(decoded(image)))
    assert (rejection.reason if rejection else None) == expected


def test_image_stats_values():
    stats = image_stats(decoded(textured(900, 300)))
    assert (stats.width, stats.height, stats.short_side) == (900, 300, 300)
    assert stats.aspect_ratio == pytest.approx(3.0)
    assert stats.pixel_std > 20
    assert image_stats(decoded(solid(300, 300))).pixel_std == 0.0


@pytest.mark.parametrize(
    "image, fragments",
    [
        (textured(150, 400), ["short_side=150", "150x400", "min_side=200"]),
        (textured(1000, 250), ["aspect_ratio=4.000", "1000x250", "max_aspect_ratio=3"]),
        (solid(300, 300), ["pixel_std=0.000", "solid_max_std=3"]),
    ],
)
def test_image_details_carry_value_and_threshold(image, fragments):
    detail = FILTER.check_image(image_stats(decoded(image))).detail
    for fragment in fragments:
        assert fragment in detail


def test_thresholds_come_from_the_config():
    loose = HeuristicFilter(HeuristicsConfig(min_side=50, max_aspect_ratio=20.0, solid_max_std=0.0))
    assert loose.check_image(image_stats(decoded(textured(100, 100)))) is None
    assert loose.check_image(image_stats(decoded(textured(2000, 200)))) is None
    assert loose.check_image(image_stats(decoded(solid(300, 300)))) is None


@pytest.mark.parametrize(
    "caption, expected",
    [
        pytest.param(GOOD_CAPTION, None, id="normal"),
        pytest.param("", "caption_not_text", id="empty"),
        pytest.param(None, "caption_not_text", id="missing"),
        pytest.param("   \t\n ", "caption_not_text", id="whitespace"),
        pytest.param("!!!", "caption_not_text", id="punctuation"),
        pytest.param("★★★ 🙂 ...", "caption_not_text", id="symbols-and-emoji"),
        pytest.param("http://x.com/a.jpg", "caption_not_text", id="url"),
        pytest.param("https://a.org/x www.b.com/y", "caption_not_text", id="only-urls"),
        pytest.param("\x00\x01\x02\x03ab", "caption_not_text", id="mostly-control"),
        pytest.param("\u200b\u200b\u200b\u200bdog", "caption_not_text", id="mostly-zero-width"),
        pytest.param("a", "caption_too_short", id="one-letter"),
        pytest.param("dog", "caption_too_short", id="one-word"),
        pytest.param("red car", "caption_too_short", id="two-words"),
        pytest.param("a b c", "caption_too_short", id="three-words-five-chars"),
        pytest.param("ab c d", None, id="three-words-six-chars-kept"),
        pytest.param("a red car", None, id="three-words-kept"),
        pytest.param("photo of a cat http://x.com/cat.jpg", None, id="text-with-url"),
        pytest.param("一只猫坐在红色的沙发上", None, id="chinese-counts-characters-as-words"),
        pytest.param("猫", "caption_too_short", id="one-chinese-character"),
        pytest.param(" ".join(["word"] * 300), "caption_too_long", id="300-words"),
        pytest.param(" ".join(["word"] * 256), None, id="256-words-kept"),
        pytest.param("x" * 1000 + " " + "y" * 600 + " " + "z" * 500, "caption_too_long", id="2102-chars"),
    ],
)
def test_check_caption(caption, expected):
    rejection = FILTER.check_caption(caption)
    assert (rejection.reason if rejection else None) == expected


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("", CaptionStats(words=0, chars=0, is_text=False, not_text_because="empty or whitespace only")),
        ("  two words  ", CaptionStats(words=2, chars=9, is_text=True)),
        ("a - b", CaptionStats(words=2, chars=5, is_text=True)),  # a lone dash is not a word
        ("http://x.com/a.jpg", CaptionStats(words=1, chars=18, is_text=False, not_text_because="only URLs")),
        (
            "!!!",
            CaptionStats(
                words=0, chars=3, is_text=False, not_text_because="no letters or digits (punctuation/symbols only)"
            ),
        ),
        ("猫在沙发上 sleeping", CaptionStats(words=6, chars=14, is_text=True)),
    ],
)
def test_caption_stats(caption, expected):
    assert caption_stats(caption) == expected


@pytest.mark.parametrize(
    "caption, fragments",
    [
        ("dog", ["words=1", "min_caption_words=3"]),
        ("a b c", ["chars=5", "min_caption_chars=6"]),
        (" ".join(["word"] * 300), ["words=300", "max_caption_words=256"]),
        ("\x00\x01\x02\x03ab", ["control", "4 of 6"]),
    ],
)
def test_caption_details_carry_value_and_threshold(caption, fragments):
    detail = FILTER.check_caption(caption).detail
    for fragment in fragments:
        assert fragment in detail


def test_check_runs_image_checks_before_caption_checks():
    assert FILTER.check(decoded(textured(100, 100)), "").reason == "too_small"
    assert FILTER.check(decoded(textured(400, 300)), "").reason == "caption_not_text"
    assert FILTER.check(decoded(textured(400, 300)), GOOD_CAPTION) is None


@pytest.mark.parametrize(
    "overrides",
    [{"min_caption_words": 10, "max_caption_words": 5}, {"min_caption_chars": 100, "max_caption_chars": 50}],
)
def test_inconsistent_config_fails_on_construction(overrides):
    with pytest.raises(ValueError):
        HeuristicFilter(HeuristicsConfig(**overrides))
