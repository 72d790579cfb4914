"""Critic candidates from a page's grounding and action tasks (no browser): wrong candidates are honestly wrong,
deterministic, never the truth; each verdict agrees with the task's own verifier where it judges the same thing."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from PIL import Image, ImageDraw

from quarry.operators.grade import contract
from quarry.operators.gui import critic
from quarry.operators.gui.critic import (
    CriticSettings,
    critic_candidates,
    misread,
    misreadings,
    neighbour,
    wrong_text,
)
from quarry.operators.gui.dom import Element, Field
from quarry.operators.gui.tasks import TaskSettings, page_tasks, verifier_spec

W, H = 1280, 720


def el(tag, role, name, box, interactive=False, path=None, input_type=None, name_source="text", field=None):
    x1, y1, x2, y2 = box
    css = (x1 * W / 1000, y1 * H / 1000, x2 * W / 1000, y2 * H / 1000)
    return Element(tag=tag, role=role, name=name, interactive=interactive, path=path or f"body>{tag}-{name}-{x1}-{y1}",
                   box_css=css, box_px=css, box=tuple(box), input_type=input_type, name_source=name_source,
                   field=field)


def screenshot(elements, blank=()) -> bytes:
    """A white screenshot with ink (a dark frame and a bar) inside every element's box but the `blank` ones."""
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    for e in elements:
        if e in blank:
            continue
        x1, y1, x2, y2 = e.box_px
        d.rectangle([x1, y1, x2 - 1, y2 - 1], outline=(30, 30, 30))
        d.line([x1 + 2, (y1 + y2) / 2, x2 - 3, (y1 + y2) / 2], fill=(30, 30, 30), width=2)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def login_page():
    email = el("input", "textbox", "Email address", (20, 220, 210, 250), True, path="body>form>p>input#email",
               input_type="email", name_source="label", field=Field(type="email", id="email", label="Email address"))
    pw = el("input", "textbox", "Password", (20, 300, 210, 330), True, path="body>form>p:nth-of-type(2)>input",
            input_type="password", name_source="label", field=Field(type="password", id="pw", label="Password"))
    email_label = el("label", None, "Email address", (20, 194, 107, 220), path="body>form>p>label")
    sign_in = el("input", "button", "Sign in", (20, 400, 66, 429), True, path="body>form>p:nth-of-type(4)>input",
                 name_source="value")
    forgot = el("a", "link", "Forgot your password?", (70, 400, 211, 426), True, path="body>form>p:nth-of-type(4)>a")
    heading = el("h1", "heading", "Sign in", (20, 112, 116, 164), path="body>h1")
    return [heading, email_label, email, pw, sign_in, forgot]


def run(elements, png=True, s=CriticSettings()):
    tasks = page_tasks("page", elements, False, TaskSettings(kinds=("grounding", "action")))
    return tasks, critic_candidates("page", tasks, elements, screenshot(elements) if png else None, s)


# --- neighbours -----------------------------------------------------------------------------------


def test_neighbour_is_the_nearest_other_element_with_its_own_box():
    page = login_page()
    heading, email_label, email, pw, sign_in, forgot = page
    grey = critic.screenshot_grey(screenshot(page))
    s = CriticSettings()
    assert neighbour(sign_in, page, s, grey) is forgot
    assert neighbour(forgot, page, s, grey) is sign_in
    assert neighbour(email, page, s, grey) is email_label  # the label touching the field: a box of its own
    assert neighbour(email, page, s, grey, acting=True, typing=True) is pw  # typing: only other text fields


def test_a_neighbour_never_holds_the_target_nor_overlaps_it_much():
    field = el("input", "searchbox", "Search", (800, 17, 940, 60), True, path="body>form>input")
    form = el("form", "search", "", (800, 17, 980, 60), path="body>form")  # holds the field and the button
    go = el("button", "button", "Go", (945, 17, 980, 60), True, path="body>form>button")
    twin = el("a", "link", "Search", (805, 20, 935, 58), True, path="body>a")  # IoU with the field > 0.3
    page = [form, field, go, twin]
    s = CriticSettings()
    got = neighbour(field, page, s, critic.screenshot_grey(screenshot(page)))
    assert got is go
    assert critic.iou(twin.box, field.box) >= s.max_iou and critic.iou(go.box, field.box) < s.max_iou
    assert neighbour(go, [form, go], s, None) is None  # the form holds the button's centre: not a neighbour


def test_a_blank_box_is_no_neighbour_and_far_elements_are_none():
    a = el("a", "link", "Home", (10, 10, 50, 30), True, path="a1")
    blank = el("a", "link", "Docs", (60, 10, 100, 30), True, path="a2")
    far = el("a", "link", "About", (700, 10, 760, 30), True, path="a3")
    s = CriticSettings()
    grey = critic.screenshot_grey(screenshot([a, blank, far], blank=(blank,)))
    assert critic.contrast(grey, blank.box_px) < s.min_contrast <= critic.contrast(grey, a.box_px)
    assert neighbour(a, [a, blank, far], s, grey) is None  # Docs shows nothing, About is farther than max_gap
    assert neighbour(a, [a, blank, far], replace(s, max_gap=1000), grey) is far


