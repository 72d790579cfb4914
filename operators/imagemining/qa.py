"""Visual-Jump multi-hop QA (GLM-5V-Turbo §3.3): paths, questions, filters, tags, tiers.

Plain Python, no Beam. For one image with linked KB entities:

1. **Knowledge discovery** (`walk_paths`): from each image entity, depth-first
   over facts whose relation has a template, paths of `min_hops`..`max_hops`
   hops; no entity twice (cycles), no walking *through* a hub (degree above
   `max_degree`), literals end a path. A (subject, relation) with several
   objects is never walked past; the path that reaches it is kept, marked,
   so `ambiguous_answer` can reject it (the data says why).
2. **QA reconstruction** (`build_question`): the image entity is only "the
   <type noun> in this picture" (or "... at the left of this picture" when
   the image shows several of its type and boxes tell them apart), every bridge
   entity only a relation phrase around the previous one, from `Templates`
   (a YAML/JSON data file, per language, relation and subject type).
3. **Quality filters** (`Filters.check`), each a reason code, in this order:
   - `trivial`: fewer than `min_hops` hops, or the answer readable in the
     image's OCR text;
   - `ambiguous_answer`: a hop with several objects, or the image reference
     matching several image entities that lead to different answers;
   - `name_leak`: a normalised name or alias of the image entity, a bridge
     entity or the answer appears (whole words) in the question;
   - a rewritten question is also `name_leak` when it names any KB entity
     the template question did not (entity linker), and `lost_image_reference`
     when it no longer refers to the image (none of the language's image words);
   - `text_shortcut`: the question's text alone (the image entity's type and
     the typed relation chain) admits one answer: every KB entity of that type
     whose chain resolves leads to the same answer, so the image is not needed.
     Counted once per (type, chain) and cached.
   Near-duplicate questions are found by `near_duplicates` (rapidfuzz).
4. **Tagging** (`tag`) and **tiers** (`tier_for`), rules in their docstrings.
"""

from __future__ import annotations

import importlib.resources
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any, Optional

import yaml
from rapidfuzz import fuzz

from quarry.operators.base import Rejection
from quarry.operators.ids import content_id
from quarry.operators.imagemining.kb import KnowledgeBase, Literal, Object, contains_phrase, normalise
from quarry.schemas.imagemining import QaSection
from quarry.schemas.rl import answer_verifier

TRIVIAL = "trivial"
AMBIGUOUS = "ambiguous_answer"
NAME_LEAK = "name_leak"
LOST_IMAGE = "lost_image_reference"
TEXT_SHORTCUT = "text_shortcut"
NEAR_DUPLICATE = "near_duplicate"
FILTER_REASONS: tuple[str, ...] = (TRIVIAL, AMBIGUOUS, NAME_LEAK, LOST_IMAGE, TEXT_SHORTCUT)  # `Filters.check`
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
            text = FilePath(path).read_text("utf-8")
        data = json.loads(text) if where.endswith(".json") else yaml.safe_load(text)
    except OSError as e:
        raise TemplateError(f"templates {where}: {e.strerror or e}") from None
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise TemplateError(f"templates {where}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("languages"), dict):
        raise TemplateError(f"templates {where}: expected a mapping with a `languages` section")
    lang = data["languages"].get(language)
    if not isinstance(lang, dict):
        raise TemplateError(f"templates {where}: no language {language!r} (has {sorted(data['languages'])})")
    relations: dict[str, RelationTemplate] = {}
    for name, t in (lang.get("relations") or {}).items():
        if not isinstance(t, dict) or not isinstance(t.get("phrase"), str) or "{subject}" not in t["phrase"]:
            raise TemplateError(f"templates {where}: relation {name!r} needs a `phrase` with {{subject}}")
        q = t.get("question")
        if q is not None and (not isinstance(q, str) or "{subject}" not in q):
            raise TemplateError(f"templates {where}: relation {name!r}: `question` needs {{subject}}")
        relations[str(name)] = RelationTemplate(t["phrase"], q)
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
    )


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


