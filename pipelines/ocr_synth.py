"""The ocr_synth recipe (GLM-4.5V §3.1, OCR source 1: corpus text rendered onto real backgrounds) as Beam steps.

    ReadTexts (.txt files, Parquet/JSONL text column)            -> text samples   (read rejects)
    ReadImages (backgrounds.input) -> Backgrounds (decode, scale) -> side input    (background rejects)
    Render (one background per sample, picked by its id)        -> `ocr` rows      (render rejects)
    WriteSynth (texts and backgrounds read again, each PNG drawn again) -> shards  (write rejects)

Counts (`_stats/`): `read` (text samples), `backgrounds.in/out` (background pictures read / kept),
`render.in/out` (text samples / rendered rows). So `read + text read rejects == text inputs`,
`backgrounds.in == backgrounds.out + background rejects`, `render.in == render.out + render rejects`, and rows
== `render.out`. Background read rejects carry stage `read` too. Kept backgrounds travel as one side input (at
most `backgrounds.max_backgrounds`, each a PNG of at most `render.canvas_side` px a side); the rest are rejected
`background_cap` (counted in `backgrounds.out` as well: the cap is applied after the list is built).

Rendered PNGs do not travel a shuffle: a row carries its PNG's digest (`image_digest`) and no bytes, and the
writer draws each sample again (the render is seeded by the sample id) as it writes the shard, checking
background, size and digest (else `write/render_mismatch`). Only when decontam checks images do the PNGs
travel in the rows, and the writer keeps those.
"""

from __future__ import annotations

import functools
import io
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Optional, Union

import apache_beam as beam
from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.decode import decode_image
from quarry.operators.ids import content_id, digest, stable_bucket
from quarry.operators.inputs import reasons as read_reasons
from quarry.operators.inputs.records import Unreadable, clean_source
from quarry.operators.ocr import render as render_ops
from quarry.operators.ocr.tasks import OCR_QUESTION
from quarry.pipelines.ocr_search import ReadImages
from quarry.pipelines.read import (
    ColumnNeed,
    InputFile,
    InputSpec,
    ReadRecords,
    plan_files,
    read_limited,
    read_reject,
    read_rows,
)
from quarry.pipelines.stage import REJECTED, count_stage, refused, reject_row, run_stage, to_reject
from quarry.pipelines.write import SOURCE_CHANGED
from quarry.schemas.caption import DecodeConfig
from quarry.schemas.common import ImageCell, Origin, Reject
from quarry.schemas.ocr_synth import (
    TASK_OCR,
    BackgroundConfig,
    OcrSynthConfig,
    OcrSynthRow,
    RenderSection,
    SynthLineCell,
    SynthWordCell,
    TextInputConfig,
)
from quarry.schemas.rl import VerifierSpec

OCR_VERIFIER = VerifierSpec(kind="ocr")  # 1 - edit distance / max length (GLM-4.5V Table 1)
TEXT_COLUMNS = ("text", "content", "document", "caption")
TEXT_SUFFIXES = (".txt", ".text", ".md")

# read: text records
MISSING_TEXT = "missing_text"  # a row without the text field (or null)
TEXT_NOT_STRING = "text_not_string"  # a text field that is a number, list, object...
TEXT_NOT_UTF8 = "text_not_utf8"  # a .txt file that is not UTF-8
# backgrounds
TOO_SMALL = "too_small"
BACKGROUND_CAP = "background_cap"
# render
NO_BACKGROUND = "no_background"  # every background was rejected
RENDER_FAILED = "render_failed"  # Pillow raised on this sample (a font or layout bug): isolated, not fatal
# write
RENDER_MISMATCH = "render_mismatch"  # the second render is not the image the row was made from

READ_REASONS = (read_reasons.UNREADABLE_FILE, read_reasons.FILE_TOO_LARGE, read_reasons.INVALID_JSON,
                read_reasons.RECORD_TOO_LARGE, read_reasons.UNREADABLE_TAR, read_reasons.INVALID_METADATA,
                read_reasons.MISSING_IMAGE, MISSING_TEXT, TEXT_NOT_STRING, TEXT_NOT_UTF8)
