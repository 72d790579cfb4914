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


# Which extra a worker of each DAG installs on top of the base (pyproject [project.optional-dependencies]).
DAG_EXTRAS = {"caption": "caption", "gui": "gui", "ocr_search": "ocr", "documents": "ocr", "ocr_synth": "ocr",
              "svg": "svg", "imagemining": "imagemining", "interleaved": "interleaved", "grade": "grade",
              "decontam": None}
# Imported but installed by a listed package (open_clip pulls huggingface_hub; paddleocr is an optional engine,
# imported inside a try; orjson comes with apache-beam).
TRANSITIVE = {"huggingface_hub", "paddleocr", "orjson"}
FOLDERS = {"quarry.schemas": "schemas", "quarry.operators": "operators", "quarry.pipelines": "pipelines",
           "quarry.dags": "dags"}


def _module_file(mod: str):
    for pkg, folder in FOLDERS.items():
        if mod == pkg or mod.startswith(pkg + "."):
            base = ROOT / folder / Path(*mod[len(pkg):].lstrip(".").split(".")) if mod != pkg else ROOT / folder
            for f in (base.with_suffix(".py"), base / "__init__.py"):
                if f.exists():
                    return f
    return None


def _third_party_imports(start: str) -> set[str]:
    """Top-level names of every non-quarry import reachable from `start` (function-level imports included:
    a worker runs those too)."""
    import ast
    import sys

    seen, found, todo = set(), set(), [start]
    while todo:
        mod = todo.pop()
        f = _module_file(mod)
        if f is None or f in seen:
            continue
        seen.add(f)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                if n.startswith("quarry."):
                    todo.append(n)
                elif n.split(".")[0] not in sys.stdlib_module_names and n != "__future__":
                    found.add(n.split(".")[0])
    return found


def _dist(requirement: str) -> str:
    import re

    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_each_dags_imports_are_in_the_base_or_its_extra():
    import importlib.metadata as md

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    base = {_dist(r) for r in project["dependencies"]}
    dists = md.packages_distributions()
    from quarry.dags.registry import DAG_NAMES

    assert set(DAG_EXTRAS) == set(DAG_NAMES)
    for dag, extra in DAG_EXTRAS.items():
        allowed = base | ({_dist(r) for r in extras[extra]} if extra else set())
        needed = {_dist(d) for name in _third_party_imports(f"quarry.dags.{dag}") - TRANSITIVE
                  for d in dists.get(name, [name])}
        assert needed <= allowed, f"{dag}: imports {sorted(needed - allowed)}, not in the base or quarry[{extra}]"


def test_all_is_every_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    families = {e for e in extras if e not in ("all", "dev", "gcp", "aws", "paddle")}
    assert extras["all"] == [f"quarry[{','.join(sorted(families, key=list(extras).index))}]"]
    assert set(DAG_EXTRAS.values()) - {None} == families


def test_worker_dockerfiles_copy_real_paths_and_install_real_extras():
    import re

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    beam = next(line for line in (ROOT / "scripts" / "constraints.txt").read_text().splitlines()
                if line.startswith("apache-beam"))  # the SDK image must be the Beam the job is submitted with
    files = sorted((ROOT / "docker").glob("*.Dockerfile"))
    assert {f.name for f in files} == {"cpu.Dockerfile", "gpu.Dockerfile", "browser.Dockerfile"}
    for f in files:
        text = f.read_text()
        assert re.search(r"^FROM apache/beam_python\$\{PYTHON\}_sdk:\$\{BEAM_VERSION\}$", text, re.M), f.name
        assert f"ARG BEAM_VERSION={beam.split('==')[1]}" in text, f.name
        for src in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, re.M):
            for path in src.split():
                assert (ROOT / path).exists(), f"{f.name}: COPY {path} does not exist"
        named = re.findall(r"ARG EXTRAS=(\S+)", text) + re.findall(r'"\.\[(\w[\w,]*)\]"', text)
        for group in named:
            for extra in group.split(","):
                assert extra in extras or extra == "${EXTRAS}", f"{f.name}: no extra {extra!r}"
