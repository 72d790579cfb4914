"""The contamination check as Beam steps, usable by every DAG.

    benchmark files -> BuildDecontamIndex (one IndexPart per file, merged by a
                       CombineGlobally into one `DecontamIndex`, shipped as
                       npz bytes) -------------------------------+ side input
    rows -> Decontaminate: probe_fn(row) -> Probe (id, texts, images)
                           -> CheckRows (index loaded once per worker process
                              through `shared.Shared`) -> kept | rejected | matches

`Decontaminate` takes any PCollection of rows and a `probe_fn` saying what to
check in a row (`FieldProbe` covers pydantic rows, dicts and dataclasses by
field name). With `decontam.action=drop` a contaminated row becomes a
`Reject` at stage `decontam` (`contaminated_text` or `contaminated_image`;
the detail names the benchmark, the item id and the matched n-gram or pHash
distance); with `flag` it is kept and `flag_fn(row, matches)` adds the
columns. Every match (one per matching field) is a `ContaminationMatch` row,
written to `DIR/contamination/` when an output directory is given.

Switching it on in another DAG (two lines, after `rows` and before the writer)::

    from quarry.pipelines.decontam import FieldProbe, MaybeDecontaminate
    rows, dc_rejected = rows | "Decontam" >> MaybeDecontaminate(
        cfg.decontam, output, FieldProbe(text=("question", "answer"), image=("image",)), dag="mydag",
        max_pixels=pixel_limit(cfg))

and add `dc_rejected` to the rejects Flatten. With `decontam.bench` unset it
passes `rows` through untouched and `dc_rejected` is empty.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Any, Callable, Iterator, NamedTuple, Optional, Union

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared
from pydantic import BaseModel

from quarry.operators import decontam as decontam_ops
from quarry.operators.base import Rejection
from quarry.operators.decontam import (
    DEFAULT_MAX_PIXELS,
    BenchFile,
    BenchmarkError,
    Columns,
    DecontamIndex,
    ImageKey,
    IndexPart,
    IndexSettings,
    Match,
    benchmark_name,
    check_row,
    index_item,
    item_from_row,
    read_benchmark_rows,
    resolve_columns,
)
from quarry.operators.ids import content_id
from quarry.operators.inputs.jsonl import line_reason
from quarry.operators.inputs.kinds import TABLE_KINDS, TABLE_SUFFIXES
from quarry.operators.inputs.parquet import parquet_schema as footer_schema
from quarry.operators.inputs.records import Unreadable
from quarry.operators.inputs.tables import table_columns, table_rows
from quarry.pipelines.read import (
    TABLE_ERRORS,
    Head,
    InputError,
    InputFile,
    InputSpec,
    beside,
    clean_source,
    match_inputs,
    open_file,
    plan_files,
    read_limited,
    read_reject,
    unreadable_table,
)
from quarry.pipelines.stage import REJECTED, count_stage, refused, reject_row, to_reject
from quarry.pipelines.stats import read_stats, write_stats
from quarry.pipelines.write import SOURCE_CHANGED, StreamingShard, WriteParquetTable, shard_path
from quarry.pipelines.write import STAGE as WRITE
from quarry.schemas.arrow import PARTITION_STRING, arrow_schema
from quarry.schemas.caption import DecodeConfig
from quarry.schemas.common import TIERS, ImageCell, Origin
from quarry.schemas.config import ConfigError, DagConfig, DecontamSection, ShardConfig
from quarry.schemas.decontam import ContaminationMatch, DecontamConfig, FlagColumns

STAGE = "decontam"
INDEX_STATS = "decontam_index"  # _stats/decontam_index.json
CONTAMINATION_DIR = "contamination"


# --- planning: fail before the pipeline starts ------------------------------------------------


def plan_benchmarks(section: DecontamSection) -> list[BenchFile]:
    """Benchmark files with resolved columns; ConfigError (one line) for what cannot be used at all."""
    columns: dict[str, Columns] = {}

    def resolve(f: InputFile, _pattern: str, head: Head) -> InputFile:
        name = benchmark_name(f.path)
        try:
            columns[f.path] = resolve_columns(head.names, section.columns.get(name), f.path, name)
        except BenchmarkError as e:
            raise ConfigError(f"decontam.bench: {e}") from None
        return f

    planned = plan_files(section.bench or [], InputSpec(
        kinds=TABLE_KINDS, suffixes=TABLE_SUFFIXES, readable="Parquet or JSONL", what="decontam.bench",
        error=ConfigError, match=_match_bench, look=_columns_of, look_kinds=TABLE_KINDS,
        unreadable="not a readable {kind} file ({e})", finish=resolve))
    files = [BenchFile(f.path, f.kind, benchmark_name(f.path), columns[f.path]) for f in planned]
    unknown = sorted(set(section.columns) - {f.benchmark for f in files})
    if unknown:
        raise ConfigError(f"decontam.columns names benchmark(s) {', '.join(unknown)} that no decontam.bench file is "
                          f"(benchmarks: {', '.join(sorted({f.benchmark for f in files}))})")
    return files


def _match_bench(pattern: str) -> list[str]:
    try:
        return match_inputs(pattern)
    except InputError as e:
        raise ConfigError(f"decontam.bench: {e}") from None


def _columns_of(fh, kind: str) -> Head:
    return Head(table_columns(fh, kind))


def settings_of(section: DecontamSection, max_pixels: int) -> IndexSettings:
    return IndexSettings(ngram=section.ngram, min_exact_tokens=section.min_exact_tokens,
                         check_options=section.check_options, max_hamming=section.max_hamming, max_pixels=max_pixels)


def pixel_limit(cfg: DagConfig) -> int:
    """The decontam stage's image pixel limit in a DAG: its `decode.max_pixels`, else the decode section's default."""
    decode = getattr(cfg, "decode", None)
    return decode.max_pixels if isinstance(decode, DecodeConfig) else DEFAULT_MAX_PIXELS


# --- the index --------------------------------------------------------------------------------


def index_file(f: BenchFile, settings: IndexSettings, max_image_bytes: int) -> IndexPart:
    """One benchmark file's hashes. Unreadable rows and images are counted, never fatal."""
    part = IndexPart()
    try:
        fh = open_file(f.path)
    except (BeamIOError, OSError) as e:
        part.stats.rows_unreadable += 1
        part.stats.unreadable_examples.append(f"{f.benchmark}: cannot open {f.path}: {e}"[:300])
        return part
    with fh:
        try:
            for key, row in read_benchmark_rows(fh, f):
                if isinstance(row, str):
                    part.stats.rows_unreadable += 1
                    if len(part.stats.unreadable_examples) < 20:
                        part.stats.unreadable_examples.append(f"{f.benchmark}/{key}: {row}"[:300])
                    continue
                index_item(part, item_from_row(row, f, key, read_limited, max_image_bytes), settings)
        except (OSError, ValueError) as e:  # a corrupt Parquet page: what was read stays
            part.stats.rows_unreadable += 1
            part.stats.unreadable_examples.append(f"{f.benchmark}: {f.path} unreadable ({type(e).__name__}: {e})"[:300])
    return part


