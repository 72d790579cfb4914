"""Verifiers of the `grade` DAG: rule-based rewards for RL data (GLM-4.5V §5, Table 1).

Each verifier is a callable ``(response, reference) -> Verdict``. ``response``
is the whole model output; the verifier first extracts the answer
(`extract_answer`), then scores it. A verifier never raises on bad model
output and never hangs: bad output is a `Verdict` with reward 0 and a reason.

Reason codes (``Verdict.reason``):

- ``""``: judged, and the answer is right (reward 1.0).
- ``"mismatch"``: judged, and the answer is not (fully) right; the reward says
  how wrong where the verifier is graded (OCR, grounding), else it is 0.
- anything else: the answer could not be judged; reward 0. Extraction:
  ``no_box``, ``multiple_boxes``, ``unbalanced_box``; numeric:
  ``unparseable_number``, ``timeout``, ``nan``, ``unit_mismatch``; OCR/exact:
  ``too_long``; grounding: ``unparseable_box``, ``box_out_of_range``,
  ``too_many_boxes``; GUI: ``unparseable_action``, ``action_mismatch``,
  ``box_out_of_range``.

The mapping from quarry task types to verifiers is `verifier_for`.

"43" and "43.0" are equal to the numeric verifier and different to the OCR
verifier, as the paper asks.
"""

from __future__ import annotations

import enum
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from tokenize import TokenError
from typing import Protocol

from rapidfuzz.distance import Levenshtein

# Reason codes.
NO_BOX = "no_box"
MULTIPLE_BOXES = "multiple_boxes"
UNBALANCED_BOX = "unbalanced_box"
MISMATCH = "mismatch"
UNPARSEABLE_NUMBER = "unparseable_number"
TIMEOUT = "timeout"
NAN = "nan"
UNIT_MISMATCH = "unit_mismatch"
TOO_LONG = "too_long"
UNPARSEABLE_BOX = "unparseable_box"
BOX_OUT_OF_RANGE = "box_out_of_range"
TOO_MANY_BOXES = "too_many_boxes"
UNPARSEABLE_ACTION = "unparseable_action"
ACTION_MISMATCH = "action_mismatch"


@dataclass(frozen=True)
class Verdict:
    """A verifier's judgement: reward in [0, 1] and a reason ("" when right)."""

    reward: float
    reason: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.reward <= 1.0:
            raise ValueError(f"reward must be in [0, 1], got {self.reward}")


RIGHT = Verdict(1.0)
WRONG = Verdict(0.0, MISMATCH)


def _fail(reason: str) -> Verdict:
    return Verdict(0.0, reason)


def _best(verdicts: Iterable[Verdict]) -> Verdict:
    """The highest reward of several (one per alias); the first verdict on a tie, so a reason stays."""
    best: Verdict | None = None
    for v in verdicts:
        if best is None or v.reward > best.reward:
            best = v
        if best.reward == 1.0:
            break
    return best if best is not None else WRONG


class Verifier(Protocol):
    def __call__(self, response: str, reference: object) -> Verdict: ...


# ---------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------

BOX_BEGIN = "<|begin_of_box|>"
BOX_END = "<|end_of_box|>"
_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_THINK_CLOSE = "</think>"
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def answer_part(response: str) -> str:
    """The part of a response that holds the answer.

    ``<think>...</think><answer>...</answer>``: the text of the last
    ``<answer>`` (to ``</answer>`` or the end: a truncated answer is still
    read). Without ``<answer>``: what follows the last ``</think>``, so a box
    written while thinking is not mistaken for the answer. Otherwise the
    whole response.
    """
    start = response.rfind(_ANSWER_OPEN)
    if start >= 0:
        start += len(_ANSWER_OPEN)
        end = response.find(_ANSWER_CLOSE, start)
        return response[start:] if end < 0 else response[start:end]
    think = response.rfind(_THINK_CLOSE)
    return response[think + len(_THINK_CLOSE) :] if think >= 0 else response


def extract_answer(response: str, *, require_box: bool = True) -> str | Verdict:
    """The one boxed answer of a response, stripped, or a Verdict saying why not.

    Looks in `answer_part`. ``<|begin_of_box|>...<|end_of_box|>`` (GLM's
    markers) first: exactly one well-formed span, else ``multiple_boxes`` or
    ``unbalanced_box`` (counts differ, or an end before its begin, or nested).
    Without GLM markers, ``\\boxed{...}`` / ``\\fbox{...}`` with nested braces,
    under the same rules. Without either: ``no_box``, or the whole answer part
    when ``require_box`` is False.
    """
    if not isinstance(response, str):
        return _fail(NO_BOX)
    text = answer_part(response)
    n_begin, n_end = text.count(BOX_BEGIN), text.count(BOX_END)
    if n_begin or n_end:
        if n_begin != n_end:
            return _fail(UNBALANCED_BOX)
        # Well-formed means begin/end alternate, starting with a begin.
        pos, spans = 0, []
        for _ in range(n_begin):
            b = text.find(BOX_BEGIN, pos)
            e = text.find(BOX_END, pos)
            if e < b:
                return _fail(UNBALANCED_BOX)
            nb = text.find(BOX_BEGIN, b + len(BOX_BEGIN))
            if 0 <= nb < e:
                return _fail(UNBALANCED_BOX)
            spans.append(text[b + len(BOX_BEGIN) : e])
            pos = e + len(BOX_END)
        if len(spans) > 1:
            return _fail(MULTIPLE_BOXES)
        return spans[0].strip()
    boxed = _boxed_spans(text)
    if isinstance(boxed, Verdict):
        return boxed
    if len(boxed) > 1:
        return _fail(MULTIPLE_BOXES)
    if boxed:
        return boxed[0].strip()
    return text.strip() if not require_box else _fail(NO_BOX)


