"""The DAGs `quarry` knows, by name (the CLI's lookup table).

`DAGS` imports a DAG's module (Beam, pyarrow, its operators: seconds) only when that DAG is looked up, so a
mistyped DAG name or config key fails in well under a second: the CLI checks names against `DAG_NAMES` and
configs against `CONFIG_MODELS` (schemas only) first. tests/dags/test_registry.py holds the two tables to
the DAG modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel

    from quarry.dags.runner import DagSpec

# name -> the config model, as "module:Class" (in `quarry list` order)
CONFIG_MODELS: dict[str, str] = {
    "caption": "quarry.schemas.caption:CaptionConfig",
    "gui": "quarry.schemas.gui:GuiConfig",
    "ocr_search": "quarry.schemas.ocr_search:OcrSearchConfig",
    "svg": "quarry.schemas.svg:SvgConfig",
    "imagemining": "quarry.schemas.imagemining:ImageMiningConfig",
    "interleaved": "quarry.schemas.interleaved:InterleavedConfig",
    "decontam": "quarry.schemas.decontam:DecontamConfig",
    "grade": "quarry.schemas.grade:GradeConfig",
    "documents": "quarry.schemas.documents:DocumentsConfig",
    "ocr_synth": "quarry.schemas.ocr_synth:OcrSynthConfig",
}
DAG_NAMES: tuple[str, ...] = tuple(CONFIG_MODELS)


def config_model(name: str) -> type[BaseModel]:
    """The config model of DAG `name`, importing only its schema module."""
    module, cls = CONFIG_MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


class _Dags(Mapping):
    """name -> DagSpec, each DAG module imported on first lookup (`quarry.dags.<name>.SPEC`)."""

    def __getitem__(self, name: str) -> DagSpec:
        if name not in CONFIG_MODELS:
            raise KeyError(name)
        return importlib.import_module(f"quarry.dags.{name}").SPEC

    def __iter__(self) -> Iterator[str]:
        return iter(DAG_NAMES)

    def __len__(self) -> int:
        return len(DAG_NAMES)


DAGS: Mapping[str, DagSpec] = _Dags()
