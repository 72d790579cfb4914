"""decode_image: real files made with Pillow, broken ones made from them."""

from __future__ import annotations

import io
import random
import re
import resource
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from quarry.operators.base import Rejection
from quarry.operators.decode import DecodedImage, decode_image
from quarry.schemas.caption import DecodeConfig

CFG = DecodeConfig()


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def photo(width: int = 160, height: int = 120, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    arr = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], -1)
    arr = arr + rng.integers(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# --- files that must decode --------------------------------------------------------------


def cmyk_jpeg() -> bytes:
    return encode(Image.new("RGB", (40, 30), (220, 30, 30)).convert("CMYK"), "JPEG", quality=95)


def png16(value: int = 40000) -> bytes:
    im = Image.fromarray(np.full((30, 40), value, np.uint16))
    assert im.mode == "I;16"
    return encode(im, "PNG")


def palette_png_with_transparency() -> bytes:
    im = Image.new("P", (40, 30), 0)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black (transparent), 1 blue
    im.paste(1, (20, 0, 40, 30))
    return encode(im, "PNG", transparency=0)


def rgba_png() -> bytes:
    im = Image.new("RGBA", (30, 10), (255, 0, 0, 0))  # fully transparent red
    im.paste((0, 255, 0, 255), (10, 0, 20, 10))  # opaque green
    im.paste((0, 0, 0, 128), (20, 0, 30, 10))  # half-transparent black
    return encode(im, "PNG")


def la_png() -> bytes:
    return encode(Image.new("LA", (20, 20), (0, 0)), "PNG")


def rgb_png_with_transparent_colour() -> bytes:
    return encode(Image.new("RGB", (20, 20), (1, 2, 3)), "PNG", transparency=(1, 2, 3))


def one_bit_png() -> bytes:
    im = Image.new("1", (16, 16), 0)
    im.paste(1, (0, 0, 8, 16))
    return encode(im, "PNG")


FRAME_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 24), c) for c in FRAME_COLOURS]
    params = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **params)


def rotated_jpeg(orientation: int = 6) -> bytes:
    """Stored 120x80 landscape, red block at the stored top-left, EXIF orientation 6."""
    im = Image.new("RGB", (120, 80), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 30, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, "JPEG", exif=exif, quality=95)


def mpo() -> bytes:
    return encode(photo(), "MPO", save_all=True, append_images=[photo(seed=1)])


def close(pixel, expected, tol=8) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected))


@pytest.mark.parametrize(
    "data, fmt, mode, size, probes",
    [
        pytest.param(encode(photo(), "JPEG"), "JPEG", "RGB", (160, 120), {}, id="jpeg"),
        pytest.param(encode(photo(), "PNG"), "PNG", "RGB", (160, 120), {}, id="png"),
        pytest.param(encode(photo(), "WEBP"), "WEBP", "RGB", (160, 120), {}, id="webp"),
        pytest.param(encode(photo(), "BMP"), "BMP", "RGB", (160, 120), {}, id="bmp"),
        pytest.param(encode(photo(), "TIFF", compression="tiff_lzw"), "TIFF", "RGB", (160, 120), {}, id="tiff-lzw"),
        pytest.param(encode(photo().convert("L"), "JPEG"), "JPEG", "L", (160, 120), {}, id="grey-jpeg"),
        pytest.param(cmyk_jpeg(), "JPEG", "CMYK", (40, 30), {(5, 5): (220, 30, 30)}, id="cmyk-jpeg"),
        pytest.param(png16(40000), "PNG", "I;16", (40, 30), {(5, 5): (156, 156, 156)}, id="16-bit-grey-png"),
        pytest.param(png16(65535), "PNG", "I;16", (40, 30), {(5, 5): (255, 255, 255)}, id="16-bit-white"),
        pytest.param(
            palette_png_with_transparency(),
            "PNG",
            "P",
            (40, 30),
            {(5, 5): (255, 255, 255), (30, 5): (0, 0, 255)},
            id="palette-transparency-on-white",
        ),
        pytest.param(
            rgba_png(),
            "PNG",
            "RGBA",
            (30, 10),
            {(5, 5): (255, 255, 255), (15, 5): (0, 255, 0), (25, 5): (127, 127, 127)},
            id="rgba-on-white",
        ),
        pytest.param(la_png(), "PNG", "LA", (20, 20), {(5, 5): (255, 255, 255)}, id="la-on-white"),
        pytest.param(
            rgb_png_with_transparent_colour(), "PNG", "RGB", (20, 20), {(5, 5): (255, 255, 255)}, id="rgb-trns-colour"
        ),
        pytest.param(
            one_bit_png(), "PNG", "1", (16, 16), {(2, 2): (255, 255, 255), (12, 2): (0, 0, 0)}, id="1-bit"
        ),
        pytest.param(animated("GIF"), "GIF", "P", (32, 24), {(5, 5): FRAME_COLOURS[0]}, id="animated-gif-first-frame"),
        pytest.param(
            animated("WEBP"), "WEBP", "RGB", (32, 24), {(5, 5): FRAME_COLOURS[0]}, id="animated-webp-first-frame"
        ),
        pytest.param(
            rotated_jpeg(6),
            "JPEG",
            "RGB",
            (80, 120),  # orientation 6: width and height swap
            {(70, 5): (255, 0, 0), (5, 5): (0, 0, 255), (5, 110): (0, 0, 255)},
            id="exif-orientation-6",
        ),
        pytest.param(rotated_jpeg(3), "JPEG", "RGB", (120, 80), {(110, 70): (255, 0, 0)}, id="exif-orientation-3"),
        pytest.param(mpo(), "MPO", "RGB", (160, 120), {}, id="mpo-camera-jpeg"),
    ],
)
def test_decodes(data, fmt, mode, size, probes):
    result = decode_image(data, CFG)
    assert isinstance(result, DecodedImage), result
    assert (result.format, result.mode, (result.width, result.height)) == (fmt, mode, size)
    assert result.image.mode == "RGB"
    assert result.image.size == size
    assert type(result.image) is Image.Image  # not a file-backed ImageFile
    for xy, colour in probes.items():
        assert close(result.image.getpixel(xy), colour), (xy, result.image.getpixel(xy), colour)


