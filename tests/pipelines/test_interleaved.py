"""Reading documents (Parquet, caps), finishing decisions, and the composite in TestPipeline."""

from __future__ import annotations

import gzip
import io
import json
import time
from importlib import resources

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from quarry.operators.interleaved.documents import RawDocument
from quarry.pipelines.interleaved import (
    DocState,
    InterleavedPipeline,
    finish,
    plan_documents,
    read_documents,
)
from quarry.pipelines.read import InputError, InputFile
from quarry.schemas.common import Origin, Reject
from quarry.schemas.config import load_config
from quarry.schemas.interleaved import ImageInfo, InterleavedConfig, InterleavedRow

ARTICLES = json.loads(resources.files("quarry.dags").joinpath("demo_data", "interleaved", "articles.json").read_text())
PHOTO = resources.files("quarry.dags").joinpath("demo_data", "coffee.jpg").read_bytes()
TINY = ["relevance.model=quarry-tiny", "relevance.pretrained=none"]


def cfg_with(*sets: str) -> InterleavedConfig:
    return load_config(InterleavedConfig, None, list(sets))


def _write_jsonl(path, docs, gz=False):
    text = "\n".join(d if isinstance(d, str) else json.dumps(d) for d in docs) + "\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return InputFile(str(path), "jsonl")


def test_ten_megabytes_of_text_is_rejected_fast_and_overlong_records_are_skipped(tmp_path):
    huge = {"id": "huge", "segments": [{"text": "lorem ipsum dolor sit amet " * 400_000}]}  # ~10.8 MB
    f = _write_jsonl(tmp_path / "d.jsonl", [huge, {"id": "ok", "segments": [{"text": "fine"}]}])
    t = time.monotonic()
    out = list(read_documents(f, "web", InterleavedConfig()))
    assert time.monotonic() - t < 5
    assert isinstance(out[0], Reject) and (out[0].stage, out[0].reason) == ("read", "too_much_text")
    assert out[0].origin.key == "line:1:huge" and "10800000 characters" in out[0].detail
    assert isinstance(out[1], RawDocument) and out[1].file == f.path
    small = cfg_with("document.max_record_bytes=4096")
    out = list(read_documents(f, "web", small))
    assert (out[0].reason, out[0].origin.key) == ("record_too_large", "line:1")
    assert isinstance(out[1], RawDocument) and out[1].key == "line:2:ok"


def test_gzipped_jsonl_and_bad_lines(tmp_path):
    f = _write_jsonl(tmp_path / "d.jsonl.gz", [{"segments": [{"text": "a"}]}, "[1, 2]", "{oops", "", "{}"], gz=True)
    out = list(read_documents(f, "web", InterleavedConfig()))
    assert isinstance(out[0], RawDocument)
    assert [(r.origin.key, r.reason) for r in out[1:]] == [
        ("line:2", "invalid_json"), ("line:3", "invalid_json"), ("line:5", "unknown_shape")]


def test_parquet_obelics_rows_with_image_bytes(tmp_path):
    table = pa.table({
        "texts": [["intro text", None], ["a", "b"]],
        "images": [[None, {"bytes": PHOTO, "path": None}], [None, {"bytes": PHOTO, "path": None}]],
        "url": ["https://e.org/1", "https://e.org/2"],
    })
    pq.write_table(table, tmp_path / "docs.parquet")
    [f] = plan_documents([str(tmp_path / "docs.parquet")])
    assert f.kind == "parquet"
    doc, bad = list(read_documents(f, "web", InterleavedConfig()))
    assert doc.shape == "obelics" and doc.images[0].data == PHOTO and doc.url == "https://e.org/1"
    assert (bad.stage, bad.reason, bad.origin.key) == ("read", "invalid_document", "row:1")
    assert bad.detail == "position 1 holds both a text and an image"


def test_plan_documents_fails_early(tmp_path):
    with pytest.raises(InputError, match="no files match"):
        plan_documents([str(tmp_path / "nothing*.jsonl")])
    (tmp_path / "photo.jpg").write_bytes(PHOTO)
    with pytest.raises(InputError, match="not loose images"):
        plan_documents([str(tmp_path / "photo.jpg")])
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "captions.parquet")
    with pytest.raises(InputError, match="no document columns"):
        plan_documents([str(tmp_path / "captions.parquet")])
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        plan_documents([str(tmp_path / "broken.parquet")])