def _boxed_spans(text: str) -> list[str] | Verdict:
    """Contents of every top-level ``\\boxed{...}``, matching nested braces."""
    spans: list[str] = []
    pos = 0
    while (m := _BOXED.search(text, pos)) is not None:
        depth, i = 1, m.end()
        while i < len(text) and depth:
            c = text[i]
            if c == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
                i += 2  # an escaped brace is content, not structure
                continue
            depth += c == "{"
            depth -= c == "}"
            i += 1
        if depth:
            return _fail(UNBALANCED_BOX)
        spans.append(text[m.end() : i - 1])
        pos = i
    return spans


class _ScoresExtractedAnswer:
    """`verifier(response, reference)`: extract the answer, then `score` it.

    Subclasses are dataclasses with a `require_box` field and a `score` method.
    """

    require_box: bool

    def __call__(self, response: str, reference: object) -> Verdict:
        answer = extract_answer(response, require_box=self.require_box)
        if isinstance(answer, Verdict):
            return answer
        return self.score(answer, reference)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# Numeric
# ---------------------------------------------------------------------------

# Longer answers are not numbers a grader should try to read; the cap also
# bounds the work of the fast path and rules out 10,000-digit numbers.
MAX_NUMBER_CHARS = 1000

# Exact decimal arithmetic with unbounded exponents, no traps: "1e999" stays
# finite and exact, overflow becomes Infinity instead of an exception.
_DEC = Context(prec=60, Emax=999_999_999, Emin=-999_999_999, traps=[])

_PLAIN = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][+-]?\d+)?|[+-]?\.\d+(?:[eE][+-]?\d+)?")
_FRACTION = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*/\s*([+-]?\d+(?:\.\d+)?)")
_TIMES_TEN = re.compile(
    r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?:\\times|\\cdot|×|x|\*|·)\s*10\s*(?:\^|\*\*)\s*\{?\s*([+-−]?\d+)\s*\}?"
)
_INFINITY = {"inf": 1, "+inf": 1, "-inf": -1, "infinity": 1, "+infinity": 1, "-infinity": -1,
             "∞": 1, "+∞": 1, "-∞": -1, "oo": 1, "-oo": -1, r"\infty": 1, r"-\infty": -1}
_NANS = frozenset({"nan", "+nan", "-nan", "undefined"})

# Units stripped from the end of a number. A unit is one or more of these
# words joined by "/", "*", "·" or a space, each with an optional power.
# Single letters that are also maths ("e", "i", "x") are not units.
_UNIT_WORDS = frozenset(
    "m cm mm km nm um µm μm in ft yd mi g kg mg t lb lbs oz s sec ms min h hr hrs hour hours "
    "day days year years yr n kn j kj w kw mw v mv a ma pa kpa mpa hpa atm bar mmhg mol mmol "
    "l ml dl m3 cm3 k °c °f ° deg degree degrees rad hz khz mhz ghz ev kev mev c ohm ω kω "
    "cal kcal wh kwh m/s dollars dollar usd yuan rmb euros units unit people percent "
    "meters meter metres metre centimeters seconds minutes grams kilograms liters litres".split()
)
_UNIT_WORD = r"(?:\\text\{[^{}]*\}|\\mathrm\{[^{}]*\}|[A-Za-zµμΩω°$]+(?:\^?\{?-?[123]\}?|[²³])?)"
# One parse only: words need a separator between them ("/", "*", "·",
# "\cdot" or spaces), so a run of letters cannot be split many ways (the
# nested-quantifier form of this pattern backtracked exponentially).
_UNIT_TAIL = re.compile(
    rf"^(?P<num>.*?[\d}})])\s*(?P<unit>{_UNIT_WORD}(?:(?:\s*(?:/|\*|·|\\cdot)\s*|\s+){_UNIT_WORD})*)\s*\.?$"
)


@dataclass(frozen=True)
class _Parsed:
    value: Decimal
    percent: bool
    unit: str  # normalised unit text, "" when none