STAGE_REASONS: dict[str, tuple[str, ...]] = {
    "read": READ_REASONS,
    "backgrounds": ("corrupt_image", "image_too_large", TOO_SMALL, BACKGROUND_CAP),
    "render": (*render_ops.REASONS, NO_BACKGROUND, RENDER_FAILED),
    "write": (SOURCE_CHANGED, RENDER_MISMATCH),
}


class SynthPlan(NamedTuple):
    texts: list[InputFile]
    backgrounds: list[InputFile]


# --- texts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextItem:
    sample_id: str
    source: str
    origin: Origin
    text: str
    url: Optional[str] = None
    license: Optional[str] = None


def plan_texts(patterns: list[str], cfg: TextInputConfig) -> list[InputFile]:
    return plan_files(patterns, InputSpec(
        kinds=("text", "parquet", "jsonl"), readable="a .txt, Parquet or JSONL file",
        suffixes={"text": TEXT_SUFFIXES},
        columns=(ColumnNeed("caption_column", "text", cfg.text_column, TEXT_COLUMNS, "text.text_column"),),
        what="text"))


def _item(path: str, key: str, text: str, source: str, row: Optional[dict] = None) -> TextItem:
    row = row or {}
    src = row.get("source") if isinstance(row.get("source"), str) and row.get("source") else source
    return TextItem(content_id(text, posixpath.basename(path), key), clean_source(src), Origin(file=path, key=key),
                    text, row.get("url") if isinstance(row.get("url"), str) else None,
                    row.get("license") if isinstance(row.get("license"), str) else None)


def read_text_file(f: InputFile, default_source: str, cfg: TextInputConfig) -> Iterator[Union[TextItem, Reject]]:
    """One planned text input -> text samples or `read` rejects."""
    key = posixpath.basename(f.path)
    if f.kind == "text":
        data = read_limited(f.path, cfg.max_text_bytes)
        if isinstance(data, str):
            reason = read_reasons.FILE_TOO_LARGE if "larger than" in data else read_reasons.UNREADABLE_FILE
            yield read_reject(f.path, default_source, Unreadable(key, reason, data.replace(
                "reader.max_image_bytes", "text.max_text_bytes")))
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            yield read_reject(f.path, default_source, Unreadable(key, TEXT_NOT_UTF8, str(e)))
            return
        yield _item(f.path, key, text, default_source)
        return
    column = f.caption_column or "text"
    for rec in read_rows(f):
        if rec.row is None:
            yield read_reject(f.path, default_source, Unreadable(rec.key, rec.reason, rec.detail))
            continue
        value = rec.row.get(column)
        bad = None
        if value is None:
            bad = Unreadable(rec.key, MISSING_TEXT, f"no {column!r} field")
        elif not isinstance(value, str):
            bad = Unreadable(rec.key, TEXT_NOT_STRING, f"{column!r} is {type(value).__name__}, not a string")
        elif len(value.encode("utf-8", "replace")) > cfg.max_text_bytes:
            bad = Unreadable(rec.key, read_reasons.FILE_TOO_LARGE, f"{column!r} is over {cfg.max_text_bytes} bytes "
                                                                    "(text.max_text_bytes)")
        if bad is not None:
            yield read_reject(f.path, default_source, bad)
        else:
            yield _item(f.path, rec.key, value, default_source, rec.row)


class ReadTexts(ReadRecords):
    def __init__(self, files: list[InputFile], default_source: str, cfg: TextInputConfig):
        super().__init__(files, functools.partial(read_text_file, default_source=clean_source(default_source),
                                                  cfg=cfg))


# --- backgrounds ------------------------------------------------------------------------------


