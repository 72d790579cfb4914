"""The svg pipeline's reader and composite, in TestPipeline."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from quarry.pipelines.read import InputError
from quarry.pipelines.svg import SvgPipeline, _Records, plan_svg_inputs, read_svg_input
from quarry.schemas.common import Reject
from quarry.schemas.svg import SvgConfig, SvgReaderConfig, SvgRecord

NS = 'xmlns="http://www.w3.org/2000/svg"'


def svg(body: str) -> bytes:
    return f'<svg {NS} viewBox="0 0 10 10">{body}</svg>'.encode()


TRIANGLE = svg('<path d="M1 9L3 1L9 9Z" fill="#222"/><rect x="6" y="1" width="3" height="3" fill="#c33"/>')
TRIANGLE_REFORMATTED = (f'<svg viewBox="0 0 10 10" {NS}>\n <path fill="#222" d="M 1,9 L 3.000,1 L 9,9 z"/>\n'
                        ' <rect fill="#c33" height="3" width="3" y="1" x="6" id="unused"/>\n</svg>').encode()
TRIANGLE_NUDGED = svg('<path d="M1 9L3.05 1L9 9Z" fill="#222"/><rect x="6" y="1" width="3" height="3" fill="#c33"/>')
BARS = svg('<rect x="1" y="4" width="2" height="6" fill="#2e86c1"/><rect x="4" y="1" width="2" height="9" '
           'fill="#28b463"/><rect x="7" y="6" width="2" height="4" fill="#f39c12"/>')


def records(items: dict[str, bytes]) -> list[SvgRecord]:
    """Records as the reader makes them, keyed `key` within one input."""
    maker = _Records("inputs.tar", "test")
    return [maker.record(key, data, {}) for key, data in items.items()]


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_plan_fails_early_with_one_line(tmp_path):
    with pytest.raises(InputError, match="no files match"):
        plan_svg_inputs([str(tmp_path / "nothing-*.svg")], SvgReaderConfig())
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(InputError, match=r"\.svg, \.svgz"):
        plan_svg_inputs([str(tmp_path / "a.png")], SvgReaderConfig())
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "t.parquet")
    with pytest.raises(InputError, match="no SVG column"):
        plan_svg_inputs([str(tmp_path / "t.parquet")], SvgReaderConfig())
    with pytest.raises(InputError, match="no column 'code2'"):
        plan_svg_inputs([str(tmp_path / "t.parquet")], SvgReaderConfig(svg_column="code2"))


def test_reads_files_tars_parquet_and_jsonl(tmp_path):
    (tmp_path / "icons").mkdir()
    (tmp_path / "icons" / "a.svg").write_bytes(TRIANGLE)
    (tmp_path / "icons" / "b.svgz").write_bytes(gzip.compress(BARS))
    (tmp_path / "icons" / "big.svg").write_bytes(svg("<g/>" * 600))
    (tmp_path / "icons" / "notes.txt").write_text("ignored")
    write_tar(tmp_path / "shard.tar", {"x/one.svg": TRIANGLE, "x/one.json": b"{}", "x/two.svgz": gzip.compress(BARS),
                                       "x/huge.svg": b" " * 3000, ".hidden.svg": TRIANGLE})
    pq.write_table(pa.table({"svg": [TRIANGLE.decode(), None], "source": ["web", "web"],
                             "url": ["https://example.org/a.svg", None]}), tmp_path / "web.parquet")
    (tmp_path / "web.jsonl").write_text("\n".join([
        json.dumps({"svg": BARS.decode(), "id": 7, "license": "CC0"}), "{not json", json.dumps({"other": 1})]))
    cfg = SvgReaderConfig(max_bytes=2000)
    files = plan_svg_inputs([str(tmp_path / "icons"), str(tmp_path / "*.tar"), str(tmp_path / "web.*")], cfg)
    assert sorted(f.kind for f in files) == ["jsonl", "parquet", "svg", "svg", "svg", "tar"]
    got = [r for f in files for r in read_svg_input(f, "demo", cfg)]
    kept = {(Path(r.origin.file).name, r.origin.key): r for r in got if isinstance(r, SvgRecord)}
    rejected = {(Path(r.origin.file).name, r.origin.key): r.reason for r in got if isinstance(r, Reject)}
    assert set(kept) == {("a.svg", "a.svg"), ("b.svgz", "b.svgz"), ("shard.tar", "x/one.svg"),
                         ("shard.tar", "x/two.svgz"), ("web.parquet", "row:0"), ("web.jsonl", "line:1:7")}
    assert rejected == {("big.svg", "big.svg"): "file_too_large", ("shard.tar", "x/huge.svg"): "file_too_large",
                        ("web.parquet", "row:1"): "missing_svg", ("web.jsonl", "line:2"): "invalid_json",
                        ("web.jsonl", "line:3"): "missing_svg"}
    assert kept[("b.svgz", "b.svgz")].gzipped and not kept[("a.svg", "a.svg")].gzipped
    web = kept[("web.parquet", "row:0")]
    assert web.source == "web" and web.url == "https://example.org/a.svg" and web.data == TRIANGLE
    assert kept[("web.jsonl", "line:1:7")].license == "CC0" and kept[("a.svg", "a.svg")].source == "demo"
    # Ids are content + position: the same bytes at two places are two records, reruns agree.
    again = [r for f in files for r in read_svg_input(f, "demo", cfg)]
    assert [r.sample_id for r in got] == [r.sample_id for r in again]
    assert kept[("a.svg", "a.svg")].sample_id != kept[("shard.tar", "x/one.svg")].sample_id


def test_truncated_tar_keeps_what_came_before(tmp_path):
    write_tar(tmp_path / "t.tar", {"a.svg": TRIANGLE, "b.svg": BARS * 20})
    data = (tmp_path / "t.tar").read_bytes()
    (tmp_path / "t.tar").write_bytes(data[:2500])  # cut inside b.svg's content
    (f,) = plan_svg_inputs([str(tmp_path / "t.tar")], SvgReaderConfig())
    got = list(read_svg_input(f, "demo", SvgReaderConfig()))
    assert isinstance(got[0], SvgRecord) and got[-1].reason == "unreadable_tar"


def test_pipeline_splits_pairs_rejects_and_duplicates():
    cfg = SvgConfig(source="test", render={"size": 96})
    recs = records({
        "tri": TRIANGLE, "tri-reformatted": TRIANGLE_REFORMATTED, "tri-nudged": TRIANGLE_NUDGED, "bars": BARS,
        "script": svg('<script>alert(1)</script><circle cx="3" cy="5" r="2" onclick="x()"/><rect width="3" '
                      'height="9" x="6"/>'),
        "blank": svg(""), "broken": b"<svg", "bomb": (Path(__file__).resolve().parents[2] / "dags" / "demo_data"
                                                       / "svg" / "billion-laughs.svg").read_bytes(),
    })
    with TestPipeline() as p:
        out = p | beam.Create(recs) | SvgPipeline(cfg)

        def check_rows(rows):
            got = sorted((r.origin.key, r.task) for r in rows)
            # tri and tri-nudged render within the pHash distance: one survives (rank: pixels, then id).
            survivor = {k for k, _ in got} & {"tri", "tri-nudged"}
            assert len(survivor) == 1, got
            (tri,) = survivor
            assert got == sorted((k, t) for k in ("bars", "script", tri) for t in ("svg_to_image", "image_to_svg"))
            assert not any("script" in r.svg or "onclick" in r.svg for r in rows)

        def check_rejects(rejects):
            got = sorted((r.origin.key, r.stage, r.reason) for r in rejects)
            near = [g for g in got if g[2] == "near_duplicate"]
            assert len(near) == 1 and near[0][0] in ("tri", "tri-nudged"), got
            assert sorted(set(got) - set(near)) == [
                ("blank", "render", "blank_render"), ("bomb", "prepare", "unsafe_svg"),
                ("broken", "prepare", "invalid_svg"), ("tri-reformatted", "dedup", "exact_duplicate")]

        assert_that(out.rows, check_rows, label="rows")
        assert_that(out.rejected, check_rejects, label="rejects")


def test_rows_carry_the_pair_and_its_measurements():
    cfg = SvgConfig(source="test", render={"size": 64}, tasks=["image_to_svg"], dedup={"near": False})
    (rec,) = records({"bars": BARS})
    with TestPipeline() as p:
        out = p | beam.Create([rec]) | SvgPipeline(cfg)

        def check(row):
            assert row.task == "image_to_svg" and row.parent_id == rec.sample_id
            assert row.svg.startswith('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10">')
            assert (row.width, row.height, row.image_format) == (64, 64, "png")
            assert row.image.bytes.startswith(b"\x89PNG") and len(row.phash) == 16
            assert (row.element_count, row.path_count, row.path_commands, row.tier) == (4, 0, 3, "very_easy")
            assert row.svg_chars == len(row.svg) and row.input_bytes == len(BARS)
            return row.sample_id

        assert_that(out.rows | beam.Map(check) | beam.combiners.Count.Globally(), equal_to([1]))


def test_visible_text_is_what_the_render_shows():
    from quarry.operators.svg.prepare import prepare_svg
    from quarry.pipelines.svg import visible_text

    p = prepare_svg(svg('<style>.a{fill:red}</style><text x="1" y="5">Q1 <tspan>sales</tspan></text>'
                        '<text x="1" y="9">2024</text><rect width="1" height="1"/>'))
    assert visible_text(p.text) == "Q1 sales 2024"
    assert visible_text(prepare_svg(svg('<rect width="1" height="1"/>')).text) == ""
