"""`quarry run documents`: PDF pages -> `ocr` rows (GLM-4.5V §3.1, academic documents).

Each page of each PDF becomes one row: the page rendered by PDFium at
documents.dpi (lower when it would pass documents.max_pixels), the page text in
reading order with line boxes (pixels and 0-1000) from the PDF's text layer,
the document id (content id of the bytes), page number and page count. Pages
without a text layer are rejected `no_text_layer`, or OCRed with the `ocr`
engine when documents.ocr_fallback is on.

PDFium runs in a child process per document with a timeout and an address
space limit (operators/documents/isolate.py); encrypted, truncated, non-PDF,
zero-page, JavaScript and attachment-carrying documents are refused whole at
`open`; a page over documents.max_page_points at `page`. A document longer
than documents.max_pages keeps its first pages and gets one `too_many_pages`
reject. Tier rule: operators/documents/layout.py (density, columns, tables,
font size).
"""

from __future__ import annotations

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, Stage, with_reasons
from quarry.operators.inputs import reasons as read_reasons
from quarry.pipelines.decontam import FieldProbe
from quarry.pipelines.documents import (
    STAGE_REASONS,
    DocumentsPipeline,
    ReadPdfs,
    WritePages,
    plan_pdfs,
)
from quarry.pipelines.write import read_markers
from quarry.schemas.config import ConfigError
from quarry.schemas.documents import DocumentPageRow, DocumentsConfig


def plan(patterns: list[str], cfg: DocumentsConfig):
    if cfg.documents.ocr_fallback:
        from quarry.operators.ocr.engine import OcrLoadError, make_engine

        try:
            make_engine(cfg.ocr).preflight()
        except OcrLoadError as e:
            raise ConfigError(f"ocr: {e}") from None
    return plan_pdfs(patterns)


def read(pipeline, cfg: DocumentsConfig, files):
    return pipeline | ReadPdfs(files, cfg.source or "unknown", cfg.documents)


def transform(records, cfg: DocumentsConfig, files, output: str) -> FamilyOutputs:
    out = records | "Documents" >> DocumentsPipeline(cfg, output)
    return FamilyOutputs(out.rows, out.rejected)


def write(rows, cfg: DocumentsConfig, files, output: str):
    """Rows travel without page images; each PDF is rendered again as its pages are written, 16 PDFs a shard, each
    group committed with a marker; groups a killed run committed are kept as they are (--resume)."""
    _, rejected = rows | "Write" >> WritePages(files, cfg, output, done=read_markers(output))
    return rejected


def describe(cfg: DocumentsConfig, files) -> BuildInfo:
    import pypdfium2

    info = BuildInfo(extra={"renderer": f"pypdfium2 {pypdfium2.version.PYPDFIUM_INFO}, PDFium "
                                        f"{pypdfium2.version.PDFIUM_INFO}", "pdf_files": len(files)})
    if cfg.documents.ocr_fallback:
        from quarry.operators.ocr.engine import describe as describe_engine

        info.extra["ocr"] = describe_engine(cfg.ocr)
    else:
        info.notes.append("pages without a text layer were rejected no_text_layer (documents.ocr_fallback=false)")
    info.notes.append("inputs count pages plus refused documents: each ends as one row or one reject")
    return info


READ_REASONS = (read_reasons.UNREADABLE_FILE, read_reasons.FILE_TOO_LARGE)

SPEC = DagSpec(
    name="documents",
    summary="PDF pages -> page images with text in reading order and line boxes (`ocr` task rows)",
    stages=with_reasons((
        Stage("read", "PDF files (.pdf) -> bytes under documents.max_bytes", where="pipelines/documents.py"),
        Stage("open", "PDFium in a child process (timeout, memory limit): header/trailer checks, password, "
                      "JavaScript, attachments, page count; pages rendered at documents.dpi with text segments",
              where="operators/documents/pdf.py, operators/documents/isolate.py"),
        Stage("page", "segments -> lines in reading order (columns by gutters, tables row-wise), tier; no text "
                      "layer -> reject or OCR (documents.ocr_fallback)", where="operators/documents/layout.py"),
        Stage("decontam", "optional (--set decontam.bench=PATH): page text and image against benchmark sets",
              where="pipelines/decontam.py"),
        Stage("write", "rows by source and tier (16 PDFs a shard); each page rendered again from its PDF as it "
                       "is written, so no page image travels a shuffle", where="pipelines/documents.py"),
    ), {**STAGE_REASONS, "read": READ_REASONS}),
    config_model=DocumentsConfig,
    plan=plan,
    read=read,
    transform=transform,
    write=write,
    describe=describe,
    row_model=DocumentPageRow,
    decontam_fields=FieldProbe(text=("text",), image=("image",)),
    unsourced="PDF files",
    input_count="units",
    resumable=("open and page run again over every PDF, so counts and rejects are made again (open renders pixels "
               "only for ocr_fallback scans and image decontam); each group of 16 PDFs' shards is written once and committed, so only the groups "
               "without a marker render their pages a second time and write"),
    input_files=lambda files: [f.path for f in files],
)
