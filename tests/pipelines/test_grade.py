"""The grade pipeline pieces: generic row reading, sample/rollout parsing, scoring, and the
CoGroupByKey wiring under TestPipeline."""

from __future__ import annotations

import gzip
import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from quarry.operators.grade import contract
from quarry.operators.grade.verify import verifier_for
from quarry.pipelines.grade import (
    ROLLOUT_COLUMNS,
    SAMPLE_COLUMNS,
    GradePipeline,
    parse_rollout,
    parse_sample,
    read_summary,
    rollout_runs,
    score,
)
from quarry.pipelines.read import InputError, RowRecord, plan_tables, read_rows
from quarry.pipelines.read import InputFile as TableFile
from quarry.schemas.config import load_config
from quarry.schemas.grade import GradeConfig


def box(x: str) -> str:
    return f"<|begin_of_box|>{x}<|end_of_box|>"


def test_read_rows_jsonl_gz_and_parquet(tmp_path):
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write('{"x": 1}\n\n[1, 2]\n{broken\n{"x": 2}\n')
    got = list(read_rows(TableFile(str(tmp_path / "a.jsonl.gz"), "jsonl")))
    assert [(r.key, r.row, r.reason) for r in got] == [
        ("line:1", {"x": 1}, ""), ("line:3", None, "invalid_json"), ("line:4", None, "invalid_json"),
        ("line:5", {"x": 2}, "")]
    pq.write_table(pa.table({"x": [1, 2, 3], "y": ["a", "b", "c"]}), tmp_path / "b.parquet")
    got = list(read_rows(TableFile(str(tmp_path / "b.parquet"), "parquet"), ("x", "zzz")))
    assert [(r.key, r.row) for r in got] == [("row:0", {"x": 1}), ("row:1", {"x": 2}), ("row:2", {"x": 3})]
    (tmp_path / "c.parquet").write_bytes(b"PAR1 not really")
    (bad,) = read_rows(TableFile(str(tmp_path / "c.parquet"), "parquet"))
    assert bad.reason == "unreadable_file"


def test_plan_tables_checks_columns(tmp_path):
    (tmp_path / "s.jsonl").write_text('garbage\n{"sample_id": 1, "task": "t", "question": "q"}\n')
    with pytest.raises(InputError, match="missing column.*answer"):
        plan_tables([str(tmp_path / "s.jsonl")], SAMPLE_COLUMNS, "samples")
    with pytest.raises(InputError, match="no files match"):
        plan_tables([str(tmp_path / "nope-*.jsonl")], SAMPLE_COLUMNS, "samples")
    (tmp_path / "r.txt").write_text("x")
    with pytest.raises(InputError, match="Parquet or JSONL"):
        plan_tables([str(tmp_path / "r.txt")], ROLLOUT_COLUMNS, "rollouts")
    (tmp_path / "empty.jsonl").write_text("")
    assert plan_tables([str(tmp_path / "empty.jsonl")], SAMPLE_COLUMNS, "samples")[0].kind == "jsonl"


def rec(row, key="line:1"):
    return RowRecord("/in/s.jsonl", key, row)


def test_parse_sample():
    ok = parse_sample(rec({"sample_id": 7, "task": "exact", "question": "q", "answer": ["a", "b"],
                           "source": "my src", "label_tier": "Hard"}), "dflt")
    assert ok["sample_id"] == "7" and ok["answer"] == '["a", "b"]' and ok["source"] == "my_src"
    assert ok["label_tier"] == "hard"
    assert parse_sample(rec({"sample_id": "x", "task": "exact", "question": "q", "answer": 3}), "d")["answer"] == "3"
    assert parse_sample(rec({"sample_id": "x", "task": "exact", "question": "q", "answer": "a"}), "d")["source"] == "d"
    bad = parse_sample(rec({"task": "exact", "question": "q", "answer": "a"}), "d")
    assert (bad.stage, bad.reason) == ("read", "missing_field")
    bad = parse_sample(rec({"sample_id": "x", "task": "exact", "question": "q", "answer": None}), "d")
    assert (bad.sample_id, bad.reason) == ("x", "missing_field")
    bad = parse_sample(RowRecord("/in/s.jsonl", "line:3", None, "invalid_json", "boom"), "d")
    assert (bad.reason, bad.origin.key) == ("invalid_json", "line:3")


