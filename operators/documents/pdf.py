"""One PDF's bytes -> its pages (image, text segments) or one document-level verdict, with PDFium.

PDFium (pypdfium2) renders pages and gives the text layer with character and
segment boxes. It runs with no form environment (`init_forms` is never
called), so a document's JavaScript is never executed, and attachments are
never read: a document with either is refused (`javascript`,
`embedded_files`) rather than half-trusted.

`extract` runs PDFium in this process; the DAG calls it through
`operators/documents/isolate.py` (a child process with a wall-clock timeout
and an address-space limit), because PDFium is C++ on hostile bytes: a page
bomb or a parser loop then costs one reject, never the worker.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field

from quarry.operators.base import Rejection

# document-level reasons (stage `open`)
NOT_A_PDF = "not_a_pdf"  # no %PDF- header in the first 1 KiB
TRUNCATED_PDF = "truncated_pdf"  # no %%EOF in the last 2 KiB: the file was cut
ENCRYPTED = "encrypted"  # needs a password (PDFium: password error)
CORRUPT_PDF = "corrupt_pdf"  # PDFium cannot parse it
NO_PAGES = "no_pages"  # zero pages
TOO_MANY_PAGES = "too_many_pages"  # more than documents.max_pages: the first max_pages pages are kept
JAVASCRIPT = "javascript"  # document JavaScript (never run)
EMBEDDED_FILES = "embedded_files"  # attachments (never extracted)
TIMEOUT = "timeout"  # PDFium ran past documents.timeout_s
RESOURCE_LIMIT = "resource_limit"  # PDFium's process died (address-space limit, crash)
OPEN_REASONS = (NOT_A_PDF, TRUNCATED_PDF, ENCRYPTED, CORRUPT_PDF, NO_PAGES, TOO_MANY_PAGES, JAVASCRIPT,
                EMBEDDED_FILES, TIMEOUT, RESOURCE_LIMIT)
# page-level reasons (stage `page`)
PAGE_TOO_LARGE = "page_too_large"  # a side over documents.max_page_points
NO_TEXT_LAYER = "no_text_layer"  # no text layer (a scan) and documents.ocr_fallback is off
RENDER_FAILED = "render_failed"
PAGE_REASONS = (PAGE_TOO_LARGE, NO_TEXT_LAYER, RENDER_FAILED)

_JS_TOKEN = re.compile(rb"/(JavaScript|JS)[\s/(<\[]")


@dataclass(frozen=True)
class Params:
    dpi: float = 144.0
    max_pixels: int = 16_000_000  # render scale is lowered so a page stays under this
    max_pages: int = 200
    max_page_points: float = 14_400.0  # PDF's own limit on a page side (200 in)
    image_format: str = "PNG"
    # "all": every kept page rendered and encoded; "scans": only pages without a text layer (OCR fallback);
    # "none": no pixels, sizes only (the writer renders the pages again: no image bytes in the shuffle)
    render: str = "all"
    pages: tuple[int, ...] | None = None  # 1-based page numbers to extract (None: the first max_pages)


@dataclass
class PageData:
    page_number: int  # 1-based
    width_pt: float
    height_pt: float
    width_px: int = 0
    height_px: int = 0
    scale: float = 0.0  # pixels per point
    image: bytes = b""
    segments: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)  # points, y down
    chars: int = 0
    font_size: float = 0.0  # median font size of the characters (points), 0 without text
    rejection: tuple[str, str] | None = None


@dataclass
class DocumentData:
    page_count: int
    pages: list[PageData]
    capped: tuple[str, str] | None = None  # (too_many_pages, detail) when pages were left out


def sniff(data: bytes) -> Rejection | None:
    """Header and trailer checks that need no parser."""
    if b"%PDF-" not in data[:1024]:
        return Rejection(NOT_A_PDF, f"no %PDF- header in the first 1 KiB ({data[:8]!r})")
    if b"%%EOF" not in data[-2048:]:
        return Rejection(TRUNCATED_PDF, f"no %%EOF marker in the last 2 KiB of {len(data)} bytes: the file was cut")
    return None


def _open_error(e: Exception) -> Rejection:
    msg = str(e)
    if "password" in msg.lower():
        return Rejection(ENCRYPTED, f"needs a password: {msg[:200]}")
    return Rejection(CORRUPT_PDF, f"PDFium cannot open it: {msg[:200]}")


def extract(data: bytes, params: Params) -> DocumentData | Rejection:
    """The document's pages (first `max_pages`), or why none: in this process (see `isolate` for hostile input)."""
    import pypdfium2 as pdfium
    from pypdfium2 import raw

    bad = sniff(data)
    if bad is not None:
        return bad
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        if "(PDFium: Success)" in str(e) and re.search(rb"/Count\s+0\b", data):  # an empty page tree
            return Rejection(NO_PAGES, "the page tree holds no page (/Count 0)")
        return _open_error(e)
    try:
        n = len(pdf)
        if n == 0:
            return Rejection(NO_PAGES, "the page tree holds no page")
        js = raw.FPDFDoc_GetJavaScriptActionCount(pdf.raw)
        if js > 0 or _JS_TOKEN.search(data):
            return Rejection(JAVASCRIPT, f"{max(js, 0)} document JavaScript action(s) or a /JS action: not run, "
                                         "document refused")
        attachments = pdf.count_attachments()
        if attachments > 0:
            return Rejection(EMBEDDED_FILES, f"{attachments} embedded file(s): not extracted, document refused")
        keep = min(n, params.max_pages)
        capped = (TOO_MANY_PAGES, f"{n} pages; kept the first {keep} (documents.max_pages)") if n > keep else None
        wanted = range(keep) if params.pages is None else sorted({i - 1 for i in params.pages if 0 < i <= keep})
        return DocumentData(n, [_page(pdf, i, params) for i in wanted], capped)
    finally:
        pdf.close()


