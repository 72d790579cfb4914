"""The decontam DAG end to end: the "done when" check (verbatim and lightly edited question copies,
recompressed and resized images all caught, no clean row flagged), the manifest adding up, flag mode,
quarry run directories as input, bad inputs, reruns."""

from __future__ import annotations

import io
import json
import random

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from quarry.dags import decontam
from quarry.dags.demos import decontam as decontam_demo
from quarry.dags.runner import reject_counts, resolve_config, run_dag
from quarry.pipelines.decontam import STAGE_REASONS
from quarry.pipelines.read import InputError
from quarry.schemas.config import ConfigError

SPEC = decontam.SPEC
pytestmark = pytest.mark.slow

WORDS = ("angle triangle circle radius chord area volume prism cylinder velocity force mass charge current "
         "voltage resistor lens mirror photon enzyme cell membrane protein gene species habitat river "
         "mountain desert forest chart bar line pie axis trend median mean ratio percent profit cost revenue "
         "tax price market export import region city country decade century empire treaty war king queen "
         "poem novel author painting museum sculpture melody rhythm tempo chord scale planet orbit comet "
         "galaxy star telescope").split()


def _question(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(14, 26))]
    return "Considering the " + " ".join(words) + ", which option is correct?"


def _picture(rng: np.random.Generator, size: int = 128) -> Image.Image:
    small = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def _enc(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _edit(q: str, how: int) -> str:
    if how == 0:
        return q
    if how == 1:
        return q.upper()
    if how == 2:
        return q.replace(",", " ;").replace("?", "!!").replace("the", "the,")
    if how == 3:
        return "\n\n  " + q.replace(" ", "   \t") + "  \n"
    return "Q: " + q.lower().replace(",", "") + " A: (b)"


@pytest.fixture(scope="module")
def done_when(tmp_path_factory):
    """60 benchmark items (text, 20 with images) in two hub-style files; 90 training rows: 40 copies, 50 clean."""
    root = tmp_path_factory.mktemp("dc")
    rng, nrng = random.Random(11), np.random.default_rng(11)
    bench_dir = root / "bench" / "SynthVQA" / "data"
    bench_dir.mkdir(parents=True)
    questions = [_question(rng) for _ in range(60)]
    pictures = [_picture(nrng) for _ in range(20)]
    for part in range(2):
        sl = slice(part * 30, part * 30 + 30)
        images = [{"bytes": _enc(pictures[i]), "path": None} if i < 20 else None for i in range(60)][sl]
        pq.write_table(pa.table({"question_id": [f"q{i}" for i in range(60)][sl], "question": questions[sl],
                                 "choices": [["A", "B", "C", "D"]] * 30, "answer": ["B"] * 30,
                                 "decoded_image": images}),
                       bench_dir / f"test-0000{part}-of-00002.parquet")
    rows, expect = [], {}
    for i in range(25):  # text copies, five kinds of edit
        rows.append({"sample_id": f"text-{i}", "source": "web", "question": _edit(questions[i * 2], i % 5),
                     "image": None})
        expect[f"text-{i}"] = ("contaminated_text", f"q{i * 2}")
    for i in range(15):  # image copies: recompressed, resized, both
        img = pictures[i]
        variant = [_enc(img, "JPEG", quality=40), _enc(img.resize((300, 300)), "PNG"),
                   _enc(img.resize((90, 90)), "JPEG", quality=70)][i % 3]
        rows.append({"sample_id": f"image-{i}", "source": "books", "question": "Describe the picture in detail.",
                     "image": variant})
        expect[f"image-{i}"] = ("contaminated_image", f"q{i}")
    for i in range(50):  # clean rows: same vocabulary and templates, other pictures
        rows.append({"sample_id": f"clean-{i}", "source": "web" if i % 2 else "books",
                     "question": _question(rng), "image": _enc(_picture(nrng), "JPEG", quality=85) if i < 30 else None})
    schema = pa.schema([("sample_id", pa.string()), ("source", pa.string()), ("question", pa.string()),
                        ("image", pa.binary())])
    train = root / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), train)
    return root, train, expect


