"""The ocr_search demo: a synthetic poster on a shipped photo, a bar chart, and one photo without text."""

from __future__ import annotations

import json
import pathlib

from quarry.dags.demos import DemoInput

DEMO_BACKGROUNDS = ("coffee.jpg", "rocket.jpg")


def build(folder: pathlib.Path) -> DemoInput:
    """A synthetic poster on a shipped demo photo, a bar chart, and one photo without text.

    Deterministic and offline (Pillow's bundled font, photos from dags/demo_data).
    The run shows `ocr` rows with lines and entities, `ocr_search` rows for the
    small words (crop box, upscaled crop, query, crop->search trajectory), a
    `no_text` reject, and the engine and models in the manifest.
    """
    from PIL import Image

    from quarry.operators.ocr.synth import bar_chart, poster

    demo = pathlib.Path(__file__).resolve().parents[1] / "demo_data"
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    with Image.open(demo / DEMO_BACKGROUNDS[0]) as bg:
        synth = poster(bg, "demo-0", label_sizes=(9, 12, 16, 22))
    synth.image.save(folder / "poster.png")
    truth["poster.png"] = [t.__dict__ for t in synth.texts]
    chart = bar_chart("demo-chart", bars=3)
    chart.image.save(folder / "chart.png")
    truth["chart.png"] = [t.__dict__ for t in chart.texts]
    with Image.open(demo / DEMO_BACKGROUNDS[1]) as photo:  # a photo with no text: rejected no_text
        photo.convert("RGB").resize((320, 240)).save(folder / "no_text.jpg", quality=90)
    # What was drawn where (text, glyph box, font size): not an input (JSON is not an image or JSONL file).
    (folder / "truth.json").write_text(json.dumps(truth, indent=1))
    # The search step's knowledge source (imagemining's KB format), beside the folder: names the poster shows,
    # one with a fact of each answer kind and one with none (no_facts).
    kb = folder.with_name(folder.name + "-kb.jsonl")
    kb.write_text("".join(json.dumps(r) + "\n" for r in DEMO_KB))
    return DemoInput([str(folder)], [f"search.kb={kb}"])


DEMO_KB = (
    {"id": "E1", "name": "Orchard", "type": "cafe", "description": "a cafe by the harbour"},
    {"subject": "E1", "relation": "opened_in", "value": 1987, "value_type": "year"},
    {"id": "E2", "name": "South Museum", "type": "museum", "description": "a museum of maps"},
    {"id": "E3", "name": "Harbour District", "aliases": ["the Harbour"], "type": "district"},
    {"subject": "E2", "relation": "located_in", "object": "E3"},
    {"id": "E4", "name": "Little", "type": "shop"},  # named, but no fact to ask about: no_facts
)
