"""Benchmark the verifiers: verifications per second, next to a trivial baseline.

    .venv/bin/python benchmarks/bench_verify.py [--seconds 1.0]

Each row runs one verifier on full GLM-format responses
(``<think>..</think><answer>..<|begin_of_box|>..<|end_of_box|></answer>``),
so extraction is included, and times a trivial baseline on the same bare
answers in the same run: ``float(a) == float(b)`` for numbers, ``a == b``
for strings, a bare-tuple IoU for boxes. The ratio says how many baseline
comparisons one verification costs.

The SymPy rows go through the worker process: the SymPy path pays one
pipe round trip plus SymPy's parse and evalf; the timeout row measures a
power tower that hits the timeout (``--timeout``), and includes killing and
restarting the worker (start-up ~0.3 s on the dev machine), which is the real cost of a bomb.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from quarry.operators.grade.verify import (
    ActionVerifier,
    ExactVerifier,
    GroundingVerifier,
    NumericVerifier,
    OcrVerifier,
    iou,
    shutdown_sympy_worker,
)


def boxed(answer: str) -> str:
    return f"<think>Let me think about the figure step by step.</think><answer><|begin_of_box|>{answer}<|end_of_box|></answer>"


def rate(fn: Callable[[], object], seconds: float, max_calls: int = 10**7) -> float:
    """Calls per second of `fn`, run for about `seconds` (at least once)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or calls >= max_calls:
            return calls / elapsed


def cycle(items: list) -> Callable[[], object]:
    """A callable that takes the next item each call (so no one input is cached)."""
    state = {"i": 0}

    def next_item():
        state["i"] = (state["i"] + 1) % len(items)
        return items[state["i"]]

    return next_item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--timeout", type=float, default=0.2, help="SymPy timeout for the timeout row")
    args = parser.parse_args()
    s = args.seconds

    numeric = NumericVerifier()
    fast_pairs = [("43", "43.0"), ("0.75", "3/4"), ("1,000", "1000"), ("3.2e5", "320000"), ("12.5", "12.50")]
    sympy_pairs = [("\\sqrt{2}", "1.41421356"), ("2\\pi", "6.283185307"), ("\\frac{\\sqrt{3}}{2}", "0.8660254")]
    ocr_pairs = [("Total: 1,234.50 USD", "Total: 1,234.50 USD"), ("Grand Hotel Bellevue", "Grand Hote1 Belevue")]
    exact_pairs = [("The Eiffel Tower", "eiffel tower"), ("Paris", "paris"), ("blue", "red")]
    boxes_ref = [[100, 100, 300, 300], [500, 500, 700, 700], [20, 800, 200, 990]]
    ground_ans = "[110, 105, 305, 298], [495, 510, 702, 690], [25, 790, 210, 985]"
    action_pairs = [("click(150, 250)", "click([100, 200, 300, 400])"), ("type(\"hello\")", "type('hello')")]

    rows: list[tuple[str, float, str, float]] = []

    def add(name, verifier, pairs, base_name, base_fn):
        nxt = cycle([(boxed(a), r) for a, r in pairs])
        v = rate(lambda: verifier(*nxt()), s)
        rows.append((name, v, base_name, base_fn))

    def float_eq():
        nxt = cycle([("43", "43.0"), ("12.5", "12.50"), ("3.2e5", "320000")])
        return rate(lambda: float(nxt()[0]) == float(nxt()[1]), s)

    def str_eq(pairs):
        nxt = cycle(pairs)
        return rate(lambda: (lambda p: p[0] == p[1])(nxt()), s)

    add("numeric fast path", numeric, fast_pairs, "float(a) == float(b)", float_eq())
    numeric(boxed("\\sqrt{4}"), "2")  # start the SymPy worker before timing it
    add("numeric SymPy path", numeric, sympy_pairs, "float(a) == float(b)", rows[0][3])
    bomb = NumericVerifier(timeout_s=args.timeout)
    bomb(boxed("\\sqrt{4}"), "2")
    start = time.perf_counter()
    n_bombs = 3
    for _ in range(n_bombs):
        assert bomb(boxed("2**2**2**2**2**2"), "1").reason == "timeout"
    bomb(boxed("\\sqrt{4}"), "2")  # the restart after the last kill belongs to the bomb's cost
    rows.append(
        (f"numeric SymPy timeout ({args.timeout}s)", (n_bombs) / (time.perf_counter() - start),
         "float(a) == float(b)", rows[0][3])
    )
    add("ocr (rapidfuzz Levenshtein)", OcrVerifier(), ocr_pairs, "a == b", str_eq(ocr_pairs))
    add("exact (normalised, aliases)", ExactVerifier(), exact_pairs, "a == b", str_eq(exact_pairs))
    ground = GroundingVerifier()
    nxt_g = cycle([boxed(ground_ans)])
    rows.append(("grounding (3 boxes)", rate(lambda: ground(nxt_g(), boxes_ref), s), "9 x iou() on tuples",
                 rate(lambda: [iou(a, b) for a in map(tuple, boxes_ref) for b in map(tuple, boxes_ref)], s)))
    add("gui action", ActionVerifier(), action_pairs, "a == b", str_eq(action_pairs))
    shutdown_sympy_worker()

    print(f"{'verifier':34s} {'verif/s':>12s}   {'baseline':24s} {'base/s':>12s} {'slower x':>9s}")
    for name, v, base_name, b in rows:
        print(f"{name:34s} {v:12,.0f}   {base_name:24s} {b:12,.0f} {b / v:9,.0f}")


if __name__ == "__main__":
    main()