def test_done_when_all_copies_caught_no_false_positives(done_when, tmp_path):
    root, train, expect = done_when
    cfg = resolve_config(SPEC, None, [f"decontam.bench={root / 'bench'}"], None)
    m = run_dag(SPEC, [str(train)], str(tmp_path / "out"), cfg)
    assert m.inputs == 90 and m.kept == 50 and m.rejected_total == 40 and m.balanced
    got = {sid: (reason, detail) for sid, reason, detail in duckdb.sql(
        f"SELECT sample_id, reason, detail FROM '{tmp_path}/out/rejects/*.parquet'").fetchall()}
    assert set(got) == set(expect)
    for sid, (reason, item) in expect.items():
        assert got[sid][0] == reason and f"benchmark=SynthVQA item={item} " in got[sid][1], (sid, got[sid])
    kept = {r[0] for r in duckdb.sql(
        f"SELECT sample_id FROM read_parquet('{tmp_path}/out/data/**/*.parquet', hive_partitioning=true)").fetchall()}
    assert kept == {f"clean-{i}" for i in range(50)}
    summary = m.extra["contamination"]
    assert summary["by_benchmark"] == {"SynthVQA": 40} and summary["by_source"] == {"books": 15, "web": 25}
    assert summary["index"]["items"] == 60 and summary["index"]["images"] == 20


def test_flag_mode_keeps_rows_with_columns_and_rerun_is_identical(done_when, tmp_path):
    root, train, expect = done_when
    cfg = resolve_config(SPEC, None, [f"decontam.bench={root / 'bench'}", "decontam.action=flag"], "fallback")
    m = run_dag(SPEC, [str(train)], str(tmp_path / "a"), cfg)
    assert m.kept == 90 and m.rejected_total == 0 and m.balanced
    flagged = duckdb.sql(f"SELECT sample_id, contamination[1] FROM read_parquet('{tmp_path}/a/data/**/*.parquet', "
                         "hive_partitioning=true) WHERE contaminated").fetchall()
    assert {s for s, _ in flagged} == set(expect)
    assert all(c.startswith(("contaminated_text benchmark=SynthVQA", "contaminated_image benchmark=SynthVQA"))
               for _, c in flagged)
    m2 = run_dag(SPEC, [str(train)], str(tmp_path / "b"), cfg)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "data").rglob("*.parquet"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "data").rglob("*.parquet"))
    assert files_a == files_b and m2.kept == 90
    for rel in files_a:
        assert pq.read_table(tmp_path / "a" / rel).equals(pq.read_table(tmp_path / "b" / rel))
    ca = duckdb.sql(f"SELECT * FROM '{tmp_path}/a/contamination/*.parquet' ORDER BY sample_id, field").fetchall()
    cb = duckdb.sql(f"SELECT * FROM '{tmp_path}/b/contamination/*.parquet' ORDER BY sample_id, field").fetchall()
    assert ca == cb and len(ca) == 40


