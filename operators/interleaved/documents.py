"""Interleaved web documents: parse the shapes public corpora use, validate, measure, tier.

Shapes (one record = one document; detected per record by its keys):

- ``obelics`` (OBELICS, MINT-1T, OmniCorpus): parallel lists ``texts`` and
  ``images`` of equal length; at each position exactly one of the two is set.
- ``mmc4``: ``text_list`` (sentences) plus ``image_info`` (a list of
  ``{image_name | image_path | image | image_bytes, matched_text_index, raw_url, ...}``);
  each image is placed just before the sentence it was matched to (as
  OpenFlamingo's MMC4 loader does), images of one sentence in list order.
- ``segments``: ``segments``, a list of ``{"type": "text", "text": ...}`` /
  ``{"type": "image", "image" | "path" | "bytes" | "url": ...}`` in reading order.

An image is given as bytes, a Hugging Face ``{bytes, path}`` struct, a
``data:`` URI, or a path (relative to the input file). Remote ``http(s)``
URLs are not fetched (quarry downloads nothing): such an image is recorded as
``missing_image`` in the row's per-image info. Paths are read through a
`load` callable the pipeline passes in, so this module stays Beam-free.

Document-level reasons (stage ``read``): ``unknown_shape``, ``unequal_lengths``,
``position_out_of_range``, ``invalid_document``, ``too_much_text``, ``too_many_images``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np
from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.ids import content_id, digest
from quarry.operators.interleaved.text_quality import cap_text, sanitize_text, strip_html
from quarry.schemas.interleaved import DensityConfig, DocumentConfig, TierConfig

UNKNOWN_SHAPE = "unknown_shape"
UNEQUAL_LENGTHS = "unequal_lengths"
POSITION_OUT_OF_RANGE = "position_out_of_range"
INVALID_DOCUMENT = "invalid_document"
TOO_MANY_IMAGES = "too_many_images"
MISSING_IMAGE = "missing_image"
IMAGE_DENSE = "image_dense"
NO_IMAGES_LEFT = "no_images_left"
IMAGE_IRRELEVANT = "image_irrelevant"
# `parse_document` (stage read), `check_density` (density), the assembly (no image left); the image-level
# codes are not reject rows: they are recorded in the row's `images` list.
DOCUMENT_REASONS: tuple[str, ...] = (UNKNOWN_SHAPE, UNEQUAL_LENGTHS, POSITION_OUT_OF_RANGE, INVALID_DOCUMENT,
                                     TOO_MANY_IMAGES)
IMAGE_REASONS: tuple[str, ...] = (MISSING_IMAGE, IMAGE_IRRELEVANT)
REASONS: tuple[str, ...] = DOCUMENT_REASONS + (IMAGE_DENSE, NO_IMAGES_LEFT) + IMAGE_REASONS

Loader = Callable[[str], Union[bytes, str]]  # path -> bytes, or why it cannot be read

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_DATA_URI = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)


@dataclass
class ImageRef:
    """One image of a document: its bytes, or why there are none."""

    data: Optional[bytes]
    url: Optional[str] = None
    missing: str = ""  # why `data` is None

    @property
    def identity(self) -> str:
        """What the document id hashes for this image: its content, or the reference."""
        return digest(self.data) if self.data is not None else f"missing:{self.url or ''}:{self.missing}"


@dataclass
class RawDocument:
    """A parsed document: segments in reading order, texts still raw (before HTML stripping)."""

    sample_id: str
    key: str
    shape: str
    segments: list[Union[str, ImageRef]]
    url: Optional[str] = None
    source: Optional[str] = None
    license: Optional[str] = None
    file: str = ""  # the input file, set by the reader

    @property
    def images(self) -> list[ImageRef]:
        return [s for s in self.segments if isinstance(s, ImageRef)]


@dataclass
class CleanText:
    """The document's text segments after HTML stripping; `segments` keeps image refs in place."""

    segments: list[Union[str, ImageRef]]
    html_stripped: int = 0
    texts: list[str] = field(default_factory=list)

    @property
    def joined(self) -> str:
        return "\n\n".join(self.texts)


def count_words(text: str) -> int:
    """Whitespace-separated tokens; each Han/kana character counts as one word."""
    return len(_WORD.findall(text))


def detect_shape(rec: dict[str, Any]) -> Optional[str]:
    if "segments" in rec:
        return "segments"
    if "texts" in rec and "images" in rec:
        return "obelics"
    if "text_list" in rec and "image_info" in rec:
        return "mmc4"
    return None


