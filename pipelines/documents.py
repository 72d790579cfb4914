"""The documents DAG (GLM-4.5V §3.1 academic documents): PDF pages -> `ocr` rows, as Beam steps.

    ReadPdfs (one record per PDF file, bytes under documents.max_bytes)
      -> Open (PDFium in a child process: pages rendered, text segments; or one document-level reject)
      -> Page (lines in reading order, columns, tables, tier; scans rejected or OCRed)

Counts (`_stats/`): `read` (PDF files read); `open.in/out` (documents / pages
they gave); `units` = pages + document-level rejects (the manifest's inputs
with the read rejects: one unit ends as one row or one reject); `page.in/out`.
A document over documents.max_pages gives its first max_pages pages and one
`too_many_pages` reject (one more unit), so the cap is visible in the rejects.
"""

from __future__ import annotations

import functools
import io
import math
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from quarry.operators import decontam as decontam_ops
from quarry.operators.base import Rejection
from quarry.operators.documents import pdf as pdf_ops
from quarry.operators.documents.isolate import extract_isolated
from quarry.operators.documents.layout import Segment, page_layout, page_tier
from quarry.operators.ids import content_id, digest, stable_bucket
from quarry.operators.inputs import reasons as read_reasons
from quarry.operators.inputs.records import Unreadable
from quarry.operators.ocr.tasks import OCR_QUESTION, to_1000
from quarry.pipelines.read import (
    InputFile,
    InputSpec,
    ReadRecords,
    clean_source,
    plan_files,
    read_limited,
    read_reject,
)
from quarry.pipelines.stage import REJECTED, count, refused, reject_row, run_stage
from quarry.pipelines.stats import Progress
from quarry.schemas.common import ImageCell, Origin, Reject
from quarry.schemas.documents import DocumentPageRow, DocumentsConfig, DocumentSection
from quarry.schemas.ocr_search import OcrLineCell
from quarry.schemas.rl import VerifierSpec

OCR_VERIFIER = VerifierSpec(kind="ocr")
ENGINE = "pdfium"
PDF_SUFFIXES = {"pdf": (".pdf",)}


def plan_pdfs(patterns: list[str]) -> list[InputFile]:
    return plan_files(patterns, InputSpec(kinds=("pdf",), readable="a PDF file (.pdf)", suffixes=PDF_SUFFIXES))


@dataclass(frozen=True)
class PdfRecord:
    sample_id: str  # the document's: content id of file name and bytes
    source: str
    origin: Origin
    document_id: str  # digest of the bytes
    data: bytes


def read_pdf_file(f: InputFile, default_source: str, max_bytes: int) -> Iterator[PdfRecord | Reject]:
    data = read_limited(f.path, max_bytes)
    if isinstance(data, str):
        reason = read_reasons.FILE_TOO_LARGE if "larger than" in data else read_reasons.UNREADABLE_FILE
        yield read_reject(f.path, default_source, Unreadable("", reason, data.replace("reader.max_image_bytes",
                                                                                      "documents.max_bytes")))
        return
    name = posixpath.basename(f.path)
    doc_id = digest(data)
    yield PdfRecord(content_id("documents", name, doc_id), clean_source(default_source), Origin(file=f.path, key=name),
                    doc_id, data)


class ReadPdfs(ReadRecords):
    def __init__(self, files: list[InputFile], default_source: str, cfg: DocumentSection):
        super().__init__(files, functools.partial(read_pdf_file, default_source=clean_source(default_source),
                                                  max_bytes=cfg.max_bytes))


@dataclass
class PageItem:
    sample_id: str
    source: str
    origin: Origin
    document_id: str
    page_count: int
    capped: bool
    page: pdf_ops.PageData


def params_of(cfg: DocumentSection, render: str = "all", pages: tuple[int, ...] | None = None) -> pdf_ops.Params:
    return pdf_ops.Params(dpi=cfg.dpi, max_pixels=cfg.max_pixels, max_pages=cfg.max_pages,
                          max_page_points=cfg.max_page_points, image_format=cfg.image_format, render=render,
                          pages=pages)


def open_render_mode(cfg: DocumentsConfig) -> str:
    """What `open` renders: nothing (the writer renders each kept page again), scans for the OCR fallback, or
    every page when the decontam stage checks page images (they then travel in the rows)."""
    if cfg.decontam.bench and "image" in (cfg.decontam.image_fields or ("image",)):
        return "all"
    return "scans" if cfg.documents.ocr_fallback else "none"


