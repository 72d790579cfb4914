"""Row types every DAG shares: tiers, origins, rejects, the sample base row.

Each row type is one pydantic model; its Arrow schema is derived from it by
`quarry.schemas.arrow.arrow_schema`, never inferred from data.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from quarry.schemas.arrow import PARTITION_STRING, ArrowType


class Tier(str, Enum):
    """Difficulty tiers, easiest first. `grade` replaces them with pass@k tiers."""

    very_easy = "very_easy"
    easy = "easy"
    medium = "medium"
    hard = "hard"
    very_hard = "very_hard"


TIERS: tuple[str, ...] = tuple(t.value for t in Tier)


class Row(BaseModel):
    """Base of every record: strict, no unknown fields, cheap to pickle."""

    model_config = ConfigDict(extra="forbid", frozen=False, use_enum_values=True)


class Origin(Row):
    """Where a sample came from: the input file and the key within it.

    `key` is the tar member key (`00042`), `line:17` for JSONL (1-based),
    `row:5` for Parquet (0-based, across row groups), or the file name for a
    plain image file.
    """

    file: str
    key: str


class ImageCell(Row):
    """An image as Hugging Face `datasets` stores one: `{bytes, path}`.

    Parquet written with this struct plus the features metadata loads in
    `datasets` as an `Image` column without glue; DuckDB reads `image.bytes`.
    """

    bytes: bytes
    path: Optional[str] = None


class Reject(Row):
    """Why one input (or one derived sample) was dropped, and at which stage."""

    sample_id: str
    source: str
    stage: str
    reason: str
    detail: str = ""
    origin: Origin


class Sample(Row):
    """Columns every output row carries, whatever the DAG."""

    sample_id: str
    source: Annotated[str, ArrowType(PARTITION_STRING)]  # also the Hive folder names: see PARTITION_STRING
    tier: Annotated[Tier, ArrowType(PARTITION_STRING)]
    task: str
    origin: Origin
    url: Optional[str] = None
    license: Optional[str] = None
    parent_id: Optional[str] = None


class ImageRecord(Row):
    """One shared image in `DIR/images/`; rows refer to it by `image_id`."""

    image_id: str
    image: ImageCell
    width: Annotated[int, ArrowType(pa.int32())]
    height: Annotated[int, ArrowType(pa.int32())]
    format: str


class ImageText(Row):
    """One image-text record as a reader yields it, before any stage ran."""

    sample_id: str
    source: str
    origin: Origin
    image_bytes: bytes
    caption: str
    url: Optional[str] = None
    license: Optional[str] = None