def _str_or_none(v: Any) -> Optional[str]:
    return sanitize_text(v) if isinstance(v, str) and v else None


def _url_of(rec: dict[str, Any]) -> Optional[str]:
    url = _str_or_none(rec.get("url")) or _str_or_none(rec.get("URL"))
    if url:
        return url
    for k in ("general_metadata", "metadata"):  # OBELICS keeps the page URL in a JSON string
        meta = rec.get(k)
        if isinstance(meta, str):
            try:
                meta = json.loads(meta)
            except (json.JSONDecodeError, RecursionError):
                continue
        if isinstance(meta, dict) and isinstance(meta.get("url"), str):
            return _str_or_none(meta["url"])
    return None


def resolve_image(value: Any, load: Loader, url: Optional[str] = None) -> ImageRef:
    """An image value as the corpora write it -> `ImageRef` (bytes or why not)."""
    if isinstance(value, dict):  # Hugging Face Image struct {bytes, path}
        if isinstance(value.get("bytes"), (bytes, bytearray)) and value["bytes"]:
            return ImageRef(bytes(value["bytes"]), url)
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return ImageRef(bytes(value), url) if value else ImageRef(None, url, "empty image bytes")
    if not isinstance(value, str) or not value:
        return ImageRef(None, url, f"no image value ({type(value).__name__})")
    if _DATA_URI.match(value):
        try:
            return ImageRef(base64.b64decode(value.split(",", 1)[1], validate=True), url)
        except (binascii.Error, ValueError) as e:
            return ImageRef(None, url, f"data URI is not base64 ({e})")
    if value.lower().startswith(("http://", "https://")):
        return ImageRef(None, url or value, "remote URL not fetched (quarry downloads nothing): give bytes or a local path")
    data = load(value)
    if isinstance(data, str):
        return ImageRef(None, url, data)
    return ImageRef(data, url)


def _text_chars(segments: list[Union[str, ImageRef]]) -> int:
    return sum(len(s) for s in segments if isinstance(s, str))


def _parse_obelics(rec: dict[str, Any], load: Loader, cfg: DocumentConfig) -> Union[list, Rejection]:
    texts, images = rec.get("texts"), rec.get("images")
    if not isinstance(texts, list) or not isinstance(images, list):
        return Rejection(INVALID_DOCUMENT, f"texts/images must be lists, got {type(texts).__name__}/{type(images).__name__}")
    if len(texts) != len(images):
        return Rejection(UNEQUAL_LENGTHS, f"len(texts)={len(texts)} != len(images)={len(images)}")
    n_images = sum(1 for i in images if i is not None)
    if n_images > cfg.max_images:
        return Rejection(TOO_MANY_IMAGES, f"{n_images} images > document.max_images={cfg.max_images}")
    too_long = cap_text(sum(len(t) for t in texts if isinstance(t, str)), cfg.max_text_chars)
    if too_long is not None:
        return too_long
    urls = rec.get("image_urls") if isinstance(rec.get("image_urls"), list) else None
    segments: list[Union[str, ImageRef]] = []
    for pos, (t, i) in enumerate(zip(texts, images)):
        if (t is None) == (i is None):
            what = "both a text and an image" if t is not None else "neither a text nor an image"
            return Rejection(INVALID_DOCUMENT, f"position {pos} holds {what}")
        if t is not None:
            if not isinstance(t, str):
                return Rejection(INVALID_DOCUMENT, f"texts[{pos}] is a {type(t).__name__}")
            segments.append(t)
        else:
            url = _str_or_none(urls[pos]) if urls is not None and pos < len(urls) else None
            url = url or (_str_or_none(i) if isinstance(i, str) and i.startswith(("http://", "https://")) else None)
            segments.append(resolve_image(i, load, url))
    return segments


def _mmc4_image_value(info: dict[str, Any]) -> Any:
    for k in ("image_bytes", "bytes", "image", "image_path", "path", "image_name"):
        if info.get(k) is not None:
            return info[k]
    return None


