"""Rows that wait for a shuffle on disk (pipelines/spill.py): references round-trip, only the DirectRunner on a
local folder spills, and spilling changes no byte of the output."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from quarry.pipelines.spill import SPILL_DIR, SpillReader, SpillWriter, Stash, clear_spill, spill_dir
from quarry.pipelines.write import WriteShards, pack_row
from quarry.schemas.common import Origin, Sample
from quarry.schemas.config import ShardConfig


def test_references_read_back_the_bytes_written(tmp_path):
    w = SpillWriter(str(tmp_path))
    blobs = [b"", b"x", bytes(range(256)) * 500, "ünïcode".encode()]
    refs = [w.put(b) for b in blobs]
    w.close()
    assert {len(r) for r in refs} == {32}  # what crosses the shuffle, whatever the row holds
    r = SpillReader(str(tmp_path))
    assert [r.get(ref) for ref in reversed(refs)] == blobs[::-1]
    r.close()
    assert len(list(tmp_path.glob("*.bin"))) == 1  # one file a bundle


def test_a_cut_spill_file_fails_instead_of_losing_the_row(tmp_path):
    w = SpillWriter(str(tmp_path))
    ref = w.put(b"a" * 1000)
    w.close()
    (f,) = tmp_path.glob("*.bin")
    f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(IOError, match="holds 10 of 1000 bytes"):
        SpillReader(str(tmp_path)).get(ref)


def test_a_stash_pickles_as_its_directory_and_passes_values_through_without_one(tmp_path):
    import pickle

    s = Stash(str(tmp_path))
    ref = s.put(b"row")
    s2 = pickle.loads(pickle.dumps(s))  # an open file handle does not travel to a worker
    s.finish()
    assert s2.get(ref) == b"row"
    s2.finish()
    assert Stash(None).put(b"row") == b"row" and Stash(None).get(b"row") == b"row"


def test_only_the_direct_runner_on_a_local_folder_spills(tmp_path):
    local = beam.Pipeline()
    assert spill_dir(local, str(tmp_path), "data") == f"{tmp_path}/{SPILL_DIR}/data"
    assert spill_dir(local, None, "data") is None
    assert spill_dir(local, "gs://bucket/out", "data") is None
    portable = beam.Pipeline(options=PipelineOptions(["--runner=PortableRunner"]))
    assert spill_dir(portable, str(tmp_path), "data") is None  # its workers may be on other machines


def _rows(n: int) -> list[Sample]:
    return [Sample(sample_id=f"id{i:05d}", source="a" if i % 3 else "b", tier=("easy", "hard")[i % 2], task="t",
                   origin=Origin(file="f.tar", key=str(i)), url="http://example.test/" + "p" * (i % 97))
            for i in range(n)]


def _write(out: Path, rows, cfg: ShardConfig, args: tuple[str, ...] = ()) -> dict[str, str]:
    with TestPipeline(options=PipelineOptions(list(args))) as p:
        p | beam.Create(rows, reshuffle=False) | WriteShards(str(out), "test", Sample, cfg)
    return {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted((out / "data").rglob("*.parquet"))}


@pytest.mark.parametrize("args", [(), ("--direct_num_workers=2", "--direct_running_mode=multi_processing")],
                         ids=["in_process", "multi_process"])
def test_spilled_rows_give_the_same_shards_as_rows_in_memory(tmp_path, args):
    rows = _rows(3000)
    cfg = ShardConfig(max_rows=400, row_group_size=100)
    on = _write(tmp_path / "on", rows, cfg, args)
    off = _write(tmp_path / "off", rows, cfg.model_copy(update={"spill": False}), args)
    assert on == off and len(on) > 4
    spilled = list((tmp_path / "on" / SPILL_DIR).rglob("*.bin"))
    packed = sum(len(pack_row(r.model_dump(), compress=False)) for r in rows)  # spilled rows skip zlib
    assert spilled and sum(f.stat().st_size for f in spilled) == packed
    assert not (tmp_path / "off" / SPILL_DIR).exists()
    clear_spill(str(tmp_path / "on"))
    assert not (tmp_path / "on" / SPILL_DIR).exists()


def test_a_run_leaves_no_spill_behind_and_spilling_changes_no_output(tmp_path):
    from quarry.dags import imagemining
    from quarry.dags.demos import imagemining as imagemining_demo
    from quarry.dags.runner import resolve_config, run_dag

    demo = imagemining_demo.build(tmp_path / "in")
    outs = {}
    for spill in (True, False):
        cfg = resolve_config(imagemining.SPEC, None, demo.sets + [f"shards.spill={str(spill).lower()}"], "demo")
        out = tmp_path / f"spill-{spill}"
        run_dag(imagemining.SPEC, demo.patterns, str(out), cfg)
        assert not (out / SPILL_DIR).exists()
        outs[spill] = {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest()
                       for f in sorted(out.rglob("*.parquet"))}
    assert outs[True] == outs[False] and any(k.startswith("data/") for k in outs[True])


def test_gather_frames_values_as_a_group_by_key_would_group_them():
    from quarry.pipelines.spill import Gather, records

    g = Gather()
    values = [("id3", b"c" * 70_000), ("é-unicode", b""), ("id1", bytes(range(256)))]
    parts = [g.add_input(g.create_accumulator(), v) for v in values]  # three bundles' partial groups
    merged = g.extract_output(g.merge_accumulators([g.create_accumulator(), *parts]))
    assert [(name, bytes(payload)) for name, payload in records(merged)] == values
    assert records(g.extract_output(g.create_accumulator())) == []
    with TestPipeline() as p:  # lifted into the workers by the DirectRunner, merged after the shuffle
        got = (p | beam.Create([(k % 3, (f"v{k}", bytes([k]))) for k in range(30)])
               | beam.CombinePerKey(Gather())
               | beam.MapTuple(lambda k, blob: (k, sorted(name for name, _ in records(blob)))))
        from apache_beam.testing.util import assert_that, equal_to

        assert_that(got, equal_to([(k, sorted(f"v{i}" for i in range(30) if i % 3 == k)) for k in range(3)]))


def test_heap_arenas_are_bounded_for_direct_runs_unless_the_user_chose(monkeypatch):
    from quarry.pipelines.spill import MALLOC_ARENAS, bound_heap_arenas, is_direct_run

    monkeypatch.setenv("MALLOC_ARENA_MAX", "7")
    bound_heap_arenas()
    import os

    assert os.environ["MALLOC_ARENA_MAX"] == "7"
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    bound_heap_arenas()  # SDK processes started from here read it
    assert os.environ["MALLOC_ARENA_MAX"] == MALLOC_ARENAS
    assert is_direct_run(beam.Pipeline())
    assert not is_direct_run(beam.Pipeline(options=PipelineOptions(["--runner=PortableRunner"])))
