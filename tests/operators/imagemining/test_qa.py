"""Visual-Jump QA operators: path walking, templated questions, every filter, tags and tiers,
and the "done when" properties on a random KB: no leak, unique answers, shortcuts rejected,
tiers rising with hops."""

from __future__ import annotations

import json
import random

import pytest

from quarry.operators.imagemining import qa
from quarry.operators.imagemining.kb import KnowledgeBase, Literal, contains_phrase, normalise
from quarry.operators.imagemining.qa import Filters, ImageContext, ImageEntity, Path


def kb_of(entities, facts) -> KnowledgeBase:
    lines = [json.dumps({"id": i, "name": n, "type": t, **({"aliases": a} if a else {})})
             for i, n, t, *rest in entities for a in [rest[0] if rest else None]]
    for s, r, o in facts:
        lines.append(json.dumps({"subject": s, "relation": r, **({"value": o.value, "value_type": o.type}
                                                                if isinstance(o, Literal) else {"object": o})}))
    return KnowledgeBase.from_lines(lines)


@pytest.fixture(scope="module")
def templates():
    return qa.load_templates()


# Two bridges in two cities in two countries, plus a hub country and a cycle.
ENTITIES = [
    ("B1", "Golden Gate Bridge", "bridge", ["Golden Gate"]), ("B2", "Tower Bridge", "bridge"),
    ("C1", "San Francisco", "city", ["SF City"]), ("C2", "London", "city"),
    ("S1", "California", "state"), ("K1", "United States", "country", ["USA"]),
    ("K2", "United Kingdom", "country"), ("A1", "Joseph Strauss", "person"), ("A2", "Horace Jones", "person"),
    ("R1", "Espresso", "beverage"), ("I1", "Italy", "country"), ("M1", "Rome", "city"),
]
FACTS = [
    ("B1", "located_in", "C1"), ("C1", "located_in", "S1"), ("S1", "country", "K1"), ("K1", "capital", "C1"),
    ("B2", "located_in", "C2"), ("C2", "country", "K2"), ("K2", "capital", "C2"),
    ("B1", "architect", "A1"), ("B2", "architect", "A2"), ("A1", "place_of_birth", "C1"),
    ("A2", "place_of_birth", "C2"), ("B1", "opened_in", Literal("1937", "year")),
    ("B2", "opened_in", Literal("1894", "year")),
    ("R1", "country", "I1"), ("I1", "capital", "M1"),
    ("B1", "crosses", "C1"), ("B1", "crosses", "C2"),  # not functional: two objects
]


@pytest.fixture(scope="module")
def kb():
    return kb_of(ENTITIES, FACTS)


def ctx_for(*entities, ocr="", width=400, height=300) -> ImageContext:
    return ImageContext("img", width, height, tuple(entities), normalise(ocr), None)


def cand(kb, templates, start, hops, ctx=None, ambiguous_at=None):
    ctx = ctx or ctx_for(ImageEntity(start))
    path = Path(start, tuple(hops), ambiguous_at)
    ie = next(e for e in ctx.entities if e.entity_id == start)
    ref = qa.reference_for(kb, templates, ctx, ie)
    return qa.Candidate(path, ie, ref, qa.build_question(kb, templates, path, ref.phrase)), ctx


def test_templates_load_and_bad_files_fail_in_one_line(tmp_path, templates):
    assert templates.relation("P131", "bridge") is templates.relation("located_in", "bridge")
    assert templates.relation("country", "person").phrase.startswith("the country of citizenship")
    assert templates.noun("tv_series") == "TV series" and templates.noun("space_probe") == "space probe"
    with pytest.raises(qa.TemplateError, match="no language 'xx'"):
        qa.load_templates(None, "xx")
    bad = tmp_path / "t.yaml"
    bad.write_text("languages: {en: {image_reference: 'x', image_reference_at: 'y', question: 'What is {phrase}?', "
                   "relations: {r: {phrase: 'no subject here'}}}}")
    with pytest.raises(qa.TemplateError, match="relation 'r' needs a `phrase`"):
        qa.load_templates(str(bad))
    bad.write_text("{unclosed")
    with pytest.raises(qa.TemplateError, match="not valid YAML"):
        qa.load_templates(str(bad))


