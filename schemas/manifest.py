"""The run manifest: what ran, on what, and where every input went."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field


class StageCount(BaseModel):
    """Elements into and out of one stage (for DAGs that make many rows from one input)."""

    inputs: int = 0
    outputs: int = 0


class Manifest(BaseModel):
    dag: str
    run_id: str
    started_at: str
    wall_time_s: float
    runner: str
    input_patterns: list[str]
    config: dict[str, Any]
    versions: dict[str, str]
    inputs: int = Field(description="records read from the inputs")
    kept: int = Field(description="rows in DIR/data")
    rejected: dict[str, dict[str, int]] = Field(description="stage -> reason -> count")
    rejected_total: int
    one_to_one: bool = Field(description="True when every input ends as one row or one reject")
    balanced: Optional[bool] = Field(None, description="inputs == kept + rejected_total (one-to-one DAGs)")
    rows_by_partition: dict[str, int] = Field(default_factory=dict, description="'source=s/tier=t' -> rows")
    stages: dict[str, StageCount] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list, description="warnings a reader of the output must see")
    extra: dict[str, Any] = Field(default_factory=dict, description="DAG-specific facts (models, engines)")
