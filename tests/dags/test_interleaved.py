"""The interleaved DAG end to end: the demo's planted defects get their codes, the
manifest adds up, shards and images read back in DuckDB, reruns are identical,
and the bad inputs of the issue become rejects or valid rows."""

from __future__ import annotations

import hashlib
import io
import json
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from quarry.dags.demos import interleaved as interleaved_demo
from quarry.dags.demos.interleaved import DEMO_EXPECTED, DEMO_IMAGES, demo_images
from quarry.dags.interleaved import SPEC
from quarry.dags.runner import reject_counts, resolve_config, run_dag
from quarry.operators.ids import digest
from quarry.pipelines.interleaved import STAGE_REASONS
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.common import TIERS, ImageRecord
from quarry.schemas.interleaved import InterleavedRow

pytestmark = pytest.mark.slow


def run(inputs: list[str], out: Path, sets: list[str], beam_args=None):
    cfg = resolve_config(SPEC, None, sets, None)
    return run_dag(SPEC, inputs, str(out), cfg, beam_args=beam_args)


def tables(out: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW docs AS SELECT * FROM read_parquet('{out}/data/**/*.parquet', hive_partitioning=true)")
    con.execute(f"CREATE VIEW rejects AS SELECT * FROM read_parquet('{out}/rejects/*.parquet')")
    if list((out / "images").glob("*.parquet")):
        con.execute(f"CREATE VIEW images AS SELECT * FROM read_parquet('{out}/images/*.parquet')")
    return con


def digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("[dri]*/**/*.parquet"))}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interleaved")
    demo = interleaved_demo.build(folder / "in")
    inputs, sets = demo.patterns, demo.sets
    manifest = run(inputs, folder / "out", sets)
    return folder, inputs, sets, manifest


def test_every_planted_defect_gets_its_code(demo):
    folder, *_ = demo
    con = tables(folder / "out")
    got = {k: (s, r) for k, s, r in con.sql("SELECT origin.key, stage, reason FROM rejects").fetchall()}
    kept = {k for (k,) in con.sql("SELECT origin.key FROM docs").fetchall()}
    for key, expected in DEMO_EXPECTED.items():
        if expected is None:
            assert key in kept, key
        else:
            assert got.get(key) == expected, key
    assert len(kept) + len(got) == len(DEMO_EXPECTED)
    images = {(k, i): (s, r) for k, i, s, r in con.sql(
        "SELECT origin.key, u.index, u.stage, u.reason FROM (SELECT origin, unnest(images) AS u FROM docs)").fetchall()}
    assert images == {k: (v if v is not None else (None, None)) for k, v in DEMO_IMAGES.items()}
    qr = con.sql("SELECT u.codes FROM (SELECT unnest(images) AS u FROM docs) WHERE u.reason = 'qr_code'").fetchall()
    assert qr == [(["QRCode:https://example.com/scan-for-a-discount"],)]


def test_manifest_adds_up(demo):
    folder, *_, m = demo
    con = tables(folder / "out")
    kept = con.sql("SELECT count(*) FROM docs").fetchall()[0][0]
    rejected = con.sql("SELECT count(*) FROM rejects").fetchall()[0][0]
    assert m.inputs == kept + rejected == m.kept + m.rejected_total == len(DEMO_EXPECTED)
    assert m.balanced is True and m.dag == "interleaved"
    assert m.stages["images"].inputs == len(DEMO_IMAGES)
    assert m.stages["images"].outputs == sum(v is None for v in DEMO_IMAGES.values())
    assert m.extra["image_rejects"] == {"ads/ad_image": 2, "ads/qr_code": 1, "read/missing_image": 1}
    assert any("MEANINGLESS" in n for n in m.notes)
    on_disk = json.loads((folder / "out" / "manifest.json").read_text())
    assert on_disk["inputs"] == m.inputs and on_disk["config"]["relevance"]["model"] == "quarry-tiny"


