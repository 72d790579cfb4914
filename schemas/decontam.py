"""The decontam DAG and stage: the contamination table's row and the DAG's config.

The `decontam` config section itself (`DecontamSection`: bench, columns,
ngram, max_hamming, action, ...) lives on the base `DagConfig` in
`quarry.schemas.config`, so every DAG can switch the stage on with
`--set decontam.bench=PATH`.
"""

from __future__ import annotations

from typing import Annotated, Optional

import pyarrow as pa
from pydantic import Field

from quarry.schemas.arrow import ArrowType
from quarry.schemas.common import Origin, Row, Tier
from quarry.schemas.config import DagConfig, Section


class ContaminationMatch(Row):
    """One training-row field that matched one benchmark item (`DIR/contamination/*.parquet`)."""

    sample_id: str
    source: str
    dag: str = Field(description="the DAG whose stage found it")
    field: str = Field(description="the training row's field (`caption`, `question`, `image`, `texts[2]`)")
    kind: str = Field(description="text_ngram | text_exact | image_phash | image_exact")
    reason: str = Field(description="contaminated_text | contaminated_image")
    benchmark: str
    item_id: str
    matched: str = Field(description="the matched n-gram (normalised), the whole text, or the benchmark's image column")
    distance: Annotated[Optional[int], ArrowType(pa.int32())] = Field(None, description="pHash bits (images)")
    action: str = Field(description="drop | flag")
    origin: Origin


class FlagColumns(Row):
    """Columns `decontam.action=flag` adds to each kept row."""

    contaminated: bool = False
    contamination: list[str] = Field(
        default_factory=list, description="one 'reason benchmark/item_id field' entry per matching field")


class InputSection(Section):
    """How the decontam DAG reads the rows it checks."""

    default_tier: Tier = Field(
        Tier.medium, description="tier of rows without a valid `tier` column (decontam does not judge difficulty)")
    max_image_bytes: int = Field(50 * 1024 * 1024, ge=1, description="larger training images are not checked (counted)")


class DecontamConfig(DagConfig):
    """`quarry run decontam`: needs `decontam.bench`."""

    input: InputSection = InputSection()
