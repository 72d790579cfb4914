"""A knowledge base for Visual-Jump QA: entities, aliases, facts, degrees, entity linking.

Plain Python, no Beam. The KB is one JSONL file (or `.jsonl.gz`); each line is
an entity or a fact (`kind` may say which; otherwise a line with `subject` and
`relation` is a fact, a line with `id` is an entity):

    {"id": "Q1", "name": "Golden Gate Bridge", "aliases": ["GGB"], "type": "bridge",
     "description": "suspension bridge", "images": ["https://..."]}
    {"subject": "Q1", "relation": "located_in", "object": "Q62"}
    {"subject": "Q1", "relation": "opened_in", "value": 1937, "value_type": "year"}
    {"subject": "Q1", "relation": "length", "value": 2737, "value_type": "quantity", "unit": "metre",
     "source_url": "https://..."}

`object` is an entity id, or a literal: a text that is no entity id, a number,
or `{"value": ..., "type": ..., "unit": ...}`; `value` (with an optional
`value_type` and `unit`) is a literal too. An `object` shaped like a Wikidata
id (Q42) that the KB lacks is a dangling reference (`unknown_object`). Lines may come in any order (a fact may name an entity defined
later). A line that is not JSON, lacks a field, repeats an entity id or names
an unknown entity is skipped and recorded as a `KbIssue` (line number, reason
code, detail): the KB still loads. Facts are directed; a (subject, relation)
pair with exactly one object is *functional* (Visual-Jump paths walk only
those); one with several objects is kept and reported as multi-valued.

Names are matched normalised (`normalise`: Unicode NFKD without accents,
case-folded, punctuation as spaces). `EntityLinker` finds KB names and aliases
in captions, alt text and OCR text with Aho-Corasick automata (pyahocorasick):
exact (case-sensitive) first, then normalised, whole words only, longest match
first; a surface form shared by several entities is ambiguous and not linked.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO, Optional, Union

import ahocorasick

from quarry.operators.scripts import UNSPACED
from quarry.schemas.imagemining import LinkSection

try:  # several times faster on million-line KBs; the standard library otherwise
    from orjson import JSONDecodeError as _OrjsonError
    from orjson import loads as _loads

    _JSON_ERRORS: tuple = (_OrjsonError,)
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads
    _JSON_ERRORS = (json.JSONDecodeError,)

MAX_ISSUES = 10_000  # issues kept in memory (all are counted)
MAX_NAME_CHARS = 300
MAX_ALIASES = 64

_PUNCT = re.compile(r"[\W_]+", re.UNICODE)
# An `object` text shaped like an entity id (Wikidata Q42/P31/L7, or an ID with digits only) that is
# not in the KB is a dangling reference, not a literal.
_ID_LIKE = re.compile(r"^(?:[QPL]\d+|\d+)$")

# Reason codes for KB lines that are skipped.
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
DUPLICATE_ENTITY = "duplicate_entity"
UNKNOWN_SUBJECT = "unknown_subject"
UNKNOWN_OBJECT = "unknown_object"
DUPLICATE_FACT = "duplicate_fact"
REASONS: tuple[str, ...] = (INVALID_JSON, MISSING_FIELD, DUPLICATE_ENTITY, UNKNOWN_SUBJECT, UNKNOWN_OBJECT,
                            DUPLICATE_FACT)  # why a KB line is skipped (rejects at stage `kb`)
MIN_CHARS = LinkSection().min_chars  # link.min_chars' default (schemas/imagemining.py)


def normalise(text: str) -> str:
    """Lower-case, accent-free, punctuation-free, single-spaced text for name matching."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(_PUNCT.sub(" ", text.casefold()).split())


def contains_phrase(haystack_norm: str, needle_norm: str) -> bool:
    """Whether a normalised phrase occurs as whole words in normalised text (as a substring when it is written
    in Han or kana, which put no spaces between words: 霍珀 in 格蕾丝霍珀出生在哪里)."""
    if not needle_norm:
        return False
    if UNSPACED.search(needle_norm):
        return needle_norm in haystack_norm
    return f" {needle_norm} " in f" {haystack_norm} "


