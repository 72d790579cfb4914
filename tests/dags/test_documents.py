"""documents end to end through run_dag on the demo inputs: manifest adds up, every bad input's reason,
rows pass their own OCR verifier (selfcheck), reruns give the same ids, a real Debian PDF reads."""

from __future__ import annotations

import glob
import gzip
import json
from pathlib import Path

import duckdb
import pytest
from quarry.dags.demos import documents as demo
from quarry.dags.documents import SPEC
from quarry.dags.runner import resolve_config, run_dag
from quarry.dags.selfcheck import selfcheck
from quarry.operators.documents import pdf as pdf_ops

EXPECTED_REJECTS = {
    ("scan.pdf#page=1", "page", pdf_ops.NO_TEXT_LAYER),
    ("encrypted.pdf", "open", pdf_ops.ENCRYPTED),
    ("truncated.pdf", "open", pdf_ops.TRUNCATED_PDF),
    ("not_a_pdf.pdf", "open", pdf_ops.NOT_A_PDF),
    ("javascript.pdf", "open", pdf_ops.JAVASCRIPT),
    ("attachment.pdf", "open", pdf_ops.EMBEDDED_FILES),
    ("zero_pages.pdf", "open", pdf_ops.NO_PAGES),
    ("huge_page.pdf#page=1", "page", pdf_ops.PAGE_TOO_LARGE),
    ("long.pdf", "open", pdf_ops.TOO_MANY_PAGES),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("documents")
    d = demo.build(base / "in")
    cfg = resolve_config(SPEC, None, d.sets, "demo-documents")
    manifest = run_dag(SPEC, d.patterns, str(base / "out"), cfg)
    return base, d, cfg, manifest


def _rows(out: Path) -> list[dict]:
    con = duckdb.connect()
    return [dict(zip(("key", "page", "count", "doc", "tier", "text", "sid", "cols", "table"), r)) for r in con.sql(
        f"SELECT origin.key, page_number, page_count, document_id, tier, text, sample_id, columns, has_table "
        f"FROM read_parquet('{out}/data/**/*.parquet', hive_partitioning=true) ORDER BY 1").fetchall()]


def test_manifest_adds_up_and_every_bad_input_has_its_reason(run):
    base, _, _, m = run
    assert m.balanced is True and m.inputs == m.kept + m.rejected_total
    rows = _rows(base / "out")
    assert [r["key"] for r in rows] == ["long.pdf#page=1", "long.pdf#page=2", "long.pdf#page=3", "long.pdf#page=4",
                                        "paper.pdf#page=1", "paper.pdf#page=2", "table.pdf#page=1"]
    rejects = duckdb.sql(f"SELECT origin.key, stage, reason FROM read_parquet('{base}/out/rejects/*.parquet')")
    assert set(rejects.fetchall()) == EXPECTED_REJECTS and m.rejected_total == len(EXPECTED_REJECTS)
    declared = {s.name: set(s.reasons) for s in SPEC.stages}
    assert all(reason in declared[stage] for _, stage, reason in EXPECTED_REJECTS)


def test_pages_read_in_order_with_document_ids(run):
    base = run[0]
    rows = {r["key"]: r for r in _rows(base / "out")}
    two = rows["paper.pdf#page=2"]
    assert two["text"].split("\n") == ["Two columns, one title", *demo.LEFT, *demo.RIGHT] and two["cols"] == 2
    assert rows["paper.pdf#page=1"]["doc"] == two["doc"] and two["count"] == 2
    assert rows["table.pdf#page=1"]["table"] and rows["table.pdf#page=1"]["text"].startswith("Prices\nItem\nCount")
    assert rows["long.pdf#page=3"]["count"] == 12 and rows["long.pdf#page=3"]["text"] == "page 3"


def test_selfcheck_gold_one_perturbed_zero(run, tmp_path):
    report = selfcheck(str(run[0] / "out"), str(tmp_path))
    assert set(report.tasks) == {"ocr"} and report.ok
    t = report.tasks["ocr"]
    assert t.rows == 7 and t.gold_right == 7 and t.perturbed_right == 0


def test_rerun_gives_the_same_rows(run, tmp_path):
    base, d, cfg, _ = run
    run_dag(SPEC, d.patterns, str(tmp_path / "again"), cfg)
    assert _rows(tmp_path / "again") == _rows(base / "out")


def test_ocr_fallback_reads_the_scan_or_rejects_it(tmp_path):
    """With documents.ocr_fallback the scan goes to the OCR engine: its dark bars are no text, so it is still
    refused no_text_layer, by OCR this time (the detail says so)."""
    from quarry.operators.documents import makepdf as m

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "scan.pdf").write_bytes(m.build([m.scan_page()]))
    cfg = resolve_config(SPEC, None, ["documents.ocr_fallback=true", "ocr.threads=1"], "t")
    manifest = run_dag(SPEC, [str(tmp_path / "in")], str(tmp_path / "out"), cfg)
    assert manifest.balanced
    (detail,) = duckdb.sql(f"SELECT detail FROM read_parquet('{tmp_path}/out/rejects/*.parquet')").fetchall()[0:1]
    assert "OCR" in detail[0]


DEBIAN_PDFS = sorted(glob.glob("/usr/share/doc/*/*.pdf") + glob.glob("/usr/share/doc/*/*.pdf.gz"))


