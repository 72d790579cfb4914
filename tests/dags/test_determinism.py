"""Reruns are byte-identical: every DAG's demo, run again in-process and in multi-process mode, gives the
same Parquet files (data, rejects, images, contamination) and manifest counts as the demo run.

`benchmarks/rerun_check.py --runs 20` repeats this many times, so rare races show.
"""

from __future__ import annotations

import pytest

from quarry.dags.demo import DEMOS
from quarry.dags.inspect import differences, fingerprint
from quarry.dags.registry import DAGS
from quarry.dags.runner import resolve_config, run_dag

MULTI = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _on_demo_inputs(name: str, demo_dir, scratch):
    """The demo's patterns and sets, pointing at the session demo's own input files (rows carry input paths,
    so a rerun must read the very same paths to give the same bytes)."""
    demo = DEMOS[name](scratch)
    here, there = str(scratch), str(demo_dir / "inputs" / name)
    return ([p.replace(here, there) for p in demo.patterns], [s.replace(here, there) for s in demo.sets],
            demo.source or f"demo-{name}")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DEMOS))
def test_reruns_in_process_and_multi_process_are_byte_identical(demo_dir, tmp_path, name):
    patterns, sets, source = _on_demo_inputs(name, demo_dir, tmp_path / "scratch")
    cfg = resolve_config(DAGS[name], None, sets, source)
    reference = fingerprint(str(demo_dir / name))
    assert any(k.startswith("data/") for k in reference)
    for label, beam_args in (("in-process", []), ("multi-process", MULTI)):
        out = tmp_path / label
        run_dag(DAGS[name], patterns, str(out), cfg, beam_args=beam_args)
        assert differences(reference, fingerprint(str(out))) == [], label


def test_fingerprint_sees_a_changed_shard(demo_dir, tmp_path):
    import shutil

    shutil.copytree(demo_dir / "svg", tmp_path / "svg")
    before = fingerprint(str(tmp_path / "svg"))
    shard = sorted((tmp_path / "svg" / "data").glob("**/*.parquet"))[0]
    shard.write_bytes(shard.read_bytes() + b"\0")
    assert differences(before, fingerprint(str(tmp_path / "svg"))) == [str(shard.relative_to(tmp_path / "svg"))]
