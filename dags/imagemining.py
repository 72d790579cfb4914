"""`quarry run imagemining --input IMAGE_ROWS --output DIR --set kb.path=KB.jsonl`: Visual-Jump multi-hop QA.

GLM-5V-Turbo §3.3 (ImageMining): knowledge discovery from the entities seen
in an image, question reconstruction that refers to the first entity only
through the image and to every bridge entity only through its relation, and
quality filters that reject text-only shortcuts.

Tier rule (`operators/imagemining/qa.py: tier_for`): score = (hops - 1) + (visual_hops - 1)
+ [the entity needs a crop] + [image entity degree <= tiers.rare_degree]
- [degree >= tiers.popular_degree], clamped to 0..4 -> very_easy, easy, medium,
hard, very_hard. With the rest equal, 2 hops is easy, 3 medium, 4 hard.

Accounting: many rows come from one image row (`one_to_one=False`). Image
rows are the inputs: each is read (`read` rejects), decoded (`decode`
rejects), linked (`link` rejects: unknown_entity, no_entities) and walked
(`discover` rejects: no_path). Each candidate question then ends as a row or
a reject (`filter`: trivial, ambiguous_answer, name_leak, text_shortcut;
`dedup`: near_duplicate; `decontam`, with --set decontam.bench=PATH: the
question or answer overlaps a benchmark). Stage counts (`manifest.stages`)
give inputs and outputs of each step. Skipped KB lines are rejects at stage `kb`.
"""

from __future__ import annotations

import sys

from apache_beam.io.filesystems import FileSystems

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, RunCounts, Stage, with_reasons
from quarry.operators.imagemining.kb import KbError
from quarry.operators.imagemining.kb_store import ensure_store_anywhere
from quarry.operators.imagemining.qa import TemplateError, load_rewrite_prompt, load_templates
from quarry.operators.inputs import reasons as read_reasons
from quarry.operators.inputs.jsonl import jsonl_objects
from quarry.pipelines.imagemining import KB_STATS, STAGE_REASONS, ImageMiningPipeline, ReadImageRows
from quarry.pipelines.read import InputError, open_file, plan_tables
from quarry.pipelines.stats import read_stats
from quarry.schemas.config import ConfigError
from quarry.schemas.imagemining import ImageMiningConfig, QARow


def _check_kb(path: str) -> None:
    """The KB exists and its first lines hold an entity: fail before the pipeline starts otherwise."""
    if not FileSystems.exists(path):
        raise InputError(f"kb.path {path}: no such file")
    try:
        with open_file(path) as fh:
            for i, (_, rec) in enumerate(jsonl_objects(fh)):
                if isinstance(rec, dict) and "id" in rec and "subject" not in rec:
                    return
                if i >= 10_000:
                    break
    except OSError as e:
        raise KbError(f"kb.path {path}: cannot read it ({e})") from None
    raise ConfigError(f"kb.path {path}: no entity line among the first lines (expected JSONL like "
                      '{"id": "Q1", "name": "...", "type": "..."}; see the README)')


def plan(patterns: list[str], cfg: ImageMiningConfig):
    if not cfg.kb.path:
        raise ConfigError("imagemining needs a knowledge base: --set kb.path=KB.jsonl (entities and facts, "
                          "one JSON object per line; see the README)")
    try:
        templates = load_templates(cfg.qa.templates, cfg.qa.language)
    except TemplateError as e:
        raise ConfigError(f"qa.templates: {e}") from None
    if cfg.rewriter is not None:
        try:
            load_rewrite_prompt(cfg.rewriter.prompt)
        except (OSError, ValueError) as e:
            raise ConfigError(f"rewriter.prompt: {e}") from None
    try:
        _check_kb(cfg.kb.path)
        store_path = cfg.kb.resolved_store_path()
        if store_path is not None:  # built once here, not by every worker; reused while the KB file is unchanged
            ensure_store_anywhere(cfg.kb.path, store_path, templates.relation_aliases,
                                  log=lambda m: print(m, file=sys.stderr, flush=True))
    except KbError as e:
        raise ConfigError(str(e)) from None
    return plan_tables(patterns, (), "images")


def read(pipeline, cfg: ImageMiningConfig, files):
    return pipeline | ReadImageRows(files, cfg.source or "unknown", cfg.reader.max_image_bytes)


def transform(images, cfg: ImageMiningConfig, files, output: str) -> FamilyOutputs:
    out = images | "ImageMining" >> ImageMiningPipeline(cfg, cfg.kb.path, output)
    return FamilyOutputs(out.rows, out.rejected, out.images)


