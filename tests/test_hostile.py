"""The hostile-input campaign as tests: every kind of `benchmarks/hostile_cases.py` end to end through its DAG.

Each kind must give its expected rejects and rows (or, for a usage mistake, its one-line error), a
balanced manifest, no exception escaping, no bytes written outside the output, no connection to a
forbidden loopback server, within a time and memory bound loose enough for a loaded 2-core machine.
`benchmarks/hostile_campaign.py` runs the same cases and prints the README's table.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "hostile_cases.py"
if "hostile_cases" not in sys.modules:  # tests import with --import-mode=importlib: load the module by path
    _spec = importlib.util.spec_from_file_location("hostile_cases", _PATH)
    sys.modules["hostile_cases"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["hostile_cases"])
hc = sys.modules["hostile_cases"]


def _param(case):
    marks = [pytest.mark.slow] if case.slow else []
    if case.known:
        marks.append(pytest.mark.xfail(reason=f"open finding: {case.known}", strict=True))
    return pytest.param(case, marks=marks, id=re.sub(r"[^A-Za-z0-9.+-]+", "-", case.kind).strip("-"))


def test_the_campaign_has_forty_kinds_or_more_across_every_dag():
    cases = hc.cases_by_kind()
    assert len(cases) >= 40
    assert {c.dag for c in cases.values()} == {"caption", "gui", "ocr_search", "svg", "imagemining", "interleaved",
                                              "decontam", "grade"}


@pytest.mark.parametrize("case", [_param(c) for c in hc.ALL_CASES])
def test_hostile_input(case, tmp_path):
    result = hc.run_case(case, tmp_path)
    problems = result.problems(case)
    assert not problems, f"{case.kind}: {result.outcome}: {problems}\n{result.crash or ''}"
    assert result.seconds < case.max_s, f"{case.kind} took {result.seconds} s (bound {case.max_s} s)"
    assert result.peak_mb < case.max_mb, f"{case.kind} grew the peak RSS by {result.peak_mb} MB (bound {case.max_mb})"
