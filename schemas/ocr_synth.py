"""The ocr_synth DAG: its config sections and its output row (the `ocr` task's row shape, with word boxes).

One row per rendered sample: the PNG in the row (`image`), the exact transcription in reading order (`text`,
also the RL `answer` under the `ocr` verifier: 1 - edit distance / max length), every drawn line with its
rotated quad, axis-aligned box (pixels and 0-1000), colour, contrast and words (each with quad and boxes).
"""

from __future__ import annotations

from typing import Annotated, Optional

import pyarrow as pa
from pydantic import Field, field_validator

from quarry.schemas.arrow import ArrowType
from quarry.schemas.caption import DecodeConfig
from quarry.schemas.common import ImageCell, Row, Sample
from quarry.schemas.config import DagConfig, Section
from quarry.schemas.rl import RlTask

TASK_OCR = "ocr"


class TextInputConfig(Section):
    """Where the text comes from: .txt files (one sample each) or a text column of Parquet/JSONL rows."""

    text_column: Optional[str] = Field(
        None, description="Parquet/JSONL text field (default: the first of text, content, document, caption)")
    max_text_bytes: int = Field(4 * 1024 * 1024, ge=1, description="a text file or cell larger than this is rejected")


class BackgroundConfig(Section):
    """The background pictures (any image input the caption/ocr_search readers take)."""

    input: list[str] = Field(
        default_factory=list, description="files, folders or globs of images / tars / Parquet / JSONL of images "
                                          "(required): each text sample is drawn on one, picked by its id")
    max_backgrounds: int = Field(512, ge=1, description="at most this many kept backgrounds (held as a side input)")
    min_side: int = Field(64, ge=8, description="a background with a shorter side is rejected `too_small`")


class RenderSection(Section):
    """What the renderer varies (operators/ocr/render.py: RenderConfig)."""

    canvas_side: int = Field(960, ge=128, le=4096, description="backgrounds are scaled so their long side is this")
    sizes: list[int] = Field([14, 18, 24, 32, 44], description="font sizes (canvas px), one picked per sample")
    max_chars: int = Field(1200, ge=1, description="text beyond this is cut at a word boundary (chars_cut records it)")
    min_contrast: float = Field(4.5, ge=1.0, le=21.0, description="WCAG 2 contrast the text colour must reach")
    angles: list[float] = Field([0.0, 0.0, 0.0, -3.0, 3.0, -8.0, 8.0], description="rotations (deg), one per sample")
    layouts: list[str] = Field(["paragraph", "columns", "labels"], description="paragraph | columns | labels")
    fonts: list[str] = Field(
        ["DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "DejaVuSans-Bold", "WenQuanYiMicroHei"],
        description="font names (operators/ocr/render.py FONT_FILES); those covering the text are candidates")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if not v or any(s < 6 or s > 400 for s in v):
            raise ValueError("sizes: give at least one size in 6..400")
        return v

    @field_validator("angles")
    @classmethod
    def _angles(cls, v: list[float]) -> list[float]:
        if not v or any(abs(a) > 45 for a in v):
            raise ValueError("angles: give at least one angle within +-45 degrees")
        return v

    @field_validator("layouts")
    @classmethod
    def _layouts(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x not in ("paragraph", "columns", "labels")]
        if not v or bad:
            raise ValueError(f"layouts: paragraph, columns or labels (got {bad or 'none'})")
        return v


class OcrSynthConfig(DagConfig):
    text: TextInputConfig = TextInputConfig()
    backgrounds: BackgroundConfig = BackgroundConfig()
    decode: DecodeConfig = DecodeConfig()
    render: RenderSection = RenderSection()


class SynthWordCell(Row):
    text: str
    quad: list[float] = Field(description="x1,y1,...,x4,y4 clockwise from the word's top-left (pixels, rotated)")
    box: list[int] = Field(description="axis-aligned box of the quad (pixels)")
    box_1000: list[int]


class SynthLineCell(Row):
    """One drawn line: exact text and geometry (score is 1: it is ground truth, not a reading)."""

    text: str
    score: Annotated[float, ArrowType(pa.float32())] = 1.0
    quad: list[float] = Field(description="x1,y1,...,x4,y4 clockwise from the line's top-left (pixels, rotated)")
    box: list[int] = Field(description="axis-aligned box of the quad (pixels)")
    box_1000: list[int]
    color: list[int] = Field(description="text colour RGB")
    contrast: Annotated[float, ArrowType(pa.float32())] = Field(
        description="WCAG contrast of the colour vs the background under the line (worst chunk, or the plate)")
    plate: bool = Field(False, description="drawn on a plain plate: no colour met min_contrast on the background")
    words: list[SynthWordCell] = Field(default_factory=list)


class OcrSynthRow(RlTask, Sample):
    """One `ocr` sample rendered with exact truth (the RL contract of `schemas/rl.py`, verifier `ocr`)."""

    image: ImageCell
    width: Annotated[int, ArrowType(pa.int32())]
    height: Annotated[int, ArrowType(pa.int32())]
    image_format: str
    image_digest: str = Field(description="blake2b of the PNG (operators/ids.py digest): the writer draws the image "
                                          "again and checks it against this")
    engine: str = Field(description="render/<font>: what drew the text")
    text: str = Field(description="the drawn text in reading order, one line per line")
    lines: list[SynthLineCell] = Field(default_factory=list, description="every drawn line, reading order")
    background_id: str = Field(description="sample id of the background picture")
    font: str
    font_size: Annotated[int, ArrowType(pa.int32())]
    layout: str
    angle: Annotated[float, ArrowType(pa.float32())] = Field(description="rotation, degrees counter-clockwise")
    min_contrast: Annotated[float, ArrowType(pa.float32())]
    density: Annotated[float, ArrowType(pa.float32())] = Field(description="sum of line box areas / image area")
    chars_in: Annotated[int, ArrowType(pa.int32())] = Field(description="characters of the input text")
    chars_cut: Annotated[int, ArrowType(pa.int32())] = Field(
        description="non-space characters not drawn (over render.max_chars or past the canvas)")