def test_rollouts_cross_the_join_as_runs_of_one_sample():
    from quarry.pipelines.grade import MAX_RUN

    pairs = [("a", ("m", "1")), ("a", ("n", "2")), ("b", ("m", "3")), ("a", ("m", "4"))]
    assert list(rollout_runs(iter(pairs))) == [("a", (("m", "1"), ("n", "2"))), ("b", (("m", "3"),)),
                                               ("a", (("m", "4"),))]
    long = [("c", ("m", str(i))) for i in range(MAX_RUN + 3)]
    runs = list(rollout_runs(iter(long)))
    assert [len(r) for _, r in runs] == [MAX_RUN, 3] and [x for _, r in runs for x in r] == [p for _, p in long]
    assert list(rollout_runs(iter([]))) == []


def test_parse_rollout():
    assert parse_rollout(rec({"sample_id": 3, "model": "m", "response": "r"})) == ("3", ("m", "r"))
    assert parse_rollout(rec({"sample_id": "a", "model": "m", "response": None})) == ("a", ("m", ""))
    assert parse_rollout(rec({"sample_id": "a", "response": "r"})) is None
    assert parse_rollout(RowRecord("f", "k", None, "invalid_json")) is None


def test_references_and_scores_never_raise():
    exact, grd, ocr = verifier_for("exact"), verifier_for("grounding"), verifier_for("ocr")
    spec = contract.VerifierSpec
    assert contract.reference(spec(kind="exact"), '["cat", "kitten"]') == ["cat", "kitten"]
    assert contract.reference(spec(kind="exact"), "[1, 2") == "[1, 2"
    assert contract.reference(spec(kind="ocr"), '["x"]') == '["x"]'  # OCR compares text as written
    assert score(exact, box("Kitten"), ["cat", "kitten"]) == 1.0
    assert score(exact, "no box here", "cat") == 0.0
    two = contract.reference(spec(kind="grounding"), "[[0,0,100,100],[500,500,600,600]]")
    assert score(grd, box("[0,0,100,100]"), two) == 0.5
    assert 0 < score(ocr, box("HELLQ"), "HELLO") < 1

    def boom(response, reference):
        raise RuntimeError("bad verifier")

    assert score(boom, "x", "y") == 0.0


def test_grade_pipeline_joins_scores_and_counts(tmp_path):
    cfg = load_config(GradeConfig, sets=["rollouts=x"])
    samples = [
        {"sample_id": "a", "source": "s", "task": "exact", "question": "q", "answer": "yes", "label_tier": None,
         "file": "f", "key": "line:1"},
        {"sample_id": "b", "source": "s", "task": "exact", "question": "q", "answer": "yes", "label_tier": "easy",
         "file": "f", "key": "line:2"},
        {"sample_id": "c", "source": "s", "task": "exact", "question": "q", "answer": "yes", "label_tier": None,
         "file": "f", "key": "line:3"},
    ]
    rollouts = [("a", ("m1", box("yes"))), ("a", ("m2", box("no"))), ("b", ("m1", "none")), ("zz", ("m1", "x"))]
    out = str(tmp_path)
    with TestPipeline() as p:
        runs = p | "R" >> beam.Create(list(rollout_runs(rollouts)))
        graded = (p | "S" >> beam.Create(samples), runs) | GradePipeline(cfg, out)
        assert_that(graded.rows | beam.Map(lambda r: (r.sample_id, r.tier, r.pass_tier, r.pass_rate)),
                    equal_to([("a", "medium", "medium", 0.5), ("b", "easy", "very_hard", 0.0)]), label="rows")
        assert_that(graded.rejected | beam.Map(lambda r: (r.sample_id, r.stage, r.reason)),
                    equal_to([("c", "grade", "no_rollouts")]), label="rejects")
    summary = read_summary(out)
    assert summary["unknown_rollouts"] == 1
    assert summary["tier_counts"]["total"]["medium"] == 1 and summary["tier_counts"]["total"]["easy"] == 1
    counts = {p.stem: json.loads(p.read_text())["count"] for p in (tmp_path / "_stats").glob("*.json")}
    assert counts["rollouts_join.in"] == 4 and counts["rollouts_join.out"] == 3
    assert counts["grade.in"] == 3 and counts["grade.out"] == 2


