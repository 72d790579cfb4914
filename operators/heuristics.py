"""Cheap heuristic filters of the caption DAG (GLM-4.5V §3.1, step 1).

Scoring is separate from deciding: `image_stats` and `caption_stats` measure
(once), `HeuristicFilter` compares the measurements with the thresholds of a
`HeuristicsConfig`, so a threshold can change without re-measuring.

Where the default thresholds come from (`quarry.schemas.caption.HeuristicsConfig`):

- ``min_side = 200`` and ``max_aspect_ratio = 3.0``: DataComp's "basic
  filtering" baseline (Gadre et al., 2023; mlfoundations/datacomp
  ``baselines/apply_filter.py``) keeps images whose smaller dimension is
  >= 200 px and whose max/min side ratio is <= 3.0. Same comparisons here:
  rejected when the shorter side is < ``min_side`` or the ratio is
  > ``max_aspect_ratio``.
- Caption length: DataComp's basic filter keeps captions of > 2 words and
  > 5 characters (its image-based baseline: > 1 word). quarry's defaults are
  that rule (``min_caption_words = 3``, ``min_caption_chars = 6``, rejected
  when *fewer*), so "a cat" is `caption_too_short`; set them to 2 / 5 to keep
  two-word alt texts ("red car"). The upper bounds (256 words, 2,000 chars)
  drop pasted articles and keyword dumps, which no caption model's context
  would use anyway.
- ``solid_max_std = 3.0``: GLM-4.5V names solid-colour detection but gives no
  threshold. 3.0 (on 0-255) sits above what JPEG noise and dithering leave on
  a flat colour and far below any photograph or drawing (typically 20-80).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.decode import DecodedImage
from quarry.schemas.caption import HeuristicsConfig

TOO_SMALL = "too_small"
BAD_ASPECT_RATIO = "bad_aspect_ratio"
SOLID_COLOR = "solid_color"
CAPTION_NOT_TEXT = "caption_not_text"
CAPTION_TOO_SHORT = "caption_too_short"
CAPTION_TOO_LONG = "caption_too_long"
IMAGE_REASONS: tuple[str, ...] = (TOO_SMALL, BAD_ASPECT_RATIO, SOLID_COLOR)  # `check_image`
CAPTION_REASONS: tuple[str, ...] = (CAPTION_NOT_TEXT, CAPTION_TOO_SHORT, CAPTION_TOO_LONG)
REASONS: tuple[str, ...] = IMAGE_REASONS + CAPTION_REASONS

# The solid-colour measure is taken on a thumbnail of this side: the cost is
# one box-filtered resize, whatever the image size, and pixel-level noise
# (JPEG blocks, sensor grain) averages out while real structure survives.
THUMBNAIL_SIDE = 64

# A caption is "mostly control characters" when more than this fraction of
# its non-whitespace characters are control/format/private-use/unassigned.
MAX_CONTROL_FRACTION = 0.5

# Scheme URLs and bare www. hosts. A caption that is only links is not text.
_URL = re.compile(r"(?:\b(?:https?|ftp)://|\bwww\.)\S+", re.IGNORECASE)
# Scripts written without spaces between words: each Han character, kana or
# CJK compatibility ideograph counts as one word (so a Chinese caption is not
# "one word long"). Hangul uses spaces and is counted by whitespace.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
# Unicode categories that are not text: Cc control, Cf format, Co private
# use, Cs surrogate, Cn unassigned. (\t \n \r are whitespace, counted apart.)
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn"})


@dataclass(frozen=True)
class ImageStats:
    width: int
    height: int
    aspect_ratio: float  # long side / short side, >= 1.0
    pixel_std: float  # largest per-channel standard deviation (0-255) on a 64x64 thumbnail

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)


@dataclass(frozen=True)
class CaptionStats:
    words: int  # tokens holding a letter or digit; each CJK character is one word
    chars: int  # code points after NFC normalisation and stripping outer whitespace
    is_text: bool
    not_text_because: str = ""  # why `is_text` is False ("" when it is True)


def image_stats(img: DecodedImage) -> ImageStats:
    """Measure a decoded image: size, aspect ratio and colour spread."""
    width, height = img.width, img.height
    thumb = img.image.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BOX)
    pixels = np.asarray(thumb, dtype=np.float32).reshape(-1, len(thumb.getbands()))
    # Per channel, then the largest: a red/green split of equal brightness is
    # not a solid colour even though its grey version would be.
    std = float(pixels.std(axis=0).max())
    return ImageStats(
        width=width,
        height=height,
        aspect_ratio=max(width, height) / min(width, height),
        pixel_std=std,
    )


def caption_stats(caption: str | None) -> CaptionStats:
    """Measure a caption: word and character counts, and whether it is text at all.

    Not text (checked in this order):
    1. empty or whitespace only;
    2. mostly control characters: more than `MAX_CONTROL_FRACTION` of the
       non-whitespace characters are in Unicode categories Cc/Cf/Co/Cs/Cn;
    3. only URLs: after removing URLs, no letter or digit is left, and there was a URL;
    4. no letter or digit at all: punctuation, symbols, emoji only ("!!!", "★★★").

    A missing caption (None, a null in the input) counts as empty.
    """
    text = unicodedata.normalize("NFC", caption or "").strip()
    words = sum(1 for tok in _TOKEN.findall(text) if _has_alnum(tok))
    chars = len(text)
    because = _not_text_because(text)
    return CaptionStats(words=words, chars=chars, is_text=not because, not_text_because=because)


def _not_text_because(text: str) -> str:
    """Why a stripped caption is not text, or "" when it is."""
    if not text:
        return "empty or whitespace only"
    visible = [c for c in text if not c.isspace()]
    controls = sum(1 for c in visible if unicodedata.category(c) in _CONTROL_CATEGORIES)
    if controls > MAX_CONTROL_FRACTION * len(visible):
        return f"mostly control characters: {controls} of {len(visible)} > {MAX_CONTROL_FRACTION:g}"
    without_urls, n_urls = _URL.subn(" ", text)
    if not _has_alnum(without_urls):
        return "only URLs" if n_urls else "no letters or digits (punctuation/symbols only)"
    return ""


def _has_alnum(s: str) -> bool:
    return any(c.isalnum() for c in s)


class HeuristicFilter:
    """Decides on measured stats; the thresholds are a `HeuristicsConfig`."""

    def __init__(self, cfg: HeuristicsConfig) -> None:
        if cfg.min_caption_words > cfg.max_caption_words:
            raise ValueError(f"min_caption_words={cfg.min_caption_words} > max_caption_words={cfg.max_caption_words}")
        if cfg.min_caption_chars > cfg.max_caption_chars:
            raise ValueError(f"min_caption_chars={cfg.min_caption_chars} > max_caption_chars={cfg.max_caption_chars}")
        self.cfg = cfg

    def check_image(self, stats: ImageStats) -> Rejection | None:
        """`too_small`, then `bad_aspect_ratio`, then `solid_color`; None keeps."""
        cfg = self.cfg
        if stats.short_side < cfg.min_side:
            return Rejection(
                TOO_SMALL, f"short_side={stats.short_side} ({stats.width}x{stats.height}) < min_side={cfg.min_side}"
            )
        if stats.aspect_ratio > cfg.max_aspect_ratio:
            return Rejection(
                BAD_ASPECT_RATIO,
                f"aspect_ratio={stats.aspect_ratio:.3f} ({stats.width}x{stats.height})"
                f" > max_aspect_ratio={cfg.max_aspect_ratio:g}",
            )
        if stats.pixel_std < cfg.solid_max_std:
            return Rejection(SOLID_COLOR, f"pixel_std={stats.pixel_std:.3f} < solid_max_std={cfg.solid_max_std:g}")
        return None

    def check_caption_stats(self, stats: CaptionStats) -> Rejection | None:
        """`caption_not_text`, then `caption_too_short`, then `caption_too_long`; None keeps."""
        cfg = self.cfg
        if not stats.is_text:
            return Rejection(CAPTION_NOT_TEXT, stats.not_text_because)
        if stats.words < cfg.min_caption_words:
            return Rejection(CAPTION_TOO_SHORT, f"words={stats.words} < min_caption_words={cfg.min_caption_words}")
        if stats.chars < cfg.min_caption_chars:
            return Rejection(CAPTION_TOO_SHORT, f"chars={stats.chars} < min_caption_chars={cfg.min_caption_chars}")
        if stats.words > cfg.max_caption_words:
            return Rejection(CAPTION_TOO_LONG, f"words={stats.words} > max_caption_words={cfg.max_caption_words}")
        if stats.chars > cfg.max_caption_chars:
            return Rejection(CAPTION_TOO_LONG, f"chars={stats.chars} > max_caption_chars={cfg.max_caption_chars}")
        return None

    def check_caption(self, caption: str | None) -> Rejection | None:
        return self.check_caption_stats(caption_stats(caption))

    def check(self, decoded: DecodedImage, caption: str | None) -> Rejection | None:
        """The image checks, then the caption checks; the first failure wins."""
        rejection = self.check_image(image_stats(decoded))
        if rejection is not None:
            return rejection
        return self.check_caption(caption)
