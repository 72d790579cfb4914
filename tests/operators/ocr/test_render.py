"""operators/ocr/render.py: fonts, coverage, colour, geometry, tiers, and the render's exact truth."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.ocr import render as r

pytestmark = pytest.mark.skipif(not r.installed_fonts(), reason="no system fonts (scripts/apt-packages.txt)")

LATIN = "The quick brown fox jumps over the lazy dog.\n\nPack my box with five dozen liquor jugs."
CHINESE = "北京是中华人民共和国的首都。上海是中国最大的城市之一。"


def _bg(color=(120, 120, 120), size=(640, 480)):
    return Image.new("RGB", size, color)


def _striped(size=(640, 480)):
    im = Image.new("RGB", size)
    for x in range(size[0]):
        v = 0 if (x // 80) % 2 else 255
        for y in range(size[1]):
            im.putpixel((x, y), (v, v, v))
    return im


@pytest.mark.parametrize("text, reason", [
    ("", r.EMPTY_TEXT),
    ("  \n\t \n", r.EMPTY_TEXT),
    ("\x00\x01\x02", r.EMPTY_TEXT),
    ("\U00010C00\U00010C01", r.NO_FONT_COVERAGE),  # Old Turkic: no installed font
    ("ok \U00010C00", r.NO_FONT_COVERAGE),  # one uncovered character is enough
])
def test_bad_text_is_rejected_with_its_reason(text, reason):
    out = r.render_sample(text, _bg(), "seed")
    assert isinstance(out, Rejection) and out.reason == reason


def test_coverage_picks_wqy_for_chinese_and_every_font_for_latin():
    fonts = r.installed_fonts()
    ok, missing = r.covering_fonts(CHINESE, fonts)
    assert ok == ("WenQuanYiMicroHei",) and missing == ""
    ok, _ = r.covering_fonts("Hello, world", fonts)
    assert set(ok) == set(fonts)
    _, missing = r.covering_fonts("a\U00010C00", fonts)
    assert missing == "\U00010C00"


def test_wcag_contrast_matches_the_definition():
    assert r.contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert r.contrast_ratio((119, 119, 119), (255, 255, 255)) == pytest.approx(4.48, abs=0.01)
    color, ratio = r.pick_color([(250, 250, 250)], 4.5, [(255, 255, 0), (0, 0, 0)])
    assert color == (0, 0, 0) and ratio >= 4.5


def test_rotation_maps_points_like_pillow():
    im = Image.new("L", (200, 100), 0)
    im.paste(255, (148, 48, 153, 53))  # a 5x5 dot centred on (150.5, 50.5)
    for angle in (8.0, -8.0, 30.0):
        rot = im.rotate(angle, resample=Image.Resampling.BILINEAR, center=(100, 50))
        x, y = r.rotate_point(150.5, 50.5, angle, 100, 50)
        bbox = rot.getbbox()
        assert bbox is not None
        cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
        assert abs(cx - x) <= 1.5 and abs(cy - y) <= 1.5, (angle, bbox, x, y)


@pytest.mark.parametrize("size, contrast, angle, density, tier", [
    (44, 21.0, 0.0, 0.1, "very_easy"),
    (24, 21.0, 0.0, 0.1, "easy"),
    (24, 5.0, 3.0, 0.1, "medium"),
    (14, 5.0, 8.0, 0.1, "hard"),
    (12, 3.0, 8.0, 0.5, "very_hard"),
])
def test_tier_rule(size, contrast, angle, density, tier):
    assert r.tier_for(size, contrast, angle, density) == tier


def test_render_is_seeded_and_byte_identical():
    a = r.render_sample(LATIN, _bg(), "sample-1")
    b = r.render_sample(LATIN, _bg(), "sample-1")
    assert isinstance(a, r.Render) and a.png == b.png and a.lines == b.lines
    others = {r.render_sample(LATIN, _bg(), f"sample-{i}").png for i in range(2, 8)}
    assert len(others - {a.png}) >= 5


@pytest.mark.parametrize("layout", r.LAYOUTS)
@pytest.mark.parametrize("angle", [0.0, 8.0])
def test_truth_is_exact_ink_inside_boxes_and_text_in_order(layout, angle):
    cfg = r.RenderConfig(layouts=(layout,), angles=(angle,), sizes=(24,))
    out = r.render_sample(LATIN, _bg((128, 128, 128)), f"x-{layout}-{angle}", cfg)
    assert isinstance(out, r.Render)
    assert out.layout == layout and out.angle == angle
    assert out.text == "\n".join(ln.text for ln in out.lines)
    words = [w.text for ln in out.lines for w in ln.words]
    if layout != "labels":  # paragraph/columns: every word, in order
        assert words == LATIN.split()
    else:
        assert set(words) <= set(LATIN.split())
    img = Image.open(io.BytesIO(out.png)).convert("L")
    assert img.size == (out.width, out.height)
    ink = Image.eval(img, lambda v: 255 if abs(v - 128) > 20 else 0)  # text pixels on the flat grey
    assert ink.getbbox() is not None
    mask = Image.new("L", img.size, 0)
    from PIL import ImageDraw
    d = ImageDraw.Draw(mask)
    for ln in out.lines:
        assert 0 <= ln.box[0] < ln.box[2] <= out.width and 0 <= ln.box[1] < ln.box[3] <= out.height
        d.polygon(ln.quad, fill=255, outline=255)
        for w in ln.words:
            assert ln.box[0] - 1 <= w.box[0] and w.box[2] <= ln.box[2] + 1
    dilated = mask.resize((mask.width // 2, mask.height // 2)).resize(mask.size)  # a px of slack for AA
    outside = Image.composite(Image.new("L", img.size, 0), ink, Image.eval(dilated, lambda v: 255 if v else 0))
    assert sum(outside.histogram()[1:]) <= 0.01 * sum(ink.histogram()[1:]) + 5


@pytest.mark.parametrize("text", [LATIN, CHINESE])
def test_lines_never_overlap(text):
    for seed in range(6):
        out = r.render_sample(text, _bg(), f"ov-{seed}", r.RenderConfig(sizes=(24, 44), angles=(0.0,)))
        boxes = [ln.box for ln in out.lines]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (out.layout, a, b)


def test_chinese_renders_with_wqy_one_word_per_character():
    out = r.render_sample(CHINESE, _bg(), "zh", r.RenderConfig(layouts=("paragraph",), angles=(0.0,)))
    assert isinstance(out, r.Render) and out.font == "WenQuanYiMicroHei"
    assert "".join(w.text for ln in out.lines for w in ln.words) == CHINESE
    assert out.text.replace("\n", "") == CHINESE


def test_colour_meets_contrast_on_a_split_background_or_uses_a_plate():
    out = r.render_sample(LATIN, _striped(), "stripes", r.RenderConfig(layouts=("paragraph",), angles=(0.0,)))
    assert isinstance(out, r.Render)
    assert all(ln.contrast >= 4.5 for ln in out.lines)
    assert any(ln.plate for ln in out.lines)  # lines across black and white stripes need a plate


def test_overlong_text_is_cut_and_recorded():
    text = " ".join(["word"] * 5000)
    out = r.render_sample(text, _bg(), "long", r.RenderConfig(max_chars=300, layouts=("paragraph",)))
    assert isinstance(out, r.Render)
    assert len(out.text) <= 300 and out.chars_cut >= 5000 * 4 - 300
    assert out.chars_in == len(text)


def test_nothing_fits_is_a_reject():
    out = r.render_sample("enormous", _bg(size=(100, 60)), "tiny",
                          r.RenderConfig(canvas_side=128, sizes=(120,), layouts=("paragraph",), angles=(0.0,)))
    assert isinstance(out, Rejection) and out.reason == r.NOTHING_FITS


def test_box_1000_scales_by_width_and_height():
    assert r.to_1000([0, 0, 480, 240], 960, 480) == [0, 0, 500, 500]
    assert r.box_of([1.2, 2.7, 10.1, 2.7, 10.1, 9.5, 1.2, 9.5]) == [1, 2, 11, 10]
    assert math.isclose(sum(r.quad_of((0, 0, 10, 10), 0.0, 5, 5)), 40)


@pytest.mark.slow
def test_a_real_ocr_reads_the_easy_tier_as_the_truth_says():
    """rapidocr (PP-OCR, quarry's OCR operator) over easy-tier renders: most truth lines read back (>= 0.9
    similarity, the OCR reward) at their truth quads."""
    import numpy as np

    from quarry.operators.ocr.engine import make_engine
    from quarry.operators.ocr.tasks import similarity
    from quarry.schemas.ocr_search import OcrEngineConfig

    engine = make_engine(OcrEngineConfig(threads=1)).load()
    cfg = r.RenderConfig(canvas_side=640, sizes=(32,), angles=(0.0,), layouts=("paragraph",))
    with Image.open(Path(__file__).resolve().parents[3] / "dags" / "demo_data" / "coffee.jpg") as bg:
        bg = bg.convert("RGB")
    results = []
    for i, text in enumerate((LATIN, "Open daily from nine to five.\n\nPlatform 4 for the city centre.")):
        out = r.render_sample(text, bg, f"ocr-{i}", cfg)
        assert isinstance(out, r.Render) and out.tier in ("very_easy", "easy")
        pixels = np.asarray(Image.open(io.BytesIO(out.png)).convert("RGB"))
        read = [(line.text, line.quad) for line in engine.read(pixels)]
        results += r.line_agreement(out.lines, read, similarity)
    matched = sum(s >= 0.9 for _, _, s in results)
    assert matched >= 0.8 * len(results), results
