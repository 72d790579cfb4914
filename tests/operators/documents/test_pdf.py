"""PDFium extraction on hand-written PDFs: text, boxes, pages, and each bad input's reason, in bounded time."""

from __future__ import annotations

import time

import pytest
from quarry.operators.base import Rejection
from quarry.operators.documents import makepdf as m
from quarry.operators.documents import pdf
from quarry.operators.documents.isolate import extract_isolated
from quarry.operators.documents.layout import Segment, page_layout

PARAMS = pdf.Params(max_pages=5)
TWO = m.two_column_page("Title", ["left one", "left two", "left three"],
                        ["right one", "right two", "right three"])


def test_text_layer_boxes_match_what_was_drawn():
    doc = pdf.extract(m.build([TWO, m.prose_page("Second", ["body"])]), PARAMS)
    assert doc.page_count == 2 and [p.page_number for p in doc.pages] == [1, 2] and doc.capped is None
    p = doc.pages[0]
    assert (p.width_px, p.height_px) == (1224, 1584) and p.scale == 2.0 and p.image[:4] == b"\x89PNG"
    assert p.font_size == 10.0
    lay = page_layout([Segment(t, b) for t, b in p.segments])
    assert lay.text == "Title\nleft one\nleft two\nleft three\nright one\nright two\nright three"
    left_one = next(ln for ln in lay.lines if ln.text == "left one")
    x0, y0, x1, y1 = left_one.box  # drawn at x=72, baseline y=110 (from the top), 10 pt
    assert abs(x0 - 72) < 1.5 and 100 < y0 < 110 < y1 < 113 and x1 > 100


def test_render_is_capped_by_max_pixels():
    doc = pdf.extract(m.build([TWO]), pdf.Params(dpi=600, max_pixels=1_000_000))
    p = doc.pages[0]
    assert p.width_px * p.height_px <= 1_000_000 and p.scale < 600 / 72


@pytest.mark.parametrize("name, data, reason", [
    ("encrypted", m.encrypted([TWO]), pdf.ENCRYPTED),
    ("truncated", m.build([TWO])[:400], pdf.TRUNCATED_PDF),
    ("not a pdf", b"PK\x03\x04 a zip named .pdf" * 20, pdf.NOT_A_PDF),
    ("zero pages", m.build([]), pdf.NO_PAGES),
    ("javascript", m.with_javascript([TWO]), pdf.JAVASCRIPT),
    ("attachment", m.with_attachment([TWO]), pdf.EMBEDDED_FILES),
    ("empty file", b"", pdf.NOT_A_PDF),
])
def test_bad_documents_are_refused_with_their_reason(name, data, reason):
    got = extract_isolated(data, PARAMS, timeout_s=30)
    assert isinstance(got, Rejection) and got.reason == reason, (name, got)


def test_long_document_keeps_first_pages_and_says_so():
    t = time.monotonic()
    doc = extract_isolated(m.many_pages(10_000), PARAMS, timeout_s=60)
    assert time.monotonic() - t < 30
    assert doc.page_count == 10_000 and len(doc.pages) == 5
    assert doc.capped[0] == pdf.TOO_MANY_PAGES and "10000" in doc.capped[1]


def test_page_bombs_are_bounded():
    huge = extract_isolated(m.huge_page(), PARAMS, timeout_s=30)
    assert huge.pages[0].rejection[0] == pdf.PAGE_TOO_LARGE and huge.pages[0].image == b""
    lying = extract_isolated(m.lying_page_count(5_000_000), PARAMS, timeout_s=30)  # PDFium counts real kids
    assert lying.page_count == 1 and "tree" in " ".join(t for t, _ in lying.pages[0].segments)
    t = time.monotonic()
    deep = extract_isolated(m.deep_nesting([TWO], depth=200_000), PARAMS, timeout_s=30)
    assert time.monotonic() - t < 30  # PDFium's parser stops nesting at its own depth limit; the page still reads
    assert isinstance(deep, Rejection) or deep.pages[0].segments


def test_scan_has_no_text_layer():
    p = pdf.extract(m.build([m.scan_page()]), PARAMS).pages[0]
    assert p.chars == 0 and p.segments == [] and p.image


def test_child_limits_turn_into_rejects():
    slow = extract_isolated(m.build([TWO]), PARAMS, timeout_s=0.01)
    assert isinstance(slow, Rejection) and slow.reason == pdf.TIMEOUT
    starved = extract_isolated(m.build([TWO]), PARAMS, max_memory_mb=12)  # PDFium itself does not fit
    assert isinstance(starved, Rejection) and starved.reason == pdf.RESOURCE_LIMIT
    # a render that does not fit the limit: refused (PDFium fails the bitmap or the child dies), never the worker
    big = extract_isolated(m.build([TWO]), pdf.Params(dpi=1200, max_pixels=10**9), max_memory_mb=96)
    assert (isinstance(big, Rejection) and big.reason == pdf.RESOURCE_LIMIT) or \
        big.pages[0].rejection[0] == pdf.RENDER_FAILED
