"""Verifiers: tables of (response, reference, expected reward / reason)."""

from __future__ import annotations

import time

import pytest

from quarry.operators.grade.verify import (
    ActionVerifier,
    ExactVerifier,
    GroundingVerifier,
    GuiAction,
    NumericVerifier,
    OcrVerifier,
    Verdict,
    extract_answer,
    parse_action,
    verifier_for,
)

B0, B1 = "<|begin_of_box|>", "<|end_of_box|>"


def boxed(answer: str) -> str:
    """A response in GLM's format: thinking, then a boxed answer."""
    return f"<think>Let me work it out. {B0}draft{B1}</think><answer>The answer is {B0}{answer}{B1}</answer>"


# --- extraction ---------------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        pytest.param(boxed("42"), "42", id="glm-format-box-in-thinking-ignored"),
        pytest.param(f"{B0} 42 {B1}", "42", id="bare-box-stripped"),
        pytest.param("<answer>\\boxed{\\frac{1}{2}}</answer>", "\\frac{1}{2}", id="boxed-nested-braces"),
        pytest.param("so \\boxed{{a}{b}} done", "{a}{b}", id="boxed-deep-nesting"),
        pytest.param(f"<think>{B0}1{B1} {B0}2{B1}</think>{B0}3{B1}", "3", id="after-think-without-answer-tag"),
        pytest.param(f"<answer>{B0}7{B1}", "7", id="answer-not-closed"),
        pytest.param("The answer is 42.", "no_box", id="no-box"),
        pytest.param("<think>…</think><answer>42</answer>", "no_box", id="answer-tag-but-no-box"),
        pytest.param(f"{B0}1{B1} or {B0}2{B1}", "multiple_boxes", id="two-glm-boxes"),
        pytest.param("\\boxed{1} and \\boxed{2}", "multiple_boxes", id="two-latex-boxes"),
        pytest.param(f"{B0}1", "unbalanced_box", id="begin-without-end"),
        pytest.param(f"1{B1}", "unbalanced_box", id="end-without-begin"),
        pytest.param(f"{B1}1{B0}", "unbalanced_box", id="end-before-begin"),
        pytest.param(f"{B0}{B0}1{B1}{B1}", "unbalanced_box", id="nested-glm-boxes"),
        pytest.param("\\boxed{\\frac{1}{2}", "unbalanced_box", id="boxed-unclosed-brace"),
        pytest.param("", "no_box", id="empty"),
    ],
)
def test_extract_answer(response, expected):
    out = extract_answer(response)
    got = out.reason if isinstance(out, Verdict) else out
    assert got == expected


def test_extract_answer_without_box_requirement():
    assert extract_answer("<think>x</think><answer> 42 </answer>", require_box=False) == "42"


# --- numeric ------------------------------------------------------------------

NUMERIC = NumericVerifier()


