"""documents DAG throughput (pages/s) next to a bare loop of the same pypdfium2 calls, and memory 1x vs 4x.

    .venv/bin/python benchmarks/bench_documents.py [--docs 40] [--pages 4] [--workers 2] [--dpi 144]

Input: `--docs` PDFs of `--pages` letter pages each (prose, two-column and
table pages, written by operators/documents/makepdf.py with varied text),
under benchmarks/_work/. Reported:

1. pages/s of the documents DAG (DirectRunner, multi_processing, N workers,
   whole run: start-up, read, PDFium in a child process per document, layout,
   Parquet shards with the page PNGs, rejects, manifest) next to pages/s of a
   bare `multiprocessing.Pool(N)` doing the same pypdfium2 calls in-process
   (open, render at the DPI, PNG encode, textpage rects + bounded text), and
   their ratio;
2. peak RSS of the DAG's whole process tree at 1x and 4x the documents.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_watched
from quarry.operators.documents import makepdf as m

WORK = Path(__file__).resolve().parent / "_work"
WORDS = ["data", "page", "text", "layer", "column", "render", "model", "reading", "order", "line", "box", "table", "figure", "result", "method", "training", "sample", "paper", "section", "value", "score", "image", "token"]


def _sentence(rnd: random.Random, n: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(n))


def make_input(docs: int, pages: int, seed: int = 0) -> Path:
    folder = WORK / f"documents-in-{docs}x{pages}-{seed}"
    if folder.exists() and len(list(folder.glob("*.pdf"))) == docs:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rnd = random.Random(seed)
    for d in range(docs):
        out = []
        for p in range(pages):
            kind = (d + p) % 3
            if kind == 0:
                out.append(m.prose_page(_sentence(rnd, 4), [_sentence(rnd, 11) for _ in range(40)], size=11))
            elif kind == 1:
                out.append(m.two_column_page(_sentence(rnd, 5), [_sentence(rnd, 6) for _ in range(45)],
                                             [_sentence(rnd, 6) for _ in range(45)], size=9))
            else:
                out.append(m.table_page(_sentence(rnd, 3), ["name", "count", "value", "note"],
                                        [[rnd.choice(WORDS), str(rnd.randint(1, 99)), f"{rnd.random():.3f}",
                                          rnd.choice(WORDS)] for _ in range(30)]))
        (folder / f"doc-{d:04d}.pdf").write_bytes(m.build(out))
    return folder


# --- the bare loop: the same pypdfium2 calls, no Beam, no child process --------------------------

def _bare(path: str, dpi: float) -> int:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(Path(path).read_bytes())
    n = 0
    for i in range(len(pdf)):
        page = pdf[i]
        page.get_size()  # the DAG checks it against max_page_points
        pil = page.render(scale=dpi / 72.0, may_draw_forms=False).to_pil().convert("RGB")
        pil.save(io.BytesIO(), "PNG")
        tp = page.get_textpage()
        for r in range(tp.count_rects()):
            tp.get_text_bounded(*tp.get_rect(r))
        tp.close()
        page.close()
        n += 1
    pdf.close()
    return n


def run_bare(folder: Path, workers: int, dpi: float) -> tuple[int, float]:
    files = sorted(str(p) for p in folder.glob("*.pdf"))
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(workers) as pool:
        pages = sum(pool.starmap(_bare, [(f, dpi) for f in files]))
    return pages, time.perf_counter() - t0


# --- the DAG, in a subprocess (its whole process tree watched) -----------------------------------

_RUN = """
import json, sys
from quarry.dags.runner import resolve_config, run_dag
from quarry.dags.documents import SPEC
inputs, out, dpi, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
beam = ["--direct_num_workers=%d" % workers, "--direct_running_mode=multi_processing"] if workers > 1 else []
m = run_dag(SPEC, [inputs], out, resolve_config(SPEC, None, ["documents.dpi=" + dpi], "bench"),
            overwrite=True, beam_args=beam)
print("MANIFEST " + json.dumps(m.model_dump(mode="json")))
"""


def run_dag(folder: Path, out: Path, workers: int, dpi: float) -> tuple[dict, float, int, tuple[int, int]]:
    w = run_watched([sys.executable, "-c", _RUN, str(folder), str(out), str(dpi), str(workers)])
    line = next((x for x in w.output.splitlines() if x.startswith("MANIFEST ")), None)
    if w.returncode != 0 or line is None:
        raise SystemExit(f"DAG failed:\n{w.output[-3000:]}")
    return json.loads(line[len("MANIFEST "):]), w.elapsed_s, w.peak_rss, (w.peak_parent, w.peak_child)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--pages", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dpi", type=float, default=144.0)
    ap.add_argument("--no-4x", action="store_true", help="skip the 4x memory run")
    a = ap.parse_args()
    os.environ.setdefault("QUARRY_PROGRESS", "0")
    one = make_input(a.docs, a.pages)
    bare_pages, bare_s = run_bare(one, a.workers, a.dpi)
    manifest, dag_s, rss1, roles1 = run_dag(one, WORK / "documents-out-1x", a.workers, a.dpi)
    assert manifest["kept"] == bare_pages and manifest["balanced"], manifest
    bare_rate, dag_rate = bare_pages / bare_s, manifest["kept"] / dag_s
    print(f"input: {a.docs} PDFs x {a.pages} pages = {bare_pages} pages, {a.dpi:g} dpi, {a.workers} workers")
    print(f"bare pypdfium2 loop : {bare_rate:7.2f} pages/s ({bare_s:.1f} s)")
    print(f"documents DAG       : {dag_rate:7.2f} pages/s ({dag_s:.1f} s, whole run incl. start-up)")
    print(f"ratio DAG / bare    : {dag_rate / bare_rate:.2f}")
    print(f"peak RSS 1x         : {rss1 / 2**20:7.0f} MiB (runner {roles1[0] / 2**20:.0f}, largest worker "
          f"{roles1[1] / 2**20:.0f})")
    if not a.no_4x:
        four = make_input(a.docs * 4, a.pages)
        m4, dag4_s, rss4, roles4 = run_dag(four, WORK / "documents-out-4x", a.workers, a.dpi)
        print(f"peak RSS 4x         : {rss4 / 2**20:7.0f} MiB ({m4['kept']} pages, {m4['kept'] / dag4_s:.2f} pages/s); "
              f"4x / 1x = {rss4 / rss1:.2f} (runner {roles4[0] / 2**20:.0f}, largest worker {roles4[1] / 2**20:.0f})")


if __name__ == "__main__":
    main()