class _PrepareBackground(beam.DoFn):
    """Decode under the pixel limit (bombs rejected by header), scale to the canvas, keep as PNG bytes."""

    def __init__(self, decode: DecodeConfig, bg: BackgroundConfig, side: int):
        self.decode, self.bg, self.side = decode, bg, side

    def process(self, s):
        decoded = decode_image(s.image_bytes, self.decode)
        if isinstance(decoded, Rejection):
            yield refused(to_reject(s, "backgrounds", decoded))
            return
        if min(decoded.width, decoded.height) < self.bg.min_side:
            yield refused(to_reject(s, "backgrounds", Rejection(
                TOO_SMALL, f"{decoded.width}x{decoded.height}: a side under {self.bg.min_side} px")))
            return
        canvas = render_ops.fit_background(decoded.image, self.side)
        buf = io.BytesIO()
        canvas.save(buf, format="PNG")
        yield (s.sample_id, buf.getvalue())


def _over_cap(backgrounds: list, cap: int, source: str) -> Iterator[Reject]:
    for sid, _ in sorted(backgrounds)[cap:]:
        yield reject_row(sid, source, Origin(file="", key=sid), "backgrounds",
                         (BACKGROUND_CAP, f"more than backgrounds.max_backgrounds={cap} kept backgrounds"))


# --- render -----------------------------------------------------------------------------------


def render_config(r: RenderSection) -> render_ops.RenderConfig:
    return render_ops.RenderConfig(canvas_side=r.canvas_side, sizes=tuple(r.sizes), max_chars=r.max_chars,
                                   min_contrast=r.min_contrast, angles=tuple(r.angles), layouts=tuple(r.layouts),
                                   font_names=tuple(r.fonts))


def to_row(item: TextItem, bg_id: str, out: render_ops.Render, keep_image: bool = True) -> OcrSynthRow:
    """The row of one render; without `keep_image` the PNG stays out (the writer draws it again: `WriteSynth`)."""
    w, h = out.width, out.height
    lines = [SynthLineCell(
        text=ln.text, quad=ln.quad, box=ln.box, box_1000=render_ops.to_1000(ln.box, w, h), color=list(ln.color),
        contrast=ln.contrast, plate=ln.plate,
        words=[SynthWordCell(text=wd.text, quad=wd.quad, box=wd.box, box_1000=render_ops.to_1000(wd.box, w, h))
               for wd in ln.words]) for ln in out.lines]
    return OcrSynthRow(
        sample_id=item.sample_id, source=item.source, tier=out.tier, task=TASK_OCR, origin=item.origin,
        url=item.url, license=item.license, question=OCR_QUESTION, answer=out.text, verifier=OCR_VERIFIER,
        image=ImageCell(bytes=out.png if keep_image else b"", path=f"{item.sample_id}.png"), width=w, height=h,
        image_format="PNG", image_digest=digest(out.png),
        engine=f"render/{out.font}", text=out.text, lines=lines, background_id=bg_id, font=out.font,
        font_size=out.font_size, layout=out.layout, angle=out.angle, min_contrast=out.min_contrast,
        density=out.density, chars_in=out.chars_in, chars_cut=out.chars_cut)


class _Drawer:
    """One sample drawn on its background (picked by the sample id from the kept list); decoded backgrounds are
    cached. The render stage and the writer draw through this, so both draw the same image."""

    def __init__(self, cfg: render_ops.RenderConfig, cap: int):
        self.cfg, self.cap = cfg, cap
        self._key = None
        self._images: dict[str, Image.Image] = {}
        self._ids: list[tuple[str, bytes]] = []

    def _backgrounds(self, backgrounds: list) -> list[tuple[str, bytes]]:
        key = len(backgrounds)
        if self._key != key:
            self._ids, self._images, self._key = sorted(backgrounds)[: self.cap], {}, key
        return self._ids

    def draw(self, sample_id: str, text: str, backgrounds: list
             ) -> tuple[Optional[str], Union[render_ops.Render, Rejection]]:
        """`(background id, render or rejection)`."""
        ids = self._backgrounds(backgrounds)
        if not ids:
            return None, Rejection(NO_BACKGROUND, "no background survived its checks")
        bg_id, png = ids[stable_bucket(sample_id, len(ids))]
        if bg_id not in self._images:
            if len(self._images) > 64:
                self._images.clear()
            with Image.open(io.BytesIO(png)) as im:
                self._images[bg_id] = im.convert("RGB")
        try:
            return bg_id, render_ops.render_sample(text, self._images[bg_id], sample_id, self.cfg)
        except (OSError, ValueError, MemoryError) as e:  # Pillow/FreeType on this text: one reject, not a crash
            return bg_id, Rejection(RENDER_FAILED, f"{type(e).__name__}: {e}")


