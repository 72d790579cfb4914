"""Reruns give the same shards: every DAG on its demo input, N times, in-process and multi-process.

    .venv/bin/python benchmarks/rerun_check.py [--runs 20] [--dag caption --dag gui ...]

For each DAG: one reference run (DirectRunner, in-process), then N reruns into
a fresh output folder each, alternating in-process and
`--direct_num_workers=2 --direct_running_mode=multi_processing`; each rerun's
`quarry.dags.inspect.fingerprint` (sha256 of every Parquet file of data,
rejects, images and contamination, plus the manifest's counts) is compared
with the reference. Prints per DAG how many of the N runs differed and in
what, so rare races show; exits 1 if any differed. Inputs are built once
under benchmarks/_work/rerun (rows carry their input paths, so every run of
a DAG reads the same paths).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from quarry.dags.demo import DEMOS
from quarry.dags.inspect import differences, fingerprint
from quarry.dags.registry import DAGS
from quarry.dags.runner import resolve_config, run_dag

MULTI = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
WORK = Path(__file__).parent / "_work" / "rerun"


def run(name: str, demo, out: Path, beam_args: list[str]) -> dict:
    cfg = resolve_config(DAGS[name], None, demo.sets, demo.source or f"demo-{name}")
    if out.exists():
        shutil.rmtree(out)
    run_dag(DAGS[name], demo.patterns, str(out), cfg, beam_args=beam_args)
    return fingerprint(str(out))


def check(name: str, runs: int, work: Path) -> tuple[int, list[str], float]:
    """(differing runs, what differed, seconds) for one DAG."""
    t0 = time.monotonic()
    demo = DEMOS[name](work / "inputs" / name)
    ref = run(name, demo, work / name / "ref", [])
    differing, what = 0, []
    for i in range(runs):
        mode = MULTI if i % 2 else []
        got = run(name, demo, work / name / "rerun", mode)
        diff = differences(ref, got)
        if diff:
            differing += 1
            what.append(f"run {i + 1} ({'multi' if mode else 'in-process'}): {', '.join(diff[:5])}"
                        + (f" and {len(diff) - 5} more" if len(diff) > 5 else ""))
    return differing, what, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="reruns per DAG (half of them multi-process)")
    p.add_argument("--dag", action="append", choices=sorted(DEMOS), help="DAGs to check (default: all)")
    p.add_argument("--work", type=Path, default=WORK)
    args = p.parse_args(argv)
    print("| DAG | reruns | differing | s |\n|---|---:|---:|---:|")
    bad = 0
    for name in args.dag or list(DEMOS):
        differing, what, secs = check(name, args.runs, args.work)
        bad += differing
        print(f"| {name} | {args.runs} | {differing} | {secs:.0f} |", flush=True)
        for line in what:
            print(f"    {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
