"""`quarry run svg`: safe SVG code <-> rendered image pairs (GLM-5V-Turbo §4).

Each input SVG is inflated (`.svgz`, capped), parsed with entity expansion,
DTD loading and network access off, sanitised (scripts, handlers,
foreignObject and every external reference removed), normalised (viewBox,
ids, numbers, editor metadata, canonical minified text), rendered with resvg
at `render.size` on the long side over `render.background`, filtered (blank
renders), deduplicated (exact after normalising, then pHash of the render) and
written as one row per task in `tasks` (svg_to_image and image_to_svg: both
directions of one pair, sharing `pair_id`; each row holds its PNG).

Tier rule: the harder of two tiers, one from the normalised SVG length in
characters (below 1k very_easy, 3k easy, 8k medium, 16k hard, else
very_hard: `tiers.chars`) and one from path complexity, the number of path
segments plus basic shapes (below 20, 80, 250, 800: `tiers.path_commands`).
Long code and many segments are what make SVG hard to read and to write.

Accounting: every input record ends as one kept pair or one reject
(`inputs == pairs + rejected`); each pair becomes len(tasks) rows, so the
manifest's `kept` counts rows and `stages.rows` says pairs in, rows out.
"""

from __future__ import annotations

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, RunCounts, Stage, with_reasons
from quarry.operators.inputs import reasons as read_reasons
from quarry.pipelines.svg import STAGE_REASONS, ReadSvg, SvgPipeline, plan_svg_inputs
from quarry.schemas.config import ConfigError
from quarry.schemas.svg import SvgConfig, SvgRow


def plan(patterns: list[str], cfg: SvgConfig):
    try:
        import resvg_py  # noqa: F401 - the renderer; fail before reading anything
    except ImportError as e:
        raise ConfigError(f"render: resvg-py is not installed ({e}); install quarry's dependencies") from None
    return plan_svg_inputs(patterns, cfg.reader)


def read(pipeline, cfg: SvgConfig, files):
    return pipeline | ReadSvg(files, cfg.source or "unknown", cfg.reader)


def transform(records, cfg: SvgConfig, files, output: str) -> FamilyOutputs:
    out = records | "Svg" >> SvgPipeline(cfg, output)
    return FamilyOutputs(out.rows, out.rejected)


def describe(cfg: SvgConfig, files) -> BuildInfo:
    info = BuildInfo(extra={
        "renderer": _renderer_version(),
        "render_size": cfg.render.size,
        "tasks": list(cfg.tasks),
        "tier_bounds": cfg.tiers.model_dump(),
    })
    if not cfg.dedup.exact:
        info.notes.append("exact dedup disabled (dedup.exact=false)")
    if not cfg.dedup.near:
        info.notes.append("near-duplicate dedup disabled (dedup.near=false)")
    return info


def _renderer_version() -> str:
    import resvg_py

    return f"resvg-py {resvg_py.__version__} (resvg {resvg_py.__resvg_version__})"


def finish(output: str, cfg: SvgConfig, info: BuildInfo, run: RunCounts) -> None:
    """After the run: the pair count and whether every input is a pair or a reject."""
    counts, rejected, inputs = run.counts, run.rejected_total, run.inputs()
    pairs = counts.get("rows.in", 0)
    info.extra["pairs"] = pairs
    info.extra["pair_fraction"] = round(pairs / inputs, 4) if inputs else None
    info.extra["pairs_balanced"] = inputs == pairs + rejected
    info.notes.append(f"{pairs} pairs -> {counts.get('rows.out', 0)} rows ({len(cfg.tasks)} task(s) per pair); "
                      f"inputs {inputs} = pairs {pairs} + rejected {rejected}: {inputs == pairs + rejected}")


# What this DAG's reader can reject a record for (operators/inputs/reasons.py).
READ_REASONS = (read_reasons.UNREADABLE_FILE, read_reasons.FILE_TOO_LARGE, read_reasons.INVALID_JSON, read_reasons.RECORD_TOO_LARGE, read_reasons.UNREADABLE_TAR, read_reasons.INVALID_METADATA, read_reasons.MISSING_SVG)


SPEC = DagSpec(
    name="svg",
    summary="SVG code <-> image pairs: safe parse, sanitise, normalise, resvg render, blank filter, exact + pHash dedup",
    stages=with_reasons((
        Stage("read", ".svg/.svgz files, tars of them, Parquet/JSONL with an svg column -> records", where="operators/inputs/files.py, pipelines/svg.py"),
        Stage("prepare", "inflate (capped), lxml parse without entities/DTD/network, sanitise, normalise, measure", where="operators/svg/prepare.py"),
        Stage("exact_dedup", "one record per normalised SVG text", where="pipelines/svg.py", rejects_as="dedup"),
        Stage("render", "resvg PNG at render.size on the long side, blank/near-uniform renders dropped, pHash", where="operators/svg/render.py"),
        Stage("near_dedup", "64-bit pHash near-duplicates of the renders (the caption DAG's SplitDuplicates)", where="pipelines/dedup.py", rejects_as="dedup"),
        Stage("decontam", "optional (--set decontam.bench=PATH): renders and visible text against benchmark sets", where="pipelines/decontam.py"),
        Stage("rows", "one row per task (svg_to_image, image_to_svg) per pair, tier from length and path complexity", where="pipelines/svg.py"),
        Stage("write", "Parquet shards by source and tier, PNG bytes in the row", where="pipelines/write.py"),
    ), {**STAGE_REASONS, "read": READ_REASONS}),
    config_model=SvgConfig,
    plan=plan,
    read=read,
    transform=transform,
    describe=describe,
    row_model=SvgRow,
    one_to_one=False,
    finish=finish,
)