@dataclass(frozen=True)
class Path:
    """image entity -r1-> o1 -r2-> ... -rn-> answer. `ambiguous_at`: the hop with several objects."""

    start: str
    hops: tuple[tuple[str, str, Object], ...]
    ambiguous_at: Optional[int] = None

    @property
    def answer(self) -> Object:
        return self.hops[-1][2]

    @property
    def relations(self) -> tuple[str, ...]:
        return tuple(r for _, r, _ in self.hops)

    def key(self) -> str:
        parts = [self.start]
        for _, r, o in self.hops:
            parts += [r, o.key() if isinstance(o, Literal) else o]
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
            if templates.relation(relation, stype) is None:
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
    if len(found) > max_paths:
        found.sort(key=lambda p: (_rank(seed, p.key()), p.key()))
        found = found[:max_paths]
    return found


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


def reference_for(kb: KnowledgeBase, templates: Templates, ctx: ImageContext, ie: ImageEntity) -> Reference:
    etype = kb.entities[ie.entity_id].type
    noun = templates.noun(etype)
    same_type = [o for o in ctx.entities if o.entity_id != ie.entity_id and o.entity_id in kb.entities
                 and kb.entities[o.entity_id].type == etype]
    if same_type and ie.box is not None and all(o.box is not None for o in same_type):
        pos = position_of(ie.box, ctx.width, ctx.height)
        if all(position_of(o.box, ctx.width, ctx.height) != pos for o in same_type):  # type: ignore[arg-type]
            words = templates.positions.get(pos, pos.replace("_", " "))
            return Reference(fill_template(templates.image_reference_at, noun=noun, position=words), pos)
    return Reference(fill_template(templates.image_reference, noun=noun), None)


