"""GUI tasks from one page's visible elements (GLM-5V-Turbo §4 GUI hierarchy).

- `element_perception` (referring-expression generation): a box -> what the
  element is and what it says;
- `grounding` (referring-expression comprehension): an expression -> the box;
- `action`: an instruction -> one action, `click(x,y)`, `type(x,y,"text")`
  or `scroll(x,y,"down")`, coordinates on the 0-1000 grid.

Referring expressions: the accessible name plus a noun for the role
(`the "Search" button`). When another visible element has the same noun and
name, the name alone is ambiguous and a positional rule is tried: a relation
to a uniquely named neighbour (`the "Edit" link left of the "Delete" button`;
left of / right of need overlapping rows, above / below overlapping
columns; the relation must hold for this element and for no other element
of its group), else the strict extreme of the group (`the topmost "Edit"
link`, 10 units of 1000 clear of the next). An element none of these single
out is not used for grounding or action tasks.

Tier: area level from the target's share of the screenshot (`tiers.area_fractions`,
default >= 2% level 0, >= 0.5% 1, >= 0.1% 2, >= 0.02% 3, else 4) plus a
crowding bonus from the number of other visible elements with the same role
(`tiers.crowd_counts`, default < 5: +0, < 20: +1, else +2), capped at
very_hard. Small icons on crowded pages are hard. A scroll task is very_easy.

Answers mark boxes and actions with `<|begin_of_box|>...<|end_of_box|>`.

Language (`tasks.language`, operators/gui/wording.py): tasks are chosen in English (noun groups, anchors,
seeded samples and typed text start from English keys) and then worded; a Chinese task is its English twin
with Chinese instructions and descriptions around the page's own text. English ids are what they always
were; another language's ids add `lang=<code>` (`language_parts`), so both can live in one data set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from quarry.operators.gui.dom import Element, Field
from quarry.operators.gui.wording import EN, WORDINGS, Wording
from quarry.operators.ids import content_id, seeded_uniform
from quarry.schemas.gui import TasksConfig, TierConfig
from quarry.schemas.rl import VerifierSpec

_TASKS, _TIERS = TasksConfig(), TierConfig()  # the defaults, written once in schemas/gui.py

BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"
TIER_NAMES = ("very_easy", "easy", "medium", "hard", "very_hard")
EXTREME_MARGIN = 10  # units of 1000

NOUNS = {
    "link": "link", "button": "button", "textbox": "text field", "searchbox": "search field",
    "checkbox": "checkbox", "radio": "radio button", "combobox": "drop-down", "listbox": "list box",
    "slider": "slider", "spinbutton": "number field", "img": "image", "heading": "heading",
    "navigation": "navigation bar", "tab": "tab", "menuitem": "menu item", "switch": "switch",
    "paragraph": "paragraph", "listitem": "list item", "cell": "table cell", "columnheader": "column header",
    "code": "code", "option": "option", "progressbar": "progress bar", "dialog": "dialog",
    "term": "term", "definition": "definition", "banner": "header", "contentinfo": "footer",
    "blockquote": "quotation", "separator": "separator", "table": "table", "list": "list",
    "search": "search form", "form": "form", "region": "region", "alert": "alert", "group": "group",
    "alertdialog": "dialog", "toolbar": "toolbar", "menu": "menu", "tablist": "tab list", "status": "status message",
}
TAG_NOUNS = {"span": "text", "div": "text block", "label": "label", "pre": "code block", "svg": "icon",
             "canvas": "canvas", "video": "video", "iframe": "embedded frame", "td": "table cell",
             "em": "emphasised text", "strong": "bold text", "b": "bold text", "i": "italic text",
             "small": "small text", "kbd": "key", "dt": "term", "caption": "caption", "figcaption": "caption",
             "legend": "legend", "abbr": "abbreviation", "cite": "citation", "time": "time", "mark": "highlighted text"}
TYPE_ROLES = ("textbox", "searchbox")
# Typed text by what the field asks for (`field_kind`); a search box gets words of the page itself.
FIELD_TEXTS = {
    "email": ("alex.morgan@example.com", "sam.lee@example.org", "j.rivera@example.net"),
    "password": ("Tr0ub4dor&3x", "correct-Horse-42", "N7#qLm2pWz"),
    "tel": ("555 0142", "555 0199", "555 0123"),
    "number": ("2", "3", "12"),
    "url": ("https://example.com", "https://example.org/docs"),
    "date": ("2026-03-14", "2026-07-01"),
    "time": ("09:30", "14:00"),
    "username": ("alexmorgan", "sam_lee", "jrivera"),
    "name": ("Alex Morgan", "Sam Lee", "Jo Rivera"),
    "given-name": ("Alex", "Sam", "Jo"),
    "family-name": ("Morgan", "Lee", "Rivera"),
    "postal-code": ("10115", "94103", "75001"),
    "city": ("Oslo", "Lyon", "Porto"),
    "address": ("12 Harbour Street", "4 Mill Lane"),
    "message": ("Hello, I have a question about my order.", "Thanks for the quick reply."),
}


@dataclass(frozen=True)
class Task:
    task: str
    prompt: str
    answer: str
    element: Optional[Element]
    expression: Optional[str] = None
    expression_kind: Optional[str] = None
    action: Optional[str] = None
    similar: Optional[int] = None
    area_fraction: Optional[float] = None
    tier: str = "medium"
    language: str = "en"  # of the wording (operators/gui/wording.py)
    key_expression: Optional[str] = None  # the English expression, when `expression` is worded in another language
    goal: Optional[str] = None  # goal_action (operators/gui/goals.py): the goal, worded
    goal_key: Optional[str] = None  # ... and in English (ids and seeded choices start from it)
    goal_kind: Optional[str] = None  # form | search | cart | page | section
    history: tuple[str, ...] = ()  # goal_action: the actions taken before this one


def box_text(box: Sequence[int]) -> str:
    return "[" + ",".join(str(int(v)) for v in box) + "]"


def boxed(text: str) -> str:
    return f"{BOX_OPEN}{text}{BOX_CLOSE}"


def noun(e: Element) -> str:
    if e.role and e.role in NOUNS:
        return NOUNS[e.role]
    if e.tag in TAG_NOUNS:
        return TAG_NOUNS[e.tag]
    if e.tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
        return "heading"
    if e.interactive:
        return "clickable element"
    return e.role or "element"


def _quote(name: str, limit: int = 80, w: Wording = EN) -> str:
    name = name if len(name) <= limit else name[: limit - 1].rstrip() + "…"
    return w.q(name.replace('"', "'"))


def phrase(e: Element, w: Wording = EN) -> str:
    """`"Search" button`, or the bare noun for a nameless element."""
    n = w.noun(noun(e))
    return w.phrase.format(name=_quote(e.name, w=w), noun=n) if e.name else n


def describe(e: Element, w: Wording = EN) -> str:
    """The element_perception answer: what it is and, when the screenshot shows it, what it says.

    Only what the pixels show: a name that is not on screen (aria-label, alt text, title) is left out,
    so an image is "an image", never its alt text as if it were the picture's content.
    """
    what = w.article(w.noun(noun(e)))
    if e.input_type and e.role in TYPE_ROLES and e.input_type not in ("text", "search"):
        what = w.input_type.format(what=what, type=e.input_type)
    if e.name and e.name_shown:
        name = _quote(e.name, 200, w)
        if e.name_source == "placeholder":
            what = w.placeholder.format(what=what, name=name)
        else:
            what = (w.labelled if e.interactive else w.reading).format(what=what, name=name)
    return what


# --- referring expressions ------------------------------------------------------------------


def _group_key(e: Element) -> tuple[str, str]:
    return (noun(e), e.name.strip().lower())


def _overlap(a1: float, a2: float, b1: float, b2: float) -> bool:
    return min(a2, b2) - max(a1, b1) > 0


def relation(a: Element, b: Element, rel: str) -> bool:
    """Does `a` stand in `rel` to `b` (0-1000 boxes)?"""
    ax1, ay1, ax2, ay2 = a.box
    bx1, by1, bx2, by2 = b.box
    if rel == "left of":
        return ax2 <= bx1 + 2 and _overlap(ay1, ay2, by1, by2)
    if rel == "right of":
        return ax1 >= bx2 - 2 and _overlap(ay1, ay2, by1, by2)
    if rel == "above":
        return ay2 <= by1 + 2 and _overlap(ax1, ax2, bx1, bx2)
    if rel == "below":
        return ay1 >= by2 - 2 and _overlap(ax1, ax2, bx1, bx2)
    raise ValueError(rel)


def _gap(a: Element, b: Element) -> float:
    ax1, ay1, ax2, ay2 = a.box
    bx1, by1, bx2, by2 = b.box
    dx = max(0, bx1 - ax2, ax1 - bx2)
    dy = max(0, by1 - ay2, ay1 - by2)
    return (dx * dx + dy * dy) ** 0.5


def _extreme(e: Element, group: list[Element]) -> Optional[str]:
    others = [g for g in group if g is not e]
    checks = (
        ("topmost", lambda x: x.box[1], min), ("bottommost", lambda x: x.box[3], max),
        ("leftmost", lambda x: x.box[0], min), ("rightmost", lambda x: x.box[2], max),
    )
    for word, key, pick in checks:
        mine = key(e)
        best_other = pick(key(o) for o in others)
        if (pick is min and mine + EXTREME_MARGIN <= best_other) or (pick is max and mine - EXTREME_MARGIN >= best_other):
            return word
    return None


@dataclass(frozen=True)
class Ref:
    """How an element is singled out, before wording: by its name (or role), by a relation to a uniquely named
    anchor, or as the extreme of its group."""

    kind: str  # name | role | positional
    rel: Optional[str] = None  # left of | right of | above | below, or topmost | bottommost | leftmost | rightmost
    anchor: Optional[Element] = None


def element_refs(elements: Sequence[Element], max_anchors: int = 8) -> list[Optional[Ref]]:
    """Per element: how it is singled out, or None when nothing does (decided on English nouns and names)."""
    groups: dict[tuple[str, str], list[Element]] = {}
    for e in elements:
        groups.setdefault(_group_key(e), []).append(e)
    anchors = [e for e in elements if e.name and len(groups[_group_key(e)]) == 1]
    out: list[Optional[Ref]] = []
    for e in elements:
        group = groups[_group_key(e)]
        if len(group) == 1:
            out.append(Ref("name" if e.name else "role"))
            continue
        found: Optional[Ref] = None
        for anchor in sorted((a for a in anchors if a is not e), key=lambda a: _gap(e, a))[:max_anchors]:
            for rel in ("left of", "right of", "above", "below"):
                if relation(e, anchor, rel) and not any(relation(g, anchor, rel) for g in group if g is not e):
                    found = Ref("positional", rel, anchor)
                    break
            if found:
                break
        if found is None:
            word = _extreme(e, group)
            if word:
                found = Ref("positional", word)
        out.append(found)
    return out


def expression(e: Element, ref: Ref, w: Wording = EN) -> str:
    """The referring expression of `e` singled out by `ref`, worded in `w`."""
    p = phrase(e, w)
    if ref.anchor is not None:
        return w.relations[ref.rel].format(phrase=p, anchor=w.the.format(phrase=phrase(ref.anchor, w)))
    if ref.rel is not None:
        return w.extremes[ref.rel].format(phrase=p)
    return w.the.format(phrase=p)


def referring_expressions(elements: Sequence[Element], max_anchors: int = 8, w: Wording = EN
                          ) -> list[Optional[tuple[str, str]]]:
    """Per element: (expression, kind) with kind name | positional | role, or None when ambiguous."""
    return [None if r is None else (expression(e, r, w), r.kind)
            for e, r in zip(elements, element_refs(elements, max_anchors))]


# --- tiers ----------------------------------------------------------------------------------


def area_fraction(e: Element) -> float:
    x1, y1, x2, y2 = e.box
    return max(0, x2 - x1) * max(0, y2 - y1) / 1_000_000


def tier_for(area: float, similar: int, area_fractions: Sequence[float], crowd_counts: Sequence[int]) -> str:
    level = next((i for i, a in enumerate(area_fractions) if area >= a), len(area_fractions))
    bonus = 0 if similar < crowd_counts[0] else 1 if similar < crowd_counts[1] else 2
    return TIER_NAMES[min(len(TIER_NAMES) - 1, level + bonus)]


# --- tasks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSettings:
    kinds: tuple[str, ...] = tuple(_TASKS.kinds)
    max_per_page: int = _TASKS.max_per_page
    scroll: bool = _TASKS.scroll
    area_fractions: tuple[float, ...] = tuple(_TIERS.area_fractions)
    crowd_counts: tuple[int, ...] = tuple(_TIERS.crowd_counts)
    language: str = _TASKS.language


_KIND_WORDS = (  # (kind, words in the field's name / id / autocomplete / placeholder / label), first match wins
    ("email", ("email", "e-mail")), ("password", ("password", "passwd", "pwd")),
    ("tel", ("phone", "tel", "mobile")), ("postal-code", ("zip", "postal", "postcode")),
    ("username", ("username", "user name", "login", "user id")), ("given-name", ("first name", "given")),
    ("family-name", ("last name", "surname", "family")), ("name", ("full name", "your name", "name")),
    ("city", ("city", "town")), ("address", ("address", "street")), ("url", ("website", "url", "homepage")),
    ("search", ("search", "query", "find", "keyword")),
    ("message", ("message", "comment", "question", "feedback", "note")),
)
_TYPE_KINDS = {"email": "email", "password": "password", "tel": "tel", "number": "number", "url": "url",
               "date": "date", "time": "time", "search": "search"}
_AUTOCOMPLETE = {"email": "email", "current-password": "password", "new-password": "password", "tel": "tel",
                 "tel-national": "tel", "username": "username", "name": "name", "given-name": "given-name",
                 "family-name": "family-name", "postal-code": "postal-code", "address-level2": "city",
                 "street-address": "address", "address-line1": "address", "url": "url"}
_STOP = frozenset("the and for with your you our from this that are was have has will can not all any into about "
                  "more here there what when where which who how its it's than then them they their search".split())


def field_kind(e: Element) -> str:
    """What a text field asks for: its type, then autocomplete, then words of its name, id, placeholder, label."""
    return kind_of_field(e.field or Field(type=e.input_type or "text"), e.role, e.name)


def kind_of_field(f: Field, role: Optional[str] = None, name: str = "") -> str:
    """`field_kind` from the field's attributes, its role and its accessible name (for a caller without an
    Element: operators/gui/explore.py)."""
    if f.type in _TYPE_KINDS:
        return _TYPE_KINDS[f.type]
    if f.inputmode in ("email", "tel", "url", "search"):
        return f.inputmode
    if f.inputmode in ("numeric", "decimal"):
        return "number"
    for token in f.autocomplete.lower().split():
        if token in _AUTOCOMPLETE:
            return _AUTOCOMPLETE[token]
    if role == "searchbox":
        return "search"
    words = " ".join((f.name, f.id, f.placeholder, f.label, name)).lower().replace("_", " ").replace("-", " ")
    words = words.replace("e mail", "email")
    for kind, keys in _KIND_WORDS:
        if any(re.search(rf"\b{re.escape(k)}", words) for k in keys):
            return kind
    return "message" if f.type == "textarea" else "text"


def page_words(elements: Sequence[Element]) -> list[str]:
    """Content words of the page's own visible text (headings, paragraphs, links), in page order, once each."""
    return content_words(e.name for e in elements if e.field is None and e.name and e.name_shown)


