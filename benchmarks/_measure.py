"""Shared by the benchmark scripts: run a command and watch the peak RSS of its whole process tree."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import NamedTuple

import psutil


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


class PeakRss:
    """Context manager: the peak `tree_rss` of a process (default: this one) sampled every `interval_s`, and
    the peaks of the process itself (`peak_parent`: a DirectRunner's runner) and of its largest descendant
    (`peak_child`: an SDK worker), to say which one grows."""

    def __init__(self, proc: "psutil.Process | None" = None, interval_s: float = 0.05):
        self.proc = proc or psutil.Process()
        self.interval_s = interval_s
        self.peak = self.peak_parent = self.peak_child = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                children = self.proc.children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            parent, sizes = _rss(self.proc), [_rss(c) for c in children]
            self.peak = max(self.peak, parent + sum(sizes))
            self.peak_parent = max(self.peak_parent, parent)
            self.peak_child = max(self.peak_child, max(sizes, default=0))
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class Watched(NamedTuple):
    elapsed_s: float
    peak_rss: int
    returncode: int
    output: str  # stdout and stderr together
    peak_parent: int = 0  # the command's own process (a DirectRunner's runner)
    peak_child: int = 0  # its largest descendant (an SDK worker)


def run_watched(cmd: list[str], interval_s: float = 0.1) -> Watched:
    """Run `cmd` (QUARRY_PROGRESS=0) to the end, sampling its process tree's RSS every `interval_s`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "QUARRY_PROGRESS": "0"})
    with PeakRss(psutil.Process(proc.pid), interval_s) as mem:
        output, _ = proc.communicate()
    return Watched(time.perf_counter() - t0, mem.peak, proc.returncode, output, mem.peak_parent, mem.peak_child)
