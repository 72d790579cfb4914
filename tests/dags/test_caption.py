"""The caption DAG end to end on the demo input: every planted defect gets its code,
the manifest adds up, shards read back in DuckDB, reruns are identical."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from quarry.dags.demos.caption import DEMO_SETS, build_caption_input
from quarry.dags.registry import DAGS
from quarry.dags.runner import reject_counts, resolve_config, run_dag
from quarry.pipelines.caption import STAGE_REASONS
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.caption import CaptionRow
from quarry.schemas.common import TIERS


def shards(run: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW shards AS SELECT * FROM read_parquet('{run}/data/**/*.parquet', hive_partitioning=true)")
    con.execute(f"CREATE VIEW rejects AS SELECT * FROM read_parquet('{run}/rejects/*.parquet')")
    return con


def test_every_planted_defect_gets_its_code(demo_dir, tmp_path):
    expected = build_caption_input(tmp_path / "same-input")  # deterministic: same records as the demo's
    con = shards(demo_dir / "caption")
    got = {key: (stage, reason) for key, stage, reason in
           con.sql("SELECT origin.key, stage, reason FROM rejects").fetchall()}
    kept = {k for (k,) in con.sql("SELECT origin.key FROM shards").fetchall()}
    for e in expected:
        if e.stage is None:
            # Good pairs are kept unless balancing samples the head concept out.
            assert e.key in kept or got.get(e.key) == ("balance", "concept_downsampled"), e
        else:
            assert got.get(e.key) == (e.stage, e.reason), e


def test_manifest_adds_up_and_describes_the_run(demo_dir):
    run = demo_dir / "caption"
    m = json.loads((run / "manifest.json").read_text())
    con = shards(run)
    kept = con.sql("SELECT count(*) FROM shards").fetchall()[0][0]
    rejected = con.sql("SELECT count(*) FROM rejects").fetchall()[0][0]
    assert m["inputs"] == kept + rejected == m["kept"] + m["rejected_total"]
    assert m["balanced"] is True
    assert m["dag"] == "caption" and m["runner"] == "DirectRunner"
    assert m["config"]["clip"]["model"] == "quarry-tiny"
    assert any("MEANINGLESS" in n for n in m["notes"])
    assert {"apache-beam", "pyarrow", "torch"} <= set(m["versions"])
    assert sum(m["rows_by_partition"].values()) == kept
    assert m["stages"]["decode"]["inputs"] >= m["stages"]["decode"]["outputs"] > 0
    # 4 smaller copies + 1 byte copy, and the 13 mirrored and 13 turned copies (dedup.orientations)
    assert m["rejected"]["dedup"]["near_duplicate"] == 31
    assert m["rejected"]["balance"]["concept_downsampled"] > 0  # the head concept "photo" was capped


def test_mirrored_and_turned_copies_are_dropped_for_their_original(demo_dir):
    """m<i> (mirrored) and r<i> (turned 90 degrees) are 5% smaller copies of photo <i>: each names that original."""
    con = shards(demo_dir / "caption")
    ids = dict(con.sql("SELECT sample_id, origin.key FROM shards UNION ALL SELECT sample_id, origin.key FROM rejects")
               .fetchall())
    dups = con.sql("SELECT origin.key, detail FROM rejects WHERE reason = 'near_duplicate'").fetchall()
    kept_for = {key: ids[detail.split()[0].removeprefix("kept=")] for key, detail in dups}
    turned = {k: v for k, v in kept_for.items() if k[0] in "mr"}
    assert len(turned) == 26 and all(v == f"{int(k[1:]):04d}" for k, v in turned.items()), turned
    assert {kept_for[f"d{j:03d}"] for j in range(4)} == {f"{j:04d}" for j in range(4)} and kept_for["x000"] == "0000"


def test_orientations_off_keeps_the_mirrored_copies(tmp_path):
    """dedup.orientations=false: own hashes only, so only the resized and the byte copies are near duplicates."""
    build_caption_input(tmp_path / "in")
    spec = DAGS["caption"]
    cfg = resolve_config(spec, None, [*DEMO_SETS, "dedup.orientations=false", "balance.enabled=false"], "demo")
    m = run_dag(spec, [str(tmp_path / "in" / "*.tar")], str(tmp_path / "out"), cfg)
    assert m.rejected["dedup"] == {"near_duplicate": 5}
    assert m.config["dedup"]["orientations"] is False


def test_shards_are_hive_partitioned_with_real_columns(demo_dir):
    run = demo_dir / "caption"
    con = shards(run)
    rows = con.sql("SELECT source, tier, task, clip_score, width, image.bytes IS NOT NULL FROM shards").fetchall()
    assert {r[0] for r in rows} == {"stock", "webcrawl"}
    assert {r[1] for r in rows} <= set(TIERS) and {r[2] for r in rows} == {"caption"}
    assert all(r[3] is not None and r[4] >= 200 and r[5] for r in rows)
    for f in (run / "data").rglob("*.parquet"):
        source, tier = f.parent.parent.name, f.parent.name
        table = pq.read_table(f)
        assert set(table["source"].to_pylist()) == {source.removeprefix("source=")}
        assert set(table["tier"].to_pylist()) == {tier.removeprefix("tier=")}
        assert table.schema.remove_metadata().equals(arrow_schema(CaptionRow).remove_metadata())


def test_input_without_records_runs_and_says_so(tmp_path):
    import tarfile

    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    spec = DAGS["caption"]
    cfg = resolve_config(spec, None, DEMO_SETS, "demo")
    m = run_dag(spec, [str(tmp_path / "empty.tar")], str(tmp_path / "out"), cfg)
    assert (m.inputs, m.kept, m.rejected_total, m.balanced) == (0, 0, 0, True)
    assert "the inputs held no records: nothing was read" in m.notes
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["inputs"] == 0


def test_run_directory_loads_in_pyarrow_pandas_and_datasets(demo_dir, tmp_path):
    import datasets
    import pyarrow.dataset as pads

    data = demo_dir / "caption" / "data"
    table = pads.dataset(data).to_table()  # source and tier are in the files
    kept = json.loads((demo_dir / "caption" / "manifest.json").read_text())["kept"]
    assert table.num_rows == kept
    # with the folders as partitions too: their type must be the files' (PARTITION_STRING)
    hive = pads.HivePartitioning.discover(infer_dictionary=True)
    assert pads.dataset(data, partitioning=hive).to_table().num_rows == kept
    assert set(table.to_pandas()["tier"]) <= set(TIERS)
    ds = datasets.load_dataset("parquet", data_files=str(data / "**" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert len(ds) == kept and isinstance(ds.features["image"], datasets.Image)
    assert ds[0]["image"].size == (ds[0]["width"], ds[0]["height"])


def test_every_reject_reason_is_listed_for_its_stage(demo_dir):
    """STAGE_REASONS names every stage of SPEC (but `read`, the reader's) and every (stage, reason) the demo wrote."""
    spec = DAGS["caption"]
    assert set(STAGE_REASONS) == {s.name for s in spec.stages} - {"read"}
    assert {s.name: s.reasons for s in spec.stages if s.name != "read"} == STAGE_REASONS  # what `quarry list` shows
    listed = {(stage, r) for stage, reasons in STAGE_REASONS.items() for r in reasons}
    written = {(stage, r) for stage, reasons in reject_counts(str(demo_dir / "caption")).items() for r in reasons
               if stage != "read"}
    assert len(written) >= 6 and written <= listed, written - listed



def test_chinese_captions_are_balanced_and_tagged_with_their_language(tmp_path):
    """Chinese captions used to be dropped as no_concept_match (an English vocabulary, space-bounded matching)."""
    from PIL import Image

    captions = {"cat": "一只黑猫坐在红色的沙发上", "city": "城市的夜景，高楼和街道", "en": "a black cat sitting on a red sofa",
                "ja": "東京タワーの夜景とたくさんの車"}
    inp = tmp_path / "in"
    inp.mkdir()
    for i, (stem, caption) in enumerate(captions.items()):
        im = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
        im.putpixel((i, i), (255, 0, 0))
        im.rotate(i * 20).save(inp / f"{stem}.jpg", quality=90)
        (inp / f"{stem}.txt").write_text(caption, encoding="utf-8")
    spec = DAGS["caption"]
    m = run_dag(spec, [str(inp)], str(tmp_path / "out"), resolve_config(spec, None, DEMO_SETS, "zh"))
    assert m.balanced
    rows = shards(tmp_path / "out").execute("SELECT caption, lang, concepts FROM shards ORDER BY caption").fetchall()
    got = {caption: (lang, set(concepts)) for caption, lang, concepts in rows}
    assert got[captions["cat"]] == ("zh", {"猫", "沙发"})
    assert got[captions["city"]][0] == "zh" and {"城市", "高楼", "街道"} <= got[captions["city"]][1]
    assert got[captions["en"]][0] == "en"