def _clean_math(text: str) -> str:
    """Strip wrappers that carry no value: $, \\(, \\), \\left, \\right, thin spaces."""
    s = text.strip()
    for a, b in (("$$", "$$"), ("$", "$"), (r"\(", r"\)"), (r"\[", r"\]")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a) : len(s) - len(b)].strip()
    for junk in (r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\displaystyle", "\u2009", "\u202f"):
        s = s.replace(junk, "")
    s = s.replace("−", "-").replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    s = s.rstrip(".").strip()
    # "x = 5" / "a: 5": a model often names the quantity; the value is after.
    m = re.fullmatch(r"[A-Za-z_]\w{0,20}\s*(?:=|:)\s*(.+)", s)
    return m.group(1).strip() if m else s


def _normalise_unit(unit: str) -> str:
    u = re.sub(r"\\(?:text|mathrm)\{([^{}]*)\}", r"\1", unit)
    u = u.replace("\\cdot", "*").replace("·", "*").replace(" ", "").replace("^", "").replace("{", "").replace("}", "")
    return u.replace("²", "2").replace("³", "3").lower()


def _split_unit(s: str) -> tuple[str, str]:
    """(number text, unit) when `s` ends with a known unit, else (s, "")."""
    m = _UNIT_TAIL.match(s)
    if not m:
        return s, ""
    unit = _normalise_unit(m.group("unit"))
    words = [w.rstrip("23") for w in re.split(r"[/*]", unit)]
    if not unit or not all(w in _UNIT_WORDS or w == "$" for w in words):
        return s, ""
    return m.group("num").strip(), unit


def _fast_value(s: str) -> Decimal | None:
    """The value of a plain number, fraction, a × 10^b, inf or nan; None if not that simple."""
    low = s.lower()
    if low in _INFINITY or s in _INFINITY:
        return Decimal(_INFINITY.get(low, _INFINITY.get(s, 1))) * Decimal("Infinity")
    if low in _NANS:
        return Decimal("NaN")
    if _PLAIN.fullmatch(s):
        return _DEC.create_decimal(s.replace(",", ""))
    if m := _FRACTION.fullmatch(s):
        num, den = _DEC.create_decimal(m.group(1)), _DEC.create_decimal(m.group(2))
        return _DEC.divide(num, den) if den else Decimal("NaN")  # a/0 is undefined, like nan
    s2 = s.replace(r"\frac", "")
    if m := re.fullmatch(r"([+-]?)\{\s*(\d+(?:\.\d+)?)\s*\}\s*\{\s*(\d+(?:\.\d+)?)\s*\}", s2):
        num, den = _DEC.create_decimal(m.group(2)), _DEC.create_decimal(m.group(3))
        if not den or not s.lstrip("+-").startswith(r"\frac"):
            return None
        q = _DEC.divide(num, den)
        return -q if m.group(1) == "-" else q
    if m := _TIMES_TEN.fullmatch(s):
        return _DEC.scaleb(_DEC.create_decimal(m.group(1)), int(m.group(2).replace("−", "-")))
    return None


def parse_number(text: str, *, timeout_s: float = 1.0) -> _Parsed | Verdict:
    """Parse an answer into (value, percent?, unit); a Verdict when that fails.

    Fast path (no SymPy, no process): integers, decimals, "1,000", scientific
    notation, "a/b", "\\frac{a}{b}", "a × 10^b", inf/nan words. Anything else
    goes through `sympy_value` in a worker process with a hard timeout.
    """
    if len(text) > MAX_NUMBER_CHARS:
        return _fail(UNPARSEABLE_NUMBER)
    s = _clean_math(text)
    percent = False
    for mark in (r"\%", "%"):
        if s.endswith(mark):
            s, percent = s[: -len(mark)].strip(), True
            break
    if not percent and s.lower().endswith(" percent"):
        s, percent = s[: -len(" percent")].strip(), True
    s, unit = _split_unit(s)
    if s.startswith("$"):  # "$5" as money
        s, unit = s[1:].strip(), unit or "$"
    if not s:
        return _fail(UNPARSEABLE_NUMBER)
    value = _fast_value(s)
    if value is None:
        out = sympy_value(s, timeout_s=timeout_s)
        if isinstance(out, Verdict):
            return out
        value = out
    return _Parsed(value, percent, unit)


def numbers_close(a: Decimal, b: Decimal, rtol: float, atol: float) -> bool:
    """|a - b| <= max(rtol * max(|a|, |b|), atol); infinities equal only by sign; nan never."""
    if a.is_nan() or b.is_nan():
        return False
    if a.is_infinite() or b.is_infinite():
        return a == b
    diff = abs(_DEC.subtract(a, b))
    scale = max(abs(a), abs(b))
    return diff <= _DEC.multiply(_DEC.create_decimal_from_float(rtol), scale) or diff <= _DEC.create_decimal_from_float(atol)


@dataclass(frozen=True)
class NumericVerifier(_ScoresExtractedAnswer):
    """Numbers with tolerance (maths, physics, chemistry).

    - right when |answer - reference| <= max(rtol * max(|a|, |r|), atol): the
      absolute tolerance only matters near zero. "43" == "43.0" == "43.000001"
      (rtol 1e-6 relative is 4.3e-5).
    - percent: when the reference carries "%" ("50%"), an answer with "%" is
      compared as written (50), one without is right as 50 or 0.5. When the
      reference has no "%", an answer "50%" means 0.5.
    - units: a known unit word at the end ("cm", "kg", "m/s", "°", "\\text{cm}")
      is dropped when both sides carry the same unit or only one side carries
      one; different units on both sides are ``unit_mismatch`` (no conversion).
    - "nan" never equals anything; "inf"/"∞"/"oo" equals only an infinity of
      the same sign; "1e999" is a finite exact number.
    - anything beyond plain numbers (\\sqrt, \\pi, expressions) goes through
      SymPy in a worker process, ``timeout`` after ``timeout_s`` seconds. An
      expression with free symbols is ``unparseable_number``: this verifier
      compares values, not formulas.
    """

    rtol: float = 1e-6
    atol: float = 1e-9
    timeout_s: float = 1.0
    require_box: bool = True

    def __post_init__(self) -> None:
        if not (self.rtol >= 0 and self.atol >= 0 and self.timeout_s > 0):
            raise ValueError("rtol and atol must be >= 0 and timeout_s > 0")

    def score(self, answer: str, reference: object) -> Verdict:
        """Compare an extracted answer with the reference (a str or a number), or with any of a list of them."""
        if isinstance(reference, (list, tuple)):
            return _best(self._score_one(answer, r) for r in reference) if reference else _fail(UNPARSEABLE_NUMBER)
        return self._score_one(answer, reference)

    def _score_one(self, answer: str, reference: object) -> Verdict:
        ref = _parse_reference_number(reference, self.timeout_s)
        if isinstance(ref, Verdict):
            return ref
        got = parse_number(answer, timeout_s=self.timeout_s)
        if isinstance(got, Verdict):
            return got
        if got.value.is_nan():
            return _fail(NAN)
        if got.unit and ref.unit and got.unit != ref.unit:
            return _fail(UNIT_MISMATCH)
        if ref.percent and not got.percent:
            candidates = (ref.value, _DEC.scaleb(ref.value, -2))
        elif got.percent and not ref.percent:
            candidates = (_DEC.scaleb(ref.value, 2),)  # answer 50% vs reference 0.5
        else:
            candidates = (ref.value,)
        ok = any(numbers_close(got.value, c, self.rtol, self.atol) for c in candidates)
        return RIGHT if ok else WRONG


def _parse_reference_number(reference: object, timeout_s: float) -> _Parsed | Verdict:
    if isinstance(reference, bool):
        return _fail(UNPARSEABLE_NUMBER)
    if isinstance(reference, int):
        return _Parsed(Decimal(reference), False, "")
    if isinstance(reference, float):
        return _Parsed(Decimal(repr(reference)), False, "")
    if isinstance(reference, str):
        parsed = parse_number(reference, timeout_s=timeout_s)
        if isinstance(parsed, _Parsed) and parsed.value.is_nan():
            return _fail(NAN)
        return parsed
    return _fail(UNPARSEABLE_NUMBER)


# --- SymPy in a worker process ----------------------------------------------

# Names an answer may use once LaTeX is rewritten; anything else is refused
# before SymPy sees it (parse_expr evaluates its code, so the text must not
# reach attributes, builtins or dunders).
_SYMPY_NAMES = frozenset(
    "sqrt pi E I exp log ln sin cos tan asin acos atan sinh cosh tanh Abs oo "
    "Integer Float Rational Symbol Function factorial binomial".split()
)
_LATEX_SUBS = [
    (re.compile(r"\\sqrt\s*\[([^\[\]]+)\]\s*\{"), r"root{\1}{"),
    (re.compile(r"\\frac\s*\{"), "frac{"),
    (re.compile(r"\\(pi|sin|cos|tan|ln|log|exp|sqrt|arcsin|arccos|arctan|sinh|cosh|tanh)\b"), r"\1"),
    (re.compile(r"\\infty"), "oo"),
    (re.compile(r"\\(?:cdot|times)"), "*"),
    (re.compile(r"\\div"), "/"),
    (re.compile(r"[×·]"), "*"),
    (re.compile(r"π"), "pi"),
    (re.compile(r"√"), "sqrt"),
    (re.compile(r"\^"), "**"),
]
_SAFE_CHARS = re.compile(r"[0-9A-Za-z_+\-*/().,{} \t]*")


def latex_to_sympy(s: str) -> str | None:
    """Rewrite LaTeX-ish maths to SymPy syntax; None when something unsafe is left."""
    for pat, rep in _LATEX_SUBS:
        s = pat.sub(rep, s)
    # \frac{a}{b} -> ((a)/(b)) and root{n}{x} -> ((x)**(1/(n))), innermost first.
    for _ in range(50):
        new = re.sub(r"sqrt\{([^{}]*)\}", r"sqrt((\1))", s)
        new = re.sub(r"frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", new)
        new = re.sub(r"root\{([^{}]*)\}\{([^{}]*)\}", r"((\2)**(1/(\1)))", new)
        if new == s:
            break
        s = new
    s = s.replace("{", "(").replace("}", ")").replace("arcsin", "asin").replace("arccos", "acos")
    s = s.replace("arctan", "atan").replace("ln", "log")
    # "1.5.3" is not a number; implicit multiplication would read 1.5 * .3.
    if "__" in s or not _SAFE_CHARS.fullmatch(s) or re.search(r"\d*\.\d*\.", s):
        return None
    if any(name not in _SYMPY_NAMES for name in re.findall(r"[A-Za-z_]\w*", s)):
        return None
    return s


def _sympy_eval(code: str) -> tuple[str, str]:
    """In the worker: ("ok", decimal text) or ("err", reason)."""
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication,
        parse_expr,
        standard_transformations,
    )

    names = {n: getattr(sympy, n) for n in _SYMPY_NAMES if hasattr(sympy, n)}
    names.update(Integer=sympy.Integer, Float=sympy.Float, Rational=sympy.Rational, Symbol=sympy.Symbol)
    global_dict = {"__builtins__": {}, **names}
    try:
        expr = parse_expr(
            code,
            local_dict={},
            global_dict=global_dict,
            transformations=standard_transformations + (implicit_multiplication, convert_xor),
            evaluate=True,
        )
        if not isinstance(expr, sympy.Expr) or expr.free_symbols:
            return ("err", UNPARSEABLE_NUMBER)
        value = sympy.N(expr, 40)
        if value == sympy.zoo or value.has(sympy.nan):
            return ("err", NAN)
        if value in (sympy.oo, -sympy.oo):
            return ("ok", "Infinity" if value == sympy.oo else "-Infinity")
        if not value.is_real:
            return ("err", UNPARSEABLE_NUMBER)
        return ("ok", str(value))
    except (SyntaxError, TypeError, ValueError, ZeroDivisionError, AttributeError, sympy.SympifyError,
            OverflowError, RecursionError, MemoryError, TokenError):
        return ("err", UNPARSEABLE_NUMBER)


