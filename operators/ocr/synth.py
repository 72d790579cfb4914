"""Synthetic posters and charts: text of known content, size and place on real backgrounds.

The OCR recipe of GLM-4.5V §3.1 renders corpus text in varied sizes and
colours on real image backgrounds; here the same idea makes ground truth for
tests and the recall benchmark: every drawn item comes back with its text,
its box in pixels and its font size, so "did a crop box contain the word and
did OCR read it" can be measured.

Text is drawn with Pillow's bundled scalable font (`ImageFont.load_default(size=...)`,
no system fonts), dark on a light plate so it reads on any photo. Items are
placed without overlap and at least `gap` font heights apart, so each item is
one entity for `quarry.operators.ocr.layout`. Everything is seeded by a string:
the same seed gives the same picture on every machine.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

# Place names, poster words and labels (English; capitalised like signage).
WORDS: tuple[str, ...] = (
    "Harbor", "Market", "Station", "Museum", "Garden", "Bridge", "Library", "Canal", "Tower", "Valley",
    "River", "Square", "Avenue", "Theatre", "Festival", "Concert", "Gallery", "Bakery", "Pharmacy", "Hotel",
    "North", "South", "East", "West", "Central", "Old", "New", "Royal", "Grand", "Little",
    "Summer", "Winter", "Night", "Morning", "Open", "Sale", "Exit", "Platform", "Gate", "Terminal",
    "Orchard", "Meadow", "Forest", "Lake", "Island", "Castle", "Chapel", "Harvest", "Parade", "Lantern",
)


@dataclass(frozen=True)
class SynthText:
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the glyphs, pixels
    size: int  # font size, pixels
    kind: str  # "title" | "label" | "number" | "legend"


@dataclass(frozen=True)
class SynthImage:
    image: Image.Image
    texts: tuple[SynthText, ...]


def rng_for(seed: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=8).digest(), "little"))


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def phrase(rng: random.Random, words: int) -> str:
    picked = rng.sample(WORDS, words)
    if rng.random() < 0.3:
        picked.append(str(rng.randint(2, 99)))
    return " ".join(picked)


def fit_background(background: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop and resize a photo to `size` (RGB)."""
    bg = background.convert("RGB")
    w, h = size
    scale = max(w / bg.width, h / bg.height)
    bg = bg.resize((max(w, round(bg.width * scale)), max(h, round(bg.height * scale))), Image.Resampling.LANCZOS)
    left, top = (bg.width - w) // 2, (bg.height - h) // 2
    return bg.crop((left, top, left + w, top + h))


