"""Lines -> entities: validity, reading order, grouping, kinds (no OCR model needed)."""

from __future__ import annotations

import pytest

from quarry.operators.ocr.engine import OcrLine
from quarry.operators.ocr.layout import build_layout, classify, group_lines, reading_order, valid_lines
from quarry.schemas.ocr_search import EntityConfig, TextFilterConfig


def line(text: str, x0: float, y0: float, x1: float, y1: float, score: float = 0.99) -> OcrLine:
    return OcrLine(text, score, (x0, y0, x1, y0, x1, y1, x0, y1))


def test_valid_lines_apply_score_height_and_blank_rules():
    lines = [line("ok", 0, 0, 50, 20), line("unsure", 0, 30, 50, 50, score=0.5), line("tiny", 0, 60, 50, 63),
             line("   ", 0, 70, 50, 90), line("two  spaces", 0, 100, 80, 120)]
    kept = valid_lines(lines, TextFilterConfig(min_score=0.8, min_height_px=6))
    assert [ln.text for ln in kept] == ["ok", "two spaces"]


def test_reading_order_rows_top_to_bottom_then_left_to_right():
    boxes = [(300, 102, 400, 120), (10, 100, 100, 122), (10, 10, 200, 40), (150, 98, 250, 118), (10, 200, 90, 215)]
    assert reading_order(boxes) == [2, 1, 3, 0, 4]


def test_group_lines_joins_pieces_and_stacked_lines_but_not_far_text():
    lines = [
        line("Grand", 10, 10, 60, 30), line("Opening", 72, 10, 140, 30),  # one line split at a space
        line("Date: May 5", 10, 200, 120, 216), line("Hall B", 10, 220, 70, 236),  # stacked, left-aligned
        line("Far away", 400, 400, 480, 416),  # alone
        line("BIG", 10, 300, 200, 380),  # close to nothing of its height
    ]
    groups = sorted(sorted(g) for g in group_lines(lines, EntityConfig()))
    assert groups == [[0, 1], [2, 3], [4], [5]]


def test_group_lines_keeps_different_heights_apart():
    lines = [line("Title", 10, 10, 200, 60), line("small", 10, 64, 60, 74)]
    assert len(group_lines(lines, EntityConfig())) == 2


@pytest.mark.parametrize("text,n_lines,height,kind", [
    ("42.5%", 1, 12, "number"),
    ("1,200", 1, 12, "number"),
    ("Date: May 5", 1, 12, "field"),
    ("Harbor Festival", 1, 40, "title"),
    ("Harbor Festival", 1, 17, "heading"),
    ("a b c", 3, 12, "paragraph"),
    ("Lantern Street", 1, 12, "label"),
])
def test_classify(text, n_lines, height, kind):
    assert classify(text, n_lines, height, median_height=12, tallest=40) == kind


def test_build_layout_orders_entities_and_transcribes():
    lines = [line("Route 66", 300, 400, 380, 414), line("Grand", 10, 10, 60, 40), line("Opening", 70, 10, 160, 40),
             line("Gate 4", 10, 300, 60, 314), line("Exit", 200, 200, 240, 214)]
    page = build_layout(lines, EntityConfig())
    assert [e.text for e in page.entities] == ["Grand Opening", "Exit", "Gate 4", "Route 66"]
    assert page.transcription == "Grand Opening\nExit\nGate 4\nRoute 66"
    assert page.entities[0].box == (10, 10, 160, 40)
    assert page.entities[0].kind == "title"
    assert build_layout([], EntityConfig()).entities == ()