class _Open(beam.DoFn):
    """A PDF -> its pages (PageItem), or a document-level reject; PDFium in a bounded child process."""

    def __init__(self, cfg: DocumentSection, render: str = "all"):
        self.cfg = cfg
        self.render = render

    def process(self, rec: PdfRecord):
        c = self.cfg
        result = extract_isolated(rec.data, params_of(c, self.render), c.timeout_s, c.max_memory_mb)
        if isinstance(result, Rejection):
            yield refused(reject_row(rec.sample_id, rec.source, rec.origin, "open", result))
            return
        if result.capped:
            yield refused(reject_row(rec.sample_id, rec.source, rec.origin, "open", result.capped))
        for p in result.pages:
            key = f"{rec.origin.key}#page={p.page_number}"
            yield PageItem(content_id("documents", rec.sample_id, str(p.page_number)), rec.source,
                           Origin(file=rec.origin.file, key=key), rec.document_id, result.page_count,
                           result.capped is not None, p)


def _cell(text: str, box_pt, scale: float, w: int, h: int, score: float = 1.0) -> OcrLineCell:
    x0, y0, x1, y1 = (v * scale for v in box_pt)
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
    return OcrLineCell(text=text, score=score, quad=[round(v, 2) for v in (x0, y0, x1, y0, x1, y1, x0, y1)],
                       box=[int(x0), int(y0), math.ceil(x1), math.ceil(y1)],
                       box_1000=to_1000((x0, y0, x1, y1), w, h))


class _Page(beam.DoFn):
    """A page -> its `ocr` row (text layer, or OCR of a scan with ocr_fallback), or a page reject."""

    def __init__(self, cfg: DocumentsConfig):
        self.cfg = cfg
        self.engine = None

    def setup(self):
        if self.cfg.documents.ocr_fallback:
            from quarry.operators.ocr.engine import make_engine

            self.engine = make_engine(self.cfg.ocr).load()
            self.engine_label = make_engine(self.cfg.ocr).label()

    def process(self, item: PageItem):
        p = item.page
        if p.rejection is not None:
            yield refused(reject_row(item.sample_id, item.source, item.origin, "page", p.rejection))
            return
        segments = [Segment(t, tuple(b)) for t, b in p.segments]
        layout = page_layout(segments, p.font_size)
        if layout.lines:
            lines = [_cell(ln.text, ln.box, p.scale, p.width_px, p.height_px) for ln in layout.lines]
            text, source, engine = layout.text, "text_layer", ENGINE
        elif self.engine is None:
            yield refused(reject_row(item.sample_id, item.source, item.origin, "page", Rejection(
                pdf_ops.NO_TEXT_LAYER, f"{p.chars} character(s) in the text layer: a scan? "
                                       "(documents.ocr_fallback=true OCRs it)")))
            return
        else:
            got = self._ocr(p)
            if isinstance(got, Rejection):
                yield refused(reject_row(item.sample_id, item.source, item.origin, "page", got))
                return
            lines, text = got
            source, engine = "ocr", self.engine_label
        tier, facts = page_tier(layout, p.width_pt, p.height_pt)
        yield DocumentPageRow(
            sample_id=item.sample_id, source=item.source, tier=tier, task="ocr", origin=item.origin,
            question=OCR_QUESTION, answer=text, verifier=OCR_VERIFIER, document_id=item.document_id,
            page_number=p.page_number, page_count=item.page_count, image=ImageCell(bytes=p.image),
            width=p.width_px, height=p.height_px, image_format=self.cfg.documents.image_format,
            dpi=round(p.scale * 72.0, 3), width_pt=p.width_pt, height_pt=p.height_pt, text_source=source,
            engine=engine, text=text, lines=lines, columns=facts["columns"], has_table=facts["table"],
            chars_per_in2=facts["chars_per_in2"], median_line_pt=facts["median_line_pt"], font_pt=facts["font_pt"],
            pages_capped=item.capped or None)

    def _ocr(self, p: pdf_ops.PageData):
        from PIL import Image

        from quarry.operators.ocr.engine import fit_for_ocr
        from quarry.operators.ocr.layout import build_layout, valid_lines
        from quarry.schemas.ocr_search import EntityConfig, TextFilterConfig

        with Image.open(io.BytesIO(p.image)) as im:
            pixels, scale = fit_for_ocr(im, self.cfg.ocr.max_side, self.cfg.ocr.min_short_side,
                                        self.cfg.ocr.max_upscale)
        try:
            read = self.engine.read(pixels)
        except Exception as e:  # noqa: BLE001 - the engine on one page
            return Rejection(OCR_FAILED, f"{type(e).__name__}: {str(e)[:200]}")
        lines = valid_lines([ln.scaled(1.0 / scale) for ln in read], TextFilterConfig())
        if not lines:
            return Rejection(pdf_ops.NO_TEXT_LAYER, f"no text layer and OCR read no valid line ({len(read)} read)")
        lay = build_layout(lines, EntityConfig())
        cells = []
        for ln in lay.lines:
            x0, y0, x1, y1 = ln.box
            cells.append(OcrLineCell(text=ln.text, score=round(ln.score, 5), quad=list(ln.quad),
                                     box=[int(x0), int(y0), math.ceil(x1), math.ceil(y1)],
                                     box_1000=to_1000(ln.box, p.width_px, p.height_px)))
        return cells, lay.transcription