def _sympy_worker_main() -> None:
    """Worker loop: import SymPy once, then answer JSON lines on stdin until it closes."""
    import sympy  # noqa: F401 - imported before "ready" so start-up is not counted as work

    sys.stdout.write('"ready"\n')
    sys.stdout.flush()
    for line in sys.stdin:
        sys.stdout.write(json.dumps(_sympy_eval(json.loads(line))) + "\n")
        sys.stdout.flush()


class _SympyWorker:
    """One child Python process running `_sympy_worker_main`, killed and restarted after a timeout.

    A process, not a thread, because a SymPy computation cannot be
    interrupted. A plain subprocess (not `multiprocessing`): nothing is forked
    from a Beam worker that holds threads, and a trainer's script needs no
    ``if __name__ == "__main__"`` guard (spawn would re-import it).
    Measured (benchmarks/bench_verify.py): start-up (a Python process
    importing SymPy) ~0.3 s, paid on the first SymPy call and again after each
    timeout, not counted against the per-call timeout; a SymPy-path
    verification ~0.6 ms (pipe round trip + parse + evalf) against ~25 µs on
    the fast path. One request at a time (a lock), per process.
    """

    STARTUP_TIMEOUT_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._buf = b""

    def _start(self) -> None:
        code = "from quarry.operators.grade.verify import _sympy_worker_main; _sympy_worker_main()"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._buf = b""
        if self._read_line(self.STARTUP_TIMEOUT_S) != "ready":
            self._stop()
            raise RuntimeError("the SymPy worker process did not start")

    def _read_line(self, timeout_s: float) -> object:
        """The next JSON line from the worker; None on timeout or when it died."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for f in (self._proc.stdin, self._proc.stdout):
                if f is not None:
                    f.close()
        self._proc = None

    def run(self, code: str, timeout_s: float) -> tuple[str, str]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._stop()
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write((json.dumps(code) + "\n").encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._stop()
                return ("err", UNPARSEABLE_NUMBER)
            out = self._read_line(timeout_s)
            if isinstance(out, list) and len(out) == 2:
                return (str(out[0]), str(out[1]))
            # No answer in time, or the worker died (e.g. out of memory on a
            # huge power): either way it cannot be trusted any more.
            died = self._proc.poll() is not None
            self._stop()
            return ("err", UNPARSEABLE_NUMBER if died else TIMEOUT)

    def close(self) -> None:
        with self._lock:
            self._stop()


_WORKER = _SympyWorker()


def sympy_value(text: str, *, timeout_s: float = 1.0) -> Decimal | Verdict:
    """Evaluate a maths expression with SymPy in the worker process, at most `timeout_s` s."""
    code = latex_to_sympy(text)
    if code is None or not code.strip():
        return _fail(UNPARSEABLE_NUMBER)
    status, out = _WORKER.run(code, timeout_s)
    if status != "ok":
        return _fail(out)
    try:
        return _DEC.create_decimal(out)
    except InvalidOperation:
        return _fail(UNPARSEABLE_NUMBER)


def shutdown_sympy_worker() -> None:
    """Stop the SymPy worker process (it is restarted on the next SymPy call)."""
    _WORKER.close()


# ---------------------------------------------------------------------------
# OCR
# ---------------------------------------------------------------------------

# Levenshtein on two strings is O(n·m/64); past this length an "answer" is
# not a transcription the grader should spend time on.
MAX_OCR_CHARS = 20_000


@dataclass(frozen=True)
class OcrVerifier(_ScoresExtractedAnswer):
    """Transcriptions: reward 1 - edit_distance / max(len) on the raw strings (the best over aliases).

    No normalisation beyond the outer whitespace that extraction strips: case,
    punctuation and number formatting all count ("43" vs "43.0" is 1 - 2/4).
    """

    max_chars: int = MAX_OCR_CHARS
    require_box: bool = True

    def score(self, answer: str, reference: object) -> Verdict:
        """Against a reference text, or the best of a list of them (answer and aliases)."""
        if isinstance(reference, (list, tuple)):
            return _best(self._score_one(answer, r) for r in reference) if reference else WRONG
        return self._score_one(answer, reference)

    def _score_one(self, answer: str, reference: object) -> Verdict:
        ref = str(reference)
        if len(answer) > self.max_chars or len(ref) > self.max_chars:
            return _fail(TOO_LONG)
        longest = max(len(answer), len(ref))
        if longest == 0:
            return RIGHT
        reward = 1.0 - Levenshtein.distance(answer, ref) / longest
        return RIGHT if reward == 1.0 else Verdict(reward, MISMATCH)


# ---------------------------------------------------------------------------
# Exact match
# ---------------------------------------------------------------------------

_ARTICLES = re.compile(r"^(?:a|an|the)\s+")


def normalise_short_answer(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed, punctuation stripped at both ends,
    and one leading English article ("a", "an", "the") dropped."""
    s = unicodedata.normalize("NFKC", text).casefold()
    s = " ".join(s.split())
    s = _strip_edge_punct(s)
    s = _ARTICLES.sub("", s)
    return _strip_edge_punct(s)


