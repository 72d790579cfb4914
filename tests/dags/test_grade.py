"""The grade DAG end to end on small hand-made JSONL inputs: every sample lands in a row or a
reject, the manifest adds up, tiers follow the rollouts, labels override, unknown rollout ids
are counted, a response without a box scores 0."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quarry.dags import grade
from quarry.dags.runner import reject_counts, resolve_config, run_dag
from quarry.pipelines.grade import STAGE_REASONS, read_summary
from quarry.pipelines.read import InputError
from quarry.schemas.config import ConfigError

SPEC = grade.SPEC


def box(x: str) -> str:
    return f"<think>hmm</think><answer><|begin_of_box|>{x}<|end_of_box|></answer>"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


SAMPLES = [
    {"sample_id": "s-easy", "source": "mathset", "task": "math", "question": "2+2?", "answer": "4"},
    {"sample_id": "s-veasy", "source": "mathset", "task": "math", "question": "1+1?", "answer": "2"},
    {"sample_id": "s-med", "source": "mathset", "task": "math", "question": "3*3?", "answer": "9"},
    {"sample_id": "s-hard", "source": "vqa", "task": "exact", "question": "animal?", "answer": '["cat", "kitten"]'},
    {"sample_id": "s-vhard", "source": "vqa", "task": "ocr", "question": "read it", "answer": "HELLO"},
    {"sample_id": "s-label", "source": "vqa", "task": "exact", "question": "colour?", "answer": "red",
     "label_tier": "very_hard"},
    {"sample_id": "s-none", "source": "vqa", "task": "exact", "question": "nobody tried", "answer": "x"},
    {"sample_id": "s-grd", "source": "ground", "task": "grounding", "question": "find the dog",
     "answer": "[[100, 100, 200, 200]]"},
    {"sample_id": "s-badtask", "source": "vqa", "task": "no_such_task", "question": "?", "answer": "x"},
    {"sample_id": "s-badlabel", "source": "vqa", "task": "exact", "question": "?", "answer": "x",
     "label_tier": "trivial"},
    {"sample_id": "s-easy", "source": "mathset", "task": "math", "question": "dup", "answer": "4"},  # duplicate id
    "{not json",
    {"task": "exact", "question": "no id", "answer": "x"},
]


def rollouts() -> list[dict]:
    out = []

    def add(sid, model, responses):
        out.extend({"sample_id": sid, "model": model, "response": r} for r in responses)

    add("s-veasy", "m1", [box("2")] * 4)
    add("s-veasy", "m2", [box("2.0")] * 2)
    # easy: m1 4/4, m2 2/4 -> mean(1.0, 0.5) = 0.75
    add("s-easy", "m1", [box("4")] * 4)
    add("s-easy", "m2", [box("4"), box("4"), box("5"), "I think it is 4"])  # no box -> reward 0
    # medium: 1/4 with one model
    add("s-med", "m1", [box("9"), box("8"), box("7"), box("six")])
    # hard: one alias right out of 8 over two models: m1 1/4, m2 0/4 -> 0.125
    add("s-hard", "m1", [box("Kitten."), box("dog"), box("dog"), box("dog")])
    add("s-hard", "m2", [box("dog")] * 4)
    # very hard: OCR near misses are partial rewards, not correct
    add("s-vhard", "m1", [box("HELLQ"), box("HELL0")])
    # label override: all right, yet labelled very_hard
    add("s-label", "m1", [box("red")] * 3)
    add("s-grd", "m1", [box("[100,100,200,200]"), box("[0,0,10,10]")])
    add("s-badtask", "m1", [box("x")])
    add("s-unknown-1", "m1", [box("1")] * 3)
    add("s-unknown-2", "m2", [box("1")])
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("grade")
    write_jsonl(d / "samples.jsonl", SAMPLES)
    rows = rollouts()
    write_jsonl(d / "rollouts-a.jsonl", rows[: len(rows) // 2])
    write_jsonl(d / "rollouts-b.jsonl", rows[len(rows) // 2:] + ["garbage", {"model": "m1"}])
    cfg = resolve_config(SPEC, None, [f"rollouts={d}/rollouts-*.jsonl"], None)
    manifest = run_dag(SPEC, [str(d / "samples.jsonl")], str(d / "out"), cfg)
    return d / "out", manifest


def table(out: Path, what: str):
    con = duckdb.connect()
    if what == "rows":
        return con.sql(f"SELECT * FROM read_parquet('{out}/data/**/*.parquet', hive_partitioning=true)")
    return con.sql(f"SELECT * FROM read_parquet('{out}/rejects/*.parquet')")


def test_every_sample_is_a_row_or_a_reject_and_the_manifest_adds_up(run):
    out, m = run
    rows = {r[0] for r in table(out, "rows").select("sample_id").fetchall()}
    rejects = {(r[0], r[1], r[2]) for r in table(out, "rejects").select("sample_id, stage, reason").fetchall()}
    assert rows == {"s-easy", "s-veasy", "s-med", "s-hard", "s-vhard", "s-label", "s-grd"}
    reasons = {(sid, stage, reason) for sid, stage, reason in rejects if sid.startswith("s-")}
    assert reasons == {
        ("s-none", "grade", "no_rollouts"),
        ("s-badtask", "grade", "no_verifier"),
        ("s-badlabel", "read", "invalid_label_tier"),
        ("s-easy", "join", "duplicate_sample_id"),
    }
    assert m.rejected["read"] == {"invalid_json": 1, "missing_field": 1, "invalid_label_tier": 1}
    assert m.inputs == len(SAMPLES) == m.kept + m.rejected_total
    assert m.balanced is True
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["inputs"] == saved["kept"] + saved["rejected_total"]


def test_tiers_follow_the_rollouts_and_labels_win(run):
    out, _ = run
    got = {r[0]: r[1:] for r in table(out, "rows").select(
        "sample_id, tier, pass_tier, label_tier, pass_rate, n_rollouts, n_correct").fetchall()}
    assert got["s-veasy"][:2] == ("very_easy", "very_easy") and got["s-veasy"][3] == 1.0
    assert got["s-easy"][:2] == ("easy", "easy") and got["s-easy"][3] == pytest.approx(0.75)
    assert got["s-easy"][4:] == (8, 6)  # the box-less response counted, as wrong
    assert got["s-med"][:2] == ("medium", "medium") and got["s-med"][3] == pytest.approx(0.25)
    assert got["s-hard"][:2] == ("hard", "hard") and got["s-hard"][3] == pytest.approx(0.125)
    assert got["s-vhard"][:2] == ("very_hard", "very_hard")
    assert got["s-label"][:3] == ("very_hard", "very_easy", "very_hard")
    assert got["s-grd"][:2] == ("medium", "medium") and got["s-grd"][3] == pytest.approx(0.5)


def test_per_model_pass_rates_and_hive_layout(run):
    out, _ = run
    ((models,),) = table(out, "rows").filter("sample_id = 's-easy'").select("models").fetchall()
    assert models == [{"model": "m1", "n": 4, "correct": 4, "pass_rate": 1.0},
                      {"model": "m2", "n": 4, "correct": 2, "pass_rate": 0.5}]
    for f in (out / "data").rglob("*.parquet"):
        t = pq.read_table(f)
        assert set(t["tier"].to_pylist()) == {f.parent.name.removeprefix("tier=")}
        assert set(t["source"].to_pylist()) == {f.parent.parent.name.removeprefix("source=")}


def test_unknown_rollouts_and_bad_rollout_rows_are_counted(run):
    out, m = run
    n_roll = len(rollouts())
    assert m.stages["rollouts_read"].inputs == n_roll + 2
    assert m.stages["rollouts_read"].outputs == n_roll
    assert m.stages["rollouts_join"].inputs == n_roll
    assert m.stages["rollouts_join"].outputs == n_roll - 4  # 3 + 1 rollouts for two unknown ids
    assert m.stages["grade"].outputs == m.kept
    summary = read_summary(str(out))
    assert summary["unknown_rollouts"] == 4
    assert summary["tier_counts"]["total"] == {"very_easy": 1, "easy": 1, "medium": 2, "hard": 1, "very_hard": 2}
    assert summary["tier_counts"]["by_source"]["mathset"] == {"very_easy": 1, "easy": 1, "medium": 1,
                                                               "hard": 0, "very_hard": 0}
    assert summary["tier_counts"]["by_task"]["grounding"]["medium"] == 1
    assert summary["sampling_weights"]["very_easy"] == 0.2
    assert sum(summary["weighted_share"].values()) == pytest.approx(1.0)
    assert m.extra["sampling_weights"]["medium"] == 1.0
    if "finish" in {f for f in SPEC.__dataclass_fields__}:  # once run_dag calls DagSpec.finish
        assert m.extra["tier_counts"] == summary["tier_counts"]
        assert m.extra["unknown_rollouts"] == 4


def test_config_changes_tiers(tmp_path):
    write_jsonl(tmp_path / "s.jsonl", [{"sample_id": "a", "task": "exact", "question": "q", "answer": "y",
                                        "source": "s"}])
    write_jsonl(tmp_path / "r.jsonl", [{"sample_id": "a", "model": "m", "response": box(x)}
                                       for x in ("y", "n", "n", "n")])
    sets = [f"rollouts={tmp_path}/r.jsonl", "grade.k=2", "grade.tiers.medium_at=0.6",
            "grade.tiers.easy_at=0.6", "source=given"]
    cfg = resolve_config(SPEC, None, sets, None)
    m = run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "out"), cfg)
    (row,) = table(tmp_path / "out", "rows").select("tier, pass_rate, source").fetchall()
    assert row[0] == "hard" and row[1] == pytest.approx(0.5) and row[2] == "s"  # pass@2 with 1/4 = 1 - 3/6
    assert m.balanced


def test_parquet_samples_and_rollouts(tmp_path):
    pq.write_table(pa.table({"sample_id": ["p1", "p2"], "task": ["exact", "numeric"], "question": ["q", "q"],
                             "answer": ["yes", "3"], "image": [b"\x89PNG", None]}), tmp_path / "s.parquet")
    pq.write_table(pa.table({"sample_id": ["p1", "p2", "p2"], "model": ["m", "m", "m"],
                             "response": [box("Yes"), box("3.0"), None]}), tmp_path / "r.parquet")
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.parquet"], None)
    m = run_dag(SPEC, [str(tmp_path / "s.parquet")], str(tmp_path / "out"), cfg)
    got = dict(table(tmp_path / "out", "rows").select("sample_id, tier").fetchall())
    assert got == {"p1": "very_easy", "p2": "medium"}  # a null response is a wrong rollout
    assert m.inputs == 2 == m.kept
    images = dict(table(tmp_path / "out", "rows").select("sample_id, image.bytes").fetchall())
    assert images == {"p1": b"\x89PNG", "p2": None}  # the sample's image is carried to its row


def test_jsonl_image_paths_are_carried_or_rejected(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG-a")
    write_jsonl(tmp_path / "s.jsonl", [
        {"sample_id": "a", "task": "exact", "question": "q", "answer": "x", "image": "img/a.png"},
        {"sample_id": "b", "task": "exact", "question": "q", "answer": "x", "image": "img/gone.png"},
    ])
    write_jsonl(tmp_path / "r.jsonl", [{"sample_id": s, "model": "m", "response": box("x")} for s in "ab"])
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.jsonl"], None)
    m = run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "out"), cfg)
    assert table(tmp_path / "out", "rows").select("sample_id, image.bytes").fetchall() == [("a", b"\x89PNG-a")]
    assert (m.kept, m.rejected) == (1, {"read": {"missing_image": 1}})


def test_missing_columns_and_missing_rollouts_fail_before_the_run(tmp_path):
    write_jsonl(tmp_path / "s.jsonl", [{"sample_id": "a", "task": "exact", "question": "q"}])
    write_jsonl(tmp_path / "r.jsonl", [{"sample_id": "a", "model": "m", "response": "x"}])
    pq.write_table(pa.table({"sample_id": ["a"], "response": ["x"]}), tmp_path / "r.parquet")
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.jsonl"], None)
    with pytest.raises(InputError, match="missing column.*answer"):
        run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "o1"), cfg)
    write_jsonl(tmp_path / "ok.jsonl", [{"sample_id": "a", "task": "exact", "question": "q", "answer": "x"}])
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.parquet"], None)
    with pytest.raises(InputError, match="missing column.*model"):
        run_dag(SPEC, [str(tmp_path / "ok.jsonl")], str(tmp_path / "o2"), cfg)
    with pytest.raises(ConfigError, match="rollouts"):
        run_dag(SPEC, [str(tmp_path / "ok.jsonl")], str(tmp_path / "o3"), resolve_config(SPEC, None, [], None))
    with pytest.raises(ConfigError, match="unknown verifier kind 'magic' for task 'math'"):
        cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.jsonl", "verifiers.math=magic"], None)
        run_dag(SPEC, [str(tmp_path / "ok.jsonl")], str(tmp_path / "o4"), cfg)
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3", "o4"))


def test_every_reject_reason_is_listed_for_its_stage(run):
    """STAGE_REASONS names every stage of SPEC (but `read`, the reader's) and every (stage, reason) the run wrote."""
    assert set(STAGE_REASONS) == {s.name for s in SPEC.stages} - {"read"}
    listed = {(stage, r) for stage, reasons in STAGE_REASONS.items() for r in reasons}
    written = {(stage, r) for stage, reasons in reject_counts(str(run[0])).items() for r in reasons if stage != "read"}
    assert len(written) >= 2 and written <= listed, written - listed
