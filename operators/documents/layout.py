"""Text segments of a PDF page -> lines in reading order, columns, tables, and the page's tier.

Input: the text layer's segments (`Segment`: text and box in PDF points, y
down, from PDFium's text rects). Reading order:

1. segments on one baseline (vertical overlap >= half the shorter height)
   whose horizontal gap is under `WORD_GAP` line heights join into one line;
   a wider gap keeps them apart (table cells, two columns).
2. columns: a vertical gutter is an x-range at least `GUTTER` points wide that
   no line crosses, inside the text area, with `COLUMN_LINES` lines right of
   it level with lines left of it (a running header or page number is no column); lines are assigned to the column
   their left edge falls in. A line that crosses a gutter (a title, a
   full-width paragraph) splits the page into horizontal bands.
3. order: bands top to bottom; in a band, columns left to right; in a column,
   lines top to bottom (then left to right). A page with a table reads row by
   row (no gutters are looked for: cells would pass for columns).

Tables: a page where at least `TABLE_ROWS` baselines each hold 3 or more
separate pieces (cells) whose left edges repeat from row to row.

Tier rule (documented in README "documents"): points from
- text density: characters per square inch of page > 20: +1, > 40: +1
- layout: 2 or more columns: +1; a table: +1
- font size: median character font size (PDFium) < 9 pt: +1
tier = very_easy, easy, medium, hard, very_hard for 0, 1, 2, 3, >= 4 points.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

TIERS = ("very_easy", "easy", "medium", "hard", "very_hard")
WORD_GAP = 1.2  # line-box heights (~0.7 em each): a wider gap on one baseline is a cell or column break
GUTTER = 12.0  # points: the narrowest column gutter
TABLE_ROWS = 3
COLUMN_LINES = 3  # lines right of a gutter level with lines left of it
SMALL_FONT_PT = 9.0  # footnote/caption size in papers: reading it at page resolution is harder


@dataclass(frozen=True)
class Segment:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in points, y down from the page top


@dataclass
class Line:
    text: str
    box: tuple[float, float, float, float]
    pieces: list[Segment] = field(default_factory=list)
    column: int = 0
    band: int = 0
    row: int = 0  # index of its baseline, top to bottom


@dataclass(frozen=True)
class PageLayout:
    lines: list[Line]  # reading order
    columns: int  # most columns in any band
    table: bool
    median_height: float  # points: tight glyph boxes, ~0.7 of the font size
    chars: int
    font_size: float = 0.0  # median font size of the page's characters (PDFium), points; 0 = unknown

    @property
    def text(self) -> str:
        return "\n".join(ln.text for ln in self.lines)


def _overlap(a, b) -> float:
    return min(a[3], b[3]) - max(a[1], b[1])


def _union(boxes) -> tuple[float, float, float, float]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _rows(segments: list[Segment]) -> list[list[Segment]]:
    """Segments grouped by baseline (sorted top to bottom), each row left to right."""
    rows: list[list[Segment]] = []
    for s in sorted(segments, key=lambda s: ((s.box[1] + s.box[3]) / 2, s.box[0])):
        h = s.box[3] - s.box[1]
        for row in reversed(rows[-3:]):
            r = _union([p.box for p in row])
            cy = (s.box[1] + s.box[3]) / 2
            if _overlap(r, s.box) >= 0.5 * min(h, r[3] - r[1]) or r[1] <= cy <= r[3]:  # a bullet sits inside
                row.append(s)
                break
        else:
            rows.append([s])
    return [sorted(r, key=lambda s: s.box[0]) for r in rows]


def _split_row(row: list[Segment]) -> list[Line]:
    lines: list[Line] = []
    for s in row:
        h = max(1.0, s.box[3] - s.box[1])
        if lines:  # a bullet or a comma is short: the gap is measured in the taller one's height
            h = max(h, lines[-1].box[3] - lines[-1].box[1])
        if lines and s.box[0] - lines[-1].box[2] < WORD_GAP * h:
            ln = lines[-1]
            sep = "" if ln.text.endswith(" ") or s.text.startswith(" ") or s.box[0] - ln.box[2] < 0.15 * h else " "
            ln.text += sep + s.text
            ln.box = _union([ln.box, s.box])
            ln.pieces.append(s)
        else:
            lines.append(Line(s.text, s.box, [s]))
    for ln in lines:
        ln.text = " ".join(ln.text.split())
    return [ln for ln in lines if ln.text]


def _gutters(lines: list[Line]) -> list[tuple[float, float]]:
    """x-ranges (>= GUTTER wide) inside the text area that no line covers."""
    if len(lines) < 2:
        return []
    spans = sorted((ln.box[0], ln.box[2]) for ln in lines)
    gaps, reach = [], spans[0][1]
    for x0, x1 in spans[1:]:
        if x0 - reach >= GUTTER:
            gaps.append((reach, x0))
        reach = max(reach, x1)
    return gaps


def _supported(gutter: tuple[float, float], lines: list[Line]) -> bool:
    """A real gutter has text beside it on both sides: COLUMN_LINES lines right of it that each sit level with
    a line left of it (a right-aligned running header or page number has nothing level with it)."""
    g0, g1 = gutter
    left = [ln.box for ln in lines if ln.box[2] <= g0 + 0.5]
    right = [ln.box for ln in lines if ln.box[0] >= g1 - 0.5]
    level = sum(1 for r in right if any(_overlap(r, b) > -0.5 * (r[3] - r[1]) for b in left))
    return level >= COLUMN_LINES


def _table(lines: list[Line]) -> bool:
    by_row: dict[int, list[Line]] = {}
    for ln in lines:
        by_row.setdefault(ln.row, []).append(ln)
    multi = [sorted(round(x.box[0] / 4) for x in r) for r in by_row.values() if len(r) >= 3]
    if len(multi) < TABLE_ROWS:
        return False
    starts = [set(m) for m in multi]
    common = set.intersection(*starts)
    return len(common) >= 2


def page_layout(segments: list[Segment], font_size: float = 0.0) -> PageLayout:
    """Lines in reading order with their column and band, and the page's layout facts."""
    lines = []
    for r, row in enumerate(_rows([s for s in segments if s.text.strip()])):
        for ln in _split_row(row):
            ln.row = r
            lines.append(ln)
    if not lines:
        return PageLayout([], 0, False, 0.0, 0, font_size)
    # a line is "wide" when removing it would open a gutter: find gutters among the narrow lines
    table = _table(lines)
    narrow = lines
    gutters = [] if table else _gutters(narrow)  # a table reads row by row, not cell column by cell column
    width = max(ln.box[2] for ln in lines) - min(ln.box[0] for ln in lines)
    if not gutters and not table:  # wide lines (titles) hide the gutters: try without the widest lines
        narrow = [ln for ln in lines if ln.box[2] - ln.box[0] < 0.6 * width]
        gutters = _gutters(narrow) if len(narrow) >= 4 else []
    gutters = [g for g in gutters if _supported(g, narrow)]
    wide = [ln for ln in lines if any(ln.box[0] < g0 and ln.box[2] > g1 for g0, g1 in gutters)]
    for ln in lines:
        ln.column = sum(1 for g0, g1 in gutters if ln.box[0] >= g1 - 0.5)
    # bands: a wide line ends the band above it and is a band of its own
    order: list[Line] = []
    bands: list[list[Line]] = [[]]
    for ln in sorted(lines, key=lambda ln: (ln.row, ln.box[0])):
        if ln in wide:
            bands.append([ln])
            bands.append([])
        else:
            bands[-1].append(ln)
    cols = 1
    for b, band in enumerate(x for x in bands if x):
        used = {ln.column for ln in band}
        cols = max(cols, len(used))
        for ln in sorted(band, key=lambda ln: (ln.column, ln.row, ln.box[0])):
            ln.band = b
            order.append(ln)
    heights = [ln.box[3] - ln.box[1] for ln in order]
    return PageLayout(order, cols, table, statistics.median(heights), sum(len(ln.text) for ln in order),
                      font_size)


def page_tier(layout: PageLayout, width_pt: float, height_pt: float) -> tuple[str, dict[str, float]]:
    """The tier by the module's rule, and the facts it used."""
    area_in2 = max(1e-6, width_pt * height_pt / (72.0 * 72.0))
    density = layout.chars / area_in2
    size = layout.font_size or layout.median_height / 0.7  # glyph boxes are ~0.7 of the font size
    points = (density > 20) + (density > 40) + (layout.columns >= 2) + layout.table + (0 < size < SMALL_FONT_PT)
    return TIERS[min(points, 4)], {"chars_per_in2": round(density, 2), "columns": layout.columns,
                                   "table": layout.table, "median_line_pt": round(layout.median_height, 2),
                                   "font_pt": round(size, 2)}