def _strip_edge_punct(s: str) -> str:
    def is_edge(c: str) -> bool:
        return c.isspace() or unicodedata.category(c)[0] == "P"

    start, end = 0, len(s)
    while start < end and is_edge(s[start]):
        start += 1
    while end > start and is_edge(s[end - 1]):
        end -= 1
    return s[start:end]


@dataclass(frozen=True)
class ExactVerifier(_ScoresExtractedAnswer):
    """Short answers: equal after `normalise_short_answer` to the reference or any alias.

    The reference is a string or a sequence of strings (aliases). Inner
    punctuation counts ("U.S." vs "US" differ); only the ends are stripped.
    """

    max_chars: int = 10_000
    require_box: bool = True

    def score(self, answer: str, reference: object) -> Verdict:
        if len(answer) > self.max_chars:
            return _fail(TOO_LONG)
        # A str, or a sequence of aliases; any other value (an int) is its own text.
        aliases = list(reference) if isinstance(reference, (list, tuple, set, frozenset)) else [reference]
        got = normalise_short_answer(answer)
        return RIGHT if any(got == normalise_short_answer(str(a)) for a in aliases) else WRONG


# ---------------------------------------------------------------------------
# Grounding
# ---------------------------------------------------------------------------

Box = tuple[float, float, float, float]
COORD_MAX = 1000.0  # GLM's convention: coordinates normalised to 0-1000
MAX_BOXES = 100

