"""Knowledge-base loading (bad lines become issues, never errors), name normalisation, entity linking."""

from __future__ import annotations

import gzip
import json

import pytest

from quarry.operators.imagemining import kb as kbm
from quarry.operators.imagemining.kb import EntityLinker, KbError, KnowledgeBase, Literal, load_kb, normalise


def lines(*recs) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in recs]


KB_LINES = lines(
    {"id": "B1", "name": "Golden Gate Bridge", "aliases": ["GGB", "Golden Gate"], "type": "bridge"},
    {"subject": "B1", "relation": "located_in", "object": "C1"},  # object defined later
    {"id": "C1", "name": "San Francisco", "aliases": ["SF", "San Fran"], "type": "city"},
    {"id": "C2", "name": "São Paulo", "type": "city"},
    {"id": "C3", "name": "Paris", "type": "city"},
    {"id": "P1", "name": "Paris", "type": "person"},  # a name shared by two entities
    "{not json",
    "[1, 2]",
    {"id": "B1", "name": "again", "type": "bridge"},
    {"subject": "B1", "relation": "opened_in", "value": 1937, "value_type": "year"},
    {"subject": "B1", "relation": "length", "value": 2737.0, "value_type": "quantity", "unit": "metre"},
    {"subject": "B1", "relation": "located_in", "object": "C1"},
    {"subject": "X9", "relation": "located_in", "object": "C1"},
    {"subject": "B1", "relation": "located_in", "object": "Q404"},  # a dangling id
    {"subject": "B1", "relation": "twin"},
    {"name": "no id"},
    {"subject": "C1", "relation": "sister_city", "object": "C2"},
    {"subject": "C1", "relation": "sister_city", "object": "C3"},
    "",
)


def test_load_records_every_bad_line_and_keeps_the_rest():
    kb = KnowledgeBase.from_lines(KB_LINES)
    assert set(kb.entities) == {"B1", "C1", "C2", "C3", "P1"}
    assert kb.entities["B1"].aliases == ("GGB", "Golden Gate")
    reasons = {(i.line, i.reason) for i in kb.issues}
    # line 2 names C1 before it is defined: it is checked after the last line, so line 12's copy
    # of the same fact was added first and line 2 is the one reported
    assert reasons == {(7, kbm.INVALID_JSON), (8, kbm.INVALID_JSON), (9, kbm.DUPLICATE_ENTITY),
                       (2, kbm.DUPLICATE_FACT), (13, kbm.UNKNOWN_SUBJECT), (14, kbm.UNKNOWN_OBJECT),
                       (15, kbm.MISSING_FIELD), (16, kbm.MISSING_FIELD)}
    assert kb.objects("B1", "located_in") == ["C1"]
    assert kb.objects("B1", "opened_in") == [Literal("1937", "year")]
    assert kb.objects("B1", "length") == [Literal("2737", "quantity", "metre")]
    assert kb.degree["B1"] == 3 and kb.degree["C1"] == 3
    stats = kb.stats()
    assert stats["facts"] == 5 and stats["multi_valued_pairs"] == 1 and stats["skipped_lines"] == 8
    assert stats["lines"] == 18  # the blank line is not counted


def test_normalise_and_whole_word_matching():
    assert normalise("  São-Paulo's  BRIDGE!") == "sao paulo s bridge"
    assert normalise("Ｆｕｌｌｗｉｄｔｈ") == "fullwidth"
    assert kbm.contains_phrase(normalise("Where is the Golden Gate?"), "golden gate")
    assert not kbm.contains_phrase(normalise("goldengate"), "golden gate")
    assert not kbm.contains_phrase("paris", "")


def test_subjects_with_indexes_type_and_relation():
    kb = KnowledgeBase.from_lines(KB_LINES)
    assert kb.subjects_with("bridge", "located_in") == ["B1"]
    assert kb.subjects_with("city", "sister_city") == ["C1"]
    assert kb.subjects_with("city", "located_in") == []