def content_words(texts: Iterable[str]) -> list[str]:
    """Content words of some shown texts, in order, once each (no stop words, 3+ letters)."""
    seen: dict[str, None] = {}
    for text in texts:
        for w in re.findall(r"[A-Za-z][A-Za-z'-]{2,}", text):
            lw = w.lower()
            if lw not in _STOP:
                seen.setdefault(lw, None)
    return list(seen)


def _fits(text: str, f: Optional[Field]) -> bool:
    if f is None:
        return True
    if f.maxlength is not None and len(text) > f.maxlength:
        return False
    if f.pattern:
        try:
            return re.fullmatch(f.pattern, text) is not None
        except re.error:
            return False  # a pattern Python cannot read: type nothing rather than text it may refuse
    return True


def type_text(page_key: str, e: Element, words: Sequence[str]) -> Optional[str]:
    """Text that fits the field (kind, pattern, maxlength, min/max), or None when none does."""
    return text_for_field(page_key, e.path, field_kind(e), e.field, words)


def text_for_field(page_key: str, path: str, kind: str, field: Optional[Field], words: Sequence[str]
                   ) -> Optional[str]:
    """`type_text` for a field of this kind at this DOM path (the seeded choice starts from page and path)."""
    u = seeded_uniform(page_key, "type", path)
    if kind in ("search", "text"):
        if len(words) < 1:
            return None
        i = int(u * len(words))
        picked = [words[i]] + ([words[(i + 1) % len(words)]] if len(words) > 1 else [])
        candidates = [" ".join(picked), picked[0]]
    elif kind == "number":
        f = field
        lo = _number(f.min) if f else None
        hi = _number(f.max) if f else None
        base = [int(x) for x in FIELD_TEXTS["number"]]
        if lo is not None:
            base = [int(lo) + 1 if hi is None or int(lo) + 1 <= hi else int(lo)] + base
        candidates = [str(v) for v in base if (lo is None or v >= lo) and (hi is None or v <= hi)]
    else:
        options = FIELD_TEXTS[kind]
        i = int(u * len(options))
        candidates = list(options[i:] + options[:i])
    for c in candidates:
        if _fits(c, field):
            return c
    return None


