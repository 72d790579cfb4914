"""The grade DAG's optional steps end to end: multiple choice -> fill in the blank, the model
judge (by task and as an exact-match fallback), and rollout generation, against a local HTTP
server on 127.0.0.1 playing the judge and the policy model."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from quarry.dags import grade
from quarry.dags.runner import resolve_config, run_dag
from quarry.schemas.config import ConfigError

SPEC = grade.SPEC


def box(x: str) -> str:
    return f"<think>hmm</think><|begin_of_box|>{x}<|end_of_box|>"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows_of(out: Path, cols: str) -> dict:
    con = duckdb.connect()
    got = con.sql(f"SELECT sample_id, {cols} FROM read_parquet('{out}/data/**/*.parquet', hive_partitioning=true)")
    return {r[0]: r[1:] for r in got.fetchall()}


def rejects_of(out: Path) -> set:
    files = list((out / "rejects").glob("*.parquet"))
    if not files:
        return set()
    con = duckdb.connect()
    return set(con.sql(f"SELECT sample_id, stage, reason FROM read_parquet('{out}/rejects/*.parquet')").fetchall())


class Server:
    """A fake OpenAI-compatible endpoint: ``reply(body) -> list of choice texts | int status``."""

    def __init__(self, start, reply):
        self.bodies: list[dict] = []

        def behave(server, body, n_seen):
            self.bodies.append(body)
            out = reply(body)
            if isinstance(out, int):
                return out, b'{"error": "down"}', None
            return 200, {"choices": [{"index": i, "message": {"role": "assistant", "content": t}}
                                     for i, t in enumerate(out)]}, None

        self.url = f"{start(behave).base_url}/v1"

    def sets(self, section: str, model: str) -> list[str]:
        return [f"{section}.base_url={self.url}", f"{section}.model={model}", f"{section}.api_key_env=null",
                f"{section}.timeout_s=2", f"{section}.max_retries=0", f"{section}.backoff_s=0.01",
                f"{section}.max_concurrency=4"]


@pytest.fixture
def server(chat_server):
    return lambda reply: Server(chat_server, reply)


def _prompt(body: dict) -> str:
    content = body["messages"][0]["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


def judge_reply(body: dict) -> list[str]:
    """CORRECT when the candidate names the reference's city (a judge that reads words, not strings)."""
    prompt = _prompt(body)
    ref = prompt.split("Reference answer:\n", 1)[1].split("\n\nCandidate answer:", 1)[0].strip()
    cand = prompt.split("Candidate answer:\n", 1)[1].split("\n\nReply with", 1)[0]
    return ["CORRECT" if ref.lower() in cand.lower() else "INCORRECT"]


# --- multiple choice -> fill in the blank -----------------------------------------------


MC_SAMPLES = [
    {"sample_id": "mc-ok", "source": "mc", "task": "exact", "question": "What is the capital of France?",
     "options": ["Berlin", "Paris", "Rome", "Madrid"], "answer": "B"},
    {"sample_id": "mc-text", "source": "mc", "task": "exact", "question": "Largest planet?",
     "options": json.dumps(["Mars", "Jupiter"]), "answer": 1},
    {"sample_id": "mc-above", "source": "mc", "task": "exact", "question": "Which are mammals?",
     "options": ["cat", "dog", "All of the above"], "answer": "C"},
    {"sample_id": "mc-badopts", "source": "mc", "task": "exact", "question": "q?", "options": "not json",
     "answer": "A"},
    {"sample_id": "plain", "source": "mc", "task": "exact", "question": "2+2?", "answer": "4"},
]
MC_ROLLOUTS = [
    {"sample_id": "mc-ok", "model": "m", "response": box("Paris")},
    {"sample_id": "mc-ok", "model": "m", "response": box("B")},
    {"sample_id": "mc-text", "model": "m", "response": box("Jupiter")},
    {"sample_id": "mc-above", "model": "m", "response": box("C")},
    {"sample_id": "mc-badopts", "model": "m", "response": box("A")},
    {"sample_id": "plain", "model": "m", "response": box("4")},
]