def describe(cfg: ImageMiningConfig, files) -> BuildInfo:
    info = BuildInfo(extra={
        "kb_path": cfg.kb.path,
        "kb_store": cfg.kb.resolved_store_path() or "memory",
        "hops": [cfg.qa.min_hops, cfg.qa.max_hops],
        "max_degree": cfg.qa.max_degree,
        "language": cfg.qa.language,
        "templates": cfg.qa.templates or "shipped (operators/data/imagemining/templates.yaml)",
        "dedup_scope": cfg.dedup.scope if cfg.dedup.enabled else None,
    })
    info.notes.append("many rows per image row: inputs are image rows; manifest.stages counts each step "
                      "(decode/link/discover in images, discover.out and later in questions); "
                      "stage `kb` rejects are skipped knowledge-base lines, not inputs")
    if cfg.rewriter is None:
        info.notes.append("no rewriter: questions are the templates' wording")
    return info


def finish(output: str, cfg: ImageMiningConfig, info: BuildInfo, run: RunCounts) -> None:
    """KB stats and rewriter outcomes into the manifest's extra."""
    payload = read_stats(output, KB_STATS)
    if payload is not None:
        info.extra["kb"] = {**payload.get("stats", {}), "load_s": payload.get("load_s")}
        skipped = payload.get("stats", {}).get("skipped_lines", 0)
        if skipped:
            info.notes.append(f"{skipped} knowledge-base line(s) were skipped: see rejects at stage `kb`")
    counts = run.counts
    info.extra["unknown_entity_ids"] = counts.get("link.unknown_entities", 0)
    info.extra["ambiguous_name_images"] = counts.get("link.ambiguous_names", 0)
    if cfg.rewriter is not None:
        rewrite = {k[len("rewrite."):]: v for k, v in counts.items() if k.startswith("rewrite.")}
        info.extra["rewriter"] = {"model": cfg.rewriter.model, **rewrite}
        fallback = rewrite.get("fallback_error", 0)
        if fallback:
            info.notes.append(f"the rewriter failed for {fallback} question(s) (after retries): their template "
                              "question was kept (extra.rewriter.fallback_error)")


# What this DAG's reader can reject a record for (operators/inputs/reasons.py).
READ_REASONS = (read_reasons.UNREADABLE_FILE, read_reasons.FILE_TOO_LARGE, read_reasons.INVALID_JSON, read_reasons.RECORD_TOO_LARGE, read_reasons.MISSING_IMAGE, read_reasons.INVALID_ENTITIES)


SPEC = DagSpec(
    name="imagemining",
    summary="Visual-Jump multi-hop QA from images with KB entities: paths, templated questions, shortcut filters",
    stages=with_reasons((
        Stage("read", "JSONL or Parquet image rows: image (path/bytes), entities (KB id or name, box), texts", where="operators/inputs/tables.py, pipelines/imagemining.py"),
        Stage("kb", "knowledge-base lines that cannot be used (not JSON, no id, unknown entities): rejects, not inputs",
              where="operators/imagemining/kb.py"),
        Stage("decode", "Pillow decode under a pixel limit (corrupt and bomb images rejected)", where="operators/decode.py"),
        Stage("link", "entity ids checked against the KB, or linked from names, caption, alt, OCR text (Aho-Corasick)", where="operators/imagemining/kb.py"),
        Stage("discover", "paths of qa.min_hops..qa.max_hops functional facts, no cycles, no hub bridges", where="operators/imagemining/qa.py"),
        Stage("filter", "templated question; trivial, ambiguous_answer, name_leak, text_shortcut; tags and tier", where="operators/imagemining/qa.py"),
        Stage("rewrite", "optional paraphrase via an OpenAI-compatible endpoint, filtered again; template on failure", where="operators/imagemining/qa.py, operators/chat_client.py"),
        Stage("dedup", "near-duplicate questions for the same answer (rapidfuzz)", where="operators/imagemining/qa.py, pipelines/imagemining.py"),
        Stage("decontam", "optional (--set decontam.bench=PATH): questions and answers against benchmark sets", where="pipelines/decontam.py"),
        Stage("write", "Parquet shards by source and tier; each image once in DIR/images", where="pipelines/write.py"),
    ), {**STAGE_REASONS, "read": READ_REASONS}),
    config_model=ImageMiningConfig,
    plan=plan,
    read=read,
    transform=transform,
    describe=describe,
    row_model=QARow,
    unsourced="image rows without a `source` field",
    one_to_one=False,
    finish=finish,
)