class _Render(beam.DoFn):
    def __init__(self, cfg: render_ops.RenderConfig, cap: int, keep_images: bool = True):
        self.drawer, self.keep_images = _Drawer(cfg, cap), keep_images

    def process(self, item: TextItem, backgrounds):
        bg_id, out = self.drawer.draw(item.sample_id, item.text, backgrounds)
        if isinstance(out, Rejection):
            yield refused(to_reject(item, "render", out))
            return
        yield to_row(item, bg_id, out, self.keep_images)


class SynthOutputs(NamedTuple):
    rows: Any
    rejected: Any


class OcrSynthPipeline(beam.PTransform):
    """Text samples -> (`ocr` rows, rejects); reads the backgrounds itself."""

    def __init__(self, cfg: OcrSynthConfig, backgrounds: list[InputFile], output: Optional[str] = None):
        super().__init__()
        self.cfg, self.backgrounds, self.output = cfg, backgrounds, output

    def expand(self, texts):
        cfg = self.cfg
        bg = KeptBackgrounds(cfg, self.backgrounds)
        bg_read, prepared, kept = bg.expand_all(texts.pipeline)
        capped = kept | "BackgroundCap" >> beam.FlatMap(_over_cap, cfg.backgrounds.max_backgrounds, bg.source)
        count_stage(self.output, "backgrounds", bg_read.samples, prepared.kept)
        rendered = texts | "Render" >> beam.ParDo(
            _Render(render_config(cfg.render), cfg.backgrounds.max_backgrounds, images_checked_before_write(cfg)),
            beam.pvalue.AsSingleton(kept)).with_outputs("rejected", main="kept")
        count_stage(self.output, "render", texts, rendered.kept)
        rejected = (bg_read.rejected, prepared.rejected, capped, rendered.rejected) | "SynthRejects" >> beam.Flatten()
        return SynthOutputs(rendered.kept, rejected)


class KeptBackgrounds:
    """Read, decode and scale the background pictures -> one list of `(id, PNG)` (a side input)."""

    def __init__(self, cfg: OcrSynthConfig, files: list[InputFile], label: str = ""):
        self.cfg, self.files, self.label = cfg, files, label
        self.source = clean_source(cfg.source or "unknown")

    def expand_all(self, pipeline):
        cfg, label = self.cfg, self.label
        bg_read = pipeline | f"{label}ReadBackgrounds" >> ReadImages(self.files, self.source, cfg.reader)
        prepared = run_stage(bg_read.samples, f"{label}PrepareBackgrounds",
                             _PrepareBackground(cfg.decode, cfg.backgrounds, cfg.render.canvas_side))
        return bg_read, prepared, prepared.kept | f"{label}BackgroundList" >> beam.combiners.ToList()


# --- write: rows travel the shuffle without their PNG; each is drawn again as its shard is written ---------

_TEXT = "_text"  # the input text, beside a row dict between the join and the shard writer (not written)


def _redraw_size(d: dict) -> int:
    """Shard sizing for rows whose PNG is drawn at write time: the row plus ~2 bytes a pixel (a photo PNG)."""
    from quarry.pipelines.write import _row_bytes

    return _row_bytes(d) + (0 if d["image"]["bytes"] else 2 * d["width"] * d["height"])


