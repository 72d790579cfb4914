"""OCR-search tasks whose answer needs the search (GLM-5V-Turbo §3.3: crop, read, then search).

A small entity whose crop re-reads is a *name* when its text, normalised,
is exactly one KB entity's name or alias (the imagemining KB format,
`operators/imagemining/kb.py`). The question asks for a fact about that
name (one of the entity's facts, chosen by the task id), so the answer is
never the text in the picture: the policy has to crop, read the name, search
it and read the result. Text that is only numbers, units and punctuation is
never searched (a bar value "71" names nothing); text naming no KB entity
stays a crop-and-read task (`ocr_zoom`).

Refusals (reason codes, stage `verify`): ``no_facts`` (the KB names the
entity but holds no fact about it), ``ambiguous_name`` (several entities
share the name), ``search_leak`` (the search result holds the question
verbatim), ``answer_in_image`` (the answer is readable in the picture's own
transcription: the search adds nothing), ``ambiguous_reference`` (another
entity of the same kind sits in the same region, so "the small label near
the top-right" does not single it out; decided when tasks are planned).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from quarry.operators.base import Rejection
from quarry.operators.ids import seeded_uniform
from quarry.operators.imagemining.kb import KnowledgeBase, Literal, contains_phrase, normalise
from quarry.operators.imagemining.qa import Templates, fill_template
from quarry.operators.ocr.wording import WORDINGS
from quarry.operators.scripts import UNSPACED_CHARS

NO_FACTS = "no_facts"
AMBIGUOUS_NAME = "ambiguous_name"
SEARCH_LEAK = "search_leak"
ANSWER_IN_IMAGE = "answer_in_image"
AMBIGUOUS_REFERENCE = "ambiguous_reference"
REASONS: tuple[str, ...] = (NO_FACTS, AMBIGUOUS_NAME, SEARCH_LEAK, ANSWER_IN_IMAGE, AMBIGUOUS_REFERENCE)

_UNITS = {"%", "kg", "g", "km", "m", "cm", "mm", "ml", "l", "h", "min", "s", "usd", "eur", "$", "€", "£"}
_WORD = re.compile(r"[^\W\d_]{3,}")  # three letters in a row (any script)
# Han and kana carry a word in two characters (北京, 東京, 上海); Latin needs three to be more than a unit
_CJK_WORD = re.compile(f"[{UNSPACED_CHARS}]{{2,}}")


def searchable(text: str) -> bool:
    """Whether a read text can name something: a word of three letters or more that is not a unit, or two Han
    or kana characters."""
    return any(w.casefold() not in _UNITS for w in _WORD.findall(text)) or bool(_CJK_WORD.search(text))


class NameIndex:
    """Normalised entity names and aliases -> entity ids, for whole-text lookups of a read name."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self._ids: dict[str, list[str]] = {}
        for eid, e in kb.entities.items():
            for name in e.names:
                key = normalise(name)
                if key and eid not in self._ids.setdefault(key, []):
                    self._ids[key].append(eid)

    def lookup(self, text: str) -> list[str]:
        return self._ids.get(normalise(text), [])


@dataclass(frozen=True)
class SearchFact:
    """What the search step returns and what the question asks of it."""

    entity_id: str
    entity_name: str
    entity_type: str
    relation: str
    object_type: str  # the answer entity's KB type, or the literal's type
    answer: str
    answer_aliases: tuple[str, ...]
    answer_type: str  # a literal's type (year, quantity, ...) or "entity"
    result: str  # the search result snippet the trajectory records

    def relation_phrase(self) -> str:
        return self.relation.replace("_", " ")


def find_fact(kb: KnowledgeBase, index: NameIndex, name: str, seed: str) -> Union[SearchFact, Rejection, None]:
    """The fact a search for `name` yields (chosen by `seed`), a refusal, or None when no entity has the name."""
    if not searchable(name):
        return None
    ids = index.lookup(name)
    if not ids:
        return None
    if len(ids) > 1:
        return Rejection(AMBIGUOUS_NAME, f"{name!r} names {len(ids)} KB entities ({', '.join(ids[:5])})")
    eid = ids[0]
    entity = kb.entities[eid]
    facts = [(rel, obj) for rel, objs in sorted(kb.relations(eid).items()) if len(objs) == 1 for obj in objs]
    if not facts:
        return Rejection(NO_FACTS, f"KB entity {eid} ({entity.name!r}) has no single-valued fact to ask about")
    rel, obj = facts[min(len(facts) - 1, int(seeded_uniform("ocr_search_fact", seed) * len(facts)))]
    if isinstance(obj, Literal):
        answer, aliases, kind = obj.value, ((obj.text(),) if obj.unit else ()), obj.type
    else:
        target = kb.entities[obj]
        answer, aliases, kind = target.name, tuple(target.aliases), "entity"
    shown = obj.text() if isinstance(obj, Literal) else answer
    result = f"{entity.name}" + (f" ({entity.description})" if entity.description else "") + \
        f": {rel.replace('_', ' ')} {shown}."
    otype = kind if isinstance(obj, Literal) else kb.entities[obj].type
    return SearchFact(eid, entity.name, entity.type, rel, otype, answer, aliases, kind, result)


def search_question(kind: str, region: str, fact: SearchFact, templates: Templates) -> str:
    """The question: it points at the entity by where its name is and asks for the fact, in the wording of
    imagemining's relation templates ("In which district is the museum named on the small label near the left
    of the image located?"), then says which tools lead there; the language is the templates' (`wording.py`)."""
    w = WORDINGS[templates.language]
    subject = fill_template(w.search_subject, type_noun=templates.noun(fact.entity_type), region=w.regions[region],
                            text_noun=w.text_nouns.get(kind, w.text_nouns["label"]))
    t = templates.relation(fact.relation, fact.entity_type)
    if t is not None and t.question:
        asked = fill_template(t.question, subject=subject, object_noun=templates.noun(fact.object_type))
    else:
        asked = fill_template(templates.question, phrase=f"the {fact.relation_phrase()} of {subject}"
                              if templates.language == "en" else f"{subject}的{fact.relation_phrase()}")
    return f"{asked}{w.joiner}{w.search_hint}"


def check_search(fact: SearchFact, question: str, transcription: str) -> Optional[Rejection]:
    """A leak (the result holds the question) or an answer the picture already shows; None when fine."""
    if normalise(question) and normalise(question) in normalise(fact.result):
        return Rejection(SEARCH_LEAK, "the search result holds the question verbatim")
    seen = normalise(transcription)
    for a in (fact.answer, *fact.answer_aliases):
        if contains_phrase(seen, normalise(a)):
            return Rejection(ANSWER_IN_IMAGE, f"the answer {a!r} is readable in the picture: no search needed")
    return None


def ambiguous_regions(entities: Sequence[tuple[str, str]]) -> set[int]:
    """Indices of entities whose (kind, region) another entity shares: a reference by region misleads."""
    seen: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(entities):
        seen.setdefault(key, []).append(i)
    return {i for ids in seen.values() if len(ids) > 1 for i in ids}


def tool_steps(crop_box_1000: list[int], read: str, fact: Optional[SearchFact]) -> list[tuple[str, str, str]]:
    """(tool, JSON arguments, result) of each call: crop (result: what the crop reads), then search
    (result: the snippet) when the task needs it."""
    steps = [("crop", json.dumps({"bbox": crop_box_1000}), read)]
    if fact is not None:
        steps.append(("search", json.dumps({"query": read}, ensure_ascii=False), fact.result))
    return steps
