"""`quarry compact DIR`: a finished caption run of many small per-input shards rewritten as few large ones, with
the same rows (DuckDB EXCEPT both ways), order, schema and codecs; a manifest that still adds up; the same bytes
when compacted twice or from two equal runs; refusals in one line; and a swap that a kill cannot leave half-done."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from quarry.dags.cli import main
from quarry.dags.demos.caption import DEMO_SETS, build_caption_input

SETS = [*DEMO_SETS, "clip.enabled=false"]
NAME = re.compile(r"^(caption|rejects|images|interleaved)-(\d{5})-of-(\d{5})\.parquet$")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The caption demo's records re-split into six WebDataset shards: six inputs, so up to six shards a folder."""
    src, folder = tmp_path_factory.mktemp("demo"), tmp_path_factory.mktemp("inputs")
    build_caption_input(src)
    members = []
    for tar in sorted(src.glob("*.tar")):
        with tarfile.open(tar) as t:
            members += [(m, t.extractfile(m).read()) for m in t.getmembers() if m.isfile()]
    keys = sorted({m.name.split(".", 1)[0] for m, _ in members})
    for part in range(6):
        mine = set(keys[part::6])
        with tarfile.open(folder / f"part-{part}.tar", "w") as out:
            for m, data in members:
                if m.name.split(".", 1)[0] in mine:
                    out.addfile(m, io.BytesIO(data))
    return folder


def run_argv(inputs: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "caption", "--input", str(inputs / "*.tar"), "--output", str(out), "--source", "demo",
            *[a for s in SETS for a in ("--set", s)], *extra]


def caption_run(inputs: Path, out: Path) -> Path:
    assert main(run_argv(inputs, out)) == 0
    return out


@pytest.fixture(scope="module")
def run_a(inputs, tmp_path_factory) -> Path:
    return caption_run(inputs, tmp_path_factory.mktemp("a") / "run")


@pytest.fixture(scope="module")
def run_b(inputs, tmp_path_factory) -> Path:
    return caption_run(inputs, tmp_path_factory.mktemp("b") / "run")


@pytest.fixture(scope="module")
def compacted(run_a, tmp_path_factory) -> Path:
    """run_a compacted once with the defaults: the reference layout."""
    out = tmp_path_factory.mktemp("ref") / "run"
    shutil.copytree(run_a, out)
    assert main(["compact", str(out)]) == 0
    return out


def copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def shards(run: Path) -> dict[str, bytes]:
    """Every Parquet file of the run's tables, by path under the run."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*.parquet"))
            if not str(p.relative_to(run)).startswith(".quarry")}


def everything(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("WARNING:")]  # Beam's import warnings
    assert len(lines) == 1, err
    return lines[0]


def except_both_ways(a: Path, b: Path, table: str) -> tuple[int, int, int]:
    glob = "data/**/*.parquet" if table == "data" else f"{table}/*.parquet"
    hive = ", hive_partitioning=true" if table == "data" else ""
    left, right = f"read_parquet('{a / glob}'{hive})", f"read_parquet('{b / glob}'{hive})"
    con = duckdb.connect()
    n = con.execute(f"SELECT count(*) FROM {left}").fetchall()[0][0]
    a_not_b = con.execute(f"SELECT count(*) FROM (SELECT * FROM {left} EXCEPT ALL SELECT * FROM {right})").fetchall()[0][0]
    b_not_a = con.execute(f"SELECT count(*) FROM (SELECT * FROM {right} EXCEPT ALL SELECT * FROM {left})").fetchall()[0][0]
    return n, a_not_b, b_not_a


def test_compaction_keeps_every_row_in_fewer_files(run_a, compacted, capsys):
    before, after = sorted((run_a / "data").rglob("*.parquet")), sorted((compacted / "data").rglob("*.parquet"))
    assert len(before) > len(after) == len({p.parent for p in before})  # one shard per source/tier folder
    for table in ("data", "rejects"):
        n, a_not_b, b_not_a = except_both_ways(run_a, compacted, table)
        assert n > 0 and a_not_b == 0 and b_not_a == 0, table

    # the same row sequence front to back, and readers that read the folder still do
    assert pq.read_table(compacted / "data")["sample_id"].to_pylist() == \
        pq.read_table(run_a / "data")["sample_id"].to_pylist()
    manifest = json.loads((compacted / "manifest.json").read_text())
    assert len(pd.read_parquet(compacted / "data")) == manifest["kept"]

    schema = pq.read_schema(before[0])
    for p in after:
        assert pq.read_schema(p).equals(schema, check_metadata=True)  # `datasets` features included
        m = NAME.match(p.name)
        assert m and m[1] == "caption" and (m[2], m[3]) == ("00000", "00001")
        rg = pq.ParquetFile(p).metadata.row_group(0)
        codecs = {rg.column(i).path_in_schema: rg.column(i).compression for i in range(rg.num_columns)}
        assert codecs.pop("image.bytes") == "UNCOMPRESSED" and set(codecs.values()) == {"ZSTD"}

    old = json.loads((run_a / "manifest.json").read_text())
    for key in ("kept", "rejected", "rejected_total", "inputs", "balanced", "rows_by_partition", "stages"):
        assert manifest[key] == old[key], key
    record = manifest["extra"]["compaction"]
    assert record["files_before"] == {"data": len(before), "rejects": 1}
    assert record["files_after"] == {"data": len(after), "rejects": 1}
    assert sum(record["shards"]["data"].values()) == manifest["kept"]
    assert [n for n in manifest["notes"] if n.startswith("compacted by `quarry compact`")]

    assert not (compacted / ".quarry" / "done").exists()  # the per-input markers named the old files
    assert not (compacted / ".quarry" / "compact").exists() and not (compacted / ".quarry.lock").exists()
    assert (compacted / ".quarry" / "run.json").exists()


def test_resume_on_a_compacted_run_says_it_is_complete(inputs, compacted, capsys):
    before = everything(compacted)
    assert main(run_argv(inputs, compacted, "--resume")) == 0
    assert "already complete" in capsys.readouterr().out
    assert everything(compacted) == before


def test_compacting_twice_and_two_equal_runs_give_the_same_bytes(run_b, compacted, tmp_path):
    out = copy(compacted, tmp_path / "again")
    assert main(["compact", str(out)]) == 0
    assert shards(out) == shards(compacted)
    other = copy(run_b, tmp_path / "b")
    assert main(["compact", str(other)]) == 0
    assert shards(other) == shards(compacted)
    notes = json.loads((out / "manifest.json").read_text())["notes"]
    assert len([n for n in notes if n.startswith("compacted by")]) == 1  # a second pass replaces the note


def test_small_targets_cut_shards_and_row_groups_and_bigger_ones_merge_them_back(run_a, compacted, tmp_path):
    out = copy(run_a, tmp_path)
    assert main(["compact", str(out), "--target-mb", "0.1", "--row-group-mb", "0.03"]) == 0
    folders: dict[Path, list[str]] = {}
    for p in sorted((out / "data").rglob("*.parquet")):
        folders.setdefault(p.parent, []).append(p.name)
    biggest = max(folders.values(), key=len)
    assert len(biggest) > 1
    assert biggest == [f"caption-{i:05d}-of-{len(biggest):05d}.parquet" for i in range(len(biggest))]
    assert max(pq.ParquetFile(p).metadata.num_row_groups for p in (out / "data").rglob("*.parquet")) > 1
    assert pq.read_table(out / "data")["sample_id"].to_pylist() == \
        pq.read_table(run_a / "data")["sample_id"].to_pylist()
    # the layout follows from the row sequence alone: compacting the small shards gives the reference bytes
    assert main(["compact", str(out)]) == 0
    assert shards(out) == shards(compacted)


def test_a_run_with_shared_images_compacts_every_table(tmp_path):
    from quarry.dags.demos import interleaved
    from quarry.dags.registry import DAGS
    from quarry.dags.runner import resolve_config, run_dag

    demo = interleaved.build(tmp_path / "inputs")
    spec = DAGS["interleaved"]
    run = tmp_path / "run"
    run_dag(spec, demo.patterns, str(run), resolve_config(spec, None, demo.sets, demo.source or "demo"))
    out = copy(run, tmp_path / "c")
    assert main(["compact", str(out), "--target-mb", "0.05"]) == 0
    images = sorted(p.name for p in (out / "images").glob("*.parquet"))
    assert len(images) > 1 and all(NAME.match(n) and n.startswith("images-") for n in images)
    for table in ("data", "rejects", "images"):
        n, a_not_b, b_not_a = except_both_ways(run, out, table)
        assert n > 0 and a_not_b == 0 and b_not_a == 0, table
    assert pq.read_table(out / "images")["image_id"].to_pylist() == pq.read_table(run / "images")["image_id"].to_pylist()


def test_unfinished_locked_and_unbalanced_runs_are_refused_in_one_line(run_a, tmp_path, capsys):
    from quarry.dags.runner import output_lock

    out = copy(run_a, tmp_path)
    (out / "_INCOMPLETE").write_text("killed\n")
    before = everything(out)
    assert main(["compact", str(out)]) == 2
    assert "unfinished run" in one_line(capsys.readouterr().err) and everything(out) == before
    (out / "_INCOMPLETE").unlink()

    with output_lock(str(out)):  # what a running run holds
        assert main(["compact", str(out)]) == 2
        assert "in use by a running run (pid" in one_line(capsys.readouterr().err)

    (out / "manifest.json").rename(out / "manifest.moved")
    assert main(["compact", str(out)]) == 2
    assert "no finished run" in one_line(capsys.readouterr().err)
    (out / "manifest.moved").rename(out / "manifest.json")

    next((out / "data").rglob("*.parquet")).unlink()  # a shard lost after the run
    before = everything(out)
    assert main(["compact", str(out)]) == 2
    assert "does not add up" in one_line(capsys.readouterr().err) and everything(out) == before

    assert main(["compact", str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in one_line(capsys.readouterr().err)
    assert main(["compact", "gs://bucket/run"]) == 2
    assert "only local run directories" in one_line(capsys.readouterr().err)


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as e:
        main(["compact", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for words in ("--target-mb", "--row-group-mb", "atomic", "--resume", "_INCOMPLETE", "example"):
        assert words in out, words


def test_a_failure_while_writing_leaves_the_old_layout(run_a, tmp_path, capsys, monkeypatch):
    from quarry.dags import compact

    out = copy(run_a, tmp_path)
    before = everything(out)
    closes = []
    real = compact.StreamingShard.close

    def close(self):
        closes.append(self.path)
        if len(closes) == 3:
            raise OSError("No space left on device")
        return real(self)

    monkeypatch.setattr(compact.StreamingShard, "close", close)
    assert main(["compact", str(out)]) == 2
    assert "No space left on device" in one_line(capsys.readouterr().err)
    assert everything(out) == before  # markers, shards, manifest: all as they were, no work folder left


def compact_killed_at(run: Path, point: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "quarry.dags.cli", "compact", str(run)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "QUARRY_TEST_FAULT": f"compact:{point}"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_a_kill_before_the_swap_leaves_the_old_layout(run_a, compacted, tmp_path, capsys):
    for point in ("written", "committed"):  # new shards written; and journaled, nothing swapped yet
        out = copy(run_a, tmp_path / point)
        compact_killed_at(out, point)
        assert shards(out) == shards(run_a) and (out / "manifest.json").read_bytes() == \
            (run_a / "manifest.json").read_bytes()
        assert (out / ".quarry" / "compact").is_dir()
        assert main(["compact", str(out)]) == 0  # cleans up (or finishes the journaled swap), then compacts
        assert "NOTE: " in capsys.readouterr().out
        assert shards(out) == shards(compacted) and not (out / ".quarry" / "compact").exists()


def test_a_kill_mid_swap_leaves_whole_tables_and_the_next_compaction_finishes(run_a, compacted, tmp_path, capsys):
    out = copy(run_a, tmp_path)
    compact_killed_at(out, "swapped:data")  # data/ swapped, rejects/ and the manifest not yet
    now = shards(out)
    assert {k: v for k, v in now.items() if k.startswith("data/")} == \
        {k: v for k, v in shards(compacted).items() if k.startswith("data/")}  # wholly new
    assert {k: v for k, v in now.items() if k.startswith("rejects/")} == \
        {k: v for k, v in shards(run_a).items() if k.startswith("rejects/")}  # wholly old
    for table in ("data", "rejects"):
        assert except_both_ways(run_a, out, table)[1:] == (0, 0)  # a reader sees the same rows meanwhile
    assert main(["compact", str(out)]) == 0
    assert "finished the swap of an interrupted compaction" in capsys.readouterr().out
    assert shards(out) == shards(compacted)
    assert json.loads((out / "manifest.json").read_text())["extra"]["compaction"]["files_after"]["data"] == \
        len(list((compacted / "data").rglob("*.parquet")))


MEASURE = """
import json, sys
import pyarrow as pa
from quarry.dags.compact import compact


