"""Which DAGs resume: the per-input writers (caption, documents) commit each input's shards; every other DAG's
`--resume` fails before anything runs, with one line that says why and what to do."""

from __future__ import annotations

import pytest

from quarry.dags.registry import DAGS
from quarry.dags.runner import UsageError, resolve_config, run_dag

RESUMABLE = {"caption", "documents"}


def test_the_resumable_dags_say_what_a_resume_does_again():
    assert {name for name, spec in DAGS.items() if spec.resumable} == RESUMABLE
    assert all(DAGS[name].input_files is not None for name in RESUMABLE)  # their fingerprint names the input files


@pytest.mark.parametrize("name", sorted(set(DAGS) - RESUMABLE))
def test_the_others_refuse_resume_in_one_line(name, tmp_path):
    spec = DAGS[name]
    (tmp_path / "in.jsonl").write_text("{}\n")
    with pytest.raises(UsageError) as e:
        run_dag(spec, [str(tmp_path / "in.jsonl")], str(tmp_path / "out"), resolve_config(spec, None, [], None),
                resume=True)
    assert f"the {name} DAG cannot resume" in str(e.value) and "--overwrite" in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()  # refused before anything was written
