"""ocr_synth throughput and memory: the DAG next to a bare loop of the same render calls, at 1x and 4x input.

    .venv/bin/python benchmarks/bench_ocr_synth.py [--n 60] [--workers 2] [--side 960]

Input (under benchmarks/_work/ocr_synth/): `--n` text samples, the license texts of /usr/share/common-licenses
cut in ~800-character pieces (plus Chinese lines), as one JSONL file, and the demo's background photos. Reported:

1. images/s of `quarry run ocr_synth` (DirectRunner, N workers in multi_processing when N > 1; whole run:
   start-up, read, backgrounds, render, Parquet shards, rejects, manifest) next to images/s of a bare
   `multiprocessing.Pool(N)` calling `render_sample` on the same texts and backgrounds, and the ratio;
2. the DAG's peak RSS (process tree) at 1x and at 4x the input: flat means memory does not grow with input.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_watched  # noqa: E402

from quarry.dags.demos.ocr_synth import CHINESE, DEMO_BACKGROUNDS, LICENSE_DIR  # noqa: E402
from quarry.operators.ids import content_id, stable_bucket  # noqa: E402
from quarry.operators.ocr import render as render_ops  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work" / "ocr_synth"
DEMO = Path(__file__).resolve().parents[1] / "dags" / "demo_data"


def texts(n: int) -> list[str]:
    pieces: list[str] = []
    for f in sorted(LICENSE_DIR.glob("*")) if LICENSE_DIR.exists() else []:
        if f.is_file():
            body = f.read_text(encoding="utf-8", errors="replace")
            pieces += [body[i:i + 800] for i in range(0, min(len(body), 8000), 800)]
    pieces += list(CHINESE)
    return [pieces[i % len(pieces)] for i in range(n)]


def make_inputs(n: int, side: int) -> tuple[Path, Path]:
    folder = WORK / f"n{n}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "bg").mkdir(parents=True)
    rows = texts(n)
    (folder / "texts.jsonl").write_text("".join(json.dumps({"text": t, "id": i}, ensure_ascii=False) + "\n"
                                                for i, t in enumerate(rows)), encoding="utf-8")
    for name in DEMO_BACKGROUNDS:
        shutil.copy(DEMO / name, folder / "bg" / name)
    return folder / "texts.jsonl", folder / "bg"


_BGS: list = []


def _init(bg_dir: str, side: int) -> None:
    global _BGS
    _BGS = [render_ops.fit_background(Image.open(p).convert("RGB"), side) for p in sorted(Path(bg_dir).iterdir())]


def _one(args) -> int:
    i, text, side = args
    sid = content_id(text, "texts.jsonl", f"line:{i + 1}")
    out = render_ops.render_sample(text, _BGS[stable_bucket(sid, len(_BGS))], sid,
                                   render_ops.RenderConfig(canvas_side=side))
    return 1 if isinstance(out, render_ops.Render) else 0


def bare(n: int, workers: int, side: int, bg_dir: Path) -> float:
    jobs = [(i, t, side) for i, t in enumerate(texts(n))]
    t0 = time.perf_counter()
    with mp.Pool(workers, initializer=_init, initargs=(str(bg_dir), side)) as pool:
        done = sum(pool.map(_one, jobs, chunksize=4))
    return done / (time.perf_counter() - t0)


def dag(text_file: Path, bg_dir: Path, workers: int, side: int, name: str):
    out = WORK / f"out-{name}"
    beam = ["--direct_num_workers=%d" % workers, "--direct_running_mode=multi_processing"] if workers > 1 else []
    cmd = [sys.executable, "-m", "quarry.dags.cli", "run", "ocr_synth", "--input", str(text_file), "--output",
           str(out), "--overwrite", "--set", f"backgrounds.input=[{bg_dir}]", "--set", f"render.canvas_side={side}"]
    if beam:
        cmd += ["--", *beam]
    w = run_watched(cmd)
    if w.returncode != 0:
        raise SystemExit(w.output[-3000:])
    kept = json.loads((out / "manifest.json").read_text())["kept"]
    return kept / w.elapsed_s, w.peak_rss, kept, w.elapsed_s, (w.peak_parent, w.peak_child)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--side", type=int, default=960)
    a = ap.parse_args(argv)
    t1, bg1 = make_inputs(a.n, a.side)
    t4, bg4 = make_inputs(4 * a.n, a.side)
    loop = bare(a.n, a.workers, a.side, bg1)
    ips1, rss1, kept1, s1, roles1 = dag(t1, bg1, a.workers, a.side, "1x")
    ips4, rss4, kept4, s4, roles4 = dag(t4, bg4, a.workers, a.side, "4x")
    report = {
        "n": a.n, "workers": a.workers, "canvas_side": a.side,
        "bare_images_per_s": round(loop, 2),
        "dag_images_per_s_1x": round(ips1, 2), "dag_images_per_s_4x": round(ips4, 2),
        "ratio_1x": round(ips1 / loop, 3), "ratio_4x": round(ips4 / loop, 3),
        "dag_wall_s_1x": round(s1, 1), "dag_wall_s_4x": round(s4, 1), "kept_1x": kept1, "kept_4x": kept4,
        "peak_rss_mib_1x": round(rss1 / 2**20), "peak_rss_mib_4x": round(rss4 / 2**20),
        "rss_growth_4x_over_1x": round(rss4 / rss1, 3),
        # which process grows: the runner (the CLI process) and the largest SDK worker
        "peak_runner_mib_1x": round(roles1[0] / 2**20), "peak_runner_mib_4x": round(roles4[0] / 2**20),
        "peak_worker_mib_1x": round(roles1[1] / 2**20), "peak_worker_mib_4x": round(roles4[1] / 2**20),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