def test_a_label_is_no_neighbour_of_its_control_for_a_click():
    box = el("input", "checkbox", "Remember me", (22, 354, 32, 372), True, path="form>label>input",
             name_source="label")
    label = el("label", None, "Remember me", (38, 351, 131, 378), path="form>label")
    far = el("a", "link", "Help", (140, 351, 170, 378), True, path="form>a")
    page = [box, label, far]
    grey = critic.screenshot_grey(screenshot(page))
    assert neighbour(box, page, CriticSettings(), grey) is label  # grounding: the label is another box
    assert neighbour(box, page, CriticSettings(), grey, acting=True) is far  # clicking the label ticks the box


# --- misread labels -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["Sign in", "Docs", "Log in", "Add to cart", "render.height", "720", "Mugs", "OK"])
def test_misreadings_are_never_the_truth(text):
    variants = misreadings(text)
    assert variants and all(v.casefold() != text.casefold() for v, _ in variants)
    e = el("button", "button", text, (10, 10, 100, 40), True)
    got = misread("seed", e, {text.casefold()})
    assert got is not None and got[0].casefold() != text.casefold()
    assert got == misread("seed", e, {text.casefold()})  # deterministic


def test_misreadings_include_the_ocr_confusions():
    assert ("Sign ln", "lookalike") in misreadings("Sign in")
    assert ("Modem", "lookalike") in misreadings("Modern")  # rn -> m
    assert ("C0de", "lookalike") in misreadings("Code")
    assert ("Lgo in", "swap") in misreadings("Log in")
    assert ("Lg in", "drop") in misreadings("Log in")


def test_a_misreading_is_never_another_text_of_the_page():
    e = el("a", "link", "Lg", (10, 10, 50, 30), True)
    taken = {"lg"} | {v.casefold() for v, _ in misreadings("Lg")[:-1]}
    got = misread("seed", e, taken)
    assert got is not None and got[0].casefold() not in taken
    assert misread("seed", e, taken | {v.casefold() for v, _ in misreadings("Lg")}) is None


def test_hidden_names_are_not_misread():
    img = el("img", "img", "Company logo", (10, 10, 50, 50), name_source="alt")
    assert misread("seed", img, set()) is None


# --- wrong typed text -----------------------------------------------------------------------------


def test_wrong_text_is_another_fields_value_or_text_of_another_kind():
    page = login_page()
    email, pw = page[2], page[3]
    text, other = wrong_text("page", email, "sam.lee@example.org", page, ["mugs"])
    assert other is pw and "@" not in text  # the password into the email field
    text, other = wrong_text("page", pw, "Tr0ub4dor&3x", page, ["mugs"])
    assert other is email and "@" in text  # the email into the password field
    search = el("input", "searchbox", "Search mugs", (800, 17, 940, 60), True, input_type="search",
                name_source="placeholder", field=Field(type="search", placeholder="Search mugs"))
    text, what = wrong_text("page", search, "blue mug", [search], ["blue", "mug"])
    assert what == "an email address" and "@" in text
    lone_email = replace(email, path="lone")
    text, what = wrong_text("page", lone_email, "sam.lee@example.org", [lone_email], ["blue", "mug"])
    assert what in ("a search query", "a name") and "@" not in text and text != "sam.lee@example.org"


# --- candidates of a page -------------------------------------------------------------------------


def test_every_candidate_agrees_with_the_tasks_own_verifier():
    """neighbour and wrong_text candidates fail the task's verifier, correct and misread ones pass it (a misread
    candidate points at the right place but says the wrong label)."""
    tasks, cands = run(login_page())
    assert {c.error_kind for c in cands} == {"none", "neighbour", "misread_label", "wrong_text"}
    for c in cands:
        spec = verifier_spec(c.task)
        got = contract.build(spec)(c.candidate, contract.reference(spec, c.task.answer))
        assert (got.reward == 1.0) == (c.error_kind in ("none", "misread_label")), (c.error_kind, c.candidate)
        assert c.verdict == ("correct" if c.error_kind == "none" else "incorrect")
        assert c.candidate.endswith(critic.boxed(c.answer))


def test_one_positive_per_target_that_has_a_wrong_candidate():
    tasks, cands = run(login_page())
    by_target: dict[str, list] = {}
    for c in cands:
        by_target.setdefault(critic.task_key(c.task), []).append(c)
    for group in by_target.values():
        kinds = [c.error_kind for c in group]
        assert kinds.count("none") == 1 and len(kinds) >= 2 and len(set(kinds)) == len(kinds)
    assert len(by_target) == len([t for t in tasks if t.task in ("grounding", "action")])