@pytest.mark.parametrize(
    "answer, reference, reward, reason",
    [
        ("43", "43.0", 1.0, ""),
        ("43", 43, 1.0, ""),
        ("0.1", 0.1, 1.0, ""),
        ("43.00001", "43", 1.0, ""),  # within rtol 1e-6 of 43 (4.3e-5)
        ("43.001", "43", 0.0, "mismatch"),
        ("-7", "7", 0.0, "mismatch"),
        ("1,000", "1000", 1.0, ""),
        ("1,234,567.5", "1234567.5", 1.0, ""),
        ("3/4", "0.75", 1.0, ""),
        ("\\frac{3}{4}", "0.75", 1.0, ""),
        ("-\\frac{1}{2}", "-0.5", 1.0, ""),
        ("1/3", "0.3333333", 1.0, ""),
        ("1/3", "0.33", 0.0, "mismatch"),
        ("1/0", "1", 0.0, "nan"),  # undefined, like nan
        ("\\frac{1}{0}", "1", 0.0, "nan"),
        ("50%", "50%", 1.0, ""),
        ("50", "50%", 1.0, ""),  # reference has %: the bare value ...
        ("0.5", "50%", 1.0, ""),  # ... and value / 100 are both right
        ("0.5%", "50%", 0.0, "mismatch"),  # both carry %: compared as written
        ("50%", "0.5", 1.0, ""),  # reference has no %: 50% means 0.5
        ("50%", "50", 0.0, "mismatch"),
        ("50\\%", "0.5", 1.0, ""),
        ("3.2e5", "320000", 1.0, ""),
        ("3.2E-3", "0.0032", 1.0, ""),
        ("3.2 \\times 10^{5}", "320000", 1.0, ""),
        ("3.2×10^-3", "0.0032", 1.0, ""),
        ("0", "0.0", 1.0, ""),
        ("1e-12", "0", 1.0, ""),  # absolute tolerance near zero
        ("1e-6", "0", 0.0, "mismatch"),
        ("5 cm", "5", 1.0, ""),  # reference without a unit
        ("5 cm", "5 cm", 1.0, ""),
        ("5", "5 cm", 1.0, ""),
        ("9.8 m/s^2", "9.8 m/s^2", 1.0, ""),
        ("12 \\text{kg}", "12 kg", 1.0, ""),
        ("5 cm", "5 m", 0.0, "unit_mismatch"),
        ("30°", "30", 1.0, ""),
        ("$5", "5", 1.0, ""),
        ("x = 5", "5", 1.0, ""),
        ("$\\frac{1}{2}$", "0.5", 1.0, ""),
        # through SymPy
        ("\\sqrt{2}", "1.41421356", 1.0, ""),
        ("\\frac{\\sqrt{2}}{2}", "sqrt(2)/2", 1.0, ""),
        ("2\\pi", "6.283185307", 1.0, ""),
        ("\\sqrt[3]{27}", "3", 1.0, ""),
        ("2^{10}", "1024", 1.0, ""),
        ("x + 1", "2", 0.0, "unparseable_number"),  # free symbols: not a value
        ("__import__('os').system('true')", "1", 0.0, "unparseable_number"),
        ("1.5.3", "1.5", 0.0, "unparseable_number"),
        ("forty-two", "42", 0.0, "unparseable_number"),
        # pathological
        ("1e999", "1e999", 1.0, ""),  # exact decimals: finite, no overflow
        ("1e999", "5", 0.0, "mismatch"),
        ("1e999", "1e998", 0.0, "mismatch"),
        ("nan", "nan", 0.0, "nan"),  # nan never equals
        ("NaN", "5", 0.0, "nan"),
        ("inf", "\\infty", 1.0, ""),
        ("-inf", "inf", 0.0, "mismatch"),
        ("inf", "1e999", 0.0, "mismatch"),
        ("9" * 10_000, "9" * 10_000, 0.0, "unparseable_number"),  # over the length cap
        ("9" * 900, "9" * 900, 1.0, ""),
    ],
)
def test_numeric(answer, reference, reward, reason):
    assert NUMERIC(boxed(answer), reference) == Verdict(reward, reason)


def test_numeric_reference_nan_is_not_right():
    assert NUMERIC(boxed("nan"), "nan").reward == 0.0
    assert NUMERIC(boxed("5"), "nan").reason == "nan"


def test_numeric_tolerance_is_configurable():
    assert NumericVerifier(rtol=1e-2)(boxed("101"), "100").reward == 1.0
    assert NumericVerifier()(boxed("101"), "100").reward == 0.0


# Per-task relative tolerance (GLM-4.5V Table 1: relative tolerance, except years) and aliases.
@pytest.mark.parametrize(
    "answer, reference, rtol, reward, reason",
    [
        ("71", "70", 0.02, 1.0, ""),  # a chart value read to 1.4%
        ("73", "70", 0.02, 0.0, "mismatch"),
        ("0.702", "0.7", 0.02, 1.0, ""),
        ("1991", "1990", 0.0, 0.0, "mismatch"),  # years are exact: rel_tol 0
        ("1990.0", "1990", 0.0, 1.0, ""),
        ("12 kg", ["12000 g", "12"], 1e-6, 1.0, ""),  # aliases: any one is right
        ("13", ["12000", "12"], 1e-6, 0.0, "mismatch"),
        ("x", ["12"], 1e-6, 0.0, "unparseable_number"),
    ],
)
def test_numeric_tolerance_and_aliases(answer, reference, rtol, reward, reason):
    assert NumericVerifier(rtol=rtol)(boxed(answer), reference) == Verdict(reward, reason)


