"""Synthetic OCR renders: corpus text drawn onto a real background with exact ground truth (GLM-4.5V §3.1 source 1).

Plain Python (Pillow), no Beam. `render_sample(text, background, sample_id, cfg)` returns a `Render` (PNG bytes,
lines and words with boxes, tier) or a `Rejection`.

- Fonts: system TrueType fonts (`FONT_FILES`: DejaVu Sans/Serif/Mono, WenQuanYi Micro Hei). A font covers a
  character when its glyph differs from the font's .notdef glyph (Pillow's FreeType mask of the character vs that
  of an unassigned code point). Fonts covering every non-space character are candidates; the sample id picks one
  (Latin text gets the DejaVu faces, Chinese only WQY); none -> `no_font_coverage` (detail: the characters).
- Layouts: `paragraph` (greedy wrap in a block), `columns` (two columns, left column read first), `labels`
  (short lines of 1-3 words scattered without overlap). CJK runs wrap per character (each is a "word").
- Words are drawn one by one at positions the layout measured (`getlength`), so every word box is the word's own
  ink box (`getbbox`) at its drawn position: exact, not estimated. A line box is the union of its word boxes.
- Colour: per line, the mean RGB of the background under the line's box, per square chunk along the line; the
  first colour of a seeded palette order whose WCAG 2 contrast ratio against every chunk mean is >=
  `min_contrast`; when none reaches it (a line across dark and light areas), black or white on a plain plate
  behind the line. The ratio (vs the worst chunk, or the plate) is recorded per line.
- Rotation: the whole text layer is rotated by `angle` degrees (counter-clockwise, about the image centre); each
  line/word gets its rotated quad (x1,y1,...,x4,y4 clockwise from the text's top-left) and the axis-aligned box
  of that quad. Lines whose quad would leave the canvas are never drawn (ground truth = what was drawn).
- Tier rule (points, summed): text height at the canvas (font px >= 32: 0, >= 20: 1, >= 14: 2, else 3); worst
  line contrast (>= 7: 0, >= 4.5: 1, else 2); |angle| (0: 0, <= 5: 1, else 2); density (line boxes cover > 35% of
  the canvas: +1); labels layout +1 (rapidocr read back the fewest lines of it). 0 very_easy, 1 easy,
  2-3 medium, 4-5 hard, >= 6 very_hard.
- Determinism: every choice comes from `random.Random(seed)` seeded by the sample id; PNG encoding is fixed, so
  a rerun gives byte-identical images.
"""

from __future__ import annotations

import functools
import io
import math
import os
import random
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

from PIL import Image, ImageDraw, ImageFont

from quarry.operators.base import Rejection

EMPTY_TEXT = "empty_text"  # nothing but whitespace / control characters
NO_FONT_COVERAGE = "no_font_coverage"  # a character no installed font has a glyph for
NO_FONTS = "no_fonts"  # none of the font files is installed (the planner refuses the run before this)
NOTHING_FITS = "nothing_fits"  # not one line fits on the canvas at the chosen size
REASONS: tuple[str, ...] = (EMPTY_TEXT, NO_FONT_COVERAGE, NO_FONTS, NOTHING_FITS)

FONT_DIRS = ("/usr/share/fonts/truetype",)
# name -> file under a font dir (Debian fonts-dejavu-core, fonts-wqy-microhei)
FONT_FILES: dict[str, str] = {
    "DejaVuSans": "dejavu/DejaVuSans.ttf",
    "DejaVuSerif": "dejavu/DejaVuSerif.ttf",
    "DejaVuSansMono": "dejavu/DejaVuSansMono.ttf",
    "DejaVuSans-Bold": "dejavu/DejaVuSans-Bold.ttf",
    "WenQuanYiMicroHei": "wqy/wqy-microhei.ttc",
}
LAYOUTS = ("paragraph", "columns", "labels")
TIERS = ("very_easy", "easy", "medium", "hard", "very_hard")
# Text colours tried per line, in a seeded order: dark and light neutrals and saturated inks.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (255, 255, 255), (20, 20, 80), (250, 240, 200), (120, 0, 0), (0, 70, 0), (255, 230, 0),
    (0, 40, 120), (230, 255, 255), (60, 60, 60),
)
_NOTDEF_PROBE = "\U0010fffd"  # a private-use code point no font maps: its mask is the font's .notdef glyph


