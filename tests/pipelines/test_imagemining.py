"""imagemining pipeline parts: image-row parsing (a table of bad rows), mining one image, and the
composite in a TestPipeline with assert_that on rows, images and rejects."""

from __future__ import annotations

import io
import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from quarry.pipelines import imagemining as pim
from quarry.pipelines.read import RowRecord
from quarry.schemas.common import Reject
from quarry.schemas.imagemining import ImageMiningConfig

KB = [
    {"id": "T1", "name": "Eiffel Tower", "type": "tower", "aliases": ["La Tour Eiffel"]},
    {"id": "T2", "name": "Tokyo Tower", "type": "tower"},
    {"id": "A1", "name": "Gustave Eiffel", "type": "person"},
    {"id": "A2", "name": "Tachu Naito", "type": "person"},
    {"id": "C1", "name": "Dijon", "type": "city"},
    {"id": "C2", "name": "Kakunodate", "type": "city"},
    {"subject": "T1", "relation": "architect", "object": "A1"},
    {"subject": "T2", "relation": "architect", "object": "A2"},
    {"subject": "A1", "relation": "place_of_birth", "object": "C1"},
    {"subject": "A2", "relation": "place_of_birth", "object": "C2"},
    {"subject": "A1", "relation": "date_of_birth", "value": 1832, "value_type": "year"},
    {"subject": "A2", "relation": "date_of_birth", "value": 1886, "value_type": "year"},
]