def test_quarry_run_dir_and_jsonl_inputs_with_bad_lines(tmp_path):
    from quarry.dags.cli import main
    from quarry.dags.inspect import summary

    demo = decontam_demo.build(tmp_path / "demo")
    inputs, sets = demo.patterns, demo.sets
    cfg = resolve_config(SPEC, None, sets, None)
    bench = sets[0].split("=", 1)[1]
    # `quarry decontam` is `quarry run decontam` with --bench as decontam.bench.
    assert main(["decontam", "--bench", bench, "--input", inputs[0], "--output", str(tmp_path / "run1")]) == 0
    first = json.loads((tmp_path / "run1" / "manifest.json").read_text())
    assert first["kept"] == 4 and first["rejected"] == {"decontam": {"contaminated_text": 3, "contaminated_image": 1}}
    assert first["extra"]["contamination"]["by_source"] == {"k12": 2, "webqa": 2}
    text = summary(str(tmp_path / "run1"))
    assert "contamination matches by benchmark x source" in text and "demobench" in text
    assert main(["decontam", "--bench", str(tmp_path / "none*.parquet"), "--input", inputs[0],
                 "--output", str(tmp_path / "never")]) == 2
    # A quarry run directory as input means its data/ shards (not its rejects or contamination tables).
    again = run_dag(SPEC, [str(tmp_path / "run1")], str(tmp_path / "run2"), cfg)
    assert again.inputs == 4 and again.kept == 4 and again.rejected_total == 0
    # JSONL: empty text, a CJK copy, an unparseable line, an image path that is not there.
    jsonl = tmp_path / "rows.jsonl"
    q_zh = "如图所示，在平行四边形ABCD中，对角线AC与BD相交于点O，若AC等于八，求AO的长度"
    jsonl.write_text("\n".join([
        json.dumps({"id": "j1", "text": ""}),
        json.dumps({"id": "j2", "text": "请回答：" + q_zh.replace("，", ",")}, ensure_ascii=False),
        "{broken json",
        json.dumps({"id": "j3", "text": "一道完全不同的题目：计算三加五等于多少", "image": "missing.png"},
                   ensure_ascii=False),
    ]) + "\n")
    m = run_dag(SPEC, [str(jsonl)], str(tmp_path / "run3"), cfg)
    assert m.inputs == 4 and m.kept == 2 and m.balanced
    assert m.rejected == {"read": {"invalid_json": 1}, "decontam": {"contaminated_text": 1}}
    rows = duckdb.sql(f"SELECT id, source, tier FROM read_parquet('{tmp_path}/run3/data/**/*.parquet', "
                      "hive_partitioning=true) ORDER BY id").fetchall()
    assert rows == [("j1", "unknown", "medium"), ("j3", "unknown", "medium")]


def test_bad_benchmark_and_config_fail_before_running(tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"prompt_text": "x", "other": 1}) + "\n")
    train = tmp_path / "t.jsonl"
    train.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(ConfigError, match="decontam.bench=PATH"):
        run_dag(SPEC, [str(train)], str(tmp_path / "o1"), resolve_config(SPEC, None, [], None))
    with pytest.raises(ConfigError, match="benchmark b .*no question column.*columns are \\['other', 'prompt_text'\\]"):
        run_dag(SPEC, [str(train)], str(tmp_path / "o2"), resolve_config(SPEC, None, [f"decontam.bench={bench}"], None))
    with pytest.raises(ConfigError, match="no column 'q' \\(decontam.columns.b.question\\)"):
        run_dag(SPEC, [str(train)], str(tmp_path / "o3"), resolve_config(
            SPEC, None, [f"decontam.bench={bench}", "decontam.columns.b.question=q"], None))
    ok = [f"decontam.bench={bench}", "decontam.columns.b.question=prompt_text"]
    with pytest.raises(InputError, match="no files match"):
        run_dag(SPEC, [str(tmp_path / "nothing*.parquet")], str(tmp_path / "o4"), resolve_config(SPEC, None, ok, None))
    pq.write_table(pa.table({"question": ["q"]}), tmp_path / "t.parquet")
    with pytest.raises(InputError, match="no column\\(s\\) caption \\(decontam.text_fields\\)"):
        run_dag(SPEC, [str(tmp_path / "t.parquet")], str(tmp_path / "o5"),
                resolve_config(SPEC, None, ok + ["decontam.text_fields=[caption]"], None))
    assert not (tmp_path / "o2").exists()


def test_every_reject_reason_is_listed_for_its_stage(demo_dir):
    """STAGE_REASONS names every stage of SPEC (but `read`, the reader's) and every (stage, reason) the demo wrote."""
    assert set(STAGE_REASONS) == {s.name for s in decontam.SPEC.stages} - {"read"}
    listed = {(stage, r) for stage, reasons in STAGE_REASONS.items() for r in reasons}
    written = {(stage, r) for stage, reasons in reject_counts(str(demo_dir / "decontam")).items() for r in reasons
               if stage != "read"}
    assert written == {("decontam", "contaminated_text"), ("decontam", "contaminated_image")} and written <= listed

