"""Decode image bytes into an RGB picture, or say why not.

Bad bytes are data, not errors: every failure Pillow reports for a broken,
truncated, hostile or unsupported file comes back as a `Rejection`:

- ``image_too_large``: the header declares more than ``DecodeConfig.max_pixels``
  pixels. Checked on the header (``Image.open`` is lazy) before any pixel
  buffer is allocated, so a decompression bomb costs a few hundred bytes of
  parsing, not gigabytes.
- ``corrupt_image``: empty input, bytes no allowed format recognises, an
  unsupported format, a truncated or damaged file, a mode that has no RGB
  conversion. The detail is Pillow's message (or ours where Pillow's would
  contain a memory address, so reruns give the same rejects table).

The pixel limit is per call. Pillow's own decompression-bomb guard compares
against ``Image.MAX_IMAGE_PIXELS``, a process global (default ~89.5 Mpx:
warn above, raise above twice that); mutating it per call would race under
Beam's threaded workers. So the header is parsed by the allowed plugins
directly (the dispatch `Image.open` does, minus its global check; see
`_open_header`) and ``max_pixels`` is the one limit at open time, reported
with the declared dimensions. Pillow still applies its global guard while
loading a GIF frame or a TIFF tile larger than usual; that
``DecompressionBombError`` is reported as ``image_too_large`` too. Nothing
here reads or writes ``Image.MAX_IMAGE_PIXELS``.

``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched: a truncated file is
``corrupt_image``, not a half-grey picture.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from quarry.operators.base import Rejection
from quarry.schemas.caption import DecodeConfig

CORRUPT = "corrupt_image"
TOO_LARGE = "image_too_large"
REASONS: tuple[str, ...] = (CORRUPT, TOO_LARGE)

# Formats a training image may come in. Image.open only runs these plugins'
# header parsers, which keeps exotic parsers (and, e.g., EPS's Ghostscript)
# away from untrusted bytes. Camera JPEGs with a multi-picture index open as
# "MPO" through the JPEG plugin; their bytes are ordinary JPEG.
OPEN_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ALLOWED_FORMATS: frozenset[str] = frozenset(OPEN_FORMATS) | {"MPO"}

# What Pillow (12) raises for bad data while parsing headers, decoding pixels,
# reading EXIF and converting modes, found by fuzzing every allowed format
# (truncations, bit flips, spliced chunks; a small fuzz runs in
# tests/operators/test_decode.py): OSError (truncated/broken streams, and
# UnidentifiedImageError), SyntaxError (bad headers), ValueError, EOFError,
# struct.error (short reads in EXIF/TIFF), zlib.error (PNG zTXt/iCCP chunks).
# TypeError is caught around `load()` only, where Pillow's TIFF reader raises
# it for damaged strip offsets. DecompressionBombError is handled apart.
_BAD_DATA_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
)

# Modes with an alpha channel, composited on white (a transparent logo over
# black would turn into a black square; over white it looks as on a web page).
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_WHITE = (255, 255, 255, 255)
_MEMORY_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class DecodedImage:
    """A decoded picture: RGB pixels upright, plus what the file said about itself."""

    image: Image.Image  # mode "RGB", EXIF orientation applied, first frame
    width: int  # after orientation
    height: int  # after orientation
    format: str  # Pillow's format name: "JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"
    mode: str  # the file's own mode before conversion ("CMYK", "I;16", "P", ...)


def decode_image(data: bytes, cfg: DecodeConfig) -> DecodedImage | Rejection:
    """Decode `data` to an upright RGB first frame, or reject it.

    Never raises for bad bytes; a `TypeError` for a non-bytes argument, or any
    other programming error, still raises.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image expects bytes, got {type(data).__name__}")
    if len(data) == 0:
        return Rejection(CORRUPT, "empty input (0 bytes)")

    try:
        im = _open_header(bytes(data))
    except Image.DecompressionBombError as e:  # not raised by the plugins' header parsers today
        return Rejection(TOO_LARGE, f"{e} (Pillow's MAX_IMAGE_PIXELS guard)")
    except _BAD_DATA_ERRORS as e:
        return Rejection(CORRUPT, _detail(e))

    with im:
        fmt = im.format or ""
        if fmt not in ALLOWED_FORMATS:  # defensive: only allowed plugins were tried
            return Rejection(CORRUPT, f"unsupported format {fmt!r}")
        too_large = _check_size(im.size, cfg.max_pixels)
        if too_large is not None:
            return too_large  # nothing but the header has been read
        mode = im.mode
        try:
            # Decodes the first frame only (animated GIF/WebP, multi-page TIFF).
            # TypeError: Pillow's TIFF loader raises it for damaged strip offsets.
            im.load()
        except Image.DecompressionBombError as e:  # a GIF frame or TIFF tile beyond Pillow's guard
            return Rejection(TOO_LARGE, f"{e} (Pillow's MAX_IMAGE_PIXELS guard)")
        except (*_BAD_DATA_ERRORS, TypeError) as e:
            return Rejection(CORRUPT, _detail(e))
        too_large = _check_size(im.size, cfg.max_pixels)  # a GIF frame may outgrow the header
        if too_large is not None:
            return too_large
        try:
            rgb = to_rgb(upright(im))
        except _BAD_DATA_ERRORS as e:
            return Rejection(CORRUPT, _detail(e))

    return DecodedImage(image=rgb, width=rgb.width, height=rgb.height, format=fmt, mode=mode)


