"""The RL contract on the grading side: specs, references, gold and perturbed answers."""

from __future__ import annotations

import pytest

from quarry.operators.grade import contract
from quarry.operators.grade.verify import Verdict
from quarry.schemas.rl import VerifierSpec

B0, B1 = "<|begin_of_box|>", "<|end_of_box|>"


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ({"kind": "numeric", "rel_tol": 0.02}, VerifierSpec(kind="numeric", rel_tol=0.02)),
        ('{"kind": "grounding", "iou": 0.7}', VerifierSpec(kind="grounding", iou=0.7)),
        # a Parquet struct comes back with every field, unset ones null
        ({"kind": "ocr", "rel_tol": None, "abs_tol": None, "iou": None, "box": None, "judge": False},
         VerifierSpec(kind="ocr")),
    ],
)
def test_parse_spec(value, expected):
    assert contract.parse_spec(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ({"kind": "numeric", "tolerance": 0.1}, "Extra inputs are not permitted"),  # unknown parameter
        ({"kind": "exact", "rel_tol": 0.1}, "takes no rel_tol"),  # a parameter of another rule
        ({"kind": "ocr", "judge": True}, "takes no judge"),
        ({"kind": "regex"}, "kind"),
        ({"kind": "action", "box": [10, 10, 5, 20]}, "box must be"),
        ({"kind": "numeric", "rel_tol": -1}, "rel_tol"),
        ("not json", "not a JSON object"),
        (["exact"], "not an object"),
    ],
)
def test_parse_spec_refuses_what_would_change_a_reward_silently(value, message):
    got = contract.parse_spec(value)
    assert isinstance(got, str) and message in got


def test_resolve_override_then_row_then_task_default():
    row = VerifierSpec(kind="numeric", rel_tol=0.02)
    assert contract.resolve("chart", row, {}) == row
    assert contract.resolve("chart", row, {"chart": VerifierSpec(kind="exact")}) == VerifierSpec(kind="exact")
    assert contract.resolve("ocr", None, {}) == VerifierSpec(kind="ocr")
    assert "no verifier for task 'svg_to_image'" in contract.resolve("svg_to_image", None, {})


@pytest.mark.parametrize(
    "spec, answer, aliases, expected",
    [
        (VerifierSpec(kind="exact"), "United Kingdom", ["UK"], ["United Kingdom", "UK"]),
        (VerifierSpec(kind="exact"), '["cat", "kitten"]', [], ["cat", "kitten"]),
        (VerifierSpec(kind="exact"), "Paris", [], "Paris"),
        (VerifierSpec(kind="ocr"), "Main St.", ["Main Street"], ["Main St.", "Main Street"]),
        (VerifierSpec(kind="grounding"), f"{B0}[1,2,3,4]{B1}", [], [1, 2, 3, 4]),  # one bare box
        (VerifierSpec(kind="grounding"), "[[1,2,3,4],[5,6,7,8]]", [], [[1, 2, 3, 4], [5, 6, 7, 8]]),
        (VerifierSpec(kind="action", box=[0, 0, 10, 10]), f"{B0}click(5,5){B1}", [], "click(5,5)"),
    ],
)
def test_reference(spec, answer, aliases, expected):
    assert contract.reference(spec, answer, aliases) == expected


# Every rule: a row's own answer scores 1, the perturbed one does not (what `quarry selfcheck` relies on).
@pytest.mark.parametrize(
    "spec, answer, aliases",
    [
        (VerifierSpec(kind="exact", judge=True), "United Kingdom", ["UK"]),
        (VerifierSpec(kind="exact"), 'a text field labelled "Email"', []),
        (VerifierSpec(kind="numeric", rel_tol=0.0), "1937", []),
        (VerifierSpec(kind="numeric", rel_tol=0.01), "2737", ["2737 metre"]),
        (VerifierSpec(kind="numeric"), "0", []),
        (VerifierSpec(kind="ocr"), "SUMMER FESTIVAL\n12 JULY", []),
        (VerifierSpec(kind="ocr"), "Little", ["Littl"]),
        (VerifierSpec(kind="grounding"), f"{B0}[24,132,96,172]{B1}", []),
        (VerifierSpec(kind="grounding"), f"{B0}[0,0,1000,1000]{B1}", []),
        (VerifierSpec(kind="action", box=[801, 17, 941, 60]), f'{B0}type(871,38,"best pizza"){B1}', []),
        (VerifierSpec(kind="action", box=[64, 17, 95, 43]), f"{B0}click(80,30){B1}", []),
        (VerifierSpec(kind="action"), f'{B0}scroll(500,500,"down"){B1}', []),
        (VerifierSpec(kind="svg_render"),
         '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect width="5" height="5" fill="red"/></svg>',
         []),
    ],
)
def test_gold_scores_one_and_perturbed_does_not(spec, answer, aliases):
    verifier = contract.build(spec)
    reference = contract.reference(spec, answer, aliases)
    assert verifier(contract.gold_response(answer), reference) == Verdict(1.0, "")
    wrong = contract.perturbed_answer(spec, answer, aliases)
    assert verifier(contract.gold_response(wrong), reference).reward < 1.0, wrong


def test_unbox():
    assert contract.unbox(f"{B0}click(1,2){B1}") == "click(1,2)"
    assert contract.unbox("plain") == "plain"
    assert contract.unbox(f"{B0}unbalanced") == f"{B0}unbalanced"  # left as it is: the verifier says why


@pytest.mark.parametrize("value, expected", [(None, []), (["UK", " ", "GB"], ["UK", "GB"]), (("a",), ["a"])])
def test_parse_aliases(value, expected):
    assert contract.parse_aliases(value) == expected


@pytest.mark.parametrize("value", ["UK", [1, 2], {"a": 1}])
def test_parse_aliases_refuses_non_lists(value):
    assert isinstance(contract.parse_aliases(value), str)


def test_json_nested_beyond_the_stack_is_text_not_a_crash():
    deep = "[" * 100_000 + "]" * 100_000
    assert contract.reference(VerifierSpec(kind="exact"), deep) == deep
    assert contract.reference(VerifierSpec(kind="grounding"), deep) == deep
    assert isinstance(contract.parse_spec(deep), str)
