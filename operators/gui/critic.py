"""Critic data (GLM-5V-Turbo §4: critic data aimed at misread details and wrong targets).

For each grounding and action task of a page, candidate answers a model could
give, each judged against the screenshot: a verdict (`correct` /
`incorrect`), the kind of error and a one-sentence reason. A candidate is
what a model says it found (the task's referring expression) followed by its
box or action in box markers, in the conventions of the task's own answer
(0-1000 grid): `the "Sign in" button <|begin_of_box|>click(42,414)<|end_of_box|>`.

Wrong candidates, each only where the page supplies one honestly:

- `neighbour`: the answer on the nearest other visible element (by edge gap,
  then centre distance) that is interactive or shows its text (for type
  actions: the nearest other text field), with that element's real box: a
  box of its own (IoU with the target < `max_iou`), neither box holding the
  other's centre, the click point outside the target, and ink on the
  screenshot inside it (grey levels spread >= `min_contrast`), so it is a
  different element a person can see;
- `misread_label`: the target's box or action, but said of a misread label:
  the target's visible text with one OCR-style confusion (look-alike glyphs
  l/1/I, O/0, rn/m, cl/d, vv/w, ... or a dropped or swapped letter), chosen
  by a seed of the page and element; never the true text (case-folded) nor
  the text of another element of the page. The box is right, the reading is
  not: a candidate is correct only when what it says and where it points are
  both right;
- `wrong_text`: type actions only: the right field with text that does not
  fit it: the value another field of the page gets (its password into the
  email field), else a value of another kind (words of the page into an email
  field, an email address into a search box); never the instruction's text.

Positives: one correct candidate (the task's own answer) per target that has
at least one wrong candidate, so between a quarter and a half of critic rows
are `correct`.

Tier rule: a correct candidate keeps the tier of its task (judging it is as
hard as finding the target). `wrong_text`: easy (the typed text differs from
the instruction's). `misread_label`: hard for a look-alike glyph (l/1, O/0,
rn/m), medium for a dropped or swapped letter. `neighbour`: easy, +1 when the
two boxes are near (edge gap <= `near` units of 1000), +1 when the neighbour
is the same kind of element (a link beside a link), +1 when it also has the
same name (the other "Add to cart" button), capped at very_hard.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from PIL import Image

from quarry.operators.gui.dom import Element
from quarry.operators.gui.tasks import (
    FIELD_TEXTS,
    TIER_NAMES,
    TYPE_ROLES,
    Task,
    _quote,
    box_text,
    boxed,
    field_kind,
    language_parts,
    noun,
    page_words,
    phrase,
    referring_expressions,
    task_key,
    type_text,
)
from quarry.operators.gui.wording import EN, WORDINGS, Wording
from quarry.operators.ids import content_id, seeded_uniform
from quarry.schemas.gui import CriticConfig, TasksConfig
from quarry.schemas.rl import VerifierSpec

CORRECT, INCORRECT = "correct", "incorrect"
NONE, NEIGHBOUR, MISREAD, WRONG_TEXT = "none", "neighbour", "misread_label", "wrong_text"
ERROR_KINDS = (NEIGHBOUR, MISREAD, WRONG_TEXT)
JUDGED = ("grounding", "action")  # the tasks critic rows judge

# OCR-style confusions: (what is printed, what a misreading gives); each is a look-alike in common UI fonts.
LOOKALIKES = (
    ("rn", "m"), ("m", "rn"), ("l", "1"), ("1", "l"), ("I", "l"), ("l", "I"), ("O", "0"), ("0", "O"),
    ("o", "0"), ("cl", "d"), ("d", "cl"), ("vv", "w"), ("w", "vv"), ("S", "5"), ("5", "S"), ("B", "8"),
    ("8", "B"), ("e", "c"), ("c", "e"), ("i", "l"), ("g", "q"), ("u", "v"), ("n", "h"), ("h", "n"), ("t", "f"),
)
MISREAD_SPAN = 70  # confusions only within the first characters of a name (expressions quote 80 at most)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


_CRITIC = CriticConfig()  # the defaults, written once in schemas/gui.py


@dataclass(frozen=True)
class CriticSettings:
    errors: tuple[str, ...] = tuple(_CRITIC.errors)
    max_iou: float = _CRITIC.max_iou
    min_contrast: int = _CRITIC.min_contrast
    near: int = _CRITIC.near
    max_gap: int = _CRITIC.max_gap
    max_per_page: int = TasksConfig().max_per_page
    language: str = TasksConfig().language


@dataclass(frozen=True)
class Candidate:
    """One candidate answer to a grounding or action task, judged."""

    task: Task  # the task judged
    error_kind: str  # none | neighbour | misread_label | wrong_text
    candidate: str  # what the candidate says, then its box or action in box markers
    answer: str  # the candidate's box or action, unmarked
    box: tuple[int, int, int, int]  # 0-1000 box of the element the candidate points at
    iou: float  # of `box` with the target's box
    reason: str
    tier: str

    @property
    def verdict(self) -> str:
        return CORRECT if self.error_kind == NONE else INCORRECT


# --- geometry and pixels ------------------------------------------------------------------------


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _inside(p: tuple[float, float], b: Sequence[float]) -> bool:
    return b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3]


def _centre(b: Sequence[float]) -> tuple[float, float]:
    return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)


def edge_gap(a: Sequence[float], b: Sequence[float]) -> float:
    dx = max(0.0, b[0] - a[2], a[0] - b[2])
    dy = max(0.0, b[1] - a[3], a[1] - b[3])
    return (dx * dx + dy * dy) ** 0.5


def _centre_distance(a: Sequence[float], b: Sequence[float]) -> float:
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    return ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5


def screenshot_grey(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as im:
        return im.convert("L")


def contrast(grey: Image.Image, box_px: Sequence[float]) -> int:
    """Spread of grey levels inside a screenshot-pixel box (0 for a blank or empty box)."""
    x1, y1 = max(0, int(box_px[0])), max(0, int(box_px[1]))
    x2, y2 = min(grey.width, int(round(box_px[2]))), min(grey.height, int(round(box_px[3])))
    if x2 <= x1 or y2 <= y1:
        return 0
    lo, hi = grey.crop((x1, y1, x2, y2)).getextrema()
    return int(hi) - int(lo)


# --- candidates ---------------------------------------------------------------------------------


def _acts_for(o: Element, target: Element) -> bool:
    """Would clicking `o` act on `target`? (a descendant of it, or its label: a click on a label is one on its
    control)"""
    if o.path.startswith(target.path + ">"):
        return True
    return o.tag == "label" and (target.path.startswith(o.path + ">")
                                 or (target.name_source == "label" and o.name.strip() == target.name.strip()))


def neighbour(target: Element, elements: Sequence[Element], s: CriticSettings, grey: Optional[Image.Image],
              acting: bool = False, typing: bool = False) -> Optional[Element]:
    """The nearest other element (within `s.max_gap`) that is honestly a different, visible element, or None.

    `acting`: for an action task, so an element whose click acts on the target (its label) is no neighbour.
    """
    def eligible(o: Element) -> bool:
        if o.path == target.path or edge_gap(o.box, target.box) > s.max_gap:
            return False
        if acting and _acts_for(o, target):
            return False
        if typing:
            if not (o.role in TYPE_ROLES or o.tag == "textarea"):
                return False
        elif not (o.interactive or (o.name and o.name_shown)):
            return False
        if iou(o.box, target.box) >= s.max_iou:
            return False
        if _inside(_centre(o.box), target.box) or _inside(_centre(target.box), o.box):
            return False  # one holds the other (a form around its field, a paragraph around its link)
        if o.box[2] <= o.box[0] or o.box[3] <= o.box[1]:
            return False
        return grey is None or contrast(grey, o.box_px) >= s.min_contrast

    ranked = sorted((o for o in elements if eligible(o)),
                    key=lambda o: (edge_gap(o.box, target.box), _centre_distance(o.box, target.box), o.path))
    return ranked[0] if ranked else None


def misreadings(text: str) -> list[tuple[str, str]]:
    """Every one-confusion misreading of `text`: (variant, lookalike | drop | swap), in a stable order."""
    out: list[tuple[str, str]] = []
    span = min(len(text), MISREAD_SPAN)
    for a, b in LOOKALIKES:
        start = text.find(a)
        while 0 <= start < span:
            out.append((text[:start] + b + text[start + len(a):], "lookalike"))
            start = text.find(a, start + 1)
    for i in range(1, span):
        if text[i].isalnum() and text[i - 1].isalnum():
            out.append((text[:i] + text[i + 1:], "drop"))
        if i + 1 < len(text) and text[i].isalnum() and text[i + 1].isalnum() and text[i] != text[i + 1]:
            out.append((text[:i] + text[i + 1] + text[i] + text[i + 2:], "swap"))
    return out


def misread(seed: str, target: Element, taken: set[str]) -> Optional[tuple[str, str]]:
    """A misreading of the target's visible text (seeded by `seed` and the element), never the truth nor a text
    of the page (`taken`, case-folded); (variant, lookalike | drop | swap), or None."""
    if not (target.name and target.name_shown) or len(target.name) < 2:
        return None
    truth = target.name.casefold()
    found = [(v, k) for v, k in misreadings(target.name)
             if v.casefold() != truth and v.casefold() not in taken and v.strip() == v and v]
    if not found:
        return None
    looks = [c for c in found if c[1] == "lookalike"]
    edits = [c for c in found if c[1] != "lookalike"]
    family = looks if looks and (not edits or seeded_uniform(seed, "misread-family", target.path) < 0.5) else edits
    return family[int(seeded_uniform(seed, "misread", target.path) * len(family))]


def _fits_kind(text: str, kind: str) -> bool:
    """Could `text` be what a field of this kind asks for? (only kinds with a recognisable form)"""
    if kind == "email":
        return bool(_EMAIL.match(text))
    if kind in ("tel", "number", "postal-code"):
        return bool(re.fullmatch(r"[0-9 +().-]+", text))
    if kind == "url":
        return text.startswith(("http://", "https://"))
    if kind in ("date", "time"):
        return bool(re.fullmatch(r"[0-9:-]+", text))
    return False  # free text: nothing is recognisably of its kind; the instruction's text decides


def wrong_text(page_key: str, target: Element, right: str, elements: Sequence[Element], words: Sequence[str]
               ) -> Optional[tuple[str, Union[Element, str]]]:
    """(text, the other field it is for | what it is) that does not fit the target field, or None: another
    field's value first."""
    kind = field_kind(target)
    bad = {right.casefold()}
    for o in elements:  # another field's value: what a model that mixes up fields types
        if o.path == target.path or not (o.role in TYPE_ROLES or o.tag == "textarea"):
            continue
        if field_kind(o) == kind:
            continue
        text = type_text(page_key, o, words)
        if text and text.casefold() not in bad and not _fits_kind(text, kind):
            return text, o
    u = seeded_uniform(page_key, "wrong-text", target.path)
    if kind in ("search", "text", "message"):
        pool = [(t, "an email address") for t in FIELD_TEXTS["email"]]
    else:
        query = " ".join(words[int(u * len(words)):][:2]) if words else ""
        pool = ([(query, "a search query")] if query else []) + [(t, "a name") for t in FIELD_TEXTS["name"]]
    pool = [(t, what) for t, what in pool if t.casefold() not in bad and not _fits_kind(t, kind) and '"' not in t]
    return pool[int(u * len(pool))] if pool else None