def _state(images: list[ImageInfo]) -> DocState:
    segments = [("text", "words " * 50)] + [("image", i.index) for i in images]
    return DocState("doc1", "web", Origin(file="f.jsonl", key="line:1"), None, None, "segments", segments, images,
                    n_words=50, html_stripped=0)


def finish_with(state: DocState, scores: dict, cfg: InterleavedConfig):
    return finish(state, scores, cfg.relevance, cfg.document, cfg.tiers)


def test_finish_decides_relevance_and_text_only():
    images = [ImageInfo(index=0, image_id="a", kept=True, diagram_score=0.1),
              ImageInfo(index=1, image_id="b", kept=True, diagram_score=0.9),
              ImageInfo(index=2, kept=False, stage="read", reason="missing_image")]
    cfg = cfg_with("relevance.threshold=0.2")
    row = finish_with(_state(images), {0: [0.1, 0.25], 1: [0.05, float("nan")]}, cfg)
    assert isinstance(row, InterleavedRow)
    assert [(i.kept, i.reason, i.clip_score) for i in row.images] == [
        (True, None, 0.25), (False, "image_irrelevant", 0.05), (False, "missing_image", None)]
    assert [s.kind for s in row.segments] == ["text", "image"] and row.segments[1].image_id == "a"
    assert (row.n_images, row.n_images_in, row.tier) == (1, 3, "easy")  # 50 words per photo
    rej = finish_with(_state(images), {0: [0.1], 1: [0.1]}, cfg)
    assert (rej.stage, rej.reason) == ("assemble", "no_images_left")
    assert rej.detail == "every image was dropped: image_irrelevant=2, missing_image=1"
    text_only = finish_with(_state(images), {0: [0.1], 1: [0.1]}, cfg_with("relevance.threshold=0.2",
                                                                        "document.keep_text_only=true"))
    assert text_only.n_images == 0 and text_only.tier == "medium" and [s.kind for s in text_only.segments] == ["text"]
    undecodable = finish_with(_state(images[:1]), {0: [float("nan")]}, cfg)
    assert undecodable.reason == "no_images_left" and "clip_undecodable=1" in undecodable.detail


def _doc(key: str, segments: list) -> RawDocument:
    from quarry.operators.interleaved.documents import ImageRef, document_id

    segs = [s if isinstance(s, str) else ImageRef(s) for s in segments]
    return RawDocument(document_id("d.jsonl", key, segs), key, "segments", segs, file="d.jsonl")


def test_composite_in_test_pipeline():
    article = ARTICLES["space"]
    banner = io.BytesIO()
    Image.open(io.BytesIO(PHOTO)).resize((728, 90)).save(banner, "JPEG")
    docs = [
        _doc("good", [article[0], PHOTO, article[1], article[2], article[3]]),
        _doc("album", [PHOTO, "one", PHOTO, "two", PHOTO, "three"]),
        _doc("ads-only", [article[0], banner.getvalue(), article[1], article[2], article[3]]),
    ]
    cfg = cfg_with(*TINY, "relevance.threshold=-1")
    with TestPipeline() as p:
        out = p | beam.Create(docs) | InterleavedPipeline(cfg, "web")
        assert_that(out.kept | "Keys" >> beam.Map(lambda r: (r.origin.key, r.n_images, r.images[0].clip_score is not None)),
                    equal_to([("good", 1, True)]), label="kept")
        assert_that(out.rejected | beam.Map(lambda r: (r.origin.key, r.stage, r.reason)),
                    equal_to([("album", "density", "image_dense"), ("ads-only", "assemble", "no_images_left")]),
                    label="rejected")


def test_composite_without_relevance_or_text_filters():
    docs = [_doc("two-photos", ["short text", PHOTO, "more", PHOTO]), _doc("no-image", ["only text"])]
    cfg = cfg_with("relevance.enabled=false", "text.enabled=false", "density.enabled=false")
    with TestPipeline() as p:
        out = p | beam.Create(docs) | InterleavedPipeline(cfg, "web")
        assert_that(out.kept | "Keys" >> beam.Map(lambda r: (r.origin.key, r.n_images, r.images[0].clip_score)),
                    equal_to([("two-photos", 2, None)]), label="kept")
        assert_that(out.rejected | beam.Map(lambda r: (r.origin.key, r.reason, r.detail)),
                    equal_to([("no-image", "no_images_left", "the document has no images")]), label="rejected")
