"""ocr_synth end to end through run_dag on the demo inputs: rows, rejects with reasons, manifest, reruns."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from PIL import Image

from quarry.dags.demos import ocr_synth as demo
from quarry.dags.inspect import differences, fingerprint
from quarry.dags.ocr_synth import SPEC
from quarry.dags.runner import resolve_config, run_dag
from quarry.operators.ids import digest
from quarry.operators.ocr import render as render_ops
from quarry.pipelines.read import InputError
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.common import TIERS
from quarry.schemas.config import ConfigError
from quarry.schemas.ocr_synth import OcrSynthRow

pytestmark = pytest.mark.skipif(not render_ops.installed_fonts(), reason="no system fonts")


def _run(tmp: Path, name: str = "out", extra_sets: tuple[str, ...] = ()):
    d = demo.build(tmp / "in")
    cfg = resolve_config(SPEC, None, list(d.sets) + list(extra_sets), "demo-ocr_synth")
    out = tmp / name
    return run_dag(SPEC, d.patterns, str(out), cfg), out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ocr_synth")
    manifest, out = _run(tmp)
    return tmp, manifest, out


def _rows(out: Path):
    return duckdb.sql(f"SELECT * FROM read_parquet('{out}/data/**/*.parquet', hive_partitioning=true)").df()


def _rejects(out: Path) -> dict[str, tuple[str, str]]:
    t = pq.read_table(str(next((out / "rejects").glob("*.parquet"))))
    return {Path(o["file"]).name: (s, r) for o, s, r in zip(t["origin"].to_pylist(), t["stage"].to_pylist(),
                                                            t["reason"].to_pylist())}


def test_each_bad_input_is_rejected_with_its_reason(run):
    _, manifest, out = run
    got = _rejects(out)
    assert got["empty.txt"] == ("render", render_ops.EMPTY_TEXT)
    assert got["old_turkic.txt"] == ("render", render_ops.NO_FONT_COVERAGE)
    assert got["truncated.jpg"] == ("backgrounds", "corrupt_image")
    assert got["bomb.png"] == ("backgrounds", "image_too_large")
    t = pq.read_table(str(next((out / "rejects").glob("*.parquet")))).to_pylist()
    jsonl = sorted((r["origin"]["key"], r["reason"]) for r in t if r["origin"]["file"].endswith("lines.jsonl"))
    assert jsonl == [("line:6", "text_not_string"), ("line:7", "invalid_json")]
    declared = {(s.reject_stage, reason) for s in SPEC.stages for reason in s.reasons}
    assert {(r["stage"], r["reason"]) for r in t} <= declared


def test_manifest_adds_up(run):
    _, m, out = run
    stats = {p.stem: json.loads(p.read_text()) for p in (out / "_stats").glob("*.json")}
    counts = {k: (v if isinstance(v, int) else v.get("count", v)) for k, v in stats.items()}
    rej = m.rejected
    text_files = len(list((out.parent / "in" / "texts").glob("*.txt")))
    jsonl_lines = len((out.parent / "in" / "texts" / "lines.jsonl").read_text().splitlines())
    assert m.inputs == text_files + jsonl_lines + sum(rej.get("read", {}).values()) - 2  # 2 read rejects are jsonl
    assert m.stages["render"].inputs == m.stages["render"].outputs + sum(rej["render"].values())
    assert m.stages["render"].outputs == m.kept
    assert m.stages["backgrounds"].inputs == m.stages["backgrounds"].outputs + sum(rej["backgrounds"].values())
    assert m.stages["backgrounds"].inputs == len(demo.DEMO_BACKGROUNDS) + 2
    assert m.kept == sum(m.rows_by_partition.values()) == len(_rows(out))
    assert m.notes == []
    del counts


def test_rows_hold_the_schema_and_exact_truth(run):
    _, m, out = run
    f = next((out / "data").rglob("*.parquet"))
    assert pq.read_schema(f).remove_metadata().equals(arrow_schema(OcrSynthRow).remove_metadata(), check_metadata=False)
    df = _rows(out)
    assert set(df["tier"]) <= set(TIERS) and len(set(df["tier"])) >= 2
    assert set(df["task"]) == {"ocr"}
    assert (df["answer"] == df["text"]).all()
    assert all(v["kind"] == "ocr" for v in df["verifier"])
    assert "WenQuanYiMicroHei" in set(df["font"])  # the Chinese lines
    assert (df["chars_cut"] > 0).any()  # long.txt was cut
    for _, row in df.iterrows():
        im = Image.open(io.BytesIO(row["image"]["bytes"]))
        assert im.size == (row["width"], row["height"])
        assert digest(row["image"]["bytes"]) == row["image_digest"]  # drawn again at write time: the same PNG
        assert row["text"] == "\n".join(ln["text"] for ln in row["lines"])
        for ln in row["lines"]:
            x0, y0, x1, y1 = ln["box"]
            assert 0 <= x0 < x1 <= row["width"] and 0 <= y0 < y1 <= row["height"]
            assert ln["contrast"] >= 4.5
            assert list(ln["box_1000"]) == render_ops.to_1000(ln["box"], row["width"], row["height"])


def test_rerun_is_byte_identical(run, tmp_path):
    tmp, _, out = run
    d = demo.build(tmp / "in")  # same paths: rows carry input paths
    cfg = resolve_config(SPEC, None, list(d.sets), "demo-ocr_synth")
    again = tmp_path / "again"
    run_dag(SPEC, d.patterns, str(again), cfg)
    assert differences(fingerprint(str(out)), fingerprint(str(again))) == []


def test_missing_backgrounds_and_unknown_fonts_fail_before_the_run(tmp_path):
    d = demo.build(tmp_path / "in")
    with pytest.raises(ConfigError, match="backgrounds.input"):
        run_dag(SPEC, d.patterns, str(tmp_path / "o1"), resolve_config(SPEC, None, [], None))
    with pytest.raises(ConfigError, match="render.fonts"):
        run_dag(SPEC, d.patterns, str(tmp_path / "o2"),
                resolve_config(SPEC, None, list(d.sets) + ["render.fonts=[Comic]"], None))
    with pytest.raises(InputError, match="no files match"):
        run_dag(SPEC, [str(tmp_path / "nothing-here")], str(tmp_path / "o3"), resolve_config(SPEC, None, d.sets, None))
