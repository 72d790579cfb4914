"""gui DAG throughput and memory, next to a plain one-page-at-a-time sync Playwright loop.

    .venv/bin/python benchmarks/bench_gui.py [--n 60] [--workers 1] [--in-flight 4 8] [--browser auto]

Corpus: real HTML documentation pages from Debian's `python3-doc` package
(/usr/share/doc/python3.11/html, installed by scripts/apt-packages.txt): the
first N pages of `library/` in name order, copied with their `_static`
assets into benchmarks/_work/gui-corpus. Both sides render the same pages
served from loopback, at 1280x720, with the same work per page: navigate,
wait for load + network idle, extract the visible elements (the same
in-page script), take the PNG screenshot. Both drive the same Chromium
binary (`--browser`, default `auto` as `render.executable_path`: Debian's
chromium-headless-shell, which is also what Playwright launches for headless
runs by default; `--browser /usr/bin/chromium` measures the full browser).

Reports, in one run:
1. pages/s of a bare sync Playwright loop (one browser, a fresh context per
   page, one page at a time);
2. pages/s of `quarry run gui` (DirectRunner, whole DAG: read, render, tasks,
   Parquet shards, images, rejects, manifest) with `render.pages_in_flight`
   = each --in-flight value (default 4 and 8) and 1; the ratio to the loop (target >= 2x);
3. peak resident memory of the process tree (Python + Playwright driver +
   Chromium processes) for each run;
4. the same ratio once start-up is paid: each side's run over 1 page (browser
   launch; for the DAG also Beam's pipeline construction, about 5 s) is
   subtracted, rate = (N - 1) / (T_N - T_1). That is the figure a long job
   sees; the whole-run ratio above includes the start-up once.

`--ui-code` measures the UI-to-code level alone (issue 20: pairs/s against a bare
loop doing the same work): the DAG with `tasks.kinds=[ui_to_code, code_to_ui]`
against a sync Playwright loop that, per page, opens a fresh context, loads the
page, extracts elements, takes the screenshot, watches the DOM for
`ui_code.quiet_ms`, serialises it (the same in-page script and assembly),
closes it, renders the document in a fresh JavaScript-off context with every
request aborted, and computes the similarity. Pages over `ui_code.max_nodes`
are refused by both. Prints pairs/s of each and the ratio, plus the similarity
distribution of the pairs.

`--trajectory` measures the trajectory level alone (steps/s): the DAG with
`trajectory.enabled=true, max_steps=4` and only the cheap grounding tasks,
against quarry's own operators without Beam, one page at a time (render the
page, then explore and replay from it: the same work per page).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _measure import PeakRss  # benchmarks/ is on sys.path when a script runs

from quarry.dags.gui import SPEC
from quarry.dags.runner import resolve_config, run_dag
from quarry.operators.gui import ui_code
from quarry.operators.gui.browser import CHROMIUM_ARGS, HtmlFolderServer, find_chromium, local_read
from quarry.operators.gui.dom import EXTRACT_JS, LISTENER_PROBE_JS

# Installed by scripts/apt-packages.txt (python3-doc); used only by this benchmark.
DOCS = Path("/usr/share/doc/python3.11/html")
WORK = Path(__file__).resolve().parent / "_work"


def make_corpus(n: int) -> Path:
    folder = WORK / f"gui-corpus-{n}"
    if folder.exists():
        return folder
    if not DOCS.exists():
        sys.exit(f"{DOCS} is missing: apt-get install python3-doc (scripts/apt-packages.txt)")
    pages = sorted((DOCS / "library").glob("*.html"))[:n]
    (folder / "library").mkdir(parents=True)
    for p in pages:
        shutil.copy(p, folder / "library" / p.name)
    shutil.copytree(DOCS / "_static", folder / "_static", symlinks=False)
    return folder


def _loaded_pages(browser, server, corpus: Path, pages: list[str]):
    """Each page as the DAG loads it (fresh context, listener probe, load + network idle, element extraction,
    screenshot): yields (page, png) and closes the context after the caller's work on it."""
    for rel in pages:
        ctx = browser.new_context(viewport={"width": 1280, "height": 720})
        ctx.add_init_script(LISTENER_PROBE_JS)
        page = ctx.new_page()
        try:
            page.goto(server.url_for(str(corpus), rel), wait_until="load", timeout=30_000)
            page.wait_for_load_state("networkidle", timeout=30_000)
            page.evaluate(EXTRACT_JS, {"minSide": 2.0, "maxElements": 400, "maxNodes": 20_000})
            yield page, page.screenshot(type="png", animations="disabled", caret="hide")
        finally:
            ctx.close()


def plain_loop(corpus: Path, pages: list[str], browser_path: str) -> tuple[float, int]:
    """The baseline: sync Playwright, one page at a time, same work per page as the DAG."""
    from playwright.sync_api import sync_playwright

    server = HtmlFolderServer(local_read)
    ok = 0
    t0 = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=list(CHROMIUM_ARGS))
        for _ in _loaded_pages(browser, server, corpus, pages):
            ok += 1
        browser.close()
    server.close()
    return time.monotonic() - t0, ok


