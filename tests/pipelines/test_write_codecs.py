"""Shards: encoded image bytes are stored as they are, everything else in the configured codec; row groups are
sized by bytes as well as rows."""

from __future__ import annotations

import importlib
import inspect
import io

import pyarrow.parquet as pq
from PIL import Image
from pydantic import BaseModel

from quarry.pipelines.write import column_codecs, image_byte_columns, write_parquet
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.common import ImageRecord
from quarry.schemas.config import ShardConfig

SCHEMA_MODULES = ("common", "caption", "gui", "ocr_search", "svg", "imagemining", "interleaved", "grade", "documents",
                  "ocr_synth", "rl")


def _png(seed: int) -> bytes:
    im = Image.effect_noise((128, 128), 40 + seed).convert("RGB")
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def test_every_row_schema_gets_a_codec_for_each_of_its_columns(tmp_path):
    seen = 0
    for name in SCHEMA_MODULES:
        mod = importlib.import_module(f"quarry.schemas.{name}")
        for _, model in inspect.getmembers(mod, inspect.isclass):
            if not (issubclass(model, BaseModel) and model.__module__ == mod.__name__ and "Row" in model.__name__
                    or model is ImageRecord):
                continue
            try:
                schema = arrow_schema(model)
            except Exception:  # noqa: BLE001 - not a row model (configs, helpers)
                continue
            path = tmp_path / f"{model.__name__}.parquet"
            with pq.ParquetWriter(path, schema, compression=column_codecs(schema, "zstd")) as w:
                w.write_table(schema.empty_table())
            meta = pq.ParquetFile(path).schema_arrow
            assert meta == schema
            seen += 1
    assert seen >= 10


def test_image_bytes_are_stored_uncompressed_and_the_rest_in_zstd(tmp_path):
    schema = arrow_schema(ImageRecord)
    assert image_byte_columns(schema) == ["image.bytes"]
    rows = [ImageRecord(image_id=f"i{i}", image={"bytes": _png(i)}, width=128, height=128, format="png").model_dump()
            for i in range(4)]
    path = str(tmp_path / "images.parquet")
    write_parquet(path, rows, schema, ShardConfig())
    md = pq.ParquetFile(path).metadata.row_group(0)
    codecs = {md.column(i).path_in_schema: md.column(i).compression for i in range(md.num_columns)}
    assert codecs["image.bytes"] == "UNCOMPRESSED"
    assert codecs["image_id"] == "ZSTD"
    assert pq.read_table(path).column("image").to_pylist()[0]["bytes"] == rows[0]["image"]["bytes"]


def test_row_groups_are_cut_by_bytes(tmp_path):
    schema = arrow_schema(ImageRecord)
    rows = [ImageRecord(image_id=f"i{i:02d}", image={"bytes": _png(i)}, width=128, height=128, format="png").model_dump()
            for i in range(20)]
    per_row = len(rows[0]["image"]["bytes"])
    path = str(tmp_path / "images.parquet")
    write_parquet(path, rows, schema, ShardConfig(row_group_size=1000, row_group_bytes=per_row * 5))
    f = pq.ParquetFile(path)
    assert f.metadata.num_rows == 20
    assert 3 <= f.metadata.num_row_groups <= 5
    assert f.read().column("image_id").to_pylist() == [r["image_id"] for r in rows]
