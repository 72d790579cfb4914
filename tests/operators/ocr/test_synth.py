"""The synthetic poster/chart generator: deterministic, truthful boxes, no overlaps."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from quarry.operators.ocr.synth import bar_chart, box_contains, poster, rotated

DEMO = Path(__file__).resolve().parents[3] / "dags" / "demo_data"


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_poster_is_deterministic_and_boxes_are_inside_and_apart():
    with Image.open(DEMO / "coffee.jpg") as bg:
        a = poster(bg, "seed-a", label_sizes=(8, 12, 18))
        b = poster(bg, "seed-a", label_sizes=(8, 12, 18))
        c = poster(bg, "seed-b", label_sizes=(8, 12, 18))
    assert _png(a.image) == _png(b.image) and a.texts == b.texts
    assert a.texts != c.texts
    assert a.image.size == (640, 480)
    assert [t.kind for t in a.texts] == ["title", "label", "label", "label"]
    assert [t.size for t in a.texts] == [44, 8, 12, 18]
    for t in a.texts:
        assert box_contains((0, 0, 640, 480), t.box) and t.box[2] > t.box[0] and t.box[3] > t.box[1]
    for i, s in enumerate(a.texts):
        for t in a.texts[i + 1:]:
            overlap = min(s.box[2], t.box[2]) > max(s.box[0], t.box[0]) and min(s.box[3], t.box[3]) > max(s.box[1], t.box[1])
            assert not overlap


def test_glyph_box_grows_with_font_size():
    with Image.open(DEMO / "grass.jpg") as bg:
        p = poster(bg, "sizes", title_size=None, label_sizes=(10, 30))
    small, big = p.texts
    assert (big.box[3] - big.box[1]) > 2 * (small.box[3] - small.box[1])


def test_chart_has_numbers_and_legend_and_rotation_grows_canvas():
    ch = bar_chart("c", bars=3)
    kinds = [t.kind for t in ch.texts]
    assert kinds == ["title", "number", "number", "number", "legend", "legend", "legend"]
    assert all(t.text.isdigit() for t in ch.texts if t.kind == "number")
    assert rotated(ch.image, 90).size == (480, 640)
    assert box_contains((0, 0, 10, 10), (1, 1, 9, 9)) and not box_contains((0, 0, 10, 10), (1, 1, 11, 9))
    assert box_contains((0, 0, 10, 10), (1, 1, 11, 9), slack=1)