def plain_code_loop(corpus: Path, pages: list[str], browser_path: str) -> tuple[float, list[float]]:
    """The UI-to-code baseline: one page at a time, the DAG's work per page (see the module docstring)."""
    from playwright.sync_api import sync_playwright

    s = ui_code.CodeSettings()
    server = HtmlFolderServer(local_read)
    sims: list[float] = []
    t0 = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=list(CHROMIUM_ARGS))
        for page, png in _loaded_pages(browser, server, corpus, pages):
            page.evaluate(ui_code.WATCH_JS, ui_code.WATCH_KEY)
            time.sleep(s.quiet_ms / 1000)
            raw = page.evaluate(ui_code.SERIALIZE_JS, {
                "watchKey": ui_code.WATCH_KEY, "quietMs": s.quiet_ms, "maxNodes": s.max_nodes,
                "maxBytes": s.max_bytes, "blank": ui_code.TRANSPARENT_GIF})
            if raw.get("error"):
                continue
            cap = ui_code.assemble(raw, s, server.read_url)
            if not isinstance(cap, ui_code.CodeCapture):
                continue
            sandbox = browser.new_context(viewport={"width": 1280, "height": 720}, java_script_enabled=False)
            try:
                html = cap.html.encode()

                def route(r):  # one parameter: Playwright passes the request too to a handler that takes two
                    if r.request.url == ui_code.SANDBOX_URL:
                        r.fulfill(status=200, headers={"content-type": "text/html; charset=utf-8"}, body=html)
                    else:
                        r.abort()

                sandbox.route("**/*", route)
                sp = sandbox.new_page()
                sp.goto(ui_code.SANDBOX_URL, wait_until="load")
                again = sp.screenshot(type="png", animations="disabled", caret="hide")
            finally:
                sandbox.close()
            sim = ui_code.similarity(png, again)
            if sim.score >= 0.95:
                sims.append(sim.score)
        browser.close()
    server.close()
    return time.monotonic() - t0, sims