# --- files that must be rejected -----------------------------------------------------------


def png_with_declared_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR claims another size (CRC recomputed): a bomb for 8 bytes."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def one_bit_png_bomb(side: int = 20_000) -> bytes:
    """A genuine 1-bit side x side PNG of zeros: 400 Mpx, about 50 KB of zlib."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


JPEG = encode(photo(), "JPEG")
PNG = encode(photo(), "PNG")


@pytest.mark.parametrize(
    "data, reason, fragment",
    [
        pytest.param(b"", "corrupt_image", "empty", id="zero-bytes"),
        pytest.param(random.Random(0).randbytes(4096), "corrupt_image", "not an image", id="random-bytes"),
        pytest.param(JPEG[: len(JPEG) // 2], "corrupt_image", "truncated", id="truncated-jpeg"),
        pytest.param(JPEG[:300], "corrupt_image", "", id="jpeg-header-only"),
        pytest.param(JPEG[:2], "corrupt_image", "", id="jpeg-soi-only"),
        pytest.param(PNG[: len(PNG) // 2], "corrupt_image", "truncated", id="truncated-png"),
        pytest.param(PNG[:8] + b"\x00" * 100, "corrupt_image", "PNG", id="png-signature-then-junk"),
        pytest.param(encode(photo(), "ICO"), "corrupt_image", "unsupported format ICO", id="ico"),
        pytest.param(encode(photo(), "PPM"), "corrupt_image", "unsupported format PPM", id="ppm"),
        pytest.param(b"%PDF-1.7\n" + b"0" * 100, "corrupt_image", "not an image", id="pdf"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "corrupt_image", "not an image", id="svg"),
        pytest.param(png_with_declared_size(0, 10), "corrupt_image", "", id="zero-width"),
        pytest.param(png_with_declared_size(100_000, 100_000), "image_too_large", "100000x100000", id="bomb-header"),
        pytest.param(one_bit_png_bomb(), "image_too_large", "20000x20000", id="bomb-1-bit-png"),
        pytest.param(png_with_declared_size(6_400, 6_400), "image_too_large", "6400x6400", id="40.96-mpx"),
    ],
)
def test_rejects(data, reason, fragment):
    result = decode_image(data, CFG)
    assert isinstance(result, Rejection), result
    assert result.reason == reason
    assert fragment in result.detail
    assert not re.search(r"at 0x[0-9a-f]+", result.detail)  # no memory addresses: reruns give the same rejects


def test_config_limit_is_per_call_and_reports_dimensions():
    data = encode(photo(300, 200), "PNG")
    assert isinstance(decode_image(data, DecodeConfig(max_pixels=60_000)), DecodedImage)
    rejection = decode_image(data, DecodeConfig(max_pixels=59_999))
    assert rejection == Rejection("image_too_large", "300x200 = 60000 pixels > max_pixels=59999")


def test_bomb_is_rejected_from_the_header_quickly_and_without_memory():
    """A real 400 Mpx PNG (Pillow itself calls it a decompression bomb) costs no pixel memory."""
    bomb = one_bit_png_bomb()
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    for data in (bomb, png_with_declared_size(100_000, 100_000)):
        assert decode_image(data, CFG).reason == "image_too_large"
    assert time.perf_counter() - start < 0.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50 * 1024


def test_pillow_globals_are_left_alone():
    before = Image.MAX_IMAGE_PIXELS
    decode_image(JPEG[: len(JPEG) // 2], CFG)
    decode_image(png_with_declared_size(100_000, 100_000), DecodeConfig(max_pixels=10**11))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == before


def test_non_bytes_is_a_programming_error():
    with pytest.raises(TypeError):
        decode_image("not bytes", CFG)  # type: ignore[arg-type]


# --- regressions found by fuzzing, and a small fuzz ----------------------------------------


def tiff_with_rational_strip_offsets() -> bytes:
    """StripOffsets (tag 273) retyped as RATIONAL: Pillow's loader raises TypeError."""
    data = bytearray(encode(photo(64, 48), "TIFF"))
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, _typ = struct.unpack_from("<HH", data, entry)
        if tag == 273:
            struct.pack_into("<H", data, entry + 2, 5)  # 5 = RATIONAL
            return bytes(data)
    raise AssertionError("no StripOffsets tag")