def test_multiple_choice_becomes_fill_in_the_blank(tmp_path):
    write_jsonl(tmp_path / "s.jsonl", MC_SAMPLES)
    write_jsonl(tmp_path / "r.jsonl", MC_ROLLOUTS)
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.jsonl"], None)
    m = run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "out"), cfg)
    got = rows_of(tmp_path / "out", "question, answer, original_question, original_options, original_answer, "
                                    "pass_rate")
    assert set(got) == {"mc-ok", "mc-text", "plain"}
    assert got["mc-ok"] == ("What is the capital of France?", "Paris", "What is the capital of France?",
                            ["Berlin", "Paris", "Rome", "Madrid"], "B", 0.5)  # the letter is no longer right
    assert got["mc-text"][1] == "Jupiter" and got["mc-text"][3] == ["Mars", "Jupiter"]
    assert got["mc-text"][4] == "1" and got["mc-text"][5] == 1.0
    assert got["plain"] == ("2+2?", "4", None, None, None, 1.0)
    assert rejects_of(tmp_path / "out") == {("mc-above", "mc", "mc_not_convertible"),
                                            ("mc-badopts", "mc", "mc_not_convertible")}
    con = duckdb.connect()
    ((detail,),) = con.sql(f"SELECT detail FROM read_parquet('{tmp_path}/out/rejects/*.parquet') "
                           "WHERE sample_id = 'mc-above'").fetchall()
    assert detail.startswith("refers_to_options")
    assert m.rejected["mc"] == {"mc_not_convertible": 2}
    assert m.inputs == 5 == m.kept + m.rejected_total and m.balanced


def test_multiple_choice_conversion_can_be_turned_off(tmp_path):
    write_jsonl(tmp_path / "s.jsonl", MC_SAMPLES)
    write_jsonl(tmp_path / "r.jsonl", MC_ROLLOUTS)
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.jsonl", "grade.mc_to_fill_in=false"], None)
    m = run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "out"), cfg)
    got = rows_of(tmp_path / "out", "answer, original_question, pass_rate")
    assert set(got) == {s["sample_id"] for s in MC_SAMPLES}
    assert got["mc-ok"] == ("B", None, 0.5)
    assert m.balanced and "mc" not in m.rejected


# --- the model judge ----------------------------------------------------------------------


JUDGE_SAMPLES = [
    {"sample_id": "open", "source": "qa", "task": "open_qa", "question": "Capital of France?", "answer": "Paris"},
    {"sample_id": "exact", "source": "qa", "task": "exact", "question": "Capital of Italy?", "answer": "Rome"},
]
JUDGE_ROLLOUTS = [
    {"sample_id": "open", "model": "m", "response": box("It is Paris, of course")},
    {"sample_id": "open", "model": "m", "response": box("Lyon")},
    {"sample_id": "exact", "model": "m", "response": box("Rome")},
    {"sample_id": "exact", "model": "m", "response": box("the city of Rome")},
    {"sample_id": "exact", "model": "m", "response": box("Milan")},
    {"sample_id": "exact", "model": "m", "response": "no box at all"},
]


def test_judge_scores_judge_tasks_and_exact_fallback(tmp_path, server):
    judge = server(judge_reply)
    write_jsonl(tmp_path / "s.jsonl", JUDGE_SAMPLES)
    write_jsonl(tmp_path / "r.jsonl", JUDGE_ROLLOUTS)
    base = [f"rollouts={tmp_path}/r.jsonl", "verifiers.open_qa=judge", *judge.sets("judge", "judge-m")]

    cfg = resolve_config(SPEC, None, base, None)
    m = run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "o1"), cfg)
    got = rows_of(tmp_path / "o1", "pass_rate, n_correct")
    assert got["open"] == (0.5, 1)
    assert got["exact"] == (0.25, 1)  # no fallback: "the city of Rome" is a mismatch
    assert len(judge.bodies) == 2 and all(b["model"] == "judge-m" for b in judge.bodies)
    assert m.stages["judge"].inputs == 2 == m.stages["judge"].outputs

    judge.bodies.clear()
    cfg = resolve_config(SPEC, None, base + ["grade.judge_fallback=true"], None)
    m = run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "o2"), cfg)
    got = rows_of(tmp_path / "o2", "pass_rate, n_correct")
    assert got["exact"] == (0.5, 2)  # the mismatches went to the judge; the box-less one did not
    assert len(judge.bodies) == 4  # 2 open_qa + "the city of Rome" + "Milan"
    assert m.stages["judge"].inputs == 4 and m.balanced


