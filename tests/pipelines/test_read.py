"""Readers: every input format, and every kind of bad input, as records or rejects."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from quarry.operators.ids import content_id
from quarry.operators.inputs.records import Unreadable
from quarry.pipelines.read import (
    ColumnNeed,
    Head,
    InputError,
    InputSpec,
    ReadImageText,
    plan_files,
    plan_inputs,
    read_file,
    read_reject,
)
from quarry.schemas.common import ImageText, Reject
from quarry.schemas.config import ReaderConfig

CFG = ReaderConfig()


def jpeg(color=(10, 120, 200), size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def read_all(path: Path, source="src", cfg=CFG):
    (f,) = plan_inputs([str(path)], cfg)
    recs = list(read_file(f, source, cfg))
    return [r for r in recs if isinstance(r, ImageText)], [r for r in recs if isinstance(r, Reject)]


def test_webdataset_tar_groups_members_by_key(tmp_path):
    path = write_tar(tmp_path / "a.tar", [
        ("000.jpg", jpeg()), ("000.txt", b"a blue square"), ("000.json", b'{"source": "laion", "url": "http://u"}'),
        ("001.png", jpeg()), ("001.txt", b"second"),
        ("sub/002.webp", jpeg()), ("sub/002.txt", b"third in a folder"),
    ])
    samples, rejects = read_all(path)
    assert rejects == []
    assert [s.origin.key for s in samples] == ["000", "001", "sub/002"]
    assert samples[0].source == "laion" and samples[0].url == "http://u"
    assert samples[1].source == "src"
    assert samples[2].caption == "third in a folder"
    assert all(s.origin.file == str(path) for s in samples)


def test_tar_bad_members_become_rejects(tmp_path):
    path = write_tar(tmp_path / "b.tar", [
        ("000.jpg", jpeg()),  # no caption
        ("001.txt", b"no image"),
        ("002.jpg", jpeg()), ("002.txt", b"\xff\xfe not utf-8"),
        ("003.jpg", jpeg()), ("003.txt", b"fine"), ("003.json", b"{broken"),
        ("004.jpg", jpeg()), ("004.txt", b"good one"),
    ])
    samples, rejects = read_all(path)
    assert [s.origin.key for s in samples] == ["004"]
    assert {(r.origin.key, r.reason) for r in rejects} == {
        ("000", "missing_caption"), ("001", "missing_image"), ("002", "caption_not_text"), ("003", "invalid_metadata")}
    assert all(r.stage == "read" for r in rejects)


def test_truncated_tar_keeps_what_was_read_and_rejects_the_rest(tmp_path):
    full = write_tar(tmp_path / "full.tar", [("000.jpg", jpeg()), ("000.txt", b"one"),
                                             ("001.jpg", jpeg(size=(900, 900))), ("001.txt", b"two")])
    data = full.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2 + 100])
    samples, rejects = read_all(cut)
    assert [s.origin.key for s in samples] == ["000"]
    assert [r.reason for r in rejects] == ["unreadable_tar"]


def test_zero_byte_tar_is_one_reject(tmp_path):
    (tmp_path / "empty.tar").write_bytes(b"")
    samples, rejects = read_all(tmp_path / "empty.tar")
    assert samples == [] and [r.reason for r in rejects] == ["unreadable_tar"]


def test_parquet_with_binary_and_hf_struct_images(tmp_path):
    img = jpeg()
    pq.write_table(pa.table({"image": [img, None], "caption": ["a", "b"], "url": ["u1", "u2"]}), tmp_path / "p.parquet")
    pq.write_table(pa.table({"jpg": [{"bytes": img, "path": "x.jpg"}], "text": ["struct image"]}), tmp_path / "h.parquet")
    samples, rejects = read_all(tmp_path / "p.parquet")
    assert [s.origin.key for s in samples] == ["row:0"] and samples[0].url == "u1"
    assert [(r.origin.key, r.reason) for r in rejects] == [("row:1", "missing_image")]
    samples, _ = read_all(tmp_path / "h.parquet")
    assert samples[0].image_bytes == img and samples[0].caption == "struct image"


def test_parquet_with_wrong_columns_fails_before_the_run(tmp_path):
    pq.write_table(pa.table({"pixels": [b"x"], "words": ["y"]}), tmp_path / "wrong.parquet")
    with pytest.raises(InputError, match=r"no image column .* columns are \['pixels', 'words'\]"):
        plan_inputs([str(tmp_path / "wrong.parquet")], CFG)
    cfg = ReaderConfig(image_column="pixels", caption_column="words")
    assert plan_inputs([str(tmp_path / "wrong.parquet")], cfg)[0].image_column == "pixels"


def test_jsonl_points_to_images_and_rejects_bad_lines(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(jpeg())
    lines = [
        json.dumps({"image": "imgs/a.jpg", "caption": "relative path", "id": "x1"}),
        "{this is not json",
        json.dumps({"image": "imgs/missing.jpg", "caption": "gone"}),
        json.dumps([1, 2]),
        "",
        json.dumps({"caption": "no image field"}),
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    samples, rejects = read_all(tmp_path / "d.jsonl")
    assert [s.origin.key for s in samples] == ["line:1:x1"]
    assert [(r.origin.key, r.reason) for r in rejects] == [
        ("line:2", "invalid_json"), ("line:3", "missing_image"), ("line:4", "invalid_json"), ("line:6", "missing_image")]


def test_directory_of_images_with_sidecars(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg())
    (tmp_path / "a.txt").write_text("a sidecar caption")
    (tmp_path / "b.png").write_bytes(jpeg())
    files = plan_inputs([str(tmp_path)], CFG)
    assert [Path(f.path).name for f in files] == ["a.jpg", "b.png"]
    recs = [r for f in files for r in read_file(f, "dir", CFG)]
    assert isinstance(recs[0], ImageText) and recs[0].caption == "a sidecar caption"
    assert isinstance(recs[1], Reject) and recs[1].reason == "missing_caption"


def test_empty_or_unreadable_inputs_fail_before_the_run(tmp_path):
    with pytest.raises(InputError, match="no files match"):
        plan_inputs([str(tmp_path / "nothing-*.tar")], CFG)
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(InputError, match="none of the 1 matching files"):
        plan_inputs([str(tmp_path / "*.md")], CFG)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        plan_inputs([str(tmp_path / "bad.parquet")], CFG)


def test_ids_are_stable_and_distinct_for_identical_content(tmp_path):
    path = write_tar(tmp_path / "a.tar", [("0.jpg", jpeg()), ("0.txt", b"same"), ("1.jpg", jpeg()), ("1.txt", b"same")])
    first, _ = read_all(path)
    second, _ = read_all(path)
    assert [s.sample_id for s in first] == [s.sample_id for s in second]
    assert first[0].sample_id != first[1].sample_id


def test_source_names_are_made_path_safe(tmp_path):
    path = write_tar(tmp_path / "a.tar", [("0.jpg", jpeg()), ("0.txt", b"x y"), ("0.json", b'{"source": "web/crawl 2024"}')])
    samples, _ = read_all(path)
    assert samples[0].source == "web_crawl_2024"


def test_read_transform_splits_samples_and_rejects(tmp_path):
    a = write_tar(tmp_path / "a.tar", [("0.jpg", jpeg()), ("0.txt", b"ok one")])
    b = write_tar(tmp_path / "b.tar", [("0.jpg", jpeg()), ("1.jpg", jpeg()), ("1.txt", b"ok two")])
    files = plan_inputs([str(tmp_path / "*.tar")], CFG)
    with TestPipeline() as p:
        read = p | ReadImageText(files, "t", CFG)
        assert_that(read.samples | beam.Map(lambda s: (Path(s.origin.file).name, s.origin.key)),
                    equal_to([("a.tar", "0"), ("b.tar", "1")]), label="samples")
        assert_that(read.rejected | beam.Map(lambda r: (Path(r.origin.file).name, r.reason)),
                    equal_to([("b.tar", "missing_caption")]), label="rejects")
    assert a.exists() and b.exists()


def test_gzipped_jsonl(tmp_path):
    import gzip

    (tmp_path / "a.jpg").write_bytes(jpeg())
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"image": "a.jpg", "caption": "from a gzipped file"}) + "\n{bad\n")
    samples, rejects = read_all(tmp_path / "d.jsonl.gz")
    assert [s.caption for s in samples] == ["from a gzipped file"]
    assert [r.reason for r in rejects] == ["invalid_json"]


def test_a_gzip_bomb_inflates_a_chunk_at_a_time(tmp_path):
    """Beam's AUTO decompression inflated each 16 MiB read of compressed bytes at once: 1 MiB on disk
    became 1 GiB in memory. `open_file` reads through Python's gzip; the 512 MiB line is skipped unread."""
    import gzip
    import resource

    (tmp_path / "a.jpg").write_bytes(jpeg())
    block = gzip.compress(b"a" * (16 << 20), mtime=0)
    with open(tmp_path / "bomb.jsonl.gz", "wb") as fh:
        fh.write(gzip.compress(json.dumps({"image": "a.jpg", "caption": "kept"}).encode() + b'\n{"caption": "', mtime=0))
        fh.write(block * 32)
        fh.write(gzip.compress(b'"}\n', mtime=0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    samples, rejects = read_all(tmp_path / "bomb.jsonl.gz")
    assert [s.caption for s in samples] == ["kept"] and [r.reason for r in rejects] == ["record_too_large"]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_a_truncated_gzip_keeps_the_lines_before_the_cut(tmp_path):
    import base64
    import gzip
    import os

    (tmp_path / "a.jpg").write_bytes(jpeg())
    lines = "".join(json.dumps({"image": "a.jpg", "caption": f"line {i}"}) + "\n" for i in range(3)).encode()
    data = gzip.compress(lines + b'{"caption": "' + base64.b64encode(os.urandom(100_000)) + b'"}\n', mtime=0)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    samples, rejects = read_all(tmp_path / "cut.jsonl.gz")
    assert [s.caption for s in samples] == ["line 0", "line 1", "line 2"]
    assert [(r.origin.key, r.reason) for r in rejects] == [("#unreadable", "unreadable_file")]


def test_image_paths_no_filesystem_serves_fifos_and_devices_are_rejects_not_errors(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would block until someone writes
    (tmp_path / "pipe.txt").write_text("never read")
    paths = ["file:///etc/hostname", "http://127.0.0.1:9/x.jpg", "s3://bucket/x.jpg", "gs://bucket/x.jpg",
             "azfs://account/container/x.jpg", "/dev/zero", "/dev/stdin", str(tmp_path / "pipe.jpg")]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"image": p, "caption": "c"}) + "\n" for p in paths))
    samples, rejects = read_all(tmp_path / "d.jsonl")
    assert samples == [] and [r.reason for r in rejects] == ["missing_image"] * len(paths)
    assert "not a regular file" in rejects[-1].detail
    with pytest.raises(InputError, match="no files match"):  # a FIFO is no input file either
        plan_inputs([str(tmp_path / "pipe.jpg")], CFG)


