"""Resumable, safe runs: a killed caption run resumes to the same bytes as an uninterrupted one; a finished run
is left alone; a different config is refused; Ctrl-C stops a run with exit code 130 and an incomplete directory."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from quarry.dags.demos.caption import DEMO_SETS, build_caption_input

SETS = [*DEMO_SETS, "clip.enabled=false"]  # dedup and balance stay on: both are global stages
TIMING = ("run_id", "started_at", "wall_time_s")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The caption demo's records re-split into six small WebDataset shards (six inputs to commit)."""
    src, folder = tmp_path_factory.mktemp("demo"), tmp_path_factory.mktemp("inputs")
    build_caption_input(src)
    members = []
    for tar in sorted(src.glob("*.tar")):
        with tarfile.open(tar) as t:
            members += [(m, t.extractfile(m).read()) for m in t.getmembers() if m.isfile()]
    keys = sorted({m.name.split(".", 1)[0] for m, _ in members})
    for part in range(6):
        mine = set(keys[part::6])
        with tarfile.open(folder / f"part-{part}.tar", "w") as out:
            for m, data in members:
                if m.name.split(".", 1)[0] in mine:
                    out.addfile(m, io.BytesIO(data))
    return folder


def quarry(inputs: Path, out: Path, *extra: str, env: dict | None = None, wait: bool = True):
    argv = [sys.executable, "-m", "quarry.dags.cli", "run", "caption", "--input", str(inputs / "*.tar"),
            "--output", str(out), "--source", "demo", *[a for s in SETS for a in ("--set", s)], *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "QUARRY_PROGRESS": "0", **(env or {})})
    if not wait:
        return proc
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stdout, stderr


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file a reader sees (shards, rejects, card), the manifest without its timing fields."""
    out = {}
    for p in sorted(run.rglob("*")):
        rel = str(p.relative_to(run))
        if p.is_file() and not rel.startswith((".quarry", "_stats")) and rel not in ("manifest.json", "README.md"):
            out[rel] = p.read_bytes()
    manifest = json.loads((run / "manifest.json").read_text())
    out["manifest.json"] = json.dumps({k: v for k, v in manifest.items() if k not in TIMING}, sort_keys=True).encode()
    return out


@pytest.fixture(scope="module")
def uninterrupted(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    rc, stdout, stderr = quarry(inputs, out)
    assert rc == 0, stderr
    return out


def test_a_killed_run_resumes_to_the_same_bytes(inputs, uninterrupted, tmp_path):
    out = tmp_path / "run"
    rc, _, _ = quarry(inputs, out, env={"QUARRY_TEST_FAULT": "kill:3"})  # SIGKILL right after the 3rd input
    assert rc == -signal.SIGKILL
    assert (out / "_INCOMPLETE").exists() and not (out / "manifest.json").exists()  # says it is unfinished
    committed = sorted(p.name for p in (out / ".quarry" / "done").glob("*.json"))
    assert len(committed) == 3
    kept = {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*.parquet")}
    assert kept

    rc, _, stderr = quarry(inputs, out)  # without --resume: refused, and says how to go on
    assert rc == 2 and "unfinished run" in stderr and "--resume" in stderr

    rc, stdout, stderr = quarry(inputs, out, "--resume")
    assert rc == 0, stderr
    assert not (out / "_INCOMPLETE").exists()
    assert snapshot(out) == snapshot(uninterrupted)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # the committed shards were not rewritten


def test_resume_of_a_finished_run_does_nothing(inputs, uninterrupted, tmp_path):
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in uninterrupted.rglob("*") if p.is_file()}
    rc, stdout, stderr = quarry(inputs, uninterrupted, "--resume")
    assert rc == 0, stderr
    assert "already complete" in stdout
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in uninterrupted.rglob("*") if p.is_file()}
    assert after == before


def test_resume_with_another_config_is_refused(inputs, uninterrupted):
    rc, _, stderr = quarry(inputs, uninterrupted, "--resume", "--set", "balance.t=9")
    assert rc == 2
    lines = [ln for ln in stderr.splitlines() if not ln.startswith("WARNING:")]  # Beam's import-time warnings
    assert len(lines) == 1 and "different DAG, config or inputs" in lines[0]


def test_dags_without_per_input_commits_refuse_resume(tmp_path):
    from quarry.dags.registry import DAGS
    from quarry.dags.runner import UsageError, resolve_config, run_dag

    spec = DAGS["grade"]
    (tmp_path / "s.jsonl").write_text('{"sample_id": "a", "task": "exact", "question": "q", "answer": "y"}\n')
    with pytest.raises(UsageError, match="grade DAG cannot resume"):
        run_dag(spec, [str(tmp_path / "s.jsonl")], str(tmp_path / "out"), resolve_config(spec, None, [], None),
                resume=True)


def test_ctrl_c_stops_a_run_with_130(inputs, tmp_path):
    out = tmp_path / "run"
    proc = quarry(inputs, out, env={"QUARRY_TEST_FAULT": "pause:2"}, wait=False)  # holds still after 2 commits
    deadline = time.monotonic() + 120
    while len(list((out / ".quarry" / "done").glob("*.json"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.2)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - t0 < 10
    assert stderr.strip().splitlines()[-1].startswith("quarry: interrupted:") and "--resume" in stderr
    assert (out / "_INCOMPLETE").exists() and not (out / "manifest.json").exists()
    assert not (out / ".quarry.lock").exists()
    rc, _, stderr = quarry(inputs, out, "--resume")  # the lock is free and the run finishes
    assert rc == 0, stderr