@dataclass(frozen=True)
class RenderConfig:
    """What `render_sample` varies and within what limits (the DAG's `render` section mirrors it)."""

    canvas_side: int = 960  # the background is scaled so its long side is this
    sizes: tuple[int, ...] = (14, 18, 24, 32, 44)  # font sizes in canvas pixels, picked per sample
    max_chars: int = 1200  # text beyond this is cut at a word boundary before layout (recorded)
    min_contrast: float = 4.5  # WCAG 2 AA for body text
    angles: tuple[float, ...] = (0.0, 0.0, 0.0, -3.0, 3.0, -8.0, 8.0)  # degrees, picked per sample
    layouts: tuple[str, ...] = LAYOUTS
    margin: float = 0.06  # of the canvas side, on every side
    line_spacing: float = 1.3  # line pitch / font size
    font_names: tuple[str, ...] = tuple(FONT_FILES)


@dataclass
class Word:
    text: str
    quad: list[float]
    box: list[int]


@dataclass
class Line:
    text: str
    quad: list[float]  # x1,y1,x2,y2,x3,y3,x4,y4 clockwise from the text's top-left (pixels)
    box: list[int]  # axis-aligned box of the quad (pixels)
    words: list[Word] = field(default_factory=list)
    color: tuple[int, int, int] = (0, 0, 0)
    contrast: float = 21.0
    plate: bool = False  # drawn on a plate (no colour met min_contrast against the background itself)


@dataclass
class Render:
    """One rendered sample: PNG bytes and its exact ground truth."""

    png: bytes
    width: int
    height: int
    text: str  # the drawn lines in reading order, joined by newlines
    lines: list[Line]
    font: str
    font_size: int
    layout: str
    angle: float
    tier: str
    chars_in: int  # characters of the input text
    chars_cut: int  # characters not drawn (cut to max_chars or not fitting)
    min_contrast: float
    density: float  # union-free sum of line box areas / canvas area


# --- fonts ------------------------------------------------------------------------------------


def font_path(name: str) -> Optional[str]:
    rel = FONT_FILES.get(name)
    for d in FONT_DIRS:
        if rel and os.path.exists(os.path.join(d, rel)):
            return os.path.join(d, rel)
    return None


def installed_fonts(names: Sequence[str] = tuple(FONT_FILES)) -> tuple[str, ...]:
    return tuple(n for n in names if font_path(n))


@functools.lru_cache(maxsize=64)
def load_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(name), size)


@functools.lru_cache(maxsize=200_000)
def covers(name: str, char: str) -> bool:
    """True when font `name` has a glyph for `char` (its mask differs from the .notdef glyph's)."""
    font = load_font(name, 24)
    probe = font.getmask(_NOTDEF_PROBE)
    mask = font.getmask(char)
    return mask.size != probe.size or bytes(mask) != bytes(probe)


def _needs_glyph(ch: str) -> bool:
    return not ch.isspace() and unicodedata.category(ch)[0] != "C"


def covering_fonts(text: str, names: Sequence[str]) -> tuple[tuple[str, ...], str]:
    """Fonts among `names` that cover every glyph-needing character of `text`, and the characters none covers."""
    chars = sorted({c for c in text if _needs_glyph(c)})
    ok = tuple(n for n in names if all(covers(n, c) for c in chars))
    if ok:
        return ok, ""
    missing = "".join(c for c in chars if not any(covers(n, c) for n in names))
    return ok, missing


# --- text -------------------------------------------------------------------------------------


_RULE = re.compile(r"([^\w\s])\1{3,}")  # "=====", "-----": ASCII rules, no text to read


def clean_text(text: str) -> str:
    """Control characters out, ASCII rules (a punctuation character 4+ times) out, whitespace runs inside a
    line to one space, blank-line runs to one break."""
    text = _RULE.sub(" ", unicodedata.normalize("NFC", text))
    out = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = "".join(c if (c == "\t" or unicodedata.category(c)[0] != "C") else "" for c in raw)
        out.append(" ".join(line.split()))
    paragraphs, cur = [], []
    for line in out:
        if line:
            cur.append(line)
        elif cur:
            paragraphs.append(" ".join(cur))
            cur = []
    if cur:
        paragraphs.append(" ".join(cur))
    return "\n".join(paragraphs)