@dataclass(frozen=True)
class Literal:
    """A literal fact object: a value as text, its type (year, quantity, date, string...) and unit."""

    value: str
    type: str = "string"
    unit: Optional[str] = None

    def key(self) -> str:
        return self._key

    @cached_property
    def _key(self) -> str:
        return f"literal:{self.type}:{normalise(self.value)}:{self.unit or ''}"

    @cached_property
    def names_norm(self) -> tuple[str, ...]:
        return tuple(n for n in dict.fromkeys((normalise(self.value), normalise(self.text()))) if n)

    def text(self) -> str:
        return f"{self.value} {self.unit}" if self.unit else self.value


Object = Union[str, Literal]  # an entity id or a literal


@dataclass(frozen=True, slots=True)
class Entity:
    id: str
    name: str
    type: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    images: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,) + self.aliases


@dataclass(frozen=True)
class KbIssue:
    line: int
    reason: str
    detail: str


def _text(v: object) -> Optional[str]:
    if type(v) is str:
        v = v.strip()
        return sys.intern(v[:MAX_NAME_CHARS]) if v else None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


def _literal_value(v: object) -> Optional[str]:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return _text(v)


def parse_entity(rec: dict) -> Optional[Entity]:
    """An entity record as an `Entity`; None when it lacks an id or a name."""
    eid, name = _text(rec.get("id")), _text(rec.get("name"))
    if eid is None or name is None:
        return None
    aliases = rec.get("aliases") or []
    if not isinstance(aliases, list):
        aliases = [aliases]
    clean_aliases = tuple(dict.fromkeys(a for a in (_text(x) for x in aliases[:MAX_ALIASES]) if a and a != name))
    images = rec.get("images") or rec.get("image") or []
    if isinstance(images, str):
        images = [images]
    etype = rec.get("type")
    if isinstance(etype, list):  # several types (Wikidata instance-of): the first is the question's noun
        etype = next((t for t in etype if isinstance(t, str) and t.strip()), None)
    etype = _text(etype) or "entity"
    return Entity(
        id=eid, name=name, type=etype, aliases=clean_aliases,
        description=_text(rec.get("description")) or "",
        images=tuple(i for i in images if isinstance(i, str)) if isinstance(images, list) else (),
    )


@dataclass(frozen=True)
class FactLine:
    """A fact record with its subject and relation read; the object is resolved once entities are known."""

    subject: str
    relation: str
    rec: dict

    def ready(self, has_entity: Callable[[str], bool]) -> bool:
        """Whether every entity it names is known already (else it waits for the end of the file)."""
        obj = self.rec.get("object")
        return has_entity(self.subject) and (not isinstance(obj, str) or has_entity(obj))

    def object(self, has_entity: Callable[[str], bool]) -> Union[Object, KbIssue]:
        """The fact's object (entity id or `Literal`), or the issue (line 0) that rejects the fact."""
        raw = self.rec.get("object")
        if isinstance(raw, str) and has_entity(raw.strip()):
            return sys.intern(raw.strip())
        if isinstance(raw, str) and _ID_LIKE.match(raw.strip()):
            return KbIssue(0, UNKNOWN_OBJECT, f"object {raw!r} looks like an entity id but is not an entity of "
                                              "the KB (give a literal as `value`)")
        # a literal: `value` (+ `value_type`, `unit`), an `object` that is a {value, type, unit}
        # object, a number, or a text that is no entity id
        rec = self.rec
        spec = raw if isinstance(raw, dict) else {"value": raw, "type": rec.get("value_type"), "unit": rec.get("unit")}
        if raw is None:
            spec = {"value": rec.get("value"), "type": rec.get("value_type"), "unit": rec.get("unit")}
        value = _literal_value(spec.get("value"))
        if value is None:
            return KbIssue(0, MISSING_FIELD, "a fact needs an `object` (entity id or literal) or a `value`")
        vtype = _text(spec.get("type") or spec.get("value_type"))
        if vtype is None:
            vtype = "quantity" if isinstance(spec.get("value"), (int, float)) else "string"
        return Literal(value, vtype, _text(spec.get("unit")))