@pytest.mark.parametrize(
    "bomb",
    [
        pytest.param("2**2**2**2**2**2", id="power-tower"),
        pytest.param("10^{10^{10}}", id="latex-power-tower"),
    ],
)
def test_sympy_bomb_times_out_in_bounded_time(bomb):
    verifier = NumericVerifier(timeout_s=1.0)
    assert verifier(boxed("\\sqrt{4}"), "2").reward == 1.0  # warm the worker: start-up is not the timeout
    start = time.perf_counter()
    out = verifier(boxed(bomb), "1")
    assert out == Verdict(0.0, "timeout")
    assert time.perf_counter() - start < 3.0
    # The worker was killed and comes back for the next answer.
    assert verifier(boxed("\\sqrt{9}"), "3").reward == 1.0


# --- OCR ------------------------------------------------------------------------

OCR = OcrVerifier()


@pytest.mark.parametrize(
    "answer, reference, reward",
    [
        ("Hello World", "Hello World", 1.0),
        ("43", "43.0", 0.5),  # no numeric equivalence: 2 insertions / 4
        ("hello world", "Hello World", 1 - 2 / 11),  # case counts
        ("abc", "", 0.0),
        ("kitten", "sitting", 1 - 3 / 7),
        ("收据总额", "收据总额", 1.0),
    ],
)
def test_ocr(answer, reference, reward):
    out = OCR(boxed(answer), reference)
    assert out.reward == pytest.approx(reward)
    assert out.reason == ("" if reward == 1.0 else "mismatch")


def test_ocr_takes_the_best_alias():
    assert OCR(boxed("Main St."), ["Main Street", "Main St."]) == Verdict(1.0, "")
    out = OCR(boxed("Main St"), ["Main Street", "Main St."])
    assert out.reward == pytest.approx(1 - 1 / 8) and out.reason == "mismatch"


def test_ocr_empty_both_and_too_long():
    assert OCR(f"{B0}{B1}", "") == Verdict(1.0, "")
    assert OCR(boxed("x" * 30_000), "x").reason == "too_long"
    assert OCR("no box here", "x").reason == "no_box"


# --- exact match ------------------------------------------------------------------

EXACT = ExactVerifier()


@pytest.mark.parametrize(
    "answer, reference, reward",
    [
        ("Paris", "paris", 1.0),
        ("  Paris. ", "Paris", 1.0),
        ('"Paris"', "Paris", 1.0),
        ("The Eiffel  Tower", "eiffel tower", 1.0),  # leading article and whitespace
        ("a cat", "cat", 1.0),
        ("NYC", ["New York City", "NYC", "New York"], 1.0),  # aliases
        ("Boston", ["New York City", "NYC"], 0.0),
        ("U.S.", "US", 0.0),  # inner punctuation counts
        ("cats", "cat", 0.0),
        ("43", "43.0", 0.0),
        ("43", 43, 1.0),  # a non-string reference is compared as its text
    ],
)
def test_exact(answer, reference, reward):
    assert EXACT(boxed(answer), reference).reward == reward


# --- grounding ----------------------------------------------------------------------

GROUND = GroundingVerifier()
REF2 = [[100, 100, 300, 300], [500, 500, 700, 700]]


@pytest.mark.parametrize(
    "answer, reference, reward, reason",
    [
        ("[100, 100, 300, 300]", [[100, 100, 300, 300]], 1.0, ""),
        ("[100,100,300,300]", [100, 100, 300, 300], 1.0, ""),  # a bare reference box
        ("[110, 110, 310, 310]", "[100, 100, 300, 300]", 1.0, ""),  # IoU 0.82, string reference
        ("[200, 200, 400, 400]", [[100, 100, 300, 300]], 0.0, "mismatch"),  # IoU 0.14
        ("[100, 100, 300, 300] and [500, 500, 700, 700]", REF2, 1.0, ""),
        ("[500, 500, 700, 700]", REF2, 0.5, "mismatch"),
        ("[100, 100, 300, 300], [100, 100, 300, 300]", REF2, 0.5, "mismatch"),  # one-to-one
        ("(100, 100, 300, 300) (510, 510, 700, 700)", REF2, 1.0, ""),
        # extra boxes cost reward: matched / max(reference, predicted)
        ("(100, 100, 300, 300) (510, 510, 700, 700) [0, 0, 10, 10]", REF2, 2 / 3, "mismatch"),
        ("[100, 100, 300, 300] " + " ".join(f"[{i}, {i}, {i + 5}, {i + 5}]" for i in range(400, 420)),
         [[100, 100, 300, 300]], 1 / 21, "mismatch"),
        ("[0, 0, 1000, 1000]", [[0, 0, 1000, 1000]], 1.0, ""),
        ("[0, 0, 1001, 500]", [[0, 0, 1000, 500]], 0.0, "box_out_of_range"),
        ("[-5, 0, 100, 100]", [[0, 0, 100, 100]], 0.0, "box_out_of_range"),
        ("[300, 100, 100, 300]", [[100, 100, 300, 300]], 0.0, "box_out_of_range"),  # x2 < x1
        ("the dog on the left", [[0, 0, 10, 10]], 0.0, "unparseable_box"),
        ("[1, 2, 3]", [[0, 0, 10, 10]], 0.0, "unparseable_box"),
        (" ".join(["[0, 0, 10, 10]"] * 101), [[0, 0, 10, 10]], 0.0, "too_many_boxes"),
    ],
)
def test_grounding(answer, reference, reward, reason):
    assert GROUND(boxed(answer), reference) == Verdict(reward, reason)


