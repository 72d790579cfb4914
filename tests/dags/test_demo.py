"""`quarry demo` runs every DAG that exists, offline, and each run adds up."""

from __future__ import annotations

import json

import duckdb

from quarry.dags.demo import DEMOS
from quarry.dags.registry import DAGS
from quarry.schemas.common import TIERS


def test_demo_runs_every_dag(demo_dir):
    assert set(DAGS) == set(DEMOS)
    for dag in DAGS:
        m = json.loads((demo_dir / dag / "manifest.json").read_text())
        assert m["dag"] == dag and m["kept"] > 0 and m["rejected_total"] > 0, dag
        assert m["balanced"] is (True if m["one_to_one"] else None), dag


def test_every_dag_has_the_decontam_stage():
    """`decontam` sits on every DAG's config; a DAG that did not wire the stage would ignore decontam.bench."""
    for name, spec in DAGS.items():
        assert "decontam" in [stage.name for stage in spec.stages], name


def test_grade_demo_spans_every_tier(demo_dir):
    con = duckdb.connect()
    tiers = {t for (t,) in con.sql(f"SELECT DISTINCT tier FROM read_parquet('{demo_dir}/grade/data/**/*.parquet', "
                                   "hive_partitioning=true)").fetchall()}
    assert tiers == set(TIERS)
    rejects = con.sql(f"SELECT sample_id, reason FROM read_parquet('{demo_dir}/grade/rejects/*.parquet')").fetchall()
    assert rejects == [("g-none", "no_rollouts")]


def test_every_reject_in_the_demo_is_declared_by_its_stage(demo_dir):
    """Each (stage, reason) a demo run wrote is one `quarry list` names for that stage (declared, not retyped)."""
    con = duckdb.connect()
    for name, spec in DAGS.items():
        declared = {(s.reject_stage, r) for s in spec.stages for r in s.reasons}
        written = set(con.sql(f"SELECT DISTINCT stage, reason FROM read_parquet('{demo_dir}/{name}/rejects/*.parquet')")
                      .fetchall())
        assert written and written <= declared, (name, written - declared)


def test_every_dags_data_folder_reads_in_pandas_pyarrow_duckdb_and_datasets(demo_dir, tmp_path):
    """`source` and `tier` are file columns and Hive folder names; typed as pyarrow infers the folders, so
    `pd.read_parquet(dir)` and `pq.read_table(dir)` merge them instead of failing on "string vs dictionary"."""
    import datasets
    import pandas as pd
    import pyarrow.parquet as pq

    for name in DEMOS:
        data = demo_dir / name / "data"
        if not any(data.rglob("*.parquet")):
            continue
        rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{data}/**/*.parquet', hive_partitioning=true)").fetchall()
        frame = pd.read_parquet(data)
        assert len(frame) == pq.read_table(data).num_rows == rows[0][0] > 0, name
        assert set(frame["tier"].astype(str)) <= set(TIERS), name
        ds = datasets.load_dataset("parquet", data_files=str(data / "**" / "*.parquet"), split="train",
                                   cache_dir=str(tmp_path / "hf" / name))
        assert len(ds) == len(frame) and isinstance(ds[0]["source"], str), name


def test_every_run_directory_loads_in_datasets_through_its_card(demo_dir, tmp_path):
    """`load_dataset(run_dir)` reads the card's `configs:`: the data by default, the rejects by name."""
    import datasets
    import yaml

    for name in DEMOS:
        run = demo_dir / name
        manifest = json.loads((run / "manifest.json").read_text())
        card = (run / "README.md").read_text()
        front = yaml.safe_load(card.split("---\n")[1])
        assert front["configs"][0] == {"config_name": "data", "default": True,
                                       "data_files": [{"split": "train", "path": "data/**/*.parquet"}]}, name
        cache = str(tmp_path / "hf" / name)
        if manifest["kept"]:
            assert len(datasets.load_dataset(str(run), split="train", cache_dir=cache)) == manifest["kept"], name
        if manifest["rejected_total"]:
            rejects = datasets.load_dataset(str(run), "rejects", split="train", cache_dir=cache)
            assert len(rejects) == manifest["rejected_total"], name