def kb(field):  # this process's own memory (getrusage's maxrss would include the forking parent's RSS)
    return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith(field + ":"))


base = kb("VmRSS")
report = compact(sys.argv[1], 64, 8)
print(json.dumps({"base_kb": base, "peak_kb": kb("VmHWM"), "arrow_mb": pa.default_memory_pool().max_memory() / 2**20,
                  "after": report.files_after}))
"""


def test_memory_stays_near_one_row_group_on_a_run_of_many_shards(run_a, tmp_path):
    """200 shards of 6 rows of 250 KB (300 MB in one partition) compacted with 8 MB row groups: Arrow holds
    a few row groups at most (it streams: 56 MB measured), and the whole process grows by half the partition at
    most (108 MB measured: the allocators keep some freed memory)."""
    import pyarrow as pa

    out = copy(run_a, tmp_path)
    first = next((out / "data").rglob("*.parquet"))
    schema, template = pq.read_schema(first), pq.read_table(first).slice(0, 1).to_pylist()[0]
    shutil.rmtree(out / "data")
    folder = out / "data" / "source=synthetic" / "tier=easy"
    folder.mkdir(parents=True)
    for f in range(200):
        rows = [{**template, "sample_id": f"syn{f:03d}{i}", "source": "synthetic", "tier": "easy",
                 "image": {"bytes": os.urandom(250_000), "path": None}} for i in range(6)]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"caption-{f:05d}-of-00200.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(kept=1200, rows_by_partition={"source=synthetic/tier=easy": 1200})
    (out / "manifest.json").write_text(json.dumps(manifest))

    proc = subprocess.run([sys.executable, "-c", MEASURE, str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    grown_mb = (got["peak_kb"] - got["base_kb"]) / 1024
    assert got["after"]["data"] == 5  # 300 MB in shards of ~64 MB
    assert got["arrow_mb"] < 100, f"Arrow held {got['arrow_mb']:.0f} MB at most for 8 MB row groups"
    assert grown_mb < 150, f"compaction grew the process by {grown_mb:.0f} MB for a 300 MB partition: {got}"
    assert len(list(folder.glob("*.parquet"))) == 5
    assert pq.read_table(folder)["sample_id"].to_pylist() == [f"syn{f:03d}{i}" for f in range(200) for i in range(6)]


def test_without_an_atomic_exchange_the_two_rename_swap_gives_the_same_layout(run_a, compacted, tmp_path, monkeypatch):
    from quarry.dags import compact

    monkeypatch.setattr(compact, "_RENAME_EXCHANGE", 1 << 30)  # a flag renameat2 refuses: as on a filesystem without it
    out = copy(run_a, tmp_path)
    assert main(["compact", str(out)]) == 0
    assert shards(out) == shards(compacted) and not (out / ".quarry" / "compact").exists()
