"""`quarry run caption`: image-caption pairs, filtered, deduplicated, CLIP-scored, concept-balanced.

Tier rule: the rarity of the caption's rarest matched concept (its dataset-wide
match count c against `balance.t`): c >= t very_easy (a head concept),
c >= t/10 easy, c >= t/100 medium, c >= t/1000 hard, else very_hard; a kept
pair that matched nothing is medium. Tail concepts are the hard part of the
distribution, so they are the hard tiers.
"""

from __future__ import annotations

from typing import NamedTuple

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, Stage, with_reasons
from quarry.operators.clip import ClipLoadError, ClipScorer
from quarry.operators.concepts import VocabularyError, load_vocabulary
from quarry.operators.inputs import reasons as read_reasons
from quarry.pipelines.caption import STAGE_REASONS, CaptionPipeline, WriteFromSource
from quarry.pipelines.read import ReadImageText, plan_inputs
from quarry.pipelines.write import read_markers
from quarry.schemas.caption import CaptionConfig
from quarry.schemas.config import ConfigError

TINY_WARNING = (
    "CLIP ran the random-weight test model quarry-tiny: clip_score values are MEANINGLESS and the "
    "clip stage kept or dropped pairs at random. Use a real model (clip.model=ViT-B-32, "
    "clip.pretrained=<tag or checkpoint path>) for real data."
)


class CaptionPlan(NamedTuple):
    files: list
    vocabulary: list[str]  # read once, here: tiers need it even with balancing off


def plan(patterns: list[str], cfg: CaptionConfig) -> CaptionPlan:
    try:
        vocabulary = load_vocabulary(cfg.balance.vocabulary)
    except VocabularyError as e:
        raise ConfigError(f"balance.vocabulary: {e}") from None
    files = plan_inputs(patterns, cfg.reader)
    if cfg.clip.enabled:
        try:
            ClipScorer(cfg.clip).preflight()  # missing weights stop the run before any data is read
        except ClipLoadError as e:
            raise ConfigError(f"clip: {e}") from None
    return CaptionPlan(files, vocabulary)


def read(pipeline, cfg: CaptionConfig, plan: CaptionPlan):
    return pipeline | ReadImageText(plan.files, cfg.source or "unknown", cfg.reader)


def transform(samples, cfg: CaptionConfig, plan: CaptionPlan, output: str) -> FamilyOutputs:
    out = samples | "Caption" >> CaptionPipeline(cfg, plan.vocabulary, output)
    return FamilyOutputs(out.kept, out.rejected)


def write(kept, cfg: CaptionConfig, plan: CaptionPlan, output: str):
    """Kept rows are written from a second read of their input files (no image bytes in shuffles), one input
    at a time, each committed with a marker; inputs a killed run committed are kept as they are (--resume)."""
    _, write_rejected = kept | "Write" >> WriteFromSource(plan.files, cfg.source or "unknown", cfg.reader, cfg.shards,
                                                          output, done=read_markers(output))
    return write_rejected


def describe(cfg: CaptionConfig, plan: CaptionPlan) -> BuildInfo:
    info = BuildInfo(extra={"vocabulary_entries": len(plan.vocabulary)})
    if cfg.clip.enabled:
        info.extra["clip"] = {"model": cfg.clip.model, "pretrained": cfg.clip.pretrained,
                              "threshold": cfg.clip.threshold}
        if cfg.clip.model == "quarry-tiny":
            info.notes.append(TINY_WARNING)
    else:
        info.notes.append("clip stage disabled (clip.enabled=false): pairs were not relevance-filtered")
    if not cfg.dedup.enabled:
        info.notes.append("dedup stage disabled (dedup.enabled=false)")
    return info


# What this DAG's reader can reject a record for (operators/inputs/reasons.py).
READ_REASONS = (read_reasons.UNREADABLE_FILE, read_reasons.FILE_TOO_LARGE, read_reasons.INVALID_JSON, read_reasons.RECORD_TOO_LARGE, read_reasons.UNREADABLE_TAR, read_reasons.INVALID_METADATA, read_reasons.MISSING_IMAGE, read_reasons.MISSING_CAPTION, read_reasons.CAPTION_NOT_TEXT)


SPEC = DagSpec(
    name="caption",
    summary="image-caption pairs: heuristic filters, pHash dedup, CLIP score >= 0.3, MetaCLIP balancing",
    stages=with_reasons((
        Stage("read", "WebDataset tar, Parquet, JSONL or image files -> records", where="operators/inputs/image_text.py, pipelines/read.py"),
        Stage("decode", "Pillow decode under a pixel limit, EXIF orientation, RGB", where="operators/decode.py"),
        Stage("heuristics", "min side, aspect ratio, solid colour, caption length and text-ness", where="operators/heuristics.py"),
        Stage("dedup", "64-bit pHash near-duplicates (banded, no all-pairs), best resolution kept", where="operators/phash.py, pipelines/dedup.py"),
        Stage("clip", "open_clip image-text cosine via RunInference, keep >= clip.threshold", where="operators/clip.py, pipelines/clip.py"),
        Stage("decontam", "optional (--set decontam.bench=PATH): caption and pHash against benchmark sets", where="operators/decontam.py, pipelines/decontam.py"),
        Stage("balance", "MetaCLIP concept matching (Aho-Corasick), head concepts capped at t", where="operators/concepts.py, pipelines/balance.py"),
        Stage("write", "Parquet shards by source and tier, bytes read again from the inputs (no image shuffle)", where="pipelines/caption.py, pipelines/write.py"),
    ), {**STAGE_REASONS, "read": READ_REASONS}),
    config_model=CaptionConfig,
    plan=plan,
    read=read,
    transform=transform,
    describe=describe,
    write=write,
    resumable=("the global stages (decode, dedup, CLIP, balance) run again over every input, since dedup and tiers "
               "depend on all of them; each input's shards are written once and committed, so only the inputs "
               "without a marker are read a second time and written"),
    input_files=lambda plan: [f.path for f in plan.files],
)
