"""`quarry run interleaved`: interleaved image-text web documents, cleaned (GLM-4.5V §3.1).

Input: JSONL or Parquet documents in the OBELICS/MINT (`texts` + `images`),
MMC4 (`text_list` + `image_info`) or segment-list (`segments`) shapes; images
as bytes, data URIs or local paths (relative to the input file).

Per document: parse and validate (read), photo-album rule (density:
image_dense), datatrove text filters (text: low_quality_text); per image:
decode, QR/barcode and ad rules (ads: qr_code, ad_image), size/shape/solid
heuristics, CLIP relevance against the neighbouring paragraphs (relevance:
image_irrelevant); a document left with no image is `no_images_left` unless
document.keep_text_only=true.

Tier rule (knowledge density): with w = words per kept image and d = the
share of kept images that look like charts/diagrams (diagram_score, the
share of flat neighbouring pixel pairs, >= tiers.diagram_score = 0.75): very_hard if d >= tiers.diagram_share
and w >= 80; hard if d >= tiers.diagram_share or w >= 200; medium if w >= 80;
easy if w >= 30; else very_easy (tiers.words_per_image = [200, 80, 30]). A
kept text-only document is medium.

Accounting: one-to-one over documents (inputs == kept + rejected). Image-level
drops are in each row's `images` list and in the manifest (`extra.image_rejects`,
stage `images`: inputs = images of kept rows, outputs = kept images).
"""

from __future__ import annotations

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, RunCounts, Stage, with_reasons
from quarry.operators.clip import ClipLoadError, ClipScorer
from quarry.operators.inputs import reasons as read_reasons
from quarry.operators.interleaved import documents
from quarry.operators.interleaved.text_quality import TextQuality
from quarry.pipelines.interleaved import (
    STAGE_REASONS,
    InterleavedPipeline,
    ReadDocuments,
    WriteFromSource,
    plan_documents,
    read_image_reasons,
)
from quarry.schemas.config import ConfigError
from quarry.schemas.interleaved import InterleavedConfig

TINY_WARNING = (
    "relevance ran the random-weight test model quarry-tiny: clip_score values are MEANINGLESS. Use a real "
    "model (relevance.model=ViT-B-32, relevance.pretrained=<tag or checkpoint path>) for real data."
)

def plan(patterns: list[str], cfg: InterleavedConfig):
    files = plan_documents(patterns)
    try:
        from quarry.operators.interleaved.ads import AdDetector

        AdDetector(cfg.ads)
        TextQuality(cfg.text)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.relevance.enabled:
        try:
            ClipScorer(cfg.relevance).preflight()  # missing weights stop the run before any data is read
        except ClipLoadError as e:
            raise ConfigError(f"relevance: {e}") from None
    return files


def read(pipeline, cfg: InterleavedConfig, files):
    return pipeline | ReadDocuments(files, cfg.source or "unknown", cfg)


def transform(docs, cfg: InterleavedConfig, files, output: str) -> FamilyOutputs:
    out = docs | "Interleaved" >> InterleavedPipeline(cfg, cfg.source or "unknown", output)
    return FamilyOutputs(out.kept, out.rejected)


def write(kept, cfg: InterleavedConfig, files, output: str):
    """Kept documents are written from a second read of their input files (no image bytes in shuffles)."""
    _, write_rejected = kept | "Write" >> WriteFromSource(files, cfg.source or "unknown", cfg, output)
    return write_rejected


def describe(cfg: InterleavedConfig, files) -> BuildInfo:
    info = BuildInfo()
    if cfg.relevance.enabled:
        info.extra["relevance"] = {"model": cfg.relevance.model, "pretrained": cfg.relevance.pretrained,
                                   "threshold": cfg.relevance.threshold}
        if cfg.relevance.model == "quarry-tiny":
            info.notes.append(TINY_WARNING)
    else:
        info.notes.append("relevance stage disabled (relevance.enabled=false): images were not CLIP-scored")
    if not cfg.text.enabled:
        info.notes.append("text quality filters disabled (text.enabled=false)")
    return info


def finish(output: str, cfg: InterleavedConfig, info: BuildInfo, run: RunCounts) -> None:
    info.extra["image_rejects"] = read_image_reasons(output)


# What this DAG's reader can reject a record for (operators/inputs/reasons.py).
READ_REASONS = (read_reasons.UNREADABLE_FILE, read_reasons.FILE_TOO_LARGE, read_reasons.INVALID_JSON, read_reasons.RECORD_TOO_LARGE, *documents.DOCUMENT_REASONS)


SPEC = DagSpec(
    name="interleaved",
    summary="interleaved web documents: image relevance, QR/ad removal, photo albums, datatrove text quality",
    stages=with_reasons((
        Stage("read", "OBELICS/MINT, MMC4 or segment-list documents from JSONL/Parquet; images as bytes or paths", where="operators/inputs/jsonl.py, operators/interleaved/documents.py, pipelines/interleaved.py"),
        Stage("density", "image-dense text-sparse documents (photo albums): words per image", where="operators/interleaved/documents.py"),
        Stage("text", "HTML fragments stripped; datatrove Gopher quality/repetition, C4, FineWeb filters", where="operators/interleaved/text_quality.py"),
        Stage("checks", "per image: Pillow decode, zxing-cpp QR/barcodes, IAB/ad-URL/tail ad rules, size heuristics", where="operators/interleaved/ads.py, operators/heuristics.py"),
        Stage("relevance", "open_clip cosine of each image with its neighbouring paragraphs via RunInference", where="operators/clip.py, pipelines/clip.py"),
        Stage("assemble", "documents left without images dropped unless keep_text_only; knowledge-density tier", where="pipelines/interleaved.py"),
        Stage("decontam", "optional (--set decontam.bench=PATH): text segments and kept images against benchmark sets", where="pipelines/decontam.py"),
        Stage("write", "document shards by source and tier + DIR/images, bytes read again from the inputs", where="pipelines/interleaved.py"),
    ), {**STAGE_REASONS, "read": READ_REASONS}),
    config_model=InterleavedConfig,
    plan=plan,
    read=read,
    transform=transform,
    describe=describe,
    write=write,
    unsourced="documents without a `source` field",
    finish=finish,
)
