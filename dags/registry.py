"""The DAGs `quarry` knows, by name (the CLI's lookup table)."""

from __future__ import annotations

from quarry.dags import caption, grade
from quarry.dags.runner import DagSpec

DAGS: dict[str, DagSpec] = {spec.name: spec for spec in (caption.SPEC, grade.SPEC)}
