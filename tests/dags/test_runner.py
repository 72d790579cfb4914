"""Output directories: a run never mixes with another; --overwrite removes exactly a run's entries.
The files hold exactly the rows the writers were handed, or the run fails."""

from __future__ import annotations

import json

import pytest

from quarry.dags.runner import LOSS_NOTE, DataLossError, UsageError, prepare_output, written_mismatches
from quarry.pipelines.stats import read_counts


def test_prepare_output_refuses_then_clears_a_previous_run(tmp_path):
    (tmp_path / "data" / "source=a" / "tier=easy").mkdir(parents=True)
    (tmp_path / "data" / "source=a" / "tier=easy" / "old.parquet").write_bytes(b"x")
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "inputs").mkdir()  # not a run entry: kept
    with pytest.raises(UsageError, match="already holds a run .*data.*manifest.json"):
        prepare_output(str(tmp_path), overwrite=False)
    prepare_output(str(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]
    prepare_output(str(tmp_path / "fresh"), overwrite=False)  # nothing there: fine


def _grade_run(tmp_path, out: str):
    from quarry.dags.grade import SPEC
    from quarry.dags.runner import resolve_config, run_dag

    rows = [{"sample_id": f"s{i}", "task": "exact", "question": "q", "answer": "y", "source": "s"} for i in range(4)]
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps({"sample_id": r["sample_id"], "model": "m",
                                                            "response": "\\boxed{y}"}) for r in rows))
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.jsonl"], None)
    return run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / out), cfg)


def test_the_writers_counts_match_the_files(tmp_path):
    m = _grade_run(tmp_path, "out")
    counts = read_counts(str(tmp_path / "out"))
    assert counts["write.rows"] == m.kept == 4 and counts["write.rejects"] == m.rejected_total == 1
    assert not [n for n in m.notes if n.startswith(LOSS_NOTE)]


def test_rows_missing_from_the_files_fail_the_run(tmp_path, monkeypatch):
    """A shard that lost rows (as Beam's data-plane race once did) stops the run with the numbers."""
    import quarry.dags.runner as runner

    real = runner.count_rows
    monkeypatch.setattr(runner, "count_rows", lambda paths: {p: n - 1 for p, n in real(paths).items()})
    with pytest.raises(DataLossError, match=r"4 rows handed to the writer, 3 in the files"):
        _grade_run(tmp_path, "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert any("4 rows handed to the writer" in n for n in manifest["notes"])  # the manifest is still written


def test_written_mismatches_name_each_table():
    counts = {"write.rows": 10, "write.rejects": 2}
    assert written_mismatches(counts, 10, 2) == []
    assert written_mismatches({}, 5, 5) == []  # a DAG whose writer does not count: nothing to compare
    notes = written_mismatches(counts, 9, 3)
    assert notes == [f"{LOSS_NOTE}: 10 rows handed to the writer, 9 in the files",
                     f"{LOSS_NOTE}: 2 rejects handed to the writer, 3 in the files"]


def test_an_output_that_is_a_file_or_under_one_is_one_line_before_the_run(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match=r"output .*/f is not a directory$"):
        prepare_output(str(tmp_path / "f"), overwrite=True)
    with pytest.raises(UsageError, match=r"output .*/f/run/x: .*/f is not a directory"):
        prepare_output(str(tmp_path / "f" / "run" / "x"), overwrite=False)


def test_two_runs_into_one_directory_at_once_the_second_stops_with_one_line(tmp_path):
    from quarry.dags.runner import LOCK_FILE, output_lock

    with output_lock(str(tmp_path / "out")):
        with pytest.raises(UsageError, match=r"is in use by another run \(pid \d+ on .* since "):
            _grade_run(tmp_path, "out")
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert _grade_run(tmp_path, "out").kept == 4  # free again
    assert not (tmp_path / "out" / LOCK_FILE).exists()


def test_a_killed_runs_lock_does_not_outlive_it(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from quarry.dags.runner import output_lock\n"
                               f"with output_lock({str(tmp_path / 'out')!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UsageError, match="in use"):
        _grade_run(tmp_path, "out")
    holder.kill()
    holder.wait()
    assert _grade_run(tmp_path, "out").kept == 4