class _Redraw:
    """`WriteParquetTable` attach: a shard's rows (id order) with their PNG drawn again from text, background and
    seed; a render that differs (background, size or digest) is a `write/render_mismatch` reject."""

    def __init__(self, cfg: render_ops.RenderConfig, cap: int):
        self.drawer = _Drawer(cfg, cap)

    def __call__(self, rows, backgrounds):
        for d in rows:
            text = d.pop(_TEXT)
            if d["image"]["bytes"]:  # drawn for decontam's image check: the PNG travelled
                yield d
                continue
            bg_id, out = self.drawer.draw(d["sample_id"], text, backgrounds)
            if isinstance(out, Rejection):
                why = f"the second render was refused: {out.reason}: {out.detail}"
            elif (bg_id, out.width, out.height, digest(out.png)) != (
                    d["background_id"], d["width"], d["height"], d["image_digest"]):
                why = (f"the second render ({bg_id}, {out.width}x{out.height}, {digest(out.png)}) is not the first "
                       f"({d['background_id']}, {d['width']}x{d['height']}, {d['image_digest']})")
            else:
                d["image"] = {**d["image"], "bytes": out.png}
                yield d
                continue
            yield refused(reject_row(d["sample_id"], d["source"], Origin(**d["origin"]), "write",
                                     Rejection(RENDER_MISMATCH, why)))


def _with_text(kv):
    _, got = kv
    texts = got["texts"]
    for row in got["rows"]:
        if not texts:
            yield refused(to_reject(row, "write", (SOURCE_CHANGED, "the input text was not found on the second read")))
            continue
        yield {**row.model_dump(), _TEXT: texts[0]}


class WriteSynth(beam.PTransform):
    """`OcrSynthRow`s without their PNG -> shards by source and tier, each PNG drawn again as it is written.

    The writer reads the texts and the backgrounds a second time (what travels the shuffles: rows without
    images, and the texts); a row whose text is not found again (the sample id is a hash of the text) is a
    `write/source_changed` reject. Returns `(paths, rejected)`.
    """

    def __init__(self, cfg: OcrSynthConfig, files: SynthPlan, output_dir: str):
        super().__init__()
        self.cfg, self.files, self.output_dir = cfg, files, output_dir

    def expand(self, rows):
        from apache_beam.io.filesystems import FileSystems

        from quarry.pipelines.write import WriteParquetTable, hive_partition

        cfg, p = self.cfg, rows.pipeline
        texts = p | "WriteReadTexts" >> ReadTexts(self.files.texts, cfg.source or "unknown", cfg.text)
        _, _, kept = KeptBackgrounds(cfg, self.files.backgrounds, "Write").expand_all(p)
        joined = (
            {"rows": rows | "KeyRows" >> beam.Map(lambda r: (r.sample_id, r)),
             "texts": texts.samples | "KeyTexts" >> beam.Map(lambda t: (t.sample_id, t.text))}
            | "JoinTexts" >> beam.CoGroupByKey()
            | "WithText" >> beam.FlatMap(_with_text).with_outputs(REJECTED, main="rows")
        )
        paths, rejected = joined.rows | "Shards" >> WriteParquetTable(
            FileSystems.join(self.output_dir, "data"), "ocr_synth", OcrSynthRow, cfg.shards, hive_partition,
            attach=_Redraw(render_config(cfg.render), cfg.backgrounds.max_backgrounds),
            side_inputs={"backgrounds": beam.pvalue.AsSingleton(kept)}, size_fn=_redraw_size)
        return paths, (joined[REJECTED], rejected) | "WriteRejects" >> beam.Flatten()


def images_checked_before_write(cfg) -> bool:
    """Whether the decontam stage checks the rows' images (they then travel in the rows)."""
    return bool(cfg.decontam.bench) and "image" in (cfg.decontam.image_fields or ("image",))