_N = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX_RE = re.compile(rf"[\[(]{_N},{_N},{_N},{_N}[\])]")


def parse_boxes(text: str) -> list[Box]:
    """Every ``[x1, y1, x2, y2]`` (or with parentheses) in `text`, in order."""
    return [tuple(float(v) for v in m.groups()) for m in _BOX_RE.finditer(text)]  # type: ignore[misc]


def box_in_range(b: Box) -> bool:
    x1, y1, x2, y2 = b
    return 0 <= x1 <= x2 <= COORD_MAX and 0 <= y1 <= y2 <= COORD_MAX


def iou(a: Box, b: Box) -> float:
    """Intersection over union; 0 for two zero-area boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(pred: Sequence[Box], ref: Sequence[Box], threshold: float) -> int:
    """How many reference boxes a one-to-one greedy matching (highest IoU first) covers."""
    pairs = sorted(
        ((iou(p, r), i, j) for i, p in enumerate(pred) for j, r in enumerate(ref)),
        key=lambda t: -t[0],
    )
    used_p: set[int] = set()
    used_r: set[int] = set()
    for score, i, j in pairs:
        if score < threshold:
            break
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
    return len(used_r)


def _as_boxes(reference: object) -> list[Box] | None:
    if isinstance(reference, str):
        return parse_boxes(reference)
    try:
        seq = list(reference)  # type: ignore[call-overload]
        if len(seq) == 4 and all(isinstance(v, (int, float)) for v in seq):
            seq = [seq]  # one bare box
        return [tuple(float(v) for v in b) for b in seq if len(b) == 4]  # type: ignore[misc]
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class GroundingVerifier(_ScoresExtractedAnswer):
    """Boxes: reward = matched boxes / max(reference boxes, predicted boxes).

    A match is a one-to-one pairing of a predicted and a reference box with
    IoU >= threshold. GLM-4.5V Table 1 gives the reward as the share of boxes
    above the IoU threshold without saying share of what; dividing by the
    reference count alone lets a policy spam boxes (the right box plus 20
    random ones would score 1.0), so quarry divides by the larger count: every
    extra box costs reward, every missed box too, and only the exact set of
    boxes scores 1. Boxes are ``[x1, y1, x2, y2]`` in 0-1000. Any predicted
    box outside that range or inverted is ``box_out_of_range`` (reward 0: the
    model broke the format); more than `max_boxes` is ``too_many_boxes``.
    """

    threshold: float = 0.5
    max_boxes: int = MAX_BOXES
    require_box: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")

    def score(self, answer: str, reference: object) -> Verdict:
        ref = _as_boxes(reference)
        if not ref:
            return _fail(UNPARSEABLE_BOX)
        pred = parse_boxes(answer[: 64 * self.max_boxes + 64])
        if not pred:
            return _fail(UNPARSEABLE_BOX)
        if len(pred) > self.max_boxes:
            return _fail(TOO_MANY_BOXES)
        if not all(box_in_range(b) for b in pred):
            return _fail(BOX_OUT_OF_RANGE)
        share = match_boxes(pred, ref, self.threshold) / max(len(ref), len(pred))
        return RIGHT if share == 1.0 else Verdict(share, MISMATCH)


# ---------------------------------------------------------------------------
# GUI actions
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GuiAction:
    """A parsed action: `kind`, where (a box; a point is a zero-size box; None when not given) and text.

    `text` is the typed text of ``type`` and the direction of ``scroll``.
    """

    kind: str
    box: Box | None = None
    text: str = ""


_CLICK_KINDS = frozenset({"click", "double_click", "right_click", "long_press"})
_KIND_ALIASES = {"left_click": "click", "tap": "click"}  # same action, another name
_DIRECTIONS = frozenset({"up", "down", "left", "right"})
_ACTION_RE = re.compile(r"^\s*([A-Za-z_]+)\s*\((.*)\)\s*;?\s*$", re.DOTALL)
_POINT_RE = re.compile(rf"^\[?{_N},{_N}\]?$")
_BOX_ARG_RE = re.compile(rf"^\[{_N},{_N},{_N},{_N}\]$")
# A leading point argument of type/scroll: "x, y, rest" or "[x, y], rest".
_LEADING_POINT_RE = re.compile(rf"^(?:\[{_N},{_N}\]|{_N},{_N})\s*,(.*)$", re.DOTALL)
_STRING_RE = re.compile(r"""^(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')$""", re.DOTALL)
MAX_ACTION_CHARS = 10_000


def _leading_point(arg: str) -> tuple[Box | None, str]:
    """(point, the rest) when `arg` starts with a point argument, else (None, arg)."""
    m = _LEADING_POINT_RE.match(arg)
    if not m:
        return None, arg
    vals = [v for v in m.groups()[:4] if v is not None]
    x, y = float(vals[0]), float(vals[1])
    return (x, y, x, y), m.group(m.lastindex).strip()


def parse_action(text: str) -> GuiAction | None:
    """Parse one action; None when it is not in the grammar.

    The grammar is what the gui DAG writes and prompts for, plus the forms
    without a point (names case-insensitive, whitespace free, an optional ``;``)::

        click(x, y) | click([x, y]) | click([x1, y1, x2, y2])
            (also double_click, right_click, long_press; left_click and tap are click)
        type(x, y, "text") | type([x, y], "text") | type("text")
            (single or double quotes; backslash escapes \" \' \\ \n)
        scroll(x, y, "down") | scroll([x, y], down) | scroll(down)
            (up, down, left, right; quoted or not)
    """
    if not isinstance(text, str) or len(text) > MAX_ACTION_CHARS:
        return None
    m = _ACTION_RE.match(text)
    if not m:
        return None
    kind, arg = m.group(1).lower(), m.group(2).strip()
    kind = _KIND_ALIASES.get(kind, kind)
    if kind in _CLICK_KINDS:
        if p := _POINT_RE.match(arg):
            x, y = float(p.group(1)), float(p.group(2))
            return GuiAction(kind, (x, y, x, y))
        if b := _BOX_ARG_RE.match(arg):
            return GuiAction(kind, tuple(float(v) for v in b.groups()))  # type: ignore[arg-type]
        return None
    if kind == "type":
        point, rest = _leading_point(arg)
        s = _STRING_RE.match(rest)
        if not s:
            return None
        raw = s.group(1) if s.group(1) is not None else s.group(2)
        text_ = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), raw)
        return GuiAction(kind, point, text=text_)
    if kind == "scroll":
        point, rest = _leading_point(arg)
        d = rest.strip().strip("'\"").strip().lower()
        return GuiAction(kind, point, text=d) if d in _DIRECTIONS else None
    return None


