"""Goal-level single-step actions (operators/gui/goals.py): goals only where the page can do them, from its
own forms, product cards and links, rendered by a real Chromium; steps in order with their history."""

from __future__ import annotations

import re

import pytest

from quarry.operators.grade import contract
from quarry.operators.gui.goals import GOAL_ACTION, cart_goals, form_goals, goal_tasks, link_goals
from quarry.operators.gui.tasks import (
    TIER_NAMES,
    TaskSettings,
    area_fraction,
    page_words,
    task_id,
    tier_for,
    verifier_spec,
)
from quarry.schemas.rl import VerifierSpec

HAN = re.compile(r"[\u4e00-\u9fff]")

PAGE = """<!doctype html><html><head><style>
body { font: 16px sans-serif; margin: 20px; } form { margin: 8px 0; padding: 6px; border: 1px solid #ccc; }
.card { display: inline-block; width: 180px; border: 1px solid #ccc; margin: 4px; padding: 6px; }
.rev { display: flex; flex-direction: column-reverse; }
</style></head><body>
<nav><a href="pricing.html">Pricing</a> <a href="about.html">About us</a> <a href="#faq">FAQ</a>
  <a href="#missing">Nowhere</a> <a href="report.pdf" download>Annual report</a> <a href="javascript:void(0)">Menu</a>
  <a href="more.html">Read more</a> <a href="a.html">Team</a> <a href="b.html">Team</a></nav>
<form id="news"><label for="ne">Newsletter email</label> <input id="ne" type="email"> <button>Subscribe</button></form>
<form id="contact"><p><label for="cn">Your name</label> <input id="cn" autocomplete="name"></p>
  <p><label for="ce">Email</label> <input id="ce" type="email"></p>
  <p><label for="cm">Message</label><br><textarea id="cm" rows="2"></textarea></p>
  <p><button type="submit">Send</button> <button type="button">Preview</button></p></form>
<form id="hidden-field"><input aria-label="Code" placeholder="Code"> <input type="text" style="display:none">
  <button>Apply</button></form>
<form id="prefilled"><input placeholder="City" value="Oslo"> <button>Find</button></form>
<form id="terms"><input placeholder="Nickname"> <label><input type="checkbox" required> I agree</label>
  <button>Join</button></form>
<form id="two-submits"><input placeholder="Coupon"> <button>Redeem</button> <button>Check</button></form>
<form id="reversed" class="rev"><input placeholder="First" name="first"><input placeholder="Second" name="second">
  <button>Go on</button></form>
<div class="card"><h3>Red pot</h3><p>1 litre.</p><button>Add to cart</button></div>
<div class="card"><h3>Green pot</h3><button>Add to basket</button></div>
<div class="card"><h3>Green pot</h3><button>Add to basket</button></div>
<h2 id="faq">FAQ</h2>
</body></html>"""


@pytest.fixture
def page(render_html):
    return render_html(PAGE, width=1280, height=900)


def test_dom_says_which_form_a_control_submits_and_where_links_lead(page):
    els = {e.name: e for e in page.elements.elements if e.interactive}
    assert els["Subscribe"].submits and els["Subscribe"].form == els["Newsletter email"].form != els["Send"].form
    assert not els["Preview"].submits and els["Send"].form_needs.fields == 3
    assert (els["Pricing"].link_to, els["FAQ"].link_to, els["Nowhere"].link_to) == ("page", "section", "same")
    assert els["Annual report"].link_to == "other" and els["Menu"].link_to == "other"
    needs = {e.name: e.form_needs for e in page.elements.elements if e.submits}
    assert needs["Apply"].fields == 2 and needs["Find"].prefilled == 1 and needs["Join"].blocked == 1


def test_only_goals_the_page_can_do(page):
    els = page.elements.elements
    forms = {s.name: (kind, [f.name for f in fields], values)
             for kind, s, fields, values in form_goals("p", els, page_words(els))}
    # hidden field, prefilled field, unchecked required box, two submit buttons, fields out of reading order: none
    assert set(forms) == {"Subscribe", "Send"}
    assert forms["Send"][1] == ["Your name", "Email", "Message"]
    carts = [(kind, b.name, h.name) for kind, b, h in cart_goals(els)]
    assert carts == [("cart", "Add to cart", "Red pot")]  # two "Green pot" cards: not one product
    links = sorted((kind, e.name) for kind, e in link_goals(els))
    assert links == [("page", "About us"), ("page", "Pricing"), ("section", "FAQ")]


def test_goal_rows_step_through_the_form_with_history(page):
    els = page.elements.elements
    tasks = goal_tasks("p", els, TaskSettings())
    assert {t.task for t in tasks} == {GOAL_ACTION}
    contact = [t for t in tasks if t.goal and t.goal.startswith('Submit the "Send" form')]
    assert [len(t.history) for t in contact] == [0, 1, 2, 3]
    assert contact[0].goal.startswith('Submit the "Send" form with the name "') and ' and the message "' in contact[0].goal
    assert [t.action.split("(")[0] for t in contact] == ["type", "type", "type", "click"]
    for i, t in enumerate(contact):
        assert list(t.history) == [c.action for c in contact[:i]]
        assert all(a in t.prompt for a in t.history) and t.goal in t.prompt
        x, y = map(int, re.match(r"\w+\((\d+),(\d+)", t.action).groups())
        b = t.element.box
        assert b[0] <= x <= b[2] and b[1] <= y <= b[3]
        spec = verifier_spec(t)
        assert spec == VerifierSpec(kind="action", box=[float(v) for v in b])
        assert contract.build(spec)(t.answer, contract.reference(spec, t.answer)).reward == 1.0
    for t in tasks:  # the action tier of the target, +1 for the goal, +1 after earlier actions
        base = tier_for(area_fraction(t.element), t.similar, TaskSettings().area_fractions, TaskSettings().crowd_counts)
        assert TIER_NAMES.index(t.tier) == min(4, TIER_NAMES.index(base) + 1 + bool(t.history))
    assert contact[-1].element.name == "Send"
    sub = next(t for t in tasks if t.goal and t.goal.startswith("Subscribe with"))
    assert re.fullmatch(r'Subscribe with the email address "[^"]+@example\.\w+"\.', sub.goal)
    assert {t.goal for t in tasks if t.goal_kind == "cart"} == {'Add the "Red pot" to the cart.'}
    assert {t.goal for t in tasks if t.goal_kind == "section"} == {'Jump to the "FAQ" section of this page.'}
    ids = [task_id("p", t) for t in tasks]
    assert len(set(ids)) == len(ids) and ids == [task_id("p", t) for t in goal_tasks("p", list(els), TaskSettings())]


def test_chinese_goals_are_the_same_goals(page):
    els = page.elements.elements
    en = goal_tasks("p", els, TaskSettings())
    zh = goal_tasks("p", els, TaskSettings(language="zh"))
    assert [(t.element.path, t.action, t.history, t.tier, t.goal_kind) for t in en] == [
        (t.element.path, t.action, t.history, t.tier, t.goal_kind) for t in zh]
    assert all(HAN.search(t.prompt) and HAN.search(t.goal) for t in zh)
    assert "把“Red pot”加入购物车。" in {t.goal for t in zh}
    assert not {task_id("p", t) for t in en} & {task_id("p", t) for t in zh}