def cut(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` characters, at the last space before the cut when there is one."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    space = max(head.rfind(" "), head.rfind("\n"))
    return head[:space].rstrip() if space > max_chars // 2 else head


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x2E80 <= o <= 0x9FFF) or (0xF900 <= o <= 0xFAFF) or (0xFF00 <= o <= 0xFFEF) or (0x3000 <= o <= 0x303F)


def tokens(paragraph: str) -> list[str]:
    """Words of a paragraph: space-separated runs, each CJK character its own word."""
    out = []
    for run in paragraph.split(" "):
        buf = ""
        for ch in run:
            if _is_cjk(ch):
                if buf:
                    out.append(buf)
                    buf = ""
                out.append(ch)
            else:
                buf += ch
        if buf:
            out.append(buf)
    return out


def _joiner(a: str, b: str) -> str:
    return "" if (_is_cjk(a[-1]) or _is_cjk(b[0])) else " "


# --- layout -----------------------------------------------------------------------------------


@dataclass
class _Placed:
    text: str
    x: float  # pen position (left, top anchor "la") of each word
    y: float
    words: list[tuple[str, float]]  # (word, x)


def _wrap(words: list[str], font, width: float) -> list[list[tuple[str, float]]]:
    """Greedy wrap: lines of (word, x offset) within `width`; a word wider than `width` is broken by characters."""
    lines: list[list[tuple[str, float]]] = []
    cur: list[tuple[str, float]] = []
    text = ""
    for w in words:
        while font.getlength(w) > width and len(w) > 1:  # break an over-wide word
            n = len(w) - 1
            while n > 1 and font.getlength(w[:n]) > width:
                n -= 1
            if cur:
                lines.append(cur)
                cur, text = [], ""
            lines.append([(w[:n], 0.0)])
            w = w[n:]
        candidate = (text + _joiner(text, w) + w) if text else w
        if text and font.getlength(candidate) > width:
            lines.append(cur)
            cur, text = [], ""
            candidate = w
        x = font.getlength(candidate) - font.getlength(w)
        cur.append((w, x))
        text = candidate
    if cur:
        lines.append(cur)
    return lines


def _line_text(words: list[tuple[str, float]]) -> str:
    out = ""
    for w, _ in words:
        out = out + _joiner(out, w) + w if out else w
    return out


def layout_lines(paragraphs: list[str], font, size: int, kind: str, canvas: tuple[int, int],
                 cfg: RenderConfig, rng: random.Random) -> list[_Placed]:
    """Where each line goes on the (unrotated) canvas, in reading order; lines past the bottom are left out."""
    w, h = canvas
    m = int(cfg.margin * max(w, h))
    pitch = size * cfg.line_spacing
    placed: list[_Placed] = []
    if kind == "labels":
        boxes: list[tuple[float, float, float, float]] = []
        words = [t for p in paragraphs for t in tokens(p)]
        i = 0
        while i < len(words):
            n = rng.randint(1, 3)
            label = words[i:i + n]
            i += n
            wrapped = _wrap(label, font, w - 2 * m)[0]
            lw = font.getlength(_line_text(wrapped))
            for _ in range(30):  # a free spot, or the label is left out
                x = rng.uniform(m, max(m, w - m - lw))
                y = rng.uniform(m, max(m, h - m - pitch))
                box = (x - size * 1.5, y - size * 0.5, x + lw + size * 1.5, y + pitch + size * 0.2)
                if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in boxes):
                    boxes.append(box)
                    placed.append(_Placed(_line_text(wrapped), x, y, [(t, x + dx) for t, dx in wrapped]))
                    break
            else:
                break
        # reading order: top to bottom, then left to right (labels on one row band read left first)
        placed.sort(key=lambda p: (round(p.y / pitch), p.x))
        return placed
    columns = 2 if kind == "columns" else 1
    gap = size * 2 if columns == 2 else 0
    col_w = (w - 2 * m - gap * (columns - 1)) / columns
    col, y = 0, float(m)
    for p in paragraphs:
        for line in _wrap(tokens(p), font, col_w):
            if y + pitch > h - m:
                col += 1
                y = float(m)
                if col >= columns:
                    return placed
            x = m + col * (col_w + gap)
            placed.append(_Placed(_line_text(line), x, y, [(t, x + dx) for t, dx in line]))
            y += pitch
        y += pitch * 0.4  # paragraph gap
    return placed


# --- colour -----------------------------------------------------------------------------------


def luminance(rgb: Sequence[float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0-255 channels)."""
    def lin(c: float) -> float:
        c = c / 255.0
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    la, lb = luminance(a), luminance(b)
    hi, lo = max(la, lb), min(la, lb)
    return (hi + 0.05) / (lo + 0.05)


def pick_color(means: Sequence[Sequence[float]], min_contrast: float, order: Sequence[tuple[int, int, int]]
               ) -> tuple[tuple[int, int, int], float]:
    """The first colour of `order` whose contrast vs every region mean is >= min_contrast, else black or white
    (the higher worst case); with the worst-case ratio."""
    def worst(c):
        return min(contrast_ratio(c, m) for m in means)
    for c in order:
        r = worst(c)
        if r >= min_contrast:
            return c, r
    best = max(((0, 0, 0), (255, 255, 255)), key=worst)
    return best, worst(best)


def region_means(image: Image.Image, box: Sequence[float]) -> list[tuple[float, float, float]]:
    """Mean RGB of the region under `box`, per square-ish chunk along its long side (a line crossing a dark and a
    light area must read on both)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(image.width, max(x0 + 1, x1)), min(image.height, max(y0 + 1, y1))
    w, h = x1 - x0, y1 - y0
    n = max(1, min(32, round(max(w, h) / max(1, min(w, h)))))
    small = image.crop((x0, y0, x1, y1)).resize((n, 1) if w >= h else (1, n), Image.Resampling.BOX)
    return [tuple(float(v) for v in px[:3]) for px in small.getdata()]  # type: ignore[misc]


# --- geometry ---------------------------------------------------------------------------------


def rotate_point(x: float, y: float, angle: float, cx: float, cy: float) -> tuple[float, float]:
    """Where (x, y) lands when the image is rotated `angle` degrees counter-clockwise about (cx, cy) (PIL's
    `Image.rotate` convention, y pointing down)."""
    t = math.radians(angle)
    dx, dy = x - cx, y - cy
    return cx + dx * math.cos(t) + dy * math.sin(t), cy - dx * math.sin(t) + dy * math.cos(t)


def quad_of(box: Sequence[float], angle: float, cx: float, cy: float) -> list[float]:
    x0, y0, x1, y1 = box
    out: list[float] = []
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        rx, ry = rotate_point(x, y, angle, cx, cy)
        out += [round(rx, 2), round(ry, 2)]
    return out


def box_of(quad: Sequence[float]) -> list[int]:
    xs, ys = quad[0::2], quad[1::2]
    return [int(math.floor(min(xs))), int(math.floor(min(ys))), int(math.ceil(max(xs))), int(math.ceil(max(ys)))]


def to_1000(box: Sequence[float], width: int, height: int) -> list[int]:
    x0, y0, x1, y1 = box
    return [round(x0 * 1000 / width), round(y0 * 1000 / height), round(x1 * 1000 / width), round(y1 * 1000 / height)]


# --- tiers ------------------------------------------------------------------------------------


def tier_for(font_size: int, min_contrast: float, angle: float, density: float, layout: str = "paragraph") -> str:
    points = 0 if font_size >= 32 else 1 if font_size >= 20 else 2 if font_size >= 14 else 3
    points += 1 if layout == "labels" else 0  # scattered short labels: measured the hardest layout to read back
    points += 0 if min_contrast >= 7 else 1 if min_contrast >= 4.5 else 2
    points += 0 if angle == 0 else 1 if abs(angle) <= 5 else 2
    points += 1 if density > 0.35 else 0
    return TIERS[0 if points == 0 else 1 if points == 1 else 2 if points <= 3 else 3 if points <= 5 else 4]


# --- the render -------------------------------------------------------------------------------


def fit_background(background: Image.Image, side: int) -> Image.Image:
    """RGB background scaled (Lanczos) so its long side is `side`."""
    im = background.convert("RGB")
    scale = side / max(im.size)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS)


def render_sample(text: str, background: Image.Image, seed: str, cfg: RenderConfig = RenderConfig()
                  ) -> Union[Render, Rejection]:
    """Draw `text` on `background` with choices seeded by `seed` (the sample id); exact lines and words."""
    cleaned = clean_text(text) if isinstance(text, str) else ""
    if not cleaned.strip():
        return Rejection(EMPTY_TEXT, f"{len(text) if isinstance(text, str) else 0} characters, none printable")
    fonts = installed_fonts(cfg.font_names)
    if not fonts:
        return Rejection(NO_FONTS, f"none of {', '.join(cfg.font_names)} is installed")
    ok, missing = covering_fonts(cleaned, fonts)
    if not ok:
        shown = " ".join(f"U+{ord(c):04X}" for c in missing[:20])
        return Rejection(NO_FONT_COVERAGE, f"{len(missing)} character(s) no installed font covers: {shown}")
    rng = random.Random(seed)
    font_name = rng.choice(ok)
    size = rng.choice(cfg.sizes)
    kind = rng.choice(cfg.layouts)
    angle = rng.choice(cfg.angles)
    order = list(PALETTE)
    rng.shuffle(order)
    body = cut(cleaned, cfg.max_chars)
    canvas = fit_background(background, cfg.canvas_side)
    W, H = canvas.size
    font = load_font(font_name, size)
    placed = layout_lines(body.split("\n"), font, size, kind, (W, H), cfg, rng)
    cx, cy = W / 2.0, H / 2.0
    layer = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    lines: list[Line] = []
    for p in placed:
        word_boxes = []
        for w, x in p.words:
            b = font.getbbox(w, anchor="la")
            word_boxes.append((w, x, (x + b[0], p.y + b[1], x + b[2], p.y + b[3])))
        ux0 = min(b[0] for _, _, b in word_boxes)
        uy0 = min(b[1] for _, _, b in word_boxes)
        ux1 = max(b[2] for _, _, b in word_boxes)
        uy1 = max(b[3] for _, _, b in word_boxes)
        quad = quad_of((ux0, uy0, ux1, uy1), angle, cx, cy)
        box = box_of(quad)
        if box[0] < 0 or box[1] < 0 or box[2] > W or box[3] > H:
            continue  # would leave the canvas once rotated: not drawn, not in the truth
        color, ratio = pick_color(region_means(canvas, box), cfg.min_contrast, order)
        plate = ratio < cfg.min_contrast
        if plate:  # no ink reads on every part of this background: a plate behind the line, text on it
            color = (0, 0, 0) if luminance(color) < 0.5 else (255, 255, 255)
            fill = (245, 245, 240, 255) if color == (0, 0, 0) else (25, 25, 30, 255)
            pad = max(2, size // 6)
            draw.rectangle((ux0 - pad, uy0 - pad, ux1 + pad, uy1 + pad), fill=fill)
            ratio = contrast_ratio(color, fill)
        words = []
        for w, x, b in word_boxes:
            draw.text((x, p.y), w, font=font, fill=color + (255,), anchor="la")
            wq = quad_of(b, angle, cx, cy)
            words.append(Word(w, wq, box_of(wq)))
        lines.append(Line(p.text, quad, box, words, color, round(ratio, 3), plate))
    if not lines:
        return Rejection(NOTHING_FITS, f"no line of {size} px {kind} text fits a {W}x{H} canvas at {angle} degrees")
    if angle:
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, center=(cx, cy))
    canvas.paste(layer, (0, 0), layer)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False, compress_level=6)
    drawn = "\n".join(line.text for line in lines)
    density = sum((ln.box[2] - ln.box[0]) * (ln.box[3] - ln.box[1]) for ln in lines) / float(W * H)
    worst = min(ln.contrast for ln in lines)
    drawn_chars = sum(len(ln.text.replace(" ", "")) for ln in lines)
    in_chars = len(cleaned.replace(" ", "").replace("\n", ""))
    return Render(png=buf.getvalue(), width=W, height=H, text=drawn, lines=lines, font=font_name, font_size=size,
                  layout=kind, angle=angle, tier=tier_for(size, worst, angle, density, kind), chars_in=len(text),
                  chars_cut=max(0, in_chars - drawn_chars), min_contrast=worst, density=round(density, 4))


# --- checking the truth with a real OCR ------------------------------------------------------------


def line_agreement(truth: Sequence[Line], read: Sequence[tuple[str, Sequence[float]]],
                   similarity, threshold: float = 0.9) -> list[tuple[str, str, float]]:
    """For each truth line, what an OCR read there and how well it matches: the read lines whose box centre
    falls inside the truth line's quad (rotated lines: the quad, not its axis-aligned box, which overlaps the
    neighbours), left to right, joined by spaces; `similarity(a, b)` is the OCR reward
    (1 - edit distance / max length). Returns (truth, read, similarity) per line; a line counts as read when
    its similarity is >= `threshold`."""
    out = []
    for ln in truth:
        inside = []
        for text, quad in read:
            xs, ys = quad[0::2], quad[1::2]
            cx, cy = sum(xs) / len(xs), sum(ys) / len(ys)
            if _in_quad(cx, cy, ln.quad):
                inside.append((min(xs), text))
        got = " ".join(t for _, t in sorted(inside))
        out.append((ln.text, got, float(similarity(ln.text, got))))
    return out


def _in_quad(x: float, y: float, quad: Sequence[float]) -> bool:
    """Whether (x, y) lies inside the convex quad (x1,y1,...,x4,y4, clockwise on screen)."""
    pts = list(zip(quad[0::2], quad[1::2]))
    signs = []
    for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1]):
        signs.append((bx - ax) * (y - ay) - (by - ay) * (x - ax) >= 0)
    return all(signs) or not any(signs)
