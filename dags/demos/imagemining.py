"""The imagemining demo: a small knowledge base and image rows over the shipped photos."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

from quarry.dags.demos import DemoInput


def build(folder: Path) -> DemoInput:
    """Write the imagemining demo input into `folder`.

    A 36-entity KB (real facts, two cycles, one multi-valued relation, a line
    that is not JSON, a fact about an unknown entity) and 12 image rows over
    the shipped demo photos: entities given by id (with and without boxes),
    by name, or linked from a caption; a small box that needs a crop; OCR text
    that gives an answer away; the only beverage of the KB (a text shortcut);
    two coins told apart by position, and the same two without boxes
    (ambiguous); an unknown entity; no entity at all; a corrupt and a missing image.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = resources.files("quarry.dags") / "demo_data"
    for name in ("kb.jsonl", "images.jsonl"):
        (folder / name).write_bytes((data / "imagemining" / name).read_bytes())
    for line in (folder / "images.jsonl").read_text().splitlines():
        try:
            image = json.loads(line).get("image")
        except json.JSONDecodeError:
            continue
        if image and (data / image).is_file():
            with resources.as_file(data / image) as src:
                shutil.copyfile(src, folder / image)
    # a truncated JPEG: decodes to `corrupt_image`
    (folder / "broken.jpg").write_bytes((folder / "rocket.jpg").read_bytes()[:600])
    return DemoInput([str(folder / "images.jsonl")], [f"kb.path={folder / 'kb.jsonl'}"])