def test_options_and_fill_in_sample():
    from quarry.pipelines.grade import fill_in_sample, parse_options

    assert parse_options('["a", "b"]') == ["a", "b"] and parse_options(("a",)) == ["a"]
    assert isinstance(parse_options("a, b"), str) and isinstance(parse_options([1, 2]), str)
    plain = parse_sample(rec({"sample_id": "p", "task": "exact", "question": "q", "answer": "a"}), "d")
    assert "options" not in plain and fill_in_sample(plain) is plain
    mc = parse_sample(rec({"sample_id": "m", "task": "exact", "question": "Capital of France?",
                           "options": '["Rome", "Paris"]', "answer": 1}), "d")
    got = fill_in_sample(mc)
    assert (got["question"], got["answer"]) == ("Capital of France?", "Paris")
    assert (got["original_options"], got["original_answer"]) == (["Rome", "Paris"], "1")
    assert "options" not in got and "raw_answer" not in got
    bad = fill_in_sample(parse_sample(rec({"sample_id": "n", "task": "exact", "question": "Which of the following?",
                                           "options": ["x", "y"], "answer": "A"}), "d"))
    assert (bad.stage, bad.reason, bad.sample_id) == ("mc", "mc_not_convertible", "n")
    assert bad.detail.startswith("question_needs_options")
    bad = fill_in_sample(parse_sample(rec({"sample_id": "o", "task": "exact", "question": "q",
                                           "options": 3, "answer": "A"}), "d"))
    assert (bad.stage, bad.reason) == ("mc", "mc_not_convertible") and "not a list" in bad.detail


def test_a_verifier_that_raises_scores_zero_and_is_named():
    from quarry.pipelines.grade import VERIFIER_ERROR, verdict_of

    def broken(response, reference):
        raise KeyError("bug")

    assert verdict_of(broken, "x", "y").reward == 0.0
    assert verdict_of(broken, "x", "y").reason == VERIFIER_ERROR


def sample(sid, key, **kw):
    row = {"sample_id": sid, "source": "s", "task": "exact", "question": "q", "answer": "yes", "label_tier": None,
           "file": "f", "key": key, "aliases": [], "verifier": None}
    return {**row, **kw}


def grade(tmp_path, samples, rollouts, sets=()):
    """(rows as (sample_id, key, mean_reward), rejects as (sample_id, key, stage, reason, detail)), sorted."""
    cfg = load_config(GradeConfig, sets=["rollouts=x", *sets])
    out = tmp_path / "got"
    with TestPipeline() as p:
        runs = p | "R" >> beam.Create(list(rollout_runs(rollouts)))
        graded = (p | "S" >> beam.Create(samples), runs) | GradePipeline(cfg, str(tmp_path))
        for name, pcoll, fn in (
                ("rows", graded.rows, lambda r: [r.sample_id, r.origin.key, r.mean_reward]),
                ("rejects", graded.rejected, lambda r: [r.sample_id, r.origin.key, r.stage, r.reason, r.detail])):
            (pcoll | f"{name}Json" >> beam.Map(lambda r, fn=fn: json.dumps(fn(r)))
             | f"{name}Write" >> beam.io.WriteToText(str(out / name), shard_name_template=""))
    return tuple(sorted(tuple(json.loads(line)) for line in (out / name).read_text().splitlines())
                 for name in ("rows", "rejects"))


def test_duplicate_ids_first_in_input_order_wins(tmp_path):
    # line:2 comes before line:12, though "line:12" < "line:2" as text
    samples = [sample("a", "line:12", answer="no"), sample("a", "line:2", answer="yes"),
               sample("a", "row:10", file="g", answer="no"), sample("b", "00012.jpg", file="t.tar"),
               sample("b", "00002.jpg", file="t.tar", answer="no")]
    rollouts = [("a", ("m", box("yes"))), ("b", ("m", box("no")))]
    rows, rejects = grade(tmp_path, samples, rollouts)
    assert rows == [("a", "line:2", 1.0), ("b", "00002.jpg", 1.0)]
    assert [(r[0], r[1], r[3]) for r in rejects] == [
        ("a", "line:12", "duplicate_sample_id"), ("a", "row:10", "duplicate_sample_id"),
        ("b", "00012.jpg", "duplicate_sample_id")]
    assert "also at f line:2" in rejects[0][4]


