"""The decontam stage switched on in the caption and grade DAGs with --set decontam.bench=PATH:
contaminated rows become `decontam` rejects, the manifest still adds up and carries the summary,
`quarry inspect` shows it; without the setting nothing changes."""

from __future__ import annotations

import io
import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from quarry.dags import caption, grade
from quarry.dags.demos.caption import CAPTIONS, DEMO_SETS, base_images, build_caption_input
from quarry.dags.inspect import summary
from quarry.dags.runner import resolve_config, run_dag
from quarry.schemas.config import ConfigError

pytestmark = pytest.mark.slow


def test_caption_with_decontam(tmp_path):
    build_caption_input(tmp_path / "in")
    (tmp_path / "bench" / "imgs").mkdir(parents=True)
    buf = io.BytesIO()
    base_images()["hubble_deep_field"].save(buf, "PNG")  # the tar holds a JPEG of it: other bytes, same picture
    (tmp_path / "bench" / "imgs" / "hubble.png").write_bytes(buf.getvalue())
    (tmp_path / "bench" / "spacebench.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "s1", "question": CAPTIONS["astronaut"].upper(), "answer": "flag"},
        {"id": "s2", "question": "How many galaxies are visible?", "image": "imgs/hubble.png"},
    ]) + "\n")
    sets = DEMO_SETS + ["clip.enabled=false", f"decontam.bench={tmp_path / 'bench'}"]
    m = run_dag(caption.SPEC, [str(tmp_path / "in" / "*.tar")], str(tmp_path / "out"),
                resolve_config(caption.SPEC, None, sets, "demo"))
    assert m.balanced and m.rejected["decontam"] == {"contaminated_text": 1, "contaminated_image": 1}
    got = duckdb.sql(f"SELECT origin.key, reason, detail FROM '{tmp_path}/out/rejects/*.parquet' "
                     "WHERE stage = 'decontam' ORDER BY 1").fetchall()
    assert [(k, r) for k, r, _ in got] == [("0000", "contaminated_text"), ("0004", "contaminated_image")]
    assert "benchmark=spacebench item=s1 field=caption" in got[0][2]
    assert m.extra["contamination"]["by_benchmark"] == {"spacebench": 2}
    assert m.stages["decontam"].inputs - m.stages["decontam"].outputs == 2
    text = summary(str(tmp_path / "out"))
    assert "contamination matches by benchmark x source" in text and "spacebench" in text


def test_caption_decode_limit_reaches_the_decontam_stage(tmp_path):
    """--set decode.max_pixels=N: the decontam stage decodes benchmark images under N too (one over it is counted
    unreadable, image_too_large); without the setting the same image is indexed."""
    build_caption_input(tmp_path / "in")
    (tmp_path / "bench").mkdir()
    big = io.BytesIO()
    Image.new("RGB", (1200, 1000), (30, 60, 90)).save(big, "PNG")  # 1.2 MP
    pq.write_table(pa.table({"id": ["b1"], "question": ["Which colour fills the whole picture, edge to edge?"],
                             "image": [big.getvalue()]}), tmp_path / "bench" / "big.parquet")
    for name, extra, unreadable in (("limited", ["decode.max_pixels=1000000"], 1), ("default", [], 0)):
        sets = DEMO_SETS + ["clip.enabled=false", f"decontam.bench={tmp_path / 'bench'}"] + extra
        m = run_dag(caption.SPEC, [str(tmp_path / "in" / "*.tar")], str(tmp_path / name),
                    resolve_config(caption.SPEC, None, sets, "demo"))
        index = m.extra["contamination"]["index"]
        assert m.balanced and index["images_unreadable"] == unreadable, (name, index)
        assert (unreadable == 1) == any("image_too_large" in e for e in index["unreadable_examples"])


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


QUESTION = "In the triangle shown, the two marked angles sum to ninety degrees; what is the measure of the third angle?"


def test_grade_with_decontam_drop_and_flag(tmp_path):
    _write_jsonl(tmp_path / "s.jsonl", [
        {"sample_id": "g1", "task": "numeric", "question": QUESTION.lower(), "answer": "90", "source": "geo"},
        {"sample_id": "g2", "task": "numeric", "question": "What is 12 times 12?", "answer": "144", "source": "arith"},
        {"sample_id": "g3", "task": "exact", "question": "Which option names the longest river?", "answer": "B",
         "options": ["Amazon", "Nile, the longest river in the world according to most published reference sources"],
         "source": "geo"},
    ])
    _write_jsonl(tmp_path / "r.jsonl", [{"sample_id": s, "model": "m", "response": "<answer>x</answer>"}
                                        for s in ("g1", "g2", "g3")])
    _write_jsonl(tmp_path / "geobench.jsonl", [
        {"id": 1, "question": QUESTION, "answer": "90"},
        {"id": 2, "question": "Name a river.",
         "choices": ["Nile, the longest river in the world according to most published reference sources"]},
    ])
    base = [f"rollouts={tmp_path}/r.jsonl", f"decontam.bench={tmp_path}/geobench.jsonl"]
    m = run_dag(grade.SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "drop"),
                resolve_config(grade.SPEC, None, base, None))
    assert m.balanced and m.kept == 1 and m.rejected["decontam"] == {"contaminated_text": 2}
    assert m.extra["contamination"]["by_source"] == {"geo": 2}
    fields = duckdb.sql(f"SELECT sample_id, field, item_id FROM '{tmp_path}/drop/contamination/*.parquet' "
                        "ORDER BY 1").fetchall()
    assert fields == [("g1", "question", "1"), ("g3", "options[1]", "2")]
    flagged = run_dag(grade.SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "flag"),
                      resolve_config(grade.SPEC, None, base + ["decontam.action=flag"], None))
    assert flagged.kept == 3 and flagged.balanced and flagged.extra["contamination"]["matches"] == 2


def test_bad_benchmark_fails_before_the_run(tmp_path):
    _write_jsonl(tmp_path / "bench.jsonl", [{"text": "no question column here"}])
    cfg = resolve_config(grade.SPEC, None, [f"rollouts={tmp_path}/r.jsonl", f"decontam.bench={tmp_path}/bench.jsonl"],
                         None)
    _write_jsonl(tmp_path / "s.jsonl", [{"sample_id": "a", "task": "exact", "question": "q", "answer": "a"}])
    with pytest.raises(ConfigError, match="benchmark bench .*no question column"):
        run_dag(grade.SPEC, [str(tmp_path / "s.jsonl")], str(tmp_path / "o"), cfg)
    assert not (tmp_path / "o").exists()
