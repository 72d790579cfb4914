"""pipelines/decontam: the index built in Beam, the generic Decontaminate transform, drop and flag."""

from __future__ import annotations

import io
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from quarry.operators.decontam import ImageKey
from quarry.pipelines.decontam import (
    Decontaminate,
    FieldProbe,
    MaybeDecontaminate,
    contamination_summary,
    pixel_limit,
    plan_benchmarks,
)
from quarry.schemas.caption import CaptionConfig, DecodeConfig
from quarry.schemas.common import ImageCell, Origin
from quarry.schemas.config import ConfigError, DecontamSection
from quarry.schemas.decontam import DecontamConfig

Q1 = "Which of the following best explains why the metal rod expands when it is heated in the flame shown?"
Q2 = "在如图所示的电路中，电源电压保持不变，闭合开关后滑动变阻器的滑片向右移动时电流表的示数如何变化"


def _img(seed: int, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def _bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture()
def bench(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    pq.write_table(pa.table({
        "id": ["a1", "a2", "a3"],
        "question": [Q1, "Describe the picture.", Q2],
        "answer": ["B", "a cat", "变小"],
        "image": [{"bytes": _bytes(_img(1)), "path": None}, {"bytes": b"broken", "path": None}, None],
    }), d / "physbench.parquet")
    (d / "other.jsonl").write_text(json.dumps({"prompt": "What colour is the small sphere left of the cube?",
                                               "qid": "x9"}) + "\n")
    return d


def _rows():
    return [
        {"sample_id": "r1", "source": "web", "question": Q1.upper(), "image": None},  # text copy
        {"sample_id": "r2", "source": "web", "question": "a clean question about rods and flames",
         "image": ImageCell(bytes=_bytes(_img(1).resize((200, 200)), "JPEG", quality=50))},  # image copy
        {"sample_id": "r3", "source": "books", "question": "题目：" + Q2, "image": None},  # CJK copy
        {"sample_id": "r4", "source": "web", "question": "Entirely unrelated text about gardening in spring.",
         "image": _bytes(_img(2))},  # clean
        {"sample_id": "r5", "source": "web", "question": "", "image": b"not an image"},  # empty text, bad image
        {"sample_id": "r6", "source": "web", "question": "what colour is the small sphere, left of the cube",
         "image": None},  # a short question, matched whole (with a mapping)
    ]


PROBE = FieldProbe(text=("question",), image=("image",), origin_field="none")


def test_plan_benchmarks_missing_mapped_column_is_one_line(bench):
    with pytest.raises(ConfigError, match="no column 'prompt_txt'"):
        plan_benchmarks(DecontamSection(bench=[str(bench)], columns={"other": {"question": "prompt_txt"}}))
    with pytest.raises(ConfigError, match="names benchmark\\(s\\) nope"):
        plan_benchmarks(DecontamSection(bench=[str(bench)], columns={"nope": {"question": "q"}}))
    with pytest.raises(ConfigError, match="no files match"):
        plan_benchmarks(DecontamSection(bench=[str(bench / "*.csv")]))
    files = plan_benchmarks(DecontamSection(bench=[str(bench)], columns={"other": {"id": "qid"}}))
    assert sorted((f.benchmark, f.columns.question, f.columns.id) for f in files) == [
        ("other", "prompt", "qid"), ("physbench", "question", "id")]


def test_decontaminate_drop(bench, tmp_path):
    section = DecontamSection(bench=[str(bench)], columns={"other": {"id": "qid"}})
    out_dir = str(tmp_path / "out")
    with TestPipeline() as p:
        out = p | beam.Create(_rows()) | Decontaminate(section, PROBE, out_dir, dag="test")
        assert_that(out.kept | "KeptIds" >> beam.Map(lambda r: r["sample_id"]), equal_to(["r4", "r5"]), label="kept")
        assert_that(out.rejected | beam.Map(lambda r: (r.sample_id, r.stage, r.reason)), equal_to([
            ("r1", "decontam", "contaminated_text"), ("r2", "decontam", "contaminated_image"),
            ("r3", "decontam", "contaminated_text"), ("r6", "decontam", "contaminated_text")]), label="rejected")
        assert_that(out.matches | beam.Map(lambda m: (m.sample_id, m.benchmark, m.item_id, m.kind)), equal_to([
            ("r1", "physbench", "a1", "text_ngram"), ("r2", "physbench", "a1", "image_phash"),
            ("r3", "physbench", "a3", "text_ngram"), ("r6", "other", "x9", "text_exact")]), label="matches")
    summary = contamination_summary(out_dir)
    assert summary["matches"] == 4 and summary["by_benchmark"] == {"other": 1, "physbench": 3}
    assert summary["by_source"] == {"books": 1, "web": 3}
    assert summary["index"]["items"] == 4 and summary["index"]["images_unreadable"] == 1
    assert "physbench/a2/image: corrupt_image" in summary["index"]["unreadable_examples"][0]


def test_decontaminate_flag_keeps_rows_with_columns(bench):
    section = DecontamSection(bench=[str(bench)], action="flag")
    with TestPipeline() as p:
        out = p | beam.Create(_rows()) | Decontaminate(section, PROBE)
        assert_that(out.kept | beam.Map(lambda r: (r["sample_id"], r["contaminated"], len(r["contamination"]))),
                    equal_to([("r1", True, 1), ("r2", True, 1), ("r3", True, 1), ("r4", False, 0), ("r5", False, 0),
                              ("r6", True, 1)]), label="kept")  # r6: short, matched whole
        assert_that(out.rejected, equal_to([]), label="none rejected")


def test_maybe_decontaminate_off_passes_rows_through():
    with TestPipeline() as p:
        rows = p | beam.Create(_rows())
        kept, rejected = rows | MaybeDecontaminate(DecontamSection(), None, PROBE)
        assert_that(kept | beam.Map(lambda r: r["sample_id"]), equal_to([f"r{i}" for i in range(1, 7)]), label="all")
        assert_that(rejected, equal_to([]), label="no rejects")


def test_field_probe_on_pydantic_rows_and_precomputed_hashes():
    from quarry.schemas.common import Reject

    row = Reject(sample_id="s", source="x", stage="a", reason="b", detail="some text",
                 origin=Origin(file="f", key="k"))
    probe = FieldProbe(text=("detail", "origin.key"), image=("missing",))(row)
    assert probe.sample_id == "s" and probe.origin == Origin(file="f", key="k")
    assert probe.texts == (("detail", "some text"), ("origin.key", "k")) and probe.images == ()
    key = ImageKey(5)
    assert FieldProbe(image=("im",))({"sample_id": "a", "im": [key, b"xy"]}).images == (("im[0]", key),
                                                                                         ("im[1]", b"xy"))
    restricted = FieldProbe(text=("a",)).restricted(DecontamSection(text_fields=["b"]))
    assert restricted.text == ("b",)


@pytest.mark.parametrize("limit,kept,unreadable", [
    (100 * 100, ["r2"], 1),  # the 96x96 benchmark image indexes, the 200x200 training copy is over the limit
    (90 * 90, ["r2"], 2),  # the benchmark image is over it too: counted unreadable (image_too_large)
    (DecodeConfig().max_pixels, [], 1),  # the default: the copy is found
])
def test_pixel_limit_reaches_both_image_decodes(bench, tmp_path, limit, kept, unreadable):
    section = DecontamSection(bench=[str(bench)])
    out_dir = str(tmp_path / "out")
    with TestPipeline() as p:
        rows = p | beam.Create([r for r in _rows() if r["sample_id"] == "r2"])
        out_rows, _ = rows | MaybeDecontaminate(section, out_dir, PROBE, max_pixels=limit)
        assert_that(out_rows | beam.Map(lambda r: r["sample_id"]), equal_to(kept))
    index = contamination_summary(out_dir)["index"]
    assert index["images_unreadable"] == unreadable
    assert (unreadable == 2) == any("image_too_large" in e for e in index["unreadable_examples"])


def test_pixel_limit_is_the_dags_decode_limit_else_the_sections_default():
    assert pixel_limit(CaptionConfig.model_validate({"decode": {"max_pixels": 1234}})) == 1234
    assert pixel_limit(DecontamConfig()) == DecodeConfig().max_pixels == CaptionConfig().decode.max_pixels

