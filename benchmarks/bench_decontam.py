"""Decontamination throughput against a large benchmark index, next to datatrove's n-gram filter.

    .venv/bin/python benchmarks/bench_decontam.py [--questions 500000] [--images 200000] [--rows 20000]
                                                  [--workers 2] [--skip-dag]

Synthetic data, deterministic for a seed:

- benchmark: `--questions` questions of 14-40 words drawn from a 20k-word
  synthetic vocabulary (Zipf-like), with 4 options each, in Parquet files of
  50k rows (100 benchmarks' worth at 5k items each); `--images` benchmark
  image pHashes (random 64-bit values: decoding 200k real pictures would
  dominate the run and measure Pillow, not the lookup);
- training rows: `--rows` texts of 40-120 words, 5% of them with a
  benchmark question pasted in (edited: case, punctuation), and a third of
  them with an image pHash (1 in 10 of those within 0-8 bits of a benchmark
  image).

Reports, in one run:

1. index build time and size in memory (`DecontamIndex.nbytes`) and shipped
   (`to_bytes`), for the text and image tables;
2. rows/s of quarry's check (`check_row`, one process) next to rows/s of
   datatrove's `NGramsDecontFilter.filter` (one process, its own spaCy word
   tokenizer and xxhash64 on the same texts, index built from the same
   questions with its `compute_hashes` logic), text only, and the ratio;
   plus quarry's rate with the image check added;
3. unless --skip-dag: `quarry run decontam` end to end (DirectRunner,
   multi_processing, --workers workers) against `--dag-questions` questions:
   the index built inside Beam from the Parquet benchmark files, shipped as a
   side input, the rows read, checked and written; wall time and rows/s
   (including the index build), and the marginal rate from a second run on a
   tenth of the rows (what start-up and the index build cost is the fixed part).

Default sizes keep the run to a few minutes on 2 cores: datatrove's index is
built on 10k of the questions (its spaCy tokenizer indexes ~300 questions/s;
its lookup is a dict, so its rate does not depend on the index size) and
checks 1k rows; the DAG runs against 100k questions.

Both checkers must agree on which texts are contaminated (checked).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import string
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quarry.operators.decontam import (
    BenchItem,
    DecontamIndex,
    ImageKey,
    IndexPart,
    IndexSettings,
    check_row,
    index_item,
)

WORK = Path(__file__).resolve().parent / "_work" / "decontam"


def vocabulary(rng: random.Random, n: int = 20_000) -> list[str]:
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 10))))
    return sorted(words)


def sentence(rng: random.Random, vocab: list[str], lo: int, hi: int) -> str:
    k = rng.randint(lo, hi)
    # A third of the words from 100 common ones (clean texts share many short n-grams with the
    # benchmark, as real text does), the rest from the whole vocabulary.
    words = [vocab[rng.randrange(100)] if rng.random() < 0.33 else rng.choice(vocab) for _ in range(k)]
    return " ".join(words).capitalize() + "?"


def make_data(n_q: int, n_img: int, n_rows: int, seed: int = 0, planted_from: int = 10_000):
    planted_from = min(planted_from, n_q)
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    rng.shuffle(vocab)
    questions = [sentence(rng, vocab, 14, 40) for _ in range(n_q)]
    image_hashes = [rng.getrandbits(64) for _ in range(n_img)]
    rows, truth = [], []
    for i in range(n_rows):
        text = sentence(rng, vocab, 40, 120)
        dirty = rng.random() < 0.05
        if dirty:  # planted copies come from the first `planted_from` questions (datatrove indexes those)
            q = questions[rng.randrange(planted_from)]
            q = q.upper() if rng.random() < 0.5 else q.replace(" ", " , ", 3)
            cut = rng.randint(0, len(text))
            text = text[:cut] + " " + q + " " + text[cut:]
        image = None
        if rng.random() < 1 / 3:
            if rng.random() < 0.1:
                h = rng.choice(image_hashes)
                for b in rng.sample(range(64), rng.randint(0, 8)):
                    h ^= 1 << b
                image = h
            else:
                image = rng.getrandbits(64)
        rows.append((text, image))
        truth.append(dirty)
    return questions, image_hashes, rows, truth


def build_index(questions, image_hashes, settings: IndexSettings) -> tuple[DecontamIndex, float]:
    t0 = time.perf_counter()
    part = IndexPart()
    for i, q in enumerate(questions):
        index_item(part, BenchItem(f"bench{i // 5000:03d}", str(i), q, [], ""), settings)
    for i, h in enumerate(image_hashes):  # synthetic pHashes, attached to the first items
        part.phash.append(h)
        part.digest.append(h ^ 0x5555)
        part.image_items.append(i % len(questions))
        part.image_labels.append("image")
    part.stats.images += len(image_hashes)
    index = DecontamIndex.from_part(part, settings)
    return index, time.perf_counter() - t0


def datatrove_filter(questions: list[str], n: int, folder: Path):
    """datatrove's NGramsDecontFilter over an index of the same questions' n-grams (its own tokenizer)."""
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.text import ngrams, simplify_text

    cfg = NGramsDecontConfig(n_grams=n, find_query_ngrams=True, find_overlap_ngrams=False)
    flt = NGramsDecontFilter(str(folder), config=cfg)
    hash_func = create_hash_func(cfg.hash_config)
    t0 = time.perf_counter()
    hashes = set()
    for q in questions:  # NGramsDecontIndexer.compute_hashes, minus its lighteval task loading
        tokens = flt.tokenizer.word_tokenize(simplify_text(q, cfg.norm_config))
        hashes.update(hash_func(" ".join(g)) for g in ngrams(tokens, n))
    folder.mkdir(parents=True, exist_ok=True)
    np.array(sorted(hashes), dtype=np.uint64).tofile(folder / "synthetic.index.hashes")
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    flt.load_index_hashes()
    load = time.perf_counter() - t0
    return flt, Document, build, load, len(hashes)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} rows/s"


def run_dag_bench(questions, rows, workers: int, folder: Path) -> tuple[float, int]:
    from quarry.dags import decontam
    from quarry.dags.runner import resolve_config, run_dag

    bench = folder / "bench"
    bench.mkdir(parents=True)
    for start in range(0, len(questions), 50_000):
        chunk = questions[start:start + 50_000]
        pq.write_table(pa.table({"id": [str(start + i) for i in range(len(chunk))], "question": chunk,
                                 "options": [["yes", "no", "maybe", "none of these"]] * len(chunk)}),
                       bench / f"bench{start // 50_000:03d}.parquet")
    train = folder / "train"
    train.mkdir()
    per_file = max(1, len(rows) // (workers * 2))
    for f, start in enumerate(range(0, len(rows), per_file)):
        chunk = rows[start:start + per_file]
        pq.write_table(pa.table({"sample_id": [f"t{start + i}" for i in range(len(chunk))],
                                 "text": [t for t, _ in chunk]}), train / f"train-{f:03d}.parquet")
    cfg = resolve_config(decontam.SPEC, None, [f"decontam.bench={bench}", "decontam.check_options=false"], "bench")
    args = [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    t0 = time.perf_counter()
    m = run_dag(decontam.SPEC, [str(train)], str(folder / "out"), cfg, beam_args=args)
    wall = time.perf_counter() - t0
    assert m.balanced and m.inputs == len(rows), m
    return wall, m.rejected_total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=500_000)
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--rows", type=int, default=10_000, help="training rows quarry checks")
    ap.add_argument("--dt-questions", type=int, default=10_000,
                    help="questions in datatrove's index (its spaCy tokenizer builds ~250-500/s)")
    ap.add_argument("--dt-rows", type=int, default=1_000, help="training rows datatrove checks")
    ap.add_argument("--dag-questions", type=int, default=100_000, help="questions for the end-to-end DAG run")
    ap.add_argument("--dag-rows", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ngram", type=int, default=13)
    ap.add_argument("--skip-dag", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("QUARRY_PROGRESS", "0")

    print(f"decontam benchmark: {args.questions:,} benchmark questions, {args.images:,} benchmark image hashes, "
          f"{args.rows:,} training rows, n={args.ngram}, {os.cpu_count()} CPUs visible", flush=True)
    t0 = time.perf_counter()
    questions, image_hashes, rows, truth = make_data(args.questions, args.images, max(args.rows, args.dag_rows),
                                                     planted_from=args.dt_questions)
    print(f"  synthetic data: {time.perf_counter() - t0:.1f} s", flush=True)

    settings = IndexSettings(ngram=args.ngram, check_options=False)
    index, build_s = build_index(questions, image_hashes, settings)
    blob = index.to_bytes()
    print(f"\n[index] quarry: built in {build_s:.1f} s ({len(questions) / build_s:,.0f} questions/s); "
          f"{len(index.ngram_keys):,} n-gram hashes, {len(index.whole_keys):,} whole-question hashes, "
          f"{len(index.phash):,} image hashes; {index.nbytes / 2**20:.1f} MiB in memory, "
          f"{len(blob) / 2**20:.1f} MiB shipped (npz)", flush=True)

    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="dc-bench-", dir=WORK))
    try:
        texts = [t for t, _ in rows[:args.rows]]
        t0 = time.perf_counter()
        ours = [bool(check_row(index, [("text", t)], [])) for t in texts]
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with_images = 0
        for t, h in rows[:args.rows]:
            with_images += bool(check_row(index, [("text", t)], [("image", ImageKey(h))] if h is not None else []))
        both_s = time.perf_counter() - t0
        recall = sum(o for o, t in zip(ours, truth) if t) / max(1, sum(truth[:len(ours)]))
        false_pos = sum(o and not t for o, t in zip(ours, truth))
        print(f"\n[check, 1 process] quarry text only: {rate(len(texts), ours_s)}; text + image: "
              f"{rate(len(texts), both_s)} ({with_images} rows contaminated); caught {recall:.0%} of the planted "
              f"text copies, {false_pos} false positives", flush=True)

        dt_q = questions[:args.dt_questions]
        flt, Document, dt_build, dt_load, dt_n = datatrove_filter(dt_q, args.ngram, tmp / "dt-index")
        print(f"[index] datatrove: {len(dt_q):,} questions -> {dt_n:,} n-gram hashes in {dt_build:.1f} s "
              f"({len(dt_q) / dt_build:,.0f} questions/s), loaded into its dict in {dt_load:.1f} s", flush=True)
        small = DecontamIndex.from_part(_text_part(dt_q, settings), settings)
        dt_texts = texts[:args.dt_rows]
        t0 = time.perf_counter()
        theirs = [flt.filter(Document(text=t, id=str(i))) is not True for i, t in enumerate(dt_texts)]
        dt_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours_small = [bool(check_row(small, [("text", t)], [])) for t in dt_texts]
        ours_small_s = time.perf_counter() - t0
        agree = sum(a == b for a, b in zip(ours_small, theirs))
        print(f"[check, 1 process, same {len(dt_texts):,} texts, same {len(dt_q):,}-question index] quarry "
              f"{rate(len(dt_texts), ours_small_s)}  |  datatrove NGramsDecontFilter {rate(len(dt_texts), dt_s)}  |  "
              f"ratio quarry/datatrove = {dt_s / ours_small_s:.1f}x; same verdict on {agree}/{len(dt_texts)}",
              flush=True)
        print(f"    quarry against the full {len(questions):,}-question index: {rate(len(texts), ours_s)} "
              f"({(len(texts) / ours_s) / (len(dt_texts) / ours_small_s):.2f}x its small-index rate)")

        if not args.skip_dag:
            dag_q = questions[:args.dag_questions]
            small_rows = max(1, args.dag_rows // 10)
            small_wall, _ = run_dag_bench(dag_q, rows[:small_rows], args.workers, tmp / "dag-small")
            wall, rejected = run_dag_bench(dag_q, rows[:args.dag_rows], args.workers, tmp / "dag")
            print(f"\n[quarry run decontam, DirectRunner multi_processing x{args.workers}] {args.dag_rows:,} rows "
                  f"against {len(dag_q):,} questions: {wall:.1f} s wall = {rate(args.dag_rows, wall)} end to end, "
                  f"including worker start-up and building the index inside Beam ({rejected} rows rejected); "
                  f"{small_rows:,} rows took {small_wall:.1f} s, so the rows beyond those ran at "
                  f"{rate(args.dag_rows - small_rows, max(1e-9, wall - small_wall))} (fixed cost ~{small_wall:.0f} s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _text_part(questions: list[str], settings: IndexSettings) -> IndexPart:
    part = IndexPart()
    for i, q in enumerate(questions):
        index_item(part, BenchItem(f"bench{i // 5000:03d}", str(i), q, [], ""), settings)
    return part


if __name__ == "__main__":
    sys.exit(main())
