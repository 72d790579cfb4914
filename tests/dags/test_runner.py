"""Output directories: a run never mixes with another; --overwrite removes exactly a run's entries."""

from __future__ import annotations

import pytest

from quarry.dags.runner import UsageError, prepare_output


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
