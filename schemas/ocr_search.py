"""The ocr_search DAG: its config sections and its output row.

Two tasks share one row model (so one Hive table reads with one schema):

- `ocr`: one row per image with at least one valid text line: the full
  transcription in reading order, every line (quadrilateral, axis-aligned box,
  confidence) and the entities the lines group into.
- `ocr_search`: one row per small entity whose crop re-reads: the question,
  the crop box (0-1000), the upscaled crop, the search query (OCR of the crop),
  the answer (the text in the image, as the crop reads it) and the trajectory
  `crop(bbox)` then `search(query)`.

The picture itself is stored once in `DIR/images/` (rows carry `image_id`);
`ocr_search` rows carry their own crop bytes.

Defaults and where they come from: the ViCrop area buckets (< 0.005, 0.005-0.05,
>= 0.05 of the image) for tiers; PP-OCR's recognition score 0.5 as rapidocr's
floor, raised to 0.8 for "valid" detections; the OCR reward of GLM-4.5V Table 1
(1 - edit distance / max length) as the crop re-read similarity.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import pyarrow as pa
from pydantic import Field, model_validator

from quarry.schemas.arrow import ArrowType
from quarry.schemas.caption import DecodeConfig
from quarry.schemas.common import ImageCell, Row, Sample
from quarry.schemas.config import SIDE_FILE, DagConfig, Section
from quarry.schemas.rl import RlTask
from quarry.schemas.trajectory import ToolCall

TASK_OCR = "ocr"
TASK_ZOOM = "ocr_zoom"  # crop the small text, read it: the answer is the text
TASK_SEARCH = "ocr_search"  # crop, read a name, search it: the answer is a fact about the name


class OcrEngineConfig(Section):
    """Which OCR engine reads the text, with which models, on what."""

    engine: Literal["rapidocr", "paddleocr"] = Field(
        "rapidocr",
        description="rapidocr: PP-OCR ONNX models shipped in the rapidocr wheel (offline, default); "
                    "paddleocr: PaddleOCR (install quarry[paddle]) on local model directories",
    )
    det_model: Optional[str] = Field(
        None, description="detection model: rapidocr: an .onnx file (default: the wheel's PP-OCR det); "
                          "paddleocr: a model directory with inference.yml (required)")
    rec_model: Optional[str] = Field(
        None, description="recognition model: rapidocr: an .onnx file (default: the wheel's PP-OCR rec); "
                          "paddleocr: a model directory with inference.yml (required)")
    rec_keys: Optional[str] = Field(None, description="rapidocr only: the character dictionary of a custom rec model")
    det_model_name: Optional[str] = Field(None, description="paddleocr only: the det model's name, e.g. PP-OCRv5_server_det")
    rec_model_name: Optional[str] = Field(None, description="paddleocr only: the rec model's name, e.g. PP-OCRv5_server_rec")
    use_angle_cls: bool = Field(True, description="run the 0/180 degree text-line classifier (upside-down text)")
    device: str = Field("cpu", description="cpu | gpu | gpu:N (rapidocr needs onnxruntime-gpu for gpu)")
    accelerator: Optional[str] = Field(
        None, description="Beam accelerator resource hint for the model step only, e.g. "
        "'type:nvidia-l4;count:1;install-nvidia-driver' (Dataflow reads it; other runners ignore it); off unless set. "
        "Do not also pass Dataflow's worker_accelerator service option: hints and that option do not combine")
    share_model: bool = Field(False, description="one model per worker machine shared by its SDK processes "
                              "(RunInference share_model_across_processes): for a GPU that holds one copy")
    threads: int = Field(0, ge=0, description="CPU threads per engine (0 = the runtime's default)")
    max_side: int = Field(
        2048, ge=64, description="pictures are scaled so their long side is at most this before OCR (boxes are "
                                 "mapped back); huge pictures are downscaled, never read whole")
    min_short_side: int = Field(
        736, ge=0, description="smaller pictures are upscaled towards this short side (PP-OCR's det size: "
                               "small text reads better), by at most max_upscale and within max_side")
    max_upscale: float = Field(2.0, ge=1.0)
    det_limit_side_len: int = Field(
        2048, ge=32, description="the detector's own resize limit; with det_limit_type=max and the default "
                                 "max_side it changes nothing (the picture was sized above)")
    det_limit_type: Literal["min", "max"] = Field(
        "max", description="max: long side at most det_limit_side_len; min (rapidocr's default, 736): short side "
                           "at least, which blows long banners up to tens of megapixels")
    min_batch_size: int = Field(1, ge=1)
    max_batch_size: int = Field(8, ge=1)


class TextFilterConfig(Section):
    """What counts as a valid detection (GLM-4.5V §3.1: keep images with at least one)."""

    min_score: float = Field(0.8, ge=0.0, le=1.0, description="recognition confidence at or above this")
    min_height_px: float = Field(6.0, ge=0.0, description="line height in original pixels at or above this")
    min_chars: int = Field(1, ge=1, description="non-space characters in the line, at least")


class EntityConfig(Section):
    """How lines group into entities (titles, labels, legend entries, fields)."""

    max_line_gap: float = Field(0.6, ge=0.0, description="vertical gap between stacked lines, in line heights")
    max_word_gap: float = Field(1.2, ge=0.0, description="horizontal gap between pieces of one line, in line heights")
    max_height_ratio: float = Field(1.4, ge=1.0, description="taller / shorter line height inside one entity")


class SearchTaskConfig(Section):
    """Which entities become crop-then-search tasks, and how crops are made and checked."""

    enabled: bool = True
    model_input_side: int = Field(
        672, ge=64, description="long side of the image as the trained model sees it (text height is measured there)")
    readable_px: float = Field(
        24.0, ge=1.0, description="lines (detector box height) shorter than this at model_input_side are too small "
                                  "to read and get a task; PP-OCR boxes are ~1.5x the font size + 4 px, so 24 is "
                                  "~13 px text, about one 14 px ViT patch")
    margin: float = Field(0.5, ge=0.0, description="crop margin on each side, in entity text heights")
    upscale_to_px: int = Field(48, ge=8, description="the crop is upscaled so its lines are this tall (x1 at least)")
    max_upscale: float = Field(6.0, ge=1.0)
    max_crop_side: int = Field(1536, ge=64, description="upscaled crops are capped at this side")
    min_similarity: float = Field(
        0.8, ge=0.0, le=1.0, description="crop re-read vs entity text (1 - edit distance / max length), else crop_unreadable")
    max_tasks_per_image: int = Field(8, ge=0)
    crop_format: Literal["PNG", "JPEG"] = "PNG"
    language: Literal["en", "zh"] = Field(
        "en", description="wording of every question (operators/ocr/wording.py; the search question's relation "
                          "wording is imagemining's templates of that language)")


class TierConfig(Section):
    """Tier rule: ViCrop-style area bucket, moved one step by text height at the model input."""

    area_buckets: list[float] = Field(
        [0.005, 0.05], description="relative entity area edges: < first hard, < second medium, else easy")
    small_text_px: float = Field(12.0, ge=0.0, description="line height at model input below this: one tier harder")
    large_text_px: float = Field(40.0, ge=0.0, description="line height at model input at or above this: one tier easier")

    @model_validator(mode="after")
    def _ordered(self) -> "TierConfig":
        b = self.area_buckets
        if len(b) != 2 or not 0 < b[0] < b[1] < 1:
            raise ValueError("area_buckets: give 2 increasing fractions in (0, 1)")
        if self.small_text_px > self.large_text_px:
            raise ValueError("small_text_px must not exceed large_text_px")
        return self


class SearchSourceConfig(Section):
    """Where the search step looks names up (off unless set: small text then makes `ocr_zoom` tasks only)."""

    kb: Optional[str] = Field(
        None, json_schema_extra=SIDE_FILE, description="knowledge-base JSONL in the imagemining format (entities, aliases, facts): a crop "
                          "whose text is an entity's name becomes an `ocr_search` task asking for one of its facts")


class OcrSearchConfig(DagConfig):
    decode: DecodeConfig = DecodeConfig()
    ocr: OcrEngineConfig = OcrEngineConfig()
    text: TextFilterConfig = TextFilterConfig()
    entities: EntityConfig = EntityConfig()
    tasks: SearchTaskConfig = SearchTaskConfig()
    tiers: TierConfig = TierConfig()
    search: SearchSourceConfig = SearchSourceConfig()


class OcrLineCell(Row):
    """One recognised text line in original-image pixels."""

    text: str
    score: Annotated[float, ArrowType(pa.float32())]
    quad: list[float] = Field(description="x1,y1,x2,y2,x3,y3,x4,y4 clockwise from top-left (pixels)")
    box: list[int] = Field(description="axis-aligned x0,y0,x1,y1 (pixels)")
    box_1000: list[int] = Field(description="the box normalised to 0-1000 by width/height")


class EntityCell(Row):
    """Lines grouped by layout into one entity."""

    text: str
    kind: str = Field(description="title | heading | paragraph | field | number | label")
    box: list[int]
    box_1000: list[int]
    lines: list[int] = Field(description="indices into `lines`, in reading order")
    text_height_px: Annotated[float, ArrowType(pa.float32())] = Field(description="median line height, original pixels")
    input_height_px: Annotated[float, ArrowType(pa.float32())] = Field(
        description="the same height at the model's input size (tasks.model_input_side)")
    rel_area: Annotated[float, ArrowType(pa.float32())] = Field(description="entity box area / image area")
    small: bool = Field(description="too small to read at the model input (input_height_px < tasks.readable_px)")
    tier: str


class OcrSearchRow(RlTask, Sample):
    """One `ocr`, `ocr_zoom` or `ocr_search` sample (the RL contract of `schemas/rl.py`); fields of the other
    tasks are null/empty.

    `ocr`: the question asks for the whole transcription, the answer is `text` (OCR rule). `ocr_zoom`: crop a
    small text and read it; the answer is the text as the upscaled crop reads it, the whole-picture reading
    (`text`) an alias when it differs (OCR rule). `ocr_search`: the crop reads a name (`query`) that one KB
    entity has; the answer is a fact about it (`search_result` is what the search returns), never the name
    (exact match with aliases, numeric for years and quantities)."""

    image_id: str
    width: Annotated[int, ArrowType(pa.int32())]
    height: Annotated[int, ArrowType(pa.int32())]
    image_format: str
    engine: str = Field(description="engine/det model/rec model that read the text")
    text: str = Field(description="ocr: full transcription in reading order; ocr_search: the entity's text as the "
                                  "whole-picture OCR read it")
    lines: list[OcrLineCell] = Field(default_factory=list, description="ocr: every valid line, reading order")
    entities: list[EntityCell] = Field(default_factory=list, description="ocr: entities, reading order")
    query: Optional[str] = Field(None, description="ocr_search: OCR of the upscaled crop, the search query")
    entity_kind: Optional[str] = None
    entity_box_1000: Optional[list[int]] = None
    crop_box_1000: Optional[list[int]] = Field(None, description="ocr_search: crop with margin, 0-1000")
    crop: Optional[ImageCell] = Field(None, description="ocr_search: the upscaled crop")
    crop_scale: Annotated[Optional[float], ArrowType(pa.float32())] = None
    crop_similarity: Annotated[Optional[float], ArrowType(pa.float32())] = None
    rel_area: Annotated[Optional[float], ArrowType(pa.float32())] = None
    input_height_px: Annotated[Optional[float], ArrowType(pa.float32())] = None
    trajectory: list[ToolCall] = Field(
        default_factory=list, description="ocr_zoom: crop(bbox); ocr_search: crop(bbox) then search(query), "
                                          "each with its result")
    messages: Optional[str] = Field(
        None, description="ocr_zoom/ocr_search: the trajectory as OpenAI chat messages (JSON: user question, "
                          "assistant tool_calls, tool results, boxed answer)")
    search_entity_id: Optional[str] = Field(None, description="ocr_search: the KB entity the name is")
    search_result: Optional[str] = Field(None, description="ocr_search: the search result snippet")
    answer_type: Optional[str] = Field(None, description="ocr_search: entity, year, quantity, ...")
