"""GUI tasks from elements: referring expressions, ambiguity, actions, tiers (no browser)."""

from __future__ import annotations

import pytest

from quarry.operators.gui.dom import Element, normalise_box
from quarry.operators.gui.tasks import (
    TaskSettings,
    describe,
    page_tasks,
    referring_expressions,
    task_id,
    tier_for,
)


def el(tag, role, name, box, interactive=False, path=None, input_type=None):
    x1, y1, x2, y2 = box
    css = (x1 * 1.28, y1 * 0.72, x2 * 1.28, y2 * 0.72)
    return Element(tag=tag, role=role, name=name, interactive=interactive, path=path or f"{tag}-{name}-{x1}-{y1}",
                   box_css=css, box_px=css, box=tuple(box), input_type=input_type)


def test_unique_names_use_the_name():
    go = el("button", "button", "Go", (500, 10, 540, 40), True)
    field = el("input", "searchbox", "Search", (300, 10, 490, 40), True, input_type="search")
    assert referring_expressions([go, field]) == [('the "Go" button', "name"), ('the "Search" search field', "name")]


def test_same_name_gets_a_positional_expression_from_a_unique_neighbour():
    a = el("h2", "heading", "Blue mug", (10, 100, 200, 130))
    b = el("h2", "heading", "Tall mug", (300, 100, 500, 130))
    cart1 = el("button", "button", "Add to cart", (10, 200, 100, 230), True)
    cart2 = el("button", "button", "Add to cart", (300, 200, 390, 230), True)
    exprs = referring_expressions([a, b, cart1, cart2])
    assert exprs[2] == ('the "Add to cart" button below the "Blue mug" heading', "positional")
    assert exprs[3] == ('the "Add to cart" button below the "Tall mug" heading', "positional")


def test_extreme_rule_when_no_neighbour_separates():
    top = el("a", "link", "Edit", (10, 10, 60, 30), True)
    bottom = el("a", "link", "Edit", (10, 500, 60, 520), True)
    exprs = referring_expressions([top, bottom])
    assert exprs == [('the topmost "Edit" link', "positional"), ('the bottommost "Edit" link', "positional")]


def test_truly_ambiguous_elements_get_no_expression_and_no_grounding_or_action():
    # Two identical boxes (one above the other in z-order is impossible here: same spot)
    # and no named neighbour: nothing singles either out.
    a = el("a", "link", "More", (10, 10, 60, 30), True, path="p1")
    b = el("a", "link", "More", (12, 12, 62, 32), True, path="p2")
    assert referring_expressions([a, b]) == [None, None]
    tasks = page_tasks("page", [a, b], False, TaskSettings())
    assert {t.task for t in tasks} == {"element_perception"}


def test_actions_click_and_type_at_the_centre():
    link = el("a", "link", "Docs", (100, 20, 140, 40), True)
    field = el("input", "textbox", "Email", (100, 100, 300, 140), True, input_type="email")
    heading = el("h1", "heading", "Welcome", (10, 200, 500, 260))
    tasks = page_tasks("page-1", [link, field, heading], True, TaskSettings())
    actions = {t.expression: t.action for t in tasks if t.task == "action"}
    assert actions['the "Docs" link'] == "click(120,30)"
    assert actions['the "Email" text field'].startswith('type(200,120,"')
    assert actions[None] == 'scroll(500,500,"down")'
    assert 'the "Welcome" heading' not in actions  # not interactive
    grounding = {t.expression: t.answer for t in tasks if t.task == "grounding"}
    assert grounding['the "Welcome" heading'] == "<|begin_of_box|>[10,200,500,260]<|end_of_box|>"
    perception = [t for t in tasks if t.task == "element_perception" and t.element is link]
    assert "<|begin_of_box|>[100,20,140,40]<|end_of_box|>" in perception[0].prompt
    assert perception[0].answer == 'a link labelled "Docs"'


def test_tasks_and_ids_are_stable_and_capped():
    elements = [el("a", "link", f"Item {i}", (10, 10 + 20 * i, 200, 25 + 20 * i), True) for i in range(30)]
    s = TaskSettings(max_per_page=5)
    first = page_tasks("page", elements, False, s)
    again = page_tasks("page", list(elements), False, s)
    assert [task_id("page", t) for t in first] == [task_id("page", t) for t in again]
    assert len([t for t in first if t.task == "grounding"]) == 5
    assert len({task_id("page", t) for t in first}) == len(first)


@pytest.mark.parametrize("area, similar, tier", [
    (0.10, 0, "very_easy"),
    (0.01, 0, "easy"),
    (0.01, 7, "medium"),
    (0.002, 0, "medium"),
    (0.0005, 3, "hard"),
    (0.0001, 0, "very_hard"),
    (0.0005, 40, "very_hard"),
])
def test_tier_rule(area, similar, tier):
    assert tier_for(area, similar, (0.02, 0.005, 0.001, 0.0002), (5, 20)) == tier


def test_describe():
    assert describe(el("input", "textbox", "Password", (0, 0, 10, 10), True, input_type="password")) == \
        'a text field (password) labelled "Password", interactive'
    assert describe(el("img", "img", "Quarry logo", (0, 0, 10, 10))) == 'an image labelled "Quarry logo"'


@pytest.mark.parametrize("box, size, expected", [
    ((0, 0, 1280, 720), (1280, 720), (0, 0, 1000, 1000)),
    ((128, 72, 256, 144), (1280, 720), (100, 100, 200, 200)),
    ((-5, -5, 2000, 900), (1280, 720), (0, 0, 1000, 1000)),
    ((10.4, 0, 10.6, 1), (1000, 1000), (10, 0, 11, 1)),
])
def test_normalise_box(box, size, expected):
    assert normalise_box(box, *size) == expected