def test_rows_whose_verifier_asks_for_the_judge_fall_back_without_the_global_switch(tmp_path, server):
    """VQA-type rows (verifier.judge=true, as gui element_perception and imagemining names write) ask the
    judge on an exact mismatch whenever a judge is configured; rows without it do not."""
    judge = server(judge_reply)
    write_jsonl(tmp_path / "s.jsonl", [
        {"sample_id": "vqa", "task": "vqa", "question": "Which city?", "answer": "Rome",
         "verifier": {"kind": "exact", "judge": True}},
        {"sample_id": "strict", "task": "vqa", "question": "Which city?", "answer": "Rome",
         "verifier": {"kind": "exact"}},
    ])
    write_jsonl(tmp_path / "r.jsonl", [{"sample_id": sid, "model": "m", "response": box("the city of Rome")}
                                       for sid in ("vqa", "strict")])
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.jsonl", *judge.sets("judge", "j")], None)
    m = run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "out"), cfg)
    got = rows_of(tmp_path / "out", "pass_rate")
    assert got == {"vqa": (1.0,), "strict": (0.0,)}
    assert len(judge.bodies) == 1 and m.stages["judge"].inputs == 1


def test_judge_errors_score_zero_and_are_counted(tmp_path, server):
    judge = server(lambda body: 500)
    write_jsonl(tmp_path / "s.jsonl", JUDGE_SAMPLES[:1])
    write_jsonl(tmp_path / "r.jsonl", JUDGE_ROLLOUTS[:2])
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.jsonl", "verifiers.open_qa=judge",
                                      *judge.sets("judge", "j")], None)
    m = run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "out"), cfg)
    assert rows_of(tmp_path / "out", "pass_rate, tier")["open"] == (0.0, "very_hard")
    assert m.stages["judge"].inputs == 2 and m.stages["judge"].outputs == 0


def test_judge_kind_without_judge_section_fails_before_the_run(tmp_path):
    write_jsonl(tmp_path / "s.jsonl", JUDGE_SAMPLES)
    write_jsonl(tmp_path / "r.jsonl", JUDGE_ROLLOUTS)
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.jsonl", "verifiers.open_qa=judge"], None)
    with pytest.raises(ConfigError, match=r"verifiers.open_qa=judge needs a judge section"):
        run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "o1"), cfg)
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.jsonl", "grade.judge_fallback=true"], None)
    with pytest.raises(ConfigError, match="judge_fallback needs a judge section"):
        run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "o2"), cfg)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


# --- rollout generation -------------------------------------------------------------------


def policy_reply(body: dict):
    """k choices per request; the question "fail" gets a 500; 2+2 is answered right half the time."""
    prompt, n = _prompt(body), body.get("n", 1)
    if prompt.startswith("fail"):
        return 500
    if prompt.startswith("2+2"):
        return [box("4") if i % 2 == 0 else box("5") for i in range(n)]
    return [box("Paris")] * n


def test_generated_rollouts_are_graded_and_failures_counted(tmp_path, server):
    policy = server(policy_reply)
    samples = [
        {"sample_id": "g1", "source": "gen", "task": "math", "question": "2+2?", "answer": "4"},
        {"sample_id": "g2", "source": "gen", "task": "exact", "question": "Capital of France?", "answer": "Paris"},
        {"sample_id": "g3", "source": "gen", "task": "exact", "question": "fail please", "answer": "x"},
        {"sample_id": "g4", "source": "gen", "task": "exact", "question": "What is the capital of France?",
         "options": ["Rome", "Paris"], "answer": "B"},
    ]
    write_jsonl(tmp_path / "s.jsonl", samples)
    cfg = resolve_config(SPEC, None, [*policy.sets("generate", "policy"), "generate.k=4",
                                      "generate.batch_size=2"], None)
    m = run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "out"), cfg)
    got = rows_of(tmp_path / "out", "pass_rate, n_rollouts, tier, models")
    assert got["g1"][:3] == (0.5, 4, "medium")
    assert got["g2"][:3] == (1.0, 4, "very_easy") and got["g2"][3][0]["model"] == "policy"
    assert got["g3"][:3] == (0.0, 4, "very_hard")  # failed requests: null responses scored 0
    assert got["g4"][:3] == (1.0, 4, "very_easy")  # generated from the fill-in question
    prompts = [_prompt(b) for b in policy.bodies]
    assert not any("Rome" in p for p in prompts)  # options were not shown to the policy
    assert all(b["n"] == 4 and b["model"] == "policy" for b in policy.bodies)
    assert m.stages["rollouts_generate"].inputs == 16 and m.stages["rollouts_generate"].outputs == 12
    assert "rollouts_read" not in m.stages
    assert m.inputs == 4 == m.kept and m.balanced
    assert m.extra["generated"] == {"model": "policy", "k": 4}