def test_candidates_are_deterministic_and_never_the_truth():
    page = login_page()
    _, first = run(page)
    _, again = run(list(page))
    assert first == again
    for c in first:
        if c.error_kind == "neighbour":
            assert c.box != c.task.element.box and c.iou < 0.3
        if c.error_kind in ("neighbour", "wrong_text"):
            assert c.answer != critic.right_answer(c.task)
        if c.error_kind == "misread_label":
            assert c.answer == critic.right_answer(c.task) and c.candidate.split(" <|")[0] != c.task.expression


def test_reasons_name_what_is_wrong():
    _, cands = run(login_page())
    texts = {(c.task.task, c.error_kind, c.task.expression): c.reason for c in cands}
    assert texts[("grounding", "neighbour", 'the "Sign in" button')] == (
        'the box is on the "Forgot your password?" link, the instruction asks for the "Sign in" button')
    assert texts[("action", "neighbour", 'the "Email address" text field')] == (
        'the text goes into the "Password" text field, the instruction asks for the "Email address" text field')
    wrong = texts[("action", "wrong_text", 'the "Email address" text field')]
    assert wrong.startswith('the action types "') and '(the value for the "Password" text field)' in wrong
    assert texts[("action", "none", 'the "Sign in" button')] == (
        'the click lands on the "Sign in" button, which the instruction asks for')


def test_tiers_follow_the_rule():
    _, cands = run(login_page())
    for c in cands:
        if c.error_kind == "none":
            assert c.tier == c.task.tier
        elif c.error_kind == "wrong_text":
            assert c.tier == "easy"
    twin_a = el("button", "button", "Add to cart", (29, 468, 106, 511), True, path="c1>button")
    twin_b = el("button", "button", "Add to cart", (110, 468, 187, 511), True, path="c2>button")
    head = el("h2", "heading", "Blue mug", (29, 352, 129, 391), path="c1>h2")
    head2 = el("h2", "heading", "Tall mug", (110, 300, 210, 340), path="c2>h2")
    _, cands = run([head, head2, twin_a, twin_b])
    nb = {c.task.element.path: c for c in cands if c.error_kind == "neighbour" and c.task.task == "grounding"}
    assert nb["c1>button"].box == twin_b.box and nb["c1>button"].tier == "very_hard"  # a near twin
    assert "another" not in nb["c1>button"].reason and "below" in nb["c1>button"].reason  # named by its expression


def test_the_cap_keeps_whole_targets():
    _, full = run(login_page())
    _, capped = run(login_page(), s=CriticSettings(max_per_page=7))
    assert 0 < len(capped) <= 7
    keys = {critic.task_key(c.task) for c in capped}
    assert all(sum(critic.task_key(c.task) == k for c in capped) == sum(critic.task_key(c.task) == k for c in full)
               for k in keys)


def test_error_kinds_can_be_switched_off():
    _, cands = run(login_page(), s=CriticSettings(errors=("wrong_text",)))
    assert {c.error_kind for c in cands} == {"wrong_text", "none"}
    assert all(c.task.task == "action" for c in cands)


def test_with_kinds_adds_the_judged_tasks():
    assert critic.with_kinds(("critic",)) == ("grounding", "action")
    assert critic.with_kinds(("element_perception", "grounding")) == ("element_perception", "grounding")
    assert critic.with_kinds(("action", "critic")) == ("action", "grounding")


LOGIN_FORM = """<!doctype html><meta name="viewport" content="width=device-width">
<body style="font: 16px sans-serif; margin: 20px">
<h1>Sign in</h1>
<p><label for="e">Email address</label><br><input id="e" type="email" size="24"></p>
<p><label for="p">Password</label><br><input id="p" type="password" size="24"></p>
<p><input type="submit" value="Sign in"> <a href="#reset">Forgot your password?</a></p>
</body>"""


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_candidates_on_a_rendered_page_at_every_scale(render_html, scale):
    """Neighbours are checked for ink in screenshot pixels (box_px), so every scale factor finds the same ones."""
    page = render_html(LOGIN_FORM, width=390, height=844, device_scale_factor=scale, is_mobile=scale > 1)
    assert page.width == 390 * scale
    tasks = page_tasks("page", page.elements.elements, False, TaskSettings(kinds=("grounding", "action")))
    cands = critic_candidates("page", tasks, page.elements.elements, page.png, CriticSettings())
    got = {(c.task.task, c.task.expression, c.error_kind): c for c in cands}
    assert got[("grounding", 'the "Sign in" button', "neighbour")].reason.startswith(
        'the box is on the "Forgot your password?" link')
    assert got[("action", 'the "Email address" text field', "neighbour")].reason.startswith(
        'the text goes into the "Password" text field')
    assert ("action", 'the "Password" text field', "wrong_text") in got
    grey = critic.screenshot_grey(page.png)
    boxes = {e.box: e.box_px for e in page.elements.elements}
    for c in cands:
        assert critic.contrast(grey, boxes[c.box]) >= CriticSettings().min_contrast