def test_rows_segments_images_and_tiers(demo):
    folder, *_ = demo
    out = folder / "out"
    con = tables(out)
    for f in (out / "data").rglob("*.parquet"):
        t = pq.read_table(f)
        assert t.schema.remove_metadata().equals(arrow_schema(InterleavedRow).remove_metadata())
        assert set(t["source"].to_pylist()) == {f.parent.parent.name.removeprefix("source=")}
        assert set(t["tier"].to_pylist()) == {f.parent.name.removeprefix("tier=")}
    for f in (out / "images").glob("*.parquet"):
        assert pq.read_table(f).schema.remove_metadata().equals(arrow_schema(ImageRecord).remove_metadata())
    tiers = dict(con.sql("SELECT origin.key, tier FROM docs").fetchall())
    assert set(tiers.values()) <= set(TIERS)
    assert tiers["line:5:charts"] == "very_hard" and tiers["line:1:space"] == "medium"
    # every image segment resolves to exactly one stored image whose bytes hash to its id
    refs = con.sql("SELECT s.image_id FROM (SELECT unnest(segments) AS s FROM docs) WHERE s.kind = 'image'").fetchall()
    stored = {i: (b, w, h) for i, b, w, h in con.sql("SELECT image_id, image.bytes, width, height FROM images").fetchall()}
    assert len(stored) == con.sql("SELECT count(*) FROM images").fetchall()[0][0]  # once each
    assert {r for (r,) in refs} == set(stored)
    for image_id, (data, w, h) in stored.items():
        assert digest(data) == image_id and Image.open(io.BytesIO(data)).size == (w, h)
    planted = demo_images()
    assert digest(planted["astronaut.jpg"]) in stored and digest(planted["scan-me.jpg"]) not in stored
    # the HTML fragment became text; the script is gone
    text = con.sql("SELECT list_aggregate([s.text FOR s IN segments IF s.kind = 'text'], 'string_agg', ' ') "
                   "FROM docs WHERE origin.key = 'line:4:rocket'").fetchall()[0][0]
    assert "several stages" in text and "<b>" not in text and "var ad" not in text
    scores = con.sql("SELECT u.clip_score FROM (SELECT unnest(images) AS u FROM docs) WHERE u.kept").fetchall()
    assert scores and all(s is not None and -1 <= s <= 1 for (s,) in scores)


def test_rerun_gives_identical_files(demo, tmp_path):
    # In-process (multi-process mode is exercised by benchmarks/bench_interleaved.py; here it
    # would cost a torch + spaCy start per worker on the CI box).
    folder, inputs, sets, _ = demo
    run(inputs, tmp_path / "again", sets)
    assert digests(tmp_path / "again") == digests(folder / "out")


