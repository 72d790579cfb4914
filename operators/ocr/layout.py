"""From OCR lines to entities: validity, reading order, grouping, kinds.

    lines = valid_lines(raw_lines, TextFilterConfig())          # confidence, height, characters
    page = build_layout(lines, width, height, EntityConfig())   # -> Layout

Reading order is rows top to bottom (a line joins a row when it overlaps the
row's band vertically by at least half its height), left to right inside a
row: right for posters, charts and maps; multi-column documents are not the
target. Entities are lines joined by layout alone (union-find):

- pieces of one line: same row, similar height, horizontal gap under
  `max_word_gap` line heights (detectors split lines at wide spaces);
- stacked lines: similar height, vertical gap under `max_line_gap` line
  heights, overlapping horizontally and aligned left, centre or right.

Kinds, from text and geometry only (no model): `number` (mostly digits: tick
labels, values), `field` ("Key: value", poster fields), `title` (the tallest
text, clearly taller than the median line), `heading` (taller than the
median), `paragraph` (three lines or more), else `label` (legend entries,
place names, tags).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Sequence

from quarry.operators.ocr.engine import OcrLine
from quarry.schemas.ocr_search import EntityConfig, TextFilterConfig

Box = tuple[float, float, float, float]

_NUMERIC = re.compile(r"[0-9.,%$€£¥+\-−/×:]")
_FIELD = re.compile(r"^\s*[^:：]{1,40}[:：]\s*\S")


def valid_lines(lines: Sequence[OcrLine], cfg: TextFilterConfig) -> list[OcrLine]:
    """Lines that count as valid detections: confident, tall enough, not blank."""
    out = []
    for line in lines:
        chars = sum(1 for c in line.text if not c.isspace())
        if line.score >= cfg.min_score and line.height >= cfg.min_height_px and chars >= cfg.min_chars:
            out.append(OcrLine(" ".join(line.text.split()), line.score, line.quad))
    return out


def _v_overlap(a: Box, b: Box) -> float:
    return min(a[3], b[3]) - max(a[1], b[1])


def _h_overlap(a: Box, b: Box) -> float:
    return min(a[2], b[2]) - max(a[0], b[0])


def reading_order(boxes: Sequence[Box]) -> list[int]:
    """Indices of `boxes` in reading order: rows top to bottom, left to right within a row."""
    order = sorted(range(len(boxes)), key=lambda i: ((boxes[i][1] + boxes[i][3]) / 2, boxes[i][0]))
    rows: list[list[int]] = []
    bands: list[tuple[float, float]] = []
    for i in order:
        b = boxes[i]
        h = max(b[3] - b[1], 1e-6)
        for r, (top, bottom) in enumerate(bands):
            if min(bottom, b[3]) - max(top, b[1]) >= 0.5 * min(h, bottom - top):
                rows[r].append(i)
                bands[r] = (min(top, b[1]), max(bottom, b[3]))
                break
        else:
            rows.append([i])
            bands.append((b[1], b[3]))
    ranked = sorted(range(len(rows)), key=lambda r: bands[r][0])
    return [i for r in ranked for i in sorted(rows[r], key=lambda i: (boxes[i][0], boxes[i][1]))]


def _joinable(a: OcrLine, b: OcrLine, cfg: EntityConfig) -> bool:
    ha, hb = a.height, b.height
    if max(ha, hb) > cfg.max_height_ratio * max(min(ha, hb), 1e-6):
        return False
    h = (ha + hb) / 2
    ba, bb = a.box, b.box
    if _v_overlap(ba, bb) >= 0.5 * min(ha, hb):  # same row: pieces of one line
        gap = max(bb[0] - ba[2], ba[0] - bb[2])
        return gap <= cfg.max_word_gap * h
    gap = max(bb[1] - ba[3], ba[1] - bb[3])
    if gap > cfg.max_line_gap * h or _h_overlap(ba, bb) <= 0:
        return False
    tol = 1.5 * h
    return (abs(ba[0] - bb[0]) <= tol or abs(ba[2] - bb[2]) <= tol
            or abs((ba[0] + ba[2]) / 2 - (bb[0] + bb[2]) / 2) <= tol)


def group_lines(lines: Sequence[OcrLine], cfg: EntityConfig) -> list[list[int]]:
    """Groups of line indices that form one entity (each group in reading order)."""
    parent = list(range(len(lines)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            if _joinable(lines[i], lines[j], cfg):
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(lines)):
        groups.setdefault(find(i), []).append(i)
    out = []
    for members in groups.values():
        order = reading_order([lines[i].box for i in members])
        out.append([members[k] for k in order])
    return out


@dataclass(frozen=True)
class Entity:
    """Lines (indices into `Layout.lines`) that read as one thing."""

    lines: tuple[int, ...]
    text: str
    box: Box
    height: float  # median line height, pixels
    kind: str


@dataclass(frozen=True)
class Layout:
    lines: tuple[OcrLine, ...]  # valid lines in reading order
    entities: tuple[Entity, ...]  # in reading order

    @property
    def transcription(self) -> str:
        """One entity per line, entities in reading order."""
        return "\n".join(e.text for e in self.entities)


def union_box(boxes: Sequence[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def classify(text: str, n_lines: int, height: float, median_height: float, tallest: float) -> str:
    chars = [c for c in text if not c.isspace()]
    if chars and sum(1 for c in chars if c.isdigit()) >= 1 and \
            sum(1 for c in chars if c.isdigit() or _NUMERIC.match(c)) >= 0.8 * len(chars):
        return "number"
    if n_lines <= 2 and _FIELD.match(text):
        return "field"
    if height >= 1.6 * median_height and height >= 0.9 * tallest:
        return "title"
    if height >= 1.3 * median_height:
        return "heading"
    if n_lines >= 3:
        return "paragraph"
    return "label"


def build_layout(lines: Sequence[OcrLine], cfg: EntityConfig) -> Layout:
    """Order valid lines, group them into entities, classify each."""
    order = reading_order([line.box for line in lines])
    ordered = tuple(lines[i] for i in order)
    if not ordered:
        return Layout((), ())
    groups = group_lines(ordered, cfg)
    heights = [line.height for line in ordered]
    median_h = statistics.median(heights)
    tallest = max(heights)
    entities = []
    for g in groups:
        text = " ".join(ordered[i].text for i in g)
        h = statistics.median(ordered[i].height for i in g)
        box = union_box([ordered[i].box for i in g])
        entities.append(Entity(tuple(g), text, box, h, classify(text, len(g), h, median_h, tallest)))
    entity_order = reading_order([e.box for e in entities])
    return Layout(ordered, tuple(entities[i] for i in entity_order))
