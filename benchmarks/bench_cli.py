"""How long a CLI mistake takes to answer: wall time of `quarry` typos against a bare interpreter start.

    .venv/bin/python benchmarks/bench_cli.py [--repeat 5]

Each command runs `--repeat` times in a fresh process; the median is printed next to the baseline
(`python -c "import quarry.schemas.config"`: interpreter start plus pydantic and YAML, what any config
check needs), with the ratio. The goal (issue "Ready for a cluster"): every typo answered in < 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

QUARRY = [sys.executable, "-m", "quarry.dags.cli"]
CASES = {
    "unknown DAG": QUARRY + ["run", "captoin", "--input", "x", "--output", "y"],
    "config key typo (caption)": QUARRY + ["run", "caption", "--set", "clip.modle=x", "--input", "x", "--output", "y"],
    "config key typo (ocr_search)": QUARRY + ["run", "ocr_search", "--set", "ocr.thread=1", "--input", "x",
                                              "--output", "y"],
    "wrong value type (gui)": QUARRY + ["run", "gui", "--set", "render.width=wide", "--input", "x", "--output", "y"],
    "--version": QUARRY + ["--version"],
}
BASELINE = [sys.executable, "-c", "import quarry.schemas.config"]


def median_s(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, timeout=120)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    base = median_s(BASELINE, args.repeat)
    print(f"{'case':<30} {'median s':>9} {'baseline s':>11} {'ratio':>6}")
    worst = 0.0
    for name, cmd in CASES.items():
        s = median_s(cmd, args.repeat)
        worst = max(worst, s)
        print(f"{name:<30} {s:>9.2f} {base:>11.2f} {s / base:>6.1f}")
    print(f"slowest typo answer: {worst:.2f} s ({'under' if worst < 1 else 'OVER'} the 1 s goal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
