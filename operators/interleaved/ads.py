"""Ads and QR codes in web documents (GLM-4.5V §3.1: "remove ads and QR codes,
often at the end of articles").

Two verdicts, each measured first and decided second:

- ``qr_code``: zxing-cpp (a maintained C++ port of ZXing) finds a QR code or
  another barcode of `AdsConfig.code_formats` in the picture. Scanning runs
  on a copy whose longer side is at most `scan_max_side` (bounded time on
  huge images; a code small enough to vanish at that scale is not what a page
  asks its reader to scan).
- ``ad_image``: rules on what an ad looks like on a page. Signals:
  ``ad_url`` (the image URL contains an ad-server pattern), ``iab_size`` (the
  image is an IAB standard ad unit, within `size_tolerance`),
  ``banner_shape`` (long side / short side >= `banner_aspect`), ``tail`` (no
  paragraph of `tail_words` words follows the image: it sits at the end).
  Rejected when ``ad_url``; or ``iab_size`` with ``banner_shape`` or ``tail``;
  or ``banner_shape`` with ``tail``. One signal of size or shape alone keeps
  the image: a 300x250 photo in the middle of an article is a photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from PIL import Image

from quarry.operators.base import Rejection
from quarry.schemas.interleaved import AdsConfig

QR_CODE = "qr_code"
AD_IMAGE = "ad_image"
REASONS: tuple[str, ...] = (QR_CODE, AD_IMAGE)

AD_URL = "ad_url"
IAB_SIZE = "iab_size"
BANNER_SHAPE = "banner_shape"
TAIL = "tail"


@dataclass(frozen=True)
class Code:
    format: str
    text: str

    def __str__(self) -> str:
        return f"{self.format}:{self.text[:80]}"


def _formats(names: list[str]):
    import zxingcpp

    if not names:
        return None
    try:
        return zxingcpp.barcode_formats_from_str(",".join(names))
    except ValueError as e:
        raise ValueError(f"ads.code_formats: {e} (zxing-cpp names such as QRCode, DataMatrix, EAN13)") from None


def find_codes(img: Image.Image, formats=None, max_side: int = AdsConfig().scan_max_side) -> list[Code]:
    """Barcodes zxing-cpp reads in `img` (valid ones only), on a copy at most `max_side` large."""
    import zxingcpp

    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    kwargs = {} if formats is None else {"formats": formats}
    found = zxingcpp.read_barcodes(img, **kwargs)
    return [Code(b.format.name, b.text) for b in found if b.valid]


def _parse_sizes(sizes: list[str]) -> tuple[tuple[int, int], ...]:
    out = []
    for s in sizes:
        w, _, h = s.lower().partition("x")
        out.append((int(w), int(h)))
    return tuple(out)


def ad_signals(width: int, height: int, url: Optional[str], at_tail: bool, cfg: AdsConfig,
               sizes: Optional[tuple[tuple[int, int], ...]] = None) -> list[str]:
    """The ad signals of one image, in a fixed order (see module doc)."""
    signals = []
    low = (url or "").lower()
    if low and any(p in low for p in (q.lower() for q in cfg.url_patterns)):
        signals.append(AD_URL)
    tol = cfg.size_tolerance
    for w, h in sizes if sizes is not None else _parse_sizes(cfg.iab_sizes):
        if abs(width - w) <= tol * w and abs(height - h) <= tol * h:
            signals.append(IAB_SIZE)
            break
    if max(width, height) / max(1, min(width, height)) >= cfg.banner_aspect:
        signals.append(BANNER_SHAPE)
    if at_tail:
        signals.append(TAIL)
    return signals


def decide_ad(signals: list[str]) -> Optional[Rejection]:
    s = set(signals)
    if AD_URL in s or (IAB_SIZE in s and (BANNER_SHAPE in s or TAIL in s)) or (BANNER_SHAPE in s and TAIL in s):
        return Rejection(AD_IMAGE, "signals: " + ", ".join(signals))
    return None


class AdDetector:
    """QR/barcode scan plus ad rules; config checked on construction."""

    def __init__(self, cfg: AdsConfig):
        self.cfg = cfg
        self.sizes = _parse_sizes(cfg.iab_sizes)
        self.formats = _formats(cfg.code_formats) if cfg.detect_codes else None

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg}  # zxing's format set is a native object

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["cfg"])

    def codes(self, img: Image.Image) -> list[Code]:
        if not self.cfg.detect_codes:
            return []
        return find_codes(img, self.formats, self.cfg.scan_max_side)

    def check(self, img: Image.Image, url: Optional[str], at_tail: bool) -> tuple[Optional[Rejection], list[str], list[str]]:
        """(verdict, ad signals, codes as `format:text`): `qr_code` first, then `ad_image`."""
        signals = ad_signals(img.width, img.height, url, at_tail, self.cfg, self.sizes)
        codes = self.codes(img)
        if codes:
            return Rejection(QR_CODE, "; ".join(str(c) for c in codes)[:500]), signals, [str(c) for c in codes]
        return decide_ad(signals), signals, []
