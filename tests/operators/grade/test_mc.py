"""Multiple choice -> fill in the blank: tables of (input, expected answer or rejection detail)."""

from __future__ import annotations

import pytest

from quarry.operators.base import Rejection
from quarry.operators.grade.mc import FillIn, refers_to_other_options, strip_options, to_fill_in

ANIMALS = ["cat", "dog", "cow", "horse"]
Q = "What animal is in the picture?"


@pytest.mark.parametrize(
    "options, answer, expected",
    [
        pytest.param(ANIMALS, "B", "dog", id="letter"),
        pytest.param(ANIMALS, "(b)", "dog", id="letter-parenthesised-lowercase"),
        pytest.param(ANIMALS, "C.", "cow", id="letter-dot"),
        pytest.param(ANIMALS, "Option D", "horse", id="option-letter"),
        pytest.param(ANIMALS, 0, "cat", id="index-0-based"),
        pytest.param(ANIMALS, "Dog", "dog", id="option-text-case"),
        pytest.param(["12", "15", "18"], "15", "15", id="numeric-option-text"),
        pytest.param(["a red car", "a blue bus"], "a red car", "a red car", id="text-starting-with-a"),
        pytest.param(["All of the above", "x"], "B", "x", id="wrong-option-is-all-of-above-but-answer-fine"),
        # Rejections: (detail prefix)
        pytest.param(ANIMALS + ["All of the above"], "E", "refers_to_options", id="all-of-the-above"),
        pytest.param(ANIMALS + ["None of these"], 4, "refers_to_options", id="none-of-these"),
        pytest.param(["x", "y", "Both A and B"], "C", "refers_to_options", id="both-a-and-b"),
        pytest.param(["x", "y", "A and B"], "C", "refers_to_options", id="a-and-b"),
        pytest.param(["x", "y", "z", "Only C"], "D", "refers_to_options", id="only-c"),
        pytest.param(["x", "y", "B"], "C", "refers_to_options", id="bare-letter-option"),
        pytest.param(["x", "y", "neither of the options"], "C", "refers_to_options", id="neither-of-options"),
        pytest.param(["x", "  ", "z"], "B", "empty_option", id="empty-option"),
        pytest.param(ANIMALS, "F", "unknown_answer", id="letter-out-of-range"),
        pytest.param(ANIMALS, 7, "unknown_answer", id="index-out-of-range"),
        pytest.param(ANIMALS, "giraffe", "unknown_answer", id="text-not-an-option"),
        pytest.param(["B", "A"], "A", "ambiguous_answer", id="letter-and-text-disagree"),
        pytest.param(["cat", "Cat", "dog"], "A", "duplicate_options", id="duplicate-options"),
        pytest.param([], "A", "no_options", id="no-options"),
    ],
)
def test_to_fill_in(options, answer, expected):
    out = to_fill_in(Q, options, answer)
    if isinstance(out, FillIn):
        assert out.answer == expected
        assert out.question == Q
        assert out.original_options == tuple(options)
        assert out.original_answer == str(answer)
    else:
        assert isinstance(out, Rejection)
        assert out.reason == "mc_not_convertible"
        assert out.detail.startswith(expected), out.detail


@pytest.mark.parametrize(
    "question, expected",
    [
        pytest.param("What is shown?\nA. cat\nB. dog", "What is shown?", id="options-on-lines"),
        pytest.param("What is shown? (A) cat (B) dog", "What is shown?", id="options-inline"),
        pytest.param(
            "What is shown?\nA: cat\nB: dog\nAnswer with the option's letter from the given choices directly.",
            "What is shown?",
            id="llava-style-instruction",
        ),
        pytest.param("What is shown?", "What is shown?", id="no-options-in-text"),
        pytest.param("A cat is shown. What colour is it?", "A cat is shown. What colour is it?", id="a-cat-not-a-marker"),
    ],
)
def test_strip_options(question, expected):
    assert strip_options(question, ["cat", "dog"]) == expected


@pytest.mark.parametrize(
    "question",
    [
        pytest.param("Which of the following is a fruit?", id="which-of-the-following"),
        pytest.param("Which of the options best describes the chart?", id="of-the-options"),
        pytest.param("Is option B correct?", id="names-an-option"),
    ],
)
def test_question_that_needs_its_options(question):
    out = to_fill_in(question, ["apple", "car"], "A")
    assert isinstance(out, Rejection) and out.detail.startswith("question_needs_options")


@pytest.mark.parametrize(
    "option, expected",
    [
        ("all of the above", True),
        ("Both of them", True),
        ("A, B and D", True),
        ("a cat and a dog", False),  # "a" is an article here, "cat"/"dog" are words
        ("Vitamin A", False),
        ("B", True),
        ("42", False),
    ],
)
def test_refers_to_other_options(option, expected):
    assert refers_to_other_options(option, 4) is expected
