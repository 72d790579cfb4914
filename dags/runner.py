"""What every DAG shares: validate, build a Beam pipeline on one skeleton, run it, write the manifest.

A DAG module provides a `DagSpec`: its config model, its stages, how to plan
its inputs (failing early on what cannot be read at all), how to read them,
its family transform, and what its manifest says beyond the counts. The
skeleton (`build_dag`) is the same for every DAG:

    read -> count `read` -> family transform -> [decontam on the rows] -> write rows (+ shared images)
    read rejects + family rejects + decontam rejects + write rejects -> DIR/rejects

Everything here is runner-agnostic: counts come from files the pipeline
wrote, not from a runner's metrics API.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from pydantic import BaseModel

from quarry.pipelines.spill import bound_heap_arenas, clear_spill, is_direct_run
from quarry.pipelines.stats import CountTo, declared_totals, end_progress, read_counts, start_progress
from quarry.pipelines.write import (
    STATE_DIR,
    WRITE_REJECTS,
    WRITE_ROWS,
    WriteImages,
    WriteRejects,
    WriteShards,
    committed_files,
    count_rows,
    read_markers,
    write_json_atomic,
    written_files,
)
from quarry.schemas.config import ConfigError, DagConfig, resolve
from quarry.schemas.manifest import Manifest, StageCount

# Output entries a run owns; --overwrite removes exactly these.
INCOMPLETE = "_INCOMPLETE"  # present from the start of a run until its manifest is written (last, atomically)
RUN_ENTRIES = ("data", "rejects", "images", "contamination", "_stats", "manifest.json", "README.md", STATE_DIR,
               INCOMPLETE)
# What a resumed run recomputes: everything but the committed data files (and their markers).
RESUME_CLEARS = ("rejects", "images", "contamination", "_stats", "manifest.json", "README.md")
# The tables of a run directory as Hugging Face dataset configs (the card's `configs:`), first = default.
CARD_TABLES = (("data", "data/**/*.parquet"), ("rejects", "rejects/*.parquet"), ("images", "images/*.parquet"),
               ("contamination", "contamination/*.parquet"))
VERSIONED = ("quarry", "apache-beam", "pyarrow", "duckdb", "pydantic", "pillow", "imagehash",
             "numpy", "torch", "open_clip_torch", "pyahocorasick")


class UsageError(ValueError):
    """A problem with what the user asked for, reported as one line before anything runs."""


class DataLossError(RuntimeError):
    """The files hold fewer (or more) rows than the pipeline handed to the writers; the manifest says how many."""


@dataclass
class BuildInfo:
    """What `build` tells the runner beyond the pipeline it wired."""

    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One step a DAG names in `quarry list` and in its rejects' `stage` column."""

    name: str
    what: str
    where: str = ""  # the files that implement it, from the repo root
    reasons: tuple[str, ...] = ()  # the reject reason codes it can give (its operators' REASONS)
    rejects_as: str = ""  # the `stage` its reject rows carry, where that is not `name`

    @property
    def reject_stage(self) -> str:
        return self.rejects_as or self.name


def with_reasons(stages: tuple[Stage, ...], reasons: dict[str, tuple[str, ...]]) -> tuple[Stage, ...]:
    """`stages` with the reject reasons a family declares per stage (its pipelines module's STAGE_REASONS)."""
    return tuple(replace(s, reasons=tuple(reasons.get(s.name, s.reasons))) for s in stages)


class FamilyOutputs(NamedTuple):
    """What a family transform hands back to the skeleton."""

    rows: Any  # PCollection of output rows (the DAG's row model), or what its own `write` takes
    rejected: Any  # PCollection[Reject]
    images: Any = None  # PCollection[ImageRecord] for DIR/images, where rows share images


