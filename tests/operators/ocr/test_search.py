"""OCR-search tasks whose answer needs the search: name lookup, facts, refusals, trajectories."""

from __future__ import annotations

import json

import pytest

from quarry.operators.base import Rejection
from quarry.operators.imagemining.kb import KnowledgeBase
from quarry.operators.imagemining.qa import load_templates
from quarry.operators.ocr import search
from quarry.operators.trajectory import openai_messages

KB_LINES = [
    {"id": "E1", "name": "Orchard", "type": "cafe", "description": "a cafe by the harbour"},
    {"subject": "E1", "relation": "opened_in", "value": 1987, "value_type": "year"},
    {"id": "E2", "name": "South Museum", "aliases": ["S. Museum"], "type": "museum"},
    {"id": "E3", "name": "Harbour District", "aliases": ["the Harbour"], "type": "district"},
    {"subject": "E2", "relation": "located_in", "object": "E3"},
    {"subject": "E3", "relation": "located_in", "object": "E2"},  # a cycle: harmless for one-fact lookups
    {"id": "E4", "name": "Little", "type": "shop"},
    {"id": "E5", "name": "Gate", "type": "bar"}, {"id": "E6", "name": "Gate", "type": "gate"},
    {"subject": "E5", "relation": "opened_in", "value": 2001, "value_type": "year"},
]


@pytest.fixture(scope="module")
def kb():
    kb = KnowledgeBase.from_lines(json.dumps(r) for r in KB_LINES)
    return kb, search.NameIndex(kb)


@pytest.mark.parametrize("text, expected", [
    ("South Museum", True), ("Café", True), ("東京駅前", True), ("71", False), ("12 kg", False), ("45%", False),
    ("3.5 km/h", False), ("Gate 12", True), ("— 2024 —", False), ("Москва", True),
    ("北京", True), ("東京", True), ("北", False), ("12 号", False), ("かな", True),
])
def test_searchable(text, expected):
    assert search.searchable(text) == expected


def test_find_fact_entity_and_literal_answers(kb):
    got = search.find_fact(*kb, "south  MUSEUM", "seed")  # normalised whole-text match
    assert (got.entity_id, got.relation, got.answer, got.answer_aliases, got.answer_type) == \
        ("E2", "located_in", "Harbour District", ("the Harbour",), "entity")
    assert got.result == "South Museum: located in Harbour District."
    year = search.find_fact(*kb, "Orchard", "seed")
    assert (year.answer, year.answer_type) == ("1987", "year")
    assert year.result == "Orchard (a cafe by the harbour): opened in 1987."
    assert search.find_fact(*kb, "S. Museum", "x").entity_id == "E2"  # aliases are names too


@pytest.mark.parametrize("name, reason", [("Little", "no_facts"), ("Gate", "ambiguous_name")])
def test_find_fact_refusals(kb, name, reason):
    got = search.find_fact(*kb, name, "seed")
    assert isinstance(got, Rejection) and got.reason == reason


@pytest.mark.parametrize("name", ["Nowhere Street", "71", "Orchard Road"])  # not a name, a number, a longer text
def test_find_fact_none_when_no_entity_has_the_name(kb, name):
    assert search.find_fact(*kb, name, "seed") is None


def test_question_uses_the_relation_templates_and_never_shows_the_name(kb):
    templates = load_templates()
    fact = search.find_fact(*kb, "South Museum", "seed")
    q = search.search_question("label", "left", fact, templates)
    assert q == ("In which district is the museum named on the small label near the left of the image located? "
                 "Crop it to read the name, then search for it.")
    assert "South Museum" not in q and fact.answer not in q
    year = search.search_question("label", "top", search.find_fact(*kb, "Orchard", "s"), templates)
    assert year.startswith("In which year did the cafe named on the small label near the top of the image open?")


def test_chinese_wording_of_search_and_zoom_questions(kb):
    from quarry.operators.ocr.tasks import question_for

    fact = search.find_fact(*kb, "South Museum", "seed")
    q = search.search_question("label", "left", fact, load_templates(None, "zh"))
    assert q == "图片左侧附近小标签上写着名字的博物馆位于哪个区？请先裁剪读出名字，再搜索它。"
    assert {question_for("number", "top-right", f"s{i}", "zh") for i in range(20)} == {
        "图片右上方附近的小数字是多少？请放大查看。", "请读出印在图片右上方附近的小数字：是多少？"}
    assert "near the centre of the image" in question_for("label", "centre", "s", "en")


def test_check_search_leak_and_answer_in_image(kb):
    fact = search.find_fact(*kb, "South Museum", "seed")
    assert search.check_search(fact, "Which district?", "SOUTH MUSEUM open daily") is None
    leak = search.check_search(fact, "South Museum: located in Harbour District.", "")
    assert leak.reason == "search_leak"
    shown = search.check_search(fact, "q?", "South Museum, in the heart of the Harbour")  # an alias is shown
    assert shown.reason == "answer_in_image"


def test_ambiguous_regions():
    assert search.ambiguous_regions([("label", "top-right"), ("label", "top-right"), ("number", "top-right"),
                                     ("label", "left")]) == {0, 1}


def test_tool_steps_and_openai_messages(kb):
    fact = search.find_fact(*kb, "South Museum", "seed")
    steps = search.tool_steps([1, 2, 3, 4], "South Museum", fact)
    assert [(n, json.loads(a), r) for n, a, r in steps] == [
        ("crop", {"bbox": [1, 2, 3, 4]}, "South Museum"),
        ("search", {"query": "South Museum"}, "South Museum: located in Harbour District.")]
    messages = openai_messages("Q?", steps, "Harbour District")
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    call = messages[3]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "search"
    assert messages[4]["tool_call_id"] == call["id"] and messages[-1]["content"].endswith("<|end_of_box|>")
    assert [n for n, _, _ in search.tool_steps([1, 2, 3, 4], "71", None)] == ["crop"]
