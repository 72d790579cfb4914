"""The RL task contract on the grading side: row fields -> a verifier and the reference it gets.

A row names its rule in `verifier` (`schemas/rl.py: VerifierSpec`); rows made
outside quarry may leave it out and fall back to the task's default rule
(`verify.TASK_VERIFIERS`); `grade --set verifiers.TASK=KIND` overrides both.
`gold_response` and `perturbed_answer` are what `quarry selfcheck` feeds back
as rollouts: a row's own answer must score 1 and a perturbed one must not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Optional, Union

from pydantic import ValidationError

from quarry.operators.grade import verify
from quarry.operators.grade.verify import BOX_BEGIN, BOX_END, VerifierKind
from quarry.schemas.rl import VerifierSpec

# Reasons a row's contract fields are refused at `read`.
INVALID_VERIFIER = "invalid_verifier"
EMPTY_ANSWER = "empty_answer"
REASONS: tuple[str, ...] = (INVALID_VERIFIER, EMPTY_ANSWER)


def parse_spec(value: Any) -> Union[VerifierSpec, None, str]:
    """A `verifier` cell (a struct from Parquet, an object from JSONL, JSON text) -> a spec, None, or why not."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
            return "verifier is text but not a JSON object"
    if not isinstance(value, Mapping):
        return f"verifier is {type(value).__name__}, not an object"
    try:
        return VerifierSpec.model_validate(dict(value))
    except ValidationError as e:
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'verifier'}: {err['msg']}" for err in e.errors())[:400]


def parse_aliases(value: Any) -> Union[list[str], str]:
    """`answer_aliases` as a list of strings (None is no aliases), or why not."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and all(isinstance(a, str) for a in value):
        return [a for a in value if a.strip()]
    return f"answer_aliases is {type(value).__name__}, not a list of strings"


def unbox(answer: str) -> str:
    """The answer without GLM's box markers (gui writes boxes and actions inside them)."""
    if BOX_BEGIN not in answer and BOX_END not in answer:
        return answer
    got = verify.extract_answer(answer, require_box=False)
    return answer if isinstance(got, verify.Verdict) else got


def resolve(task: str, spec: Optional[VerifierSpec],
            overrides: Mapping[str, VerifierSpec]) -> Union[VerifierSpec, str]:
    """The spec that judges a row: the config's override for its task (`grade --set verifiers.TASK=...`), else
    the row's own spec, else the task's default kind; a str saying why there is none."""
    if task in overrides:
        return overrides[task]
    if spec is not None:
        return spec
    try:
        kind = verify.kind_for(task)
    except ValueError as e:
        return f"{e}; the row names no verifier (a `verifier` column, schemas/rl.py)"
    return VerifierSpec(kind=kind.value)


def build(spec: VerifierSpec) -> verify.Verifier:
    """The verifier a spec names, with its parameters."""
    return verify.verifier_from_spec(spec.kind, rel_tol=spec.rel_tol, abs_tol=spec.abs_tol, iou=spec.iou,
                                     box=spec.box, viewport=spec.viewport)


def reference(spec: VerifierSpec, answer: str, aliases: Sequence[str] = ()) -> Any:
    """What the verifier of `spec` compares a response with.

    exact, numeric, ocr: the answer and its aliases (any one is right; a JSON
    list as the answer is a list of aliases for exact match); grounding: the
    boxes of the answer; action, svg_render and html_render: the answer without box markers.
    """
    text = unbox(answer)
    kind = VerifierKind(spec.kind)
    if kind is VerifierKind.GROUNDING or (kind is VerifierKind.EXACT and text.lstrip().startswith("[")):
        try:
            parsed = json.loads(text)
        except (json.JSONDecodeError, RecursionError):  # an answer nested 100k deep is text, not a list
            parsed = None
        if isinstance(parsed, list) and parsed:
            return parsed + list(aliases) if kind is VerifierKind.EXACT else parsed
    if kind in (VerifierKind.EXACT, VerifierKind.NUMERIC, VerifierKind.OCR) and aliases:
        return [text, *aliases]
    return text


# --- selfcheck ------------------------------------------------------------------------------------


def gold_response(answer: str) -> str:
    """A rollout that repeats the row's answer in the format rollouts use (`rollouts.RESPONSE_FORMAT`)."""
    return f"<think>The reference answer.</think>{BOX_BEGIN}{unbox(answer)}{BOX_END}"


def perturbed_answer(spec: VerifierSpec, answer: str, aliases: Sequence[str] = ()) -> str:
    """A wrong answer of the same form, that the row's verifier must not score 1.

    exact: a negated answer that is none of the aliases; numeric: the value
    doubled plus one; ocr: the text reversed with a character added; grounding:
    one 1x1 box off every reference box, per reference box (the right count,
    the wrong places); action: the same action at a point outside the target
    (or the other scroll direction, or other typed text); svg_render: an empty
    drawing on the same canvas; html_render: the same document with its colours
    inverted (`filter: invert(1)` on the root).
    """
    text = unbox(answer)
    kind = VerifierKind(spec.kind)
    if kind is VerifierKind.NUMERIC:
        parsed = verify.parse_number(text)
        value = parsed.value if isinstance(parsed, verify._Parsed) and parsed.value.is_finite() else Decimal(0)
        return str(value * 2 + 1)
    if kind is VerifierKind.OCR:
        return text[::-1] + "#"
    if kind is VerifierKind.GROUNDING:
        return " ".join("[%d,%d,%d,%d]" % _off_box(b) for b in verify.parse_boxes(text)) or "[0,0,1,1]"
    if kind is VerifierKind.ACTION:
        return _perturbed_action(text, spec)
    if kind is VerifierKind.HTML_RENDER:
        invert = "<style>html{filter:invert(1)!important}</style>"
        head = text.find("</head>")
        return text[:head] + invert + text[head:] if head >= 0 else invert + text
    if kind is VerifierKind.SVG_RENDER:
        m = re.search(r"<svg\b[^>]*>", text)
        root = m.group(0) if m and not m.group(0).endswith("/>") else '<svg xmlns="http://www.w3.org/2000/svg">'
        return root + "</svg>"
    wrong = f"not {text}"
    while wrong in aliases:
        wrong = f"not {wrong}"
    return wrong


def _off_box(b: verify.Box) -> verify.Box:
    """A 1x1 box in a grid corner that the reference box does not reach (IoU 0)."""
    for x, y in ((0, 0), (999, 999), (999, 0), (0, 999)):
        if not (b[0] <= x + 1 and x <= b[2] and b[1] <= y + 1 and y <= b[3]):
            return (x, y, x + 1, y + 1)
    return (0, 0, 1, 1)  # a box covering the whole grid: a tiny box still has IoU < 0.5


def _perturbed_action(text: str, spec: VerifierSpec) -> str:
    act = verify.parse_action(text)
    if act is None:
        return "wait()"
    target = tuple(spec.box) if spec.box else act.box
    if act.kind == "scroll":
        other = {"down": "up", "up": "down", "left": "right", "right": "left"}[act.text]
        return f'scroll(500,500,"{other}")'
    if act.kind == "type":
        x, y = _outside(target)
        return f'type({x},{y},"{act.text}")'
    x, y = _outside(target)
    return f"{act.kind}({x},{y})"


def _outside(target: Optional[verify.Box]) -> tuple[int, int]:
    """A grid point outside the target box (a corner it does not reach)."""
    if target is None:
        return (0, 0)
    for x, y in ((0, 0), (1000, 1000), (1000, 0), (0, 1000)):
        if not (target[0] <= x <= target[2] and target[1] <= y <= target[3]):
            return (x, y)
    return (0, 0)
