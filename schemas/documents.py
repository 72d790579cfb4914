"""The documents DAG: its config and its output row (one row per PDF page, the `ocr` task's shape).

A row is an `ocr` RL task (schemas/rl.py): the page image (in the row), the
question "read all the text", the answer = the page text in reading order,
verifier `ocr` (1 - edit distance / max length). The lines are the ocr_search
`OcrLineCell`s (text, score, quad, box in pixels, box_1000), from the PDF's
text layer (score 1.0) or from OCR for scans when documents.ocr_fallback is on.
`document_id` (content id of the PDF bytes), `page_number` and `page_count`
let a trainer rebuild multi-page documents.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pyarrow as pa
from pydantic import Field
from quarry.schemas.arrow import ArrowType
from quarry.schemas.common import ImageCell, Sample
from quarry.schemas.config import DagConfig, Section
from quarry.schemas.ocr_search import OcrEngineConfig, OcrLineCell
from quarry.schemas.rl import RlTask


class DocumentSection(Section):
    """How pages are rendered and which documents are refused."""

    dpi: float = Field(144.0, gt=0, le=1200, description="render resolution (points are 1/72 in)")
    max_pixels: int = Field(16_000_000, ge=10_000, description="a page renders at a lower DPI when it would exceed "
                                                              "this many pixels")
    max_pages: int = Field(200, ge=1, description="pages kept per document: the first max_pages; a longer "
                                                 "document also gets one `too_many_pages` reject saying so")
    max_page_points: float = Field(14_400.0, gt=0, description="a page side over this (PDF's own 200 in limit) "
                                                              "is rejected page_too_large, never rendered")
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="a PDF file larger than this is refused unread")
    timeout_s: float = Field(120.0, gt=0, description="wall time PDFium may take on one document (child process)")
    max_memory_mb: int = Field(2048, ge=0, description="address-space limit of PDFium's child process (0: none)")
    ocr_fallback: bool = Field(False, description="pages without a text layer (scans) are OCRed with the `ocr` "
                                                  "engine instead of rejected no_text_layer")
    image_format: Literal["PNG", "JPEG"] = "PNG"


class DocumentsConfig(DagConfig):
    documents: DocumentSection = DocumentSection()
    ocr: OcrEngineConfig = OcrEngineConfig()


class DocumentPageRow(RlTask, Sample):
    """One PDF page as an `ocr` task."""

    document_id: str = Field(description="content id of the PDF's bytes")
    page_number: Annotated[int, ArrowType(pa.int32())] = Field(description="1-based")
    page_count: Annotated[int, ArrowType(pa.int32())] = Field(description="pages in the document")
    image: ImageCell
    width: Annotated[int, ArrowType(pa.int32())]
    height: Annotated[int, ArrowType(pa.int32())]
    image_format: str
    dpi: Annotated[float, ArrowType(pa.float32())]
    width_pt: Annotated[float, ArrowType(pa.float32())]
    height_pt: Annotated[float, ArrowType(pa.float32())]
    text_source: str = Field(description="text_layer | ocr")
    engine: str = Field(description="pdfium, or the OCR engine that read a scan")
    text: str = Field(description="the page text in reading order, one line per line")
    lines: list[OcrLineCell] = Field(default_factory=list, description="lines in reading order (pixels, 0-1000)")
    columns: Annotated[int, ArrowType(pa.int32())]
    has_table: bool
    chars_per_in2: Annotated[float, ArrowType(pa.float32())]
    median_line_pt: Annotated[float, ArrowType(pa.float32())] = Field(description="median tight line box height")
    font_pt: Annotated[float, ArrowType(pa.float32())] = Field(description="median character font size (the tier's)")
    pages_capped: bool | None = Field(None, description="true when the document had more than max_pages pages")