def parse_record(raw: str) -> Union[Entity, FactLine, KbIssue]:
    """One non-blank KB line as an entity, a fact (object unresolved) or the issue (line 0) that rejects it."""
    try:
        rec = _loads(raw)
    except _JSON_ERRORS as e:
        return KbIssue(0, INVALID_JSON, f"{e.msg} at column {e.colno}")  # orjson's is a json.JSONDecodeError
    except RecursionError:  # the standard library's parser on nesting deeper than the interpreter's limit
        return KbIssue(0, INVALID_JSON, "JSON nested too deeply")
    if not isinstance(rec, dict):
        return KbIssue(0, INVALID_JSON, f"line is a JSON {type(rec).__name__}, not an object")
    kind = rec.get("kind")
    if kind == "fact" or (kind is None and "subject" in rec and "relation" in rec):
        subject, relation = _text(rec.get("subject")), _text(rec.get("relation"))
        if subject is None or relation is None:
            return KbIssue(0, MISSING_FIELD, "a fact needs a subject and a relation")
        return FactLine(subject, relation, rec)
    if kind == "entity" or (kind is None and "id" in rec):
        return parse_entity(rec) or KbIssue(0, MISSING_FIELD, "an entity needs an id and a name")
    return KbIssue(0, MISSING_FIELD, "neither an entity (id, name, type) nor a fact (subject, relation)")


class KbSink(ABC):
    """Where `read_kb` puts a KB: the in-memory `KnowledgeBase` or the SQLite store (operators/imagemining/kb_store.py).

    The sink stores; `read_kb` decides what is valid, so both keep the same
    entities, facts (in the same order) and issues.
    """

    lines = 0

    @abstractmethod
    def has_entity(self, eid: str) -> bool:
        ...

    @abstractmethod
    def put_entity(self, entity: Entity) -> bool:
        """Store a new entity; False when its id is taken (the first definition is kept)."""
        ...

    @abstractmethod
    def put_fact(self, subject: str, relation: str, obj: Object) -> bool:
        """Append an object to (subject, relation); False when that fact is there already."""
        ...

    @abstractmethod
    def defer(self, lineno: int, raw: str, fact: FactLine) -> None:
        """Keep a fact naming an entity not seen yet until every line is read."""
        ...

    @abstractmethod
    def deferred(self) -> Iterable[tuple[int, FactLine]]:
        """The deferred facts, in line order."""
        ...

    @abstractmethod
    def issue(self, line: int, reason: str, detail: str) -> None:
        ...


def read_kb(lines: Iterable[str], sink: KbSink) -> None:
    """Parse KB JSONL lines into `sink`: bad lines become issues, facts may come before their entities."""
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        sink.lines += 1
        rec = parse_record(raw)
        if isinstance(rec, KbIssue):
            sink.issue(lineno, rec.reason, rec.detail)
        elif isinstance(rec, Entity):
            if not sink.put_entity(rec):
                sink.issue(lineno, DUPLICATE_ENTITY, f"entity {rec.id} defined again (the first definition is kept)")
        elif rec.ready(sink.has_entity):
            _put_fact(sink, lineno, rec)
        else:  # checked once every entity is known (lines may come in any order)
            sink.defer(lineno, raw, rec)
    for lineno, fact in sink.deferred():
        _put_fact(sink, lineno, fact)


