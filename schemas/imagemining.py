"""The imagemining DAG: its config sections and its output row (GLM-5V-Turbo §3.3, Visual Jump).

Defaults: paths of 2 to 4 KB hops (the issue), hubs above 1,000 facts are not
walked through (hub entities make every question about them trivially
guessable), an entity box below 10% of the image needs a crop.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import pyarrow as pa
from pydantic import Field, model_validator

from quarry.schemas.arrow import ArrowType
from quarry.schemas.caption import DecodeConfig
from quarry.schemas.common import Row, Sample
from quarry.schemas.config import SIDE_FILE, DagConfig, Section
from quarry.schemas.grade import ClientSection
from quarry.schemas.rl import RlTask
from quarry.schemas.trajectory import ToolCall


class KbSection(Section):
    path: Optional[str] = Field(None, json_schema_extra=SIDE_FILE, description="knowledge-base JSONL (entities and facts; see README); required")
    store: Literal["memory", "sqlite"] = Field(
        "memory", description="memory: the KB loaded into each worker; sqlite: an indexed SQLite file built once "
                              "on the driver (KBs larger than a worker's memory)")
    store_path: Optional[str] = Field(
        None, json_schema_extra=SIDE_FILE, description="the sqlite store (default: <kb.path>.sqlite; required for a remote kb.path): a local path, "
                          "or a remote one (gs://...) that the driver uploads and each worker machine fetches once "
                          "into its temp dir")

    @model_validator(mode="after")
    def _store(self) -> "KbSection":
        if self.store == "sqlite" and self.store_path is None and self.path is not None and "://" in self.path:
            raise ValueError(f"kb.store=sqlite with a remote kb.path ({self.path}) needs a kb.store_path "
                             "(gs://... for remote workers)")
        return self

    def resolved_store_path(self) -> Optional[str]:
        """Where the sqlite store lives: kb.store_path, else next to a local KB file."""
        if self.store != "sqlite":
            return None
        return self.store_path or (f"{self.path}.sqlite" if self.path else None)


class LinkSection(Section):
    fields: list[str] = Field(["caption", "alt", "ocr_text"],
                              description="text fields an image row's entities are linked from when it gives no ids")
    min_chars: int = Field(3, ge=1, description="names and aliases shorter than this are not linked from text")
    max_entities: int = Field(8, ge=1, description="image entities walked from, per image (the first ones)")


class QaSection(Section):
    min_hops: int = Field(2, ge=1, le=8, description="KB hops a question needs at least (fewer is `trivial`)")
    max_hops: int = Field(4, ge=1, le=8, description="longest path walked from an image entity")
    max_degree: int = Field(1_000, ge=1, description="bridge entities with more facts than this (hubs) are not walked through")
    max_paths_per_entity: int = Field(8, ge=1, description="candidate paths kept per image entity (seeded by the image id)")
    templates: Optional[str] = Field(None, json_schema_extra=SIDE_FILE, description="templates YAML/JSON (default: the shipped English file)")
    language: str = Field("en", description="language section of the templates file")
    crop_share: float = Field(0.1, gt=0.0, le=1.0,
                              description="an entity box covering less than this share of the image needs a crop")
    check_ocr: bool = Field(True, description="reject as `trivial` when the answer is readable in the image's OCR text")
    visual_hops: bool = Field(True, description="also build chains with a visual hop in the middle: KB hops to an "
                                                "entity another picture of the input shows with a box, its "
                                                "neighbour there, KB hops on (the question shows both pictures)")
    views_per_entity: int = Field(4, ge=1, le=64, description="other pictures considered per entity for visual hops "
                                                              "(the smallest image ids)")

    @model_validator(mode="after")
    def _hops(self) -> "QaSection":
        if self.min_hops > self.max_hops:
            raise ValueError(f"qa.min_hops ({self.min_hops}) > qa.max_hops ({self.max_hops})")
        return self


class DedupSection(Section):
    enabled: bool = True
    threshold: float = Field(90.0, ge=0.0, le=100.0,
                             description="rapidfuzz token_sort_ratio at or above which two questions are near-duplicates")
    scope: Literal["image", "entity", "answer"] = Field(
        "entity", description="questions compared within: one image and answer; one image entity and answer; one answer")


class TierSection(Section):
    rare_degree: int = Field(5, ge=0, description="image entity with at most this many facts: long tail, +1")
    popular_degree: int = Field(100, ge=1, description="image entity with at least this many facts: popular, -1")


class RewriterSection(ClientSection):
    """Paraphrases template questions through an OpenAI-compatible endpoint; off unless set."""

    batch_size: int = Field(16, ge=1, description="questions sent per batch (concurrently, max_concurrency at once)")
    prompt: Optional[str] = Field(None, json_schema_extra=SIDE_FILE, description="prompt file with {question} (default: the built-in one)")


class ImageMiningConfig(DagConfig):
    kb: KbSection = KbSection()
    decode: DecodeConfig = DecodeConfig()
    link: LinkSection = LinkSection()
    qa: QaSection = QaSection()
    dedup: DedupSection = DedupSection()
    tiers: TierSection = TierSection()
    rewriter: Optional[RewriterSection] = Field(None, description="question paraphrasing endpoint; unset = templates only")


class Hop(Row):
    """One step of the reasoning chain; `visual` steps need a picture (`image`, its index in `image_ids`)."""

    step: Annotated[int, ArrowType(pa.int32())]
    kind: str = Field(description="recognise | crop_recognise (the image entity) | relation (a KB fact) | look | "
                                  "crop_look (a visual hop: find the entity in picture `image`, take its neighbour)")
    subject_id: Optional[str] = None
    subject_name: Optional[str] = None
    relation: Optional[str] = Field(None, description="KB relation, or visual:<left|right|above|below>")
    object_id: Optional[str] = None
    object_name: str
    visual: bool
    image: Annotated[Optional[int], ArrowType(pa.int32())] = Field(
        None, description="visual steps: which picture (0 = image_id, 1 = image_ids[1])")
    box: Optional[list[float]] = Field(None, description="visual steps: the object's box in that picture, pixels")


class QARow(RlTask, Sample):
    """One Visual-Jump question about an image (the RL contract of `schemas/rl.py`); the image itself lives in
    DIR/images."""

    image_id: str = Field(description="content hash of the image bytes; the row of DIR/images")
    width: Annotated[int, ArrowType(pa.int32())]
    height: Annotated[int, ArrowType(pa.int32())]
    template_question: str = Field(description="the question as the templates wrote it")
    rewritten: bool = Field(description="question is the rewriter's paraphrase (checked by every filter)")
    language: str
    answer_id: Optional[str] = Field(None, description="KB id when the answer is an entity")
    answer_type: str = Field(description="entity type, or the literal's type (year, quantity, ...)")
    answer_unit: Optional[str] = None
    image_entity_id: str
    image_entity_name: str
    image_entity_type: str
    link_method: str = Field(description="id | exact:<field> | normalised:<field>")
    entity_degree: int = Field(description="KB facts of the image entity (popularity)")
    image_ids: list[str] = Field(description="the pictures the question shows, in order (image_ids[0] = image_id); "
                                             "rows of DIR/images")
    hops: Annotated[int, ArrowType(pa.int32())] = Field(description="KB relations on the path")
    visual_hops: Annotated[int, ArrowType(pa.int32())] = Field(
        description="steps that must look at a picture: recognising the image entity, plus each visual hop")
    hop_kinds: list[str] = Field(description="the chain's steps in order: visual | kb")
    crops_needed: Annotated[int, ArrowType(pa.int32())] = Field(description="visual steps whose box needs a crop")
    relations: list[str]
    chain: list[Hop]
    category: str = Field(description="recognition | spatio-temporal | event | text-based | visual search")
    domain: str = Field(description="social | entertainment | products | places | rich text | nature | science | other")
    need_image_before_search: bool
    need_image_during_search: bool
    requires_crop: bool
    crop_box: Optional[list[float]] = Field(None, description="x0, y0, x1, y1 in pixels of the entity to crop")
    box_share: Annotated[Optional[float], ArrowType(pa.float32())] = None
    trajectory: list[ToolCall] = Field(
        default_factory=list, description="the tool calls that answer it: crop (image, bbox 0-1000), search (query) "
                                          "per KB hop, with their results")
    messages: Optional[str] = Field(None, description="the trajectory as OpenAI chat messages (JSON)")