class _MergeParts(beam.CombineFn):
    """IndexParts -> one serialised `DecontamIndex` (key, npz bytes) and its stats."""

    def __init__(self, settings: IndexSettings):
        self.settings = settings

    def create_accumulator(self):
        return IndexPart()

    def add_input(self, acc, part):
        return acc.merge(part)

    def merge_accumulators(self, accs):
        accs = list(accs)
        out = accs[0]
        for a in accs[1:]:
            out.merge(a)
        return out

    def extract_output(self, acc):
        blob = DecontamIndex.from_part(acc, self.settings).to_bytes()
        return content_id(blob), blob, acc.stats.as_dict()


class BuildDecontamIndex(beam.PTransform):
    """PBegin -> PCollection of one `(key, npz bytes)`: the index, for `beam.pvalue.AsSingleton`.

    Files are read in parallel (one file per worker), the parts merged by one
    combine. Index stats (items per benchmark, unreadable images with
    examples) go to `DIR/_stats/decontam_index.json` when `output_dir` is given.
    Benchmark images decode under `max_pixels` (the DAG's `decode.max_pixels`).
    """

    def __init__(self, files: list[BenchFile], section: DecontamSection, output_dir: Optional[str] = None,
                 *, max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__()
        self.files = files
        self.settings = settings_of(section, max_pixels)
        self.max_image_bytes = section.max_image_bytes
        self.output_dir = output_dir

    def expand(self, pbegin):
        settings, limit = self.settings, self.max_image_bytes
        built = (
            pbegin
            | "ListBenchmarks" >> beam.Create(self.files)
            | "SpreadBenchmarks" >> beam.Reshuffle()
            | "IndexFile" >> beam.Map(index_file, settings, limit)
            | "MergeIndex" >> beam.CombineGlobally(_MergeParts(settings))
        )
        if self.output_dir is not None:
            output_dir = self.output_dir
            built | "WriteIndexStats" >> beam.Map(
                lambda b: write_stats(output_dir, INDEX_STATS, {"name": INDEX_STATS, "count": b[2]["items"], **b[2]}))
        return built | "IndexBlob" >> beam.Map(lambda b: (b[0], b[1]))


# --- what to check in a row -------------------------------------------------------------------


ImageValue = Union[bytes, ImageKey, None]


class Probe(NamedTuple):
    """What the check needs of one row."""

    sample_id: str
    source: str
    origin: Origin
    texts: tuple[tuple[str, str], ...] = ()  # (field, text)
    images: tuple[tuple[str, ImageValue], ...] = ()  # (field, bytes | precomputed ImageKey)


def _get(row: Any, path: str) -> Any:
    """`row.a.b` / `row["a"]["b"]` for a dotted path; None when absent."""
    cur = row
    for part in path.split("."):
        if cur is None:
            return None
        if isinstance(cur, dict):
            cur = cur.get(part)
        else:
            cur = getattr(cur, part, None)
    return cur


def _texts(name: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(name, value)]
    if isinstance(value, (list, tuple)):
        return [(f"{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str)]
    return []


def _images(name: str, value: Any) -> list[tuple[str, ImageValue]]:
    if value is None:
        return []
    if isinstance(value, ImageKey):
        return [(name, value)]
    if isinstance(value, (bytes, bytearray)):
        return [(name, bytes(value))] if value else []
    if isinstance(value, ImageCell):
        return [(name, value.bytes)] if value.bytes else []
    if isinstance(value, dict) and isinstance(value.get("bytes"), (bytes, bytearray)):
        return [(name, bytes(value["bytes"]))] if value["bytes"] else []
    if isinstance(value, (list, tuple)):
        return [(f"{name}[{i}]", v) for i, item in enumerate(value) for _, v in _images(name, item)]
    return []


@dataclasses.dataclass(frozen=True)
class FieldProbe:
    """A `probe_fn` reading fields by (dotted) name from pydantic rows, dicts or dataclasses.

    Text fields may hold a string or a list of strings; image fields bytes,
    an `ImageCell`, a `{bytes, path}` dict, an `ImageKey` (precomputed pHash)
    or a list of those. The id, source and origin come from `id_field`,
    `source_field` and `origin_field` (origin: an `Origin` or a dict).
    """

    text: tuple[str, ...] = ()
    image: tuple[str, ...] = ()
    id_field: str = "sample_id"
    source_field: str = "source"
    origin_field: str = "origin"

    def __call__(self, row: Any) -> Probe:
        origin = _get(row, self.origin_field)
        if isinstance(origin, dict):
            origin = Origin(**origin)
        if not isinstance(origin, Origin):
            origin = Origin(file="", key=str(_get(row, self.id_field)))
        return Probe(
            sample_id=str(_get(row, self.id_field)),
            source=str(_get(row, self.source_field) or "unknown"),
            origin=origin,
            texts=tuple(t for name in self.text for t in _texts(name, _get(row, name))),
            images=tuple(i for name in self.image for i in _images(name, _get(row, name))),
        )

    def restricted(self, section: DecontamSection) -> "FieldProbe":
        """The probe with `decontam.text_fields` / `decontam.image_fields` applied where set."""
        return dataclasses.replace(
            self,
            text=tuple(section.text_fields) if section.text_fields is not None else self.text,
            image=tuple(section.image_fields) if section.image_fields is not None else self.image,
        )


def match_summary(m: Match) -> str:
    """One line per match, as `flag` columns and reject details carry it."""
    what = f"ngram='{m.detail}'" if m.kind == "text_ngram" else (
        f"text='{m.detail}'" if m.kind == "text_exact" else f"image={m.detail} distance={m.distance}")
    return f"{m.reason} benchmark={m.benchmark} item={m.item_id} field={m.field} {what}"


def flag_row(row: Any, matches: list[Match]) -> Any:
    """Default `flag_fn`: dicts get `contaminated` / `contamination` keys, pydantic rows with those
    fields get them set; other rows pass unchanged (their matches are in `DIR/contamination/`)."""
    cols = {"contaminated": bool(matches), "contamination": [match_summary(m) for m in matches]}
    if isinstance(row, dict):
        return {**row, **cols}
    if isinstance(row, BaseModel) and "contaminated" in type(row).model_fields:
        return row.model_copy(update=cols)
    return row


# --- the check --------------------------------------------------------------------------------


class _LoadedIndex:
    """Holder for the per-process index (`shared.Shared` needs a weak-referenceable object)."""

    def __init__(self, blob: bytes):
        self.index = DecontamIndex.from_bytes(blob)


class _CheckRows(beam.DoFn):
    MATCHES = "matches"

    def __init__(self, probe_fn: Callable[[Any], Probe], action: str, dag: str,
                 flag_fn: Callable[[Any, list[Match]], Any], max_pixels: int):
        self.probe_fn = probe_fn
        self.action = action
        self.dag = dag
        self.flag_fn = flag_fn
        self.max_pixels = max_pixels
        self._shared = shared.Shared()
        self.checked = Metrics.counter(STAGE, "rows_checked")
        self.contaminated = Metrics.counter(STAGE, "rows_contaminated")
        self.bad_images = Metrics.counter(STAGE, "training_images_undecodable")

    def process(self, row, index_blob):
        key, blob = index_blob
        index = self._shared.acquire(lambda: _LoadedIndex(blob), tag=key).index
        probe = self.probe_fn(row)
        self.checked.inc()
        images = []
        for name, value in probe.images:
            if isinstance(value, (bytes, bytearray)):
                value = ImageKey.of_bytes(bytes(value), self.max_pixels)
                if isinstance(value, Rejection):  # not this stage's business: nothing to compare
                    self.bad_images.inc()
                    continue
            images.append((name, value))
        matches = check_row(index, probe.texts, images)
        if not matches:
            yield self.flag_fn(row, []) if self.action == "flag" else row
            return
        self.contaminated.inc()
        for m in matches:
            yield beam.pvalue.TaggedOutput(self.MATCHES, ContaminationMatch(
                sample_id=probe.sample_id, source=probe.source, dag=self.dag, field=m.field, kind=m.kind,
                reason=m.reason, benchmark=m.benchmark, item_id=m.item_id, matched=m.detail, distance=m.distance,
                action=self.action, origin=probe.origin))
        if self.action == "flag":
            yield self.flag_fn(row, matches)
            return
        first = matches[0]  # texts are checked first: a row matching both is contaminated_text
        more = f" (+{len(matches) - 1} more field(s))" if len(matches) > 1 else ""
        yield refused(reject_row(probe.sample_id, probe.source, probe.origin, STAGE,
                                 (first.reason, match_summary(first) + more)))


class DecontamOutputs(NamedTuple):
    kept: Any  # PCollection of the input rows (flagged with `flag`)
    rejected: Any  # PCollection[Reject] (empty with `flag`)
    matches: Any  # PCollection[ContaminationMatch]


class Decontaminate(beam.PTransform):
    """Rows -> `DecontamOutputs(kept, rejected, matches)`, checked against `section.bench`.

    `files` are planned benchmark files (`plan_benchmarks`); planned here when
    not given. With `output_dir`, matches go to `DIR/contamination/` and counts
    to `_stats` (`decontam.in`, `decontam.out`, `decontam_index.json`).
    Images (training rows' bytes and benchmark images) decode under `max_pixels`:
    pass the DAG's `decode.max_pixels` (`pixel_limit(cfg)`).
    """

    def __init__(self, section: DecontamSection, probe_fn: Callable[[Any], Probe], output_dir: Optional[str] = None,
                 *, dag: str = "", files: Optional[list[BenchFile]] = None,
                 flag_fn: Callable[[Any, list[Match]], Any] = flag_row, shards: Optional[ShardConfig] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__()
        if not section.enabled:
            raise ConfigError("Decontaminate needs decontam.bench (benchmark Parquet/JSONL files)")
        self.section = section
        self.files = files if files is not None else plan_benchmarks(section)
        self.probe_fn = probe_fn
        self.output_dir = output_dir
        self.dag = dag
        self.flag_fn = flag_fn
        self.shards = shards or ShardConfig()
        self.max_pixels = max_pixels

    def expand(self, rows):
        index = rows.pipeline | "BuildDecontamIndex" >> BuildDecontamIndex(
            self.files, self.section, self.output_dir, max_pixels=self.max_pixels)
        out = rows | "CheckRows" >> beam.ParDo(
            _CheckRows(self.probe_fn, self.section.action, self.dag, self.flag_fn, self.max_pixels),
            index_blob=beam.pvalue.AsSingleton(index),
        ).with_outputs(REJECTED, _CheckRows.MATCHES, main="kept")
        count_stage(self.output_dir, STAGE, rows, out.kept)
        if self.output_dir is not None:
            out[_CheckRows.MATCHES] | "WriteContamination" >> WriteParquetTable(
                FileSystems.join(self.output_dir, CONTAMINATION_DIR), "contamination", ContaminationMatch, self.shards)
        return DecontamOutputs(out.kept, out[REJECTED], out[_CheckRows.MATCHES])


class MaybeDecontaminate(beam.PTransform):
    """`(rows, rejected)`: `Decontaminate` when `section.bench` is set, else `rows` untouched and no rejects."""

    def __init__(self, section: DecontamSection, output_dir: Optional[str], probe_fn: Callable[[Any], Probe],
                 *, dag: str = "", flag_fn: Callable[[Any, list[Match]], Any] = flag_row,
                 shards: Optional[ShardConfig] = None, max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__()
        self.section = section
        self.output_dir = output_dir
        self.probe_fn = probe_fn.restricted(section) if isinstance(probe_fn, FieldProbe) else probe_fn
        self.dag = dag
        self.flag_fn = flag_fn
        self.shards = shards
        self.max_pixels = max_pixels

    def expand(self, rows):
        if not self.section.enabled:
            return rows, rows.pipeline | "NoDecontamRejects" >> beam.Create([])
        out = rows | "Decontaminate" >> Decontaminate(self.section, self.probe_fn, self.output_dir, dag=self.dag,
                                                      flag_fn=self.flag_fn, shards=self.shards,
                                                      max_pixels=self.max_pixels)
        return out.kept, out.rejected


# --- the report -------------------------------------------------------------------------------


def contamination_summary(output_dir: str) -> Optional[dict]:
    """Matches per benchmark, per source and per kind from `DIR/contamination/`, plus the index stats
    (None when the run had no decontam stage)."""
    import pyarrow.parquet as pq

    from quarry.pipelines.write import written_files

    index_stats = read_stats(output_dir, INDEX_STATS)
    if index_stats is None:
        return None
    by_bench: dict[str, int] = {}
    by_source: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    rows: set[str] = set()
    matches = 0
    for path in written_files(FileSystems.join(output_dir, CONTAMINATION_DIR)):
        with FileSystems.open(path, compression_type="uncompressed") as fh:
            t = pq.read_table(fh, columns=["sample_id", "source", "benchmark", "kind"])
        matches += t.num_rows
        for sid, src, bench, kind in zip(*(t[c].to_pylist() for c in ("sample_id", "source", "benchmark", "kind"))):
            by_bench[bench] = by_bench.get(bench, 0) + 1
            by_source[src] = by_source.get(src, 0) + 1
            by_kind[kind] = by_kind.get(kind, 0) + 1
            rows.add(sid)
    index_stats.pop("name", None)
    index_stats.pop("count", None)
    return {"matches": matches, "rows_contaminated": len(rows), "by_benchmark": dict(sorted(by_bench.items())),
            "by_source": dict(sorted(by_source.items())), "by_kind": dict(sorted(by_kind.items())),
            "index": index_stats}


# The reasons each stage of the decontam DAG (dags/decontam.py: SPEC.stages) can give its reject rows; `read` is
# the reader's. The index rejects nothing (unreadable benchmark images are counted: BENCH_IMAGE_REASONS).
STAGE_REASONS: dict[str, tuple[str, ...]] = {
    "index": (),
    "decontam": decontam_ops.MATCH_REASONS,
    "write": (SOURCE_CHANGED,),
}


__all__ = ["BuildDecontamIndex", "Decontaminate", "DecontamOutputs", "FieldProbe", "MaybeDecontaminate", "Probe",
           "contamination_summary", "flag_row", "pixel_limit", "plan_benchmarks"]


# === the decontam DAG: existing rows checked, the kept ones rewritten from a second read ==========

# --- reading: rows -> small references with what the check needs -----------------------------


class RowRef(NamedTuple):
    """One input row, without its payload: where it is, and what to check (image hashes precomputed)."""

    file: str
    key: str
    probe: Probe
    flags: tuple[str, ...] = ()
    flagged: bool = False


def _rows(f: InputFile) -> Iterator[tuple[str, Union[dict, str]]]:
    """(key, row or why it is unreadable); raises OSError/ValueError for a corrupt Parquet file."""
    with open_file(f.path) as fh:
        yield from table_rows(fh, f.kind, batch_size=256)


def _sample_id(row: dict, f: InputFile, key: str) -> str:
    sid = row.get("sample_id")
    if isinstance(sid, str) and sid:
        return sid
    return content_id("decontam", posixpath.basename(f.path), key)


def _source(row: dict, default: str) -> str:
    s = row.get("source")
    return clean_source(s) if isinstance(s, str) and s.strip() else default


def _row_texts(row: dict, fields: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for name in fields:
        v: Any = row
        for part in name.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if isinstance(v, str):
            out.append((name, v))
        elif isinstance(v, list):
            out.extend((f"{name}[{i}]", x) for i, x in enumerate(v) if isinstance(x, str))
    return out


class ReadRowProbes(beam.DoFn):
    REJECTED = "rejected"

    def __init__(self, default_source: str, max_image_bytes: int):
        self.default_source = default_source
        self.max_image_bytes = max_image_bytes
        self.bad_images = beam.metrics.Metrics.counter("decontam", "training_images_unreadable")

    def _image_keys(self, f: InputFile, row: dict) -> list[tuple[str, ImageKey]]:
        out = []
        for name in f.image_fields:
            value = row.get(name)
            cells = value if isinstance(value, list) else [value]
            for i, cell in enumerate(cells):
                label = name if len(cells) == 1 else f"{name}[{i}]"
                if isinstance(cell, dict):
                    cell = cell.get("bytes") or cell.get("path")
                if isinstance(cell, str) and cell:
                    cell = read_limited(beside(cell, f.path), self.max_image_bytes)
                    if isinstance(cell, str):
                        self.bad_images.inc()
                        continue
                if not isinstance(cell, (bytes, bytearray)) or not cell:
                    continue
                if len(cell) > self.max_image_bytes:
                    self.bad_images.inc()
                    continue
                key = ImageKey.of_bytes(bytes(cell))
                if isinstance(key, Rejection):
                    self.bad_images.inc()
                    continue
                out.append((label, key))
        return out

    def process(self, f: InputFile):
        def reject(bad: Unreadable) -> beam.pvalue.TaggedOutput:
            return beam.pvalue.TaggedOutput(self.REJECTED, read_reject(f.path, self.default_source, bad))

        try:
            for key, row in _rows(f):
                if isinstance(row, str):
                    yield reject(Unreadable(key, line_reason(row), row))
                    continue
                probe = Probe(_sample_id(row, f, key), _source(row, self.default_source),
                              Origin(file=f.path, key=key), tuple(_row_texts(row, f.text_fields)),
                              tuple(self._image_keys(f, row)))
                yield RowRef(f.path, key, probe)
        except (BeamIOError, *TABLE_ERRORS) as e:  # corrupt Parquet: rows read before stay
            yield reject(unreadable_table(e))


def flag_ref(ref: RowRef, matches: list[Match]) -> RowRef:
    return ref._replace(flags=tuple(match_summary(m) for m in matches), flagged=bool(matches))


# --- writing: a second read of each input file ------------------------------------------------


def _partition_columns(schema: pa.Schema) -> pa.Schema:
    """`source` and `tier` typed as the Hive folders they are written under (schemas/arrow.PARTITION_STRING)."""
    for name in ("source", "tier"):
        i = schema.get_field_index(name)
        field = pa.field(name, PARTITION_STRING)
        schema = schema.set(i, field) if i >= 0 else schema.append(field)
    return schema


def _output_schema(schema: pa.Schema, flag: bool) -> pa.Schema:
    schema = _partition_columns(schema)
    if flag:
        for f in arrow_schema(FlagColumns):
            i = schema.get_field_index(f.name)
            schema = schema.set(i, f) if i >= 0 else schema.append(f)
    return schema


def _jsonable(v: Any) -> Any:
    return json.dumps(v, ensure_ascii=False, sort_keys=True) if isinstance(v, (dict, list)) else v


class WriteKeptRows(beam.DoFn):
    REJECTED = "rejected"

    def __init__(self, files: list[InputFile], cfg: DecontamConfig, output_dir: str):
        self.files = {f.path: f for f in files}
        self.count = len(files)
        self.cfg = cfg
        self.data_dir = FileSystems.join(output_dir, "data")
        self.flag = cfg.decontam.action == "flag"
        self.default_source = clean_source(cfg.source or "unknown")
        self.default_tier = getattr(cfg.input.default_tier, "value", cfg.input.default_tier)

    def _finish_row(self, row: dict, ref: RowRef) -> dict:
        row["source"] = _source(row, self.default_source)
        if row.get("tier") not in TIERS:
            row["tier"] = self.default_tier
        if self.flag:
            row["contaminated"] = ref.flagged
            row["contamination"] = list(ref.flags)
        return row

    def process(self, element):
        path, refs = element
        f = self.files[path]
        wanted = {r.key: r for r in refs}
        parquet_schema = None
        if f.kind == "parquet":
            with open_file(path) as fh:
                parquet_schema = _output_schema(footer_schema(fh), self.flag)
        shards: dict[tuple[str, ...], Any] = {}
        pending: dict[tuple[str, ...], list[dict]] = {}
        for key, row in _rows(f):
            ref = wanted.pop(key, None)
            if ref is None or isinstance(row, str):
                continue
            if _sample_id(row, f, key) != ref.probe.sample_id:
                yield refused(to_reject(ref.probe, WRITE, (SOURCE_CHANGED, "the input row changed between reads")))
                continue
            row = self._finish_row(row, ref)
            partition = (f"source={row['source']}", f"tier={row['tier']}")
            if parquet_schema is not None:
                if partition not in shards:
                    shards[partition] = StreamingShard(
                        shard_path(self.data_dir, partition, "decontam", f.index, self.count), parquet_schema,
                        self.cfg.shards)
                shards[partition].add(row)
            else:
                pending.setdefault(partition, []).append(row)
        for ref in wanted.values():
            yield refused(to_reject(ref.probe, WRITE, (SOURCE_CHANGED,
                                                       "the input row was not found on the second read")))
        for shard in shards.values():
            yield shard.close()
        for partition, rows in pending.items():  # JSONL: one table per file and partition, schema from its rows
            try:
                table = pa.Table.from_pylist(rows)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types across lines: nested values as JSON text
                table = pa.Table.from_pylist([{k: _jsonable(v) for k, v in r.items()} for r in rows])
            shard = StreamingShard(shard_path(self.data_dir, partition, "decontam", f.index, self.count),
                                   _partition_columns(table.schema), self.cfg.shards)
            for r in table.to_pylist():
                shard.add(r)
            yield shard.close()


class WriteKept(beam.PTransform):
    """Kept row references -> their rows rewritten from a second read of each input file; returns the rejects
    (`write/source_changed` when an input changed between the reads)."""

    def __init__(self, files: list[InputFile], cfg: DecontamConfig, output_dir: str):
        super().__init__()
        self.files, self.cfg, self.output_dir = files, cfg, output_dir

    def expand(self, kept):
        written = (
            kept
            | "KeyByInputFile" >> beam.Map(lambda r: (r.file, r))
            | "GroupByInputFile" >> beam.GroupByKey()
            | "WriteKept" >> beam.ParDo(WriteKeptRows(self.files, self.cfg, self.output_dir)).with_outputs(
                REJECTED, main="paths")
        )
        return written[REJECTED]
