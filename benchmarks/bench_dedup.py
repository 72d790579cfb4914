"""Benchmark the near-duplicate search: hashes/s per size, Beam vs the bare operator loop, memory.

    .venv/bin/python benchmarks/bench_dedup.py [--sizes 10000,100000,1000000,10000000]
        [--max-hamming 4] [--dup-fraction 0.1] [--variants 0|7] [--skip-beam-above N]
        [--runner-mode in_memory|multi_processing] [--workers N]

For each size N it makes N synthetic keys: (1 - dup_fraction) * N uniform random "originals" and
dup_fraction * N copies of random originals with 1-4 bits flipped, with random sizes. With
``--variants 7`` every key also carries 7 random "orientation" hashes (what
`phash64_orientations` adds in the caption DAG; real ones are ~32 bits from the own hash, as random
ones are), and a copy is made from a random one of its original's 8 hashes (a turned copy). The data
are a pure function of (N, seed), generated in shards of 50,000 (inside the pipeline for Beam, so
nothing big is pickled into the graph).

Each size runs twice, each in a fresh subprocess (so peak RSS is that run's):
- bare: the operators without Beam, in one process: rank the samples, expand own + variant hashes,
  `near_duplicate_edges` (every band, two-level sorted-key search, best neighbour per id);
- beam: `NearDuplicates(max_hamming)` on the DirectRunner.
It prints hashes/s, the Beam / bare throughput ratio, compared candidate pairs per key, peak RSS,
and checks that both drop the same (dropped, kept, distance) set (a checksum over the drops).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import zlib

import numpy as np

SHARD_SIZE = 50_000


def generate_arrays(shard: int, n: int, dup_fraction: float, seed: int, variants: int):
    """Keys ``shard * SHARD_SIZE ..`` of the size-`n` dataset as arrays:
    (ids, own uint64, variants uint64 [rows, variants], width, height)."""
    rng = np.random.default_rng([seed, n, shard, variants])
    start = shard * SHARD_SIZE
    m = min(n, start + SHARD_SIZE) - start
    hashes = rng.integers(0, 2**64, size=(m, 1 + variants), dtype=np.uint64)
    is_dup = rng.random(m) < dup_fraction
    is_dup[0] = False
    originals = np.flatnonzero(~is_dup)
    dups = np.flatnonzero(is_dup)
    src = originals[rng.integers(0, originals.size, size=dups.size)]
    column = rng.integers(0, 1 + variants, size=dups.size)  # 0: the own hash; else a turned copy
    bits = np.argsort(rng.random((dups.size, 64)), axis=1)[:, :4].astype(np.uint64)
    used = np.arange(4)[None, :] < rng.integers(1, 5, size=dups.size)[:, None]
    flips = np.bitwise_or.reduce(np.where(used, np.uint64(1) << bits, np.uint64(0)), axis=1)
    hashes[dups, 0] = hashes[src, column] ^ flips
    ids = [f"{'dup' if d else 'img'}{start + i:09d}" for i, d in enumerate(is_dup.tolist())]
    width = rng.choice(np.array([320, 640, 1024, 2048]), size=m)
    height = rng.choice(np.array([240, 480, 768, 1536]), size=m)
    return ids, hashes[:, 0], hashes[:, 1:], width, height


def generate_shard(shard: int, n: int, dup_fraction: float, seed: int, variants: int):
    from quarry.pipelines.dedup import DedupKey

    ids, own, var, width, height = generate_arrays(shard, n, dup_fraction, seed, variants)
    own_l, var_l, w_l, h_l = own.tolist(), var.tolist(), width.tolist(), height.tolist()
    return [DedupKey(ids[i], own_l[i], w_l[i], h_l[i], tuple(var_l[i])) for i in range(len(ids))]


def num_shards(n: int) -> int:
    return (n + SHARD_SIZE - 1) // SHARD_SIZE


def drop_checksum(dropped: str, kept: str, distance: int) -> int:
    return zlib.crc32(f"{dropped}|{kept}|{distance}".encode())


def run_bare(n: int, max_hamming: int, dup_fraction: float, seed: int, variants: int) -> dict:
    from quarry.operators.phash import SearchStats, near_duplicate_edges

    parts = [generate_arrays(s, n, dup_fraction, seed, variants) for s in range(num_shards(n))]
    ids = np.array([i for p in parts for i in p[0]])
    own = np.concatenate([p[1] for p in parts])
    var = np.concatenate([p[2] for p in parts])
    pixels = np.concatenate([p[3] * p[4] for p in parts])
    del parts
    t0 = time.perf_counter()
    by_rank = np.lexsort((ids, -pixels))  # most pixels, then the smallest id
    ordinal = np.empty(n, dtype=np.int64)
    ordinal[by_rank] = np.arange(n)
    hashes, owners, variant = own, ordinal, np.zeros(n, dtype=bool)
    if variants:
        distinct = var != own[:, None]  # a variant equal to the own hash adds nothing
        hashes = np.concatenate([own, var[distinct]])
        owners = np.concatenate([ordinal, np.repeat(ordinal, distinct.sum(axis=1))])
        variant = np.concatenate([variant, np.ones(int(distinct.sum()), dtype=bool)])
    stats = SearchStats()
    edges = near_duplicate_edges(hashes, owners, variant, max_hamming, stats)
    seconds = time.perf_counter() - t0
    checksum = 0
    for w, b, d in zip(edges.worse.tolist(), edges.better.tolist(), edges.distance.tolist()):
        checksum += drop_checksum(str(ids[by_rank[w]]), str(ids[by_rank[b]]), d)
    return {"seconds": seconds, "dropped": int(edges.worse.size), "checksum": checksum,
            "candidates": stats.candidates, "hashes": int(hashes.size)}


def run_beam(n: int, max_hamming: int, dup_fraction: float, seed: int, variants: int, mode: str, workers: int) -> dict:
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from quarry.pipelines.dedup import NearDuplicates

    dropped = Metrics.counter("bench", "dropped")
    checksum = Metrics.counter("bench", "checksum")

    def count(drop):
        dropped.inc()
        checksum.inc(drop_checksum(*drop))
        return drop

    options = PipelineOptions(runner="DirectRunner", direct_running_mode=mode, direct_num_workers=workers)
    t0 = time.perf_counter()
    p = beam.Pipeline(options=options)
    _ = (
        p
        | "Shards" >> beam.Create(list(range(num_shards(n))))
        | "Spread" >> beam.Reshuffle()
        | "Generate" >> beam.FlatMap(generate_shard, n, dup_fraction, seed, variants)
        | "NearDuplicates" >> NearDuplicates(max_hamming)
        | "Count" >> beam.Map(count)
    )
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - t0
    metrics = result.metrics().query(MetricsFilter())

    def counter(namespace, name):
        return sum(c.committed or c.attempted or 0 for c in metrics["counters"]
                   if c.key.metric.namespace == namespace and c.key.metric.name == name)

    shard_max = max((d.committed or d.attempted).max for d in metrics["distributions"]
                    if d.key.metric.name == "shard_hashes")
    return {"seconds": seconds, "dropped": counter("bench", "dropped"), "checksum": counter("bench", "checksum"),
            "candidates": counter("dedup", "candidate_pairs"), "hashes": counter("dedup", "hashes"),
            "shard_max": shard_max}


def generation_seconds(n: int, dup_fraction: float, seed: int, variants: int) -> float:
    import quarry.pipelines.dedup  # noqa: F401  (imports Beam: not part of generating)

    t0 = time.perf_counter()
    for s in range(num_shards(n)):
        generate_shard(s, n, dup_fraction, seed, variants)
    return time.perf_counter() - t0


def child(args: argparse.Namespace) -> int:
    n = args.one
    if args.mode == "bare":
        out = run_bare(n, args.max_hamming, args.dup_fraction, args.seed, args.variants)
    elif args.mode == "gen":
        out = {"seconds": generation_seconds(n, args.dup_fraction, args.seed, args.variants)}
    else:
        out = run_beam(n, args.max_hamming, args.dup_fraction, args.seed, args.variants, args.runner_mode,
                       args.workers)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["children_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def spawn(args: argparse.Namespace, n: int, mode: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", str(n), "--mode", mode,
           "--max-hamming", str(args.max_hamming), "--dup-fraction", str(args.dup_fraction), "--seed", str(args.seed),
           "--variants", str(args.variants), "--runner-mode", args.runner_mode, "--workers", str(args.workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{mode} at N={n} failed:\n{proc.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--max-hamming", type=int, default=4)
    ap.add_argument("--dup-fraction", type=float, default=0.1)
    ap.add_argument("--variants", type=int, default=0, help="orientation hashes per key (7: flip/rotation-aware)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runner-mode", default="in_memory", choices=("in_memory", "multi_threading", "multi_processing"))
    ap.add_argument("--workers", type=int, default=1, help="--direct_num_workers")
    ap.add_argument("--skip-beam-above", type=int, default=0, help="only the bare run above this N (0: never skip)")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        return child(args)

    import apache_beam as beam

    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"max_hamming={args.max_hamming} dup_fraction={args.dup_fraction} variants={args.variants} "
          f"runner_mode={args.runner_mode} workers={args.workers} python={sys.version.split()[0]} "
          f"beam={beam.__version__} cores={os.cpu_count()}")
    header = (f"{'N':>10} {'hashes':>10} {'dropped':>9} {'cand/key':>8} {'bare s':>8} {'bare k/s':>9} "
              f"{'bare MiB':>8} {'gen s':>6} {'beam s':>8} {'beam k/s':>9} {'beam MiB':>8} {'max shard':>9} "
              f"{'ratio':>6}")
    print(header)
    print("-" * len(header))
    for n in sizes:
        bare = spawn(args, n, "bare")
        cols = [f"{n:>10}", f"{bare['hashes']:>10}", f"{bare['dropped']:>9}", f"{bare['candidates'] / n:8.2f}",
                f"{bare['seconds']:8.2f}", f"{n / bare['seconds'] / 1e3:9.1f}", f"{bare['peak_rss_mib']:8.0f}"]
        if args.skip_beam_above and n > args.skip_beam_above:
            cols += [f"{'-':>6}", f"{'-':>8}", f"{'-':>9}", f"{'-':>8}", f"{'-':>9}", f"{'-':>6}"]
        else:
            gen = spawn(args, n, "gen")["seconds"]
            bm = spawn(args, n, "beam")
            if (bm["dropped"], bm["checksum"]) != (bare["dropped"], bare["checksum"]):
                print(f"MISMATCH at N={n}: beam {bm['dropped']} drops (sum {bm['checksum']}), "
                      f"bare {bare['dropped']} (sum {bare['checksum']})", file=sys.stderr)
                return 1
            beam_s = bm["seconds"] - gen  # the pipeline generates its keys: take that out
            rss = max(bm["peak_rss_mib"], bm["children_rss_mib"])
            cols += [f"{gen:6.2f}", f"{beam_s:8.2f}", f"{n / beam_s / 1e3:9.1f}", f"{rss:8.0f}",
                     f"{bm['shard_max']:>9}", f"{bare['seconds'] / beam_s:6.2f}"]
        print(" ".join(cols), flush=True)
    print("k/s: thousands of keys per second. ratio: beam throughput / bare throughput (same run).")
    print("beam s: pipeline wall time minus the time to generate the keys (gen s, measured alone).")
    print("cand/key: hash pairs compared per key. MiB: peak RSS of that run's process.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
