"""ocr_search's reader (no captions needed), the OCR model handler, and the composite in TestPipeline."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from quarry.operators.ocr.synth import poster
from quarry.pipelines.ocr import OcrModelHandler
from quarry.pipelines.ocr_search import OcrSearchPipeline, plan_ocr_inputs, read_ocr_file
from quarry.pipelines.read import InputError
from quarry.schemas.common import ImageText, Origin, Reject
from quarry.schemas.config import ReaderConfig
from quarry.schemas.ocr_search import OcrEngineConfig, OcrSearchConfig

DEMO = Path(__file__).resolve().parents[2] / "dags" / "demo_data"
CFG = OcrSearchConfig(ocr=OcrEngineConfig(threads=1))  # one thread per engine: CI runs two test workers on 2 cores


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def read_all(patterns, cfg=ReaderConfig()):
    out = []
    for f in plan_ocr_inputs(patterns, cfg):
        out.extend(read_ocr_file(f, "src", cfg))
    return out


def test_reads_image_folder_without_captions(tmp_path):
    (tmp_path / "a.png").write_bytes(png(Image.new("RGB", (20, 20))))
    (tmp_path / "b.png").write_bytes(png(Image.new("RGB", (20, 20), (9, 9, 9))))
    (tmp_path / "b.json").write_text(json.dumps({"source": "maps", "url": "http://x/b"}))
    (tmp_path / "c.jpg").write_bytes(b"garbage")  # read fine; decode rejects it later
    (tmp_path / "notes.md").write_text("ignored")
    recs = read_all([str(tmp_path)])
    assert [type(r).__name__ for r in recs] == ["ImageText"] * 3
    assert [r.source for r in recs] == ["src", "maps", "src"] and recs[1].url == "http://x/b"
    assert all(r.caption == "" for r in recs)
    assert read_all([str(tmp_path)])[0].sample_id == recs[0].sample_id  # stable ids


def test_reads_tar_parquet_and_jsonl(tmp_path):
    image = png(Image.new("RGB", (16, 16)))
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        for name, data in (("0001.png", image), ("0001.json", b'{"source": "posters"}'),
                           ("0002.png", image), ("0002.json", b"{bad"), ("0003.txt", b"only text")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"img": [image, None], "license": ["cc0", None]}), tmp_path / "t.parquet")
    (tmp_path / "pic.png").write_bytes(image)
    (tmp_path / "l.jsonl").write_text('{"image": "pic.png"}\n{"image": "missing.png"}\nnot json\n')
    recs = read_all([str(tmp_path / "shard.tar"), str(tmp_path / "t.parquet"), str(tmp_path / "l.jsonl")],
                    ReaderConfig(image_column="img"))
    got = [(r.origin.key, r.reason if isinstance(r, Reject) else r.source) for r in recs]
    assert got == [("0001", "posters"), ("0002", "invalid_metadata"), ("0003", "missing_image"),
                   ("row:0", "src"), ("row:1", "missing_image"),
                   ("line:1", "src"), ("line:2", "missing_image"), ("line:3", "invalid_json")]
    assert recs[3].license == "cc0"


def test_parquet_without_an_image_column_fails_before_the_run(tmp_path):
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "t.parquet")
    with pytest.raises(InputError, match="no image column"):
        plan_ocr_inputs([str(tmp_path / "t.parquet")], ReaderConfig())


def test_handler_isolates_a_picture_the_engine_cannot_read():
    # det_limit_type=max: blank 40 px squares are not upscaled to 736 px for nothing
    handler = OcrModelHandler(OcrEngineConfig(max_batch_size=4, threads=1, det_limit_type="max"))
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 4}
    assert handler.get_resource_hints() == {}
    assert OcrModelHandler(OcrEngineConfig(device="gpu")).get_resource_hints() == {}  # off unless set
    l4 = "type:nvidia-l4;count:1;install-nvidia-driver"
    assert OcrModelHandler(OcrEngineConfig(device="gpu", accelerator=l4)).get_resource_hints() == {"accelerator": l4}
    assert OcrModelHandler(OcrEngineConfig(share_model=True)).share_model_across_processes()
    model = handler.load_model()
    white = np.full((40, 40, 3), 255, np.uint8)
    results = list(handler.run_inference([white, np.zeros((0, 0, 3), np.uint8), white], model))
    assert [r.error is None for r in results] == [True, False, True]
    assert results[0].lines == () and "ZeroDivisionError" in results[1].error


def _sample(key: str, data: bytes) -> ImageText:
    return ImageText(sample_id=f"id-{key}", source="t", origin=Origin(file="f", key=key), image_bytes=data, caption="")


@pytest.mark.slow
def test_composite_makes_ocr_and_search_rows_and_rejects():
    with Image.open(DEMO / "chelsea.jpg") as bg:
        synth = poster(bg, "pipeline-test", size=(480, 360), title_size=30, label_sizes=(9,))
    blank = png(Image.new("RGB", (64, 64), (200, 30, 30)))
    samples = [_sample("poster", png(synth.image)), _sample("blank", blank), _sample("broken", b"\x89PNG\r\n")]
    small = synth.texts[1].text
    with TestPipeline() as p:
        out = p | beam.Create(samples) | OcrSearchPipeline(CFG, "rapidocr/test")
        # no knowledge source configured: the small word is a crop-and-read task
        assert_that(out.rows | "Tasks" >> beam.Map(lambda r: (r.task, r.sample_id if r.task == "ocr" else r.text)),
                    equal_to([("ocr", "id-poster"), ("ocr_zoom", small)]), label="rows")
        assert_that(out.rejected | beam.Map(lambda r: (r.sample_id, r.stage, r.reason)),
                    equal_to([("id-blank", "ocr", "no_text"), ("id-broken", "decode", "corrupt_image")]),
                    label="rejects")
        assert_that(out.images | beam.Map(lambda r: (r.width, r.height)), equal_to([(480, 360)]), label="images")