def draw_text(canvas: Image.Image, xy: tuple[int, int], text: str, size: int,
              fill: tuple[int, int, int] = (20, 20, 20), plate: Optional[tuple[int, int, int]] = (250, 250, 245),
              pad: Optional[int] = None) -> tuple[int, int, int, int]:
    """Draw `text` at `xy` on a light plate; returns the glyph box."""
    draw = ImageDraw.Draw(canvas)
    f = font(size)
    box = draw.textbbox(xy, text, font=f)
    if plate is not None:
        p = pad if pad is not None else max(2, size // 3)
        draw.rectangle((box[0] - p, box[1] - p, box[2] + p, box[3] + p), fill=plate)
    draw.text(xy, text, font=f, fill=fill)
    return tuple(int(v) for v in box)  # type: ignore[return-value]


def _free(box: tuple[int, int, int, int], taken: Sequence[tuple[int, int, int, int]], gap: int) -> bool:
    for t in taken:
        if box[0] < t[2] + gap and t[0] < box[2] + gap and box[1] < t[3] + gap and t[1] < box[3] + gap:
            return False
    return True


def poster(background: Image.Image, seed: str, size: tuple[int, int] = (640, 480),
           title_size: Optional[int] = 44, label_sizes: Sequence[int] = (10, 14, 20),
           gap: float = 2.0, tries: int = 200) -> SynthImage:
    """A poster: an optional title at the top and one label per entry of `label_sizes`, placed at random."""
    rng = rng_for(seed)
    canvas = fit_background(background, size)
    w, h = size
    draw = ImageDraw.Draw(canvas)
    texts: list[SynthText] = []
    taken: list[tuple[int, int, int, int]] = []
    if title_size:
        title = phrase(rng, 2)
        tw = draw.textbbox((0, 0), title, font=font(title_size))[2]
        x = max(4, (w - tw) // 2)
        box = draw_text(canvas, (x, max(4, title_size // 3)), title, title_size)
        texts.append(SynthText(title, box, title_size, "title"))
        taken.append(box)
    for s in label_sizes:
        text = phrase(rng, rng.choice((1, 2)))
        bw, bh = draw.textbbox((0, 0), text, font=font(s))[2:]
        margin = max(4, s)
        for _ in range(tries):
            x = rng.randint(margin, max(margin, w - bw - margin))
            y = rng.randint(margin, max(margin, h - bh - margin))
            probe = (x, y, x + bw, y + bh)
            if _free(probe, taken, int(gap * max(s, 8))):
                box = draw_text(canvas, (x, y), text, s)
                texts.append(SynthText(text, box, s, "label"))
                taken.append(box)
                break
    return SynthImage(canvas, tuple(texts))


def bar_chart(seed: str, size: tuple[int, int] = (640, 480), label_size: int = 12,
              title_size: int = 28, bars: int = 4) -> SynthImage:
    """A bar chart on white: title, value labels above the bars, legend entries (small text)."""
    rng = rng_for(seed)
    w, h = size
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    texts: list[SynthText] = []
    title = phrase(rng, 2)
    tbox = draw_text(canvas, (20, 12), title, title_size, plate=None)
    texts.append(SynthText(title, tbox, title_size, "title"))
    base_y, top_y = h - 40, tbox[3] + 4 * label_size
    left, right = 40, int(w * 0.62)
    slot = (right - left) // bars
    colours = [(70, 110, 180), (220, 120, 60), (90, 160, 90), (170, 80, 160), (200, 180, 60), (80, 170, 190)]
    draw.line((left, base_y, right, base_y), fill=(0, 0, 0), width=2)
    for i in range(bars):
        value = rng.randint(10, 95)
        bar_h = int((base_y - top_y) * value / 100)
        x0 = left + i * slot + slot // 5
        x1 = left + (i + 1) * slot - slot // 5
        draw.rectangle((x0, base_y - bar_h, x1, base_y), fill=colours[i % len(colours)])
        vbox = draw_text(canvas, (x0, base_y - bar_h - int(label_size * 1.6)), str(value), label_size, plate=None)
        texts.append(SynthText(str(value), vbox, label_size, "number"))
    ly = top_y
    for i in range(bars):
        name = rng.choice(WORDS)
        draw.rectangle((right + 30, ly, right + 30 + label_size, ly + label_size), fill=colours[i % len(colours)])
        lbox = draw_text(canvas, (right + 36 + label_size, ly), name, label_size, plate=None)
        texts.append(SynthText(name, lbox, label_size, "legend"))
        ly += label_size * 3
    return SynthImage(canvas, tuple(texts))


def rotated(image: Image.Image, angle: float) -> Image.Image:
    """The picture turned by `angle` degrees (counter-clockwise), canvas grown, white fill."""
    return image.rotate(angle, expand=True, fillcolor=(255, 255, 255), resample=Image.Resampling.BICUBIC)


def box_contains(outer: Sequence[float], inner: Sequence[float], slack: float = 0.0) -> bool:
    """Whether `outer` (x0,y0,x1,y1) contains `inner`, with `slack` pixels of tolerance."""
    return (outer[0] - slack <= inner[0] and outer[1] - slack <= inner[1]
            and outer[2] + slack >= inner[2] and outer[3] + slack >= inner[3])
