"""Counts that end up in the manifest, and progress lines for long local runs.

Counts are written by the pipeline itself as small JSON files under
`DIR/_stats/` (one per counted PCollection), so the manifest adds up on every
runner, including those whose metrics API is partial.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import defaultdict
from typing import Any, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems


def write_stats(output_dir: str, name: str, payload: dict[str, Any]) -> None:
    """`DIR/_stats/<name>.json`: the one writer of stats files (counts, summaries, index facts)."""
    with FileSystems.create(stats_path(output_dir, name)) as fh:
        fh.write(json.dumps(payload, sort_keys=True).encode())


def stats_path(output_dir: str, name: str) -> str:
    return FileSystems.join(output_dir, "_stats", f"{name}.json")


class CountTo(beam.PTransform):
    """Count a PCollection (or, with `sum_values`, sum its ints) into `DIR/_stats/<name>.json` as
    `{"name": ..., "count": n}`."""

    def __init__(self, output_dir: str, name: str, sum_values: bool = False):
        super().__init__()
        self.output_dir = output_dir
        self.name = name
        self.sum_values = sum_values

    def expand(self, pcoll):
        output_dir, name = self.output_dir, self.name
        total = (pcoll | "Sum" >> beam.CombineGlobally(sum)) if self.sum_values else (
            pcoll | "Count" >> beam.combiners.Count.Globally())
        return total | "WriteCount" >> beam.Map(lambda n: write_stats(output_dir, name, {"name": name, "count": n}))


def read_stats(output_dir: str, name: str) -> Optional[dict[str, Any]]:
    """The payload of `DIR/_stats/<name>.json`, or None when the run wrote none."""
    path = stats_path(output_dir, name)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path, compression_type="uncompressed") as fh:
        return json.loads(fh.read())


def read_counts(output_dir: str) -> dict[str, int]:
    """The counts a run wrote, by name."""
    pattern = FileSystems.join(output_dir, "_stats", "*.json")
    out: dict[str, int] = {}
    for m in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(m.path, compression_type="uncompressed") as fh:
            payload = json.loads(fh.read())
        out[payload["name"]] = int(payload["count"])
    return out


def format_count(n: int) -> str:
    return f"{n:,}"


def format_duration(seconds: float) -> str:
    """An ETA as people read it: `45s`, `1m32s`, `2h05m`, `3d04h`."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def eta_seconds(done: int, total: int, elapsed: float) -> Optional[float]:
    """Seconds left at the rate so far (`done` in `elapsed` seconds); None before there is a rate, 0 when done."""
    if done >= total:
        return 0.0
    if done <= 0 or elapsed <= 0:
        return None
    return (total - done) * elapsed / done


def progress_part(stage: str, done: int, elapsed: float, total: Optional[int] = None, unit: str = "") -> str:
    """One stage's part of a progress line: `read 1,234/5,000 files (25%), 41.2/s, ETA 1m32s` where the total is
    known, else `decode 1,234, 41.2/s`."""
    rate = f"{done / max(elapsed, 1e-3):.1f}/s"
    if not total:
        return f"{stage} {format_count(done)}{' ' + unit if unit else ''}, {rate}"
    eta = eta_seconds(done, total, elapsed)
    pct = min(100, int(100 * done / total))
    tail = "" if eta is None else (", done" if done >= total else f", ETA {format_duration(eta)}")
    return f"{stage} {format_count(done)}/{format_count(total)}{' ' + unit if unit else ''} ({pct}%), {rate}{tail}"


# Progress across processes: a local run's runner names a folder (`DIR/.quarry/progress/<token>/`) in this
# environment variable, which the DirectRunner's SDK processes inherit. Each process writes its counts there
# (`<pid>.json`, at most every SHARE_EVERY seconds), and whichever process's turn it is prints the sum, with the
# totals the driver declared (`totals.json`). Bounded: one small file per process, removed when the run ends.
# Without it (remote runners, plain Beam tests) each process prints its own counts, without totals.
PROGRESS_DIR_ENV = "QUARRY_PROGRESS_DIR"
EVERY_ENV = "QUARRY_PROGRESS_EVERY"  # seconds between progress lines (default 10)
SHARE_EVERY = 1.0
TOTALS_FILE = "totals.json"
_TOTALS: dict[str, tuple[Optional[int], str]] = {}  # stage -> (total or None: unknown, unit); set while building


def declare_total(stage: str, n: Optional[int], unit: str = "") -> None:
    """At build time (driver): `stage` will tick `n` more times in this run (None: not known cheaply)."""
    old = _TOTALS.get(stage)
    total = None if n is None or (old is not None and old[0] is None) else n + (old[0] if old else 0)
    _TOTALS[stage] = (total, unit or (old[1] if old else ""))


def declared_totals(reset: bool = False) -> dict[str, tuple[Optional[int], str]]:
    out = dict(_TOTALS)
    if reset:
        _TOTALS.clear()
    return out


def parquet_row_total(paths: list[str], limit: int = 2000) -> Optional[int]:
    """Rows in local Parquet files from their footers (no data read); None for remote paths or over `limit` files."""
    import pyarrow.parquet as pq

    if len(paths) > limit or any("://" in p for p in paths):
        return None
    try:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    except (OSError, ValueError):  # the reader rejects what cannot be opened; the total is then unknown
        return None


