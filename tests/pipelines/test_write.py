"""Shard writer: Hive layout, stable names and bytes, schema from the models."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apache_beam as beam
import duckdb
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline

from quarry.pipelines.write import WriteImages, WriteRejects, WriteShards
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.common import ImageCell, ImageRecord, Origin, Reject, Sample
from quarry.schemas.config import ShardConfig


def rows(n: int) -> list[Sample]:
    tiers = ["easy", "hard"]
    return [Sample(sample_id=f"id{i:04d}", source="a" if i % 3 else "b", tier=tiers[i % 2], task="t",
                   origin=Origin(file="f.tar", key=str(i)), url=None if i % 2 else f"http://x/{i}")
            for i in range(n)]


def run_write(out: Path, items, cfg: ShardConfig) -> None:
    with TestPipeline() as p:
        p | beam.Create(items, reshuffle=False) | WriteShards(str(out), "test", Sample, cfg)


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def test_hive_layout_and_shard_names(tmp_path):
    run_write(tmp_path, rows(100), ShardConfig(max_rows=10, row_group_size=4))
    files = sorted(p.relative_to(tmp_path / "data").as_posix() for p in (tmp_path / "data").rglob("*.parquet"))
    assert {f.rsplit("/", 1)[0] for f in files} == {"source=a/tier=easy", "source=a/tier=hard",
                                                    "source=b/tier=easy", "source=b/tier=hard"}
    # 33 rows in source=a/tier=easy -> ceil(33/10) = 4 shards named -0000k-of-00004
    a_easy = [f for f in files if f.startswith("source=a/tier=easy/")]
    assert [f.rsplit("/", 1)[1] for f in a_easy] == [f"test-{i:05d}-of-00004.parquet" for i in range(4)]
    md = pq.ParquetFile(tmp_path / "data" / a_easy[0]).metadata
    assert all(md.row_group(i).num_rows <= 4 for i in range(md.num_row_groups))
    assert not list(tmp_path.rglob("*.inprogress"))


def test_duckdb_reads_hive_partitions_and_real_columns(tmp_path):
    run_write(tmp_path, rows(40), ShardConfig(max_rows=7))
    con = duckdb.connect()
    got = con.sql(f"SELECT source, tier, count(*) FROM read_parquet('{tmp_path}/data/**/*.parquet', "
                  "hive_partitioning=true) GROUP BY ALL ORDER BY ALL").fetchall()
    want = {}
    for r in rows(40):
        want[(r.source, r.tier)] = want.get((r.source, r.tier), 0) + 1
    assert got == sorted((s, t, n) for (s, t), n in want.items())


def test_schema_comes_from_the_model_not_the_data(tmp_path):
    # Every url is null in one partition: its column must still be a string.
    items = [r for r in rows(20) if r.tier == "hard"]
    run_write(tmp_path, items, ShardConfig())
    for f in (tmp_path / "data").rglob("*.parquet"):
        schema = pq.read_schema(f)
        assert schema.field("url").type == arrow_schema(Sample).field("url").type
        assert schema.remove_metadata().equals(arrow_schema(Sample).remove_metadata())


def test_rerun_gives_identical_bytes_whatever_the_input_order(tmp_path):
    cfg = ShardConfig(max_rows=5)
    run_write(tmp_path / "one", rows(30), cfg)
    run_write(tmp_path / "two", list(reversed(rows(30))), cfg)
    assert digests(tmp_path / "one") == digests(tmp_path / "two")


def test_rejects_and_shared_images_tables(tmp_path):
    rejects = [Reject(sample_id=f"r{i}", source="s", stage="decode", reason="corrupt_image",
                      origin=Origin(file="f", key=str(i))) for i in range(5)]
    img = ImageRecord(image_id="img1", image=ImageCell(bytes=b"png"), width=2, height=3, format="PNG")
    with TestPipeline() as p:
        p | "R" >> beam.Create(rejects) | WriteRejects(str(tmp_path), ShardConfig())
        p | "I" >> beam.Create([img, img, img]) | WriteImages(str(tmp_path), ShardConfig())
    table = pq.read_table(tmp_path / "rejects" / "rejects-00000-of-00001.parquet")
    assert table.column_names == ["sample_id", "source", "stage", "reason", "detail", "origin"]
    assert table.num_rows == 5
    images = pq.read_table(tmp_path / "images" / "images-00000-of-00001.parquet")
    assert images.num_rows == 1 and images["image"][0].as_py()["bytes"] == b"png"