def test_grounding_threshold_is_configurable():
    assert GroundingVerifier(threshold=0.1)(boxed("[200, 200, 400, 400]"), [[100, 100, 300, 300]]).reward == 1.0


# --- GUI actions ----------------------------------------------------------------------

ACTION = ActionVerifier()
TARGET = "click([100, 200, 300, 400])"
BOXED_TYPE = boxed('type(510,300,"hello world")')


@pytest.mark.parametrize(
    "answer, reference, reward, reason",
    [
        ("click(150, 250)", TARGET, 1.0, ""),
        ("click([150, 250])", TARGET, 1.0, ""),
        ("CLICK( 100 , 400 );", TARGET, 1.0, ""),  # on the edge counts
        ("click(99, 250)", TARGET, 0.0, "mismatch"),
        ("click([110, 210, 290, 390])", TARGET, 1.0, ""),  # box IoU 0.81
        ("click([250, 350, 450, 550])", TARGET, 0.0, "mismatch"),
        ("double_click(150, 250)", TARGET, 0.0, "action_mismatch"),
        ("type(\"hello\")", TARGET, 0.0, "action_mismatch"),
        ("click(1500, 250)", TARGET, 0.0, "box_out_of_range"),
        # the forms the gui DAG writes: a point before the text or direction, box markers on the reference
        ('type(510, 300, "hello world")', BOXED_TYPE, 1.0, ""),
        ('type([510, 300], "hello world")', BOXED_TYPE, 1.0, ""),
        ('type(510, 300, "hello")', BOXED_TYPE, 0.0, "mismatch"),
        ('type("hello world")', BOXED_TYPE, 0.0, "mismatch"),  # a reference with a point needs one
        ('scroll(500, 500, "down")', boxed('scroll(500,500,"down")'), 1.0, ""),
        ("scroll(10, 990, down)", 'scroll(500,500,"down")', 1.0, ""),  # anywhere on the page scrolls it
        ('scroll(500, 500, "up")', 'scroll(500,500,"down")', 0.0, "mismatch"),
        ("scroll(down)", 'scroll(500,500,"down")', 1.0, ""),
        ('scroll(500, 1200, "down")', 'scroll(500,500,"down")', 0.0, "box_out_of_range"),
        ("click(510, 300)", boxed("click(510,300)"), 1.0, ""),
        ("left_click(150, 250)", TARGET, 1.0, ""),
        ("tap(150, 250)", TARGET, 1.0, ""),
        ("type(\"hello world\")", "type('hello world')", 1.0, ""),
        ("type('say \\'hi\\'')", 'type("say \'hi\'")', 1.0, ""),
        ("type(\"Hello world\")", "type('hello world')", 0.0, "mismatch"),
        ("scroll(down)", "scroll('down')", 1.0, ""),
        ("scroll(up)", "scroll(down)", 0.0, "mismatch"),
        ("scroll(sideways)", "scroll(down)", 0.0, "unparseable_action"),
        ("click(150)", TARGET, 0.0, "unparseable_action"),
        ("click(150, 250", TARGET, 0.0, "unparseable_action"),
        ("type(hello)", "type('hello')", 0.0, "unparseable_action"),
        ("I would click the button", TARGET, 0.0, "unparseable_action"),
        ("drag(1, 2)", TARGET, 0.0, "unparseable_action"),
    ],
)
def test_action(answer, reference, reward, reason):
    assert ACTION(boxed(answer), reference) == Verdict(reward, reason)