def _number(v: str) -> Optional[float]:
    try:
        return float(v)
    except ValueError:
        return None


def page_tasks(page_key: str, elements: Sequence[Element], scrollable: bool, s: TaskSettings) -> list[Task]:
    """Every task of one page, at most `s.max_per_page` per kind (an id-seeded choice), in a stable order.

    The tasks (targets, boxes, actions, typed text, tiers, the sample) do not depend on `s.language`; only their
    wording does."""
    w = WORDINGS[s.language]
    kinds_count: dict[str, int] = {}
    for e in elements:
        kinds_count[noun(e)] = kinds_count.get(noun(e), 0) + 1
    refs = element_refs(elements)
    words = page_words(elements)
    by_kind: dict[str, list[Task]] = {k: [] for k in s.kinds}
    lang = dict(language=w.language)
    for e, ref in zip(elements, refs):
        similar = kinds_count[noun(e)] - 1
        area = area_fraction(e)
        tier = tier_for(area, similar, s.area_fractions, s.crowd_counts)
        common = dict(element=e, similar=similar, area_fraction=round(area, 6), tier=tier, **lang)
        if "element_perception" in by_kind and ((e.name and e.name_shown) or e.tag in ("img", "svg", "canvas", "video")):
            by_kind["element_perception"].append(Task(
                "element_perception", w.perception.format(box=boxed(box_text(e.box))), describe(e, w), **common))
        if ref is None:
            continue
        expr, kind = expression(e, ref, w), ref.kind
        if w is not EN:
            common["key_expression"] = expression(e, ref)
        if "grounding" in by_kind:
            by_kind["grounding"].append(Task(
                "grounding", w.grounding.format(expr=expr),
                boxed(box_text(e.box)), expression=expr, expression_kind=kind, **common))
        if "action" in by_kind and e.interactive:
            x, y = e.center
            if e.role in TYPE_ROLES or (e.tag == "textarea"):
                text = type_text(page_key, e, words)
                if text is None:
                    continue
                act = f'type({x},{y},"{text}")'
                instr = w.type_instr.format(text=text, expr=expr)
            else:
                act = f"click({x},{y})"
                instr = w.click_instr.format(expr=expr)
            by_kind["action"].append(Task(
                "action", instr + w.joiner + w.action_suffix,
                boxed(act), expression=expr, expression_kind=kind, action=act, **common))
    if "action" in by_kind and s.scroll and scrollable:
        act = 'scroll(500,500,"down")'
        by_kind["action"].append(Task(
            "action", w.scroll_instr + w.joiner + w.action_suffix,
            boxed(act), None, expression=None, action=act, tier="very_easy", **lang))
    out: list[Task] = []
    for kind, tasks in by_kind.items():
        if len(tasks) > s.max_per_page:
            ranked = sorted(range(len(tasks)), key=lambda i: seeded_uniform(page_key, kind, task_key(tasks[i])))
            keep = set(ranked[: s.max_per_page])
            tasks = [t for i, t in enumerate(tasks) if i in keep]
        out.extend(tasks)
    return out


