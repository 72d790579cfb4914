"""A DAG run's progress lines carry the planned total of input files, summed over its worker processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from quarry.dags.demos import documents as demo


def test_a_multi_process_run_prints_its_file_total(tmp_path):
    d = demo.build(tmp_path / "in")
    files = len(list((tmp_path / "in").glob("*.pdf")))
    argv = [sys.executable, "-m", "quarry.dags.cli", "run", "documents", "--input", *d.patterns,
            "--output", str(tmp_path / "out"), "--source", "demo", *[a for s in d.sets for a in ("--set", s)],
            "--workers", "2"]
    env = {**os.environ, "QUARRY_PROGRESS": "1", "QUARRY_PROGRESS_EVERY": "0"}  # a line at every tick
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[quarry, ")]
    assert lines, proc.stderr[-2000:]
    reads = [re.search(rf"read (\d+)/{files} files \((\d+)%\), [\d.]+/s(, ETA \d+\S*|, done)?", ln) for ln in lines]
    reads = [m for m in reads if m]
    assert reads, lines[-5:]
    assert max(int(m.group(1)) for m in reads) <= files
    assert any("ETA" in (m.group(3) or "") for m in reads) or any(m.group(3) == ", done" for m in reads)
    assert any(re.search(r"\| open \d+, [\d.]+/s", ln) for ln in lines)  # a stage without a total: count and rate
    assert not (tmp_path / "out" / ".quarry" / "progress").exists()  # the shared folder goes with the run
