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


class Watched(NamedTuple):
    elapsed_s: float
    peak_rss: int
    returncode: int
    output: str  # stdout and stderr together


def run_watched(cmd: list[str], interval_s: float = 0.1) -> Watched:
    """Run `cmd` (QUARRY_PROGRESS=0) to the end, sampling its process tree's RSS every `interval_s`."""
    peak = 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "QUARRY_PROGRESS": "0"})
    watched = psutil.Process(proc.pid)
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(watched))
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    done.set()
    sampler.join()
    return Watched(time.perf_counter() - t0, peak, proc.returncode, output)