def test_walk_avoids_cycles_hubs_and_stops_at_multi_valued_and_literals(kb, templates):
    paths = qa.walk_paths(kb, "B1", templates, 1, 4, max_degree=1000, max_paths=100, seed="s")
    keys = {tuple((r, o if isinstance(o, str) else o.value) for _, r, o in p.hops) for p in paths}
    assert (("located_in", "C1"), ("located_in", "S1"), ("country", "K1")) in keys
    # K1 -capital-> C1 would revisit C1 (a cycle): never walked
    assert not any(len(p.hops) == 4 and p.hops[-1][1] == "capital" for p in paths)
    # the two-object relation is one marked path, never extended
    crosses = [p for p in paths if p.hops[0][1] == "crosses"]
    assert len(crosses) == 1 and crosses[0].ambiguous_at == 0
    assert all(len(p.hops) == 1 or p.hops[0][1] != "opened_in" for p in paths)  # literals end paths
    # a hub (degree above max_degree) is not walked through, but may still be the answer
    limited = qa.walk_paths(kb, "B1", templates, 1, 4, max_degree=2, max_paths=100, seed="s")
    assert all(kb.degree.get(o, 0) <= 2 for p in limited for _, _, o in p.hops[:-1] if isinstance(o, str))
    assert any(p.answer == "C1" for p in limited)
    # bounded and deterministic
    assert qa.walk_paths(kb, "B1", templates, 2, 4, 1000, 3, "s") == qa.walk_paths(kb, "B1", templates, 2, 4, 1000, 3, "s")
    assert len(qa.walk_paths(kb, "B1", templates, 2, 4, 1000, 3, "s")) == 3
    assert all(2 <= len(p.hops) <= 4 for p in qa.walk_paths(kb, "B1", templates, 2, 4, 1000, 100, "s"))
    assert qa.walk_paths(kb, "NOPE", templates, 2, 4, 1000, 3, "s") == []


def test_question_names_no_entity_and_nests_relations(kb, templates):
    c, _ = cand(kb, templates, "B1", [("B1", "architect", "A1"), ("A1", "place_of_birth", "C1")])
    assert c.question == "Where was the architect of the bridge in this picture born?"
    c, _ = cand(kb, templates, "B1", [("B1", "located_in", "C1"), ("C1", "located_in", "S1"), ("S1", "country", "K1")])
    # located_in twice in a row reads as its `twice` template (it read "the state in which the city in which
    # the bridge in this picture is located is located")
    assert c.question == "In which country is the state containing the city where the bridge in this picture is located?"


def test_position_tells_same_type_entities_apart(kb, templates):
    left, right = ImageEntity("B1", (10, 100, 90, 200)), ImageEntity("B2", (300, 100, 390, 200))
    c, ctx = cand(kb, templates, "B1", [("B1", "architect", "A1"), ("A1", "place_of_birth", "C1")],
                  ctx_for(left, right))
    assert c.reference.position == "left" and "the bridge at the left of this picture" in c.question
    assert Filters(kb, templates).ambiguous(c, ctx) is None
    # no boxes: "the bridge in this picture" fits both bridges, which lead to different answers
    c, ctx = cand(kb, templates, "B1", [("B1", "architect", "A1"), ("A1", "place_of_birth", "C1")],
                  ctx_for(ImageEntity("B1"), ImageEntity("B2")))
    assert Filters(kb, templates).ambiguous(c, ctx).reason == qa.AMBIGUOUS_REFERENCE


@pytest.mark.parametrize("case,expected", [
    ("good", None),
    ("one_hop", qa.TRIVIAL),
    ("answer_in_ocr", qa.TRIVIAL),
    ("multi_valued", qa.AMBIGUOUS),
    ("only_beverage", qa.TEXT_SHORTCUT),
    ("same_answer_for_all", qa.TEXT_SHORTCUT),
])
def test_filter_table(kb, templates, case, expected):
    f = Filters(kb, templates, min_hops=2)
    hops = {
        "good": [("B1", "architect", "A1"), ("A1", "place_of_birth", "C1")],
        "one_hop": [("B1", "architect", "A1")],
        "answer_in_ocr": [("B1", "architect", "A1"), ("A1", "place_of_birth", "C1")],
        "multi_valued": [("B1", "crosses", "C1"), ("C1", "located_in", "S1")],
        "only_beverage": [("R1", "country", "I1"), ("I1", "capital", "M1")],
        # every bridge's city's country... both bridges: B1 -> C1 -> S1 (state), B2 -> C2 has no located_in
        "same_answer_for_all": [("B1", "located_in", "C1"), ("C1", "located_in", "S1")],
    }[case]
    start = hops[0][0]
    ctx = ctx_for(ImageEntity(start), ocr="Welcome to SAN FRANCISCO" if case == "answer_in_ocr" else "")
    c, ctx = cand(kb, templates, start, hops, ctx, ambiguous_at=0 if case == "multi_valued" else None)
    verdict = f.check(c, ctx)
    assert (verdict.reason if verdict else None) == expected, verdict


def test_name_leak_and_rewrite_checks(kb, templates):
    f = Filters(kb, templates)
    c, ctx = cand(kb, templates, "B1", [("B1", "architect", "A1"), ("A1", "place_of_birth", "C1")])
    assert f.check(c, ctx) is None
    for leaking in ("Where was the architect of the golden gate in this photo born?",  # image entity alias
                    "Where was JOSEPH STRAUSS, who designed the bridge in this picture, born?",  # bridge
                    "Was the architect of the bridge pictured born in San-Francisco?",  # the answer, normalised
                    "Where was the architect of the bridge in this picture born (SF City)?",  # the answer's alias
                    "Where was the architect of the bridge in this picture, Horace Jones, born?"):  # a wrong name
        assert f.check(c, ctx, question=leaking).reason == qa.NAME_LEAK, leaking
    assert f.check(c, ctx, question="Where was the designer of this famous bridge born?").reason == qa.LOST_IMAGE
    assert f.check(c, ctx, question="Where was the designer of the bridge shown in the photo born?") is None