def _page(pdf, index: int, p: Params) -> PageData:
    from pypdfium2 import raw

    page = pdf[index]
    try:
        w, h = page.get_size()
        out = PageData(index + 1, round(w, 2), round(h, 2))
        if max(w, h) > p.max_page_points or min(w, h) <= 0:
            out.rejection = (PAGE_TOO_LARGE, f"{w:.0f} x {h:.0f} pt (documents.max_page_points {p.max_page_points:.0f})")
            return out
        scale = p.dpi / 72.0
        if w * h * scale * scale > p.max_pixels:
            scale = (p.max_pixels / (w * h)) ** 0.5
            while math.ceil(w * scale) * math.ceil(h * scale) > p.max_pixels:  # PDFium rounds sizes up
                scale *= 0.995
        tp = page.get_textpage()
        try:
            out.chars = tp.count_chars()
            if p.render == "all" or (p.render == "scans" and out.chars == 0):
                try:
                    pil = page.render(scale=scale, may_draw_forms=False).to_pil().convert("RGB")
                except Exception as e:  # noqa: BLE001 - PDFium on hostile content
                    out.rejection = (RENDER_FAILED, f"{type(e).__name__}: {str(e)[:200]}")
                    return out
                buf = io.BytesIO()
                pil.save(buf, p.image_format)
                out.image, out.width_px, out.height_px = buf.getvalue(), pil.width, pil.height
            else:  # the size PDFium renders at (pypdfium2 rounds each side up); the writer checks it
                out.width_px, out.height_px = math.ceil(page.get_width() * scale), math.ceil(page.get_height() * scale)
            out.scale = scale
            sizes = sorted(raw.FPDFText_GetFontSize(tp.raw, i) for i in range(0, out.chars, max(1, out.chars // 2000)))
            out.font_size = round(sizes[len(sizes) // 2], 2) if sizes else 0.0
            for i in range(tp.count_rects() if out.chars > 0 else 0):
                left, bottom, right, top = tp.get_rect(i)
                text = tp.get_text_bounded(left, bottom, right, top)
                if text.strip():
                    out.segments.append((text.replace("\r", " ").replace("\n", " "),
                                         (left, h - top, right, h - bottom)))
        finally:
            tp.close()
        return out
    finally:
        page.close()