# --- the one planner -------------------------------------------------------------------------------


def planner_inputs(tmp_path: Path) -> Path:
    pq.write_table(pa.table({"pixels": [b"x"], "words": ["w"]}), tmp_path / "t.parquet")
    (tmp_path / "d.jsonl").write_text('{"q": 1}\n')
    (tmp_path / "x.svg").write_text("<svg/>")
    return tmp_path


NEED = ColumnNeed("image_column", "image", None, ("image", "img"), "reader.image_column")


@pytest.mark.parametrize("spec, pattern, message", [
    (InputSpec(("parquet",), "Parquet"), "nope-*.parquet", "input {d}/nope-*.parquet: no files match"),
    (InputSpec(("tar",), "a tar"), "*.svg", "input {d}/*.svg: none of the 1 matching files is a tar"),
    (InputSpec(("parquet",), "Parquet", columns=(NEED,)), "t.parquet",
     "input {d}/t.parquet: no image column (looked for image, img); columns are ['pixels', 'words']. "
     "Name it with --set reader.image_column=COLUMN"),
    (InputSpec(("parquet",), "Parquet", columns=(dataclasses.replace(NEED, wanted="pic"),)), "t.parquet",
     "input {d}/t.parquet: no column 'pic' (image); columns are ['pixels', 'words']"),
    (InputSpec(("parquet", "jsonl"), "tables", required=("q", "a"), what="samples", look_kinds=("parquet", "jsonl"),
               look=lambda fh, kind: Head(["q"])), "d.jsonl",
     "samples {d}/d.jsonl: missing column(s) a; columns are ['q']; a samples file needs q, a"),
    (InputSpec(("jsonl",), "JSONL", look_kinds=("jsonl",), unreadable="not a readable {kind} file ({e})",
               look=lambda fh, kind: (_ for _ in ()).throw(ValueError("bad"))), "d.jsonl",
     "input {d}/d.jsonl: not a readable jsonl file (bad)"),
])
def test_plan_files_says_in_one_line_what_cannot_be_read(tmp_path, spec, pattern, message):
    d = planner_inputs(tmp_path)
    with pytest.raises(InputError) as e:
        plan_files([str(d / pattern)], spec)
    assert str(e.value) == message.format(d=d)