def start_progress(folder: str) -> Optional[str]:
    """Runner, before a local run: a fresh progress folder under `folder` with this run's declared totals,
    named in the environment for this process and the SDK processes it starts. Returns it (None: remote)."""
    import uuid

    if "://" in folder:
        return None
    here = os.path.join(os.path.abspath(folder), uuid.uuid4().hex[:8])
    os.makedirs(here, exist_ok=True)
    totals = {k: list(v) for k, v in declared_totals().items() if v[0]}
    with open(os.path.join(here, TOTALS_FILE), "w") as fh:
        json.dump(totals, fh)
    os.environ[PROGRESS_DIR_ENV] = here
    return here


def end_progress(folder: str) -> None:
    import shutil

    os.environ.pop(PROGRESS_DIR_ENV, None)
    if "://" not in folder:
        shutil.rmtree(folder, ignore_errors=True)


def _write_atomic(path: str, payload: dict[str, Any]) -> None:
    tmp = f"{path}.{threading.get_ident()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


class _Progress:
    """Element counts and rates per stage (rate since the stage's first element), printed to stderr at most every
    `every` seconds: summed over the run's processes, with totals and ETA, where the runner set up a progress
    folder; this process's own counts otherwise."""

    def __init__(self, every: Optional[float] = None):
        self.every = float(os.environ.get(EVERY_ENV, "10")) if every is None else every
        self.counts: dict[str, int] = defaultdict(int)
        self.first: dict[str, float] = {}  # wall-clock time each stage saw its first element here, for its rate
        self.last = time.monotonic()
        self.shared_at = 0.0
        self.lock = threading.Lock()
        self.enabled = os.environ.get("QUARRY_PROGRESS", "1") != "0"
        self.folder: Optional[str] = None

    def tick(self, stage: str, n: int = 1) -> None:
        with self.lock:
            folder = os.environ.get(PROGRESS_DIR_ENV) or None
            if folder != self.folder:  # another run in this process: its own counts
                self.folder = folder
                self.counts.clear()
                self.first.clear()
            self.counts[stage] += n
            now, mono = time.time(), time.monotonic()
            self.first.setdefault(stage, now)
            if not self.enabled:
                return
            due = mono - self.last >= self.every
            share = folder is not None and (due or mono - self.shared_at >= min(SHARE_EVERY, self.every))
            if not (share or due):
                return
            if due:
                self.last = mono
            if share:
                self.shared_at = mono
            counts, first = dict(self.counts), dict(self.first)
        if folder is None:
            print(f"[quarry pid {os.getpid()}] " + "  ".join(
                progress_part(k, v, now - first[k]) for k, v in counts.items()), file=sys.stderr, flush=True)
            return
        try:
            _write_atomic(os.path.join(folder, f"{os.getpid()}.json"), {"counts": counts, "first": first})
            line = due and _shared_line(folder, now, self.every)
        except OSError:  # the run ended (its folder removed) while this process still ticked
            return
        if line:
            print(line, file=sys.stderr, flush=True)


def _take_turn(folder: str, now: float, every: float) -> bool:
    """Whether this process prints the next line: at most one line per `every` seconds over all processes."""
    import fcntl

    fd = os.open(os.path.join(folder, "printed"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        then = float(os.read(fd, 64) or 0)
        if now - then < every:
            return False
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, repr(now).encode())
        return True
    finally:
        os.close(fd)


def _shared_line(folder: str, now: float, every: float) -> Optional[str]:
    """The run's progress summed over the processes' files, or None when another process prints this turn."""
    if not _take_turn(folder, now, every):
        return None
    with open(os.path.join(folder, TOTALS_FILE)) as fh:
        totals = json.load(fh)
    counts: dict[str, int] = defaultdict(int)
    first: dict[str, float] = {}
    procs = 0
    for name in os.listdir(folder):
        if not name.endswith(".json") or name == TOTALS_FILE:
            continue
        try:
            with open(os.path.join(folder, name)) as fh:
                part = json.load(fh)
        except (OSError, ValueError):
            continue
        procs += 1
        for k, v in part["counts"].items():
            counts[k] += v
            first[k] = min(first.get(k, now), part["first"][k])
    return summary_line(counts, first, totals, now, procs)


def summary_line(counts: dict[str, int], first: dict[str, float], totals: dict[str, Any], now: float,
                 procs: int = 1) -> str:
    """`[quarry, 2 processes] read 3/6 files (50%), 0.5/s, ETA 6s | records 240, 40.0/s | ...`, stages in the
    order they started."""
    parts = [progress_part(k, counts[k], now - first[k], *(totals.get(k) or (None, "")))
             for k in sorted(counts, key=lambda k: first[k])]
    who = f"{procs} process{'es' if procs != 1 else ''}"
    return f"[quarry, {who}] " + " | ".join(parts)


_PROGRESS = _Progress()


def tick(stage: str, element: Any = None, n: int = 1) -> Any:
    """Identity step that counts elements through `stage` (progress and Beam metrics)."""
    _PROGRESS.tick(stage, n)
    return element


class Progress(beam.PTransform):
    """Count elements through a stage: a Beam metrics counter plus a progress line."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    def expand(self, pcoll):
        stage = self.stage
        counter = beam.metrics.Metrics.counter("progress", stage)

        def step(x):
            counter.inc()
            return tick(stage, x)

        return pcoll | beam.Map(step)
