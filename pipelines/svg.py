"""The svg recipe (GLM-5V-Turbo §4: SVG code <-> image pairs) wired as Beam steps.

    ReadSvg -> Prepare (inflate, safe parse, sanitise, normalise, measure)
            -> ExactDuplicates (normalised text) -> Render (resvg, blank check, pHash)
            -> NearDuplicates (pHash, the caption DAG's SplitDuplicates) -> Rows (one per task)

Inputs: `.svg` / `.svgz` files (a directory is read recursively), tar shards
of them (members named `*.svg` / `*.svgz`; other members are ignored), and
Parquet or JSONL with an SVG text column (`svg`, or `reader.svg_column`).
A record that cannot be read is a `read` reject; an input that cannot be read
at all fails before the pipeline starts (`plan_svg_inputs`).

What travels through shuffles: the exact-duplicate step groups the normalised
text (a few KB per icon) by its hash; the near-duplicate step and the shard
writer carry the PNG (each row holds its own image bytes, DESIGN.md).
Rendering runs in-process: resvg is memory-safe Rust whose panics surface as
exceptions, and every input is bounded before it reaches the renderer
(bytes, inflated bytes, elements, elements after `<use>` expansion, length).
"""

from __future__ import annotations

import functools
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Optional, Union

import apache_beam as beam

from quarry.operators import decontam as decontam_ops
from quarry.operators.base import Rejection
from quarry.operators.ids import content_id, digest
from quarry.operators.inputs import reasons
from quarry.operators.inputs.columns import META_FIELDS, SVG_COLUMNS
from quarry.operators.inputs.files import svg_field, svg_value
from quarry.operators.inputs.jsonl import jsonl_objects, line_reason
from quarry.operators.inputs.kinds import SVG_SUFFIXES
from quarry.operators.inputs.parquet import parquet_rows
from quarry.operators.inputs.records import Unreadable, str_or_none
from quarry.operators.inputs.tar import TarDamage, TarMember, tar_members
from quarry.operators.phash import to_hex
from quarry.operators.svg import prepare as prepare_ops
from quarry.operators.svg import render as render_ops
from quarry.operators.svg.prepare import SVG_NS, NormaliseOptions, PreparedSvg, SvgLimits, prepare_svg, tier_of
from quarry.operators.svg.render import Rendered, RenderOptions, RenderWorker, render, render_png
from quarry.pipelines.dedup import NEAR_DUPLICATE, DedupKey, SplitDuplicates
from quarry.pipelines.read import (
    TABLE_ERRORS,
    ColumnNeed,
    InputFile,
    InputSpec,
    ReadRecords,
    clean_source,
    plan_files,
    read_limited,
    read_opened,
    read_reject,
    unreadable_table,
)
from quarry.pipelines.stage import REJECTED, count_stage, refused, run_stage, to_reject
from quarry.pipelines.stats import Progress
from quarry.schemas.common import ImageCell, Origin, Reject
from quarry.schemas.rl import VerifierSpec
from quarry.schemas.svg import (
    NormaliseConfig,
    RenderConfig,
    SvgConfig,
    SvgLimitsConfig,
    SvgReaderConfig,
    SvgRecord,
    SvgRow,
)

EXACT_DUPLICATE = "exact_duplicate"  # the exact-dedup step's (no operator decides it)
REASONS: tuple[str, ...] = (EXACT_DUPLICATE,)  # the recipe's own; read rejects are the reader's


# --- planning and reading ---------------------------------------------------------------------


def plan_svg_inputs(patterns: list[str], cfg: SvgReaderConfig) -> list[InputFile]:
    """Expand patterns to typed inputs; InputError for what cannot be read at all (before the run)."""
    return plan_files(patterns, InputSpec(
        kinds=("svg", "tar", "parquet", "jsonl"), readable=".svg, .svgz, a tar, Parquet or JSONL",
        columns=(ColumnNeed("svg_column", "SVG", cfg.svg_column, SVG_COLUMNS, "reader.svg_column",
                            named_missing="no column {wanted!r}; columns are {names}"),)))


