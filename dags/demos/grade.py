"""The grade demo: RL samples of four task types and rollouts of two models (JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

from quarry.dags.demos import DemoInput

GRADE_SAMPLES = [
    ("m-add", "math", "What is 17 + 25?", "42"),
    ("m-frac", "math", "Simplify 6/8.", "3/4"),
    ("m-sqrt", "math", "What is the square root of 2, to 3 decimals?", "1.414"),
    ("m-pct", "math", "What is 15% of 80?", "12"),
    ("o-sign", "ocr", "Read the sign.", "NO PARKING"),
    ("o-plate", "ocr", "Read the licence plate.", "KX 4417"),
    ("q-cat", "exact", "What animal is on the sofa?", '["cat", "kitten"]'),
    ("q-colour", "exact", "What colour is the car?", "red"),
    ("g-dog", "grounding", "Box the dog.", "[[120, 340, 410, 760]]"),
    ("g-none", "exact", "Nobody answered this one.", "yes"),
]
# (sample, model) -> responses' answers; None is a response without a box.
GRADE_ROLLOUTS = {
    ("m-add", "glm-a"): ["42", "42", "42", "42"], ("m-add", "glm-b"): ["42", "42.0", "42", "42"],
    ("m-frac", "glm-a"): ["3/4", "0.75", "6/8", "0.7"], ("m-frac", "glm-b"): ["3/4", "3/4", "0.75", "0.75"],
    ("m-sqrt", "glm-a"): ["1.414", "1.41", "1.732", None], ("m-sqrt", "glm-b"): ["1.5", "1.414", "2", "1.4"],
    ("m-pct", "glm-a"): ["12", "1200", "15", "12"], ("m-pct", "glm-b"): ["8", "12", "20", "12"],
    ("o-sign", "glm-a"): ["NO PARKING"] * 4, ("o-sign", "glm-b"): ["NO PARKING", "NO PARKlNG", "NO PARKING", "NO PARKING"],
    ("o-plate", "glm-a"): ["KX 4471", "KX4417", "KX 4417", "HX 4417"], ("o-plate", "glm-b"): ["KX 4411"] * 4,
    ("q-cat", "glm-a"): ["Cat", "kitten", "a cat", "dog"], ("q-cat", "glm-b"): ["cat"] * 4,
    ("q-colour", "glm-a"): ["maroon", "dark red", "crimson", "burgundy"], ("q-colour", "glm-b"): ["orange"] * 4,
    ("g-dog", "glm-a"): ["[118, 338, 412, 765]", "[0, 0, 100, 100]", "[120, 340, 410, 760]", None],
    ("g-dog", "glm-b"): ["[500, 500, 900, 900]"] * 4,
    ("unknown-id", "glm-a"): ["1"],
}


def build_grade_input(folder: Path) -> tuple[Path, Path]:
    """Write the grade demo's samples and rollouts (JSONL); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = folder / "samples.jsonl"
    samples.write_text("".join(json.dumps({"sample_id": sid, "source": "demo-rl", "task": task, "question": q,
                                           "answer": a}) + "\n" for sid, task, q, a in GRADE_SAMPLES))
    rollouts = folder / "rollouts.jsonl"
    lines = []
    for (sid, model), answers in GRADE_ROLLOUTS.items():
        for a in answers:
            response = "<think>...</think><answer>I am not sure.</answer>" if a is None else (
                f"<think>...</think><answer><|begin_of_box|>{a}<|end_of_box|></answer>")
            lines.append(json.dumps({"sample_id": sid, "model": model, "response": response}))
    rollouts.write_text("\n".join(lines) + "\n")
    return samples, rollouts


def build(folder: Path) -> DemoInput:
    samples, rollouts = build_grade_input(folder)
    return DemoInput([str(samples)], [f"rollouts={rollouts}"], "demo-rl")
