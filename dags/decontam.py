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

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, Stage, with_reasons
from quarry.operators.decontam import BenchFile
from quarry.operators.inputs import reasons
from quarry.operators.inputs.columns import first_values, is_image_type, is_text_type, is_text_value
from quarry.operators.inputs.jsonl import first_objects
from quarry.operators.inputs.kinds import TABLE_KINDS, TABLE_SUFFIXES
from quarry.operators.inputs.parquet import parquet_schema as footer_schema
from quarry.pipelines.decontam import STAGE_REASONS, Decontaminate, ReadRowProbes, WriteKept, flag_ref, plan_benchmarks
from quarry.pipelines.read import (
    Head,
    InputError,
    InputFile,
    InputSpec,
    ReadFiles,
    clean_source,
    match_inputs,
    plan_files,
)
from quarry.schemas.config import ConfigError
from quarry.schemas.decontam import DecontamConfig

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


def read(pipeline, cfg: DecontamConfig, plan: DecontamPlan):
    read = pipeline | ReadFiles(plan.files, ReadRowProbes(clean_source(cfg.source or "unknown"), cfg.input.max_image_bytes),
                              ReadRowProbes.REJECTED)
    return read.main, read[ReadRowProbes.REJECTED]


def transform(refs, cfg: DecontamConfig, plan: DecontamPlan, output: str) -> FamilyOutputs:
    out = refs | "Decontam" >> Decontaminate(cfg.decontam, lambda r: r.probe, output, dag="decontam",
                                             files=plan.bench, flag_fn=flag_ref, shards=cfg.shards)
    return FamilyOutputs(out.kept, out.rejected)


def write(kept, cfg: DecontamConfig, plan: DecontamPlan, output: str):
    """Kept rows are written from a second read of their input file, in input order."""
    return kept | "Write" >> WriteKept(plan.files, cfg, output)


def describe(cfg: DecontamConfig, plan: DecontamPlan) -> BuildInfo:
    d = cfg.decontam
    info = BuildInfo(extra={"benchmark_files": len(plan.bench),
                            "benchmarks": sorted({b.benchmark for b in plan.bench}),
                            "ngram": d.ngram, "max_hamming": d.max_hamming, "action": d.action})
    if d.action == "flag":
        info.notes.append("decontam.action=flag: contaminated rows are kept with contaminated=true")
    return info


# What this DAG's reader can reject a record for (operators/inputs/reasons.py).
READ_REASONS = (reasons.UNREADABLE_FILE, reasons.INVALID_JSON, reasons.RECORD_TOO_LARGE)


SPEC = DagSpec(
    name="decontam",
    summary="contamination check against benchmark sets: normalised text 13-grams, image pHash + exact hash",
    stages=with_reasons((
        Stage("read", "quarry shards (DIR/data/**/*.parquet) or any Parquet/JSONL; image pHashes computed while reading", where="operators/inputs/tables.py, pipelines/decontam.py"),
        Stage("index", "benchmark Parquet/JSONL -> text n-gram hashes, short-question hashes, image pHashes + digests "
                       "(one Beam combine; a side input loaded once per worker)", where="operators/decontam.py, pipelines/decontam.py"),
        Stage("decontam", "n-gram / exact text and pHash / exact image lookups; drop to rejects or flag", where="operators/decontam.py, pipelines/decontam.py"),
        Stage("write", "the input rows minus the contaminated (or flagged), the input's schema, one shard per input "
                       "file and partition; DIR/contamination/ one row per match", where="pipelines/decontam.py"),
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