class _Records:
    """Builds the records of one input file."""

    def __init__(self, path: str, default_source: str):
        self.path = path
        self.name = posixpath.basename(path)
        self.default_source = default_source

    def record(self, key: str, data: bytes, meta: dict[str, Any]) -> SvgRecord:
        source = meta.get("source") if isinstance(meta.get("source"), str) else None
        return SvgRecord(
            # Content plus position, as the caption reader does: stable across reruns,
            # and two identical inputs stay two records (exact dedup then keeps one).
            sample_id=content_id(digest(data), self.name, key),
            source=clean_source(source or self.default_source),
            origin=Origin(file=self.path, key=key),
            data=data,
            gzipped=data[:2] == b"\x1f\x8b",
            url=str_or_none(meta.get("url") or meta.get("URL")),
            license=str_or_none(meta.get("license") or meta.get("LICENSE")),
        )

    def sized(self, key: str, data: bytes, meta: dict[str, Any], cfg: SvgReaderConfig) -> Union[SvgRecord, Unreadable]:
        if len(data) > cfg.max_bytes:
            return Unreadable(key, reasons.FILE_TOO_LARGE, f"{len(data)} bytes > reader.max_bytes={cfg.max_bytes}",
                              str_or_none(meta.get("source")))
        return self.record(key, data, meta)

    def from_member(self, m: Union[TarMember, TarDamage], cfg: SvgReaderConfig) -> Union[SvgRecord, Unreadable]:
        if isinstance(m, TarDamage):
            return Unreadable(m.key, reasons.UNREADABLE_TAR, m.detail)
        if m.data is None:
            return Unreadable(m.name, reasons.FILE_TOO_LARGE, f"{m.size} bytes > reader.max_bytes={cfg.max_bytes}")
        return self.record(m.name, m.data, {})

    def from_row(self, row: int, values: dict, column: str, cfg: SvgReaderConfig) -> Union[SvgRecord, Unreadable]:
        key = f"row:{row}"
        meta = {k: values.get(k) for k in META_FIELDS if k in values and k != column}
        data = svg_value(values.get(column))
        if data is None:
            return Unreadable(key, reasons.MISSING_SVG, f"column {column!r} holds {type(values.get(column)).__name__}",
                              str_or_none(meta.get("source")))
        return self.sized(key, data, meta, cfg)

    def from_line(self, lineno: int, obj: Union[dict, str], fields: tuple[str, ...],
                  cfg: SvgReaderConfig) -> Union[SvgRecord, Unreadable]:
        key = f"line:{lineno}"
        if isinstance(obj, str):
            return Unreadable(key, line_reason(obj), obj)
        if isinstance(obj.get("id") or obj.get("key"), (str, int)):
            key = f"{key}:{obj.get('id') or obj.get('key')}"
        data = svg_field(obj, fields)
        if data is None:
            return Unreadable(key, reasons.MISSING_SVG, f"no SVG text field ({', '.join(fields)})",
                              str_or_none(obj.get("source")))
        return self.sized(key, data, obj, cfg)


def read_svg_input(f: InputFile, default_source: str, cfg: SvgReaderConfig) -> Iterator[Union[SvgRecord, Reject]]:
    """Every record of one input, as `SvgRecord`s or read rejects."""
    for rec in _svg_records(f, _Records(f.path, default_source), cfg):
        yield read_reject(f.path, default_source, rec) if isinstance(rec, Unreadable) else rec


