"""Goal-level single-step actions (GLM-5V-Turbo §4 GUI hierarchy, between single-step and trajectory-level
action prediction): an instruction that names a goal, not the element, and the action a user takes next.

Goals come only from what the page can do, seen in its own DOM:

- `form`: a form with a visible submit button (a shown label) and visible text fields, every fillable field
  of the form among them (none hidden, none already holding text), no other control invalid now (an
  unchecked required box), the fields in reading order on the screenshot (each below the last, or right of
  it on the same row). The goal gives the value of every field (the text the single-step action task types,
  `type_text`), by the kind of field ("the email address ...") or, where a kind is not unique or not known,
  by the field's shown label; the family by the button's label (sign in, sign up, subscribe, else "submit
  the "..." form"). One row per step: type into each field in order, with the earlier steps as history,
  then click the submit button.
- `search`: the same for a form whose only field is a search field: "Search for "..."".
- `cart`: an "Add to cart" (basket, bag; "Buy") button in a container (its nearest ancestor holding a
  heading) with exactly one heading and one such button; the heading names the product and no other heading
  of the page has that name: "Add the "Blue mug" to the cart." -> click the button.
- `page` / `section`: a link whose text names its destination: another page (`link_to=page`) or an element
  of this page it jumps to (`link_to=section`, the fragment's id exists), the text shown, 1-4 words, not a
  question, not a verb phrase ("Back to ...", "Read more"), no other visible control with the same text.

History: actions are in the action grammar; the screenshot is the page before any of them, and the prompt
says so. Answers and verifiers are those of the action task (`action` with the target's box).

Tier: the target's action tier (area level + crowding, `tasks.tier_for`) + 1 (the goal must be mapped to
an element), + 1 for a step that follows earlier actions, capped at very_hard.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from quarry.operators.gui.dom import Element
from quarry.operators.gui.tasks import (
    TIER_NAMES,
    TYPE_ROLES,
    Task,
    TaskSettings,
    _quote,
    area_fraction,
    boxed,
    field_kind,
    noun,
    page_words,
    task_key,
    tier_for,
    type_text,
)
from quarry.operators.gui.wording import EN, WORDINGS, Wording
from quarry.operators.ids import seeded_uniform

GOAL_ACTION = "goal_action"
GOAL_KINDS = ("form", "search", "cart", "page", "section")

FORM_FAMILIES = {
    "sign_in": ("sign in", "log in", "login", "log on", "sign on", "sign in now", "log in now"),
    "sign_up": ("sign up", "register", "create account", "create an account", "join", "join now", "sign up now"),
    "subscribe": ("subscribe", "subscribe now"),
}
CART_NAMES = {"add to cart": "cart", "add to basket": "basket", "add to bag": "bag", "add to trolley": "cart",
              "buy": "buy", "buy now": "buy"}
LINK_SKIP_FIRST = frozenset("back go return see view read learn click more here next previous prev forgot skip show "
                            "hide open close continue download sign-out logout log-out".split())
LINK_SKIP = frozenset(("sign out", "log out", "click here", "read more", "learn more", "more", "here", "link"))
ROW_TOLERANCE = 5  # units of 1000: fields "on the same row" overlap by more than this


def _text_field(e: Element) -> bool:
    return e.interactive and e.field is not None and (e.role in TYPE_ROLES or e.tag == "textarea")


def _label(e: Element) -> str:
    return re.sub(r"[\s:.!→›»>]+$", "", e.name.strip()).casefold()


def _reading_order(fields: Sequence[Element]) -> bool:
    """Each field below the previous one, or right of it on the same row (0-1000 boxes)."""
    for a, b in zip(fields, fields[1:]):
        same_row = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1]) > ROW_TOLERANCE
        if not ((same_row and b.box[0] >= a.box[2] - ROW_TOLERANCE) or b.box[1] >= a.box[3] - ROW_TOLERANCE):
            return False
    return True


def _tier(e: Element, kinds_count: dict[str, int], s: TaskSettings, after: bool) -> tuple[str, float, int]:
    similar = kinds_count[noun(e)] - 1
    area = area_fraction(e)
    level = TIER_NAMES.index(tier_for(area, similar, s.area_fractions, s.crowd_counts)) + 1 + int(after)
    return TIER_NAMES[min(len(TIER_NAMES) - 1, level)], round(area, 6), similar


def _prompt(w: Wording, goal: str, history: Sequence[str], hint: bool) -> str:
    if history:
        hist = w.history.format(lines="\n".join(f"{i}. {a}" for i, a in enumerate(history, 1)))
    else:
        hist = w.no_history
    return w.goal_prompt.format(goal=goal, history=hist, hint=w.form_hint if hint else "", suffix=w.action_suffix)


def _form_goal(submit: Element, fields: Sequence[Element], values: Sequence[str], w: Wording) -> Optional[str]:
    """The goal of filling `fields` with `values` and submitting, worded in `w`; None when a field cannot be
    named from what the screenshot shows."""
    kinds = [field_kind(f) for f in fields]
    label = _label(submit)
    if len(fields) == 1 and kinds[0] == "search":
        return w.goal_search.format(query=w.q(values[0]))
    parts = []
    for f, kind, value in zip(fields, kinds, values):
        if kind in w.field_values and kind != "labelled" and kinds.count(kind) == 1:
            parts.append(w.field_values[kind].format(value=w.q(value)))
        elif f.name and f.name_shown:
            parts.append(w.field_values["labelled"].format(value=w.q(value), name=_quote(f.name, w=w)))
        else:
            return None
    family = next((k for k, names in FORM_FAMILIES.items() if label in names), "other")
    shown = submit.name.strip()
    return w.goal_forms[family].format(label=shown if family != "other" else _quote(shown, w=w),
                                       values=w.listing(parts))


def form_goals(page_key: str, elements: Sequence[Element], words: Sequence[str]
               ) -> list[tuple[str, Element, list[Element], list[str]]]:
    """(kind, submit button, fields in order, their values) of every form the page can honestly be asked to fill."""
    out = []
    by_form: dict[str, list[Element]] = {}
    for e in elements:
        if e.form:
            by_form.setdefault(e.form, []).append(e)
    for form, members in by_form.items():
        submits = [e for e in members if e.submits and e.interactive]
        if len(submits) != 1:
            continue
        submit = submits[0]
        needs = submit.form_needs
        fields = [e for e in members if _text_field(e)]
        if (needs is None or not fields or needs.fields != len(fields) or needs.prefilled or needs.blocked
                or not (submit.name and submit.name_shown) or _label(submit) in CART_NAMES
                or not _reading_order(fields)):
            continue
        values = [type_text(page_key, f, words) for f in fields]
        if any(v is None for v in values):
            continue
        kind = "search" if len(fields) == 1 and field_kind(fields[0]) == "search" else "form"
        out.append((kind, submit, fields, values))
    return out


def _ancestors(path: str) -> list[str]:
    parts = path.split(">")
    return [">".join(parts[:i]) for i in range(len(parts) - 1, 2, -1)]  # deepest first, above html>body


def cart_goals(elements: Sequence[Element]) -> list[tuple[str, Element, Element]]:
    """(cart | basket | bag | buy, the button, the product's heading) for each product the page can add."""
    headings = [e for e in elements if (e.role == "heading" or re.fullmatch(r"h[1-6]", e.tag)) and e.name
                and e.name_shown]
    names = [h.name.strip().casefold() for h in headings]
    buttons = [e for e in elements if e.interactive and e.name_shown and _label(e) in CART_NAMES]
    out = []
    for b in buttons:
        if b.form_needs is not None and b.form_needs.blocked:
            continue
        for anc in _ancestors(b.path):
            inside = [h for h in headings if h.path.startswith(anc + ">")]
            if not inside:
                continue
            carts = [o for o in buttons if o.path.startswith(anc + ">")]
            if len(inside) == 1 and len(carts) == 1 and names.count(inside[0].name.strip().casefold()) == 1:
                out.append((CART_NAMES[_label(b)], b, inside[0]))
            break
    return out


def link_goals(elements: Sequence[Element]) -> list[tuple[str, Element]]:
    """(page | section, the link) for each link whose text names where it leads."""
    names = [e.name.strip().casefold() for e in elements if e.interactive and e.name]
    out = []
    for e in elements:
        if e.tag != "a" or not e.interactive or e.link_to not in ("page", "section") or e.name_source != "text":
            continue
        name = e.name.strip()
        words = name.split()
        if (not 1 <= len(words) <= 4 or len(name) > 40 or re.search(r"[?!:…]", name) or not re.search(r"\w", name)
                or words[0].casefold() in LINK_SKIP_FIRST or name.casefold() in LINK_SKIP
                or names.count(name.casefold()) != 1):
            continue
        out.append((e.link_to, e))
    return out


def goal_tasks(page_key: str, elements: Sequence[Element], s: TaskSettings) -> list[Task]:
    """Every goal_action task of one page (at most `s.max_per_page`, an id-seeded choice), in a stable order."""
    w = WORDINGS[s.language]
    kinds_count: dict[str, int] = {}
    for e in elements:
        kinds_count[noun(e)] = kinds_count.get(noun(e), 0) + 1
    words = page_words(elements)
    tasks: list[Task] = []

    def add(kind: str, e: Element, act: str, goal: str, goal_key: str, history: Sequence[str], hint: bool):
        tier, area, similar = _tier(e, kinds_count, s, bool(history))
        tasks.append(Task(GOAL_ACTION, _prompt(w, goal, history, hint), boxed(act), e, action=act, similar=similar,
                          area_fraction=area, tier=tier, language=w.language, goal=goal, goal_key=goal_key,
                          goal_kind=kind, history=tuple(history)))

    for kind, submit, fields, values in form_goals(page_key, elements, words):
        goal, key = _form_goal(submit, fields, values, w), _form_goal(submit, fields, values, EN)
        if goal is None or key is None:
            continue
        steps = [(f, 'type({},{},"{}")'.format(*f.center, v)) for f, v in zip(fields, values)]
        steps.append((submit, "click({},{})".format(*submit.center)))
        for i, (target, act) in enumerate(steps):
            add(kind, target, act, goal, key, [a for _, a in steps[:i]], True)
    for kind, button, heading in cart_goals(elements):
        product = _quote(heading.name, w=w)
        add("cart", button, "click({},{})".format(*button.center), w.goal_carts[kind].format(product=product),
            EN.goal_carts[kind].format(product=_quote(heading.name)), [], False)
    for kind, link in link_goals(elements):
        template = "goal_page" if kind == "page" else "goal_section"
        add(kind, link, "click({},{})".format(*link.center), getattr(w, template).format(name=_quote(link.name, w=w)),
            getattr(EN, template).format(name=_quote(link.name)), [], False)
    if len(tasks) > s.max_per_page:
        ranked = sorted(range(len(tasks)), key=lambda i: seeded_uniform(page_key, GOAL_ACTION, task_key(tasks[i])))
        keep = set(ranked[: s.max_per_page])
        tasks = [t for i, t in enumerate(tasks) if i in keep]
    return tasks
