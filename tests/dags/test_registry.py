"""The DAG registry: every stage `quarry list` names says where it lives, and that file exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from quarry.dags.registry import DAGS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(DAGS))
def test_every_stage_names_files_that_exist(name):
    spec = DAGS[name]
    names = [s.name for s in spec.stages]
    assert len(names) == len(set(names)), names
    for stage in spec.stages:
        assert stage.where, f"{name}.{stage.name} says nothing of where it lives"
        for rel in stage.where.split(", "):
            assert (ROOT / rel).is_file(), f"{name}.{stage.name}: {rel} does not exist"


def test_quarry_list_prints_each_stage_with_its_files(capsys):
    from quarry.dags.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for spec in DAGS.values():
        assert spec.name in out
        for stage in spec.stages:
            assert f"in: {stage.where}" in out
