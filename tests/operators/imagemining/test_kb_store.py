"""The SQLite KB store answers every query like the in-memory KnowledgeBase, links like EntityLinker,
is rebuilt when stale and reused when up to date, and keeps its caches bounded."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from quarry.operators.imagemining import qa
from quarry.operators.imagemining.kb import KbError, KnowledgeBase, normalise
from quarry.operators.imagemining.kb_store import SqliteKnowledgeBase, build_kb_store, ensure_kb_store


def lines(*recs) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in recs]


ALIASES = {"P131": "located_in", "P17": "country", "twin_of": "sister_city"}

HOSTILE = lines(
    {"subject": "A", "relation": "located_in", "object": "B"},  # facts before their entities
    {"subject": "A", "relation": "P131", "object": "B"},  # the same fact under an alias: merged, counted once
    {"subject": "A", "relation": "P131", "object": "C"},
    {"subject": "A", "relation": "height", "value": 70, "unit": "metre"},
    {"id": "A", "name": "Falcon 9", "aliases": ["F9", "Falcon Nine", "Falcon 9"], "type": "rocket"},
    "{not json",
    "[1, 2]",
    "",
    {"id": "B", "name": "Hawthorne", "type": "city", "description": "a city", "images": ["x.jpg"]},
    {"id": "C", "name": "Paris", "type": "city", "aliases": ["Ville Lumière"]},
    {"id": "D", "name": "Paris", "type": "person", "aliases": ["Paris (mythology)"]},  # a shared name
    {"id": "A", "name": "again", "type": "rocket"},  # duplicate entity
    {"subject": "B", "relation": "sister_city", "object": "C"},  # a cycle B -> C -> B
    {"subject": "C", "relation": "twin_of", "object": "B"},
    {"subject": "C", "relation": "sister_city", "object": "B"},
    {"subject": "B", "relation": "country", "object": "E"},
    {"subject": "B", "relation": "P17", "object": "E"},
    {"id": "E", "name": "United States", "aliases": ["U.S.", "USA", "AT&T land"], "type": "country"},
    {"id": "F", "name": "C++", "type": "language", "aliases": ["Café Müller", "(the) thing"]},
    {"kind": "entity", "id": 7, "name": 8, "type": ["", "number"]},
    {"subject": "X9", "relation": "located_in", "object": "B"},  # unknown subject
    {"subject": "A", "relation": "located_in", "object": "Q404"},  # a dangling id
    {"subject": "A", "relation": "twin"},  # no object
    {"name": "no id"},
    {"subject": "A", "relation": "opened_in", "value": 2010, "value_type": "year"},
    {"subject": "A", "relation": "opened_in", "value": 2010.0, "value_type": "year"},  # duplicate fact
    {"subject": "A", "relation": "opened_in", "object": {"value": True, "type": "flag"}},
    *[{"subject": "E", "relation": "member_of", "object": f"O{i}"} for i in range(40)],  # many objects,
    *[{"id": f"O{i}", "name": f"Organisation {i}", "type": "org"} for i in range(40)],  # defined later
    {"subject": "E", "relation": "founded", "value": "1776-07-04", "value_type": "date"},
)


def both(kb_lines: list[str], tmp: Path, aliases: dict[str, str], **kw) -> tuple[KnowledgeBase, SqliteKnowledgeBase]:
    mem = KnowledgeBase.from_lines(kb_lines)
    mem.rename_relations(aliases)
    db = str(tmp / "kb.sqlite")
    build_kb_store(iter(kb_lines), db, aliases)
    return mem, SqliteKnowledgeBase(db, **kw)


def assert_same(mem: KnowledgeBase, store: SqliteKnowledgeBase) -> None:
    assert store.stats() == mem.stats()
    assert store.issues == mem.issues and store.issue_count == mem.issue_count and store.lines == mem.lines
    assert list(store.entities) == list(mem.entities) and len(store.entities) == len(mem.entities)
    assert dict(store.entities.items()) == mem.entities
    for missing in ("nope", "Q404", ""):
        assert missing not in store.entities and store.entities.get(missing) is None
        assert store.degree.get(missing, 0) == 0 and store.relations(missing) == {} and store.objects(missing, "x") == []
    pairs = set()
    for eid, e in mem.entities.items():
        assert store.entities[eid] == e and store.entity(eid) == e
        assert store.names_norm(eid) == mem.names_norm(eid)
        assert store.degree.get(eid, 0) == mem.degree.get(eid, 0)
        rels = store.relations(eid)
        assert rels == mem.relations(eid) and list(rels) == list(mem.relations(eid))  # same order
        for r, objs in mem.relations(eid).items():
            pairs.add((e.type, r))
            assert store.objects(eid, r) == objs
            for o in objs:
                for q in ("object_type", "object_key", "object_name", "object_names_norm"):
                    assert getattr(store, q)(o) == getattr(mem, q)(o)
    for etype, r in pairs | {("city", "nope"), ("nope", "located_in")}:
        got = store.subjects_with(etype, r)
        assert got == mem.subjects_with(etype, r) and list(got) == mem.subjects_with(etype, r)
        assert len(got) == len(mem.subjects_with(etype, r))


def link_texts(mem: KnowledgeBase) -> list[dict[str, str]]:
    texts = [{"caption": "", "alt": None}, {"c": "nothing to see here"}, {"c": "Paris and paris, PARIS."},
             {"c": "I flew a Falcon 9 from Hawthorne (the) thing to the U.S. and AT&T land; C++11 and C++ code"},
             {"c": "café muller, CAFE MÜLLER!", "alt": "falcon-9 over f9 near Falconnine"},
             {"c": "Organisation 12 Organisation 1 Organisation 123 Organisation 3x", "ocr": "ville lumiere"},
             {"c": "  Falcon  9  ", "alt": "United States of America, USA."}]
    for eid, e in mem.entities.items():
        for n in e.names:
            texts.append({"caption": f"a photo of {n} today", "alt": f"{n.upper()}!{n}"})
            texts.append({"ocr_text": f"x{n}y {n}s, ({n})"})
    return texts


def assert_links_agree(mem: KnowledgeBase, store: SqliteKnowledgeBase) -> None:
    for min_chars in (1, 3, 5):
        a, b = mem.new_linker(min_chars), store.new_linker(min_chars)
        for t in link_texts(mem):
            assert b.link(t) == a.link(t), t
    assert store.linker.link({"c": "Falcon 9"}) == mem.linker.link({"c": "Falcon 9"})


def test_hostile_kb_store_answers_like_memory(tmp_path):
    mem, store = both(HOSTILE, tmp_path, ALIASES)
    assert {i.reason for i in mem.issues} >= {"invalid_json", "missing_field", "duplicate_entity", "unknown_subject",
                                               "unknown_object", "duplicate_fact"}
    assert len(mem.objects("E", "member_of")) == 40 and mem.objects("A", "located_in") == ["B", "C"]
    assert_same(mem, store)
    assert_links_agree(mem, store)


def test_demo_kb_store_answers_like_memory(tmp_path):
    from quarry.dags.demos import imagemining as imagemining_demo

    imagemining_demo.build(tmp_path / "in")
    kb_lines = (tmp_path / "in" / "kb.jsonl").read_text().splitlines(keepends=True)
    mem, store = both(kb_lines, tmp_path, qa.load_templates().relation_aliases)
    assert mem.issue_count == 2
    assert_same(mem, store)
    assert_links_agree(mem, store)
    # and the QA operators reach the same answers through either
    tpl = qa.load_templates()
    for eid in mem.entities:
        assert (qa.walk_paths(store, eid, tpl, 2, 4, 1000, 8, "seed")
                == qa.walk_paths(mem, eid, tpl, 2, 4, 1000, 8, "seed"))


def test_no_issues_and_no_facts(tmp_path):
    mem, store = both(lines({"id": "Q1", "name": "Solo", "type": "thing"}), tmp_path, {})
    assert_same(mem, store)
    assert store.subjects_with("thing", "x") == [] and not store.issues


def test_stale_store_is_rebuilt_and_an_up_to_date_one_reused(tmp_path):
    kb = tmp_path / "kb.jsonl"
    db = str(tmp_path / "kb.jsonl.sqlite")
    kb.write_text("\n".join(HOSTILE) + "\n")
    logs: list[str] = []
    stats, reused = ensure_kb_store(str(kb), db, ALIASES, logs.append)
    assert not reused and stats == SqliteKnowledgeBase(db).stats()
    built = os.stat(db).st_mtime_ns
    stats2, reused = ensure_kb_store(str(kb), db, ALIASES, logs.append)
    assert reused and stats2 == stats and os.stat(db).st_mtime_ns == built
    assert any("reused" in m for m in logs)
    with kb.open("a") as fh:  # the KB changed: rebuilt, and the new entity is there
        fh.write(json.dumps({"id": "Z1", "name": "Zed", "type": "thing"}) + "\n")
    _, reused = ensure_kb_store(str(kb), db, ALIASES, logs.append)
    assert not reused and "Z1" in SqliteKnowledgeBase(db).entities
    _, reused = ensure_kb_store(str(kb), db, {}, logs.append)  # other relation aliases: other facts
    assert not reused and SqliteKnowledgeBase(db).objects("A", "P131") == ["B", "C"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # written aside, renamed


def test_a_failed_build_leaves_no_store(tmp_path):
    db = tmp_path / "kb.sqlite"

    def broken():
        yield json.dumps({"id": "Q1", "name": "One", "type": "t"})
        raise OSError("disk went away")

    with pytest.raises(OSError):
        build_kb_store(broken(), str(db), {})
    assert list(tmp_path.iterdir()) == []


def test_caches_stay_bounded_and_threads_get_their_own_connection(tmp_path):
    mem, store = both(HOSTILE, tmp_path, ALIASES, cache_size=4)
    assert_same(mem, store)  # correct answers with caches far smaller than the KB
    for cache in (store.entity_cache, store.degree_cache, store.relations_cache, store.names_cache):
        assert 0 < len(cache) <= 4
    linker = store.new_linker()
    linker.cache.maxsize = 10
    linker.link({"c": " ".join(e.name for e in mem.entities.values())})
    assert len(linker.cache) <= 10
    errors: list[BaseException] = []

    def work():
        try:
            assert_same(mem, store)
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_store_is_opened_read_only(tmp_path):
    _, store = both(HOSTILE, tmp_path, ALIASES)
    import sqlite3

    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store._cursor().execute("DELETE FROM entities")


def test_normalised_names_in_the_store_match_normalise(tmp_path):
    _, store = both(HOSTILE, tmp_path, ALIASES)
    assert store.names_norm("F") == (normalise("C++"), normalise("Café Müller"), normalise("(the) thing"))


def test_han_names_link_the_same_from_the_store(tmp_path):
    lines = [json.dumps(r) for r in ({"id": "C1", "name": "北京", "type": "city"},
                                     {"id": "C2", "name": "上海浦东", "type": "district"},
                                     {"id": "P1", "name": "Li Bai", "type": "person"})]
    mem, store = both(lines, tmp_path, {})
    for text in ("我在北京的天安门广场", "上海浦东机场到北京", "Li Baiyun", "Li Bai 在北京"):
        assert store.new_linker(3).link({"caption": text}) == mem.new_linker(3).link({"caption": text}), text
    assert [lk.entity_id for lk in store.new_linker(3).link({"caption": "上海浦东机场到北京"})[0]] == ["C2", "C1"]


def test_a_remote_store_is_built_once_uploaded_and_fetched_once_per_machine(tmp_path, fake_remote_fs):
    from quarry.operators.imagemining.kb_store import ensure_store_anywhere, stage_in

    kb = tmp_path / "kb.jsonl"
    kb.write_text("\n".join(HOSTILE) + "\n")
    remote = "fakefs://bucket/stores/kb.sqlite"
    logs: list[str] = []
    stats, reused = ensure_store_anywhere(str(kb), remote, ALIASES, logs.append)
    assert not reused and (fake_remote_fs / "bucket" / "stores" / "kb.sqlite").is_file()
    assert any("uploading" in m for m in logs)
    logs.clear()
    stats2, reused = ensure_store_anywhere(str(kb), remote, ALIASES, logs.append)
    assert reused and stats2 == stats and not any("uploading" in m for m in logs)
    local = stage_in(remote)  # a worker machine: one local copy, reused by every process
    assert local == stage_in(remote) and "://" not in local
    assert SqliteKnowledgeBase(local).stats() == stats
    with pytest.raises(KbError, match="not found"):
        stage_in("fakefs://bucket/none.sqlite")
