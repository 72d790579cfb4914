"""`quarry run ocr_search`: OCR data and crop-then-search tasks from posters, charts, maps and scenes.

Three tasks, one table:
- `ocr` (GLM-4.5V §3.1): every picture with at least one valid line (recognition
  score >= text.min_score, line height >= text.min_height_px) becomes one row
  with its transcription in reading order, its lines (quadrilateral, box,
  confidence) and its entities; a picture without one is rejected `ocr/no_text`.
- crop tasks (GLM-5V-Turbo §3.3): each entity too small to read at the model's
  input size (line height < tasks.readable_px with the long side at
  tasks.model_input_side) gets a crop box (0-1000, with margin), the upscaled
  crop and the query (OCR of the crop); a crop whose re-read does not match the
  entity (similarity < tasks.min_similarity) is rejected `verify/crop_unreadable`,
  one whose region another entity of its kind shares `verify/ambiguous_reference`.
  - `ocr_search`: the query is the name of exactly one entity of the knowledge
    source (`search.kb`, imagemining's KB format): the question asks for one of
    its facts, the answer is that fact (never the name), the trajectory is
    crop(bbox) -> search(query) with their results (and OpenAI messages);
    refusals `no_facts`, `ambiguous_name`, `search_leak`, `answer_in_image`.
  - `ocr_zoom`: anything else (no KB, no such name, numbers and units): the
    question asks what the small text says; the trajectory is crop(bbox).

Tier rule: the entity's relative area (ViCrop buckets: < 0.005 hard, 0.005-0.05
medium, >= 0.05 easy), one step harder when its line height at the model input
is under tiers.small_text_px, one step easier at tiers.large_text_px or more.
An `ocr` row takes the tier of its hardest entity.
"""

from __future__ import annotations

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, Stage, with_reasons
from quarry.operators.inputs import reasons as read_reasons
from quarry.operators.ocr.engine import OcrLoadError, make_engine
from quarry.operators.ocr.engine import describe as describe_engine
from quarry.pipelines.decontam import FieldProbe
from quarry.pipelines.ocr_search import STAGE_REASONS, OcrSearchPipeline, ReadImages, plan_ocr_inputs
from quarry.schemas.config import ConfigError
from quarry.schemas.ocr_search import OcrSearchConfig, OcrSearchRow


def plan(patterns: list[str], cfg: OcrSearchConfig):
    try:
        make_engine(cfg.ocr).preflight()  # a missing engine or model stops the run before any data is read
    except OcrLoadError as e:
        raise ConfigError(f"ocr: {e}") from None
    return plan_ocr_inputs(patterns, cfg.reader)


def read(pipeline, cfg: OcrSearchConfig, files):
    return pipeline | ReadImages(files, cfg.source or "unknown", cfg.reader)


def transform(samples, cfg: OcrSearchConfig, files, output: str) -> FamilyOutputs:
    out = samples | "OcrSearch" >> OcrSearchPipeline(cfg, make_engine(cfg.ocr).label(), output)
    return FamilyOutputs(out.rows, out.rejected, out.images)


def describe(cfg: OcrSearchConfig, files) -> BuildInfo:
    info = BuildInfo(extra={"ocr": describe_engine(cfg.ocr)})
    if not cfg.tasks.enabled:
        info.notes.append("crop-then-search tasks disabled (tasks.enabled=false): only `ocr` rows were made")
    return info


# What this DAG's reader can reject a record for (operators/inputs/reasons.py).
READ_REASONS = (read_reasons.UNREADABLE_FILE, read_reasons.FILE_TOO_LARGE, read_reasons.INVALID_JSON, read_reasons.RECORD_TOO_LARGE, read_reasons.UNREADABLE_TAR, read_reasons.INVALID_METADATA, read_reasons.MISSING_IMAGE)


SPEC = DagSpec(
    name="ocr_search",
    summary="PP-OCR text lines, entities and crop-then-search tasks from posters, charts, maps and scenes",
    stages=with_reasons((
        Stage("read", "image folders, WebDataset tars, Parquet or JSONL -> pictures (no caption needed)", where="operators/inputs/image_text.py, pipelines/ocr_search.py"),
        Stage("decode", "Pillow decode under a pixel limit (bombs rejected by header), downscale to ocr.max_side", where="operators/decode.py"),
        Stage("ocr", "PP-OCR det+cls+rec via RunInference (rapidocr ONNX or PaddleOCR); valid lines or no_text", where="operators/ocr/engine.py, pipelines/ocr.py"),
        Stage("layout", "reading order, entities by proximity/alignment/height, kinds, ViCrop tiers", where="operators/ocr/layout.py"),
        Stage("tasks", "small entities -> crop box with margin, upscaled crop, question; a region another entity of "
                       "its kind shares is ambiguous_reference", where="operators/ocr/tasks.py, operators/ocr/search.py"),
        Stage("verify", "OCR the upscaled crop again (edit similarity < tasks.min_similarity: crop_unreadable); a read "
                        "that is one KB entity's name (search.kb) -> ocr_search: a fact about it, crop -> search "
                        "trajectory; else ocr_zoom", where="operators/ocr/tasks.py, operators/ocr/search.py, pipelines/ocr_search.py"),
        Stage("decontam", "optional (--set decontam.bench=PATH): text read, question, answer and crop against benchmark sets", where="pipelines/decontam.py"),
        Stage("write", "rows by source and tier; pictures once in DIR/images", where="pipelines/write.py"),
    ), {**STAGE_REASONS, "read": READ_REASONS}),
    config_model=OcrSearchConfig,
    plan=plan,
    read=read,
    transform=transform,
    describe=describe,
    row_model=OcrSearchRow,
    # the text read, question, answer and crop against benchmark sets (--set decontam.bench=PATH)
    decontam_fields=FieldProbe(text=("text", "question", "answer"), image=("crop",)),
    one_to_one=False,
)