@dataclass(frozen=True)
class DagSpec:
    name: str
    summary: str
    stages: tuple[Stage, ...]  # in order
    config_model: type[DagConfig]
    plan: Callable[[list[str], Any], Any]  # (patterns, cfg) -> plan; raises InputError / ConfigError
    read: Callable[[Any, Any, Any], tuple[Any, Any]]  # (pipeline, cfg, plan) -> (records, read rejects)
    transform: Callable[[Any, Any, Any, str], FamilyOutputs]  # (records, cfg, plan, output)
    describe: Callable[[Any, Any], BuildInfo]  # (cfg, plan) -> the manifest's extra facts and notes
    row_model: Optional[type] = None  # rows written by WriteShards with this schema ...
    write: Optional[Callable[[Any, Any, Any, str], Any]] = None  # ... or by this: (rows, cfg, plan, output) -> rejects
    decontam_fields: Any = None  # a FieldProbe: the skeleton checks rows against benchmarks before writing
    unsourced: str = "records without a `source` field"  # for the "no --source given" note
    one_to_one: bool = True
    input_count: str = "read"  # the _stats counter whose sum with read rejects is `inputs`
    finish: Optional[Callable[[str, Any, BuildInfo, "RunCounts"], None]] = None  # after the run: facts into `info`
    # Non-empty where `--resume` works: what a resumed run does again. Such a DAG's writer commits each input's
    # files with a completion marker (pipelines/write.py: commit_input) and keeps the committed ones.
    resumable: str = ""
    input_files: Optional[Callable[[Any], list[str]]] = None  # plan -> the input paths (part of the run's fingerprint)


def build_dag(spec: DagSpec, pipeline: beam.Pipeline, cfg: DagConfig, plan: Any, output: str) -> BuildInfo:
    """Wire one DAG on the shared skeleton; returns what its manifest says beyond the counts."""
    records, read_rejected = spec.read(pipeline, cfg, plan)
    records | "CountRead" >> CountTo(output, "read")
    out = spec.transform(records, cfg, plan, output)
    rows, rejects = out.rows, [read_rejected, out.rejected]
    if spec.decontam_fields is not None:
        from quarry.pipelines.decontam import MaybeDecontaminate, pixel_limit  # only DAGs that check rows pay for it

        rows, dc_rejected = rows | "Decontam" >> MaybeDecontaminate(
            cfg.decontam, output, spec.decontam_fields, dag=spec.name, shards=cfg.shards, max_pixels=pixel_limit(cfg))
        rejects.append(dc_rejected)
    if spec.write is not None:
        write_rejected = spec.write(rows, cfg, plan, output)
        if write_rejected is not None:
            rejects.append(write_rejected)
    else:
        rows | "Write" >> WriteShards(output, spec.name, spec.row_model, cfg.shards)
    if out.images is not None:
        out.images | "WriteImages" >> WriteImages(output, cfg.shards)
    tuple(rejects) | "AllRejects" >> beam.Flatten() | "WriteRejects" >> WriteRejects(output, cfg.shards)
    info = spec.describe(cfg, plan)
    if not cfg.source:
        info.notes.insert(0, f"no --source given: {spec.unsourced} are tagged source=unknown")
    return info


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _exists(path: str) -> bool:
    return FileSystems.exists(path)


LOCK_FILE = ".quarry.lock"


@contextlib.contextmanager
def output_lock(output: str) -> Iterator[None]:
    """Hold `DIR/.quarry.lock` for one run: a second run into the same local directory stops with one line
    instead of interleaving its files with this one's and ending in "manifest does not add up". An flock,
    so a killed run leaves no stale lock. Object-store outputs (gs://, s3://) have no such lock."""
    if "://" in output:
        yield
        return
    import fcntl

    _check_local_dir(output)
    Path(output).mkdir(parents=True, exist_ok=True)
    path = Path(output) / LOCK_FILE
    with open(path, "a+") as fh:  # closing releases the flock
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise UsageError(f"output {output} is in use by another run ({fh.read().strip() or 'unknown'}); "
                             "wait for it or choose another --output") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {platform.node()} since {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}")
        fh.flush()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def _check_local_dir(output: str) -> None:
    """A file where a folder must be: one line now, not Beam's NotADirectoryError mid-run."""
    if "://" not in output:
        at = Path(output).absolute()
        while not at.exists() and at != at.parent:
            at = at.parent
        if not at.is_dir():
            where = "" if at == Path(output).absolute() else f": {at}"
            raise UsageError(f"output {output}{where} is not a directory")


def prepare_output(output: str, overwrite: bool, resumable: bool = False) -> None:
    """Refuse to mix two runs in one directory, or a local output under an existing file; with overwrite,
    clear the old run's entries."""
    _check_local_dir(output)
    present = [e for e in RUN_ENTRIES if _exists(FileSystems.join(output, e))]
    if present and not overwrite:
        what = "an unfinished run" if INCOMPLETE in present else "a run"
        also = ", or --resume to finish it" if resumable and INCOMPLETE in present else ""
        raise UsageError(f"output {output} already holds {what} ({', '.join(present)}); "
                         f"pass --overwrite to replace it{also}")
    if present:  # Beam's local filesystem deletes folders recursively, like the object stores do
        FileSystems.delete([FileSystems.join(output, e) for e in present])