def _open_header(data: bytes) -> ImageFile.ImageFile:
    """`Image.open(fp, formats=OPEN_FORMATS)` without Pillow's global bomb check.

    The same dispatch as Pillow's `Image.open`: each allowed plugin whose
    `accept` matches the first 16 bytes parses the header; the errors Pillow's
    own loop treats as "not this format" move on to the next plugin. Pillow's
    check against the process-global `MAX_IMAGE_PIXELS` is left out so the
    caller can apply its own per-call limit and report the dimensions.
    Raises `UnidentifiedImageError` (an `OSError`) when no plugin accepts.
    """
    prefix = data[:16]
    failures: list[str] = []
    for name in OPEN_FORMATS:
        if name not in Image.OPEN:
            Image.init()  # registers every plugin once per process (WEBP, TIFF are not in preinit)
        factory, accept = Image.OPEN[name]
        verdict = accept(prefix) if accept is not None else True
        if not verdict or isinstance(verdict, str):  # a str is Pillow's "looks like it, but" note
            continue
        try:
            return factory(io.BytesIO(data), None)
        except (SyntaxError, IndexError, TypeError, struct.error) as e:  # as in Image.open
            failures.append(f"{name}: {_detail(e)}")
    if failures:
        raise UnidentifiedImageError("bad header: " + "; ".join(failures))
    raise UnidentifiedImageError(_unidentified_detail(prefix))


# EXIF Orientation -> the transpose that makes the picture upright; the same
# table as `ImageOps.exif_transpose` (orientation 6 = rotate 270, swaps w/h).
_ORIENTATION: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF (or XMP) orientation, as `ImageOps.exif_transpose` does.

    Not `exif_transpose` itself: after rotating it re-serialises the EXIF
    block, which raises TypeError on some damaged EXIF (found by fuzzing) and
    would reject good pixels over metadata we do not keep. EXIF that cannot be
    parsed at all counts as "no orientation", for the same reason.
    """
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except _BAD_DATA_ERRORS:
        return im
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return im.transpose(method) if method is not None else im


def _check_size(size: tuple[int, int], max_pixels: int) -> Rejection | None:
    width, height = size
    if width <= 0 or height <= 0:
        return Rejection(CORRUPT, f"empty image {width}x{height}")
    if width * height > max_pixels:
        return Rejection(TOO_LARGE, f"{width}x{height} = {width * height} pixels > max_pixels={max_pixels}")
    return None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB the way a viewer would show it."""
    mode = im.mode
    if mode in _ALPHA_MODES or "transparency" in im.info:
        # P/L/RGB with a tRNS entry become RGBA through Pillow's own rules.
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    if mode == "RGB":
        # A plain Image, not the ImageFile: no file handle, EXIF or ICC bytes travel on.
        return im.copy() if isinstance(im, ImageFile.ImageFile) else im
    if mode.startswith("I;16"):
        # 16-bit grey: Pillow's convert() clips to 255 (nearly all white); scale instead.
        arr = np.asarray(im).astype(np.uint32)
        return Image.fromarray(((arr * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(im)), "L").convert("RGB")
    # 1, L, P, CMYK (the JPEG decoder already undid Adobe's inversion), YCbCr, RGBX, HSV, ...
    # An unconvertible mode (e.g. LAB) raises ValueError: reported as corrupt_image.
    return im.convert("RGB")


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """32-bit integer or float grey to 0-255: as 16-bit when it fits, else min-max."""
    is_float = arr.dtype.kind == "f"
    arr = arr.astype(np.float64)
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if is_float and lo >= 0.0 and hi <= 1.0:
        scaled = arr * 255.0  # float images in [0, 1]
    elif lo >= 0.0 and hi <= 65535.0:
        scaled = arr * (255.0 / 65535.0)
    elif hi > lo:
        scaled = (arr - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(arr)
    return np.nan_to_num(np.clip(np.rint(scaled), 0, 255)).astype(np.uint8)


def _detail(e: BaseException) -> str:
    """`<exception class>: <Pillow's message>`, with memory addresses removed."""
    cls = type(e)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    msg = _MEMORY_ADDRESS.sub("", str(e)) or "(no message)"
    return f"{name}: {msg}"


def _unidentified_detail(prefix: bytes) -> str:
    """Say whether the bytes are some other image format or no image at all.

    Only the other plugins' `accept` functions run (a magic-number test on the
    first 16 bytes); their header parsers never see untrusted bytes.
    """
    Image.init()
    for name, (_factory, accept) in Image.OPEN.items():
        if name in ALLOWED_FORMATS or accept is None:
            continue
        recognised = accept(prefix)
        if recognised and not isinstance(recognised, str):
            return f"unsupported format {name} (allowed: {', '.join(OPEN_FORMATS)})"
    return f"not an image in an allowed format ({', '.join(OPEN_FORMATS)}); first bytes {prefix[:8].hex()}"
