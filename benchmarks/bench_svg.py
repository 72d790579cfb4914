"""svg DAG throughput on real icons, next to a bare multiprocessing loop, in one run.

    .venv/bin/python benchmarks/bench_svg.py [--n 1000] [--workers 2] [--size 512]

Input: `--n` real SVG files sampled (seeded) from Debian's papirus-icon-theme
(regular files only, no symlinks; every size folder and the symbolic set),
packed as tar shards of 100 under benchmarks/_work/. Reported:

1. renders/s of the svg DAG (DirectRunner, multi_processing, N workers, whole
   run: start-up, read, prepare, exact dedup, render, pHash dedup, Parquet
   shards, rejects, manifest) next to renders/s of a bare
   `multiprocessing.Pool(N)` doing parse + sanitise + normalise + render on
   the same records, and the ratio (target >= 0.7);
2. the fraction of real icons that become pairs, and why the others did not.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

from quarry.operators.base import Rejection
from quarry.operators.svg.prepare import prepare_svg
from quarry.operators.svg.render import RenderOptions, render
from quarry.pipelines.svg import plan_svg_inputs, read_svg_input
from quarry.schemas.svg import SvgReaderConfig, SvgRecord

WORK = Path(__file__).resolve().parent / "_work"
PAPIRUS = Path("/usr/share/icons/Papirus")


def make_input(n: int, seed: int = 0, per_shard: int = 100) -> Path:
    folder = WORK / f"svg-in-{n}-{seed}-{per_shard}"
    if folder.exists() and len(list(folder.glob("*.tar"))) == -(-n // per_shard):
        return folder
    if not PAPIRUS.is_dir():
        raise SystemExit(f"{PAPIRUS} is absent: install Debian's papirus-icon-theme (scripts/apt-packages.txt)")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = sorted(p for p in PAPIRUS.rglob("*.svg") if p.is_file() and not p.is_symlink())
    sample = random.Random(seed).sample(files, min(n, len(files)))
    for start in range(0, len(sample), per_shard):
        with tarfile.open(folder / f"papirus-{start // per_shard:05d}.tar", "w") as tar:
            for f in sample[start:start + per_shard]:
                data = f.read_bytes()
                info = tarfile.TarInfo(str(f.relative_to(PAPIRUS)))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return folder


# --- the bare loop: parse + sanitise + normalise + render, no Beam ------------------------------

_OPTS = RenderOptions()


def _init(size: int) -> None:
    global _OPTS
    _OPTS = RenderOptions(size=size)


def _bare_one(data: bytes) -> str:
    prepared = prepare_svg(data)
    if isinstance(prepared, Rejection):
        return f"prepare/{prepared.reason}"
    out = render(prepared, _OPTS)
    return f"render/{out.reason}" if isinstance(out, Rejection) else "rendered"


def _records(folder: Path):
    cfg = SvgReaderConfig()
    for f in plan_svg_inputs([str(folder / "*.tar")], cfg):
        for rec in read_svg_input(f, "bench", cfg):
            if isinstance(rec, SvgRecord):
                yield rec.data


def bare_loop(folder: Path, workers: int, size: int) -> tuple[Counter, float]:
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(size,)) as pool:
        outcomes = Counter(pool.imap_unordered(_bare_one, _records(folder), chunksize=8))
    return outcomes, time.perf_counter() - t0


# --- the DAG, in a subprocess -----------------------------------------------------------------

_RUN = """
import json, sys
from quarry.dags.runner import resolve_config, run_dag
from quarry.dags.svg import SPEC
inputs, out, size, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
beam = ["--direct_num_workers=%d" % workers, "--direct_running_mode=multi_processing"] if workers > 1 else []
m = run_dag(SPEC, [inputs], out, resolve_config(SPEC, None, ["render.size=" + size], "papirus"),
            overwrite=True, beam_args=beam)
print("MANIFEST " + json.dumps(m.model_dump(mode="json")))
"""


def run_dag(folder: Path, out: Path, workers: int, size: int) -> tuple[dict, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUN, str(folder / "*.tar"), str(out), str(size), str(workers)],
                          capture_output=True, text=True, env={**os.environ, "QUARRY_PROGRESS": "0"})
    elapsed = time.perf_counter() - t0
    line = next((x for x in proc.stdout.splitlines() if x.startswith("MANIFEST ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"DAG failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[len("MANIFEST "):]), elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="real icons to read (default 1000)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=512, help="render long side (default 512, the DAG's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    folder = make_input(args.n, args.seed)
    print(f"input: {args.n} papirus icons (seed {args.seed}) in {folder}; render {args.size}px; "
          f"{args.workers} processes; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)

    outcomes, bare_s = bare_loop(folder, args.workers, args.size)
    bare_renders = sum(n for k, n in outcomes.items() if not k.startswith("prepare/"))
    print(f"  bare Pool({args.workers}) parse+sanitise+normalise+render: {sum(outcomes.values())} inputs, "
          f"{bare_renders} renders in {bare_s:.1f} s = {bare_renders / bare_s:.1f} renders/s", flush=True)

    m, dag_s = run_dag(folder, WORK / f"svg-out-{args.n}", args.workers, args.size)
    dag_renders = m["stages"]["render"]["inputs"]
    print(f"  svg DAG multi_processing x{args.workers}: {m['inputs']} inputs, {dag_renders} renders in {dag_s:.1f} s "
          f"= {dag_renders / dag_s:.1f} renders/s (whole run incl. start-up, dedup, shards, manifest)")
    print(f"  ratio DAG / bare (renders/s): {(dag_renders / dag_s) / (bare_renders / bare_s):.2f}  (target >= 0.7)")
    print(f"  inputs/s: bare {sum(outcomes.values()) / bare_s:.1f}, DAG {m['inputs'] / dag_s:.1f}")

    pairs = m["extra"]["pairs"]
    print(f"\npairs: {pairs} of {m['inputs']} icons = {pairs / m['inputs']:.1%} "
          f"({m['kept']} rows; inputs == pairs + rejected: {m['extra']['pairs_balanced']})")
    for stage, reasons in sorted(m["rejected"].items()):
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            print(f"  {stage}/{reason}: {n} ({n / m['inputs']:.1%})")
    print(f"  bare loop outcomes (no dedup): {dict(outcomes.most_common())}")


if __name__ == "__main__":
    main()
