"""The ocr_search recipe (GLM-4.5V §3.1 OCR data, GLM-5V-Turbo §3.3 OCR Search) as Beam steps.

    ReadImages -> Prepare (decode, bomb/corrupt rejects, downscale to ocr.max_side)
               -> RunOcr (RunInference, one engine per worker)
               -> Layout (valid lines, reading order, entities, tiers; `ocr` rows; crops of small entities)
               -> RunOcr on the upscaled crops -> Verify (re-read or `crop_unreadable`; `ocr_search` rows)

Counts for the manifest (`_stats/`): `read`; `decode.in/out` (images that
decoded); `ocr.in/out` (decoded images / images with at least one valid
line, one `ocr` row each); `tasks.in/out` (crops planned / crops that
re-read, one `ocr_search` row each). So `read + read rejects == inputs`,
`decode.in == decode.out + decode rejects`, `ocr.in == ocr.out + ocr rejects`,
`tasks.in == tasks.out + verify rejects` (tasks.* only when tasks.enabled), and
rows == `ocr.out + tasks.out`.

Inputs are pictures without captions: folders of image files (a `stem.json`
beside one may give source/url/license), WebDataset tars (any image member;
`.json` metadata), Parquet with an image column, JSONL lines naming image
files. Unlike the caption reader, a missing caption is no reason to reject.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple, Optional, Union

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from quarry.operators import decode as decode_ops
from quarry.operators import decontam as decontam_ops
from quarry.operators.base import Rejection
from quarry.operators.decode import decode_image
from quarry.operators.ids import content_id, digest
from quarry.operators.inputs.columns import IMAGE_COLUMNS
from quarry.operators.inputs.files import image_file
from quarry.operators.inputs.image_text import PICTURE_ROW_EXTRA, PictureRecords
from quarry.operators.inputs.jsonl import jsonl_objects
from quarry.operators.inputs.parquet import parquet_rows
from quarry.operators.inputs.records import Unreadable
from quarry.operators.inputs.tar import tar_samples
from quarry.operators.ocr import search as search_ops
from quarry.operators.ocr.engine import OcrLine, fit_for_ocr
from quarry.operators.ocr.layout import build_layout, valid_lines
from quarry.operators.ocr.tasks import (
    CROP_UNREADABLE,
    encode_crop,
    image_tier,
    input_height,
    make_crop,
    plan_tasks,
    question_for,
    region_name,
    rel_area,
    tier_for,
    to_1000,
    verify_crop,
)
from quarry.operators.ocr.wording import WORDINGS
from quarry.operators.trajectory import openai_messages
from quarry.pipelines.ocr import RunOcr
from quarry.pipelines.read import (
    TABLE_ERRORS,
    ColumnNeed,
    InputFile,
    InputSpec,
    ReadRecords,
    clean_source,
    load_beside,
    open_file,
    plan_files,
    read_limited,
    read_opened,
    read_reject,
    unreadable_table,
)
from quarry.pipelines.stage import count_stage, refused, reject_row, run_stage, to_reject
from quarry.pipelines.stats import Progress
from quarry.schemas.caption import DecodeConfig
from quarry.schemas.common import ImageCell, ImageRecord, ImageText, Origin, Reject
from quarry.schemas.config import ReaderConfig
from quarry.schemas.ocr_search import (
    TASK_OCR,
    TASK_SEARCH,
    TASK_ZOOM,
    EntityCell,
    EntityConfig,
    OcrEngineConfig,
    OcrLineCell,
    OcrSearchConfig,
    OcrSearchRow,
    SearchTaskConfig,
    TextFilterConfig,
    TierConfig,
)
from quarry.schemas.rl import VerifierSpec, answer_verifier
from quarry.schemas.trajectory import ToolCall

OCR_VERIFIER = VerifierSpec(kind="ocr")  # both tasks: 1 - edit distance / max length

MIN_SIDE = 8  # pictures narrower than this hold no readable text and trip the detector's resizing
IMAGES, CROPS = "images", "crops"

# The recipe's own reasons (the steps decide them, no operator); read rejects are the reader's.
IMAGE_TOO_SMALL = "image_too_small"  # decode: a side under MIN_SIDE
OCR_FAILED = "ocr_failed"  # ocr: the engine raised on the picture
NO_TEXT = "no_text"  # ocr: no valid line
REASONS: tuple[str, ...] = (IMAGE_TOO_SMALL, OCR_FAILED, NO_TEXT)


# --- reading pictures (no captions needed) -------------------------------------------------


def plan_ocr_inputs(patterns: list[str], cfg: ReaderConfig) -> list[InputFile]:
    """Typed input files; InputError for what cannot be read at all (Parquet without an image column)."""
    return plan_files(patterns, InputSpec(
        kinds=("tar", "parquet", "jsonl", "image"), readable="a tar, Parquet, JSONL or image file",
        columns=(ColumnNeed("image_column", "image", cfg.image_column, IMAGE_COLUMNS, "reader.image_column",
                            named_missing=_NO_IMAGE_COLUMN.replace("{candidates}", "{wanted}"),
                            not_found=_NO_IMAGE_COLUMN),)))


_NO_IMAGE_COLUMN = "no image column (looked for {candidates}); columns are {names}. Name it with --set {option}=COLUMN"


def read_ocr_file(f: InputFile, default_source: str, cfg: ReaderConfig) -> Iterator[Union[ImageText, Reject]]:
    """Every picture of one input file, as samples (caption optional) or read rejects."""
    for rec in _pictures(f, default_source, cfg):
        yield read_reject(f.path, default_source, rec) if isinstance(rec, Unreadable) else rec


def _pictures(f: InputFile, default_source: str, cfg: ReaderConfig) -> Iterator[Union[ImageText, Unreadable]]:
    make = PictureRecords(f.path, default_source, cfg.max_image_bytes)
    if f.kind == "image":
        yield make.from_image_file(image_file(f.path, read_limited, FileSystems.exists, cfg.max_image_bytes,
                                              sidecars=("json",)))
        return

    def parse(fh):
        if f.kind == "tar":
            yield from map(make.from_tar, tar_samples(fh, cfg.max_image_bytes, blank_metadata_is_empty=True))
        elif f.kind == "jsonl":
            load = load_beside(f.path, cfg.max_image_bytes)
            for lineno, obj in jsonl_objects(fh):
                yield make.from_line(lineno, obj, load)
        else:
            column = f.image_column or "image"
            try:
                for row, rec in parquet_rows(fh, [column, *PICTURE_ROW_EXTRA], 64):
                    yield make.from_row(row, rec, column)
            except TABLE_ERRORS as e:
                yield unreadable_table(e)

    yield from read_opened(f.path, parse)


class ReadImages(ReadRecords):
    """Planned input files -> (samples, rejected); one file per worker, streaming."""

    def __init__(self, files: list[InputFile], default_source: str, cfg: ReaderConfig):
        super().__init__(files, functools.partial(read_ocr_file, default_source=clean_source(default_source),
                                                  cfg=cfg))


# --- the OCR steps ---------------------------------------------------------------------------


@dataclass
class OcrItem:
    """A decoded picture on its way through OCR (`pixels`: RGB, long side <= ocr.max_side)."""

    sample_id: str
    source: str
    origin: Origin
    url: Optional[str]
    license: Optional[str]
    image_bytes: bytes
    width: int
    height: int
    image_format: str
    scale: float  # pixels / original
    pixels: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class CropItem:
    """A planned crop-then-search task waiting for its re-read."""

    sample_id: str
    parent: OcrSearchRow  # the `ocr` row of the picture (for its shared columns)
    entity_text: str
    entity_kind: str
    entity_box_1000: list[int]
    entity_box_in_crop: tuple[float, float, float, float]
    crop_box_1000: list[int]
    crop_bytes: bytes
    crop_scale: float
    question: str
    tier: str
    rel_area: float
    input_height: float
    region: str = ""  # where the entity is ("top-right"), as the question says
    ambiguous: bool = False  # another entity of its kind sits in the same region


class _Prepare(beam.DoFn):
    """Decode under the pixel limit (bombs rejected by header) and downscale for the engine."""

    def __init__(self, decode: DecodeConfig, ocr: OcrEngineConfig):
        self.decode = decode
        self.ocr = ocr

    def process(self, s: ImageText):
        decoded = decode_image(s.image_bytes, self.decode)
        if isinstance(decoded, Rejection):
            yield refused(to_reject(s, "decode", decoded))
            return
        if min(decoded.width, decoded.height) < MIN_SIDE:
            yield refused(to_reject(s, "decode", Rejection(
                IMAGE_TOO_SMALL, f"{decoded.width}x{decoded.height}: a side under {MIN_SIDE} px")))
            return
        o = self.ocr
        pixels, scale = fit_for_ocr(decoded.image, o.max_side, o.min_short_side, o.max_upscale)
        item = OcrItem(s.sample_id, s.source, s.origin, s.url, s.license, s.image_bytes, decoded.width,
                       decoded.height, decoded.format, scale, pixels)
        yield item, pixels


def _line_cell(line: OcrLine, w: int, h: int) -> OcrLineCell:
    box = line.box
    ibox = [int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3]))]
    return OcrLineCell(text=line.text, score=round(line.score, 5), quad=list(line.quad), box=ibox,
                       box_1000=to_1000(box, w, h))


class _Layout(beam.DoFn):
    """OCR lines -> the `ocr` row, the shared image, and crops of the small entities."""

    def __init__(self, text: TextFilterConfig, entities: EntityConfig, tasks: SearchTaskConfig, tiers: TierConfig,
                 engine_label: str):
        self.text, self.entities, self.tasks, self.tiers = text, entities, tasks, tiers
        self.engine_label = engine_label

    def process(self, element):
        item, result = element
        tasks, tiers = self.tasks, self.tiers
        if result.error is not None:
            yield refused(to_reject(item, "ocr", Rejection(OCR_FAILED, result.error)))
            return
        w, h = item.width, item.height
        lines = valid_lines([ln.scaled(1.0 / item.scale) for ln in result.lines], self.text)
        if not lines:
            seen = len(result.lines)
            yield refused(to_reject(item, "ocr", Rejection(
                NO_TEXT, f"{seen} line(s) read, none valid (score >= {self.text.min_score}, "
                         f"height >= {self.text.min_height_px} px)" if seen else "no text detected")))
            return
        layout = build_layout(lines, self.entities)
        entities, sizes = [], []
        for e in layout.entities:
            h_in = input_height(e.height, w, h, tasks.model_input_side)
            area = rel_area(e.box, w, h)
            sizes.append((area, h_in))
            entities.append(EntityCell(
                text=e.text, kind=e.kind, box=[int(v) for v in e.box], box_1000=to_1000(e.box, w, h),
                lines=list(e.lines), text_height_px=round(e.height, 2), input_height_px=round(h_in, 2),
                rel_area=round(area, 6), small=h_in < tasks.readable_px, tier=tier_for(area, h_in, tiers)))
        image_id = digest(item.image_bytes)
        row = OcrSearchRow(
            sample_id=item.sample_id, source=item.source, tier=image_tier(sizes, tiers), task=TASK_OCR,
            origin=item.origin, url=item.url, license=item.license, image_id=image_id, width=w, height=h,
            image_format=item.image_format, engine=self.engine_label, text=layout.transcription,
            lines=[_line_cell(ln, w, h) for ln in layout.lines], entities=entities,
            question=WORDINGS[tasks.language].ocr_question, answer=layout.transcription, verifier=OCR_VERIFIER)
        yield row
        yield beam.pvalue.TaggedOutput(IMAGES, ImageRecord(image_id=image_id, image=ImageCell(bytes=item.image_bytes),
                                                           width=w, height=h, format=item.image_format))
        if not tasks.enabled:
            return
        regions = [(e.kind, region_name(e.box, w, h)) for e in layout.entities]
        ambiguous = search_ops.ambiguous_regions(regions)
        for plan in plan_tasks(layout, w, h, tasks):
            e = plan.entity
            crop, scale = make_crop(item.pixels, item.scale, plan.crop_box, e.height, tasks)
            x0, y0 = plan.crop_box[0], plan.crop_box[1]
            in_crop = ((e.box[0] - x0) * scale, (e.box[1] - y0) * scale, (e.box[2] - x0) * scale,
                       (e.box[3] - y0) * scale)
            task_id = content_id(TASK_SEARCH, item.sample_id, str(plan.entity_index), e.text)
            crop_1000 = to_1000(plan.crop_box, w, h)
            yield beam.pvalue.TaggedOutput(CROPS, (CropItem(
                sample_id=task_id, parent=row, entity_text=e.text, entity_kind=e.kind,
                entity_box_1000=to_1000(e.box, w, h), entity_box_in_crop=in_crop, crop_box_1000=crop_1000,
                crop_bytes=encode_crop(crop, tasks.crop_format), crop_scale=round(scale, 4),
                question=question_for(e.kind, regions[plan.entity_index][1], task_id, tasks.language),
                tier=tier_for(plan.area, plan.input_height, tiers), rel_area=plan.area,
                input_height=plan.input_height, region=regions[plan.entity_index][1],
                ambiguous=plan.entity_index in ambiguous), crop))


class _Verify(beam.DoFn):
    """Re-read crop -> an `ocr_zoom` row, an `ocr_search` row when the crop reads a KB name, or a refusal
    (`crop_unreadable`, and `operators/ocr/search.py`'s reasons)."""

    def __init__(self, tasks: SearchTaskConfig, kb_path: Optional[str] = None):
        self.min_similarity = tasks.min_similarity
        self.language = tasks.language
        self.kb_path = kb_path
        self.kb = self.index = None

    def setup(self):
        if self.kb_path:  # once per worker: the KB is small next to the pictures (imagemining has the sqlite store)
            from quarry.operators.imagemining.kb import KnowledgeBase
            from quarry.operators.imagemining.qa import load_templates

            with open_file(self.kb_path) as fh:
                self.kb = KnowledgeBase.from_lines(line.decode("utf-8", "replace") for line in fh)
            self.index = search_ops.NameIndex(self.kb)
            self.templates = load_templates(None, self.language)

    def process(self, element):
        c, result = element
        p = c.parent
        if c.ambiguous:
            verdict = Rejection(search_ops.AMBIGUOUS_REFERENCE,
                                f"another {c.entity_kind} is near the {c.region} too: the question cannot point at it")
        elif result.error is not None:
            verdict = Rejection(CROP_UNREADABLE, f"OCR failed on the crop: {result.error}")
        else:
            verdict = verify_crop(c.entity_text, c.entity_box_in_crop, result.lines, self.min_similarity)
        fact = None
        if not isinstance(verdict, Rejection) and self.kb is not None:
            fact = search_ops.find_fact(self.kb, self.index, verdict.query, c.sample_id)
            if isinstance(fact, Rejection):
                verdict = fact
        question = c.question
        if isinstance(fact, search_ops.SearchFact):
            question = search_ops.search_question(c.entity_kind, c.region, fact, self.templates)
            verdict = search_ops.check_search(fact, question, p.text) or verdict
        if isinstance(verdict, Rejection):
            yield refused(reject_row(c.sample_id, p.source, p.origin, "verify", verdict))
            return
        if isinstance(fact, search_ops.SearchFact):
            task, answer, aliases, verifier = TASK_SEARCH, fact.answer, list(fact.answer_aliases), \
                answer_verifier(fact.answer_type)
        else:  # the upscaled re-read is the sharper reading; the whole-picture reading is right too
            task, answer, verifier = TASK_ZOOM, verdict.query, OCR_VERIFIER
            aliases = [c.entity_text] if c.entity_text != verdict.query else []
            fact = None
        steps = search_ops.tool_steps(c.crop_box_1000, verdict.query, fact)
        yield OcrSearchRow(
            sample_id=c.sample_id, source=p.source, tier=c.tier, task=task, origin=p.origin, url=p.url,
            license=p.license, parent_id=p.sample_id, image_id=p.image_id, width=p.width, height=p.height,
            image_format=p.image_format, engine=p.engine, text=c.entity_text, question=question,
            answer=answer, answer_aliases=aliases, verifier=verifier, query=verdict.query,
            entity_kind=c.entity_kind, entity_box_1000=c.entity_box_1000,
            crop_box_1000=c.crop_box_1000, crop=ImageCell(bytes=c.crop_bytes), crop_scale=c.crop_scale,
            crop_similarity=round(verdict.similarity, 4), rel_area=round(c.rel_area, 6),
            input_height_px=round(c.input_height, 2),
            trajectory=[ToolCall(name=n, arguments=a, result=r) for n, a, r in steps],
            messages=json.dumps(openai_messages(question, steps, answer), ensure_ascii=False),
            search_entity_id=fact.entity_id if fact else None, search_result=fact.result if fact else None,
            answer_type=fact.answer_type if fact else None)


class Outputs(NamedTuple):
    rows: Any  # PCollection[OcrSearchRow] (both tasks)
    images: Any  # PCollection[ImageRecord]
    rejected: Any  # PCollection[Reject]


class OcrSearchPipeline(beam.PTransform):
    """PCollection[ImageText] -> Outputs(rows, images, rejected); counts to `output_dir/_stats`."""

    def __init__(self, cfg: OcrSearchConfig, engine_label: str, output_dir: Optional[str] = None,
                 ocr_transform: Optional[beam.PTransform] = None, crop_ocr_transform: Optional[beam.PTransform] = None):
        super().__init__()
        self.cfg = cfg
        self.engine_label = engine_label
        self.output_dir = output_dir
        self.ocr = ocr_transform or RunOcr(cfg.ocr)
        self.crop_ocr = crop_ocr_transform or RunOcr(cfg.ocr)

    def expand(self, samples):
        cfg, out_dir = self.cfg, self.output_dir
        prepared = run_stage(samples | "ProgressDecode" >> Progress("decode"), "Prepare", _Prepare(cfg.decode, cfg.ocr),
                             out_dir, "decode")
        read = run_stage(
            prepared.kept | "Ocr" >> self.ocr | "ProgressOcr" >> Progress("ocr"), "Layout",
            _Layout(cfg.text, cfg.entities, cfg.tasks, cfg.tiers, self.engine_label), tags=(IMAGES, CROPS))
        count_stage(out_dir, "ocr", prepared.kept, read.kept)
        rows, rejected = [read.kept], [prepared.rejected, read.rejected]
        if cfg.tasks.enabled:  # no crop step (and no second engine handle) without tasks
            verified = run_stage(read[CROPS] | "CropOcr" >> self.crop_ocr, "Verify", _Verify(cfg.tasks, cfg.search.kb))
            count_stage(out_dir, "tasks", read[CROPS], verified.kept)
            rows.append(verified.kept)
            rejected.append(verified.rejected)
        all_rows = rows | "AllRows" >> beam.Flatten()
        all_rejected = rejected | "AllRejects" >> beam.Flatten()
        return Outputs(all_rows, read[IMAGES], all_rejected)


# The reasons each stage of the ocr_search DAG (dags/ocr_search.py: SPEC.stages) can give its reject rows; `read`
# is the reader's.
STAGE_REASONS: dict[str, tuple[str, ...]] = {
    "decode": (decode_ops.CORRUPT, decode_ops.TOO_LARGE, IMAGE_TOO_SMALL),
    "ocr": (OCR_FAILED, NO_TEXT),
    "layout": (),
    "tasks": (),
    "verify": (CROP_UNREADABLE, *search_ops.REASONS),
    "decontam": (decontam_ops.CONTAMINATED_TEXT, decontam_ops.CONTAMINATED_IMAGE),
    "write": (),
}