# A target box from the row's verifier spec: a click inside the element but off its centre is right.
@pytest.mark.parametrize(
    "answer, reference, target, reward, reason",
    [
        ("click(510, 300)", "click(510,300)", (400, 280, 620, 320), 1.0, ""),
        ("click(401, 281)", "click(510,300)", (400, 280, 620, 320), 1.0, ""),  # off centre, inside
        ("click(399, 300)", "click(510,300)", (400, 280, 620, 320), 0.0, "mismatch"),
        ("click([400, 280, 620, 320])", "click(510,300)", (400, 280, 620, 320), 1.0, ""),  # box IoU 1
        ("click([0, 0, 1000, 1000])", "click(510,300)", (400, 280, 620, 320), 0.0, "mismatch"),  # no spamming
        ('type(450, 310, "Oslo")', 'type(510,300,"Oslo")', (400, 280, 620, 320), 1.0, ""),
        ('type(450, 100, "Oslo")', 'type(510,300,"Oslo")', (400, 280, 620, 320), 0.0, "mismatch"),
        ('scroll(450, 310, "down")', 'scroll(510,300,"down")', (400, 280, 620, 320), 1.0, ""),
        ('scroll(450, 900, "down")', 'scroll(510,300,"down")', (400, 280, 620, 320), 0.0, "mismatch"),
    ],
)
def test_action_with_target_box(answer, reference, target, reward, reason):
    assert ActionVerifier(target=target)(boxed(answer), boxed(reference)) == Verdict(reward, reason)


def test_action_reference_as_dataclass():
    assert parse_action(TARGET) == GuiAction("click", (100.0, 200.0, 300.0, 400.0))
    assert ACTION(boxed("click(150, 250)"), GuiAction("click", (100, 200, 300, 400))).reward == 1.0


# --- registry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, kind",
    [
        ("caption_qa", ExactVerifier),
        ("imagemining", ExactVerifier),
        ("exact", ExactVerifier),
        ("svg", ExactVerifier),
        ("numeric", NumericVerifier),
        ("math", NumericVerifier),
        ("ocr", OcrVerifier),
        ("ocr_search", OcrVerifier),
        ("grounding", GroundingVerifier),
        ("action", ActionVerifier),
    ],
)
def test_verifier_for_defaults(task, kind):
    assert isinstance(verifier_for(task), kind)


def test_verifier_for_overrides_and_errors():
    assert isinstance(verifier_for("svg", {"svg": "ocr"}), OcrVerifier)
    assert isinstance(verifier_for("chart", {"chart": "numeric"}), NumericVerifier)
    with pytest.raises(ValueError, match="no verifier"):
        verifier_for("unknown_task")
    with pytest.raises(ValueError, match="unknown verifier kind"):
        verifier_for("svg", {"svg": "judge"})


def test_verifiers_never_raise_on_junk():
    junk = ["", "\x00" * 50, B0 * 3, "\\boxed{" * 1000, "}" * 1000, "🙂" * 100, "[" * 500, "(" * 500]
    verifiers = [verifier_for(t) for t in ("exact", "numeric", "ocr", "grounding", "action")]
    refs = ["42", "42", "42", [[0, 0, 10, 10]], TARGET]
    for text in junk:
        for v, ref in zip(verifiers, refs):
            for response in (text, boxed(text)):
                out = v(response, ref)
                assert isinstance(out, Verdict) and 0.0 <= out.reward <= 1.0


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param("1 " + "a" * 990 + "!", id="letter-run"),
        pytest.param("1" + " a" * 495 + "!", id="spaced-letters"),
        pytest.param("1" * 500 + "." * 499, id="digits-and-dots"),
        pytest.param("\\frac{" * 300 + "1", id="open-fracs"),
    ],
)
def test_numeric_regexes_do_not_backtrack(answer):
    start = time.perf_counter()
    assert NUMERIC(boxed(answer), "1").reward == 0.0
    assert time.perf_counter() - start < 0.5