def reject_counts(output: str) -> dict[str, dict[str, int]]:
    """stage -> reason -> count over DIR/rejects, reading only two columns."""
    out: dict[str, dict[str, int]] = {}
    for path in written_files(FileSystems.join(output, "rejects")):
        with FileSystems.open(path, compression_type="uncompressed") as fh:
            table = pq.read_table(fh, columns=["stage", "reason"])
        if table.num_rows == 0:
            continue
        grouped = table.group_by(["stage", "reason"]).aggregate([([], "count_all")])
        for stage, reason, n in zip(grouped["stage"].to_pylist(), grouped["reason"].to_pylist(),
                                    grouped["count_all"].to_pylist()):
            out.setdefault(stage, {})
            out[stage][reason] = out[stage].get(reason, 0) + n
    return out


@dataclass(frozen=True)
class RunCounts:
    """What a finished run counted, read once from its files: `_stats` counts and rejects by stage and reason."""

    counts: dict[str, int]  # _stats/<name>.json
    rejected: dict[str, dict[str, int]]  # stage -> reason -> rows in DIR/rejects

    @classmethod
    def read(cls, output: str) -> "RunCounts":
        return cls(read_counts(output), reject_counts(output))

    @property
    def rejected_total(self) -> int:
        return sum(n for reasons in self.rejected.values() for n in reasons.values())

    def inputs(self, input_count: str = "read") -> int:
        """Records read (the `input_count` counter) plus the inputs the readers rejected."""
        return self.counts.get(input_count, 0) + sum(self.rejected.get("read", {}).values())


def _partition_of(path: str, table_dir: str) -> str:
    rel = path[len(table_dir):].strip("/")
    return "/".join(p for p in rel.split("/")[:-1])


def add_contamination_summary(output: str, info: BuildInfo) -> None:
    """A run with a decontam stage: matches per benchmark, source and kind, plus the index's stats,
    into the manifest's `extra["contamination"]`; unreadable benchmark images as a note."""
    from quarry.pipelines.decontam import contamination_summary  # only runs with the stage pay for it

    summary = contamination_summary(output)
    if summary is None:
        return
    info.extra["contamination"] = summary
    index = summary["index"]
    if index.get("images_unreadable") or index.get("rows_unreadable"):
        info.notes.append(
            f"decontam: {index.get('images_unreadable', 0)} benchmark image(s) and {index.get('rows_unreadable', 0)} "
            "benchmark row(s) could not be read and were not indexed (examples in extra.contamination.index)")


def build_manifest(spec: DagSpec, cfg: DagConfig, patterns: list[str], output: str, runner: str,
                   started: float, started_at: str, info: BuildInfo, run: Optional[RunCounts] = None) -> Manifest:
    data_dir = FileSystems.join(output, "data")
    rows = count_rows(written_files(data_dir))
    by_partition: dict[str, int] = {}
    for path, n in rows.items():
        key = _partition_of(path, data_dir)
        by_partition[key] = by_partition.get(key, 0) + n
    run = run or RunCounts.read(output)
    counts, rejected, rejected_total, inputs = run.counts, run.rejected, run.rejected_total, run.inputs(spec.input_count)
    kept = sum(rows.values())
    stages = {
        name[: -len(".in")]: StageCount(inputs=n, outputs=counts.get(name[: -len(".in")] + ".out", 0))
        for name, n in counts.items() if name.endswith(".in")
    }
    notes = list(info.notes) + written_mismatches(counts, kept, rejected_total)
    return Manifest(
        dag=spec.name,
        run_id=f"{started_at.replace(':', '').replace('-', '')[:15]}-{uuid.uuid4().hex[:8]}",
        started_at=started_at,
        wall_time_s=round(time.monotonic() - started, 3),
        runner=runner,
        input_patterns=patterns,
        config=cfg.model_dump(mode="json"),
        versions=package_versions(),
        inputs=inputs,
        kept=kept,
        rejected=rejected,
        rejected_total=rejected_total,
        one_to_one=spec.one_to_one,
        balanced=(inputs == kept + rejected_total) if spec.one_to_one else None,
        rows_by_partition=dict(sorted(by_partition.items())),
        stages=stages,
        notes=notes,
        extra=info.extra,
    )


