"""Crop tasks (GLM-5V-Turbo §3.3 "OCR Search"), crop checks and tiers.

An entity whose text is too small to read at the trained model's input size
(`input_height_px < tasks.readable_px`, with the image scaled so its long side
is `tasks.model_input_side`) becomes a task: a question that needs the
entity's text, the crop box (0-1000, `margin` text heights around the
entity) and the crop upscaled so its text is `upscale_to_px` tall. What OCR
reads in the upscaled crop is the query; `operators/ocr/search.py` turns a
query that is a KB name into a search task, the rest stay zoom-and-read
tasks. `verify_crop` keeps the task only when that re-read matches
the entity text (1 - edit distance / max length >= `min_similarity`, the OCR
reward of GLM-4.5V Table 1), else `crop_unreadable`.

Tier rule (documented in the DAG): the ViCrop area bucket of the entity's box
(relative area < 0.005 hard, < 0.05 medium, else easy), then one step harder
when its text is under `small_text_px` at the model input and one step easier
when it is at least `large_text_px`. So tiny text in a tiny box is
`very_hard`, a big headline `very_easy`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image
from rapidfuzz.distance import Levenshtein

from quarry.operators.base import Rejection
from quarry.operators.ids import seeded_uniform
from quarry.operators.ocr.engine import OcrLine
from quarry.operators.ocr.layout import Box, Entity, Layout, reading_order
from quarry.operators.ocr.wording import WORDINGS
from quarry.schemas.common import TIERS
from quarry.schemas.ocr_search import SearchTaskConfig, TierConfig

CROP_UNREADABLE = "crop_unreadable"
REASONS: tuple[str, ...] = (CROP_UNREADABLE,)


def to_1000(box: Box, width: int, height: int) -> list[int]:
    """[x0, y0, x1, y1] normalised by width/height and scaled to 0-1000 (GLM-4.5V grounding format)."""
    x0, y0, x1, y1 = box
    clamp = lambda v: max(0, min(1000, v))  # noqa: E731
    return [clamp(math.floor(x0 / width * 1000)), clamp(math.floor(y0 / height * 1000)),
            clamp(math.ceil(x1 / width * 1000)), clamp(math.ceil(y1 / height * 1000))]


def input_height(text_height: float, width: int, height: int, model_side: int) -> float:
    """A text height in original pixels as the model sees it (long side scaled to `model_side`, never up)."""
    return text_height * min(1.0, model_side / max(width, height))


def rel_area(box: Box, width: int, height: int) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]) / float(width * height)


def tier_for(area: float, height_at_input: float, cfg: TierConfig) -> str:
    """ViCrop-style area bucket, moved one step by the text height at the model input."""
    small, medium = cfg.area_buckets
    index = 3 if area < small else 2 if area < medium else 1  # hard, medium, easy
    if height_at_input < cfg.small_text_px:
        index += 1
    elif height_at_input >= cfg.large_text_px:
        index -= 1
    return TIERS[max(0, min(len(TIERS) - 1, index))]


def image_tier(entities: Sequence[tuple[float, float]], cfg: TierConfig) -> str:
    """An `ocr` sample is as hard as its hardest entity ((rel_area, input height) pairs)."""
    tiers = [tier_for(a, h, cfg) for a, h in entities]
    return max(tiers, key=TIERS.index) if tiers else TIERS[2]


_REGIONS = (("top-left", "top", "top-right"), ("left", "centre", "right"), ("bottom-left", "bottom", "bottom-right"))


def region_name(box: Box, width: int, height: int) -> str:
    cx, cy = (box[0] + box[2]) / 2 / width, (box[1] + box[3]) / 2 / height
    return _REGIONS[min(2, int(cy * 3))][min(2, int(cx * 3))]


def question_for(kind: str, region: str, seed: str, language: str = "en") -> str:
    """A zoom-and-read question needing the entity's text (its wording per language in
    `operators/ocr/wording.py`), the variant chosen from `seed` (stable across reruns)."""
    w = WORDINGS[language]
    variants = w.zoom.get(kind, w.zoom["label"])
    pick = min(len(variants) - 1, int(seeded_uniform("question", seed) * len(variants)))
    return variants[pick].format(region=w.regions[region])


# The `ocr` task's prompt: the whole transcription, lines in reading order, one per line (as `text` holds it).
OCR_QUESTION = WORDINGS["en"].ocr_question


@dataclass(frozen=True)
class TaskPlan:
    """One small entity chosen for a crop-then-search task (boxes in original pixels)."""

    entity_index: int
    entity: Entity
    crop_box: tuple[int, int, int, int]
    input_height: float
    area: float


def crop_box(box: Box, text_height: float, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """The entity box grown by `margin` text heights on each side, inside the image."""
    m = margin * text_height
    return (max(0, math.floor(box[0] - m)), max(0, math.floor(box[1] - m)),
            min(width, math.ceil(box[2] + m)), min(height, math.ceil(box[3] + m)))


def plan_tasks(layout: Layout, width: int, height: int, cfg: SearchTaskConfig) -> list[TaskPlan]:
    """Entities too small to read at the model input, smallest text first, at most `max_tasks_per_image`."""
    plans = []
    for i, e in enumerate(layout.entities):
        h_in = input_height(e.height, width, height, cfg.model_input_side)
        if h_in >= cfg.readable_px:
            continue
        plans.append(TaskPlan(i, e, crop_box(e.box, e.height, width, height, cfg.margin), h_in,
                              rel_area(e.box, width, height)))
    plans.sort(key=lambda p: (p.input_height, p.entity_index))
    return plans[: cfg.max_tasks_per_image]


def crop_scale(text_height: float, crop_w: int, crop_h: int, cfg: SearchTaskConfig) -> float:
    """Upscale factor: text to `upscale_to_px`, within [1, max_upscale] and `max_crop_side`."""
    want = cfg.upscale_to_px / max(text_height, 1e-6)
    cap = cfg.max_crop_side / max(crop_w, crop_h, 1)
    return max(1.0, min(want, cfg.max_upscale, cap))


def make_crop(pixels: np.ndarray, pixel_scale: float, box: tuple[int, int, int, int], text_height: float,
              cfg: SearchTaskConfig) -> tuple[np.ndarray, float]:
    """Cut `box` (original pixels) out of `pixels` (original scaled by `pixel_scale`), upscaled.

    Returns the RGB crop and its scale relative to original pixels.
    """
    x0, y0, x1, y1 = (round(v * pixel_scale) for v in box)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    region = Image.fromarray(pixels[y0:y1, x0:x1])
    factor = crop_scale(text_height * pixel_scale, region.width, region.height, cfg)
    if factor > 1.0:
        region = region.resize((max(1, round(region.width * factor)), max(1, round(region.height * factor))),
                               Image.Resampling.LANCZOS)
    return np.asarray(region), pixel_scale * factor


def encode_crop(crop: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {"optimize": False}))
    return buf.getvalue()


def normalise_text(text: str) -> str:
    """Casefolded, all whitespace removed: detectors split and join words at spaces unpredictably."""
    return "".join(text.casefold().split())


def similarity(a: str, b: str) -> float:
    """1 - edit distance / max length (GLM-4.5V's OCR reward), ignoring case and whitespace."""
    return float(Levenshtein.normalized_similarity(normalise_text(a), normalise_text(b)))


@dataclass(frozen=True)
class Verified:
    query: str
    similarity: float


def verify_crop(entity_text: str, entity_box_in_crop: Box, crop_lines: Sequence[OcrLine],
                min_similarity: float) -> Verified | Rejection:
    """The crop's OCR must re-read the entity: lines centred inside the entity's box, in reading order.

    Lines of neighbouring text that the margin let in are left out of the query.
    """
    if not crop_lines:
        return Rejection(CROP_UNREADABLE, f"OCR read nothing in the crop (wanted {entity_text[:80]!r})")
    x0, y0, x1, y1 = entity_box_in_crop
    inside = [ln for ln in crop_lines
              if x0 <= (ln.box[0] + ln.box[2]) / 2 <= x1 and y0 <= (ln.box[1] + ln.box[3]) / 2 <= y1]
    chosen = inside or list(crop_lines)
    order = reading_order([ln.box for ln in chosen])
    query = " ".join(chosen[i].text.strip() for i in order).strip()
    score = similarity(query, entity_text)
    if score < min_similarity:
        return Rejection(CROP_UNREADABLE, f"crop re-read {query[:80]!r} vs {entity_text[:80]!r}: "
                                          f"similarity {score:.2f} < {min_similarity}")
    return Verified(query, score)