def test_generate_with_n_1_requests(tmp_path, server):
    policy = server(policy_reply)
    write_jsonl(tmp_path / "s.jsonl", [{"sample_id": "g1", "task": "math", "question": "2+2?", "answer": "4"}])
    cfg = resolve_config(SPEC, None, [*policy.sets("generate", "policy"), "generate.k=3",
                                      "generate.use_n=false"], None)
    m = run_dag(SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "out"), cfg)
    assert rows_of(tmp_path / "out", "pass_rate")["g1"] == (1.0,)  # n=1: always choice 0 = "4"
    assert len(policy.bodies) == 3 and m.stages["rollouts_generate"].outputs == 3


def test_questions_over_two_pictures_send_both_in_order(server, tmp_path):
    """imagemining rows with a visual hop name two pictures (image_ids): the policy gets both, in order, and the
    graded run keeps image_ids and stores every picture in its images table."""
    import base64
    import hashlib

    from quarry.dags import imagemining
    from quarry.dags.demos import imagemining as imagemining_demo

    demo = imagemining_demo.build(tmp_path / "in")
    run_dag(imagemining.SPEC, demo.patterns, str(tmp_path / "im"),
            resolve_config(imagemining.SPEC, None, demo.sets, "demo"))
    con = duckdb.connect()
    two = dict(con.sql(f"SELECT sample_id, image_ids FROM read_parquet('{tmp_path}/im/data/**/*.parquet') "
                       "WHERE len(image_ids) = 2").fetchall())
    assert len(two) == 4
    images = dict(con.sql(f"SELECT image_id, image.bytes FROM read_parquet('{tmp_path}/im/images/*.parquet')")
                  .fetchall())
    policy = server(lambda body: [box("Rome")])
    cfg = resolve_config(SPEC, None, [*policy.sets("generate", "policy"), "generate.k=1"], None)
    m = run_dag(SPEC, [str(tmp_path / "im")], str(tmp_path / "graded"), cfg)
    assert not rejects_of(tmp_path / "graded") and m.kept == m.inputs
    sent: dict[str, set] = {}  # question -> the pictures sent with it (two rows may share a question)
    for body in policy.bodies:
        parts = body["messages"][0]["content"]
        text = " ".join(p["text"] for p in parts if p["type"] == "text")
        pictures = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in parts
                    if p["type"] == "image_url"]
        sent.setdefault(text.split("\n")[0], set()).add(tuple(hashlib.sha256(b).hexdigest() for b in pictures))
    questions = dict(con.sql(f"SELECT sample_id, question FROM read_parquet('{tmp_path}/im/data/**/*.parquet')")
                     .fetchall())
    for sid, ids in two.items():
        assert tuple(hashlib.sha256(images[i]).hexdigest() for i in ids) in sent[questions[sid]]
    graded = rows_of(tmp_path / "graded", "image_ids")
    assert {sid: list(ids) for sid, (ids,) in graded.items() if ids} == {s: list(i) for s, i in two.items()}
    stored = {i for (i,) in con.sql(f"SELECT image_id FROM read_parquet('{tmp_path}/graded/images/*.parquet')")
              .fetchall()}
    assert {i for ids in two.values() for i in ids} <= stored


def test_a_missing_second_picture_is_a_join_reject(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "images").mkdir()
    (run / "manifest.json").write_text("{}")  # a run directory: its images/ table is joined
    pq.write_table(pa.table({"image_id": ["a"], "image": [{"bytes": buf.getvalue(), "path": None}],
                             "width": [8], "height": [8], "format": ["PNG"]}), run / "images" / "images-0.parquet")
    rows = [{"sample_id": "ok", "task": "visual_jump_qa", "question": "Q?", "answer": "x", "image_id": "a",
             "image_ids": ["a", "a"]},
            {"sample_id": "gone", "task": "visual_jump_qa", "question": "Q?", "answer": "x", "image_id": "a",
             "image_ids": ["a", "b"]},
            {"sample_id": "bad", "task": "visual_jump_qa", "question": "Q?", "answer": "x", "image_id": "a",
             "image_ids": ["b", "a"]}]
    pq.write_table(pa.Table.from_pylist(rows), run / "data" / "rows-0.parquet")
    write_jsonl(tmp_path / "r.jsonl", [{"sample_id": s, "model": "m", "response": box("x")} for s in ("ok", "gone")])
    cfg = resolve_config(SPEC, None, [f"rollouts={tmp_path}/r.jsonl", "verifiers.visual_jump_qa=exact"], None)
    run_dag(SPEC, [str(run)], str(tmp_path / "out"), cfg)
    assert rejects_of(tmp_path / "out") == {("gone", "join", "missing_image"), ("bad", "read", "missing_field")}
    assert set(rows_of(tmp_path / "out", "image_ids")) == {"ok"}
