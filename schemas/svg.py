"""The svg DAG: its config sections and its output row.

SVG code <-> rendered image pairs (GLM-5V-Turbo §4: SVG code paired with the
image it draws helps perception and STEM reasoning). Limits are set so that one
hostile file costs bounded time and memory: input bytes, inflated `.svgz`
bytes, element count and the element count after `<use>` expansion are all
checked before anything is rendered.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import pyarrow as pa
from pydantic import Field, field_validator

from quarry.schemas.arrow import ArrowType
from quarry.schemas.common import ImageCell, Origin, Row, Sample
from quarry.schemas.config import DagConfig, Section
from quarry.schemas.rl import RlTask

TASKS = ("svg_to_image", "image_to_svg")


class SvgReaderConfig(Section):
    """How SVG inputs are read: `.svg`/`.svgz` files, tars of them, Parquet/JSONL with an SVG text column."""

    svg_column: Optional[str] = Field(None, description="Parquet/JSONL field holding SVG text (default: `svg`)")
    max_bytes: int = Field(2 * 1024 * 1024, ge=1, description="larger inputs (file, member or cell) are `file_too_large`")
    max_inflated_bytes: int = Field(
        4 * 1024 * 1024, ge=1, description="a `.svgz` inflating past this is a gzip bomb: parse/too_large")


class SvgLimitsConfig(Section):
    max_elements: int = Field(20_000, ge=1, description="more XML elements is `too_long` (checked right after parsing)")
    max_expanded_elements: int = Field(
        100_000, ge=1, description="elements after expanding every <use> (nested <use> fan-out is an SVG bomb)")
    max_chars: int = Field(32_000, ge=1, description="normalised SVG longer than this (characters) is `too_long`")


class NormaliseConfig(Section):
    precision: int = Field(2, ge=0, le=8, description="decimals kept in coordinates, path data and transforms")
    rename_ids: bool = Field(True, description="rename referenced ids to i0, i1, ... in document order, drop unused ids")
    keep_title: bool = Field(False, description="keep <title>/<desc> text (free text that may carry names or noise)")


class RenderConfig(Section):
    size: int = Field(512, ge=8, le=4096, description="rendered PNG long side in pixels")
    background: str = Field("#ffffff", description="canvas colour under the drawing")
    blank_max_std: float = Field(
        2.0, ge=0.0, description="renders whose pixel standard deviation (0-255, 64x64 grey thumbnail) is below this "
                                 "are `blank_render`")
    font_family: str = Field("DejaVu Sans", description="default and sans-serif font for <text> (resvg draws no "
                                                       "text in a family it cannot find, and has no fallback "
                                                       "unless this names an installed font)")
    serif_family: str = Field("DejaVu Serif", description="font for the generic `serif` family")
    monospace_family: str = Field("DejaVu Sans Mono", description="font for the generic `monospace` family")
    max_aspect_ratio: float = Field(
        20.0, ge=1.0, description="viewBox long side / short side above this is `render_error` (a line, not a picture)")
    isolate: bool = Field(True, description="render in a child process with render.timeout_s and render.max_memory_mb "
                                            "(a 4 KB SVG can take resvg minutes: filters scale with the render)")
    timeout_s: float = Field(10.0, gt=0, description="a render taking longer is `render_error` (isolate=true)")
    max_memory_mb: int = Field(2048, ge=0, description="address-space cap of the render process, 0 = none "
                                                       "(isolate=true)")


class SvgDedupConfig(Section):
    exact: bool = Field(True, description="drop exact duplicates of the normalised SVG (ids, whitespace, attribute "
                                          "order and number formatting do not count)")
    near: bool = Field(True, description="drop near duplicates by 64-bit pHash of the render")
    max_hamming: int = Field(4, ge=0, le=15, description="pHash distance at or under which two renders are duplicates")


class SvgTierConfig(Section):
    """Tier = the harder of the tier by code length and the tier by path complexity."""

    chars: list[int] = Field(
        [1_000, 3_000, 8_000, 16_000],
        description="normalised length (chars) below which a pair is very_easy, easy, medium, hard (else very_hard)")
    path_commands: list[int] = Field(
        [20, 80, 250, 800],
        description="path commands (all <path> d commands + basic shapes) below which very_easy, easy, medium, hard")

    @field_validator("chars", "path_commands")
    @classmethod
    def _four_ascending(cls, v: list[int]) -> list[int]:
        if len(v) != 4 or v != sorted(v):
            raise ValueError("give 4 ascending bounds (very_easy, easy, medium, hard)")
        return v


class SvgConfig(DagConfig):
    reader: SvgReaderConfig = SvgReaderConfig()  # replaces the image-text reader section
    limits: SvgLimitsConfig = SvgLimitsConfig()
    normalise: NormaliseConfig = NormaliseConfig()
    render: RenderConfig = RenderConfig()
    dedup: SvgDedupConfig = SvgDedupConfig()
    tiers: SvgTierConfig = SvgTierConfig()
    tasks: list[Literal["svg_to_image", "image_to_svg"]] = Field(
        list(TASKS), min_length=1,
        description="rows made from each kept pair: svg_to_image (SVG is the context, the image the target), "
                    "image_to_svg (the reverse)")

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("tasks must be distinct")
        return v


class SvgRecord(Row):
    """One SVG as a reader yields it, before any stage ran."""

    sample_id: str
    source: str
    origin: Origin
    data: bytes
    gzipped: bool = False
    url: Optional[str] = None
    license: Optional[str] = None


class SvgRow(RlTask, Sample):
    """One task row of a kept SVG <-> image pair (`parent_id` is the input record's sample_id).

    RL contract (`schemas/rl.py`): image_to_svg rows answer with the SVG and are judged by rendering
    (`svg_render`); svg_to_image rows have an empty answer and no verifier (generation pairs)."""

    pair_id: str = Field(description="content hash of the normalised SVG: both task rows of one pair share it")
    svg: str = Field(description="sanitised, normalised, minified SVG text")
    image: ImageCell
    width: Annotated[int, ArrowType(pa.int32())]
    height: Annotated[int, ArrowType(pa.int32())]
    image_format: str
    svg_chars: Annotated[int, ArrowType(pa.int32())]
    input_bytes: Annotated[int, ArrowType(pa.int32())] = Field(description="size of the SVG as read (inflated)")
    element_count: Annotated[int, ArrowType(pa.int32())]
    path_count: Annotated[int, ArrowType(pa.int32())]
    path_commands: Annotated[int, ArrowType(pa.int32())]
    viewbox_derived: bool = Field(description="the root had no viewBox: it was derived from width/height")
    removed: list[str] = Field(default_factory=list, description="what the sanitiser removed, e.g. `script`, "
                                                                 "`attr:onclick`, `href:external`")
    phash: str = Field(description="64-bit pHash of the render as 16 hex digits")
