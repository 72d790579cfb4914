"""Reason codes are declared once: each module that refuses samples lists its codes in `REASONS`, writes no
code inline, and every family's `STAGE_REASONS` is built from those codes."""

from __future__ import annotations

import ast
import importlib
import inspect
import re

import pytest

from quarry.operators import decode, decontam

EMITTERS = [  # modules whose `Rejection(...)` / reject rows carry reasons of their own
    "quarry.operators.svg.prepare", "quarry.operators.svg.render", "quarry.operators.gui.browser",
    "quarry.operators.gui.ui_code", "quarry.operators.gui.explore",
    "quarry.operators.ocr.tasks", "quarry.operators.ocr.search", "quarry.operators.grade.contract", "quarry.operators.imagemining.qa", "quarry.operators.imagemining.kb",
    "quarry.operators.grade.mc", "quarry.pipelines.svg", "quarry.pipelines.gui", "quarry.pipelines.ocr_search",
    "quarry.pipelines.imagemining", "quarry.pipelines.grade",
    "quarry.operators.decode", "quarry.operators.heuristics", "quarry.operators.clip", "quarry.operators.concepts",
    "quarry.operators.decontam", "quarry.operators.interleaved.ads", "quarry.operators.interleaved.documents",
    "quarry.operators.interleaved.text_quality", "quarry.pipelines.interleaved", "quarry.pipelines.dedup",
    "quarry.pipelines.write", "quarry.operators.recaption",
]
FAMILIES = ["svg", "gui", "ocr_search", "imagemining", "grade", "caption", "interleaved", "decontam"]
QUIET = ["quarry.pipelines.caption", "quarry.pipelines.recaption", "quarry.pipelines.decontam", "quarry.pipelines.balance", "quarry.dags.decontam"]
SHARED = {decode.CORRUPT, decode.TOO_LARGE, decontam.CONTAMINATED_TEXT, decontam.CONTAMINATED_IMAGE,
          "near_duplicate"}  # codes of the shared steps (decode, decontam, pHash dedup)
CODE = re.compile(r"^[a-z][a-z0-9_]*$")


@pytest.mark.parametrize("name", EMITTERS)
def test_reasons_are_distinct_codes(name):
    reasons = importlib.import_module(name).REASONS
    assert isinstance(reasons, tuple) and reasons and len(set(reasons)) == len(reasons)
    assert all(CODE.match(r) for r in reasons), reasons


@pytest.mark.parametrize("name", EMITTERS)
def test_no_rejection_writes_its_code_inline(name):
    """No `Rejection("code", ...)`; a `Rejection(CONSTANT, ...)` names a code of a REASONS table."""
    module = importlib.import_module(name)
    tree = ast.parse(inspect.getsource(module))
    inline = [n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
              and getattr(n.func, "id", None) == "Rejection" and n.args and isinstance(n.args[0], ast.Constant)]
    assert not inline, f"{name}: Rejection with an inline code {inline}"
    named = {n.args[0].id for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, "id", None) == "Rejection" and n.args and isinstance(n.args[0], ast.Name)}
    codes = {getattr(module, n) for n in named if isinstance(getattr(module, n, None), str)}
    assert codes <= _declared(), codes - _declared()  # its own REASONS, or a constant of another table


def _declared() -> set[str]:
    out = set(SHARED)
    for name in EMITTERS:
        out |= set(importlib.import_module(name).REASONS)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_stage_reasons_come_from_the_reason_tables(family):
    table = importlib.import_module(f"quarry.pipelines.{family}").STAGE_REASONS
    declared = _declared()
    for stage, reasons in table.items():
        assert isinstance(reasons, tuple) and set(reasons) <= declared, (stage, set(reasons) - declared)


@pytest.mark.parametrize("name", QUIET)
def test_modules_without_codes_of_their_own_write_none_inline(name):
    """Steps that only pass on their operators' verdicts: no `Rejection("code", ...)`, no `reason="code"`."""
    tree = ast.parse(inspect.getsource(importlib.import_module(name)))
    inline = [n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
              and getattr(n.func, "id", None) == "Rejection" and n.args and isinstance(n.args[0], ast.Constant)]
    inline += [k.value.value for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords
               if k.arg == "reason" and isinstance(k.value, ast.Constant)]
    assert not inline, f"{name}: inline reason codes {inline}"

