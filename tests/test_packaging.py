"""pyproject.toml lists every package folder, so a wheel (what Dataflow/Flink workers install) holds them all."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_under_its_import_name():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = tool["package-dir"]  # import name -> folder
    assert mapping == {f"quarry.{d}": d for d in ("schemas", "operators", "pipelines", "dags")}
    found = {
        ".".join(["quarry", *init.parent.relative_to(ROOT).parts])
        for folder in mapping.values() for init in (ROOT / folder).rglob("__init__.py")
    }
    assert found == set(tool["packages"])
