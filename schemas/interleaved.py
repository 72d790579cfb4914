"""The interleaved DAG: its config sections and its output row.

One output row is one web document: an ordered list of segments, each a text
or a reference (`image_id`) to an image stored once in `DIR/images/`, plus a
per-image record of what every stage decided about every image of the input
(kept or the reason it was dropped), so image-level drops stay visible
without breaking the document-level accounting (`inputs == kept + rejected`).

Where the defaults come from:
- `relevance.threshold = 0.15`: MMC4 (Zhu et al., 2023) discards images whose
  CLIP ViT-L/14 similarity to every sentence of the document is below 0.15;
  GLM-4.5V §3.1 names CLIP relevance but no number. The value only means
  something for a trained model (not for `quarry-tiny`).
- `image_heuristics.min_side = 150`: OBELICS (Laurençon et al., 2023) keeps
  images with both sides >= 150 px; aspect ratio <= 3 as there.
- `density.min_words_per_image = 20`: GLM-4.5V §3.1 drops "image-dense,
  text-sparse" pages (photo albums) without a number; 20 words per image keeps
  an article with a figure per paragraph and drops a gallery with a line per photo.
- text filters: datatrove's implementations of Gopher quality and repetition
  (Rae et al., 2021), C4 (Raffel et al., 2020) and FineWeb, with their own defaults.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import pyarrow as pa
from pydantic import Field, field_validator

from quarry.schemas.arrow import ArrowType
from quarry.schemas.caption import ClipConfig, DecodeConfig
from quarry.schemas.common import Row, Sample
from quarry.schemas.config import DagConfig, Section

TEXT_FILTERS = ("gopher_quality", "gopher_repetition", "c4", "fineweb")
TextFilterName = Literal["gopher_quality", "gopher_repetition", "c4", "fineweb"]

# IAB standard ad units (IAB New Ad Portfolio and the classic fixed sizes), width x height.
IAB_AD_SIZES = (
    "728x90", "970x90", "970x250", "468x60", "234x60", "300x250", "336x280", "250x250", "200x200",
    "180x150", "125x125", "160x600", "120x600", "300x600", "300x1050", "120x240", "320x50", "320x100",
    "300x50", "300x100", "88x31", "120x60", "240x400", "980x120", "930x180", "750x100", "750x200",
    "750x300", "580x400",
)

# Substrings of image URLs served by ad networks and ad servers (lower case).
AD_URL_PATTERNS = (
    "doubleclick.net", "googlesyndication.com", "googleadservices.com", "adservice.google", "2mdn.net",
    "amazon-adsystem.com", "adnxs.com", "taboola.com", "outbrain.com", "criteo.com", "criteo.net",
    "advertising.com", "adform.net", "rubiconproject.com", "pubmatic.com", "openx.net", "adsrvr.org",
    "moatads.com", "serving-sys.com", "smartadserver.com", "yieldmo.com", "media.net", "revcontent.com",
    "/ads/", "/adserver/", "/adview", "/banners/", "/banner/", "/sponsored/", "/advert",
)

# Barcode symbologies looked for by default: the 2-D codes web pages print for
# "scan me" links, and the retail 1-D codes of product shots. Other 1-D formats
# (Code 39, ITF, Codabar) fire on stripes and textures, so they are opt-in.
BARCODE_FORMATS = ("QRCode", "MicroQRCode", "RMQRCode", "DataMatrix", "Aztec", "PDF417", "EAN13", "UPCA")


class DocumentConfig(Section):
    """What a document may be before anything else looks at it (bounded work per input)."""

    max_text_chars: int = Field(1_000_000, ge=1, description="total text characters; more is `too_much_text`")
    max_images: int = Field(200, ge=1, description="image segments; more is `too_many_images`")
    max_record_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="a JSONL line larger than this is `record_too_large` (read in bounded memory)"
    )
    strip_html: bool = Field(True, description="turn HTML fragments inside text segments into plain text")
    keep_text_only: bool = Field(False, description="keep documents left with no image after cleaning (else `no_images_left`)")


class ImageHeuristicsConfig(Section):
    min_side: int = Field(150, ge=1, description="shorter side in pixels (OBELICS: 150)")
    max_aspect_ratio: float = Field(3.0, ge=1.0, description="long side / short side")
    solid_max_std: float = Field(3.0, ge=0.0, description="pixel std (0-255, 64x64 thumbnail) below this is `solid_color`")


class AdsConfig(Section):
    enabled: bool = True
    detect_codes: bool = Field(True, description="reject images holding a QR code or barcode (`qr_code`)")
    code_formats: list[str] = Field(list(BARCODE_FORMATS), description="zxing-cpp format names looked for")
    scan_max_side: int = Field(1024, ge=64, description="images are scanned for codes at most this large (longer side)")
    iab_sizes: list[str] = Field(list(IAB_AD_SIZES), description="ad unit sizes WxH (IAB)")
    size_tolerance: float = Field(0.02, ge=0.0, le=0.5, description="relative tolerance when matching an IAB size")
    banner_aspect: float = Field(4.0, ge=1.0, description="long/short side at or above this is banner-shaped")
    tail_words: int = Field(
        10, ge=0, description="an image with no text segment of at least this many words after it is `at the end`"
    )
    url_patterns: list[str] = Field(list(AD_URL_PATTERNS), description="image-URL substrings of ad servers")

    @field_validator("iab_sizes")
    @classmethod
    def _sizes(cls, v: list[str]) -> list[str]:
        for s in v:
            w, sep, h = s.lower().partition("x")
            if not sep or not w.isdigit() or not h.isdigit() or int(w) == 0 or int(h) == 0:
                raise ValueError(f"ad size {s!r} is not WIDTHxHEIGHT")
        return v


class RelevanceConfig(ClipConfig):
    """Image-context relevance: open_clip cosine of each image and its nearest paragraphs.

    The model keys are the caption DAG's `clip` keys (`relevance.model`,
    `relevance.pretrained`, `relevance.device`, ...).
    """

    threshold: float = Field(
        0.15, ge=-1.0, le=1.0, description="drop images whose best score against their neighbouring paragraphs is below this (MMC4: 0.15)"
    )
    context_words: int = Field(
        48, ge=1, description="words of each neighbouring paragraph scored (CLIP reads 77 tokens at most)"
    )
    neighbours: Literal[1, 2] = Field(
        2, description="1: the paragraph before the image (or after, at the start); 2: both, best score wins"
    )


class DensityConfig(Section):
    enabled: bool = True
    min_words_per_image: float = Field(20.0, ge=0.0, description="fewer words per image is `image_dense` (photo album)")
    min_images: int = Field(2, ge=1, description="the rule applies to documents with at least this many images")


class TextQualityConfig(Section):
    enabled: bool = True
    filters: list[TextFilterName] = Field(
        list(TEXT_FILTERS), description="datatrove filters run in this order; the first that fails gives the detail"
    )


class TierConfig(Section):
    """Knowledge density -> tier (see quarry.operators.interleaved.documents.tier_for)."""

    diagram_score: float = Field(
        0.75, ge=0.0, le=1.0, description="an image whose diagram_score (flat neighbouring pixels) is at least this is chart/diagram-like"
    )
    diagram_share: float = Field(0.5, ge=0.0, le=1.0, description="share of kept images that are diagram-like for the top tiers")
    words_per_image: list[float] = Field(
        [200.0, 80.0, 30.0], description="3 descending words-per-image bounds for hard, medium, easy"
    )

    @field_validator("words_per_image")
    @classmethod
    def _three_descending(cls, v: list[float]) -> list[float]:
        if len(v) != 3 or v != sorted(v, reverse=True):
            raise ValueError("give 3 descending numbers (hard, medium, easy)")
        return v


class InterleavedConfig(DagConfig):
    document: DocumentConfig = DocumentConfig()
    decode: DecodeConfig = DecodeConfig()
    image_heuristics: ImageHeuristicsConfig = ImageHeuristicsConfig()
    ads: AdsConfig = AdsConfig()
    relevance: RelevanceConfig = RelevanceConfig()
    density: DensityConfig = DensityConfig()
    text: TextQualityConfig = TextQualityConfig()
    tiers: TierConfig = TierConfig()


class Segment(Row):
    """One piece of a document, in reading order: a text, or an image by id."""

    kind: Literal["text", "image"]
    text: Optional[str] = None
    image_id: Optional[str] = Field(None, description="row of DIR/images/ (content hash of the image bytes)")


class ImageInfo(Row):
    """What the stages measured and decided about one image of the input document."""

    index: Annotated[int, ArrowType(pa.int32())] = Field(description="the image's position among the document's images")
    image_id: Optional[str] = Field(None, description="content hash of its bytes (None when they could not be read)")
    url: Optional[str] = None
    kept: bool
    stage: Optional[str] = Field(None, description="stage that dropped it")
    reason: Optional[str] = None
    detail: str = ""
    width: Annotated[Optional[int], ArrowType(pa.int32())] = None
    height: Annotated[Optional[int], ArrowType(pa.int32())] = None
    format: Optional[str] = None
    phash: Optional[str] = None
    clip_score: Annotated[Optional[float], ArrowType(pa.float32())] = Field(
        None, description="best CLIP cosine against the neighbouring paragraphs")
    diagram_score: Annotated[Optional[float], ArrowType(pa.float32())] = None
    ad_signals: list[str] = Field(default_factory=list)
    codes: list[str] = Field(default_factory=list, description="barcode formats found (format:text)")


class InterleavedRow(Sample):
    """One kept document."""

    segments: list[Segment]
    images: list[ImageInfo] = Field(description="every image of the input, kept or not, in input order")
    n_words: int
    n_images: Annotated[int, ArrowType(pa.int32())] = Field(description="images kept in `segments`")
    n_images_in: Annotated[int, ArrowType(pa.int32())] = Field(description="image segments in the input")
    words_per_image: Annotated[Optional[float], ArrowType(pa.float32())] = None
    diagram_share: Annotated[Optional[float], ArrowType(pa.float32())] = None
    html_stripped: Annotated[int, ArrowType(pa.int32())] = Field(0, description="text segments that held HTML")
    shape: str = Field(description="input shape: obelics, mmc4 or segments")