def code_benchmark(corpus: Path, pages: list[str], browser: str, in_flight: int, workers: int) -> None:
    base_s, sims = plain_code_loop(corpus, pages, browser)
    base_rate = len(sims) / base_s
    print(f"UI-to-code, plain sync loop: {len(pages)} pages -> {len(sims)} pairs in {base_s:6.1f} s = "
          f"{base_rate:5.2f} pairs/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        with PeakRss() as mem:
            wall, facts = dag_run(corpus, Path(tmp) / "out", in_flight, workers, browser,
                                  ["tasks.kinds=[ui_to_code, code_to_ui]"])
        import duckdb

        got = duckdb.sql(f"SELECT code_similarity FROM read_parquet('{tmp}/out/data/**/*.parquet') "
                         "WHERE task = 'ui_to_code'").fetchall()
    dag_sims = sorted(v for (v,) in got)
    rate = len(dag_sims) / wall
    q = (lambda xs, f: xs[min(len(xs) - 1, int(f * len(xs)))] if xs else float("nan"))
    print(f"UI-to-code, DAG ({in_flight} in flight, {workers} worker(s)): {len(pages)} pages -> {len(dag_sims)} pairs "
          f"in {wall:6.1f} s = {rate:5.2f} pairs/s = {rate / base_rate:4.2f}x the loop, peak RSS "
          f"{mem.peak / 2**20:6.0f} MiB; rejected {facts['rejected']}", flush=True)
    print(f"UI-to-code similarity of kept pairs: min {q(dag_sims, 0):.4f} p10 {q(dag_sims, 0.1):.4f} "
          f"median {q(dag_sims, 0.5):.4f} max {q(dag_sims, 1.0):.4f}", flush=True)


TRAJECTORY_SETS = ["tasks.kinds=[grounding]", "trajectory.enabled=true", "trajectory.max_steps=4",
                   "trajectory.settle_ms=300"]


def plain_trajectory_loop(corpus: Path, pages: list[str], browser_path: str) -> tuple[float, int, int]:
    """The trajectory baseline: quarry's own operators without Beam, one page at a time (pages_in_flight=1):
    render the page (the DAG's render stage), then explore and replay from it. -> (seconds, kept, steps)."""
    from quarry.operators.gui.browser import BrowserRenderer, PageJob, RendererSettings
    from quarry.operators.gui.explore import Explorer, ExploreSettings

    server = HtmlFolderServer(local_read)
    renderer = BrowserRenderer(RendererSettings(executable_path=browser_path, pages_in_flight=1),
                               read_asset=server.read_url).start()
    explorer = Explorer(renderer, ExploreSettings(max_steps=4, settle_ms=300))
    kept = steps = 0
    t0 = time.monotonic()
    try:
        for rel in pages:
            job = PageJob(server.url_for(str(corpus), rel), 1280, 720, allow_private=True, trusted_origin=True)
            renderer.render(job)
            traj = explorer.explore_and_replay(job, rel)
            if traj.rejection is None:
                kept, steps = kept + 1, steps + len(traj.steps)
    finally:
        renderer.close()
        server.close()
    return time.monotonic() - t0, kept, steps


def trajectory_benchmark(corpus: Path, pages: list[str], browser: str, in_flight: int, workers: int) -> None:
    base_s, kept, steps = plain_trajectory_loop(corpus, pages, browser)
    print(f"trajectories, bare operator loop (1 in flight): {len(pages)} pages -> {kept} trajectories, {steps} steps "
          f"in {base_s:6.1f} s = {steps / base_s:5.2f} steps/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        with PeakRss() as mem:
            wall, facts = dag_run(corpus, Path(tmp) / "out", in_flight, workers, browser, TRAJECTORY_SETS)
    t = facts["trajectory"]
    rate = t["steps"] / wall
    print(f"trajectories, DAG ({in_flight} in flight, {workers} worker(s)): {t['kept']} trajectories, {t['steps']} "
          f"steps in {wall:6.1f} s = {rate:5.2f} steps/s = {rate / (steps / base_s):4.2f}x the loop, peak RSS "
          f"{mem.peak / 2**20:6.0f} MiB; rejected {facts['rejected']}", flush=True)


def dag_run(corpus: Path, out: Path, in_flight: int, workers: int, browser_path: str,
            extra_sets: tuple[str, ...] | list[str] = ()) -> tuple[float, dict]:
    sets = ["source=python_docs", f"render.pages_in_flight={in_flight}", f"render.executable_path={browser_path}",
            *extra_sets]
    cfg = resolve_config(SPEC, None, sets, None)
    beam_args = [f"--direct_num_workers={workers}"]
    if workers > 1:
        beam_args.append("--direct_running_mode=multi_processing")
    t0 = time.monotonic()
    m = run_dag(SPEC, [str(corpus)], str(out), cfg, overwrite=True, beam_args=beam_args)
    return time.monotonic() - t0, {"kept_rows": m.kept, "pages": m.extra["pages"], "rejected": m.rejected,
                                   "trajectory": m.extra.get("trajectory")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60, help="pages")
    ap.add_argument("--workers", type=int, default=1, help="Beam DirectRunner workers (processes when > 1)")
    ap.add_argument("--in-flight", type=int, nargs="+", default=[4, 8], help="pages in flight per worker (1 is always run)")
    ap.add_argument("--browser", default="auto", help="Chromium binary for both sides (as render.executable_path)")
    ap.add_argument("--ui-code", action="store_true", help="measure only the UI-to-code level (pairs/s)")
    ap.add_argument("--trajectory", action="store_true", help="measure only the trajectory level (steps/s)")
    args = ap.parse_args(argv)
    browser = find_chromium(args.browser)
    corpus = make_corpus(args.n)
    pages = sorted(str(p.relative_to(corpus)) for p in (corpus / "library").glob("*.html"))
    print(f"corpus: {len(pages)} python3-doc pages; browser {browser}; cpus={psutil.cpu_count()} "
          f"load={psutil.getloadavg()[0]:.1f}", flush=True)
    if args.trajectory:
        trajectory_benchmark(corpus, pages, browser, max(args.in_flight), args.workers)
        print(f"load after: {psutil.getloadavg()[0]:.1f}")
        return
    if args.ui_code:
        code_benchmark(corpus, pages, browser, max(args.in_flight), args.workers)
        print(f"load after: {psutil.getloadavg()[0]:.1f}")
        return

    with PeakRss() as mem:
        base_s, ok = plain_loop(corpus, pages, browser)
    base_rate = ok / base_s
    base_start_s, _ = plain_loop(corpus, pages[:1], browser)
    base_steady = (ok - 1) / (base_s - base_start_s)
    print(f"plain sync loop:        {ok} pages in {base_s:6.1f} s = {base_rate:5.2f} pages/s, "
          f"peak RSS {mem.peak / 2**20:6.0f} MiB; 1 page {base_start_s:.1f} s, after start-up {base_steady:5.2f} pages/s",
          flush=True)

    one_page = make_corpus(1)
    with tempfile.TemporaryDirectory() as tmp:
        for in_flight in sorted(set(args.in_flight) | {1}, reverse=True):
            with PeakRss() as mem:
                wall, facts = dag_run(corpus, Path(tmp) / f"out-{in_flight}", in_flight, args.workers, browser)
            start_s, _ = dag_run(one_page, Path(tmp) / f"one-{in_flight}", in_flight, args.workers, browser)
            n = facts["pages"]["inputs"]
            rate, steady = n / wall, (n - 1) / (wall - start_s)
            print(f"DAG, {in_flight} in flight, {args.workers} worker(s): {n} pages "
                  f"({facts['pages']['with_rows']} with rows, {facts['kept_rows']} task rows) in {wall:6.1f} s = "
                  f"{rate:5.2f} pages/s = {rate / base_rate:4.2f}x the loop, peak RSS {mem.peak / 2**20:6.0f} MiB; "
                  f"rejected {facts['rejected']}; 1 page {start_s:.1f} s, after start-up {steady:5.2f} pages/s = "
                  f"{steady / base_steady:4.2f}x the loop's", flush=True)
    print(f"load after: {psutil.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