def _name(e: Element, exprs: dict[str, Optional[str]], target: Element, w: Wording = EN) -> str:
    """How a reason names an element: its referring expression, else its phrase."""
    expr = exprs.get(e.path)
    if expr:
        return expr
    same = noun(e) == noun(target) and e.name.strip().lower() == target.name.strip().lower()
    return (w.another if same else w.other).format(phrase=phrase(e, w))


def _level(tier: str) -> int:
    return TIER_NAMES.index(tier)


def right_answer(t: Task) -> str:
    """The task's own answer without box markers: the action, or the target's box."""
    return t.action if t.task == "action" else box_text(t.element.box)


def _claim(t: Task, answer: str, expression: Optional[str] = None) -> str:
    return f"{expression or t.expression} {boxed(answer)}"


def _where(t: Task, typing: bool, what: str, w: Wording = EN) -> str:
    """Where the candidate points: at `what` (an element's expression or phrase)."""
    return w.where["grounding" if t.task == "grounding" else "type" if typing else "click"].format(x=what)


def target_candidates(page_key: str, t: Task, elements: Sequence[Element], exprs: dict[str, Optional[str]],
                      taken: set[str], words: Sequence[str], grey: Optional[Image.Image], s: CriticSettings
                      ) -> list[Candidate]:
    w = WORDINGS[t.language]
    """The candidates of one grounding or action task: the wrong ones the page supplies, then the right one
    (only when there is a wrong one)."""
    e = t.element
    if e is None or t.expression is None:
        return []
    typing = bool(t.action and t.action.startswith("type("))
    right = right_answer(t)
    typed = re.match(r'type\(\d+,\d+,"(.*)"\)$', t.action).group(1) if typing else None
    wrong: list[Candidate] = []

    if NEIGHBOUR in s.errors:
        n = neighbour(e, elements, s, grey, acting=t.task == "action", typing=typing)
        point = n.center if n else None
        if n is not None and not (t.task == "action" and _inside(point, e.box)):
            if t.task == "grounding":
                ans = box_text(n.box)
            elif typing:
                ans = f'type({point[0]},{point[1]},"{typed}")'
            else:
                ans = f"click({point[0]},{point[1]})"
            level = (1 + (edge_gap(n.box, e.box) <= s.near) + (noun(n) == noun(e))
                     + (noun(n) == noun(e) and n.name.strip().lower() == e.name.strip().lower()))
            wrong.append(Candidate(t, NEIGHBOUR, _claim(t, ans), ans, n.box, round(iou(n.box, e.box), 4),
                                   w.neighbour_reason.format(located=_where(t, typing, _name(n, exprs, e, w), w),
                                                             expr=t.expression),
                                   TIER_NAMES[min(4, level)]))

    if MISREAD in s.errors:
        m = misread(f"{page_key}|{task_key(t)}", e, taken)
        quoted = _quote(e.name, w=w) if e.name else ""
        if m is not None and quoted and quoted in t.expression:
            variant, how = m
            said = t.expression.replace(quoted, _quote(variant, w=w), 1)
            if said != t.expression:
                what = w.misread_what["label" if e.interactive else "text"]
                wrong.append(Candidate(t, MISREAD, _claim(t, right, said), right, e.box, 1.0,
                                       w.misread_reason.format(what=what, variant=_quote(variant, w=w), truth=quoted),
                                       TIER_NAMES[3 if how == "lookalike" else 2]))

    if WRONG_TEXT in s.errors and typing:
        found = wrong_text(page_key, e, typed, elements, words)
        if found is not None:
            text, what = found
            if isinstance(what, Element):
                what = w.value_for.format(expr=exprs.get(what.path) or w.the.format(phrase=phrase(what, w)))
            else:
                what = w.text_kinds[what]
            x, y = e.center
            ans = f'type({x},{y},"{text}")'
            wrong.append(Candidate(t, WRONG_TEXT, _claim(t, ans), ans, e.box, 1.0,
                                   w.wrong_text_reason.format(text=text, what=what, expr=t.expression, typed=typed),
                                   TIER_NAMES[1]))
    if not wrong:
        return []
    positive = Candidate(t, NONE, _claim(t, right), right, e.box, 1.0,
                         w.positive_reason.format(located=_where(t, typing, t.expression, w)), t.tier)
    return wrong + [positive]