def _is_point(b: Box) -> bool:
    return b[0] == b[2] and b[1] == b[3]


def _hits(got: Box, target: Box, threshold: float) -> bool:
    """A predicted point inside the target (edges included), or a predicted box with IoU >= threshold."""
    if _is_point(got):
        return target[0] <= got[0] <= target[2] and target[1] <= got[1] <= target[3]
    return iou(got, target) >= threshold


@dataclass(frozen=True)
class ActionVerifier(_ScoresExtractedAnswer):
    """Single-step GUI actions (GLM-4.5V Table 1: action match + IoU).

    The reference is an action string (same grammar; box markers are
    stripped) or a `GuiAction`. Where: the target is `target` (the element's
    box from the row's verifier spec) when set, else the reference's own box
    or point. Right when the kinds are equal (else ``action_mismatch``) and:

    - click: a predicted point lies inside the target (edges included), or a
      predicted box has IoU >= threshold with it. Without a target box the
      reference point itself must be hit: a DAG should give the box;
    - type: the typed text is equal exactly, and when the reference says
      where, the predicted point hits the target (a response without a point
      is a mismatch: it does not say which field);
    - scroll: the direction is equal; a predicted point must lie on the
      screen (0-1000), and inside the target when the reference gives a box.
    """

    threshold: float = 0.5
    target: Box | None = None
    require_box: bool = True

    def score(self, answer: str, reference: object) -> Verdict:
        if isinstance(reference, GuiAction):
            ref = reference
        else:
            unboxed = extract_answer(str(reference), require_box=False)
            ref = None if isinstance(unboxed, Verdict) else parse_action(unboxed)
        if ref is None:
            return _fail(UNPARSEABLE_ACTION)
        got = parse_action(answer)
        if got is None:
            return _fail(UNPARSEABLE_ACTION)
        if got.kind != ref.kind:
            return _fail(ACTION_MISMATCH)
        if got.box is not None and not box_in_range(got.box):
            return _fail(BOX_OUT_OF_RANGE)
        target = tuple(self.target) if self.target is not None else ref.box
        if got.kind in _CLICK_KINDS:
            assert got.box is not None and target is not None
            return RIGHT if _hits(got.box, target, self.threshold) else WRONG
        if got.text != ref.text:
            return WRONG
        if got.kind == "type" and target is not None:
            return RIGHT if got.box is not None and _hits(got.box, target, self.threshold) else WRONG
        if got.kind == "scroll" and target is not None and not _is_point(target) and got.box is not None:
            return RIGHT if _hits(got.box, target, self.threshold) else WRONG
        return RIGHT


