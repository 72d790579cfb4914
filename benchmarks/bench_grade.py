"""Grade DAG throughput next to a bare Python loop doing the same scoring and aggregation.

    .venv/bin/python benchmarks/bench_grade.py [--n 200000 | --large] [--workers 1]

Builds N synthetic rollouts (JSONL) over N/8 samples (2 models x 4 rollouts
each; tasks mixed exact / numeric (fast path, no SymPy) / ocr; ~5% of
responses without a box, ~3% naming unknown sample ids), then reports:

1. rollouts/s of `quarry run grade` (DirectRunner; `--workers N` runs it in
   multi_processing mode) including reading, the CoGroupByKey, Parquet
   shards, rejects and the manifest;
2. rollouts/s of a bare single-process loop: read samples into a dict, stream
   rollouts, score each with the same verifier, tally per sample and model,
   pass@k, tier (no output written);
3. the ratio (DAG / bare loop).

`--large` is 1M rollouts (several minutes). Inputs are cached under
benchmarks/_work/grade-N.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

from quarry.dags import grade
from quarry.dags.runner import resolve_config, run_dag
from quarry.operators.grade import contract, tiers
from quarry.pipelines.grade import score

WORK = Path(__file__).resolve().parent / "_work"
MODELS = ("model-a", "model-b")
PER_MODEL = 4
TASKS = ("exact", "numeric", "ocr")


def box(x: str) -> str:
    return f"<think>working</think><answer><|begin_of_box|>{x}<|end_of_box|></answer>"


def make_input(folder: Path, n: int, seed: int = 0) -> Path:
    done = folder / "done"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    n_samples = max(1, n // (len(MODELS) * PER_MODEL))
    words = ["cat", "dog", "red", "blue", "tree", "house", "river", "stone"]
    answers = {}
    with open(folder / "samples.jsonl", "w") as f:
        for i in range(n_samples):
            task = TASKS[i % len(TASKS)]
            answer = str(rng.randint(0, 999)) if task == "numeric" else (
                " ".join(rng.choice(words) for _ in range(3 if task == "ocr" else 1)))
            answers[i] = (task, answer)
            f.write(json.dumps({"sample_id": f"s{i:08d}", "source": f"src{i % 4}", "task": task,
                                "question": f"question {i}", "answer": answer}) + "\n")
    written = 0
    shard, files = None, 0
    while written < n:
        for i in range(n_samples):
            if written >= n:
                break
            if written % 100_000 == 0:
                if shard:
                    shard.close()
                shard = open(folder / f"rollouts-{files:04d}.jsonl", "w")
                files += 1
            task, answer = answers[i]
            skill = (i * 7919 % 100) / 100  # per-sample difficulty spread over every tier
            for model in MODELS:
                for _ in range(PER_MODEL):
                    if written >= n:
                        break
                    roll = rng.random()
                    if roll < 0.05:
                        resp = "I am not sure, maybe " + answer
                    elif roll < 0.08:
                        sid = f"unknown{written}"
                        shard.write(json.dumps({"sample_id": sid, "model": model, "response": box(answer)}) + "\n")
                        written += 1
                        continue
                    elif rng.random() < skill:
                        resp = box(answer + (".0" if task == "numeric" and rng.random() < 0.3 else ""))
                    else:
                        resp = box(answer[::-1] + "x")
                    shard.write(json.dumps({"sample_id": f"s{i:08d}", "model": model, "response": resp}) + "\n")
                    written += 1
    shard.close()
    done.write_text(str(n))
    return folder


def bare_loop(folder: Path, correct_at: float = 0.999, k: int = 1) -> tuple[int, dict]:
    samples = {}
    with open(folder / "samples.jsonl") as f:
        for line in f:
            r = json.loads(line)
            samples[r["sample_id"]] = r
    specs = {t: contract.resolve(t, None, {}) for t in TASKS}
    verifiers = {t: contract.build(spec) for t, spec in specs.items()}
    refs = {sid: contract.reference(specs[r["task"]], r["answer"]) for sid, r in samples.items()}
    tallies: dict[str, tiers.SampleTally] = {}
    n = 0
    for path in sorted(folder.glob("rollouts-*.jsonl")):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                n += 1
                s = samples.get(r["sample_id"])
                if s is None:
                    continue
                t = tallies.get(r["sample_id"])
                if t is None:
                    t = tallies[r["sample_id"]] = tiers.SampleTally(correct_at)
                t.add(r["model"], score(verifiers[s["task"]], r["response"], refs[r["sample_id"]]))
    counts = {t: 0 for t in tiers.TIER_ORDER}
    rule = tiers.TierRule()
    for t in tallies.values():
        counts[rule.tier(tiers.merged_pass_rate(tiers.model_pass_rates(t, k)))] += 1
    return n, counts


def run_grade(folder: Path, out: Path, workers: int) -> tuple[float, object]:
    shutil.rmtree(out, ignore_errors=True)
    cfg = resolve_config(grade.SPEC, None, [f"rollouts={folder}/rollouts-*.jsonl"], None)
    args = [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"] if workers > 1 else []
    t0 = time.perf_counter()
    m = run_dag(grade.SPEC, [str(folder / "samples.jsonl")], str(out), cfg, beam_args=args)
    return time.perf_counter() - t0, m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="synthetic rollouts (default 200k)")
    ap.add_argument("--large", action="store_true", help="1M rollouts")
    ap.add_argument("--workers", type=int, default=1, help="DirectRunner workers (>1: multi_processing)")
    a = ap.parse_args(argv)
    n = 1_000_000 if a.large else a.n
    t0 = time.perf_counter()
    folder = make_input(WORK / f"grade-{n}", n)
    print(f"input: {n} rollouts in {folder} ({time.perf_counter() - t0:.1f} s to make or find)", flush=True)

    t0 = time.perf_counter()
    n_bare, bare_counts = bare_loop(folder)
    bare_s = time.perf_counter() - t0
    print(f"bare loop : {n_bare} rollouts in {bare_s:.1f} s = {n_bare / bare_s:,.0f} rollouts/s  tiers {bare_counts}",
          flush=True)

    dag_s, m = run_grade(folder, WORK / f"grade-{n}-out", a.workers)
    join = m.stages["rollouts_join"]
    print(f"grade DAG : {join.inputs} rollouts in {dag_s:.1f} s = {join.inputs / dag_s:,.0f} rollouts/s "
          f"({m.kept} samples kept, {m.rejected_total} rejected, {join.inputs - join.outputs} unknown rollouts, "
          f"workers={a.workers})", flush=True)
    dag_counts = m.extra.get("tier_counts", {}).get("total")
    if dag_counts is None:
        from quarry.pipelines.grade import read_summary

        dag_counts = read_summary(str(WORK / f"grade-{n}-out"))["tier_counts"]["total"]
    print(f"ratio DAG/bare: {(join.inputs / dag_s) / (n_bare / bare_s):.2f}   tiers agree: {dag_counts == bare_counts}")
    return 0 if dag_counts == bare_counts else 1


if __name__ == "__main__":
    sys.exit(main())
