"""GUI tasks from elements: referring expressions, ambiguity, actions, tiers (no browser)."""

from __future__ import annotations

import re

import pytest

from quarry.operators.gui.dom import Element, Field, normalise_box
from quarry.operators.gui.tasks import (
    TaskSettings,
    describe,
    field_kind,
    page_tasks,
    page_words,
    referring_expressions,
    task_id,
    tier_for,
    type_text,
)


def el(tag, role, name, box, interactive=False, path=None, input_type=None, name_source="text", field=None):
    x1, y1, x2, y2 = box
    css = (x1 * 1.28, y1 * 0.72, x2 * 1.28, y2 * 0.72)
    return Element(tag=tag, role=role, name=name, interactive=interactive, path=path or f"{tag}-{name}-{x1}-{y1}",
                   box_css=css, box_px=css, box=tuple(box), input_type=input_type, name_source=name_source,
                   field=field)


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


def test_describe_says_only_what_the_screenshot_shows():
    # no ", interactive": being clickable is not something the pixels show
    assert describe(el("input", "textbox", "Password", (0, 0, 10, 10), True, input_type="password",
                       name_source="label")) == 'a text field (password) labelled "Password"'
    # alt text is not the picture's content; aria-labels and titles are not on screen
    assert describe(el("img", "img", "Quarry logo", (0, 0, 10, 10), name_source="alt")) == "an image"
    assert describe(el("button", "button", "Close", (0, 0, 10, 10), True, name_source="aria")) == "a button"
    assert describe(el("input", "searchbox", "Search mugs", (0, 0, 10, 10), True, input_type="search",
                       name_source="placeholder")) == 'a search field showing the placeholder "Search mugs"'
    assert describe(el("h1", "heading", "Mugs", (0, 0, 10, 10))) == 'a heading reading "Mugs"'
    assert describe(el("form", "search", "", (0, 0, 10, 10))) == "a search form"


def test_elements_named_off_screen_get_no_perception_task_but_images_do():
    page = [el("button", "button", "Close", (0, 0, 40, 40), True, name_source="aria"),
            el("img", "img", "Blue mug", (100, 0, 200, 100), name_source="alt"),
            el("h1", "heading", "Mugs", (0, 200, 300, 260))]
    got = {t.element.name: t.answer for t in page_tasks("p", page, False, TaskSettings()) if t.task == "element_perception"}
    assert got == {"Blue mug": "an image", "Mugs": 'a heading reading "Mugs"'}


def field(type="text", **kw):
    return Field(type=type, **kw)


@pytest.mark.parametrize("elem, kind", [
    (el("input", "textbox", "Email address", (0, 0, 9, 9), True, "input", "email", "label", field("email")), "email"),
    (el("input", "textbox", "Password", (0, 0, 9, 9), True, "input", "password", "label", field("password")), "password"),
    (el("input", "textbox", "Contact", (0, 0, 9, 9), True, "input", "text", "label", field(autocomplete="email")), "email"),
    (el("input", "textbox", "E-mail", (0, 0, 9, 9), True, "input", "text", "label", field(name="user_email")), "email"),
    (el("input", "spinbutton", "Qty", (0, 0, 9, 9), True, "input", "number", "label", field("number")), "number"),
    (el("input", "textbox", "Phone", (0, 0, 9, 9), True, "input", "tel", "label", field("tel")), "tel"),
    (el("input", "searchbox", "Search mugs", (0, 0, 9, 9), True, "input", "search", "aria", field("search")), "search"),
    (el("input", "textbox", "q", (0, 0, 9, 9), True, "input", "text", "placeholder",
        field(placeholder="Search the docs")), "search"),
    (el("input", "textbox", "Username", (0, 0, 9, 9), True, "input", "text", "label", field(name="username")), "username"),
    (el("textarea", "textbox", "Your message", (0, 0, 9, 9), True, "ta", None, "label", field("textarea")), "message"),
])
def test_field_kind(elem, kind):
    assert field_kind(elem) == kind


def test_typed_text_fits_the_field():
    words = ["mugs", "ceramic", "travel"]
    email = el("input", "textbox", "Email", (0, 0, 9, 9), True, "e", "email", "label", field("email"))
    assert re.fullmatch(r"[\w.]+@example\.(com|org|net)", type_text("p", email, words))
    pw = el("input", "textbox", "Password", (0, 0, 9, 9), True, "pw", "password", "label", field("password"))
    typed = type_text("p", pw, words)
    assert " " not in typed and len(typed) >= 8 and re.search(r"\d", typed)
    qty = el("input", "spinbutton", "Qty", (0, 0, 9, 9), True, "q", "number", "label", field("number", min="1", max="5"))
    assert 1 <= int(type_text("p", qty, words)) <= 5
    tel = el("input", "textbox", "Phone", (0, 0, 9, 9), True, "t", "tel", "label", field("tel"))
    assert re.fullmatch(r"[\d ]+", type_text("p", tel, words))
    search = el("input", "searchbox", "Search", (0, 0, 9, 9), True, "s", "search", "aria", field("search"))
    assert set(type_text("p", search, words).split()) <= set(words)
    zip_ = el("input", "textbox", "Code", (0, 0, 9, 9), True, "z", "text", "label", field(name="zip", pattern="[0-9]{5}"))
    assert re.fullmatch("[0-9]{5}", type_text("p", zip_, words))
    # nothing fits: no action rather than text the field would refuse
    odd = el("input", "textbox", "Code", (0, 0, 9, 9), True, "o", "text", "label", field(pattern="[A-Z]{2}-[0-9]{9}"))
    assert type_text("p", odd, words) is None
    short = el("input", "textbox", "Name", (0, 0, 9, 9), True, "n", "text", "label", field(name="name", maxlength=2))
    assert type_text("p", short, words) is None


def test_search_text_comes_from_the_page_and_password_gets_no_query():
    page = [el("h1", "heading", "Ceramic mugs", (0, 0, 300, 50)),
            el("p", "paragraph", "Holds 300 ml of tea.", (0, 60, 300, 90)),
            el("input", "searchbox", "Search mugs", (400, 0, 600, 40), True, "s", "search", "aria", field("search")),
            el("input", "textbox", "Password", (400, 100, 600, 140), True, "pw", "password", "label", field("password"))]
    words = page_words(page)
    assert words[:2] == ["ceramic", "mugs"] and "search" not in words
    acts = {t.element.name: t.action for t in page_tasks("p", page, False, TaskSettings()) if t.task == "action"}
    query = re.fullmatch(r'type\(\d+,\d+,"(.*)"\)', acts["Search mugs"]).group(1)
    assert query and set(query.split()) <= set(words)
    typed = re.fullmatch(r'type\(\d+,\d+,"(.*)"\)', acts["Password"]).group(1)
    assert " " not in typed and typed.lower() not in words


@pytest.mark.parametrize("box, size, expected", [
    ((0, 0, 1280, 720), (1280, 720), (0, 0, 1000, 1000)),
    ((128, 72, 256, 144), (1280, 720), (100, 100, 200, 200)),
    ((-5, -5, 2000, 900), (1280, 720), (0, 0, 1000, 1000)),
    ((10.4, 0, 10.6, 1), (1000, 1000), (10, 0, 11, 1)),
])
def test_normalise_box(box, size, expected):
    assert normalise_box(box, *size) == expected
