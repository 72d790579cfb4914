"""`quarry demo` runs every DAG that exists, offline, and each run adds up."""

from __future__ import annotations

import json

import duckdb

from quarry.schemas.common import TIERS


def test_demo_runs_caption_and_grade(demo_dir):
    for dag in ("caption", "grade"):
        m = json.loads((demo_dir / dag / "manifest.json").read_text())
        assert m["dag"] == dag and m["balanced"] is True and m["kept"] > 0


def test_grade_demo_spans_every_tier(demo_dir):
    con = duckdb.connect()
    tiers = {t for (t,) in con.sql(f"SELECT DISTINCT tier FROM read_parquet('{demo_dir}/grade/data/**/*.parquet', "
                                   "hive_partitioning=true)").fetchall()}
    assert tiers == set(TIERS)
    rejects = con.sql(f"SELECT sample_id, reason FROM read_parquet('{demo_dir}/grade/rejects/*.parquet')").fetchall()
    assert rejects == [("g-none", "no_rollouts")]
