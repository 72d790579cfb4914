"""`quarry run decontam --input DIR_OR_FILES --output OUT --set decontam.bench=BENCH`: benchmark contamination.

Checks existing rows (a quarry run's `DIR/data/**/*.parquet`, or any Parquet
or JSONL) against benchmark sets (Parquet/JSONL as published on dataset
hubs), text by normalised 13-gram and short questions by exact normalised
match, images by pHash (within `decontam.max_hamming`, default 8) and exact
content hash. Writes the same rows minus the contaminated ones (or all of
them with `contaminated` / `contamination` columns, `decontam.action=flag`),
and `OUT/contamination/*.parquet` with one row per match.

Tier rule: decontam does not judge difficulty. A row keeps its `tier` column
when it holds one of the five tiers; other rows get `input.default_tier`
(default medium). `source` likewise: the row's own `source` column, else
`--source`, else `unknown`.

Accounting (one-to-one): every input row is a kept row or a reject
(`read`: invalid_json, unreadable_file; `decontam`: contaminated_text,
contaminated_image; `write`: source_changed). Undecodable training images
are not rejects (nothing to compare; counted in Beam metrics).

Layout: one output shard per input file and partition, rows in input order,
with the input file's Arrow schema (plus `source`/`tier` when the input has
none, plus the flag columns with `flag`). Only small references travel
through the shuffle; the writer reads each input file a second time.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Union

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, Stage, with_reasons
from quarry.operators.base import Rejection
from quarry.operators.decontam import BenchFile, ImageKey, Match
from quarry.operators.ids import content_id
from quarry.operators.tables import first_objects, table_rows
from quarry.pipelines.decontam import STAGE_REASONS, Decontaminate, Probe, match_summary, plan_benchmarks
from quarry.pipelines.read import InputError, ReadFiles, beside, clean_source, match_inputs, read_limited, table_kind
from quarry.pipelines.stage import REJECTED, refused, reject_row, to_reject
from quarry.pipelines.write import SOURCE_CHANGED, STAGE as WRITE, StreamingShard, shard_path
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.common import TIERS, Origin, Reject
from quarry.schemas.config import ConfigError
from quarry.schemas.decontam import DecontamConfig, FlagColumns

# Columns never checked as text: ids, tags, hashes, paths.
SKIP_TEXT = frozenset({"sample_id", "source", "tier", "task", "url", "license", "phash", "image_format", "parent_id",
                       "image_id", "format", "id", "key", "model", "label_tier", "pass_tier", "contamination",
                       "mime", "path", "file"})
IMAGE_PATH_FIELDS = ("image", "images", "image_path")


@dataclass(frozen=True)
class TableIn:
    path: str
    kind: str  # "parquet" | "jsonl"
    index: int
    text: tuple[str, ...]
    image: tuple[str, ...]


@dataclass(frozen=True)
class DecontamPlan:
    files: list[TableIn]
    bench: list[BenchFile]


def _is_text_type(t: pa.DataType) -> bool:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return True
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_text_type(t.value_type)


def _is_image_type(t: pa.DataType) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    if pa.types.is_struct(t):
        return any(t.field(i).name == "bytes" and _is_image_type(t.field(i).type) for i in range(t.num_fields))
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_image_type(t.value_type)


def _auto_fields(path: str, kind: str) -> tuple[list[str], list[str], list[str]]:
    """(all columns, text columns, image columns) of one input file."""
    with FileSystems.open(path) as fh:
        if kind == "parquet":
            schema = pq.ParquetFile(fh).schema_arrow
            names = schema.names
            text = [f.name for f in schema if _is_text_type(f.type) and f.name not in SKIP_TEXT
                    and not f.name.endswith("_id")]
            image = [f.name for f in schema if _is_image_type(f.type)]
            return names, text, image
        first: dict[str, Any] = {}  # each column's first value, over the first 100 lines
        for rec in first_objects(fh):
            for k, v in rec.items():
                first.setdefault(k, v)
    names = list(first)
    text = [k for k, v in first.items() if k not in SKIP_TEXT and not k.endswith("_id") and k not in IMAGE_PATH_FIELDS
            and (isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(x, str) for x in v)))]
    image = [k for k in IMAGE_PATH_FIELDS if k in first]
    return names, text, image


def _input_paths(pattern: str) -> list[str]:
    """A quarry run directory means its `data/` shards; anything else as `match_inputs` expands it."""
    if "://" not in pattern and os.path.isdir(pattern) and (Path(pattern) / "manifest.json").exists() \
            and (Path(pattern) / "data").is_dir():
        pattern = str(Path(pattern) / "data")
    return match_inputs(pattern)


def plan(patterns: list[str], cfg: DecontamConfig) -> DecontamPlan:
    if not cfg.decontam.enabled:
        raise ConfigError("decontam needs benchmark files: --set decontam.bench=PATH_OR_GLOB (Parquet/JSONL with "
                          "question/options/answer and image columns)")
    bench = plan_benchmarks(cfg.decontam)
    files: list[TableIn] = []
    for pattern in patterns:
        paths = _input_paths(pattern)
        if not paths:
            raise InputError(f"input {pattern}: no files match")
        typed = [(p, table_kind(p)) for p in paths if table_kind(p)]
        if not typed:
            raise InputError(f"input {pattern}: none of the {len(paths)} matching files is Parquet or JSONL")
        for path, kind in typed:
            try:
                names, text, image = _auto_fields(path, kind)
            except (BeamIOError, OSError, ValueError) as e:
                raise InputError(f"input {path}: not a readable {kind} file ({e})") from None
            if kind == "parquet":
                for what, wanted in (("text_fields", cfg.decontam.text_fields), ("image_fields",
                                                                                 cfg.decontam.image_fields)):
                    missing = [c for c in (wanted or []) if c.split(".")[0] not in names]
                    if missing:
                        raise InputError(f"input {path}: no column(s) {', '.join(missing)} (decontam.{what}); "
                                         f"columns are {sorted(names)}")
            text = list(cfg.decontam.text_fields) if cfg.decontam.text_fields is not None else text
            image = list(cfg.decontam.image_fields) if cfg.decontam.image_fields is not None else image
            files.append(TableIn(path, kind, len(files), tuple(text), tuple(image)))
    return DecontamPlan(files, bench)


# --- reading: rows -> small references with what the check needs -----------------------------


class RowRef(NamedTuple):
    """One input row, without its payload: where it is, and what to check (image hashes precomputed)."""

    file: str
    key: str
    probe: Probe
    flags: tuple[str, ...] = ()
    flagged: bool = False


def _rows(f: TableIn) -> Iterator[tuple[str, Union[dict, str]]]:
    """(key, row or why it is unreadable); raises OSError/ValueError for a corrupt Parquet file."""
    with FileSystems.open(f.path) as fh:
        yield from table_rows(fh, f.kind, batch_size=256)


def _sample_id(row: dict, f: TableIn, key: str) -> str:
    sid = row.get("sample_id")
    if isinstance(sid, str) and sid:
        return sid
    return content_id("decontam", posixpath.basename(f.path), key)


def _source(row: dict, default: str) -> str:
    s = row.get("source")
    return clean_source(s) if isinstance(s, str) and s.strip() else default


def _texts(row: dict, fields: tuple[str, ...]) -> list[tuple[str, str]]:
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


class _ReadProbes(beam.DoFn):
    REJECTED = "rejected"

    def __init__(self, default_source: str, max_image_bytes: int):
        self.default_source = default_source
        self.max_image_bytes = max_image_bytes
        self.bad_images = beam.metrics.Metrics.counter("decontam", "training_images_unreadable")

    def _image_keys(self, f: TableIn, row: dict) -> list[tuple[str, ImageKey]]:
        out = []
        for name in f.image:
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

    def process(self, f: TableIn):
        name = posixpath.basename(f.path)

        def reject(key: str, reason: str, detail: str) -> Reject:
            return reject_row(content_id("reject", name, key), self.default_source, Origin(file=f.path, key=key),
                              "read", (reason, detail))

        try:
            for key, row in _rows(f):
                if isinstance(row, str):
                    yield beam.pvalue.TaggedOutput(self.REJECTED, reject(key, "invalid_json", row))
                    continue
                probe = Probe(_sample_id(row, f, key), _source(row, self.default_source),
                              Origin(file=f.path, key=key), tuple(_texts(row, f.text)),
                              tuple(self._image_keys(f, row)))
                yield RowRef(f.path, key, probe)
        except (BeamIOError, OSError, ValueError) as e:  # corrupt Parquet: rows read before stay
            yield beam.pvalue.TaggedOutput(self.REJECTED, reject("#unreadable", "unreadable_file",
                                                                 f"{type(e).__name__}: {e}"))


def _flag_ref(ref: RowRef, matches: list[Match]) -> RowRef:
    return ref._replace(flags=tuple(match_summary(m) for m in matches), flagged=bool(matches))


# --- writing: a second read of each input file ------------------------------------------------


def _output_schema(schema: pa.Schema, flag: bool) -> pa.Schema:
    for name in ("source", "tier"):
        if name not in schema.names:
            schema = schema.append(pa.field(name, pa.string()))
    if flag:
        for f in arrow_schema(FlagColumns):
            i = schema.get_field_index(f.name)
            schema = schema.set(i, f) if i >= 0 else schema.append(f)
    return schema


def _jsonable(v: Any) -> Any:
    return json.dumps(v, ensure_ascii=False, sort_keys=True) if isinstance(v, (dict, list)) else v


class _WriteKept(beam.DoFn):
    def __init__(self, files: list[TableIn], cfg: DecontamConfig, output_dir: str):
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
            with FileSystems.open(path) as fh:
                parquet_schema = _output_schema(pq.ParquetFile(fh).schema_arrow, self.flag)
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
                                   table.schema, self.cfg.shards)
            for r in table.to_pylist():
                shard.add(r)
            yield shard.close()


def read(pbegin, cfg: DecontamConfig, plan: DecontamPlan):
    read = pbegin | ReadFiles(plan.files, _ReadProbes(clean_source(cfg.source or "unknown"), cfg.input.max_image_bytes),
                              _ReadProbes.REJECTED)
    return read.main, read[_ReadProbes.REJECTED]


def transform(refs, cfg: DecontamConfig, plan: DecontamPlan, output: str) -> FamilyOutputs:
    out = refs | "Decontam" >> Decontaminate(cfg.decontam, lambda r: r.probe, output, dag="decontam",
                                             files=plan.bench, flag_fn=_flag_ref, shards=cfg.shards)
    return FamilyOutputs(out.kept, out.rejected)


def write(kept, cfg: DecontamConfig, plan: DecontamPlan, output: str):
    """Kept rows are written from a second read of their input file, in input order."""
    written = (
        kept
        | "KeyByInputFile" >> beam.Map(lambda r: (r.file, r))
        | "GroupByInputFile" >> beam.GroupByKey()
        | "WriteKept" >> beam.ParDo(_WriteKept(plan.files, cfg, output)).with_outputs(REJECTED, main="paths")
    )
    return written[REJECTED]


def describe(cfg: DecontamConfig, plan: DecontamPlan) -> BuildInfo:
    d = cfg.decontam
    info = BuildInfo(extra={"benchmark_files": len(plan.bench),
                            "benchmarks": sorted({b.benchmark for b in plan.bench}),
                            "ngram": d.ngram, "max_hamming": d.max_hamming, "action": d.action})
    if d.action == "flag":
        info.notes.append("decontam.action=flag: contaminated rows are kept with contaminated=true")
    return info


SPEC = DagSpec(
    name="decontam",
    summary="contamination check against benchmark sets: normalised text 13-grams, image pHash + exact hash",
    stages=with_reasons((
        Stage("read", "quarry shards (DIR/data/**/*.parquet) or any Parquet/JSONL; image pHashes computed while reading", where="dags/decontam.py"),
        Stage("index", "benchmark Parquet/JSONL -> text n-gram hashes, short-question hashes, image pHashes + digests "
                       "(one Beam combine; a side input loaded once per worker)", where="operators/decontam.py, pipelines/decontam.py"),
        Stage("decontam", "n-gram / exact text and pHash / exact image lookups; drop to rejects or flag", where="operators/decontam.py, pipelines/decontam.py"),
        Stage("write", "the input rows minus the contaminated (or flagged), the input's schema, one shard per input "
                       "file and partition; DIR/contamination/ one row per match", where="dags/decontam.py"),
    ), STAGE_REASONS),
    config_model=DecontamConfig,
    plan=plan,
    read=read,
    transform=transform,
    describe=describe,
    write=write,
    unsourced="rows without a `source` column",
)


# --- demo -----------------------------------------------------------------------------------------
