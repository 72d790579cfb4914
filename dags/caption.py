"""`quarry run caption`: image-caption pairs, filtered, deduplicated, CLIP-scored, concept-balanced.

Tier rule: the rarity of the caption's rarest matched concept (its dataset-wide
match count c against `balance.t`): c >= t very_easy (a head concept),
c >= t/10 easy, c >= t/100 medium, c >= t/1000 hard, else very_hard; a kept
pair that matched nothing is medium. Tail concepts are the hard part of the
distribution, so they are the hard tiers.
"""

from __future__ import annotations

import apache_beam as beam

from quarry.dags.runner import BuildInfo, DagSpec
from quarry.operators.clip import ClipLoadError, ClipScorer
from quarry.operators.concepts import VocabularyError, load_vocabulary
from quarry.pipelines.caption import CaptionPipeline, WriteFromSource
from quarry.pipelines.decontam import plan_benchmarks
from quarry.pipelines.read import ReadImageText, plan_inputs
from quarry.pipelines.stats import CountTo
from quarry.pipelines.write import WriteRejects
from quarry.schemas.caption import CaptionConfig
from quarry.schemas.config import ConfigError

TINY_WARNING = (
    "CLIP ran the random-weight test model quarry-tiny: clip_score values are MEANINGLESS and the "
    "clip stage kept or dropped pairs at random. Use a real model (clip.model=ViT-B-32, "
    "clip.pretrained=<tag or checkpoint path>) for real data."
)


def plan(patterns: list[str], cfg: CaptionConfig):
    try:
        load_vocabulary(cfg.balance.vocabulary)  # tiers need it even with balancing off; fail early
    except VocabularyError as e:
        raise ConfigError(f"balance.vocabulary: {e}") from None
    if cfg.decontam.enabled:
        plan_benchmarks(cfg.decontam)  # a benchmark file without usable columns stops the run here
    files = plan_inputs(patterns, cfg.reader)
    if cfg.clip.enabled:
        try:
            ClipScorer(cfg.clip).preflight()  # missing weights stop the run before any data is read
        except ClipLoadError as e:
            raise ConfigError(f"clip: {e}") from None
    return files


def build(pipeline: beam.Pipeline, cfg: CaptionConfig, files, output: str) -> BuildInfo:
    vocabulary = load_vocabulary(cfg.balance.vocabulary)
    read = pipeline | "Read" >> ReadImageText(files, cfg.source or "unknown", cfg.reader)
    read.samples | "CountRead" >> CountTo(output, "read")
    out = read.samples | "Caption" >> CaptionPipeline(cfg, vocabulary, output)
    _, write_rejected = out.kept | "Write" >> WriteFromSource(files, cfg.source or "unknown", cfg, output)
    (
        (read.rejected, out.rejected, write_rejected)
        | "AllRejects" >> beam.Flatten()
        | "WriteRejects" >> WriteRejects(output, cfg.shards)
    )
    info = BuildInfo(extra={"vocabulary_entries": len(vocabulary)})
    if not cfg.source:
        info.notes.append("no --source given: records without a `source` field are tagged source=unknown")
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


SPEC = DagSpec(
    name="caption",
    summary="image-caption pairs: heuristic filters, pHash dedup, CLIP score >= 0.3, MetaCLIP balancing",
    stages=(
        ("read", "WebDataset tar, Parquet, JSONL or image files -> records"),
        ("decode", "Pillow decode under a pixel limit, EXIF orientation, RGB"),
        ("heuristics", "min side, aspect ratio, solid colour, caption length and text-ness"),
        ("dedup", "64-bit pHash near-duplicates (banded, no all-pairs), best resolution kept"),
        ("clip", "open_clip image-text cosine via RunInference, keep >= clip.threshold"),
        ("decontam", "optional (--set decontam.bench=PATH): caption and pHash against benchmark sets"),
        ("balance", "MetaCLIP concept matching (Aho-Corasick), head concepts capped at t"),
        ("write", "Parquet shards by source and tier, bytes read again from the inputs (no image shuffle)"),
    ),
    config_model=CaptionConfig,
    plan=plan,
    build=build,
)
