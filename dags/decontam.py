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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Iterator, NamedTuple, Union

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, Stage, with_reasons
from quarry.operators.base import Rejection
from quarry.operators.decontam import BenchFile, ImageKey, Match
from quarry.operators.ids import content_id
from quarry.operators.inputs import reasons
from quarry.operators.inputs import reasons as read_reasons
from quarry.operators.inputs.columns import first_values, is_image_type, is_text_type, is_text_value
from quarry.operators.inputs.jsonl import first_objects
from quarry.operators.inputs.kinds import TABLE_KINDS, TABLE_SUFFIXES
from quarry.operators.inputs.parquet import parquet_schema as footer_schema
from quarry.operators.inputs.records import Unreadable
from quarry.operators.inputs.tables import table_rows
from quarry.pipelines.decontam import STAGE_REASONS, Decontaminate, Probe, match_summary, plan_benchmarks
from quarry.pipelines.read import (
    TABLE_ERRORS,
    Head,
    InputError,
    InputFile,
    InputSpec,
    ReadFiles,
    beside,
    clean_source,
    match_inputs,
    plan_files,
    read_limited,
    read_reject,
    unreadable_table,
)
from quarry.pipelines.stage import REJECTED, refused, to_reject
from quarry.pipelines.write import SOURCE_CHANGED, StreamingShard, shard_path
from quarry.pipelines.write import STAGE as WRITE
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.common import TIERS, Origin
from quarry.schemas.config import ConfigError
from quarry.schemas.decontam import DecontamConfig, FlagColumns

# Columns never checked as text: ids, tags, hashes, paths.
SKIP_TEXT = frozenset({"sample_id", "source", "tier", "task", "url", "license", "phash", "image_format", "parent_id",
                       "image_id", "format", "id", "key", "model", "label_tier", "pass_tier", "contamination",
                       "mime", "path", "file"})
IMAGE_PATH_FIELDS = ("image", "images", "image_path")


@dataclass(frozen=True)
class DecontamPlan:
    files: list[InputFile]
    bench: list[BenchFile]


def _auto_fields(fh: IO[bytes], kind: str) -> Head:
    """An input file's columns, with (text columns, image columns) to check: by Arrow type in Parquet,
    by the first value of each field over the first 100 lines in JSONL."""
    if kind == "parquet":
        schema = footer_schema(fh)
        text = [f.name for f in schema if is_text_type(f.type) and f.name not in SKIP_TEXT
                and not f.name.endswith("_id")]
        return Head(schema.names, (text, [f.name for f in schema if is_image_type(f.type)]))
    first = first_values(first_objects(fh))
    text = [k for k, v in first.items() if k not in SKIP_TEXT and not k.endswith("_id") and k not in IMAGE_PATH_FIELDS
            and is_text_value(v)]
    return Head(list(first), (text, [k for k in IMAGE_PATH_FIELDS if k in first]))


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
    dc = cfg.decontam

    def fields(f: InputFile, _pattern: str, head: Head) -> InputFile:
        text, image = head.info
        if f.kind == "parquet":
            for what, wanted in (("text_fields", dc.text_fields), ("image_fields", dc.image_fields)):
                missing = [c for c in (wanted or []) if c.split(".")[0] not in head.names]
                if missing:
                    raise InputError(f"input {f.path}: no column(s) {', '.join(missing)} (decontam.{what}); "
                                     f"columns are {sorted(head.names)}")
        text = list(dc.text_fields) if dc.text_fields is not None else text
        image = list(dc.image_fields) if dc.image_fields is not None else image
        return replace(f, text_fields=tuple(text), image_fields=tuple(image))

    files = plan_files(patterns, InputSpec(
        kinds=TABLE_KINDS, suffixes=TABLE_SUFFIXES, readable="Parquet or JSONL", match=_input_paths,
        look=_auto_fields, look_kinds=TABLE_KINDS, unreadable="not a readable {kind} file ({e})", finish=fields))
    return DecontamPlan(files, bench)


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
    with FileSystems.open(f.path) as fh:
        yield from table_rows(fh, f.kind, batch_size=256)


def _sample_id(row: dict, f: InputFile, key: str) -> str:
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
                    yield reject(Unreadable(key, reasons.INVALID_JSON, row))
                    continue
                probe = Probe(_sample_id(row, f, key), _source(row, self.default_source),
                              Origin(file=f.path, key=key), tuple(_texts(row, f.text_fields)),
                              tuple(self._image_keys(f, row)))
                yield RowRef(f.path, key, probe)
        except (BeamIOError, *TABLE_ERRORS) as e:  # corrupt Parquet: rows read before stay
            yield reject(unreadable_table(e))


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
            with FileSystems.open(path) as fh:
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


# What this DAG's reader can reject a record for (operators/inputs/reasons.py).
READ_REASONS = (read_reasons.UNREADABLE_FILE, read_reasons.INVALID_JSON)


SPEC = DagSpec(
    name="decontam",
    summary="contamination check against benchmark sets: normalised text 13-grams, image pHash + exact hash",
    stages=with_reasons((
        Stage("read", "quarry shards (DIR/data/**/*.parquet) or any Parquet/JSONL; image pHashes computed while reading", where="operators/inputs/tables.py, dags/decontam.py"),
        Stage("index", "benchmark Parquet/JSONL -> text n-gram hashes, short-question hashes, image pHashes + digests "
                       "(one Beam combine; a side input loaded once per worker)", where="operators/decontam.py, pipelines/decontam.py"),
        Stage("decontam", "n-gram / exact text and pHash / exact image lookups; drop to rejects or flag", where="operators/decontam.py, pipelines/decontam.py"),
        Stage("write", "the input rows minus the contaminated (or flagged), the input's schema, one shard per input "
                       "file and partition; DIR/contamination/ one row per match", where="dags/decontam.py"),
    ), {**STAGE_REASONS, "read": READ_REASONS}),
    config_model=DecontamConfig,
    plan=plan,
    read=read,
    transform=transform,
    describe=describe,
    write=write,
    unsourced="rows without a `source` column",
)


# --- demo -----------------------------------------------------------------------------------------
