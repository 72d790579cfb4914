"""Progress lines: per-stage counts and rates on stderr, at most every `every` seconds, silenced by QUARRY_PROGRESS=0."""

from __future__ import annotations

import re

from quarry.pipelines.stats import _Progress


def test_progress_lines_carry_counts_and_rates(capsys, monkeypatch):
    monkeypatch.delenv("QUARRY_PROGRESS", raising=False)
    p = _Progress(every=0.0)
    for _ in range(3):
        p.tick("read")
    p.tick("decode")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4
    assert re.fullmatch(r"\[quarry pid \d+\] read=3 \(\d+\.\d/s\)  decode=1 \(\d+\.\d/s\)", lines[-1])


def test_progress_is_throttled_and_can_be_silenced(capsys, monkeypatch):
    monkeypatch.delenv("QUARRY_PROGRESS", raising=False)
    p = _Progress(every=3600.0)
    for _ in range(100):
        p.tick("read")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("QUARRY_PROGRESS", "0")
    q = _Progress(every=0.0)
    q.tick("read")
    assert capsys.readouterr().err == "" and q.counts["read"] == 1
