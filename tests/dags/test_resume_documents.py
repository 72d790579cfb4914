"""The documents DAG resumes: a run killed after its 2nd committed group of PDFs resumes with --resume to the same
bytes as an uninterrupted run, without rewriting the committed shards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from quarry.dags.demos import documents as demo

from .test_resume import snapshot

# Two PDFs a shard instead of 16, so the demo's 11 PDFs make several committed groups (the driver sets the writer's
# group size; a DirectRunner run in one process).
CLI = ("import sys; import quarry.pipelines.documents as d; d.FILES_PER_SHARD = 2; "
       "from quarry.dags.cli import main; sys.exit(main())")


def quarry(inputs: Path, out: Path, *extra: str, env: dict | None = None):
    argv = [sys.executable, "-c", CLI, "run", "documents", "--input", str(inputs), "--output", str(out),
            "--source", "demo", "--set", f"documents.max_pages={demo.MAX_PAGES}", *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "QUARRY_PROGRESS": "0", **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pdfs")
    demo.build(folder)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    rc, _, stderr = quarry(inputs, out)
    assert rc == 0, stderr
    assert len(list((out / ".quarry" / "done").glob("*.json"))) >= 3  # paper+scan, table+truncated, long+not_a_pdf
    return out


def test_a_killed_documents_run_resumes_to_the_same_bytes(inputs, uninterrupted, tmp_path):
    out = tmp_path / "run"
    rc, _, _ = quarry(inputs, out, env={"QUARRY_TEST_FAULT": "kill:2"})  # SIGKILL right after the 2nd group
    assert rc == -signal.SIGKILL
    assert (out / "_INCOMPLETE").exists() and not (out / "manifest.json").exists()
    assert len(list((out / ".quarry" / "done").glob("*.json"))) == 2
    kept = {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*.parquet")}
    assert kept

    rc, _, stderr = quarry(inputs, out)
    assert rc == 2 and "unfinished run" in stderr and "--resume" in stderr

    rc, _, stderr = quarry(inputs, out, "--resume")
    assert rc == 0, stderr
    assert not (out / "_INCOMPLETE").exists()
    assert snapshot(out) == snapshot(uninterrupted)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # the committed shards were not rewritten
