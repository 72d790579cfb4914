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


class _Progress:
    """Per-process element counts and rates (since the stage's first element here), printed to stderr at most
    every `every` seconds."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self.counts: dict[str, int] = defaultdict(int)
        self.first: dict[str, float] = {}  # when each stage saw its first element here, for its rate
        self.last = time.monotonic()
        self.lock = threading.Lock()
        self.enabled = os.environ.get("QUARRY_PROGRESS", "1") != "0"

    def tick(self, stage: str) -> None:
        with self.lock:
            self.counts[stage] += 1
            now = time.monotonic()
            self.first.setdefault(stage, now)
            if not self.enabled or now - self.last < self.every:
                return
            self.last = now
            line = "  ".join(f"{k}={v} ({v / max(now - self.first[k], 1e-3):.1f}/s)" for k, v in self.counts.items())
        print(f"[quarry pid {os.getpid()}] {line}", file=sys.stderr, flush=True)


_PROGRESS = _Progress()


def tick(stage: str, element: Any) -> Any:
    """Identity step that counts elements through `stage` (progress and Beam metrics)."""
    _PROGRESS.tick(stage)
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