LOSS_NOTE = "rows lost or duplicated on the way to the files"


def written_mismatches(counts: dict[str, int], kept: int, rejected_total: int) -> list[str]:
    """Notes for every table whose files do not hold exactly the rows its writer was handed."""
    notes = []
    for name, found in ((WRITE_ROWS, kept), (WRITE_REJECTS, rejected_total)):
        sent = counts.get(name)
        if sent is not None and sent != found:
            notes.append(f"{LOSS_NOTE}: {sent} {name.split('.')[1]} handed to the writer, {found} in the files")
    return notes


def write_manifest(output: str, manifest: Manifest) -> str:
    """`DIR/manifest.json`, written under a temporary name and renamed: a reader sees a whole manifest or none."""
    path = FileSystems.join(output, "manifest.json")
    tmp = path + ".inprogress"
    with FileSystems.create(tmp) as fh:
        fh.write(json.dumps(manifest.model_dump(mode="json"), indent=2).encode())
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
    return path


def write_dataset_card(output: str, manifest: Manifest) -> str:
    """`DIR/README.md`: a dataset card whose `configs:` name each table, so `datasets.load_dataset(DIR)` loads
    the data (not data, rejects and manifest mixed) and `load_dataset(DIR, "rejects")` the rejects."""
    import yaml

    configs = []
    for name, pattern in CARD_TABLES:
        if FileSystems.match([FileSystems.join(output, pattern)])[0].metadata_list:
            configs.append({"config_name": name, "data_files": [{"split": "train", "path": pattern}],
                            **({"default": True} if not configs else {})})
    front = yaml.safe_dump({"configs": configs, "tags": ["quarry", manifest.dag]}, sort_keys=False, allow_unicode=True)
    rejected = ", ".join(f"{stage}/{reason} {n}" for stage, reasons in sorted(manifest.rejected.items())
                         for reason, n in sorted(reasons.items())) or "none"
    body = (f"# quarry `{manifest.dag}` run {manifest.run_id}\n\n"
            f"{manifest.kept} rows in `data/` (Hive folders `source=<s>/tier=<t>`), {manifest.rejected_total} "
            f"rejects in `rejects/` ({rejected}); `manifest.json` has the counts, config and versions.\n\n"
            "```python\nimport datasets\nrows = datasets.load_dataset(RUN_DIR, split=\"train\")\n"
            "rejects = datasets.load_dataset(RUN_DIR, \"rejects\", split=\"train\")\n```\n")
    path = FileSystems.join(output, "README.md")
    with FileSystems.create(path) as fh:
        fh.write(f"---\n{front}---\n\n{body}".encode())
    return path


def resolve_config(spec: DagSpec, config_path: Optional[str], sets: list[str], source: Optional[str]) -> DagConfig:
    return resolve(spec.config_model, config_path, sets, source)


RUN_STATE = "run.json"  # DIR/.quarry/run.json: the fingerprint a resumed run must match
PROGRESS_DIR = "progress"  # DIR/.quarry/progress/<token>/: each process's counts while a local run goes (stats.py)


def run_fingerprint(spec: DagSpec, cfg: DagConfig, patterns: list[str], plan: Any) -> str:
    """A hash of what decides a run's files: the DAG, its config and its inputs."""
    import hashlib

    inputs = spec.input_files(plan) if spec.input_files is not None else list(patterns)
    facts = {"dag": spec.name, "config": cfg.model_dump(mode="json"), "inputs": inputs}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _state_path(output: str) -> str:
    return FileSystems.join(output, STATE_DIR, RUN_STATE)


def _read_json(path: str) -> Optional[dict[str, Any]]:
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path, compression_type="uncompressed") as fh:
        return json.loads(fh.read())


class Resumed(NamedTuple):
    """What `_prepare_resume` found: a finished run's manifest (nothing to do), or None (run what is missing)."""

    manifest: Optional[Manifest]