def _svg_records(f: InputFile, rec: _Records, cfg: SvgReaderConfig) -> Iterator[Union[SvgRecord, Unreadable]]:
    if f.kind == "svg":
        data = read_limited(f.path, cfg.max_bytes)
        if isinstance(data, str):
            reason = reasons.FILE_TOO_LARGE if "larger" in data else reasons.UNREADABLE_FILE
            yield Unreadable(rec.name, reason, data.replace("reader.max_image_bytes", "reader.max_bytes"))
        else:
            yield rec.record(rec.name, data, {})
        return
    # Tars and tables may be gzipped (.tar.gz, .jsonl.gz): Beam inflates them by suffix.
    def parse(fh):
        if f.kind == "tar":
            for member in tar_members(fh, cfg.max_bytes, SVG_SUFFIXES):
                yield rec.from_member(member, cfg)
        elif f.kind == "jsonl":
            fields = (f.svg_column,) if f.svg_column else SVG_COLUMNS
            for lineno, obj in jsonl_objects(fh):
                yield rec.from_line(lineno, obj, fields, cfg)
        elif f.kind == "parquet":
            try:
                for row, values in parquet_rows(fh, [f.svg_column, *META_FIELDS], 256):
                    yield rec.from_row(row, values, f.svg_column, cfg)
            except TABLE_ERRORS as e:
                yield unreadable_table(e)
        else:  # pragma: no cover - plan_svg_inputs only makes the kinds above
            raise ValueError(f"unknown input kind {f.kind}")

    yield from read_opened(f.path, parse)


class ReadSvg(ReadRecords):
    """Planned inputs -> `(records: PCollection[SvgRecord], rejected: PCollection[Reject])`."""

    def __init__(self, files: list[InputFile], default_source: str, cfg: SvgReaderConfig):
        super().__init__(files, functools.partial(read_svg_input, default_source=clean_source(default_source),
                                                  cfg=cfg))


# --- the recipe -----------------------------------------------------------------------------------


class Outputs(NamedTuple):
    rows: Any  # PCollection[SvgRow]
    rejected: Any  # PCollection[Reject]


@dataclass
class Candidate:
    """A record that passed `prepare` (raw bytes dropped), and its render once made."""

    sample_id: str
    source: str
    origin: Origin
    url: Optional[str]
    license: Optional[str]
    svg: PreparedSvg
    rendered: Optional[Rendered] = None


def _origin_order(c: Candidate) -> tuple[str, str, str]:
    return (c.origin.file, c.origin.key, c.sample_id)


def limits_of(reader: SvgReaderConfig, limits: SvgLimitsConfig) -> SvgLimits:
    return SvgLimits(max_inflated_bytes=reader.max_inflated_bytes, max_elements=limits.max_elements,
                     max_expanded_elements=limits.max_expanded_elements, max_chars=limits.max_chars)


def normalise_of(n: NormaliseConfig) -> NormaliseOptions:
    return NormaliseOptions(precision=n.precision, rename_ids=n.rename_ids, keep_title=n.keep_title)


def render_of(r: RenderConfig) -> RenderOptions:
    return RenderOptions(size=r.size, background=r.background, blank_max_std=r.blank_max_std,
                         max_aspect_ratio=r.max_aspect_ratio, font_family=r.font_family,
                         serif_family=r.serif_family, monospace_family=r.monospace_family)


class _PrepareFn(beam.DoFn):
    def __init__(self, limits: SvgLimits, opts: NormaliseOptions):
        self.limits = limits
        self.opts = opts
        self.removed = beam.metrics.Metrics.counter("prepare", "sanitised_records")

    def process(self, rec: SvgRecord):
        prepared = prepare_svg(rec.data, self.limits, self.opts)
        if isinstance(prepared, Rejection):
            yield refused(to_reject(rec, "prepare", prepared))
            return
        if prepared.removed:
            self.removed.inc()
        yield Candidate(rec.sample_id, rec.source, rec.origin, rec.url, rec.license, prepared)


