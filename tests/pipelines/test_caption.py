"""The caption pipeline's own steps: light candidates, writing from a second read."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from quarry.operators.clip import clip_thumbnail
from quarry.pipelines.balance import BalancedPair
from quarry.pipelines.caption import Candidate, _WriteFromSource
from quarry.pipelines.read import plan_inputs, read_file
from quarry.schemas.caption import CaptionConfig
from quarry.schemas.common import Reject


def jpeg(size=(320, 240), color=(20, 90, 160)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def test_clip_thumbnail_caps_the_shorter_side():
    img = Image.new("RGB", (1200, 800), (1, 2, 3))
    thumb = Image.open(io.BytesIO(clip_thumbnail(img, 336)))
    assert thumb.format == "JPEG" and thumb.size == (504, 336)
    small = Image.new("RGB", (300, 200))
    assert Image.open(io.BytesIO(clip_thumbnail(small, 336))).size == (300, 200)


def test_write_from_source_rereads_bytes_and_rejects_what_vanished(tmp_path):
    images = {"a": jpeg(), "b": jpeg(color=(200, 10, 10))}
    path = tmp_path / "in.tar"
    with tarfile.open(path, "w") as tar:
        for key, data in images.items():
            for ext, payload in (("jpg", data), ("txt", f"caption of {key} here".encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    cfg = CaptionConfig()
    files = plan_inputs([str(path)], cfg.reader)
    samples = list(read_file(files[0], "src", cfg.reader))
    pairs = [BalancedPair(Candidate(s.model_copy(update={"image_bytes": b""}), 320, 240, "JPEG", 7), ("x",), 3, "hard")
             for s in samples]
    ghost = samples[0].model_copy(update={"sample_id": "ghost", "origin": samples[0].origin.model_copy(
        update={"key": "missing"})})
    pairs.append(BalancedPair(Candidate(ghost, 1, 1, "JPEG", 0), ("x",), 3, "hard"))

    fn = _WriteFromSource(files, "src", cfg.reader, cfg.shards, str(tmp_path / "out"))
    outputs = list(fn.process((str(path), pairs)))
    rejects = [o.value for o in outputs if hasattr(o, "tag")]
    written = [o for o in outputs if isinstance(o, str)]
    assert [(r.sample_id, r.stage, r.reason) for r in rejects if isinstance(r, Reject)] == [
        ("ghost", "write", "source_changed")]
    assert [Path(p).relative_to(tmp_path / "out" / "data").as_posix() for p in written] == [
        "source=src/tier=hard/caption-00000-of-00001.parquet"]
    table = pq.read_table(written[0])
    assert [c["bytes"] for c in table["image"].to_pylist()] == [images["a"], images["b"]]