OCR_FAILED = "ocr_failed"
SOURCE_CHANGED = "source_changed"  # write: the PDF read again is not the one the row came from


class Outputs(NamedTuple):
    rows: Any
    rejected: Any


class DocumentsPipeline(beam.PTransform):
    """PCollection[PdfRecord] -> Outputs(rows, rejected); counts to `output_dir/_stats`."""

    def __init__(self, cfg: DocumentsConfig, output_dir: str | None = None):
        super().__init__()
        self.cfg, self.output_dir = cfg, output_dir

    def expand(self, records):
        cfg, out = self.cfg, self.output_dir
        opened = run_stage(records | "ProgressOpen" >> Progress("open"), "Open",
                           _Open(cfg.documents, open_render_mode(cfg)), out, "open")
        count((opened.kept, opened.rejected) | "Units" >> beam.Flatten(), out, "units")
        pages = run_stage(opened.kept, "Page", _Page(cfg), out, "page")
        rejected = (opened.rejected, pages.rejected) | "DocRejects" >> beam.Flatten()
        return Outputs(pages.kept, rejected)


STAGE_REASONS: dict[str, tuple[str, ...]] = {
    "open": pdf_ops.OPEN_REASONS,
    "page": (*pdf_ops.PAGE_REASONS, OCR_FAILED),
    "decontam": (decontam_ops.CONTAMINATED_TEXT, decontam_ops.CONTAMINATED_IMAGE),
    "write": (SOURCE_CHANGED,),
}


# --- write: rows travel the shuffle without page images; each PDF is rendered again at write time ---------------

FILES_PER_SHARD = 16  # PDFs whose pages share a shard (per source and tier)


class _WritePages(beam.DoFn):
    """(group of PDF files, their rows without images) -> shards, each page rendered again from its PDF.

    Files of a group are written in input order and their pages in page order, so reruns give the same
    bytes. A PDF that changed (digest) or no longer renders the page at the same size is a
    `write/source_changed` reject for its rows. Each group's shards and write rejects are committed
    (`DIR/.quarry/done/<group>.json`) once final; a group whose marker in `done` holds for the same rows
    is not rendered again: its files stay, its rejects come from the marker (a resumed run).
    """

    def __init__(self, files: list[InputFile], cfg: DocumentsConfig, output_dir: str, done: dict | None = None,
                 per_shard: int | None = None):
        from quarry.pipelines.spill import Stash

        self.per_shard = per_shard or FILES_PER_SHARD
        self.stash = Stash(None)  # WritePages.expand sets where the group's rows spill on a local direct run
        self.order = {f.path: i for i, f in enumerate(files)}
        self.groups = max(1, math.ceil(len(files) / self.per_shard))
        self.cfg = cfg
        self.output_dir = output_dir
        self.data_dir = FileSystems.join(output_dir, "data")
        self.done = done or {}
        self.rows = beam.metrics.Metrics.counter("write", "documents_rows")
        self.skipped = beam.metrics.Metrics.counter("write", "documents_groups_resumed")

    def process(self, element):
        from quarry.pipelines.spill import records
        from quarry.pipelines.write import commit_input, committed_output, unpack_row

        group, gathered = element
        get = self.stash.get
        rows = [DocumentPageRow.model_validate(unpack_row(get(b))) for _, b in records(gathered)]
        key, digest_ = f"{group:05d}", _rows_digest(rows)
        kept = committed_output(self.output_dir, self.done.get(key), digest_)
        if kept is not None:
            self.skipped.inc()
            for row in kept.rejects:
                yield refused(Reject.model_validate(row))
            yield from kept.files
            return
        out = list(self._write(group, rows))
        commit_input(self.output_dir, key, [r for r in out if isinstance(r, str)], {
            "kept": digest_, "rejects": [r.value.model_dump(mode="json") for r in out if not isinstance(r, str)]})
        yield from out

    def finish_bundle(self):
        self.stash.finish()

    def _write(self, group: int, rows: list[DocumentPageRow]):
        from quarry.pipelines.write import StreamingShard, hive_partition, shard_path
        from quarry.schemas.arrow import arrow_schema

        by_file: dict[str, list[DocumentPageRow]] = {}
        for r in rows:
            by_file.setdefault(r.origin.file, []).append(r)
        shards: dict[tuple[str, ...], StreamingShard] = {}
        schema = arrow_schema(DocumentPageRow)
        for path in sorted(by_file, key=lambda p: (self.order.get(p, len(self.order)), p)):
            for row in self._attach(path, sorted(by_file[path], key=lambda r: (r.page_number, r.sample_id))):
                if not isinstance(row, DocumentPageRow):
                    yield row
                    continue
                d = row.model_dump()
                partition = hive_partition(d)
                if partition not in shards:
                    shards[partition] = StreamingShard(
                        shard_path(self.data_dir, partition, "documents", group, self.groups), schema, self.cfg.shards)
                shards[partition].add(d)
                self.rows.inc()
        for shard in shards.values():
            yield shard.close()

    def _attach(self, path: str, rows: list[DocumentPageRow]):
        c = self.cfg.documents
        need = tuple(r.page_number for r in rows if not r.image.bytes)
        pages: dict[int, pdf_ops.PageData] = {}
        why = None
        if need:
            data = read_limited(path, c.max_bytes)
            if isinstance(data, str):
                why = f"the PDF cannot be read again: {data[:200]}"
            elif digest(data) != rows[0].document_id:
                why = "the PDF changed between the first and the second read"
            else:
                got = extract_isolated(data, params_of(c, "all", need), c.timeout_s, c.max_memory_mb)
                if isinstance(got, Rejection):
                    why = f"the second render was refused: {got.reason}: {got.detail}"
                else:
                    pages = {p.page_number: p for p in got.pages}
        for r in rows:
            if r.image.bytes:
                yield r
                continue
            p = pages.get(r.page_number)
            if why is None and (p is None or p.rejection or (p.width_px, p.height_px) != (r.width, r.height)):
                why = f"page {r.page_number} did not render again at {r.width}x{r.height}"
            if why is not None:
                yield refused(reject_row(r.sample_id, r.source, r.origin, "write", Rejection(SOURCE_CHANGED, why)))
                continue
            yield r.model_copy(update={"image": ImageCell(bytes=p.image)})
            pages.pop(r.page_number, None)  # the bytes go into the shard; nothing holds them after