def critic_candidates(page_key: str, tasks: Sequence[Task], elements: Sequence[Element], png: Optional[bytes],
                      s: CriticSettings) -> list[Candidate]:
    """Every critic candidate of one page's grounding and action tasks, at most `s.max_per_page` (whole targets,
    an id-seeded choice), in a stable order."""
    w = WORDINGS[s.language]
    exprs = {e.path: (x[0] if x else None) for e, x in zip(elements, referring_expressions(elements, w=w))}
    taken = {e.name.casefold() for e in elements if e.name}
    words = page_words(elements)
    grey = screenshot_grey(png) if png is not None else None
    groups = [g for t in tasks if t.task in JUDGED
              for g in [target_candidates(page_key, t, elements, exprs, taken, words, grey, s)] if g]
    if sum(len(g) for g in groups) > s.max_per_page:
        order = sorted(range(len(groups)), key=lambda i: seeded_uniform(page_key, "critic", task_key(groups[i][0].task)))
        keep, n = set(), 0
        for i in order:
            if n + len(groups[i]) > s.max_per_page:
                continue
            keep.add(i)
            n += len(groups[i])
        groups = [g for i, g in enumerate(groups) if i in keep]
    return [c for g in groups for c in g]


CRITIC_PROMPT = EN.critic_prompt  # each language's in operators/gui/wording.py


def question(c: Candidate) -> str:
    return WORDINGS[c.task.language].critic_prompt.format(task=c.task.prompt, candidate=c.candidate)


def answer(c: Candidate) -> str:
    """The row's answer: the verdict, in the task's language (`verdict` keeps the English word)."""
    return WORDINGS[c.task.language].verdicts[c.verdict]


def verifier_spec() -> VerifierSpec:
    """Critic rows are judged by exact match on the verdict word (no model judge: the answer is one of two)."""
    return VerifierSpec(kind="exact")


def candidate_id(page_key: str, c: Candidate) -> str:
    return content_id("gui-critic", page_key, task_key(c.task), c.error_kind, c.candidate,
                      *language_parts(c.task.language))


def with_kinds(tasks_kinds: tuple[str, ...]) -> tuple[str, ...]:
    """The task kinds a page must make for critic rows too (critic judges grounding and action tasks)."""
    base = tuple(k for k in tasks_kinds if k != "critic")
    return base + tuple(k for k in JUDGED if k not in base) if "critic" in tasks_kinds else base

