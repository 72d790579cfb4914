"""Interleaved DAG throughput (documents/s), next to a bare multiprocessing loop of the same operators.

    .venv/bin/python benchmarks/bench_interleaved.py [--n 400] [--workers 2] [--scales 1,4]

Builds a deterministic input from the shipped demo photos and articles:
JSONL files (one per 100 documents) of segment-list documents, 4 paragraphs
and 1-3 images each (photos cut, resized and recoloured so no two are alike),
with planted QR posters (5%), 728x90 banners (5%), photo albums (5%),
boilerplate pages (5%) and missing images (3%). Then, in one run, for each
scale:

- the bare loop: `multiprocessing.Pool(N)` over the documents doing exactly
  the DAG's per-document work with the same operators: parse (reading the
  image files), HTML stripping, density rule, datatrove filters, per image
  decode + zxing scan + ad rules + heuristics + pHash + diagram score + CLIP
  thumbnail, and CLIP (`quarry-tiny`, random weights: the relevance *stage*
  is measured, not a real model's cost) on each document's images in one batch;
- the DAG: `run_dag` in a subprocess, DirectRunner multi_processing with N
  workers, same config, writing shards, images and rejects, manifest included;

and prints documents/s of both and the ratio bare_time / dag_time (target >= 0.7).
Both run with OMP_NUM_THREADS=1 (one torch thread per process; see main()).
Whole runs are timed, start-up included (Beam workers import torch and spaCy).
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
import time
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

WORK = Path(__file__).resolve().parent / "_work" / "interleaved"
SETS = ["relevance.model=quarry-tiny", "relevance.pretrained=none", "relevance.threshold=-1", "source=bench"]
PER_FILE = 100


def make_input(folder: Path, n: int, seed: int = 0) -> Path:
    """n documents in ceil(n / PER_FILE) JSONL files plus their image files; deterministic for a seed."""
    from quarry.dags.demos.interleaved import demo_images

    marker = folder / f".complete-{n}-{seed}"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "img").mkdir(parents=True)
    rng = random.Random(seed)
    pics = demo_images()
    photos = [Image.open(io.BytesIO(pics[k])).convert("RGB") for k in
              ("astronaut.jpg", "coffee.jpg", "chelsea.jpg", "rocket.jpg", "coins.jpg", "camera.jpg", "horse.jpg")]
    articles = json.loads((Path(__file__).resolve().parents[1] / "dags" / "demo_data" / "interleaved" /
                           "articles.json").read_text())
    paragraphs = [p for ps in articles.values() for p in ps]
    (folder / "img" / "scan-me.jpg").write_bytes(pics["scan-me.jpg"])
    (folder / "img" / "banner.jpg").write_bytes(pics["banner-728x90.jpg"])
    img_no = 0

    def new_photo() -> str:
        nonlocal img_no
        photo = rng.choice(photos)
        w, h = photo.size
        cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        side = rng.choice([256, 384, 512, 768])
        img = photo.crop((x, y, x + cw, y + ch)).resize((side, max(160, side * ch // cw)))
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.4, 1.6))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        name = f"p{img_no:06d}.jpg"
        img_no += 1
        img.save(folder / "img" / name, "JPEG", quality=rng.randint(75, 92))
        return f"img/{name}"

    def article() -> list[str]:
        # 4 distinct paragraphs from different articles, each with a unique sentence, so
        # the repetition filters see no duplicates across documents.
        ps = rng.sample(paragraphs, 4)
        return [p + f" This note was number {rng.randint(0, 10**9)} in the archive." for p in ps]

    for start in range(0, n, PER_FILE):
        lines = []
        for i in range(start, min(n, start + PER_FILE)):
            roll = rng.random()
            text = article()
            if roll < 0.05:  # photo album
                segs = [x for _ in range(6) for x in ({"type": "image", "path": new_photo()},
                                                      {"type": "text", "text": "Our trip, day one."})]
            elif roll < 0.10:  # boilerplate
                segs = [{"type": "text", "text": t} for t in ["Home | About | Contact", "Log in | Register"] * 8]
                segs.insert(1, {"type": "image", "path": new_photo()})
            else:
                images = [new_photo() for _ in range(rng.randint(1, 3))]
                if roll < 0.15:
                    images.append("img/scan-me.jpg")
                elif roll < 0.20:
                    images.append("img/banner.jpg")
                elif roll < 0.23:
                    images.append("img/not-downloaded.jpg")
                segs = []
                for k, p in enumerate(text):
                    segs.append({"type": "text", "text": p if k != 1 else f"<p>{p}</p>"})
                    if k < len(images):
                        segs.append({"type": "image", "path": images[k]})
                segs += [{"type": "image", "path": x} for x in images[len(text):]]
            lines.append(json.dumps({"id": f"doc{i}", "url": f"https://example.org/{i}", "segments": segs}))
        (folder / f"docs-{start // PER_FILE:05d}.jsonl").write_text("\n".join(lines) + "\n")
    marker.touch()
    return folder


# --- the bare loop: the same operators, no Beam ------------------------------------------------

_STATE: dict = {}


def _init_worker() -> None:
    from quarry.dags.interleaved import SPEC
    from quarry.dags.runner import resolve_config
    from quarry.operators.clip import ClipScorer
    from quarry.operators.heuristics import HeuristicFilter
    from quarry.operators.interleaved.ads import AdDetector
    from quarry.operators.interleaved.text_quality import TextQuality
    from quarry.schemas.caption import HeuristicsConfig

    cfg = resolve_config(SPEC, None, SETS, None)
    h = cfg.image_heuristics
    _STATE.update(cfg=cfg, text=TextQuality(cfg.text).load(), ads=AdDetector(cfg.ads),
                  heur=HeuristicFilter(HeuristicsConfig(min_side=h.min_side, max_aspect_ratio=h.max_aspect_ratio,
                                                        solid_max_std=h.solid_max_std)),
                  clip=ClipScorer(cfg.relevance).load())


def _bare_doc(item: tuple[str, str, str]) -> str:
    from quarry.operators.base import Rejection
    from quarry.operators.clip import clip_thumbnail
    from quarry.operators.decode import decode_image
    from quarry.operators.heuristics import image_stats
    from quarry.operators.interleaved.documents import (
        check_density,
        clean_text,
        count_words,
        diagram_score,
        neighbour_texts,
        parse_document,
        tail_flags,
    )
    from quarry.operators.phash import phash64

    path, key, line = item
    cfg = _STATE["cfg"]
    base = os.path.dirname(path)

    def load(rel: str):
        try:
            with open(os.path.join(base, rel), "rb") as fh:
                return fh.read()
        except OSError as e:
            return f"cannot read {rel}: {e}"

    doc = parse_document(json.loads(line), os.path.basename(path), key, load, cfg.document)
    if isinstance(doc, Rejection):
        return doc.reason
    text = clean_text(doc, True)
    if check_density(sum(count_words(t) for t in text.texts), len(doc.images), cfg.density) is not None:
        return "image_dense"
    if _STATE["text"].check(text.joined) is not None:
        return "low_quality_text"
    tails = tail_flags(text.segments, cfg.ads.tail_words)
    requests, index = [], 0
    for pos, seg in enumerate(text.segments):
        if isinstance(seg, str):
            continue
        at_tail = tails[index]
        index += 1
        if seg.data is None:
            continue
        decoded = decode_image(seg.data, cfg.decode)
        if isinstance(decoded, Rejection):
            continue
        if _STATE["ads"].check(decoded.image, seg.url, at_tail)[0] is not None:
            continue
        if _STATE["heur"].check_image(image_stats(decoded)) is not None:
            continue
        phash64(decoded.image)
        diagram_score(decoded.image)
        thumb = clip_thumbnail(decoded.image, cfg.relevance.thumbnail_side)
        for context in neighbour_texts(text.segments, pos, cfg.relevance.context_words, cfg.relevance.neighbours):
            requests.append((thumb, context))
    if requests:
        _STATE["clip"].score_bytes_batch(requests)
    return "ok"


def _documents(folder: Path):
    for path in sorted(folder.glob("*.jsonl")):
        with open(path) as fh:
            for n, line in enumerate(fh, start=1):
                doc_id = json.loads(line)["id"]
                yield str(path), f"line:{n}:{doc_id}", line


def bare_loop(folder: Path, workers: int) -> tuple[int, float, dict[str, int]]:
    t0 = time.perf_counter()
    outcomes: dict[str, int] = {}
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        for r in pool.imap_unordered(_bare_doc, _documents(folder), chunksize=8):
            outcomes[r] = outcomes.get(r, 0) + 1
    return sum(outcomes.values()), time.perf_counter() - t0, outcomes


# --- the DAG, in a subprocess ----------------------------------------------------------------


def _dag_main(folder: str, out: str, workers: int) -> None:
    from quarry.dags.interleaved import SPEC
    from quarry.dags.runner import resolve_config, run_dag

    cfg = resolve_config(SPEC, None, SETS, None)
    beam_args = [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"] if workers > 1 else []
    m = run_dag(SPEC, [os.path.join(folder, "*.jsonl")], out, cfg, overwrite=True, beam_args=beam_args)
    print(json.dumps({"inputs": m.inputs, "kept": m.kept, "rejected": m.rejected_total, "balanced": m.balanced,
                      "rejected_by": m.rejected, "image_rejects": m.extra.get("image_rejects")}))


def run_dag_timed(folder: Path, out: Path, workers: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--dag-run", str(folder), str(out), str(workers)],
                          capture_output=True, text=True, env={**os.environ, "QUARRY_PROGRESS": "0"})
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"DAG failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="documents at 1x (default 400)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scales", default="1,4", help="input sizes as multiples of --n (default 1,4)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # One torch/OpenMP thread per process in both runs: N processes on N cores with
    # torch's default N threads each oversubscribe the cores (CLIP got 6x slower here).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"interleaved benchmark: {args.workers} processes, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          f"os.cpu_count()={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
    for scale in (int(s) for s in args.scales.split(",")):
        n = args.n * scale
        folder = make_input(WORK / f"in-{n}", n, seed=scale)
        docs, bare_s, outcomes = bare_loop(folder, args.workers)
        dag_s, m = run_dag_timed(folder, WORK / f"out-{n}", args.workers)
        assert m["inputs"] == docs and m["balanced"], m
        print(f"  {docs:5d} documents: bare Pool({args.workers}) {docs / bare_s:6.1f} docs/s ({bare_s:5.1f} s), "
              f"DAG multi_processing x{args.workers} {docs / dag_s:6.1f} docs/s ({dag_s:5.1f} s), "
              f"ratio {bare_s / dag_s:.2f} (target >= 0.7)", flush=True)
        print(f"         bare outcomes {dict(sorted(outcomes.items()))}; DAG kept {m['kept']}, rejected "
              f"{m['rejected_by']}, image rejects {m['image_rejects']}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--dag-run":
        _dag_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