def verifier_spec(t: Task) -> VerifierSpec:
    """The rule that judges a task's responses (the RL contract, `schemas/rl.py`).

    grounding: box IoU; action: the action grammar with the target element's
    box, so any click inside the element is right; element_perception: exact
    match on the description, asked again of a model judge where `grade` has
    one (a description is free text: "a link reading 'Home'" and "the Home
    link" say the same).
    """
    if t.task == "grounding":
        return VerifierSpec(kind="grounding")
    if t.task in ("action", "goal_action"):
        return VerifierSpec(kind="action", box=[float(v) for v in t.element.box] if t.element else None)
    return VerifierSpec(kind="exact", judge=True)


def task_key(t: Task) -> str:
    """What the task is, in English whatever its wording (seeded choices and ids start from it)."""
    expr = t.key_expression if t.key_expression is not None else t.expression
    key = f"{t.task}|{t.element.path if t.element else '-'}|{expr or ''}|{t.action or ''}"
    return key if t.goal_key is None else f"{key}|{t.goal_key}|{len(t.history)}"


def language_parts(language: str) -> tuple[str, ...]:
    """What an id adds for its wording: nothing for English (the ids English rows always had), else the language,
    so a Chinese row's id differs from its English twin's and the two can share one data set."""
    return () if language == "en" else (f"lang={language}",)


def task_id(page_key: str, t: Task) -> str:
    return content_id("gui", page_key, task_key(t), *language_parts(t.language))
