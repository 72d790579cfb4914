"""Benchmark the near-duplicate transform: time per size, Beam vs bare Python.

    .venv/bin/python benchmarks/bench_dedup.py [--sizes 10000,100000,1000000]
        [--max-hamming 4] [--dup-fraction 0.1] [--runner-mode in_memory|multi_processing]
        [--workers N] [--skip-beam-above N]

For each size N it makes N synthetic 64-bit hashes: (1 - dup_fraction) * N
uniform random "originals" and dup_fraction * N copies of random originals
with 1-4 bits flipped (each copy is within 4 bits of its original), with
random sizes. The data are a pure function of (N, seed), generated inside
the pipeline in shards, so nothing big is pickled into the pipeline graph.

Then it runs
- `NearDuplicates(max_hamming)` on the DirectRunner (FnApiRunner; in-process
  by default), counting the dropped ids with a Beam counter; and
- the same operators without Beam: band keys into a dict, one
  `near_duplicates_in_group` per group, best neighbour per dropped id;
and prints wall time, time per hash and the Beam / bare ratio, and checks
that both drop the same number of samples.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from quarry.operators.phash import Member, band_keys, near_duplicates_in_group, rank_key
from quarry.pipelines.dedup import DedupKey, NearDuplicates

SHARD_SIZE = 50_000


def generate_shard(shard: int, n: int, dup_fraction: float, seed: int) -> list[DedupKey]:
    """Keys ``shard * SHARD_SIZE ..`` of the size-`n` dataset; originals and copies."""
    rng = random.Random(f"{seed}:{n}:{shard}")
    start = shard * SHARD_SIZE
    stop = min(n, start + SHARD_SIZE)
    keys: list[DedupKey] = []
    originals: list[int] = []
    for i in range(start, stop):
        if originals and rng.random() < dup_fraction:
            h = rng.choice(originals)
            for bit in rng.sample(range(64), rng.randint(1, 4)):
                h ^= 1 << bit
            name = f"dup{i:09d}"
        else:
            h = rng.getrandbits(64)
            originals.append(h)
            name = f"img{i:09d}"
        keys.append(DedupKey(name, h, rng.choice((320, 640, 1024, 2048)), rng.choice((240, 480, 768, 1536))))
    return keys


def num_shards(n: int) -> int:
    return (n + SHARD_SIZE - 1) // SHARD_SIZE


def bare_python(n: int, max_hamming: int, dup_fraction: float, seed: int) -> tuple[float, int]:
    """The same operators without Beam; returns (seconds, dropped ids). Excludes generation."""
    keys = [k for s in range(num_shards(n)) for k in generate_shard(s, n, dup_fraction, seed)]
    t0 = time.perf_counter()
    groups: dict[tuple[int, int], list[Member]] = defaultdict(list)
    for sample_id, h, width, height in keys:
        member = Member(sample_id, h, rank_key(width, height, sample_id))
        for band in band_keys(h, max_hamming):
            groups[band].append(member)
    best: dict[str, tuple] = {}
    for (band_index, _value), members in groups.items():
        if len(members) < 2:
            continue
        edges = near_duplicates_in_group(members, max_hamming, band_index)
        if not edges:
            continue
        rank_of = {m.sample_id: m.rank for m in members}
        for worse, better, dist in edges:
            cand = (rank_of[better], better, dist)
            if worse not in best or cand < best[worse]:
                best[worse] = cand
    return time.perf_counter() - t0, len(best)


def with_beam(n: int, max_hamming: int, dup_fraction: float, seed: int, options: PipelineOptions) -> tuple[float, int]:
    """NearDuplicates on the DirectRunner; returns (seconds incl. generation, dropped ids)."""
    dropped = Metrics.counter("bench", "dropped")

    def count(drop):
        dropped.inc()
        return drop

    t0 = time.perf_counter()
    p = beam.Pipeline(options=options)
    _ = (
        p
        | "Shards" >> beam.Create(list(range(num_shards(n))))
        | "Spread" >> beam.Reshuffle()
        | "Generate" >> beam.FlatMap(generate_shard, n, dup_fraction, seed)
        | "NearDuplicates" >> NearDuplicates(max_hamming)
        | "Count" >> beam.Map(count)
    )
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - t0
    counters = result.metrics().query(MetricsFilter().with_namespace("bench").with_name("dropped"))["counters"]
    return seconds, sum(c.committed or c.attempted or 0 for c in counters)


def generation_seconds(n: int, dup_fraction: float, seed: int) -> float:
    t0 = time.perf_counter()
    for s in range(num_shards(n)):
        generate_shard(s, n, dup_fraction, seed)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--max-hamming", type=int, default=4)
    ap.add_argument("--dup-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runner-mode", default="in_memory", choices=("in_memory", "multi_threading", "multi_processing"))
    ap.add_argument("--workers", type=int, default=1, help="--direct_num_workers")
    ap.add_argument(
        "--skip-beam-above", type=int, default=0, help="only the bare-Python run above this N (0: never skip)"
    )
    args = ap.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",") if s]
    options = PipelineOptions(
        runner="DirectRunner", direct_running_mode=args.runner_mode, direct_num_workers=args.workers
    )
    print(
        f"max_hamming={args.max_hamming} dup_fraction={args.dup_fraction} runner_mode={args.runner_mode} "
        f"workers={args.workers} python={sys.version.split()[0]} beam={beam.__version__}"
    )
    header = (
        f"{'N':>10} {'dropped':>9} {'gen s':>7} {'bare s':>8} {'bare us/N':>10}"
        f" {'beam s':>8} {'beam us/N':>10} {'beam/bare':>9}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        gen = generation_seconds(n, args.dup_fraction, args.seed)
        bare_s, bare_dropped = bare_python(n, args.max_hamming, args.dup_fraction, args.seed)
        if args.skip_beam_above and n > args.skip_beam_above:
            beam_cols = f"{'-':>8} {'-':>10} {'-':>9}"
        else:
            beam_s, beam_dropped = with_beam(n, args.max_hamming, args.dup_fraction, args.seed, options)
            if beam_dropped != bare_dropped:
                print(f"MISMATCH at N={n}: beam dropped {beam_dropped}, bare dropped {bare_dropped}", file=sys.stderr)
                return 1
            beam_cols = f"{beam_s:8.2f} {beam_s / n * 1e6:10.1f} {beam_s / bare_s:9.1f}"
        print(f"{n:>10} {bare_dropped:>9} {gen:7.2f} {bare_s:8.2f} {bare_s / n * 1e6:10.1f} {beam_cols}", flush=True)
    print("beam s includes generating the hashes inside the pipeline (gen s); bare s does not.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