def build_question(kb: KnowledgeBase, templates: Templates, path: Path, reference: str) -> str:
    """The question: nested relation phrases around the image reference, the last relation asking."""
    phrase = reference
    for i, (subject, relation, obj) in enumerate(path.hops):
        t = templates.relation(relation, kb.entities[subject].type)
        if t is None:  # walk_paths only walks templated relations
            raise ValueError(f"no template for relation {relation!r}")
        onoun = templates.noun(kb.object_type(obj))
        if i < len(path.hops) - 1:
            phrase = fill_template(t.phrase, subject=phrase, object_noun=onoun)
        elif t.question is not None:
            phrase = fill_template(t.question, subject=phrase, object_noun=onoun)
        else:
            phrase = fill_template(templates.question, phrase=fill_template(t.phrase, subject=phrase, object_noun=onoun))
    return phrase[:1].upper() + phrase[1:]


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
                   min_hops: int, max_hops: int, max_degree: int, max_paths: int) -> list[Candidate]:
    paths = walk_paths(kb, ie.entity_id, templates, min_hops, max_hops, max_degree, max_paths,
                       seed=f"{ctx.image_id}:{ie.entity_id}")
    if not paths:
        return []
    ref = reference_for(kb, templates, ctx, ie)
    return [Candidate(p, ie, ref, build_question(kb, templates, p, ref.phrase)) for p in paths]


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
        if len(c.path.hops) < self.min_hops:
            return Rejection(TRIVIAL, f"{len(c.path.hops)} hop(s) < qa.min_hops={self.min_hops}")
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
        etype = kb.entities[c.path.start].type
        chain = [(r, None) for r in c.path.relations]
        answers = {kb.object_key(c.path.answer)}
        for o in ctx.entities:
            if o.entity_id == c.path.start or o.entity_id not in kb.entities or kb.entities[o.entity_id].type != etype:
                continue
            if c.reference.position is not None and o.box is not None and \
                    position_of(o.box, ctx.width, ctx.height) != c.reference.position:
                continue  # told apart by its position
            ends = resolve(kb, o.entity_id, chain)
            if ends != answers:  # another answer, or none the KB knows (the KB is incomplete, not the world)
                return Rejection(AMBIGUOUS, f"{c.reference.phrase!r} also fits {kb.object_name(o.entity_id)} "
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
        """Count the answers the question's text admits without the image (cached per type and chain)."""
        kb = self.kb
        etype = kb.entities[c.path.start].type
        chain = tuple((r, kb.object_type(o)) for _, r, o in c.path.hops)
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
            return Rejection(TEXT_SHORTCUT, f"without the image: {candidates} KB {noun}(s) fit the question's "
                                            f"text and all lead to the same answer ({only})")
        return None

    def check(self, c: Candidate, ctx: ImageContext, question: Optional[str] = None) -> Optional[Rejection]:
        """The first filter `c` fails (with `question` instead of the template one, for rewrites)."""
        rewritten = question is not None
        question = c.question if question is None else question
        return (self.trivial(c, ctx) or self.ambiguous(c, ctx) or self.name_leak(c, question)
                or (self.introduced_names(c, question) or self.image_reference(question) if rewritten else None)
                or self.text_shortcut(c))


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
    kind: str
    subject_id: Optional[str]
    subject_name: Optional[str]
    relation: Optional[str]
    object_id: Optional[str]
    object_name: str
    visual: bool


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


def box_share(box: Box, width: int, height: int) -> float:
    w = max(0.0, min(box[2], width) - max(box[0], 0.0))
    h = max(0.0, min(box[3], height) - max(box[1], 0.0))
    return (w * h) / max(1, width * height)


def tag(kb: KnowledgeBase, templates: Templates, c: Candidate, ctx: ImageContext, crop_share: float) -> Tags:
    """Category, domain, search needs, crop and the reasoning chain with visual hops marked.

    - requires_crop: the entity's box covers less than `crop_share` of the image;
    - need_image_before_search: always (the first entity is only reachable through the image);
    - need_image_during_search: a later entity of the path is also in the image (a second visual hop);
    - visual_hops: 1 (recognising the image entity) + path entities also in the image;
    - category: text-based if the image entity's name is readable in the OCR text, else
      visual search if it needs a crop, else event / spatio-temporal / recognition from
      the relations' categories (templates file);
    - domain: the image row's `domain` if given, else the image entity type's domain, else "other".
    """
    start = kb.entities[c.path.start]
    in_image = {e.entity_id for e in ctx.entities}
    box = c.image_entity.box
    share = box_share(box, ctx.width, ctx.height) if box is not None else None
    crop = share is not None and share < crop_share
    chain = [HopInfo(0, "crop_recognise" if crop else "recognise", None, None, None, start.id, start.name, True)]
    later_visual = 0
    for i, (s, r, o) in enumerate(c.path.hops, start=1):
        visual = isinstance(o, str) and o in in_image
        later_visual += visual
        chain.append(HopInfo(i, "relation", s, kb.entities[s].name, r, o if isinstance(o, str) else None,
                             kb.object_name(o), visual))
    cats = {templates.category(r) for r in c.path.relations}
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
        need_image_during_search=later_visual > 0, requires_crop=crop,
        crop_box=[float(x) for x in box] if crop and box is not None else None,
        box_share=share, visual_hops=1 + later_visual, chain=tuple(chain),
    )


TIER_NAMES = ("very_easy", "easy", "medium", "hard", "very_hard")


def tier_for(hops: int, visual_hops: int, requires_crop: bool, degree: int, rare_degree: int,
             popular_degree: int) -> str:
    """score = (hops - 1) + (visual_hops - 1) + requires_crop + [degree <= rare] - [degree >= popular],
    clamped to 0..4 -> very_easy, easy, medium, hard, very_hard.

    So with the rest equal a 2-hop question is easy, 3 hops medium, 4 hops hard;
    a crop, a second visual hop or a long-tail entity adds a tier; a popular one removes one.
    """
    score = (hops - 1) + (visual_hops - 1) + int(requires_crop)
    score += int(degree <= rare_degree) - int(degree >= popular_degree)
    return TIER_NAMES[max(0, min(4, score))]


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
    text = FilePath(path).read_text("utf-8")
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