def _parse_mmc4(rec: dict[str, Any], load: Loader, cfg: DocumentConfig) -> Union[list, Rejection]:
    texts, infos = rec.get("text_list"), rec.get("image_info")
    if not isinstance(texts, list) or not isinstance(infos, list):
        return Rejection(INVALID_DOCUMENT, "text_list and image_info must be lists")
    if not all(isinstance(t, str) for t in texts):
        return Rejection(INVALID_DOCUMENT, "text_list holds a non-string")
    if len(infos) > cfg.max_images:
        return Rejection(TOO_MANY_IMAGES, f"{len(infos)} images > document.max_images={cfg.max_images}")
    too_long = cap_text(sum(len(t) for t in texts), cfg.max_text_chars)
    if too_long is not None:
        return too_long
    before: dict[int, list[dict]] = {}
    for n, info in enumerate(infos):
        if not isinstance(info, dict):
            return Rejection(INVALID_DOCUMENT, f"image_info[{n}] is a {type(info).__name__}, not an object")
        pos = info.get("matched_text_index")
        if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos < len(texts):
            return Rejection(POSITION_OUT_OF_RANGE,
                             f"image_info[{n}].matched_text_index={pos!r} outside text_list[0:{len(texts)}]")
        before.setdefault(pos, []).append(info)
    segments: list[Union[str, ImageRef]] = []
    for pos, text in enumerate(texts):
        for info in before.get(pos, []):
            url = _str_or_none(info.get("raw_url")) or _str_or_none(info.get("url"))
            segments.append(resolve_image(_mmc4_image_value(info), load, url))
        segments.append(text)
    return segments


def _parse_segments(rec: dict[str, Any], load: Loader, cfg: DocumentConfig) -> Union[list, Rejection]:
    raw = rec.get("segments")
    if not isinstance(raw, list):
        return Rejection(INVALID_DOCUMENT, f"segments must be a list, got {type(raw).__name__}")
    n_images = sum(1 for s in raw if isinstance(s, dict) and (s.get("type") == "image" or "text" not in s))
    if n_images > cfg.max_images:
        return Rejection(TOO_MANY_IMAGES, f"{n_images} images > document.max_images={cfg.max_images}")
    too_long = cap_text(sum(len(s["text"]) for s in raw if isinstance(s, dict) and isinstance(s.get("text"), str)),
                        cfg.max_text_chars)
    if too_long is not None:
        return too_long
    segments: list[Union[str, ImageRef]] = []
    for n, s in enumerate(raw):
        if not isinstance(s, dict):
            return Rejection(INVALID_DOCUMENT, f"segments[{n}] is a {type(s).__name__}, not an object")
        kind = s.get("type") or ("text" if "text" in s else "image")
        if kind == "text":
            if not isinstance(s.get("text"), str):
                return Rejection(INVALID_DOCUMENT, f"segments[{n}] is a text segment without a string `text`")
            segments.append(s["text"])
        elif kind == "image":
            value = next((s[k] for k in ("bytes", "image", "path", "src") if s.get(k) is not None), None)
            url = _str_or_none(s.get("url"))
            segments.append(resolve_image(value if value is not None else url, load, url))
        else:
            return Rejection(INVALID_DOCUMENT, f"segments[{n}] has type {kind!r} (text or image)")
    return segments


_PARSERS = {"obelics": _parse_obelics, "mmc4": _parse_mmc4, "segments": _parse_segments}


def document_id(file_name: str, key: str, segments: list[Union[str, ImageRef]]) -> str:
    """Content plus position (as the caption reader does): stable across reruns and moves."""
    parts = [("t:" + s) if isinstance(s, str) else ("i:" + s.identity) for s in segments]
    return content_id("interleaved", digest("\x00".join(parts).encode("utf-8", "surrogatepass")), file_name, key)


def parse_document(rec: dict[str, Any], file_name: str, key: str, load: Loader,
                   cfg: DocumentConfig) -> Union[RawDocument, Rejection]:
    """One record -> a `RawDocument`, or a document-level `Rejection`."""
    shape = detect_shape(rec)
    if shape is None:
        return Rejection(UNKNOWN_SHAPE, f"no segments, texts+images or text_list+image_info; keys: {sorted(rec)[:12]}")
    segments = _PARSERS[shape](rec, load, cfg)
    if isinstance(segments, Rejection):
        return segments
    return RawDocument(
        sample_id=document_id(file_name, key, segments), key=key, shape=shape, segments=segments,
        url=_url_of(rec), source=_str_or_none(rec.get("source")), license=_str_or_none(rec.get("license")),
    )