def _rows_digest(rows: list[DocumentPageRow]) -> str:
    """What a group's shards hold, as a hash: a marker counts only for the same rows (page images aside)."""
    import hashlib
    import json

    facts = sorted((r.sample_id, r.tier, r.page_number, r.width, r.height, r.text,
                    hashlib.sha256(r.image.bytes or b"").hexdigest()) for r in rows)
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


class WritePages(beam.PTransform):
    """`DocumentPageRow`s (page images absent, or present for OCRed scans) -> shards. Returns `(paths, rejected)`."""

    def __init__(self, files: list[InputFile], cfg: DocumentsConfig, output_dir: str, done: dict | None = None):
        super().__init__()
        self.fn = _WritePages(files, cfg, output_dir, done)

    def expand(self, rows):
        from quarry.pipelines.spill import Gather, Stash, spill_dir

        # A group's rows (text and line boxes; page images only for OCRed scans) cross the shuffle packed, or as
        # spill references on a local direct run, gathered by a combine: the DirectRunner held a GroupByKey of
        # pydantic rows in the runner's memory (~120 KB a page measured), which grew with the input.
        fn = self.fn
        fn.stash = Stash(spill_dir(rows.pipeline, fn.output_dir, "documents-pages") if fn.cfg.shards.spill else None)
        out = (
            rows
            | "KeyByFileGroup" >> beam.ParDo(_KeyPage(fn.order, fn.per_shard, fn.groups, fn.stash))
            | "GroupByFileGroup" >> beam.CombinePerKey(Gather())
            | "WritePages" >> beam.ParDo(fn).with_outputs(REJECTED, main="paths")
        )
        return out.paths, out[REJECTED]


class _KeyPage(beam.DoFn):
    """`DocumentPageRow` -> (file group, (sample id, packed row or its spill reference))."""

    def __init__(self, order: dict[str, int], per_shard: int, groups: int, stash):
        self.order, self.per_shard, self.groups, self.stash = order, per_shard, groups, stash

    def process(self, r: DocumentPageRow):
        from quarry.pipelines.write import pack_row

        i = self.order.get(r.origin.file)
        group = i // self.per_shard if i is not None else stable_bucket(r.origin.file, self.groups)
        yield group, (r.sample_id, self.stash.put(pack_row(r.model_dump(), not self.stash.spills)))

    def finish_bundle(self):
        self.stash.finish()