def _prepare_resume(spec: DagSpec, output: str, fingerprint: str) -> Resumed:
    """Check that `output` holds this run (same fingerprint), then clear everything but its committed files."""
    present = [e for e in RUN_ENTRIES if _exists(FileSystems.join(output, e))]
    state = _read_json(_state_path(output))
    if state is None:
        if present:
            raise UsageError(f"--resume: {output} holds a run without resume state ({', '.join(present)}); "
                             "pass --overwrite to replace it")
        return Resumed(None)  # nothing there yet: a fresh run
    if state.get("fingerprint") != fingerprint:
        raise UsageError(f"--resume: {output} was made by a different DAG, config or inputs (fingerprint "
                         f"{state.get('fingerprint')}, this run {fingerprint}); pass --overwrite or choose another --output")
    manifest_path = FileSystems.join(output, "manifest.json")
    if not _exists(FileSystems.join(output, INCOMPLETE)) and _exists(manifest_path):
        return Resumed(Manifest.model_validate(_read_json(manifest_path)))
    keep = committed_files(output, read_markers(output))
    stale = [p for p in _all_files(FileSystems.join(output, "data")) if p not in keep]
    stale += [FileSystems.join(output, e) for e in RESUME_CLEARS if _exists(FileSystems.join(output, e))]
    if stale:
        FileSystems.delete(stale)
    return Resumed(None)


def _all_files(table_dir: str) -> list[str]:
    from apache_beam.io.filesystem import BeamIOError

    try:
        return sorted(m.path for m in FileSystems.match([FileSystems.join(table_dir, "**")])[0].metadata_list)
    except BeamIOError:
        return []


def _start_run(output: str, fingerprint: str) -> None:
    """Say the directory is incomplete until the manifest is written, and what a resumed run must match."""
    with FileSystems.create(FileSystems.join(output, INCOMPLETE)) as fh:
        fh.write(b"a run is writing here, or was killed; manifest.json is written last\n")
    write_json_atomic(_state_path(output), {"fingerprint": fingerprint})
    clear_spill(output)  # what a killed run left waiting on disk


@contextlib.contextmanager
def exit_on_interrupt(output: str, resumable: bool) -> Iterator[None]:
    """Ctrl-C (SIGINT) stops a run at once with one line and exit code 130: the directory stays marked
    incomplete, the lock goes with the process. Beam's DirectRunner threads would otherwise keep the run
    going. Only in the main thread (where signal handlers can be set)."""
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        then = "--resume continues it" if resumable else "rerun with --overwrite"
        sys.stderr.write(f"quarry: interrupted: {output} is incomplete ({INCOMPLETE}); {then}\n")
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            Path(output, LOCK_FILE).unlink()
        os._exit(130)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# Runners whose workers run on other machines: a local path there names nothing (or the wrong thing).
REMOTE_RUNNERS = ("dataflowrunner", "dataflow")


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def side_files(cfg: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, path) of every config field marked as a file the workers read (`schemas.config.SIDE_FILE`):
    every reader opens them through Beam's FileSystems (a remote kb.store_path is fetched to each machine once)."""
    for name, info in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        if (info.json_schema_extra or {}).get("side_file"):
            for path in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
                yield f"{prefix}{name}", path
        elif isinstance(value, BaseModel):
            yield from side_files(value, f"{prefix}{name}.")


def check_runner_paths(beam_args: Optional[list[str]], patterns: list[str], output: str,
                       cfg: Optional[DagConfig] = None) -> None:
    """A remote runner with a local input, output or side-file path (`side_files`) fails here, in one line,
    before anything is submitted.

    The portable runners (Flink, Spark, PortableRunner) are left alone: their workers may share a filesystem."""
    runner = PipelineOptions(beam_args or []).view_as(StandardOptions).runner or ""
    if runner.lower() not in REMOTE_RUNNERS:
        return
    local = [p for p in [*patterns, output] if _is_local(p)]
    if local:
        raise UsageError(f"--runner={runner}: its workers cannot read local paths ({', '.join(local)}); "
                         "pass gs:// (or another remote filesystem) for every --input and --output")
    side = [f"{key}={path}" for key, path in (side_files(cfg) if cfg is not None else ()) if _is_local(path)]
    if side:
        raise UsageError(f"--runner={runner}: its workers cannot read local side files ({', '.join(side)}); "
                         "put them on gs:// (or another remote filesystem)")


