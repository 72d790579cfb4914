"""ocr_search throughput next to a bare OCR loop, and word recall on posters of known content.

    .venv/bin/python benchmarks/bench_ocr.py [--n 16] [--batch 8] [--threads 0] [--repeat 1]

Makes N synthetic posters (640x480, the shipped demo photos as backgrounds,
seeds the tests never use; a title plus labels of 8 to 32 px) and, in one run:

1. images/s of the DAG (`run_dag`, DirectRunner in-process) with tasks off, next to a
   bare loop over the same files doing the same work with the same engine and
   batch size (read, decode, size for OCR, `read_batch`, valid lines and
   layout), and the ratio (target >= 0.8), by wall time and by this process's
   CPU time (all threads; steadier when other jobs share the machine);
2. the same with crop-then-search tasks on, next to a bare loop that also
   crops, re-reads and verifies the small entities;
3. from the DAG's output: word recall per font size (a drawn word is found
   when an entity's text matches it, and, for words small enough to get a
   task, when an `ocr_search` row's crop box contains the word's box and its
   answer matches), the tier each size lands in, and the crops rejected
   `crop_unreadable`.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.dataset as ds
from PIL import Image

from quarry.dags.ocr_search import SPEC
from quarry.dags.runner import resolve_config, run_dag
from quarry.operators.decode import decode_image
from quarry.operators.ocr.engine import fit_for_ocr, make_engine
from quarry.operators.ocr.layout import build_layout, valid_lines
from quarry.operators.ocr.synth import box_contains, poster
from quarry.operators.ocr.tasks import make_crop, plan_tasks, similarity, verify_crop
from quarry.schemas.common import TIERS

WORK = Path(__file__).resolve().parent / "_work" / "ocr"
DEMO = Path(__file__).resolve().parents[1] / "dags" / "demo_data"
SIZES = (8, 10, 12, 14, 18, 24, 32)


def make_posters(folder: Path, n: int) -> dict[str, list[dict]]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    photos = sorted(DEMO.glob("*.jpg"))
    truth = {}
    for i in range(n):
        with Image.open(photos[i % len(photos)]) as bg:
            synth = poster(bg, f"bench-hidden-{i}", title_size=40, label_sizes=SIZES, gap=1.5)
        name = f"poster_{i:04d}.png"
        synth.image.save(folder / name)
        truth[name] = [{"text": t.text, "box": t.box, "size": t.size, "kind": t.kind} for t in synth.texts]
    return truth


def cpu_s() -> float:
    """CPU seconds of this process, all threads (the engine's included): steadier than wall time on a shared box."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn, *args):
    wall, cpu = time.perf_counter(), cpu_s()
    out = fn(*args)
    return time.perf_counter() - wall, cpu_s() - cpu, out


def bare_loop(folder: Path, cfg, tasks: bool) -> None:
    """The same work as the DAG, in a plain loop: one engine, batches of cfg.ocr.max_batch_size."""
    engine = make_engine(cfg.ocr).load()  # rapidocr loads its models on first use, inside the timing
    files = sorted(folder.glob("*.png"))
    batch = cfg.ocr.max_batch_size
    for i in range(0, len(files), batch):
        items = []
        for f in files[i:i + batch]:
            decoded = decode_image(f.read_bytes(), cfg.decode)
            arr, scale = fit_for_ocr(decoded.image, cfg.ocr.max_side, cfg.ocr.min_short_side, cfg.ocr.max_upscale)
            items.append((decoded, arr, scale))
        results = engine.read_batch([arr for _, arr, _ in items])
        crops = []
        for (decoded, arr, scale), lines in zip(items, results):
            page = build_layout(valid_lines([ln.scaled(1 / scale) for ln in lines], cfg.text), cfg.entities)
            if tasks:
                for plan in plan_tasks(page, decoded.width, decoded.height, cfg.tasks):
                    crop, s = make_crop(arr, scale, plan.crop_box, plan.entity.height, cfg.tasks)
                    x0, y0 = plan.crop_box[:2]
                    b = plan.entity.box
                    crops.append((plan.entity.text, ((b[0] - x0) * s, (b[1] - y0) * s, (b[2] - x0) * s, (b[3] - y0) * s),
                                  crop))
        for j in range(0, len(crops), batch):
            chunk = crops[j:j + batch]
            for (text, box, _), lines in zip(chunk, engine.read_batch([c for _, _, c in chunk])):
                verify_crop(text, box, lines, cfg.tasks.min_similarity)


def dag(folder: Path, out: Path, sets: list[str]):
    shutil.rmtree(out, ignore_errors=True)
    return run_dag(SPEC, [str(folder)], str(out), resolve_config(SPEC, None, sets, "bench"))


def recall(out: Path, truth: dict[str, list[dict]], readable_px: float) -> dict:
    # pyarrow rather than DuckDB: the GPU check carries this benchmark's imports as wheels, and DuckDB's is 25 MB
    table = ds.dataset(f"{out}/data", format="parquet").to_table(
        columns=["origin", "task", "entities", "crop_box_1000", "answer", "tier", "width", "height"])
    by_key = defaultdict(lambda: {"ocr": None, "tasks": []})
    for r in table.to_pylist():
        r["key"] = r.pop("origin")["key"]
        if r["task"] == "ocr":
            by_key[r["key"]]["ocr"] = r
        else:
            by_key[r["key"]]["tasks"].append(r)
    per_size = defaultdict(lambda: Counter())
    tiers = defaultdict(Counter)
    for key, words in truth.items():
        got = by_key.get(key)
        for w in words:
            c = per_size[w["size"]]
            c["words"] += 1
            if got is None or got["ocr"] is None:
                continue
            match = [e for e in got["ocr"]["entities"] if similarity(e["text"], w["text"]) >= 0.8]
            if match:
                c["read"] += 1
                tiers[w["size"]][match[0]["tier"]] += 1
                if match[0]["small"]:
                    c["small"] += 1
                    width, height = got["ocr"]["width"], got["ocr"]["height"]
                    for t in got["tasks"]:
                        x0, y0, x1, y1 = t["crop_box_1000"]
                        crop = (x0 * width / 1000, y0 * height / 1000, x1 * width / 1000, y1 * height / 1000)
                        if box_contains(crop, w["box"], slack=1) and similarity(t["answer"], w["text"]) >= 0.8:
                            c["task"] += 1
                            break
    return {"per_size": {s: dict(c) for s, c in sorted(per_size.items())},
            "tiers": {s: dict(sorted(c.items(), key=lambda kv: TIERS.index(kv[0]))) for s, c in sorted(tiers.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="posters (default 16)")
    ap.add_argument("--batch", type=int, default=8, help="OCR batch size, DAG and bare loop alike")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime threads per engine (0 = its default)")
    ap.add_argument("--repeat", type=int, default=1, help="alternate bare loop and DAG this often, keep the best of each")
    args = ap.parse_args()
    folder = WORK / f"posters-{args.n}"
    truth = make_posters(folder, args.n)
    sets = [f"ocr.max_batch_size={args.batch}", f"ocr.min_batch_size={args.batch}", f"ocr.threads={args.threads}"]
    print(f"{args.n} posters 640x480, {len(SIZES) + 1} words each; batch {args.batch}; threads {args.threads or 'default'}")
    report = {}
    for tasks in (False, True):
        all_sets = sets + [f"tasks.enabled={str(tasks).lower()}"]
        cfg = resolve_config(SPEC, None, all_sets, "bench")
        bare_s = dag_s = bare_cpu = dag_cpu = float("inf")
        for _ in range(args.repeat):  # alternating, so both see the same machine load
            wall, cpu, _ = timed(bare_loop, folder, cfg, tasks)
            bare_s, bare_cpu = min(bare_s, wall), min(bare_cpu, cpu)
            wall, cpu, manifest = timed(dag, folder, WORK / f"out-{args.n}-{tasks}", all_sets)
            dag_s, dag_cpu = min(dag_s, wall), min(dag_cpu, cpu)
        label = "ocr + crop-then-search" if tasks else "ocr only"
        ratio = bare_s / dag_s
        print(f"{label:24s} DAG {args.n / dag_s:6.2f} img/s ({dag_s:6.1f} s wall, {dag_cpu:6.1f} s CPU)   "
              f"bare loop {args.n / bare_s:6.2f} img/s ({bare_s:6.1f} s wall, {bare_cpu:6.1f} s CPU)   "
              f"ratio {ratio:.2f} wall, {bare_cpu / dag_cpu:.2f} CPU")
        report[label] = {"dag_s": round(dag_s, 2), "bare_s": round(bare_s, 2), "ratio": round(ratio, 3),
                         "dag_cpu_s": round(dag_cpu, 2), "bare_cpu_s": round(bare_cpu, 2),
                         "cpu_ratio": round(bare_cpu / dag_cpu, 3),
                         "kept": manifest.kept, "rejected": manifest.rejected,
                         "stages": {k: v.model_dump() for k, v in manifest.stages.items()}}
        if tasks:
            rec = recall(WORK / f"out-{args.n}-{tasks}", truth, cfg.tasks.readable_px)
            report["recall"] = rec
            print("font px  words  read  small  crop-found   tiers")
            for size, c in rec["per_size"].items():
                small = c.get("small", 0)
                print(f"{size:7d}  {c['words']:5d}  {c.get('read', 0):4d}  {small:5d}  "
                      f"{c.get('task', 0):4d}/{small:<5d}  {rec['tiers'].get(size, {})}")
            words = sum(c["words"] for c in rec["per_size"].values())
            read = sum(c.get("read", 0) for c in rec["per_size"].values())
            small = sum(c.get("small", 0) for c in rec["per_size"].values())
            found = sum(c.get("task", 0) for c in rec["per_size"].values())
            print(f"word recall {read}/{words} = {read / words:.3f}; small-word crop recall "
                  f"{found}/{small} = {found / max(small, 1):.3f}; crops rejected crop_unreadable: "
                  f"{manifest.rejected.get('verify', {}).get('crop_unreadable', 0)}")
    (WORK / f"report-{args.n}.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