def _put_fact(sink: KbSink, lineno: int, fact: FactLine) -> None:
    if not sink.has_entity(fact.subject):
        sink.issue(lineno, UNKNOWN_SUBJECT, f"subject {fact.subject} is not an entity of the KB")
        return
    obj = fact.object(sink.has_entity)
    if isinstance(obj, KbIssue):
        sink.issue(lineno, obj.reason, obj.detail)
    elif not sink.put_fact(fact.subject, fact.relation, obj):
        sink.issue(lineno, DUPLICATE_FACT, f"{fact.subject} {fact.relation} {obj} given twice")


def merge_relations(rels: dict[str, list[Object]], aliases: dict[str, str]) -> tuple[int, list[Object]]:
    """Rename one subject's relations in place (objects merged, order kept): (facts renamed, objects dropped
    because the same fact was there under both names)."""
    renamed = 0
    dropped: list[Object] = []
    for old in [r for r in rels if r in aliases and aliases[r] != r]:
        objs = rels.pop(old)
        merged = rels.setdefault(aliases[old], [])
        for o in objs:
            if o not in merged:
                merged.append(o)
            else:  # the same fact under both names: counted once
                dropped.append(o)
        renamed += len(objs)
    return renamed, dropped


def entity_names_norm(e: Entity) -> tuple[str, ...]:
    """Normalised name and aliases of an entity, without repeats."""
    return tuple(dict.fromkeys(n for n in (normalise(x) for x in e.names) if n))


class KbQueries(ABC):
    """Queries both KB kinds answer the same way from `entities` and `names_norm`."""

    entities: Mapping[str, Entity]

    @abstractmethod
    def names_norm(self, eid: str) -> tuple[str, ...]:
        ...

    @abstractmethod
    def new_linker(self, min_chars: int = MIN_CHARS) -> "Linker":
        ...

    @cached_property
    def linker(self) -> "Linker":
        """The linker with the default `min_chars`, built on first use."""
        return self.new_linker()

    def entity(self, eid: str) -> Optional[Entity]:
        return self.entities.get(eid)

    def object_type(self, obj: Object) -> str:
        return obj.type if isinstance(obj, Literal) else self.entities[obj].type

    def object_key(self, obj: Object) -> str:
        """A stable key of an answer: `entity:<id>` or the literal's normalised value."""
        return obj.key() if isinstance(obj, Literal) else f"entity:{obj}"

    def object_name(self, obj: Object) -> str:
        return obj.text() if isinstance(obj, Literal) else self.entities[obj].name

    def object_names_norm(self, obj: Object) -> tuple[str, ...]:
        if isinstance(obj, Literal):
            return obj.names_norm
        return self.names_norm(obj)


