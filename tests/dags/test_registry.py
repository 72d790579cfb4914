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


@pytest.mark.parametrize("name", sorted(DAGS))
def test_the_lazy_tables_match_the_dag_modules(name):
    from quarry.dags.registry import config_model

    spec = DAGS[name]
    assert spec.name == name and config_model(name) is spec.config_model


def test_a_typo_fails_before_any_dag_module_is_imported():
    """The CLI's fast path: a wrong DAG name or config key is answered from schemas alone (no Beam, no torch)."""
    import subprocess
    import sys

    code = ("import sys; from quarry.dags.cli import main; "
            "rc1 = main(['run', 'captoin', '--input', 'x', '--output', 'y']); "
            "rc2 = main(['run', 'caption', '--set', 'clip.modle=x', '--input', 'x', '--output', 'y']); "
            "heavy = sorted(m for m in ('apache_beam', 'torch', 'quarry.dags.caption') if m in sys.modules); "
            "print(rc1, rc2, heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "2", "[]"], done.stdout + done.stderr
    assert "did you mean 'caption'" in done.stderr and "did you mean 'clip.model'" in done.stderr