def test_row_spec_aliases_and_overrides(tmp_path):
    samples = [
        sample("uk", "line:1", answer="United Kingdom", aliases=["UK"]),
        sample("chart", "line:2", task="chart_qa", answer="70", verifier={"kind": "numeric", "rel_tol": 0.02}),
        sample("year", "line:3", task="chart_qa", answer="1990", verifier={"kind": "numeric", "rel_tol": 0.0}),
        sample("spam", "line:4", task="grounding", answer=box("[100,100,300,300]"), verifier={"kind": "grounding"}),
        sample("click", "line:5", task="action", answer=box("click(510,300)"),
               verifier={"kind": "action", "box": [400.0, 280.0, 620.0, 320.0]}),
        sample("svg2img", "line:6", task="svg_to_image", answer=""),
        sample("odd", "line:7", task="mystery"),
    ]
    spam = " ".join(["[100,100,300,300]"] + [f"[{i},{i},{i + 5},{i + 5}]" for i in range(400, 420)])
    rollouts = [("uk", ("m", box("UK"))), ("chart", ("m", box("71"))), ("year", ("m", box("1991"))),
                ("spam", ("m", box(spam))), ("click", ("m", box("click(401,281)"))),
                ("svg2img", ("m", "x")), ("odd", ("m", box("yes")))]
    rows, rejects = grade(tmp_path, samples, rollouts)
    assert rows == [("chart", "line:2", 1.0), ("click", "line:5", 1.0), ("spam", "line:4", pytest.approx(1 / 21)),
                    ("uk", "line:1", 1.0), ("year", "line:3", 0.0)]
    assert [(r[0], r[2], r[3]) for r in rejects] == [("odd", "grade", "no_verifier"),
                                                     ("svg2img", "grade", "no_verifier")]
    assert "mystery" in rejects[0][4] and "names no verifier" in rejects[0][4]
    # --set verifiers.TASK=KIND replaces the row's rule: 71 is no longer within tolerance
    rows, _ = grade(tmp_path / "o", samples[1:2], rollouts[1:2], ["verifiers.chart_qa=exact"])
    assert rows == [("chart", "line:2", 0.0)]
    # a rule with parameters, per task: the year row is now within 0.1% as well
    rows, _ = grade(tmp_path / "p", samples[1:3], rollouts[1:3], ["verifiers.chart_qa={kind: numeric, rel_tol: 0.001}"])
    assert rows == [("chart", "line:2", 0.0), ("year", "line:3", 1.0)]


@pytest.mark.parametrize("value, message", [
    ("magic", "unknown verifier kind 'magic' for task 'chart'"),
    ("{kind: exact, rel_tol: 0.1}", "takes no rel_tol"),
    ("{kind: numeric, tolerance: 0.1}", "tolerance"),
])
def test_bad_verifier_overrides_fail_at_config_time(value, message):
    from quarry.schemas.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(GradeConfig, sets=["rollouts=x", f"verifiers.chart={value}"])


@pytest.mark.parametrize(
    "row, reason, detail",
    [
        ({"answer": ""}, "empty_answer", "answer is empty"),
        ({"answer": box("")}, "empty_answer", "answer is empty"),
        ({"verifier": {"kind": "numeric", "tol": 1}}, "invalid_verifier", "tol"),
        ({"verifier": {"kind": "exact", "iou": 0.5}}, "invalid_verifier", "takes no iou"),
        ({"verifier": {"kind": "telepathy"}}, "invalid_verifier", "kind"),
        ({"verifier": "{"}, "invalid_verifier", "not a JSON object"),
        ({"answer_aliases": "UK"}, "missing_field", "answer_aliases"),
    ],
)
def test_bad_contract_fields_are_read_rejects_naming_the_row(row, reason, detail):
    base = {"sample_id": "x", "task": "exact", "question": "q", "answer": "a"}
    bad = parse_sample(rec({**base, **row}, key="line:9"), "d")
    assert (bad.sample_id, bad.stage, bad.reason, bad.origin.key) == ("x", "read", reason, "line:9")
    assert detail in bad.detail


def test_contract_fields_are_carried():
    got = parse_sample(rec({"sample_id": "x", "task": "action", "question": "q", "answer": box("click(1,2)"),
                            "answer_aliases": None, "image_id": "abc",
                            "verifier": {"kind": "action", "box": [0, 0, 10, 10], "rel_tol": None}}), "d")
    assert got["image_id"] == "abc" and got["aliases"] == []
    assert got["verifier"]["box"] == [0, 0, 10, 10] and got["verifier"]["kind"] == "action"