def test_plan_files_resolves_columns_and_numbers_the_files(tmp_path):
    d = planner_inputs(tmp_path)
    need = dataclasses.replace(NEED, candidates=("img", "pixels"))
    spec = InputSpec(("parquet", "jsonl", "svg"), "anything", columns=(need,),
                     finish=lambda f, pattern, head: dataclasses.replace(f, root=pattern))
    files = plan_files([str(d / "*.parquet"), str(d)], spec)
    assert [(Path(f.path).name, f.kind, f.image_column, f.index) for f in files] == [
        ("t.parquet", "parquet", "pixels", 0), ("d.jsonl", "jsonl", None, 1), ("t.parquet", "parquet", "pixels", 2),
        ("x.svg", "svg", None, 3)]
    assert files[1].root == str(d)


def test_read_reject_keeps_the_ids_of_the_readers():
    bad = read_reject("/in/a.tar", "web", Unreadable("k#unreadable", "unreadable_tar", "x" * 600, "my shop"))
    assert (bad.sample_id, bad.source, bad.stage, bad.origin.key, len(bad.detail)) == (
        content_id("reject", "a.tar", "k#unreadable"), "my_shop", "read", "k#unreadable", 500)
    assert read_reject("/in/a.tar", "web", Unreadable("", "unreadable_file", "gone"), sample_id="s1").sample_id == "s1"