def test_bad_inputs_become_rejects_or_valid_rows(tmp_path):
    """Parquet (OBELICS) and JSONL (MMC4) inputs: unequal lists, out-of-range positions, missing
    images, HTML in text, 10 MB of text; relevance at threshold 1.0 drops every image."""
    pics = demo_images()
    art = json.loads(resources.files("quarry.dags").joinpath("demo_data", "interleaved", "articles.json").read_text())
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "cat.jpg").write_bytes(pics["chelsea.jpg"])
    pq.write_table(pa.table({
        "texts": [[art["space"][0], None, art["space"][1], art["space"][2], art["space"][3]],
                  [art["coffee"][0], None]],
        "images": [[None, {"bytes": pics["astronaut.jpg"], "path": None}, None, None, None],
                   [None, {"bytes": pics["coffee.jpg"], "path": None}, None]],
    }, schema=pa.schema([("texts", pa.list_(pa.string())),
                         ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())])))])),
        tmp_path / "obelics.parquet")
    html = ["<div class='post'><p>" + p + "</p><script>track();</script></div>" for p in art["cat"]]
    docs = [
        {"id": "mmc4-html", "text_list": html, "image_info": [
            {"image_name": "img/cat.jpg", "matched_text_index": 1},
            {"image_name": "img/never-downloaded.jpg", "matched_text_index": 2}]},
        {"id": "mmc4-range", "text_list": art["cat"], "image_info": [{"image_name": "img/cat.jpg",
                                                                       "matched_text_index": 4}]},
        {"id": "mmc4-missing", "text_list": art["rocket"], "image_info": [
            {"image_name": "img/gone.jpg", "matched_text_index": 0}]},
        {"id": "ten-mb", "segments": [{"text": "All work and no play makes a dull day. " * 260_000},
                                      {"type": "image", "path": "img/cat.jpg"}]},
    ]
    (tmp_path / "mmc4.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    inputs = [str(tmp_path / "obelics.parquet"), str(tmp_path / "mmc4.jsonl")]
    tiny = ["relevance.model=quarry-tiny", "relevance.pretrained=none"]

    m = run(inputs, tmp_path / "out", tiny + ["relevance.threshold=-1"])
    con = tables(tmp_path / "out")
    got = dict(((k, (s, r)) for k, s, r in con.sql("SELECT origin.key, stage, reason FROM rejects").fetchall()))
    assert got == {"row:1": ("read", "unequal_lengths"), "line:2:mmc4-range": ("read", "position_out_of_range"),
                   "line:3:mmc4-missing": ("assemble", "no_images_left"), "line:4:ten-mb": ("read", "too_much_text")}
    rows = {k: (n, h, imgs) for k, n, h, imgs in con.sql(
        "SELECT origin.key, n_images, html_stripped, [u.reason FOR u IN images] FROM docs").fetchall()}
    assert rows == {"row:0": (1, 0, [None]), "line:1:mmc4-html": (1, 4, [None, "missing_image"])}
    assert m.inputs == 6 and m.balanced

    m = run(inputs, tmp_path / "strict", tiny + ["relevance.threshold=1.0", "document.keep_text_only=true"])
    con = tables(tmp_path / "strict")
    reasons = con.sql("SELECT origin.key, n_images, [u.reason FOR u IN images] FROM docs ORDER BY 1").fetchall()
    assert reasons == [("line:1:mmc4-html", 0, ["image_irrelevant", "missing_image"]),
                       ("line:3:mmc4-missing", 0, ["missing_image"]), ("row:0", 0, ["image_irrelevant"])]
    assert not list((tmp_path / "strict" / "images").glob("*.parquet"))  # no image kept, none stored
    assert m.kept == 3 and m.balanced


def test_optional_decontam_stage_drops_documents_that_quote_a_benchmark(demo, tmp_path):
    """--set decontam.bench=PATH: a benchmark question copied into an article's text, and a
    benchmark image reused in another article, make those two documents `decontam` rejects."""
    folder, inputs, sets, _ = demo
    art = json.loads(resources.files("quarry.dags").joinpath("demo_data", "interleaved", "articles.json").read_text())
    sentence = art["space"][1].split(". ")[0]  # >= 13 tokens, quoted verbatim in the space article
    bench = tmp_path / "bench" / "TinyVQA.parquet"
    bench.parent.mkdir()
    pq.write_table(pa.table({"id": ["q1", "q2"], "question": [sentence + "?", "What colour is the mug on the table?"],
                             "answer": ["yes", "white"],
                             "image": [None, demo_images()["coffee.jpg"]]}), bench)
    m = run(inputs, tmp_path / "out", sets + [f"decontam.bench={bench.parent}"])
    con = tables(tmp_path / "out")
    got = {k: (s, r) for k, s, r in con.sql("SELECT origin.key, stage, reason FROM rejects").fetchall()}
    assert got["line:1:space"] == ("decontam", "contaminated_text")
    assert got["line:2:coffee"] == ("decontam", "contaminated_image")
    assert m.balanced and m.kept == sum(v is None for v in DEMO_EXPECTED.values()) - 2
    assert m.extra["contamination"]["by_benchmark"] == {"TinyVQA": 2}


def test_every_reject_reason_is_listed_for_its_stage(demo):
    """STAGE_REASONS names every stage of SPEC (but `read`, the reader's) and every (stage, reason) the demo wrote:
    document rejects under their stage, image drops (`extra.image_rejects`) under `checks` or `relevance`."""
    folder, _, _, manifest = demo
    assert set(STAGE_REASONS) == {s.name for s in SPEC.stages} - {"read"}
    listed = {(stage, r) for stage, reasons in STAGE_REASONS.items() for r in reasons}
    written = {(stage, r) for stage, reasons in reject_counts(str(folder / "out")).items() for r in reasons
               if stage != "read"}
    assert len(written) >= 3 and written <= listed, written - listed
    image_reasons = {key.split("/", 1)[1] for key in manifest.extra["image_rejects"]}
    assert image_reasons and image_reasons <= set(STAGE_REASONS["checks"] + STAGE_REASONS["relevance"])

