"""Progress lines: per-stage counts and rates on stderr, at most every `every` seconds, silenced by QUARRY_PROGRESS=0;
summed over a run's processes, with totals and ETA, where the runner set up a progress folder."""

from __future__ import annotations

import re

import pytest

from quarry.pipelines import stats
from quarry.pipelines.stats import (
    PROGRESS_DIR_ENV,
    _Progress,
    declare_total,
    declared_totals,
    end_progress,
    eta_seconds,
    format_duration,
    progress_part,
    start_progress,
    summary_line,
)


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (0.4, "0s"), (45, "45s"), (92, "1m32s"), (3600, "1h00m"),
                                           (7530, "2h05m"), (273600, "3d04h"), (-3, "0s")])
def test_durations_read_like_an_eta(seconds, text):
    assert format_duration(seconds) == text


def test_eta_is_what_is_left_at_the_rate_so_far():
    assert eta_seconds(1234, 5000, 30.0) == pytest.approx(3766 * 30.0 / 1234)
    assert eta_seconds(5000, 5000, 30.0) == 0.0  # done
    assert eta_seconds(6000, 5000, 30.0) == 0.0  # more than planned (a count that overshoots) is done too
    assert eta_seconds(0, 5000, 30.0) is None  # no rate yet
    assert eta_seconds(10, 5000, 0.0) is None


def test_a_stage_with_a_total_shows_share_rate_and_eta():
    assert progress_part("read", 1234, 1234 / 41.2, 5000, "files") == "read 1,234/5,000 files (24%), 41.2/s, ETA 1m31s"
    assert progress_part("read", 5000, 100.0, 5000, "files") == "read 5,000/5,000 files (100%), 50.0/s, done"
    assert progress_part("records", 0, 0.0, 10) == "records 0/10 (0%), 0.0/s"
    assert progress_part("decode", 1234, 30.0) == "decode 1,234, 41.1/s"  # no total: count and rate


def test_the_summary_orders_stages_as_they_started():
    line = summary_line({"decode": 40, "read": 3}, {"decode": 95.0, "read": 90.0}, {"read": [6, "files"]},
                        now=100.0, procs=2)
    assert line == "[quarry, 2 processes] read 3/6 files (50%), 0.3/s, ETA 10s | decode 40, 8.0/s"


def test_totals_are_declared_per_stage_and_unknown_wins():
    declared_totals(reset=True)
    declare_total("read", 4, "files")
    declare_total("read", 2, "files")
    declare_total("records", 10)
    declare_total("records", None)
    assert declared_totals(reset=True) == {"read": (6, "files"), "records": (None, "")}
    assert declared_totals() == {}


def test_processes_sharing_a_folder_print_the_sum_with_totals(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("QUARRY_PROGRESS", raising=False)
    declared_totals(reset=True)
    declare_total("read", 4, "files")
    folder = start_progress(str(tmp_path / "progress"))
    try:
        a, b = _Progress(every=0.0), _Progress(every=0.0)  # two processes' counters (pids differ in a real run)
        a.tick("read")
        monkeypatch.setattr(stats.os, "getpid", lambda: 999999)
        b.tick("read")
        b.tick("decode", 5)
    finally:
        end_progress(str(tmp_path / "progress"))
    assert PROGRESS_DIR_ENV not in stats.os.environ and not (tmp_path / "progress").exists()
    assert folder is not None
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"\[quarry, 2 processes\] read 2/4 files \(50%\), [\d.]+/s(, ETA \d+s)? \| decode 5, [\d.]+/s",
                        last), last


def test_progress_lines_carry_counts_and_rates(capsys, monkeypatch):
    monkeypatch.delenv("QUARRY_PROGRESS", raising=False)
    monkeypatch.delenv(PROGRESS_DIR_ENV, raising=False)
    p = _Progress(every=0.0)
    for _ in range(3):
        p.tick("read")
    p.tick("decode")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4
    assert re.fullmatch(r"\[quarry pid \d+\] read 3, \d+\.\d/s  decode 1, \d+\.\d/s", lines[-1])


def test_progress_is_throttled_and_can_be_silenced(capsys, monkeypatch):
    monkeypatch.delenv("QUARRY_PROGRESS", raising=False)
    monkeypatch.delenv(PROGRESS_DIR_ENV, raising=False)
    p = _Progress(every=3600.0)
    for _ in range(100):
        p.tick("read")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("QUARRY_PROGRESS", "0")
    q = _Progress(every=0.0)
    q.tick("read")
    assert capsys.readouterr().err == "" and q.counts["read"] == 1


def test_parquet_inputs_give_a_record_total_from_their_footers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i, n in enumerate((3, 5)):
        pq.write_table(pa.table({"x": list(range(n))}), tmp_path / f"{i}.parquet")
    paths = sorted(str(p) for p in tmp_path.glob("*.parquet"))
    assert stats.parquet_row_total(paths) == 8
    assert stats.parquet_row_total(paths, limit=1) is None  # too many footers to open at build time
    assert stats.parquet_row_total(["gs://bucket/a.parquet"]) is None  # remote: not opened at build time
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    assert stats.parquet_row_total([*paths, str(tmp_path / "bad.parquet")]) is None