def _keep_first(element):
    """(text digest, candidates) -> the first by origin; the rest are exact duplicates of it.

    Two passes over the grouped iterable instead of a sort: only the current
    best is held, so a text repeated a million times in a crawl does not have to
    fit in one worker (runners page large groups in).
    """
    _key, group = element
    best = min(_origin_order(c) for c in group)
    kept = False
    for c in group:
        if not kept and _origin_order(c) == best:
            kept = True
            yield c
        else:
            yield refused(to_reject(c, "dedup", Rejection(
                EXACT_DUPLICATE, f"kept={best[2]} (same SVG after normalising)")))


class _RenderFn(beam.DoFn):
    """resvg per candidate; with render.isolate, in a child process this DoFn instance owns."""

    def __init__(self, cfg: RenderConfig):
        self.opts = render_of(cfg)
        self.isolate = cfg.isolate
        self.timeout_s = cfg.timeout_s
        self.max_memory_mb = cfg.max_memory_mb
        self.worker: Optional[RenderWorker] = None

    def setup(self):
        if self.isolate:
            self.worker = RenderWorker(self.timeout_s, self.max_memory_mb)

    def teardown(self):
        if self.worker is not None:
            self.worker.close()  # best effort: the child is a daemon and exits with this process anyway

    def process(self, c: Candidate):
        out = render(c.svg, self.opts, self.worker.draw if self.worker is not None else render_png)
        if isinstance(out, Rejection):
            yield refused(to_reject(c, "render", out))
            return
        c = Candidate(c.sample_id, c.source, c.origin, c.url, c.license, c.svg, out)  # elements are immutable
        yield c


def dedup_key(c: Candidate) -> DedupKey:
    return DedupKey(c.sample_id, c.rendered.phash, c.rendered.width, c.rendered.height)


def visible_text(svg_text: str) -> str:
    """The text a render shows: the content of <text>/<tspan>/<textPath> of the canonical SVG."""
    from lxml import etree

    root = etree.fromstring(svg_text.encode())
    parts = [t.strip() for el in root.iter(f"{{{SVG_NS}}}text") for t in el.itertext() if t.strip()]
    return " ".join(parts)


def decontam_probe(c: Candidate):
    """What the decontam stage checks of a pair: the render (pHash + bytes digest) and its visible text."""
    from quarry.operators.decontam import ImageKey, digest64
    from quarry.pipelines.decontam import Probe

    text = visible_text(c.svg.text)
    return Probe(c.sample_id, c.source, c.origin, (("svg_text", text),) if text else (),
                 (("image", ImageKey(c.rendered.phash, digest64(c.rendered.png))),))


def _keep_unflagged(c: Candidate, matches) -> Candidate:
    """decontam.action=flag: svg rows keep their schema; the matches are in DIR/contamination/."""
    return c


# The RL contract (schemas/rl.py): image_to_svg is an RL task judged by rendering the response (the
# svg_render rule); svg_to_image pairs train generation and carry no verifier.
TASK_QUESTIONS = {
    "image_to_svg": "Write the SVG code that draws this image.",
    "svg_to_image": "Draw the image that the SVG code in `svg` renders.",
}
TASK_VERIFIERS = {"image_to_svg": VerifierSpec(kind="svg_render"), "svg_to_image": None}


def to_rows(c: Candidate, tasks: list[str], char_bounds: list[int], command_bounds: list[int]) -> Iterator[SvgRow]:
    s, r = c.svg, c.rendered
    tier = tier_of(s, char_bounds, command_bounds)
    for task in tasks:
        yield SvgRow(
            sample_id=content_id(s.digest, task), source=c.source, tier=tier, task=task, origin=c.origin,
            url=c.url, license=c.license, parent_id=c.sample_id, pair_id=s.digest, svg=s.text,
            image=ImageCell(bytes=r.png), width=r.width, height=r.height, image_format="png", svg_chars=s.chars,
            input_bytes=s.input_bytes, element_count=s.element_count, path_count=s.path_count,
            path_commands=s.path_commands, viewbox_derived=s.viewbox_derived, removed=list(s.removed),
            phash=to_hex(r.phash), question=TASK_QUESTIONS[task], answer=s.text if task == "image_to_svg" else "",
            verifier=TASK_VERIFIERS[task],
        )