def run_dag(spec: DagSpec, patterns: list[str], output: str, cfg: DagConfig, *, overwrite: bool = False,
            beam_args: Optional[list[str]] = None, resume: bool = False, interruptible: bool = False) -> Manifest:
    """Validate everything that can fail early, then run the pipeline and write the manifest.

    `resume`: finish a killed run in `output` (same DAG, config and inputs), keeping the inputs it committed;
    a finished run is returned as it is. `interruptible`: Ctrl-C exits the process with code 130 (the CLI)."""
    if not patterns:
        raise UsageError("no --input given")
    if resume and overwrite:
        raise UsageError("--resume keeps a run and --overwrite replaces it: pass one of them")
    check_runner_paths(beam_args, patterns, output, cfg)
    if resume and not spec.resumable:
        raise UsageError(f"--resume: the {spec.name} DAG cannot resume (its shards are written only once every "
                         "input is done, so a killed run committed nothing); rerun with --overwrite")
    if cfg.decontam.enabled:  # a benchmark file without usable columns stops the run here
        from quarry.pipelines.decontam import plan_benchmarks

        plan_benchmarks(cfg.decontam)
    plan = spec.plan(patterns, cfg)  # InputError (a UsageError cousin) before anything is written
    fingerprint = run_fingerprint(spec, cfg, patterns, plan)
    with output_lock(output):
        if resume:
            done = _prepare_resume(spec, output, fingerprint)
            if done.manifest is not None:
                done.manifest.notes.append(f"--resume: the run in {output} was already complete; nothing was done")
                return done.manifest
        else:
            prepare_output(output, overwrite, bool(spec.resumable))
        _start_run(output, fingerprint)
        with exit_on_interrupt(output, bool(spec.resumable)) if interruptible else contextlib.nullcontext():
            return _run_locked(spec, patterns, output, cfg, plan, beam_args)


def plan_only(spec: DagSpec, patterns: list[str], output: str, cfg: DagConfig, graph_path: str,
              beam_args: Optional[list[str]] = None) -> tuple[int, int]:
    """Build the job graph and save it (Beam's runner-API Pipeline proto, binary) to `graph_path`; nothing runs
    and nothing is written to `output`. Returns (transforms, transforms with resource hints)."""
    if not patterns:
        raise UsageError("no --input given")
    check_runner_paths(beam_args, patterns, output, cfg)
    plan = spec.plan(patterns, cfg)
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args or []))
    build_dag(spec, pipeline, cfg, plan, output)
    proto = pipeline.to_runner_api()
    with FileSystems.create(graph_path) as fh:
        fh.write(proto.SerializeToString())
    envs = proto.components.environments
    hinted = sum(1 for t in proto.components.transforms.values()
                 if t.environment_id and envs[t.environment_id].resource_hints)
    return len(proto.components.transforms), hinted


def _run_locked(spec: DagSpec, patterns: list[str], output: str, cfg: DagConfig, plan: Any,
                beam_args: Optional[list[str]]) -> Manifest:
    options = PipelineOptions(beam_args or [])
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    started, started_at = time.monotonic(), _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    pipeline = beam.Pipeline(options=options)
    declared_totals(reset=True)  # the readers declare their files (and Parquet rows) as they are wired
    info = build_dag(spec, pipeline, cfg, plan, output)
    progress = FileSystems.join(output, STATE_DIR, PROGRESS_DIR)
    if is_direct_run(pipeline):  # runner and workers on this machine: keep freed buffers from staying resident
        bound_heap_arenas()
        start_progress(progress)  # progress lines summed over the processes, with totals and ETA
    try:
        pipeline.run().wait_until_finish()
    finally:
        clear_spill(output)
        end_progress(progress)
    run = RunCounts.read(output)
    if spec.finish is not None:
        spec.finish(output, cfg, info, run)
    add_contamination_summary(output, info)
    manifest = build_manifest(spec, cfg, patterns, output, runner, started, started_at, info, run)
    if manifest.inputs == 0:
        manifest.notes.append("the inputs held no records: nothing was read")
    write_dataset_card(output, manifest)
    write_manifest(output, manifest)  # last: a directory with a manifest and no _INCOMPLETE is a finished run
    FileSystems.delete([FileSystems.join(output, INCOMPLETE)])
    lost = [n for n in manifest.notes if n.startswith(LOSS_NOTE)]
    if lost:
        raise DataLossError(f"{'; '.join(lost)} (see {FileSystems.join(output, 'manifest.json')})")
    return manifest


__all__ = ["BuildInfo", "ConfigError", "DagSpec", "DataLossError", "FamilyOutputs", "RunCounts", "Stage", "UsageError",
           "build_dag", "build_manifest", "check_runner_paths", "exit_on_interrupt", "plan_only", "resolve_config", "run_dag", "run_fingerprint",
           "with_reasons", "write_dataset_card"]