def clean_text(doc: RawDocument, strip: bool) -> CleanText:
    """Control characters and lone surrogates out, HTML fragments -> plain text;
    text segments left empty are dropped."""
    out: list[Union[str, ImageRef]] = []
    texts: list[str] = []
    stripped = 0
    for s in doc.segments:
        if isinstance(s, ImageRef):
            out.append(s)
            continue
        text = sanitize_text(s)
        if strip:
            text, had_html = strip_html(text)
            stripped += had_html
        text = text.strip()
        if text:
            out.append(text)
            texts.append(text)
    return CleanText(out, stripped, texts)


def check_density(n_words: int, n_images: int, cfg: DensityConfig) -> Optional[Rejection]:
    """`image_dense` for photo albums: at least `min_images` images and few words per image."""
    if not cfg.enabled or n_images < cfg.min_images:
        return None
    per_image = n_words / n_images
    if per_image < cfg.min_words_per_image:
        return Rejection(IMAGE_DENSE, f"{n_words} words / {n_images} images = {per_image:.1f} words per image "
                                      f"< density.min_words_per_image={cfg.min_words_per_image:g}")
    return None


def tail_flags(segments: list[Union[str, ImageRef]], tail_words: int) -> list[bool]:
    """Per image (in order): True when no text of at least `tail_words` words follows it."""
    flags: list[bool] = []
    text_after = False
    for s in reversed(segments):
        if isinstance(s, str):
            text_after = text_after or count_words(s) >= max(1, tail_words)
        else:
            flags.append(not text_after)
    return flags[::-1]


def _words_edge(text: str, n: int, from_end: bool) -> str:
    words = text.split()
    return " ".join(words[-n:] if from_end else words[:n])


def neighbour_texts(segments: list[Union[str, ImageRef]], position: int, max_words: int, neighbours: int) -> list[str]:
    """The paragraph(s) nearest to the segment at `position`: the last words of the
    text before it and the first words of the text after it (`neighbours=2`), or the
    one before (the one after for an image ahead of all text) when `neighbours=1`."""
    before = next((s for s in reversed(segments[:position]) if isinstance(s, str)), None)
    after = next((s for s in segments[position + 1:] if isinstance(s, str)), None)
    out = []
    if before is not None:
        out.append(_words_edge(before, max_words, from_end=True))
    if after is not None and (neighbours == 2 or not out):
        out.append(_words_edge(after, max_words, from_end=False))
    return [t for t in out if t]


def diagram_score(img: Image.Image, side: int = 128) -> float:
    """Flatness: the share of neighbouring pixel pairs (on a copy at most `side` px)
    whose channels differ by at most 2 of 255.

    Charts, diagrams, schematics, maps and screenshots are flat fills with
    sharp edges: 0.85-0.95 even after JPEG compression. Photographs and
    textures carry sensor noise and shading: 0.1-0.6 on the demo photos (a
    black-and-white silhouette reaches 0.9: it is a drawing). Colour counts
    alone do not work: a greyscale photo has few colours too.
    """
    im = img.convert("RGB")
    scale = side / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BOX)
    a = np.asarray(im, dtype=np.int16)
    if a.shape[0] < 2 or a.shape[1] < 2:
        return 0.0
    flat_h = np.abs(np.diff(a, axis=1)).max(axis=2) <= 2
    flat_v = np.abs(np.diff(a, axis=0)).max(axis=2) <= 2
    return float((flat_h.sum() + flat_v.sum()) / (flat_h.size + flat_v.size))


def tier_for(n_words: int, diagram_scores: list[float], cfg: TierConfig) -> tuple[str, Optional[float], Optional[float]]:
    """Knowledge density -> (tier, words per kept image, diagram share).

    With kept images: dense = the share of images whose `diagram_score` is
    >= `tiers.diagram_score`; w = words per image; hard/medium/easy bounds
    (h, m, e) = `tiers.words_per_image`.
    very_hard: dense >= diagram_share and w >= m; hard: dense >= diagram_share,
    or w >= h; medium: w >= m; easy: w >= e; very_easy otherwise (photos with
    captions). A kept text-only document is medium.
    """
    if not diagram_scores:
        return "medium", None, None
    per_image = n_words / len(diagram_scores)
    share = sum(1 for d in diagram_scores if d >= cfg.diagram_score) / len(diagram_scores)
    hard, medium, easy = cfg.words_per_image
    if share >= cfg.diagram_share and per_image >= medium:
        tier = "very_hard"
    elif share >= cfg.diagram_share or per_image >= hard:
        tier = "hard"
    elif per_image >= medium:
        tier = "medium"
    elif per_image >= easy:
        tier = "easy"
    else:
        tier = "very_easy"
    return tier, per_image, share