def test_near_duplicates_keep_the_first_by_id():
    items = [("b", "Where was the architect of the bridge in this picture born?"),
             ("a", "Where was the architect of the bridge in this picture born ?"),
             ("c", "In which year did the bridge in this picture open?"),
             ("d", "Where was the bridge's architect in this picture born?")]
    assert qa.near_duplicates(items, 90.0) == {"b": "a", "d": "a"}
    assert qa.near_duplicates(items, 100.0) == {"b": "a"}


def test_tags_and_tiers(kb, templates):
    small = ImageEntity("B1", (10, 10, 60, 60))  # 2500 px of 120000: needs a crop
    c, ctx = cand(kb, templates, "B1", [("B1", "architect", "A1"), ("A1", "place_of_birth", "C1")],
                  ctx_for(small, ImageEntity("C1")))
    tags = qa.tag(kb, templates, c, ctx, crop_share=0.1)
    assert tags.requires_crop and tags.crop_box == [10.0, 10.0, 60.0, 60.0] and tags.category == "visual search"
    # the answer city is in the picture too, but the KB reaches it without looking: no second visual hop
    assert tags.visual_hops == 1 and not tags.need_image_during_search and tags.crops_needed == 1
    assert [h.kind for h in tags.chain] == ["crop_recognise", "relation", "relation"]
    assert [h.visual for h in tags.chain] == [True, False, False]
    assert tags.domain == "places"
    tiers = [qa.tier_for(h, 1, False, 10, 5, 100) for h in (2, 3, 4)]
    assert tiers == ["easy", "medium", "hard"]
    assert qa.tier_for(2, 1, False, 500, 5, 100) == "very_easy"
    assert qa.tier_for(4, 2, True, 1, 5, 100) == "very_hard"


def test_parse_rewrite():
    assert qa.parse_rewrite("<think>hmm</think>\n\n\"Question: Who built it?\"") == "Who built it?"
    assert qa.parse_rewrite("") is None and qa.parse_rewrite("  \n ") is None


def random_kb(seed: int) -> KnowledgeBase:
    rng = random.Random(seed)
    types = {"landmark": 30, "city": 12, "country": 4, "person": 20, "monument": 1}
    ents = [(f"{t[0]}{i}", f"{t.title()} Name {i}", t) for t, n in types.items() for i in range(n)]
    by_type = {t: [e[0] for e in ents if e[2] == t] for t in types}
    facts = []
    for e in by_type["landmark"]:
        facts.append((e, "located_in", rng.choice(by_type["city"])))
        facts.append((e, "architect", rng.choice(by_type["person"])))
        if rng.random() < 0.2:
            facts.append((e, "architect", rng.choice(by_type["person"])))  # sometimes two architects
    for e in by_type["person"]:
        facts.append((e, "place_of_birth", rng.choice(by_type["city"])))
        facts.append((e, "date_of_birth", Literal(str(rng.randint(1800, 1990)), "year")))
    for e in by_type["city"]:
        facts.append((e, "country", rng.choice(by_type["country"])))
        if rng.random() < 0.2:
            facts.append((e, "country", rng.choice(by_type["country"])))  # a disputed city: two countries
    facts.append(("m0", "located_in", rng.choice(by_type["city"])))  # the only monument: a text shortcut
    for e in by_type["country"]:
        facts.append((e, "capital", rng.choice(by_type["city"])))
    return kb_of(ents, facts)


@pytest.mark.parametrize("seed", [1, 2])
def test_done_when_properties_on_a_random_kb(templates, seed):
    kb = random_kb(seed)
    f = Filters(kb, templates, min_hops=2)
    kept = 0
    rejected: dict[str, int] = {}
    for lm in (e for e in kb.entities if e[0] in "lm"):
        ctx = ctx_for(ImageEntity(lm))
        for c in qa.candidates_for(kb, templates, ctx, ctx.entities[0], 2, 4, 1000, 50):
            verdict = f.check(c, ctx)
            if verdict is not None:
                rejected[verdict.reason] = rejected.get(verdict.reason, 0) + 1
                continue
            kept += 1
            q = normalise(c.question)
            assert not any(contains_phrase(q, n) for n in c.leak_names(kb))  # no name leaks
            chain = [(r, None) for r in c.path.relations]
            assert qa.resolve(kb, lm, chain) == {kb.object_key(c.path.answer)}  # the unique end of the path
            etype = kb.entities[lm].type
            typed = [(r, kb.object_type(o)) for _, r, o in c.path.hops]
            ends = set().union(*(qa.resolve(kb, s, typed) for s in kb.subjects_with(etype, typed[0][0])))
            assert len(ends) > 1  # the text alone admits several answers: the image is needed
    assert kept > 10 and rejected.get(qa.AMBIGUOUS) and rejected.get(qa.TEXT_SHORTCUT), (kept, rejected)