def png(w=64, h=48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def kb_path(tmp_path) -> str:
    p = tmp_path / "kb.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in KB))
    return str(p)


@pytest.mark.parametrize("row,reason", [
    ({"entities": ["T1"]}, "missing_image"),
    ({"image": "nope.png"}, "missing_image"),
    ({"image": 12}, "missing_image"),
    ({"image": b"x" * 100}, "file_too_large"),
    ({"image": b"png", "entities": "T1"}, "invalid_entities"),
    ({"image": b"png", "entities": [{"box": [0, 0, 5, 5]}]}, "invalid_entities"),
    ({"image": b"png", "entities": [{"id": "T1", "box": [5, 5, 1, 1]}]}, "invalid_entities"),
    ({"image": b"png", "entities": [{"id": "T1", "box": "left"}]}, "invalid_entities"),
    ({"image": b"png", "entities": [{"id": "T1", "box": [float("nan"), 0, 5, 5]}]}, "invalid_entities"),  # nan <= x
    ({"image": b"png", "entities": [{"id": "T1", "box": [0, 0, float("inf"), 5]}]}, "invalid_entities"),  # is False
    ({"image": b"png", "entities": [{"id": "T1", "box": [1, 2, 30, 40]}, "T2", {"name": "Tokyo Tower"}],
      "ocr_text": ["EIFFEL", "1889"], "domain": "places", "id": 7}, None),
    ({"image": {"bytes": b"png", "path": "x.png"}, "caption": "a tower"}, None),
])
def test_parse_image_row(tmp_path, row, reason):
    got = pim.parse_image_row(RowRecord(str(tmp_path / "rows.jsonl"), "line:3", row), "src", 50)
    if reason is None:
        assert isinstance(got, pim.ImageInput)
        assert got.image_bytes == b"png"
        if "id" in row:
            assert got.origin.key == "line:3:7" and got.domain == "places"
            assert got.entities == (("T1", None, (1.0, 2.0, 30.0, 40.0)), ("T2", None, None), (None, "Tokyo Tower", None))
            assert dict(got.texts)["ocr_text"] == "EIFFEL\n1889"
    else:
        assert isinstance(got, Reject) and got.stage == "read" and got.reason == reason, got


def test_unreadable_line_is_a_read_reject():
    got = pim.parse_image_row(RowRecord("f.jsonl", "line:2", None, "invalid_json", "bad"), "src", 50)
    assert (got.stage, got.reason, got.origin.key) == ("read", "invalid_json", "line:2")


def image(entities=(), texts=(), sid="s1") -> pim.ImageMeta:
    from quarry.schemas.common import Origin

    inp = pim.ImageInput(sid, "src", Origin(file="f", key=sid), b"", tuple(entities), tuple(texts))
    return pim.ImageMeta(inp, "img-" + sid, 640, 480)


def test_mine_image_links_walks_filters_and_counts(kb_path):
    cfg = ImageMiningConfig.model_validate({"kb": {"path": kb_path}})
    miner = pim.Miner(kb_path, None, "en", 2, True, 3)
    out = list(pim.mine_image(miner, image([("T1", None, None)]), cfg))
    rows = [o for o in out if isinstance(o, pim.Mined)]
    events = [o for o in out if isinstance(o, str)]
    assert {r.row.question for r in rows} == {"Where was the architect of the tower in this picture born?",
                                             "When was the architect of the tower in this picture born?"}
    assert events.count("filter.in") == events.count("discover.out") == 2 and events.count("filter.out") == 2
    r = next(m.row for m in rows if m.row.answer == "Dijon")
    assert (r.hops, r.visual_hops, r.tier, r.category, r.domain) == (2, 1, "medium", "spatio-temporal", "places")
    assert [h.object_name for h in r.chain] == ["Eiffel Tower", "Gustave Eiffel", "Dijon"]
    # linked from OCR text (normalised), and the answer readable in it: trivial
    out = list(pim.mine_image(miner, image(texts=[("ocr_text", "LA TOUR EIFFEL  1832")], sid="s2"), cfg))
    rejects = [o for o in out if isinstance(o, Reject)]
    assert [(x.stage, x.reason) for x in rejects] == [("filter", "trivial")]
    assert [m.row.link_method for m in out if isinstance(m, pim.Mined)] == ["normalised:ocr_text"]
    # entities absent from the KB; nothing to link
    assert [(o.stage, o.reason) for o in pim.mine_image(miner, image([("Q0", None, None)], sid="s3"), cfg)
            if isinstance(o, Reject)] == [("link", "unknown_entity")]
    assert [(o.stage, o.reason) for o in pim.mine_image(miner, image(texts=[("caption", "a dog")], sid="s4"), cfg)
            if isinstance(o, Reject)] == [("link", "no_entities")]
    # a person: no templated 2-hop path from them
    assert [(o.stage, o.reason) for o in pim.mine_image(miner, image([("A1", None, None)], sid="s5"), cfg)
            if isinstance(o, Reject)] == [("discover", "no_path")]


def test_composite_in_a_test_pipeline(kb_path, tmp_path):
    from quarry.schemas.common import Origin

    cfg = ImageMiningConfig.model_validate({"kb": {"path": kb_path}})
    good = png()
    inputs = [
        pim.ImageInput("a", "src", Origin(file="f", key="a"), good, (("T1", None, None),), ()),
        pim.ImageInput("b", "src", Origin(file="f", key="b"), good, (("T2", None, None),), ()),
        pim.ImageInput("c", "src", Origin(file="f", key="c"), b"\x89PNG broken", (("T1", None, None),), ()),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(inputs) | pim.ImageMiningPipeline(cfg, kb_path, str(tmp_path))
        assert_that(out.rows | "Answers" >> beam.Map(lambda r: (r["parent_id"], r["answer"])),  # QARow dicts
                    equal_to([("a", "Dijon"), ("a", "1832"), ("b", "Kakunodate"), ("b", "1886")]), label="rows")
        assert_that(out.images | "Ids" >> beam.Map(lambda r: (r.width, r.height)), equal_to([(64, 48)]),
                    label="one image, stored once")
        assert_that(out.rejected | "Reasons" >> beam.Map(lambda r: (r.sample_id, r.stage, r.reason)),
                    equal_to([("c", "decode", "corrupt_image")]), label="rejects")
    counts = {f.stem: json.loads(f.read_text())["count"] for f in Path(tmp_path, "_stats").glob("*.json")}
    assert counts["decode.in"] == 3 and counts["decode.out"] == 2 and counts["filter.out"] == 4


def test_parquet_rows_with_image_structs_and_entity_lists(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from quarry.pipelines.read import InputFile as TableFile
    from quarry.pipelines.read import read_rows

    table = pa.table({
        "image": [{"bytes": png(), "path": None}, {"bytes": None, "path": None}],
        "entities": [[{"id": "T1", "box": [1.0, 2.0, 30.0, 40.0]}, {"id": None, "box": None}], []],
        "caption": ["Eiffel Tower at night", None],
    })
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path)
    got = [pim.parse_image_row(rec, "src", 1 << 20) for rec in read_rows(TableFile(str(path), "parquet"))]
    assert isinstance(got[0], Reject) and got[0].reason == "invalid_entities"  # an entity with neither id nor name
    assert isinstance(got[1], Reject) and got[1].reason == "missing_image"
    table = table.set_column(1, "entities", pa.array([[{"id": "T1", "box": [1.0, 2.0, 30.0, 40.0]}], []]))
    pq.write_table(table, path)
    first = pim.parse_image_row(next(read_rows(TableFile(str(path), "parquet"))), "src", 1 << 20)
    assert first.entities == (("T1", None, (1.0, 2.0, 30.0, 40.0)),) and first.origin.key == "row:0"
    assert dict(first.texts) == {"caption": "Eiffel Tower at night"}


def test_relative_boxes_and_other_id_keys(kb_path):
    cfg = ImageMiningConfig.model_validate({"kb": {"path": kb_path}})
    miner = pim.Miner(kb_path, None, "en", 2, True, 3)
    rec = RowRecord("f.jsonl", "line:1", {"image": b"png", "entities": [{"qid": "T1", "box": [0.0, 0.0, 0.5, 0.5]}]})
    parsed = pim.parse_image_row(rec, "src", 50)
    meta = pim.ImageMeta(parsed, "img", 640, 480)
    entities, unknown, _ = pim.link_entities(miner, meta, cfg)
    assert unknown == 0 and entities[0].box == (0.0, 0.0, 320.0, 240.0)
    rows = [o.row for o in pim.mine_image(miner, meta, cfg) if isinstance(o, pim.Mined)]
    assert rows and not any(r.requires_crop for r in rows) and all(r.box_share == pytest.approx(0.25) for r in rows)


@pytest.mark.parametrize("box, off", [
    ((0.0, 0.0, 0.5, 0.5), False), ((10, 10, 640, 480), False), ((0, 0, 645, 484), False),  # 1% slack
    ((600, 400, 900, 700), True), ((-40, 0, 100, 100), True), (None, False),
])
def test_listed_boxes_must_lie_on_the_image(kb_path, box, off):
    assert pim.box_off_image(box, 640, 480) == off
    if off:
        cfg = ImageMiningConfig.model_validate({"kb": {"path": kb_path}})
        miner = pim.Miner(kb_path, None, "en", 2, True, 3)
        rec = RowRecord("f.jsonl", "line:1", {"image": b"png", "entities": [{"id": "T1", "box": list(box)}]})
        meta = pim.ImageMeta(pim.parse_image_row(rec, "src", 50), "img", 640, 480)
        got = [(o.stage, o.reason) for o in pim.mine_image(miner, meta, cfg) if isinstance(o, Reject)]
        assert got == [("link", "box_outside_image")]


def test_boxes_on_uniform_pixels_are_rejected_before_linking(kb_path):
    """A listed box over sky or padding shows nothing to recognise (the listing belongs to another image)."""
    import numpy as np

    rng = np.random.default_rng(0)
    pixels = np.full((200, 300, 3), 120, np.uint8)
    pixels[50:150, 150:250] = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)  # an "object"
    picture = Image.fromarray(pixels)
    entities = (("T1", None, (160, 60, 240, 140)), ("T2", None, (10, 10, 90, 90)), ("A1", None, None),
                ("A2", None, (0.0, 0.0, 0.2, 0.2)))
    assert pim.blank_boxes(picture, entities) == (1, 3)  # pixels and relative boxes alike
    assert pim.blank_boxes(picture, entities[:1]) == ()
    cfg = ImageMiningConfig.model_validate({"kb": {"path": kb_path}})
    miner = pim.Miner(kb_path, None, "en", 2, True, 3)
    meta = image(entities[:2])
    meta = pim.ImageMeta(meta.input, meta.image_id, 300, 200, pim.blank_boxes(picture, entities[:2]))
    got = [(o.stage, o.reason) for o in pim.mine_image(miner, meta, cfg) if isinstance(o, Reject)]
    assert got == [("link", "box_on_blank")]


def test_view_index_keeps_the_smallest_image_ids_one_view_each():
    from quarry.operators.imagemining.qa import ImageView

    views = [ImageView(f"img{i}", 10, 10, (("A", (0, 0, 1, 1)), (f"B{i}", (2, 0, 3, 1)))) for i in (5, 1, 3, 2)]
    views.append(ImageView("img1", 10, 10, (("A", (0, 0, 1, 1)),)))  # the same picture listed again
    index = pim.view_index(views, 2)
    assert [v.image_id for v in index["A"]] == ["img1", "img2"]
    assert index["A"][0].entities == (("A", (0, 0, 1, 1)),)  # the smaller listing of img1, in every run
    assert [v.image_id for v in index["B5"]] == ["img5"]
    fn = pim.KeepViews(2)
    halves = [fn.add_input(fn.add_input(fn.create_accumulator(), views[0]), views[1]),
              fn.add_input(fn.add_input(fn.create_accumulator(), views[2]), views[3])]
    assert fn.extract_output(fn.merge_accumulators(halves)) == tuple(pim._fewest(views[:4], 2))


def test_linked_view_needs_two_boxed_entities():
    from quarry.operators.imagemining.qa import ImageEntity

    meta = image()
    assert pim.Linked(meta, (ImageEntity("A", (0, 0, 1, 1)), ImageEntity("B"))).view() is None
    v = pim.Linked(meta, (ImageEntity("B", (5, 0, 6, 1)), ImageEntity("A", (0, 0, 1, 1)))).view()
    assert v.image_id == meta.image_id and [e for e, _ in v.entities] == ["A", "B"]


@pytest.mark.parametrize("spill", [True, False])
def test_near_duplicates_of_a_group_read_twice_or_held_give_the_same_rows(tmp_path, spill, monkeypatch):
    from quarry.pipelines.spill import Stash
    from quarry.pipelines.stage import REJECTED
    from quarry.pipelines.write import pack_row

    origin = {"file": "f.jsonl", "key": "line:1"}
    questions = ["Who founded the company in this picture?", "Who founded the company shown in this picture?",
                 "In which city was the founder of this company born?", "Who founded the company in this picture?"]
    rows = [{"sample_id": f"q{i}", "question": q, "source": "s", "origin": origin} for i, q in enumerate(questions)]
    stash = Stash(str(tmp_path) if spill else None)
    from quarry.pipelines.spill import Gather

    g = Gather()  # two answers in one bucket, gathered from two bundles
    other = dict(rows[0], sample_id="z0", question="Who founded this company?")
    bundles = [g.add_input(g.create_accumulator(), ("answer", stash.put(pack_row(r)))) for r in reversed(rows)]
    bundles.append(g.add_input(g.create_accumulator(), ("other", stash.put(pack_row(other)))))
    group = (7, g.extract_output(g.merge_accumulators(bundles)))
    stash.finish()

    def run(hold: int):
        monkeypatch.setattr(pim._NearDuplicates, "HOLD", hold)
        fn = pim._NearDuplicates(90.0, stash)
        out = list(fn.process(group))
        fn.finish_bundle()
        kept = [o["sample_id"] for o in out if isinstance(o, dict)]
        dropped = [(o.value.sample_id, o.value.detail) for o in out if getattr(o, "tag", None) == REJECTED]
        return kept, dropped

    held, twice = run(1_000), run(1)
    assert held == twice
    assert held[0] == ["q0", "q2", "z0"] and [sid for sid, _ in held[1]] == ["q1", "q3"]
    assert all("near-duplicate of q0" in detail for _, detail in held[1])
