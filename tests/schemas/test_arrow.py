"""Arrow schemas derived from the row models; output readable by pandas and `datasets`."""

from __future__ import annotations

import io
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pydantic import BaseModel

from quarry.schemas.arrow import arrow_schema, arrow_type
from quarry.schemas.caption import CaptionRow
from quarry.schemas.common import TIERS, ImageCell, Origin


def test_tiers_are_exactly_the_five():
    assert TIERS == ("very_easy", "easy", "medium", "hard", "very_hard")


def test_types_and_nullability():
    schema = arrow_schema(CaptionRow)
    assert schema.field("width").type == pa.int32()
    assert schema.field("clip_score").type == pa.float32() and schema.field("clip_score").nullable
    assert schema.field("concepts").type == pa.list_(pa.string())
    assert schema.field("image").type == pa.struct([pa.field("bytes", pa.binary()),
                                                    pa.field("path", pa.string())])
    assert not schema.field("sample_id").nullable
    assert schema.field("origin").type.names == ["file", "key"]


def test_unmappable_annotation_is_an_error():
    class Bad(BaseModel):
        x: set[int]

    with pytest.raises(TypeError, match="no Arrow mapping"):
        arrow_schema(Bad)
    assert arrow_type(Optional[str]) == pa.string()


def test_written_rows_load_in_pandas_and_datasets_with_images(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (1, 2, 3)).save(buf, "PNG")
    row = CaptionRow(sample_id="a", source="s", tier="easy", task="caption", origin=Origin(file="f", key="k"),
                     caption="c", image=ImageCell(bytes=buf.getvalue()), width=4, height=3, image_format="PNG",
                     phash="00", concepts=["x"])
    schema = arrow_schema(CaptionRow)
    pq.write_table(pa.Table.from_pylist([row.model_dump()], schema=schema), tmp_path / "a.parquet")
    assert pq.read_table(tmp_path / "a.parquet").to_pandas().loc[0, "caption"] == "c"

    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "a.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds[0]["image"].size == (4, 3) and ds[0]["concepts"] == ["x"]