def test_linker_exact_then_normalised_whole_words_longest_first():
    kb = KnowledgeBase.from_lines(KB_LINES)
    linker = EntityLinker(kb, min_chars=3)
    links, ambiguous = linker.link({"caption": "The Golden Gate Bridge at dusk", "ocr_text": "SAO PAULO"})
    got = {(l.entity_id, l.method, l.surface) for l in links}
    # the longest match wins ("Golden Gate Bridge" over "Golden Gate"); the accent-free OCR text links normalised
    assert got == {("B1", "exact:caption", "Golden Gate Bridge"), ("C2", "normalised:ocr_text", "sao paulo")}
    assert ambiguous == []
    # "Paris" is two entities: never linked; "SF" is shorter than min_chars; "GGBs" is not a whole word
    links, ambiguous = linker.link({"alt": "Paris, SF and GGBs"})
    assert links == [] and ambiguous == ["Paris"]


def test_load_kb_reads_gzip_and_fails_clearly(tmp_path):
    path = tmp_path / "kb.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(KB_LINES))
    assert len(load_kb(str(path)).entities) == 5
    with pytest.raises(KbError, match="cannot read"):
        load_kb(str(tmp_path / "missing.jsonl"))
    (tmp_path / "facts.jsonl").write_text(json.dumps({"subject": "a", "relation": "b", "object": "c"}) + "\n")
    with pytest.raises(KbError, match="no entity"):
        load_kb(str(tmp_path / "facts.jsonl"))


def test_rename_relations_merges_wikidata_ids():
    kb = KnowledgeBase.from_lines(lines(
        {"id": "A", "name": "Alpha", "type": "t"}, {"id": "B", "name": "Beta", "type": "t"},
        {"subject": "A", "relation": "P131", "object": "B"}, {"subject": "A", "relation": "located_in", "object": "B"},
        {"subject": "B", "relation": "P131", "object": "A"}))
    assert kb.subjects_with("t", "P131") == ["A", "B"]
    assert kb.rename_relations({"P131": "located_in"}) == 2
    assert kb.relations("A") == {"located_in": ["B"]} and kb.objects("B", "located_in") == ["A"]
    assert kb.fact_count == 2 and kb.degree["A"] == 2 and kb.degree["B"] == 2
    assert kb.subjects_with("t", "located_in") == ["A", "B"] and kb.subjects_with("t", "P131") == []


def test_literal_objects_in_every_spelling():
    kb = KnowledgeBase.from_lines(lines(
        {"id": "A", "name": "Alpha", "type": "t"},
        {"subject": "A", "relation": "motto", "object": "Per aspera ad astra"},
        {"subject": "A", "relation": "height", "object": {"value": 324, "type": "quantity", "unit": "metre"}},
        {"subject": "A", "relation": "floors", "object": 81},
        {"subject": "A", "relation": "opened_in", "value": "1889", "value_type": "year"},
        {"subject": "A", "relation": "architect", "object": "Q12345"},  # a dangling id, not a literal
        {"subject": "A", "relation": "empty", "object": {"unit": "m"}},
    ))
    assert kb.objects("A", "motto") == [Literal("Per aspera ad astra", "string")]
    assert kb.objects("A", "height") == [Literal("324", "quantity", "metre")]
    assert kb.objects("A", "floors") == [Literal("81", "quantity")]
    assert kb.objects("A", "opened_in") == [Literal("1889", "year")]
    assert sorted((i.line, i.reason) for i in kb.issues) == [(6, kbm.UNKNOWN_OBJECT), (7, kbm.MISSING_FIELD)]


def test_a_line_nested_deeper_than_the_recursion_limit_is_invalid_json():
    from quarry.operators.imagemining.kb import parse_record

    issue = parse_record('{"id": ' * 100_000 + "1" + "}" * 100_000)
    assert (issue.reason, issue.detail) == (kbm.INVALID_JSON, "JSON nested too deeply")