class KnowledgeBase(KbSink, KbQueries):
    """Entities and directed facts in memory, indexed for path walking and candidate counting."""

    def __init__(self) -> None:
        self.entities: dict[str, Entity] = {}
        # subject -> relation -> objects (insertion order; duplicates removed)
        self.facts: dict[str, dict[str, list[Object]]] = {}
        self.degree: dict[str, int] = defaultdict(int)
        self.issues: list[KbIssue] = []
        self.issue_count = 0
        self.lines = 0
        self.fact_count = 0
        self._norm_names: dict[str, tuple[str, ...]] = {}
        self._literals: dict[Literal, Literal] = {}
        self._by_type_relation: dict[tuple[str, str], list[str]] = {}
        self._pending: list[tuple[int, FactLine]] = []  # facts naming entities not seen yet

    # -- loading (KbSink)

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> "KnowledgeBase":
        kb = cls()
        read_kb(lines, kb)
        return kb

    def issue(self, line: int, reason: str, detail: str) -> None:
        self.issue_count += 1
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(KbIssue(line, reason, detail[:300]))

    def has_entity(self, eid: str) -> bool:
        return eid in self.entities

    def put_entity(self, entity: Entity) -> bool:
        if entity.id in self.entities:
            return False
        self.entities[entity.id] = entity
        return True

    def defer(self, lineno: int, raw: str, fact: FactLine) -> None:
        self._pending.append((lineno, fact))

    def deferred(self) -> Iterable[tuple[int, FactLine]]:
        pending, self._pending = self._pending, []
        return pending

    def put_fact(self, subject: str, relation: str, obj: Object) -> bool:
        if isinstance(obj, Literal):
            obj = self._literals.setdefault(obj, obj)  # one object per distinct literal (memory)
        objects = self.facts.setdefault(subject, {}).setdefault(relation, [])
        if obj in objects:
            return False
        objects.append(obj)
        self.fact_count += 1
        self.degree[subject] += 1
        if isinstance(obj, str):
            self.degree[obj] += 1
        return True

    def rename_relations(self, aliases: dict[str, str]) -> int:
        """Rename relations (e.g. Wikidata `P131` -> `located_in`), merging objects; returns facts renamed.

        Call before any query: the type/relation index is rebuilt on next use.
        """
        renamed = 0
        for subject, rels in self.facts.items():
            n, dropped = merge_relations(rels, aliases)
            renamed += n
            for o in dropped:
                self.fact_count -= 1
                self.degree[subject] -= 1
                if isinstance(o, str):
                    self.degree[o] -= 1
        self._by_type_relation = {}
        return renamed

    # -- queries

    def objects(self, subject: str, relation: str) -> list[Object]:
        return self.facts.get(subject, {}).get(relation, [])

    def relations(self, subject: str) -> dict[str, list[Object]]:
        return self.facts.get(subject, {})

    def names_norm(self, eid: str) -> tuple[str, ...]:
        """Normalised name and aliases of an entity (cached)."""
        got = self._norm_names.get(eid)
        if got is None:
            got = self._norm_names[eid] = entity_names_norm(self.entities[eid])
        return got

    def subjects_with(self, etype: str, relation: str) -> list[str]:
        """Entities of a type that have at least one `relation` fact (sorted; the index is built once)."""
        if not self._by_type_relation and self.facts:
            index: dict[tuple[str, str], list[str]] = defaultdict(list)
            for s in sorted(self.facts):
                t = self.entities[s].type
                for r in self.facts[s]:
                    index[(t, r)].append(s)
            self._by_type_relation = dict(index)
        return self._by_type_relation.get((etype, relation), [])

    def stats(self) -> dict[str, int]:
        multi = sum(1 for rels in self.facts.values() for objs in rels.values() if len(objs) > 1)
        return {"lines": self.lines, "entities": len(self.entities), "facts": self.fact_count,
                "multi_valued_pairs": multi, "skipped_lines": self.issue_count}

    def new_linker(self, min_chars: int = MIN_CHARS) -> "EntityLinker":
        return EntityLinker(self, min_chars)


class KbError(ValueError):
    """The KB file cannot be read at all (missing, unreadable, no entity)."""


def _lines(fh: IO[bytes]) -> Iterator[str]:
    for raw in iter(fh.readline, b""):
        yield raw.decode("utf-8", errors="replace")


def load_kb(path: str) -> KnowledgeBase:
    """Load a KB JSONL file through Beam's FileSystems (local, gs://, s3://; .gz inflated a chunk at a time)."""
    from apache_beam.io.filesystem import BeamIOError

    from quarry.operators.inputs.opening import open_file

    try:
        with open_file(path) as fh:
            kb = KnowledgeBase.from_lines(_lines(fh))
    except (BeamIOError, OSError) as e:
        raise KbError(f"knowledge base {path}: cannot read it ({e})") from None
    if not kb.entities:
        raise KbError(f"knowledge base {path}: no entity lines (expected JSONL lines like "
                      '{"id": "Q1", "name": "...", "type": "..."})')
    return kb


# --------------------------------------------------------------------------- entity linking


@dataclass(frozen=True)
class Link:
    """An entity found in a text: the entity, how it was found, and the text span."""

    entity_id: str
    method: str  # "exact:<field>" | "normalised:<field>"
    surface: str


@dataclass
class _Automaton:
    automaton: "ahocorasick.Automaton"
    empty: bool = field(default=True)