class SvgPipeline(beam.PTransform):
    """PCollection[SvgRecord] -> Outputs(rows=SvgRow, rejected=Reject).

    With `output_dir`, per-stage counts go to `_stats/` for the manifest:
    `prepare`, `exact_dedup`, `render`, `near_dedup` (inputs/outputs) and
    `rows` (pairs in, task rows out).
    """

    def __init__(self, cfg: SvgConfig, output_dir: Optional[str] = None):
        super().__init__()
        self.cfg = cfg
        self.output_dir = output_dir

    def expand(self, records):
        cfg, out_dir = self.cfg, self.output_dir
        prepared = run_stage(records | "ProgressPrepare" >> Progress("prepare"), "Prepare",
                             _PrepareFn(limits_of(cfg.reader, cfg.limits), normalise_of(cfg.normalise)), out_dir,
                             "prepare")
        rejected = [prepared.rejected]
        candidates = prepared.kept

        if cfg.dedup.exact:
            exact = (
                candidates
                | "KeyByText" >> beam.Map(lambda c: (c.svg.digest, c))
                | "GroupByText" >> beam.GroupByKey()
                | "KeepFirst" >> beam.FlatMap(_keep_first).with_outputs(REJECTED, main="kept")
            )
            count_stage(out_dir, "exact_dedup", candidates, exact.kept)
            rejected.append(exact.rejected)
            candidates = exact.kept

        rendered = run_stage(candidates | "ProgressRender" >> Progress("render"), "Render", _RenderFn(cfg.render),
                             out_dir, "render")
        rejected.append(rendered.rejected)
        candidates = rendered.kept

        if cfg.dedup.near:
            near = candidates | "NearDedup" >> SplitDuplicates(cfg.dedup.max_hamming, dedup_key,
                                                               order_key=_origin_order)
            count_stage(out_dir, "near_dedup", candidates, near.kept)
            rejected.append(near.rejected | "NearDedupRejects" >> beam.MapTuple(
                lambda c, verdict: to_reject(c, "dedup", verdict)))
            candidates = near.kept

        if cfg.decontam.enabled:  # --set decontam.bench=PATH: renders and visible text against benchmark sets
            from quarry.pipelines.decontam import MaybeDecontaminate

            candidates, dc_rejected = candidates | "Decontam" >> MaybeDecontaminate(
                cfg.decontam, out_dir, decontam_probe, dag="svg", flag_fn=_keep_unflagged, shards=cfg.shards)
            rejected.append(dc_rejected)

        rows = candidates | "ToRows" >> beam.FlatMap(to_rows, list(cfg.tasks), list(cfg.tiers.chars),
                                                     list(cfg.tiers.path_commands))
        count_stage(out_dir, "rows", candidates, rows)
        all_rejected = rejected | "AllRejects" >> beam.Flatten()
        return Outputs(rows, all_rejected)


# The reasons each stage of the svg DAG (dags/svg.py: SPEC.stages) can give its reject rows; `read` is the
# reader's. Both dedup steps write their rejects at stage `dedup` (REJECT_STAGES).
STAGE_REASONS: dict[str, tuple[str, ...]] = {
    "prepare": prepare_ops.REASONS,
    "exact_dedup": (EXACT_DUPLICATE,),
    "render": render_ops.REASONS,
    "near_dedup": (NEAR_DUPLICATE,),
    "decontam": (decontam_ops.CONTAMINATED_TEXT, decontam_ops.CONTAMINATED_IMAGE),
    "rows": (),
    "write": (),
}
REJECT_STAGES: dict[str, str] = {"exact_dedup": "dedup", "near_dedup": "dedup"}  # DAG stage -> rejects' `stage`
