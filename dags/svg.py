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

import gzip
import io
import shutil
from pathlib import Path

import apache_beam as beam

from quarry.dags.runner import BuildInfo, DagSpec, reject_counts
from quarry.pipelines.stats import CountTo, read_counts
from quarry.pipelines.svg import ReadSvg, SvgPipeline, plan_svg_inputs
from quarry.pipelines.write import WriteRejects, WriteShards
from quarry.schemas.config import ConfigError
from quarry.schemas.svg import SvgConfig, SvgRow

DEMO_DATA = Path(__file__).parent / "demo_data" / "svg"


def plan(patterns: list[str], cfg: SvgConfig):
    try:
        import resvg_py  # noqa: F401 - the renderer; fail before reading anything
    except ImportError as e:
        raise ConfigError(f"render: resvg-py is not installed ({e}); install quarry's dependencies") from None
    if cfg.decontam.enabled:
        from quarry.pipelines.decontam import plan_benchmarks

        plan_benchmarks(cfg.decontam)  # a benchmark file without usable columns stops the run here
    return plan_svg_inputs(patterns, cfg.reader)


def build(pipeline: beam.Pipeline, cfg: SvgConfig, files, output: str) -> BuildInfo:
    records, read_rejected = pipeline | "Read" >> ReadSvg(files, cfg.source or "unknown", cfg.reader)
    records | "CountRead" >> CountTo(output, "read")
    out = records | "Svg" >> SvgPipeline(cfg, output)
    out.rows | "Write" >> WriteShards(output, "svg", SvgRow, cfg.shards)
    (
        (read_rejected, out.rejected)
        | "AllRejects" >> beam.Flatten()
        | "WriteRejects" >> WriteRejects(output, cfg.shards)
    )
    info = BuildInfo(extra={
        "renderer": _renderer_version(),
        "render_size": cfg.render.size,
        "tasks": list(cfg.tasks),
        "tier_bounds": cfg.tiers.model_dump(),
    })
    if not cfg.source:
        info.notes.append("no --source given: records without a `source` field are tagged source=unknown")
    if not cfg.dedup.exact:
        info.notes.append("exact dedup disabled (dedup.exact=false)")
    if not cfg.dedup.near:
        info.notes.append("near-duplicate dedup disabled (dedup.near=false)")
    return info


def _renderer_version() -> str:
    import resvg_py

    return f"resvg-py {resvg_py.__version__} (resvg {resvg_py.__resvg_version__})"


def finish(output: str, cfg: SvgConfig, info: BuildInfo) -> None:
    """After the run: the pair count and whether every input is a pair or a reject."""
    counts = read_counts(output)
    rejected = sum(n for reasons in reject_counts(output).values() for n in reasons.values())
    read_rejects = sum(reject_counts(output).get("read", {}).values())
    inputs = counts.get("read", 0) + read_rejects
    pairs = counts.get("rows.in", 0)
    info.extra["pairs"] = pairs
    info.extra["pair_fraction"] = round(pairs / inputs, 4) if inputs else None
    info.extra["pairs_balanced"] = inputs == pairs + rejected
    info.notes.append(f"{pairs} pairs -> {counts.get('rows.out', 0)} rows ({len(cfg.tasks)} task(s) per pair); "
                      f"inputs {inputs} = pairs {pairs} + rejected {rejected}: {inputs == pairs + rejected}")


# --- demo -------------------------------------------------------------------------------------


def _huge_path_svg(segments: int = 12_000) -> str:
    d = "M0 0" + "".join(f"L{i % 97}.{i % 10} {(i * 7) % 89}.5" for i in range(segments))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><path d="{d}" stroke="black"/>'
            "</svg>")


def _gzip_bomb(inflated: int = 16 * 1024 * 1024) -> bytes:
    """A `.svgz` that inflates to `inflated` bytes (4x the default cap; ~16 KiB compressed)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><!--')
        chunk = b" " * (1 << 20)
        for _ in range(inflated >> 20):
            gz.write(chunk)
        gz.write(b"--></svg>")
    return buf.getvalue()


def build_demo_input(folder: Path) -> tuple[list[str], list[str]]:
    """Write the svg demo input into `folder`: shipped icons and hostile files plus two generated ones.

    Shows: clean pairs (with tiers), a script-and-handler SVG cleaned into a
    pair, a duplicate differing only in ids/whitespace/attribute order
    (dedup/exact_duplicate), an entity bomb and an XXE (prepare/unsafe_svg), a
    `<use>` bomb (unsafe_svg), a filter bomb that would render for minutes
    (render/render_error once render.timeout_s passes), malformed XML (invalid_svg), an empty drawing
    and an SVG whose only content was a remote image (render/blank_render), a
    huge path (too_long), a gzip bomb (too_large) and Latin-1 bytes (a clean
    pair: the encoding is declared).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted(DEMO_DATA.iterdir()):
        if f.suffix in (".svg", ".svgz"):
            shutil.copyfile(f, folder / f.name)
    (folder / "huge-path.svg").write_text(_huge_path_svg())
    (folder / "gzip-bomb.svgz").write_bytes(_gzip_bomb())
    return [str(folder)], ["render.size=256", "render.timeout_s=2"]


SPEC = DagSpec(
    name="svg",
    summary="SVG code <-> image pairs: safe parse, sanitise, normalise, resvg render, blank filter, exact + pHash dedup",
    stages=(
        ("read", ".svg/.svgz files, tars of them, Parquet/JSONL with an svg column -> records"),
        ("prepare", "inflate (capped), lxml parse without entities/DTD/network, sanitise, normalise, measure"),
        ("exact_dedup", "one record per normalised SVG text"),
        ("render", "resvg PNG at render.size on the long side, blank/near-uniform renders dropped, pHash"),
        ("near_dedup", "64-bit pHash near-duplicates of the renders (the caption DAG's SplitDuplicates)"),
        ("decontam", "optional (--set decontam.bench=PATH): renders and visible text against benchmark sets"),
        ("rows", "one row per task (svg_to_image, image_to_svg) per pair, tier from length and path complexity"),
        ("write", "Parquet shards by source and tier, PNG bytes in the row"),
    ),
    config_model=SvgConfig,
    plan=plan,
    build=build,
    one_to_one=False,
    finish=finish,
)
