"""Visual-Jump multi-hop QA (GLM-5V-Turbo §3.3): paths, questions, filters, tags, tiers.

Plain Python, no Beam. For one image with linked KB entities:

1. **Knowledge discovery** (`walk_paths`): from each image entity, depth-first
   over facts whose relation has a template, paths of `min_hops`..`max_hops`
   hops; no entity twice (cycles), no walking *through* a hub (degree above
   `max_degree`), literals end a path. A (subject, relation) with several
   objects is never walked past; the path that reaches it is kept, marked,
   so `ambiguous_answer` can reject it (the data says why). A relation is
   walked twice in a row only when its template words the pair (`twice`).
   **Visual hops in the middle** (`visual_paths`): KB hops to an entity that
   another picture of the input shows with a box (`ImageView`), the entity
   immediately left/right/above/below it there, then KB hops to the answer;
   the question shows both pictures ("In the second picture, find ...").
2. **QA reconstruction** (`build_question`): the image entity is only "the
   <type noun> in this picture" (or "... at the left of this picture" when
   the image shows several of its type and boxes tell them apart), every bridge
   entity only a relation phrase around the previous one, from `Templates`
   (a YAML/JSON data file, per language, relation and subject type).
3. **Quality filters** (`Filters.check`), each a reason code, in this order:
   - `trivial`: fewer than `min_hops` hops, or the answer readable in the
     image's OCR text;
   - `ambiguous_answer`: a hop with several objects;
   - `ambiguous_reference`: the image reference matches several image
     entities that lead to different answers, or a visual hop's "immediately
     to the right of it" fits two entities of the second picture;
   - `name_leak`: a normalised name or alias of the image entity, a bridge
     entity or the answer appears (whole words) in the question;
   - a rewritten question is also `name_leak` when it names any KB entity
     the template question did not (entity linker), and `lost_image_reference`
     when it no longer refers to the image (none of the language's image words);
   - `text_shortcut`: the question's text alone (the image entity's type and
     the typed relation chain) admits one answer: every KB entity of that type
     whose chain resolves leads to the same answer, so the image is not needed.
     Counted once per (type, chain) and cached. With a visual hop both parts
     are checked: the chain before it (does the first picture matter?) and
     after it (from the entity the second picture shows);
   - `visual_shortcut`: a visual hop the question does not need (no other
     entity in the second picture leads elsewhere the same way);
   - `search_leak`: a search result of the trajectory holds the question.
   Near-duplicate questions are found by `near_duplicates` (rapidfuzz).
4. **Tagging** (`tag`) and **tiers** (`tier_for`), rules in their docstrings.
"""

from __future__ import annotations

import importlib.resources
import json
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml
from rapidfuzz import fuzz

from quarry.operators.base import Rejection
from quarry.operators.ids import content_id
from quarry.operators.imagemining.kb import KnowledgeBase, Literal, Object, contains_phrase, normalise
from quarry.operators.inputs.opening import read_text
from quarry.schemas.imagemining import QaSection
from quarry.schemas.rl import answer_verifier
from quarry.schemas.trajectory import CROP_RESULT_IMAGE

TRIVIAL = "trivial"
AMBIGUOUS = "ambiguous_answer"
NAME_LEAK = "name_leak"
LOST_IMAGE = "lost_image_reference"
TEXT_SHORTCUT = "text_shortcut"
NEAR_DUPLICATE = "near_duplicate"
AMBIGUOUS_REFERENCE = "ambiguous_reference"
VISUAL_SHORTCUT = "visual_shortcut"
SEARCH_LEAK = "search_leak"
FILTER_REASONS: tuple[str, ...] = (TRIVIAL, AMBIGUOUS, NAME_LEAK, LOST_IMAGE, TEXT_SHORTCUT, AMBIGUOUS_REFERENCE,
                                   VISUAL_SHORTCUT, SEARCH_LEAK)  # `Filters.check`
REASONS: tuple[str, ...] = FILTER_REASONS + (NEAR_DUPLICATE,)
_QA = QaSection()  # the defaults, written once in schemas/imagemining.py

CATEGORIES = ("recognition", "spatio-temporal", "event", "text-based", "visual search")
DOMAINS = ("social", "entertainment", "products", "places", "rich text", "nature", "science")
_DEFAULT_TEMPLATES = "data/imagemining/templates.yaml"
_MAX_RESOLVE = 256  # objects followed per hop when resolving a chain from a candidate
_WALK_BUDGET = 8  # paths enumerated per wanted path before the walk stops


# --------------------------------------------------------------------------- templates


class TemplateError(ValueError):
    """A templates file that cannot be used (one line, for the CLI)."""


@dataclass(frozen=True)
class RelationTemplate:
    phrase: str
    question: Optional[str] = None
    # the relation applied twice in a row ("the grandparent taxon of {subject}"); {middle_noun} is the noun of the
    # object in between. Without it a path never repeats the relation (it would read "the parent taxon of the
    # parent taxon of ...").
    twice: Optional["RelationTemplate"] = None


@dataclass(frozen=True)
class VisualTemplates:
    """Wording of questions over two pictures (a visual hop in the middle of the chain); a language without
    them gets no such questions."""

    first_reference: str  # "the {noun} in the first picture"
    first_reference_at: str  # "the {noun} at the {position} of the first picture"
    find: str  # "In the second picture, find {subject}."
    neighbour: str  # "the {noun} {direction} it"
    directions: dict[str, str]  # left/right/above/below -> "immediately to the left of", ...


