"""The RL loop closes: every RL-producing DAG's demo rows score 1 with their own answer and < 1 perturbed,
through the real grade DAG (`quarry selfcheck`), and `quarry run grade --input OUT/<dag>` needs no conversion."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quarry.dags.cli import main
from quarry.dags.selfcheck import selfcheck
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.rl import VerifierSpec

RL_DAGS = {  # DAG -> the RL tasks its demo rows hold
    "gui": {"action", "critic", "element_perception", "goal_action", "grounding", "trajectory", "ui_to_code"},
    "ocr_search": {"ocr", "ocr_zoom", "ocr_search"},
    "imagemining": {"visual_jump_qa"},
    "svg": {"image_to_svg"},
}


@pytest.mark.slow
@pytest.mark.parametrize("dag", sorted(RL_DAGS))
def test_demo_rows_pass_their_own_verifiers(demo_dir, tmp_path, dag):
    report = selfcheck(str(demo_dir / dag), str(tmp_path))
    assert set(report.tasks) == RL_DAGS[dag]
    for name, t in report.tasks.items():
        assert t.rows > 0 and t.gold_right == t.rows, (name, t)  # gold: 100% reward 1
        assert t.perturbed_right == 0, (name, t)  # perturbed: 0% reward 1
    assert report.rejected == {} and report.ok
    # svg_to_image and gui code_to_ui generation pairs carry no verifier
    assert report.not_rl == {"svg": 6, "gui": 3}.get(dag, 0)
    written = json.loads((tmp_path / "selfcheck.json").read_text())
    assert written["ok"] and all(t["gold_share"] == 1.0 for t in written["tasks"].values())


@pytest.mark.slow
def test_grade_reads_a_run_directory_and_writes_its_images(demo_dir, tmp_path, capsys):
    """`quarry run grade --input OUT/gui`: rows carry image_id, the graded run has the screenshots."""
    rollouts = tmp_path / "r.jsonl"
    ids = duckdb.sql(f"SELECT sample_id FROM read_parquet('{demo_dir}/gui/data/**/*.parquet') "
                     "WHERE verifier IS NOT NULL").fetchall()  # code_to_ui generation pairs are not RL rows
    rollouts.write_text("".join(json.dumps({"sample_id": i, "model": "m", "response": "no idea"}) + "\n"
                                for (i,) in ids))
    assert main(["run", "grade", "--input", str(demo_dir / "gui"), "--output", str(tmp_path / "g"),
                 "--set", f"rollouts={rollouts}"]) == 0
    got = duckdb.sql(f"SELECT count(*), count(DISTINCT image_id), min(tier), max(tier) "
                     f"FROM read_parquet('{tmp_path}/g/data/**/*.parquet')").fetchall()[0]
    images = duckdb.sql(f"SELECT image_id FROM read_parquet('{tmp_path}/g/images/*.parquet')").fetchall()
    assert got[0] == len(ids) and got[1] == len(images) > 0 and got[2] == got[3] == "very_hard"
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["kept"] == len(ids)
    assert manifest["rejected"] == {"grade": {"no_verifier": 3}} and manifest["inputs"] == len(ids) + 3


def _fake_run(tmp_path, rows):
    """A run directory holding `rows` (RL contract columns) as one shard."""
    from quarry.schemas.grade import GradeRow  # the contract plus Sample: a convenient full row model

    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    schema = pa.schema([f for f in arrow_schema(GradeRow) if f.name in
                        ("sample_id", "source", "tier", "task", "origin", "question", "answer", "answer_aliases",
                         "verifier")])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), run / "data" / "x.parquet")
    return run


def _row(sid, task, answer, verifier, aliases=()):
    return {"sample_id": sid, "source": "s", "tier": "medium", "task": task, "origin": {"file": "f", "key": sid},
            "question": "q", "answer": answer, "answer_aliases": list(aliases),
            "verifier": VerifierSpec.model_validate(verifier).model_dump() if verifier else None}


@pytest.mark.slow
def test_selfcheck_fails_on_rows_that_do_not_fit_their_verifier(tmp_path, capsys):
    run = _fake_run(tmp_path, [
        _row("ok", "vqa", "red", {"kind": "exact"}),
        # the click is outside its own target box: the row can never score 1
        _row("bad", "action", "click(10,10)", {"kind": "action", "box": [500, 500, 600, 600]}),
        _row("gen", "svg_to_image", "", None),
        _row("empty", "vqa", "", {"kind": "exact"}),
    ])
    report = selfcheck(str(run), str(tmp_path / "w"))
    assert not report.ok
    assert (report.tasks["vqa"].rows, report.tasks["vqa"].gold_right) == (1, 1)
    assert (report.tasks["action"].rows, report.tasks["action"].gold_right) == (1, 0)
    assert report.rejected == {"read/empty_answer": 1} and report.not_rl == 1
    assert main(["selfcheck", str(run), "--work", str(tmp_path / "w2")]) == 1
    out = capsys.readouterr().out
    assert "selfcheck: FAILED" in out and "read/empty_answer" in out


def test_selfcheck_needs_a_run_directory(tmp_path, capsys):
    assert main(["selfcheck", str(tmp_path)]) == 2
    assert "not a quarry run directory" in capsys.readouterr().err