# ---------------------------------------------------------------------------
# Registry: quarry task type -> verifier
# ---------------------------------------------------------------------------


class VerifierKind(enum.Enum):
    EXACT = "exact"
    NUMERIC = "numeric"
    OCR = "ocr"
    GROUNDING = "grounding"
    ACTION = "action"
    SVG_RENDER = "svg_render"
    HTML_RENDER = "html_render"


def _html_render(**params: object) -> Verifier:
    from quarry.operators.gui.ui_code import HtmlRenderVerifier  # Chromium only where HTML rows are graded

    return HtmlRenderVerifier(**params)  # type: ignore[arg-type]


def _svg_render(**params: object) -> Verifier:
    from quarry.operators.grade.svg_render import SvgRenderVerifier  # resvg only where SVG rows are graded

    return SvgRenderVerifier(**params)  # type: ignore[arg-type]


_FACTORIES: Mapping[VerifierKind, Callable[..., Verifier]] = {
    VerifierKind.EXACT: ExactVerifier,
    VerifierKind.NUMERIC: NumericVerifier,
    VerifierKind.OCR: OcrVerifier,
    VerifierKind.GROUNDING: GroundingVerifier,
    VerifierKind.ACTION: ActionVerifier,
    VerifierKind.SVG_RENDER: _svg_render,
    VerifierKind.HTML_RENDER: _html_render,
}

# Defaults for rows without a `verifier` spec (files made outside quarry). quarry's own DAGs name
# the rule per row (`schemas/rl.py`); `svg` here is exact match for short answers about an SVG.
TASK_VERIFIERS: Mapping[str, VerifierKind] = {
    "caption_qa": VerifierKind.EXACT,
    "imagemining": VerifierKind.EXACT,
    "visual_jump_qa": VerifierKind.EXACT,
    "exact": VerifierKind.EXACT,
    "svg": VerifierKind.EXACT,
    "image_to_svg": VerifierKind.SVG_RENDER,
    "ui_to_code": VerifierKind.HTML_RENDER,
    "numeric": VerifierKind.NUMERIC,
    "math": VerifierKind.NUMERIC,
    "ocr": VerifierKind.OCR,
    "ocr_search": VerifierKind.OCR,
    "grounding": VerifierKind.GROUNDING,
    "action": VerifierKind.ACTION,
}


def verifier_for(task: str, overrides: Mapping[str, str] | None = None) -> Verifier:
    """The verifier (default configuration) for a quarry task type.

    `overrides` maps task types to verifier kinds by name ("exact", "numeric",
    "ocr", "grounding", "action", "svg_render", "html_render"), replacing or adding to
    `TASK_VERIFIERS`. An unknown task or kind is a configuration error: ValueError.
    """
    return _FACTORIES[kind_for(task, overrides)]()


def kind_for(task: str, overrides: Mapping[str, str] | None = None) -> VerifierKind:
    """The verifier kind of a task type (`verifier_for`'s lookup); ValueError for an unknown task or kind."""
    table = dict(TASK_VERIFIERS)
    for name, kind in (overrides or {}).items():
        try:
            table[name] = VerifierKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in VerifierKind)
            raise ValueError(f"unknown verifier kind {kind!r} for task {name!r} (known: {known})") from None
    if task not in table:
        raise ValueError(f"no verifier for task {task!r} (known: {', '.join(sorted(table))})")
    return table[task]


def verifier_from_spec(kind: str, *, rel_tol: float | None = None, abs_tol: float | None = None,
                       iou: float | None = None, box: Sequence[float] | None = None,
                       viewport: str | None = None) -> Verifier:
    """The verifier a row's `verifier` spec names (`schemas/rl.py: VerifierSpec`), with its parameters.

    Unset parameters keep the rule's defaults. ValueError for an unknown kind.
    """
    k = VerifierKind(kind)
    if k is VerifierKind.NUMERIC:
        params = {"rtol": rel_tol, "atol": abs_tol}
    elif k is VerifierKind.GROUNDING:
        params = {"threshold": iou}
    elif k is VerifierKind.ACTION:
        params = {"threshold": iou, "target": tuple(float(v) for v in box) if box is not None else None}
    elif k is VerifierKind.HTML_RENDER and viewport is not None:  # WIDTHxHEIGHT@SCALE[m] (schemas/rl.py)
        size, scale = viewport.split("@")
        width, height = size.split("x")
        params = {"width": int(width), "height": int(height), "device_scale_factor": float(scale.rstrip("m")),
                  "is_mobile": scale.endswith("m")}
    else:
        params = {}
    return _FACTORIES[k](**{name: v for name, v in params.items() if v is not None})