def _word_char(c: str) -> bool:
    """A character inside a word: a Han or kana character is not (those scripts put no spaces between words,
    so a name may start or end at any of them)."""
    return (c.isalnum() or c == "_") and not UNSPACED.match(c)


def long_enough(name: str, min_chars: int) -> bool:
    """Whether a name is linked at all: `min_chars` characters, or two in Han or kana (北京, 東京)."""
    return len(name) >= min_chars or (len(name) >= 2 and bool(UNSPACED.search(name)))


Match = tuple[int, int, str, tuple[str, ...]]  # (start, end, surface, entity ids)


def non_overlapping(found: list[Match]) -> list[Match]:
    """Longest match first, then leftmost; a match overlapping a kept one is dropped; in text order."""
    found = sorted(found, key=lambda m: (-(m[1] - m[0]), m[0]))
    taken: list[tuple[int, int]] = []
    out = []
    for m in found:
        if any(m[0] < e and s < m[1] for s, e in taken):
            continue
        taken.append((m[0], m[1]))
        out.append(m)
    return sorted(out)


class Linker(ABC):
    """Finds KB names in texts; subclasses say how surfaces are looked up (`_find`), the rules are here."""

    min_chars = 3

    @abstractmethod
    def _find(self, method: str, text: str) -> list[Match]:
        """Whole-word occurrences of the `method` ("exact" | "normalised") surfaces in `text`, any overlap."""
        ...

    def link(self, texts: dict[str, str]) -> tuple[list[Link], list[str]]:
        """Entities named in `texts` (field name -> text): (links, ambiguous surfaces).

        Exact matching runs on every field first; normalised matching adds what
        exact matching missed. One link per entity (the first found).
        """
        links: dict[str, Link] = {}
        ambiguous: list[str] = []
        seen_ambiguous: set[str] = set()
        for method, prep in (("exact", lambda t: t), ("normalised", normalise)):
            for name, text in texts.items():
                if not text:
                    continue
                text = prep(text)
                for _, _, surface, ids in non_overlapping(self._find(method, text)) if text else ():
                    if len(ids) > 1:
                        if normalise(surface) not in seen_ambiguous:
                            seen_ambiguous.add(normalise(surface))
                            ambiguous.append(surface)
                        continue
                    if ids[0] not in links:
                        links[ids[0]] = Link(ids[0], f"{method}:{name}", surface)
        return list(links.values()), ambiguous


class EntityLinker(Linker):
    """Aho-Corasick over every KB name and alias, exact and normalised.

    A surface form shared by several entities is ambiguous and never linked;
    names shorter than `min_chars` are not matched (they hit ordinary words).
    """

    def __init__(self, kb: KnowledgeBase, min_chars: int = MIN_CHARS):
        self.min_chars = min_chars
        exact: dict[str, set[str]] = defaultdict(set)
        norm: dict[str, set[str]] = defaultdict(set)
        for eid, e in kb.entities.items():
            for n in e.names:
                if long_enough(n, min_chars):
                    exact[n].add(eid)
            for n in kb.names_norm(eid):
                if long_enough(n, min_chars):
                    norm[n].add(eid)
        self.automata = {"exact": self._build(exact), "normalised": self._build(norm)}

    @staticmethod
    def _build(table: dict[str, set[str]]) -> _Automaton:
        a = ahocorasick.Automaton()
        for surface, ids in table.items():
            a.add_word(surface, (surface, tuple(sorted(ids))))
        if len(table):
            a.make_automaton()
        return _Automaton(a, empty=not table)

    def _find(self, method: str, text: str) -> list[Match]:
        auto = self.automata[method]
        if auto.empty:
            return []
        found = []
        for end, (surface, ids) in auto.automaton.iter(text):
            start = end - len(surface) + 1
            if start > 0 and _word_char(text[start - 1]) and _word_char(surface[0]):
                continue
            if end + 1 < len(text) and _word_char(text[end + 1]) and _word_char(surface[-1]):
                continue
            found.append((start, end + 1, surface, ids))
        return found