@pytest.mark.skipif(not DEBIAN_PDFS, reason="no PDF in the Debian documentation packages here")
def test_a_real_debian_pdf(tmp_path):
    src = DEBIAN_PDFS[0]
    data = gzip.decompress(Path(src).read_bytes()) if src.endswith(".gz") else Path(src).read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "real.pdf").write_bytes(data)
    cfg = resolve_config(SPEC, None, ["documents.max_pages=3", "documents.dpi=72"], "debian")
    m = run_dag(SPEC, [str(tmp_path / "in")], str(tmp_path / "out"), cfg)
    assert m.balanced and m.kept >= 1
    assert all(r["text"] for r in _rows(tmp_path / "out"))
    json.loads((tmp_path / "out" / "manifest.json").read_text())


def test_decontam_stage_drops_a_page_whose_text_is_a_benchmark_item(tmp_path):
    from quarry.operators.documents import makepdf as m

    (tmp_path / "in").mkdir()
    page = m.prose_page("Benchmark page", ["the quick brown fox jumps over the lazy dog near the river bank today"])
    (tmp_path / "in" / "a.pdf").write_bytes(m.build([page, m.prose_page("Clean page", ["nothing to see here"])]))
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "docbench.jsonl").write_text(json.dumps({
        "id": "d1", "question": "the quick brown fox jumps over the lazy dog near the river bank today",
        "answer": "x"}) + "\n")
    cfg = resolve_config(SPEC, None, [f"decontam.bench={tmp_path / 'bench'}"], "t")
    manifest = run_dag(SPEC, [str(tmp_path / "in")], str(tmp_path / "out"), cfg)
    assert manifest.balanced and manifest.kept == 1
    assert manifest.rejected["decontam"] == {"contaminated_text": 1}


def test_pdf_bombs_end_as_rows_or_rejects_in_bounded_time_and_the_manifest_adds_up(tmp_path):
    """A 10,000-page document (capped with a reason), a page tree claiming 5,000,000 pages (PDFium counts the
    real one), 200,000 nested arrays (PDFium's depth limit) and a page millions of points wide, through the DAG."""
    import time

    from quarry.operators.documents import makepdf as m

    (tmp_path / "in").mkdir()
    one = [m.prose_page("One page", ["a page under a deeply nested object"])]
    for name, data in {"ten_thousand.pdf": m.many_pages(10_000), "lying.pdf": m.lying_page_count(5_000_000),
                       "deep.pdf": m.deep_nesting(one, depth=200_000), "huge.pdf": m.huge_page()}.items():
        (tmp_path / "in" / name).write_bytes(data)
    cfg = resolve_config(SPEC, None, ["documents.max_pages=3", "documents.dpi=36"], "bombs")
    t = time.monotonic()
    m_ = run_dag(SPEC, [str(tmp_path / "in")], str(tmp_path / "out"), cfg)
    assert time.monotonic() - t < 120
    rows = {r["key"]: r for r in _rows(tmp_path / "out")}
    rejects = set(duckdb.sql(f"SELECT origin.key, stage, reason, detail FROM "
                             f"read_parquet('{tmp_path}/out/rejects/*.parquet')").fetchall())
    assert {(k, s, r) for k, s, r, _ in rejects} == {("ten_thousand.pdf", "open", pdf_ops.TOO_MANY_PAGES),
                                                     ("huge.pdf#page=1", "page", pdf_ops.PAGE_TOO_LARGE)}
    assert any("10000 pages" in d for *_, d in rejects)
    assert sorted(rows) == ["deep.pdf#page=1", "lying.pdf#page=1", "ten_thousand.pdf#page=1",
                            "ten_thousand.pdf#page=2", "ten_thousand.pdf#page=3"]
    assert rows["lying.pdf#page=1"]["count"] == 1 and rows["ten_thousand.pdf#page=2"]["count"] == 10_000
    # inputs: 4 documents' units = 3 + 1 + 1 pages kept, 1 page refused, 1 cap reject
    assert m_.balanced and m_.inputs == m_.kept + m_.rejected_total == 7 and m_.kept == 5


def test_page_images_are_rendered_at_write_time_and_match_the_row(run):
    """Rows travel the shuffle without images; the shards hold each page rendered again, at the row's size."""
    import io

    from PIL import Image

    base = run[0]
    got = duckdb.sql(f"SELECT origin.key, width, height, image.bytes FROM "
                     f"read_parquet('{base}/out/data/**/*.parquet', hive_partitioning=true)").fetchall()
    assert len(got) == 7
    for key, w, h, data in got:
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.size == (w, h), key


def test_a_pdf_changed_between_reads_is_a_write_reject(tmp_path):
    from quarry.operators.documents import makepdf as m
    from quarry.pipelines import documents as pipe
    from quarry.pipelines.read import InputFile
    from quarry.pipelines.stage import REJECTED
    from quarry.schemas.common import ImageCell, Origin
    from quarry.schemas.documents import DocumentPageRow

    path = tmp_path / "a.pdf"
    path.write_bytes(m.build([m.prose_page("Before", ["one line"])]))
    cfg = resolve_config(SPEC, None, [], "t")
    fn = pipe._WritePages([InputFile(str(path), "pdf")], cfg, str(tmp_path / "out"))
    row = DocumentPageRow.model_construct(
        sample_id="s", source="t", origin=Origin(file=str(path), key="a.pdf#page=1"), document_id="not-this-one",
        page_number=1, width=10, height=10, image=ImageCell(bytes=b""))
    (out,) = list(fn._attach(str(path), [row]))
    assert out.tag == REJECTED and out.value.reason == pipe.SOURCE_CHANGED and out.value.stage == "write"
