"""The sample inputs `quarry demo` runs on: one module per DAG, each with `build(folder) -> DemoInput`.

Every demo input is made deterministically and offline from files shipped in
`dags/demo_data/` (or generated), and shows the DAG's kept rows together with
one of each kind of bad input it rejects.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DemoInput:
    patterns: list[str]  # --input
    sets: list[str] = field(default_factory=list)  # --set overrides
    source: str = ""  # --source ("" -> demo-<dag>)
