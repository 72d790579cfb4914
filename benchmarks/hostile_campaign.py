"""The hostile-input campaign: every kind of hostile or broken input in `hostile_cases.py`, run end to end
through its DAG, one table.

    .venv/bin/python benchmarks/hostile_campaign.py [--only KIND ...] [--dag DAG] [--in-process] [--json FILE]

Each kind runs in a fresh Python process (`--in-process`: all in this one, faster, peak MB then
understated) that first runs its DAG once on a benign input (models, Chromium, Beam warmed up), then
the hostile input, and reports (see `hostile_cases.py` for how each is measured):

- outcome: reject stage/reason counts and rows kept, or the one-line error of a usage mistake;
  CRASH for an exception that escaped, HANG for a run killed after `--timeout` seconds;
- time s: wall time of the run (config + `run_dag`);
- peak MB: growth of the process's RSS high-water mark during the run; "+N child" where the largest
  child process (Chromium, the resvg renderer, the SymPy worker) grew its high-water mark by N MB;
- leaked bytes: bytes written anywhere in the case's sandbox outside the output (inputs, TMPDIR
  leftovers, HOME, working directory) plus files at the escape targets a case names;
- forbidden requests: connections the case's forbidden loopback servers accepted;
- balanced: whether the manifest accounts for every input (n/a where the run stops before starting).

Exit status 1 when any kind fails its expectation (`Result.problems`), other than the findings left
open that a case names (`Case.known`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hostile_cases as hc  # noqa: E402 - beside this script


def run_one(kind: str, root: Path, warm: bool = True) -> hc.Result:
    case = hc.cases_by_kind()[kind]
    if warm:
        hc.run_case(hc.WARMUPS[case.dag], root / "warm-up")
    return hc.run_case(case, root / "case")


def child(kind: str, root: str) -> None:
    result = run_one(kind, Path(root))
    print("RESULT " + json.dumps(dataclasses.asdict(result)), flush=True)


def in_subprocess(kind: str, timeout_s: float) -> hc.Result:
    case = hc.cases_by_kind()[kind]
    with tempfile.TemporaryDirectory(prefix="quarry-hostile-") as root:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--child", kind, "--root", root], capture_output=True,
                                  text=True, timeout=timeout_s, env={**os.environ, "QUARRY_PROGRESS": "0"})
        except subprocess.TimeoutExpired:
            return hc.Result(kind, case.dag, f"HANG (killed after {timeout_s:.0f} s)", round(time.perf_counter() - t0, 1),
                             0.0, 0.0, 0, [], 0, None, crash="hang")
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return hc.Result(kind, case.dag, f"CRASH (process exit {proc.returncode}): {tail[0][:160]}",
                             round(time.perf_counter() - t0, 1), 0.0, 0.0, 0, [], 0, None, crash=tail[0])
        return hc.Result(**json.loads(lines[-1][len("RESULT "):]))


def cell(text: str, limit: int = 150) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|").replace("\n", " ")


def table(results: list[hc.Result]) -> str:
    rows = ["| kind | DAG | outcome | time s | peak MB | leaked bytes | forbidden requests | balanced |",
            "|---|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        peak = f"{r.peak_mb:.0f}" + (f" (+{r.child_mb:.0f} child)" if r.child_mb >= 1 else "")
        balanced = "n/a" if r.balanced is None else ("yes" if r.balanced else "**no**")
        rows.append(f"| {cell(r.kind)} | {r.dag} | {cell(r.outcome)} | {r.seconds:.1f} | {peak} | {r.leaked_bytes} | "
                    f"{r.forbidden} | {balanced} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], metavar="KIND", help="run only this kind (repeatable)")
    ap.add_argument("--dag", action="append", default=[], help="run only the kinds of this DAG (repeatable)")
    ap.add_argument("--in-process", action="store_true", help="run every kind in this process (faster)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before a kind counts as a hang")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--list", action="store_true", help="list the kinds and exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.root)
        return 0
    cases = hc.cases_by_kind()
    if args.list:
        for c in cases.values():
            print(f"{c.dag:12} {c.kind:32} {c.what}")
        return 0
    unknown = [k for k in args.only if k not in cases]
    if unknown:
        ap.error(f"unknown kind(s) {unknown}; --list shows them")
    kinds = [k for k, c in cases.items() if (not args.only or k in args.only) and (not args.dag or c.dag in args.dag)]
    results, failed = [], []
    for i, kind in enumerate(kinds, 1):
        if args.in_process:
            with tempfile.TemporaryDirectory(prefix="quarry-hostile-") as root:
                r = run_one(kind, Path(root), warm=False)
        else:
            r = in_subprocess(kind, args.timeout)
        results.append(r)
        problems = r.problems(cases[kind])
        if problems and not cases[kind].known:
            failed.append(kind)
        status = "ok" if not problems else ("known: " if cases[kind].known else "FAIL: ") + "; ".join(problems)
        print(f"[{i}/{len(kinds)}] {kind}: {r.outcome} ({r.seconds:.1f} s) {status}", file=sys.stderr, flush=True)
    print(table(results))
    print(f"\n{len(results)} kinds, {len(failed)} failed, "
          f"{sum(1 for r in results if r.crash)} crashes/hangs, {sum(r.leaked_bytes for r in results)} bytes leaked, "
          f"{sum(r.forbidden for r in results)} forbidden requests")
    for kind in kinds:
        if cases[kind].known:
            print(f"- {kind}: open finding: {cases[kind].known}")
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