def jpeg_with_bad_exif_and_orientation() -> bytes:
    """EXIF whose Make (ASCII) tag is renumbered XResolution (RATIONAL), plus orientation 6.

    `ImageOps.exif_transpose` raises TypeError re-serialising such EXIF; the
    pixels are fine, so the image must decode, upright.
    """
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "camera"
    data = encode(Image.new("RGB", (60, 40), (0, 0, 255)), "JPEG", exif=exif)
    assert b"Exif\x00\x00MM" in data  # Pillow writes big-endian EXIF
    marker = struct.pack(">HH", 0x010F, 2)
    assert data.count(marker) == 1
    return data.replace(marker, struct.pack(">HH", 0x011A, 2))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzz_regression_tiff_type_error_is_corrupt_image():
    result = decode_image(tiff_with_rational_strip_offsets(), CFG)
    assert isinstance(result, Rejection) and result.reason == "corrupt_image"


def test_fuzz_regression_damaged_exif_still_decodes_upright():
    result = decode_image(jpeg_with_bad_exif_and_orientation(), CFG)
    assert isinstance(result, DecodedImage)
    assert (result.width, result.height) == (40, 60)


FUZZ_SEEDS = {
    "jpeg": encode(photo(64, 48), "JPEG", exif=Image.Exif()),
    "png": encode(photo(64, 48).convert("RGBA"), "PNG"),
    "gif": animated("GIF"),
    "webp": animated("WEBP"),
    "tiff": encode(photo(64, 48), "TIFF", compression="tiff_deflate"),
    "bmp": encode(photo(64, 48).convert("P"), "BMP"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's "Corrupt EXIF data" and friends
@pytest.mark.parametrize("name", sorted(FUZZ_SEEDS))
def test_fuzz_never_raises(name):
    """Truncations, byte flips and spliced ranges: always a verdict, never an exception."""
    seed = FUZZ_SEEDS[name]
    rng = random.Random(name)
    for _ in range(150):
        data = bytearray(seed)
        op = rng.randrange(3)
        if op == 0:
            data = data[: rng.randrange(len(data))]
        elif op == 1:
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(min(len(data), 400))] = rng.randrange(256)
        else:
            a, b = rng.randrange(len(data)), rng.randrange(len(data))
            data = data[:a] + data[b : b + rng.randrange(64)] + data[a:]
        result = decode_image(bytes(data), CFG)
        if isinstance(result, Rejection):
            assert result.reason in ("corrupt_image", "image_too_large")
        else:
            assert result.image.mode == "RGB"
