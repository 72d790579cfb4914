"""pipelines/ocr_synth.py: the text reader's records and rejects, and the render transform in a TestPipeline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from quarry.operators.ids import digest
from quarry.operators.ocr import render as render_ops
from quarry.pipelines.ocr_search import plan_ocr_inputs
from quarry.pipelines.ocr_synth import (
    MISSING_TEXT,
    RENDER_MISMATCH,
    TEXT_NOT_STRING,
    TEXT_NOT_UTF8,
    OcrSynthPipeline,
    TextItem,
    _Drawer,
    _Redraw,
    plan_texts,
    read_text_file,
    render_config,
    to_row,
)
from quarry.schemas.common import Origin, Reject
from quarry.schemas.config import ReaderConfig
from quarry.schemas.ocr_synth import OcrSynthConfig, OcrSynthRow, RenderSection, TextInputConfig

pytestmark = pytest.mark.skipif(not render_ops.installed_fonts(), reason="no system fonts")


def _read(folder: Path, cfg: TextInputConfig = TextInputConfig()):
    out = []
    for f in plan_texts([str(folder)], cfg):
        out += [(Path(x.origin.file).name, x.origin.key, x.reason if isinstance(x, Reject) else x.text)
                for x in read_text_file(f, "src", cfg)]
    return sorted(out)


def test_text_reader_yields_samples_and_rejects_with_reasons(tmp_path):
    (tmp_path / "a.txt").write_text("hello world", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "big.txt").write_text("x" * 200, encoding="utf-8")
    lines = [{"text": "one"}, {"text": 5}, {"text": ["a"]}, {"other": "x"}, {"text": None}]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n", encoding="utf-8")
    got = _read(tmp_path, TextInputConfig(max_text_bytes=100))
    assert got == sorted([
        ("a.txt", "a.txt", "hello world"), ("latin1.txt", "latin1.txt", TEXT_NOT_UTF8),
        ("big.txt", "big.txt", "file_too_large"),
        ("t.jsonl", "line:1", "one"), ("t.jsonl", "line:2", TEXT_NOT_STRING), ("t.jsonl", "line:3", TEXT_NOT_STRING),
        ("t.jsonl", "line:4", MISSING_TEXT), ("t.jsonl", "line:5", MISSING_TEXT), ("t.jsonl", "line:6", "invalid_json"),
    ])


def test_parquet_text_column_is_sniffed_or_named(tmp_path):
    pq.write_table(pa.table({"content": ["alpha", "beta"], "n": [1, 2]}), tmp_path / "docs.parquet")
    assert _read(tmp_path) == [("docs.parquet", "row:0", "alpha"), ("docs.parquet", "row:1", "beta")]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "docs.parquet")
    assert _read(tmp_path, TextInputConfig(text_column="body")) == [("docs.parquet", "row:0", "x")]


def test_render_transform_keeps_and_rejects(tmp_path):
    bgs = tmp_path / "bg"
    bgs.mkdir()
    Image.new("RGB", (320, 240), (90, 140, 200)).save(bgs / "blue.png")
    (bgs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cfg = OcrSynthConfig(source="t", backgrounds={"input": [str(bgs)]}, render={"canvas_side": 320, "layouts": ["paragraph"]})
    files = plan_ocr_inputs([str(bgs)], ReaderConfig())

    def item(i, text):
        return TextItem(f"id{i}", "t", Origin(file="f.txt", key=str(i)), text)

    with TestPipeline() as p:
        out = (p | beam.Create([item(1, "Hello there"), item(2, ""), item(3, "\U00010C00")])
               | OcrSynthPipeline(cfg, files))
        assert_that(out.rows | beam.Map(lambda r: (isinstance(r, OcrSynthRow), r.sample_id, r.text, r.task)),
                    equal_to([(True, "id1", "Hello there", "ocr")]), label="rows")
        assert_that(out.rejected | beam.Map(lambda r: (r.stage, r.reason)),
                    equal_to([("backgrounds", "corrupt_image"), ("render", "empty_text"),
                              ("render", "no_font_coverage")]), label="rejects")


def test_writer_draws_each_png_again_and_rejects_a_render_that_differs(tmp_path):
    """Rows travel without their PNG; `_Redraw` draws it again, and a digest that does not match (the image the
    row was made from is not the one drawn now) is a `write/render_mismatch` reject, not a silent wrong image."""
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (90, 140, 200)).save(buf, format="PNG")
    backgrounds = [("bg1", buf.getvalue())]
    rcfg = render_config(RenderSection(canvas_side=320, layouts=["paragraph"]))
    items = [TextItem(f"id{i}", "t", Origin(file="f.txt", key=str(i)), f"Hello number {i}") for i in range(3)]
    rows = []
    for it in items:
        bg_id, out = _Drawer(rcfg, 8).draw(it.sample_id, it.text, backgrounds)
        first = to_row(it, bg_id, out, keep_image=False)
        assert first.image.bytes == b"" and first.image_digest == digest(out.png)
        rows.append({**first.model_dump(), "_text": it.text})
    rows[1]["image_digest"] = "0" * 32  # as if the background or a font had changed between the two renders
    got = list(_Redraw(rcfg, 8)(rows, backgrounds))
    kept = [d for d in got if isinstance(d, dict)]
    assert [d["sample_id"] for d in kept] == ["id0", "id2"]
    assert all(digest(d["image"]["bytes"]) == d["image_digest"] and "_text" not in d for d in kept)
    (bad,) = [t.value for t in got if not isinstance(t, dict)]
    assert (bad.sample_id, bad.stage, bad.reason) == ("id1", "write", RENDER_MISMATCH)