@dataclass(frozen=True)
class Templates:
    language: str
    image_reference: str
    image_reference_at: str
    question: str
    image_words: tuple[str, ...]
    positions: dict[str, str]
    nouns: dict[str, str]
    relations: dict[str, RelationTemplate]
    domains: dict[str, str]
    categories: dict[str, str]
    relation_aliases: dict[str, str]
    visual: Optional[VisualTemplates] = None

    def canonical(self, relation: str) -> str:
        return self.relation_aliases.get(relation, relation)

    def relation(self, relation: str, subject_type: str) -> Optional[RelationTemplate]:
        rel = self.canonical(relation)
        return self.relations.get(f"{rel}@{subject_type}") or self.relations.get(rel)

    def noun(self, etype: str) -> str:
        return self.nouns.get(etype, etype.replace("_", " "))

    def category(self, relation: str) -> str:
        return self.categories.get(self.canonical(relation), "recognition")


def fill_template(template: str, **values: str) -> str:
    """Replace `{name}` placeholders literally (names and phrases may hold braces)."""
    out = template
    for k, v in values.items():
        out = out.replace("{" + k + "}", v)
    return out


def load_templates(path: Optional[str] = None, language: str = _QA.language) -> Templates:
    """The templates of one language from a YAML/JSON file (the shipped one when `path` is None)."""
    where = path or _DEFAULT_TEMPLATES
    try:
        if path is None:
            text = importlib.resources.files("quarry.operators").joinpath(_DEFAULT_TEMPLATES).read_text("utf-8")
        else:
            text = read_text(path)  # any Beam path: remote workers read a gs:// file
        data = json.loads(text) if where.endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise TemplateError(f"templates {where}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    except (OSError, ValueError) as e:  # unreadable, too large, not UTF-8
        raise TemplateError(f"templates {where}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("languages"), dict):
        raise TemplateError(f"templates {where}: expected a mapping with a `languages` section")
    lang = data["languages"].get(language)
    if not isinstance(lang, dict):
        raise TemplateError(f"templates {where}: no language {language!r} (has {sorted(data['languages'])})")
    def relation_template(name: str, t: Any) -> RelationTemplate:
        if not isinstance(t, dict) or not isinstance(t.get("phrase"), str) or "{subject}" not in t["phrase"]:
            raise TemplateError(f"templates {where}: relation {name!r} needs a `phrase` with {{subject}}")
        q = t.get("question")
        if q is not None and (not isinstance(q, str) or "{subject}" not in q):
            raise TemplateError(f"templates {where}: relation {name!r}: `question` needs {{subject}}")
        twice = relation_template(f"{name}.twice", t["twice"]) if t.get("twice") is not None else None
        return RelationTemplate(t["phrase"], q, twice)

    relations = {str(name): relation_template(str(name), t) for name, t in (lang.get("relations") or {}).items()}
    for key in ("image_reference", "image_reference_at", "question"):
        if not isinstance(lang.get(key), str):
            raise TemplateError(f"templates {where}: language {language!r} lacks `{key}`")
    if "{noun}" not in lang["image_reference"] or "{phrase}" not in lang["question"]:
        raise TemplateError(f"templates {where}: image_reference needs {{noun}}, question needs {{phrase}}")
    return Templates(
        language=language,
        image_reference=lang["image_reference"],
        image_reference_at=lang["image_reference_at"],
        question=lang["question"],
        image_words=tuple(normalise(w) for w in lang.get("image_words") or ()),
        positions={str(k): str(v) for k, v in (lang.get("positions") or {}).items()},
        nouns={str(k): str(v) for k, v in (lang.get("nouns") or {}).items()},
        relations=relations,
        domains={str(k): str(v) for k, v in (data.get("domains") or {}).items()},
        categories={str(k): str(v) for k, v in (data.get("categories") or {}).items()},
        relation_aliases={str(k): str(v) for k, v in (data.get("relation_aliases") or {}).items()},
        visual=_visual_templates(lang.get("two_pictures"), where, language),
    )


def _visual_templates(section: Any, where: str, language: str) -> Optional[VisualTemplates]:
    if section is None:
        return None
    need = {"first_reference": "{noun}", "first_reference_at": "{position}", "find": "{subject}",
            "neighbour": "{direction}"}
    if not isinstance(section, dict) or any(not isinstance(section.get(k), str) or v not in section[k]
                                            for k, v in need.items()):
        raise TemplateError(f"templates {where}: {language}.two_pictures needs "
                            + ", ".join(f"{k} (with {v})" for k, v in need.items()))
    directions = section.get("directions") or {}
    if not isinstance(directions, dict) or set(directions) != set(DIRECTIONS):
        raise TemplateError(f"templates {where}: {language}.two_pictures.directions needs {', '.join(DIRECTIONS)}")
    return VisualTemplates(section["first_reference"], section["first_reference_at"], section["find"],
                           section["neighbour"], {str(k): str(v) for k, v in directions.items()})


# --------------------------------------------------------------------------- images and paths

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageEntity:
    """A KB entity seen in the image: its id, pixel box (when known) and how it was linked."""

    entity_id: str
    box: Optional[Box] = None
    link_method: str = "id"


@dataclass(frozen=True)
class ImageContext:
    image_id: str
    width: int
    height: int
    entities: tuple[ImageEntity, ...]
    ocr_norm: str = ""  # normalised OCR text of the image, "" when unknown
    domain: Optional[str] = None


DIRECTIONS = ("left", "right", "above", "below")
VISUAL = "visual:"  # relation prefix of a visual hop ("visual:right": the entity immediately right of it)


def is_visual(relation: str) -> bool:
    return relation.startswith(VISUAL)


@dataclass(frozen=True)
class ImageView:
    """Another picture of the input and the KB entities it shows with boxes (pixels): where a chain that
    reaches one of them can look next."""

    image_id: str
    width: int
    height: int
    entities: tuple[tuple[str, Box], ...]


@dataclass(frozen=True)
class VisualHop:
    """A visual hop in the middle of a path: find `found` (reached through the KB) in picture `image_id`, then
    take the entity immediately `direction` of it there (`hops[at]` = (found, "visual:<direction>", entity)).
    `tied`: another entity that fits the direction as well (the reference is ambiguous)."""

    at: int
    image_id: str
    width: int
    height: int
    found_box: Box
    box: Box
    direction: str
    tied: Optional[str] = None
    shown: tuple[tuple[str, Box], ...] = ()  # every KB entity that picture shows, with its box


@dataclass(frozen=True)
class Path:
    """image entity -r1-> o1 -r2-> ... -rn-> answer. `ambiguous_at`: the hop with several objects. `views`: the
    visual hops (their relation is "visual:<direction>"), in order."""

    start: str
    hops: tuple[tuple[str, str, Object], ...]
    ambiguous_at: Optional[int] = None
    views: tuple[VisualHop, ...] = ()

    @property
    def answer(self) -> Object:
        return self.hops[-1][2]

    @property
    def relations(self) -> tuple[str, ...]:
        return tuple(r for _, r, _ in self.hops)

    @property
    def kb_hops(self) -> int:
        return sum(not is_visual(r) for _, r, _ in self.hops)

    def segments(self) -> list[tuple[str, tuple[tuple[str, str, Object], ...]]]:
        """(entity a segment starts from, its KB hops): the image entity's, then one after each visual hop."""
        out: list[tuple[str, list]] = [(self.start, [])]
        for h in self.hops:
            if is_visual(h[1]):
                out.append((str(h[2]), []))
            else:
                out[-1][1].append(h)
        return [(start, tuple(hops)) for start, hops in out]

    def key(self) -> str:
        parts = [self.start]
        views = {v.at: v for v in self.views}
        for i, (_, r, o) in enumerate(self.hops):
            parts += [r if i not in views else f"{r}@{views[i].image_id}", o.key() if isinstance(o, Literal) else o]
        return "\x1f".join(parts)


def _sort_key(o: Object) -> str:
    return o.key() if isinstance(o, Literal) else f"entity:{o}"


def _rank(seed: str, key: str) -> int:
    """A stable pseudo-random rank (CRC-32: cheap, the same in every process and run)."""
    return zlib.crc32(f"{seed}\x1f{key}".encode())


def walk_paths(kb: KnowledgeBase, start: str, templates: Templates, min_hops: int, max_hops: int,
               max_degree: int, max_paths: int, seed: str) -> list[Path]:
    """Candidate paths from `start`, at most `max_paths`, picked by a hash of (seed, path).

    Deterministic: at every entity the relations are visited in an order
    seeded by (seed, relation), a multi-valued relation's object is its
    smallest, and the pick depends only on the seed and the paths. The walk
    enumerates at most `max_paths * 8` paths, so a dense KB stays bounded and
    the pick still mixes branches and hop counts.
    """
    if start not in kb.entities:
        return []
    found: list[Path] = []
    budget = max_paths * _WALK_BUDGET
    stack: list[tuple[str, tuple, frozenset]] = [(start, (), frozenset([start]))]
    while stack and budget > 0:
        subject, hops, seen = stack.pop()
        stype = kb.entities[subject].type
        children = []
        rels = kb.relations(subject)
        for relation in sorted(rels, key=lambda r: _rank(seed, r)):
            if not _walkable(kb, templates, relation, stype, hops):
                continue
            objs = rels[relation]
            if not objs:
                continue
            multi = len(objs) > 1
            obj = min(objs, key=_sort_key) if multi else objs[0]
            if isinstance(obj, str) and obj in seen:
                continue  # a cycle back to an entity already on the path
            path_hops = hops + ((subject, relation, obj),)
            if len(path_hops) >= min_hops:
                found.append(Path(start, path_hops, len(path_hops) - 1 if multi else None))
                budget -= 1
            if (not multi and isinstance(obj, str) and len(path_hops) < max_hops
                    and kb.degree.get(obj, 0) <= max_degree):
                children.append((obj, path_hops, seen | {obj}))
        stack.extend(reversed(children))
    return _pick(found, max_paths, seed)


def _pick(found: list[Path], max_paths: int, seed: str) -> list[Path]:
    """At most `max_paths` of the paths found, chosen by a hash of (seed, path): the same in every run."""
    if len(found) > max_paths:
        found = sorted(found, key=lambda p: (_rank(seed, p.key()), p.key()))[:max_paths]
    return found


def _walkable(kb: KnowledgeBase, templates: Templates, relation: str, subject_type: str, hops: tuple) -> bool:
    """A templated relation; a repeat of the hop before only when its template words the pair ("the grandparent
    taxon of ...") and that hop was no repeat itself."""
    if templates.relation(relation, subject_type) is None:
        return False
    if not hops or templates.canonical(hops[-1][1]) != templates.canonical(relation):
        return True
    before = templates.relation(hops[-1][1], kb.entities[hops[-1][0]].type)
    twice_before = len(hops) >= 2 and templates.canonical(hops[-2][1]) == templates.canonical(relation)
    return before is not None and before.twice is not None and not twice_before


def resolve(kb: KnowledgeBase, start: str, chain: Sequence[tuple[str, Optional[str]]]) -> set[str]:
    """Answer keys reached from `start` along (relation, required object type) hops, following every object."""
    frontier: list[Object] = [start]
    for relation, otype in chain:
        nxt: list[Object] = []
        for node in frontier:
            if not isinstance(node, str):
                continue
            for o in kb.objects(node, relation)[:_MAX_RESOLVE]:
                if otype is None or kb.object_type(o) == otype:
                    nxt.append(o)
        frontier = nxt[:_MAX_RESOLVE]
        if not frontier:
            return set()
    return {kb.object_key(o) for o in frontier}


# --------------------------------------------------------------------------- questions


def position_of(box: Box, width: int, height: int) -> str:
    """Which ninth of the image a box's centre falls in: top_left ... center ... bottom_right."""
    cx = (box[0] + box[2]) / 2 / max(width, 1)
    cy = (box[1] + box[3]) / 2 / max(height, 1)
    col = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "")
    row = "top" if cy < 1 / 3 else ("bottom" if cy > 2 / 3 else "")
    return "_".join(p for p in (row, col) if p) or "center"


@dataclass(frozen=True)
class Reference:
    phrase: str
    position: Optional[str]  # the position phrase used, when the image shows several of the type


def reference_for(kb: KnowledgeBase, templates: Templates, ctx: ImageContext, ie: ImageEntity,
                  first: bool = False) -> Reference:
    """How the question points at the image entity: by its type noun, plus its position when the image shows
    others of its type. `first`: the question shows two pictures and this is the first."""
    etype = kb.entities[ie.entity_id].type
    noun = templates.noun(etype)
    plain, at = templates.image_reference, templates.image_reference_at
    if first and templates.visual is not None:
        plain, at = templates.visual.first_reference, templates.visual.first_reference_at
    same_type = [o for o in ctx.entities if o.entity_id != ie.entity_id and o.entity_id in kb.entities
                 and kb.entities[o.entity_id].type == etype]
    if same_type and ie.box is not None and all(o.box is not None for o in same_type):
        pos = position_of(ie.box, ctx.width, ctx.height)
        if all(position_of(o.box, ctx.width, ctx.height) != pos for o in same_type):  # type: ignore[arg-type]
            words = templates.positions.get(pos, pos.replace("_", " "))
            return Reference(fill_template(at, noun=noun, position=words), pos)
    return Reference(fill_template(plain, noun=noun), None)


def _wrap(kb: KnowledgeBase, templates: Templates, hops: Sequence[tuple[str, str, Object]], phrase: str,
          ask: bool) -> str:
    """Nested relation phrases around `phrase`; with `ask` the last relation asks. A relation applied twice in a
    row reads as its `twice` template."""
    i = 0
    while i < len(hops):
        subject, relation, obj = hops[i]
        t = templates.relation(relation, kb.entities[subject].type)
        if t is None:  # walk_paths only walks templated relations
            raise ValueError(f"no template for relation {relation!r}")
        middle = ""
        if i + 1 < len(hops) and t.twice is not None and \
                templates.canonical(hops[i + 1][1]) == templates.canonical(relation):
            middle, obj, t = templates.noun(kb.object_type(obj)), hops[i + 1][2], t.twice
            i += 1
        values = {"subject": phrase, "object_noun": templates.noun(kb.object_type(obj)), "middle_noun": middle}
        if i < len(hops) - 1 or not ask:
            phrase = fill_template(t.phrase, **values)
        elif t.question is not None:
            phrase = fill_template(t.question, **values)
        else:
            phrase = fill_template(templates.question, phrase=fill_template(t.phrase, **values))
        i += 1
    return phrase


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def build_question(kb: KnowledgeBase, templates: Templates, path: Path, reference: str) -> str:
    """The question: nested relation phrases around the image reference, the last relation asking.

    With a visual hop (two pictures): "In the second picture, find <the prefix's phrase>." then the question
    about "the <noun> immediately to the right of it" (the templates' `two_pictures` wording)."""
    if not path.views:
        return _capital(_wrap(kb, templates, path.hops, reference, ask=True))
    vt = templates.visual
    if vt is None or len(path.views) != 1:
        raise ValueError("a question over two pictures needs the templates' two_pictures section and one visual hop")
    v = path.views[0]
    found = _wrap(kb, templates, path.hops[:v.at], reference, ask=False)
    _, _, nxt = path.hops[v.at]
    neighbour = fill_template(vt.neighbour, noun=templates.noun(kb.object_type(nxt)), direction=vt.directions[v.direction])
    asked = _wrap(kb, templates, path.hops[v.at + 1:], neighbour, ask=True)
    find = _capital(fill_template(vt.find, subject=found))
    return find + ("" if find[-1:] in "。？！" else " ") + _capital(asked)  # Chinese puts no space after 。


@dataclass(frozen=True)
class Candidate:
    path: Path
    image_entity: ImageEntity
    reference: Reference
    question: str

    def leak_names(self, kb: KnowledgeBase) -> tuple[str, ...]:
        """Normalised names that must not appear in the question: image entity, bridges, answer."""
        names: list[str] = list(kb.names_norm(self.path.start))
        for _, _, obj in self.path.hops:
            names.extend(kb.object_names_norm(obj))
        return tuple(dict.fromkeys(names))


def candidates_for(kb: KnowledgeBase, templates: Templates, ctx: ImageContext, ie: ImageEntity,
                   min_hops: int, max_hops: int, max_degree: int, max_paths: int,
                   views_of: Optional[Callable[[str], Sequence[ImageView]]] = None) -> list[Candidate]:
    """Candidate questions from one image entity: paths through the KB, and (with `views_of`: entity id -> the
    other pictures that show it) paths with a visual hop through a second picture, at most `max_paths` each."""
    seed = f"{ctx.image_id}:{ie.entity_id}"
    out: list[Candidate] = []
    paths = walk_paths(kb, ie.entity_id, templates, min_hops, max_hops, max_degree, max_paths, seed=seed)
    if paths:
        ref = reference_for(kb, templates, ctx, ie)
        out += [Candidate(p, ie, ref, build_question(kb, templates, p, ref.phrase)) for p in paths]
    if views_of is not None and templates.visual is not None:
        jumps = visual_paths(kb, templates, ctx, ie.entity_id, views_of, min_hops, max_hops, max_degree,
                             max_paths, seed)
        if jumps:
            ref = reference_for(kb, templates, ctx, ie, first=True)
            out += [Candidate(p, ie, ref, build_question(kb, templates, p, ref.phrase)) for p in jumps]
    return out


# --------------------------------------------------------------------------- visual hops

_TIE = 0.25  # a second candidate within this share of the nearest one's size is as near: the reference is ambiguous


def _gap(direction: str, a: Box, b: Box) -> Optional[float]:
    """How far `b` lies from `a` in `direction` (pixels between their facing edges, from their centres when
    they overlap), or None when `b` is not on that side of `a` in the same row (left/right) or column."""
    acx, acy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    bcx, bcy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    if direction in ("left", "right"):
        if not (a[1] <= bcy <= a[3] or b[1] <= acy <= b[3]):
            return None
        d = bcx - acx if direction == "right" else acx - bcx
        edge = b[0] - a[2] if direction == "right" else a[0] - b[2]
    else:
        if not (a[0] <= bcx <= a[2] or b[0] <= acx <= b[2]):
            return None
        d = bcy - acy if direction == "below" else acy - bcy
        edge = b[1] - a[3] if direction == "below" else a[1] - b[3]
    return None if d <= 0 else max(edge, 0.0) + d * 1e-3


def neighbours(view: ImageView, found: str) -> list[tuple[str, str, Optional[str]]]:
    """(direction, entity immediately that way of `found` in the view, another entity as near or None)."""
    boxes = dict(view.entities)
    a = boxes.get(found)
    if a is None:
        return []
    out = []
    for direction in DIRECTIONS:
        near = sorted((g, eid) for eid, b in view.entities if eid != found
                      for g in [_gap(direction, a, b)] if g is not None)
        if not near:
            continue
        g0, first = near[0]
        fb = boxes[first]
        size = (fb[2] - fb[0]) if direction in ("left", "right") else (fb[3] - fb[1])
        tied = next((eid for g, eid in near[1:] if g - g0 <= _TIE * size), None)
        out.append((direction, first, tied))
    return out


def visual_paths(kb: KnowledgeBase, templates: Templates, ctx: ImageContext, start: str,
                 views_of: Callable[[str], Sequence[ImageView]], min_hops: int, max_hops: int, max_degree: int,
                 max_paths: int, seed: str) -> list[Path]:
    """Paths with one visual hop in the middle: single-valued KB hops from `start` to an entity another picture
    of the input shows, the entity immediately left/right/above/below it in that picture, then KB hops from
    there to the answer (at least one). KB hops in all between `min_hops` and `max_hops`; at most `max_paths`,
    picked by a hash of (seed, path) as in `walk_paths`."""
    if start not in kb.entities:
        return []
    found: list[Path] = []
    budget = max_paths * _WALK_BUDGET
    stack: list[tuple[str, tuple, frozenset]] = [(start, (), frozenset([start]))]
    while stack and budget > 0:
        subject, hops, seen = stack.pop()
        stype = kb.entities[subject].type
        rels = kb.relations(subject)
        children = []
        for relation in sorted(rels, key=lambda r: _rank(seed, r)):
            objs = rels[relation]
            if len(objs) != 1 or not isinstance(objs[0], str) or objs[0] in seen or objs[0] not in kb.entities \
                    or not _walkable(kb, templates, relation, stype, hops):
                continue
            bridge = objs[0]
            prefix = hops + ((subject, relation, bridge),)
            rest = max_hops - len(prefix)
            for view in views_of(bridge) if rest >= 1 else ():
                if view.image_id == ctx.image_id:
                    continue  # the first picture: its entities are the image entities' own questions
                boxes = dict(view.entities)
                for direction, nxt, tied in neighbours(view, bridge):
                    if nxt in seen or nxt == bridge or nxt not in kb.entities:
                        continue
                    hop = (bridge, VISUAL + direction, nxt)
                    v = VisualHop(len(prefix), view.image_id, view.width, view.height, boxes[bridge], boxes[nxt],
                                  direction, tied, view.entities)
                    tails = walk_paths(kb, nxt, templates, max(1, min_hops - len(prefix)), rest, max_degree,
                                       max_paths, seed=f"{seed}:{view.image_id}:{nxt}")
                    on_path = seen | {bridge, nxt}
                    for tail in tails:
                        if any(isinstance(o, str) and o in on_path for _, _, o in tail.hops):
                            continue
                        amb = None if tail.ambiguous_at is None else len(prefix) + 1 + tail.ambiguous_at
                        found.append(Path(start, prefix + (hop,) + tail.hops, amb, (v,)))
                        budget -= 1
            if rest >= 2 and kb.degree.get(bridge, 0) <= max_degree:
                children.append((bridge, prefix, seen | {bridge}))
        stack.extend(reversed(children))
    return _pick(found, max_paths, seed)


# --------------------------------------------------------------------------- filters


class Filters:
    """Every quality filter; `check` gives the first rejection or None. Caches text-shortcut counts."""

    def __init__(self, kb: KnowledgeBase, templates: Templates, min_hops: int = _QA.min_hops,
                 check_ocr: bool = _QA.check_ocr, cache_size: int = 100_000):
        self.kb = kb
        self.templates = templates
        self.min_hops = min_hops
        self.check_ocr = check_ocr
        self.cache_size = cache_size
        self._shortcut: dict[tuple, tuple[int, int, str]] = {}

    def trivial(self, c: Candidate, ctx: ImageContext) -> Optional[Rejection]:
        if c.path.kb_hops < self.min_hops:
            return Rejection(TRIVIAL, f"{c.path.kb_hops} hop(s) < qa.min_hops={self.min_hops}")
        if self.check_ocr and ctx.ocr_norm:
            for name in self.kb.object_names_norm(c.path.answer):
                if contains_phrase(ctx.ocr_norm, name):
                    return Rejection(TRIVIAL, f"the answer {name!r} is readable in the image (OCR text)")
        return None

    def ambiguous(self, c: Candidate, ctx: ImageContext) -> Optional[Rejection]:
        kb = self.kb
        if c.path.ambiguous_at is not None:
            s, r, _ = c.path.hops[c.path.ambiguous_at]
            n = len(kb.objects(s, r))
            return Rejection(AMBIGUOUS, f"{r} of {kb.object_name(s)} ({s}) has {n} objects: hop "
                                        f"{c.path.ambiguous_at + 1} has no single answer")
        for v in c.path.views:
            if v.tied is not None:
                _, _, nxt = c.path.hops[v.at]
                return Rejection(AMBIGUOUS_REFERENCE, f"immediately {v.direction} of {kb.object_name(c.path.hops[v.at][0])}"
                                                      f" in picture {v.image_id[:12]} fits {kb.object_name(nxt)} and "
                                                      f"{kb.object_name(v.tied)} as well")
        etype = kb.entities[c.path.start].type
        start, first = c.path.segments()[0]
        # what the picture's reference must single out: the answer, or the entity the second picture shows
        chain = [(r, None) for _, r, _ in first]
        answers = {kb.object_key(first[-1][2] if c.path.views else c.path.answer)}
        for o in ctx.entities:
            if o.entity_id == c.path.start or o.entity_id not in kb.entities or kb.entities[o.entity_id].type != etype:
                continue
            if c.reference.position is not None and o.box is not None and \
                    position_of(o.box, ctx.width, ctx.height) != c.reference.position:
                continue  # told apart by its position
            ends = resolve(kb, o.entity_id, chain)
            if ends != answers:  # another answer, or none the KB knows (the KB is incomplete, not the world)
                return Rejection(AMBIGUOUS_REFERENCE, f"{c.reference.phrase!r} also fits {kb.object_name(o.entity_id)} "
                                            f"({o.entity_id}) in this image, which does not lead to the same answer")
        return None

    def name_leak(self, c: Candidate, question: str) -> Optional[Rejection]:
        q = normalise(question)
        for name in c.leak_names(self.kb):
            if contains_phrase(q, name):
                return Rejection(NAME_LEAK, f"the question names {name!r}")
        return None

    def introduced_names(self, c: Candidate, question: str) -> Optional[Rejection]:
        """A rewrite may not name any KB entity the template question did not (a wrong or leaked name)."""
        linker = self.kb.linker
        before = {link.entity_id for link in linker.link({"q": c.question})[0]}
        for link in linker.link({"q": question})[0]:
            if link.entity_id not in before:
                return Rejection(NAME_LEAK, f"the rewrite names {link.surface!r} ({link.entity_id})")
        return None

    def image_reference(self, question: str) -> Optional[Rejection]:
        q = normalise(question)
        if self.templates.image_words and not any(contains_phrase(q, w) for w in self.templates.image_words):
            return Rejection(LOST_IMAGE, "the question no longer refers to the image")
        return None

    def text_shortcut(self, c: Candidate) -> Optional[Rejection]:
        """The question's text alone admits one answer (one entity, for the part before a visual hop): every KB
        entity of the image entity's type whose chain resolves leads there, so a picture is not needed. With a
        visual hop, the part after it is checked the same way from the entity the second picture shows."""
        segments = self.kb_segments(c)
        return self._segment_shortcut(*segments[0]) or (self._segment_shortcut(*segments[-1], after_visual=True)
                                                        if len(segments) > 1 else None)

    def kb_segments(self, c: Candidate) -> list[tuple[str, tuple]]:
        return [(self.kb.entities[start].type, tuple((r, self.kb.object_type(o)) for _, r, o in hops))
                for start, hops in c.path.segments()]

    def _segment_shortcut(self, etype: str, chain: tuple, after_visual: bool = False) -> Optional[Rejection]:
        """Count the answers a (type, typed chain) admits over the whole KB (cached per type and chain)."""
        kb = self.kb
        key = (etype, chain)
        got = self._shortcut.get(key)
        if got is None:
            answers: set[str] = set()
            candidates = 0
            for s in kb.subjects_with(etype, chain[0][0]):
                ends = resolve(kb, s, chain)
                if not ends:
                    continue
                candidates += 1
                answers |= ends
                if len(answers) >= 2:
                    break
            got = (candidates, len(answers), next(iter(answers)) if answers else "")
            if len(self._shortcut) >= self.cache_size:
                self._shortcut.clear()
            self._shortcut[key] = got
        candidates, distinct, only = got
        if distinct <= 1:
            noun = self.templates.noun(etype)
            where = "the second picture's entity" if after_visual else "the image"
            return Rejection(TEXT_SHORTCUT, f"without {where}: {candidates} KB {noun}(s) fit the question's "
                                            f"text and all lead to the same answer ({only})")
        return None

    def visual_shortcut(self, c: Candidate) -> Optional[Rejection]:
        """A visual hop the question does not need: no other entity of the found one's type in the second
        picture has a neighbour of the same kind that way leading to another answer, so "the <noun> immediately
        to the right of it" picks the answer without the chain before it."""
        kb = self.kb
        for k, v in enumerate(c.path.views):
            found, _, nxt = c.path.hops[v.at]
            ftype, ntype = kb.entities[found].type, kb.entities[str(nxt)].type
            tail = [(r, None) for _, r, _ in c.path.segments()[k + 1][1]]
            answers = resolve(kb, str(nxt), tail)
            view = ImageView(v.image_id, v.width, v.height, v.shown)
            elsewhere = False
            for other, _ in v.shown:
                if other == found or other not in kb.entities or kb.entities[other].type != ftype:
                    continue
                for direction, alt, tied in neighbours(view, other):
                    if direction == v.direction and tied is None and alt in kb.entities \
                            and kb.entities[alt].type == ntype and resolve(kb, alt, tail) != answers:
                        elsewhere = True
            if not elsewhere:
                noun = self.templates.noun(ntype)
                return Rejection(VISUAL_SHORTCUT, f"the second picture alone gives it: no other "
                                                  f"{self.templates.noun(ftype)} there has a {noun} {v.direction} "
                                                  f"of it leading to another answer")
        return None

    def search_leak(self, c: Candidate, question: str) -> Optional[Rejection]:
        """A search result of the trajectory that holds the question verbatim (the KB text gives it away)."""
        q = normalise(question)
        for _, snippet in search_snippets(self.kb, c.path):
            if q and q in normalise(snippet):
                return Rejection(SEARCH_LEAK, "a search result of the trajectory holds the question verbatim")
        return None

    def check(self, c: Candidate, ctx: ImageContext, question: Optional[str] = None) -> Optional[Rejection]:
        """The first filter `c` fails (with `question` instead of the template one, for rewrites)."""
        rewritten = question is not None
        question = c.question if question is None else question
        return (self.trivial(c, ctx) or self.ambiguous(c, ctx) or self.name_leak(c, question)
                or (self.introduced_names(c, question) or self.image_reference(question) if rewritten else None)
                or self.text_shortcut(c) or self.visual_shortcut(c) or self.search_leak(c, question))


def near_duplicates(items: Sequence[tuple[str, str]], threshold: float) -> dict[str, str]:
    """Among (id, question) pairs, which ids are near-duplicates of an earlier one: {dropped id: kept id}.

    Items are taken in id order; a question is dropped when its rapidfuzz
    `token_sort_ratio` to a kept question (normalised) is >= `threshold`.
    """
    kept: list[tuple[str, str]] = []
    exact: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for sid, question in sorted(items):
        q = normalise(question)
        if q in exact:
            dropped[sid] = exact[q]
            continue
        match = next((kid for kid, kq in kept if fuzz.token_sort_ratio(q, kq) >= threshold), None)
        if match is not None:
            dropped[sid] = match
            continue
        exact[q] = sid
        kept.append((sid, q))
    return dropped


# --------------------------------------------------------------------------- tags and tiers


@dataclass(frozen=True)
class HopInfo:
    step: int
    kind: str  # recognise | crop_recognise | relation | look | crop_look
    subject_id: Optional[str]
    subject_name: Optional[str]
    relation: Optional[str]
    object_id: Optional[str]
    object_name: str
    visual: bool
    image: Optional[int] = None  # which picture the step looks at (0 = the first)
    box: Optional[Box] = None  # the object's box in that picture (pixels)


@dataclass(frozen=True)
class Tags:
    category: str
    domain: str
    need_image_before_search: bool
    need_image_during_search: bool
    requires_crop: bool
    crop_box: Optional[list[float]]
    box_share: Optional[float]
    visual_hops: int
    chain: tuple[HopInfo, ...] = field(default_factory=tuple)
    crops_needed: int = 0
    image_ids: tuple[str, ...] = ()


def box_share(box: Box, width: int, height: int) -> float:
    w = max(0.0, min(box[2], width) - max(box[0], 0.0))
    h = max(0.0, min(box[3], height) - max(box[1], 0.0))
    return (w * h) / max(1, width * height)


def tag(kb: KnowledgeBase, templates: Templates, c: Candidate, ctx: ImageContext, crop_share: float) -> Tags:
    """Category, domain, search needs, crops and the reasoning chain with its visual hops marked.

    - a visual hop is a step that must look at a picture: recognising the image entity in the first
      (`recognise`), and each visual hop of the path (`look`: find the entity the KB led to in the second
      picture, take its neighbour there); a KB hop never counts, even when its object is also pictured
      (the KB reaches it without looking);
    - a visual hop needs a crop (`crop_recognise`, `crop_look`) when its entity's box covers less than
      `crop_share` of its picture; requires_crop: the first does; crops_needed counts them all;
    - need_image_before_search: always (the first entity is only reachable through the image);
      need_image_during_search: the path has a visual hop in the middle;
    - category: text-based if the image entity's name is readable in the OCR text, else
      visual search if it needs a crop, else event / spatio-temporal / recognition from
      the relations' categories (templates file);
    - domain: the image row's `domain` if given, else the image entity type's domain, else "other".
    """
    start = kb.entities[c.path.start]
    box = c.image_entity.box
    share = box_share(box, ctx.width, ctx.height) if box is not None else None
    crop = share is not None and share < crop_share
    chain = [HopInfo(0, "crop_recognise" if crop else "recognise", None, None, None, start.id, start.name, True,
                     0, box)]
    crops = int(crop)
    views = {v.at: (k + 1, v) for k, v in enumerate(c.path.views)}
    for i, (s, r, o) in enumerate(c.path.hops):
        if i in views:
            k, v = views[i]
            look_crop = box_share(v.box, v.width, v.height) < crop_share
            crops += look_crop
            chain.append(HopInfo(i + 1, "crop_look" if look_crop else "look", s, kb.entities[s].name, r, str(o),
                                 kb.object_name(o), True, k, v.box))
        else:
            chain.append(HopInfo(i + 1, "relation", s, kb.entities[s].name, r, o if isinstance(o, str) else None,
                                 kb.object_name(o), False))
    cats = {templates.category(r) for r in c.path.relations if not is_visual(r)}
    if ctx.ocr_norm and any(contains_phrase(ctx.ocr_norm, n) for n in kb.names_norm(start.id)):
        category = "text-based"
    elif crop:
        category = "visual search"
    elif "event" in cats:
        category = "event"
    elif "spatio-temporal" in cats:
        category = "spatio-temporal"
    else:
        category = "recognition"
    domain = ctx.domain or templates.domains.get(start.type, "other")
    return Tags(
        category=category, domain=domain, need_image_before_search=True,
        need_image_during_search=bool(c.path.views), requires_crop=crop,
        crop_box=[float(x) for x in box] if crop and box is not None else None,
        box_share=share, visual_hops=1 + len(c.path.views), chain=tuple(chain), crops_needed=crops,
        image_ids=(ctx.image_id, *(v.image_id for v in c.path.views)),
    )


TIER_NAMES = ("very_easy", "easy", "medium", "hard", "very_hard")


def tier_for(hops: int, visual_hops: int, crops: int, degree: int, rare_degree: int, popular_degree: int) -> str:
    """score = (hops - 1) + (visual_hops - 1) + crops + [degree <= rare] - [degree >= popular],
    clamped to 0..4 -> very_easy, easy, medium, hard, very_hard (`hops`: KB hops; `crops`: visual hops that
    need a crop).

    So with the rest equal a 2-hop question is easy, 3 hops medium, 4 hops hard;
    a crop, a visual hop in the middle or a long-tail entity adds a tier; a popular one removes one.
    """
    score = (hops - 1) + (visual_hops - 1) + int(crops)
    score += int(degree <= rare_degree) - int(degree >= popular_degree)
    return TIER_NAMES[max(0, min(4, score))]


# --------------------------------------------------------------------------- tool-use trajectory


def search_snippets(kb: KnowledgeBase, path: Path) -> list[tuple[str, str]]:
    """(query, result) of the search each KB hop of the path needs: "<name> <relation>" and the KB's answer,
    "Name (description): relation object."."""
    out = []
    for s, r, o in path.hops:
        if is_visual(r):
            continue
        e = kb.entities[s]
        relation = r.replace("_", " ")
        shown = o.text() if isinstance(o, Literal) else kb.object_name(o)
        about = f" ({e.description})" if e.description else ""
        out.append((f"{e.name} {relation}", f"{e.name}{about}: {relation} {shown}."))
    return out


def _grid(box: Box, width: int, height: int) -> list[int]:
    """A pixel box on the 0-1000 grid of its picture (the crop tool's coordinates)."""
    sx, sy = 1000.0 / max(width, 1), 1000.0 / max(height, 1)
    return [max(0, min(1000, round(box[0] * sx))), max(0, min(1000, round(box[1] * sy))),
            max(0, min(1000, round(box[2] * sx))), max(0, min(1000, round(box[3] * sy)))]


def tool_steps(kb: KnowledgeBase, c: Candidate, ctx: ImageContext, tags: Tags) -> list[tuple[str, str, str]]:
    """(tool, JSON arguments, result) of each call the question takes (`schemas/trajectory.py`): a crop of the
    image entity when it needs one, a search per KB hop, and per visual hop a crop of the second picture
    around the entity found and its neighbour."""
    snippets = iter(search_snippets(kb, c.path))
    views = {v.at: (k + 2, v) for k, v in enumerate(c.path.views)}
    steps: list[tuple[str, str, str]] = []
    if tags.requires_crop and c.image_entity.box is not None:
        steps.append(("crop", json.dumps({"image": 1, "bbox": _grid(c.image_entity.box, ctx.width, ctx.height)}),
                      CROP_RESULT_IMAGE))
    for i, (_, r, _) in enumerate(c.path.hops):
        if i in views:
            k, v = views[i]
            both = (min(v.found_box[0], v.box[0]), min(v.found_box[1], v.box[1]), max(v.found_box[2], v.box[2]),
                    max(v.found_box[3], v.box[3]))
            steps.append(("crop", json.dumps({"image": k, "bbox": _grid(both, v.width, v.height)}),
                          CROP_RESULT_IMAGE))
        else:
            query, result = next(snippets)
            steps.append(("search", json.dumps({"query": query}, ensure_ascii=False), result))
    return steps


def answer_fields(kb: KnowledgeBase, obj: Object) -> dict[str, Any]:
    """The answer columns of a row: answer, aliases, KB id, type, unit and the verifier spec."""
    if isinstance(obj, Literal):
        return {"answer": obj.value, "answer_aliases": [obj.text()] if obj.unit else [], "answer_id": None,
                "answer_type": obj.type, "answer_unit": obj.unit, "verifier": answer_verifier(obj.type)}
    e = kb.entities[obj]
    return {"answer": e.name, "answer_aliases": list(e.aliases), "answer_id": e.id, "answer_type": e.type,
            "answer_unit": None, "verifier": answer_verifier("entity")}


def candidate_id(image_row_id: str, path: Path, language: str) -> str:
    """Stable id of a question: its image row's id (content + position), the path and the language
    (not the wording, which a rewriter may change)."""
    return content_id("imagemining", image_row_id, path.key(), language)


# --------------------------------------------------------------------------- rewriter

REWRITE_PROMPT = (
    "Paraphrase the question below so it reads naturally. Keep exactly the same meaning and the same "
    "answer. Keep the reference to the picture. Do not name any person, place, object or answer that the "
    "question does not name. Reply with the question only.\n\nQuestion: {question}"
)


def load_rewrite_prompt(path: Optional[str]) -> str:
    if path is None:
        return REWRITE_PROMPT
    text = read_text(path)
    if "{question}" not in text:
        raise ValueError(f"rewriter prompt {path} lacks {{question}}")
    return text


def parse_rewrite(reply: Optional[str]) -> Optional[str]:
    """The paraphrase from a reply: after any </think>, first non-empty line, quotes and labels stripped."""
    if not reply:
        return None
    think = reply.rfind("</think>")
    if think >= 0:
        reply = reply[think + len("</think>"):]
    for line in reply.splitlines():
        line = line.strip().strip("\"'“”*` ")
        for label in ("Question:", "Paraphrase:", "Rewritten question:"):
            if line.lower().startswith(label.lower()):
                line = line[len(label):].strip().strip("\"'“”*` ")
        if line:
            return line[:1000]
    return None


def rewrite_messages(prompt: str, questions: Iterable[str], images: Optional[Sequence[Optional[bytes]]] = None):
    from quarry.operators.chat_client import user_message

    out = []
    for i, q in enumerate(questions):
        image = images[i] if images is not None else None
        out.append([user_message(fill_template(prompt, question=q), image)])
    return out
