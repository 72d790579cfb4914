"""Render a prepared (sanitised, normalised) SVG to PNG with resvg, and judge the render.

- ``render_error``: resvg refused or failed, or the viewBox is so elongated
  (`max_aspect_ratio`) that the picture is a line;
- ``blank_render``: nothing drawable in the document (no render is made), or
  the render is near-uniform: pixel standard deviation of a 64x64 grey
  thumbnail below `blank_max_std`.

resvg never touches the network, but it does read local files: an
``<image href="/abs/path.png">`` or a relative path (resolved against the
working directory, or `resources_dir`) is loaded from disk (measured with
resvg-py 0.5). Sanitising removes every such reference first
(`quarry.operators.svg`); as a second wall, `resources_dir` points at an
empty private directory, so a relative path that slipped through resolves to
nothing.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.phash import phash64
from quarry.operators.svg import PreparedSvg

RENDER_ERROR = "render_error"
BLANK = "blank_render"

_EMPTY_DIR: Optional[str] = None


def _empty_dir() -> str:
    """A private empty directory for resvg's `resources_dir` (one per process)."""
    global _EMPTY_DIR
    if _EMPTY_DIR is None or not os.path.isdir(_EMPTY_DIR):
        _EMPTY_DIR = tempfile.mkdtemp(prefix="quarry-svg-empty-")
    return _EMPTY_DIR


@dataclass(frozen=True)
class RenderOptions:
    size: int = 512
    background: str = "#ffffff"
    blank_max_std: float = 2.0
    max_aspect_ratio: float = 20.0
    font_family: str = "DejaVu Sans"
    serif_family: str = "DejaVu Serif"
    monospace_family: str = "DejaVu Sans Mono"


@dataclass(frozen=True)
class Rendered:
    png: bytes
    width: int
    height: int
    phash: int
    std: float


def render_size(viewbox: tuple[float, float, float, float], size: int) -> tuple[int, int]:
    """Pixel size with the viewBox's aspect ratio and `size` on the long side."""
    w, h = viewbox[2], viewbox[3]
    if w >= h:
        return size, max(1, round(size * h / w))
    return max(1, round(size * w / h)), size


def _is_panic(e: BaseException) -> bool:
    # pyo3 turns a Rust panic into pyo3_runtime.PanicException, a BaseException subclass.
    return type(e).__name__ == "PanicException"


def render_png(text: str, width: int, height: int, opts: RenderOptions) -> Union[bytes, Rejection]:
    import resvg_py

    try:
        png = resvg_py.svg_to_bytes(
            svg_string=text, background=opts.background, width=width, height=height, resources_dir=_empty_dir(),
            font_family=opts.font_family, sans_serif_family=opts.font_family, serif_family=opts.serif_family,
            monospace_family=opts.monospace_family)
    except (ValueError, OSError, RuntimeError) as e:
        return Rejection(RENDER_ERROR, f"resvg: {e}"[:300])
    except BaseException as e:  # noqa: BLE001 - only a Rust panic is data; everything else re-raises
        if _is_panic(e):
            return Rejection(RENDER_ERROR, f"resvg panicked: {e}"[:300])
        raise
    return bytes(png)


def pixel_std(img: Image.Image) -> float:
    """Standard deviation (0-255) of a 64x64 grey thumbnail: ~0 for a uniform picture."""
    thumb = img.convert("L").resize((64, 64), Image.Resampling.BILINEAR)
    return float(np.asarray(thumb, dtype=np.float32).std())


def render(prepared: PreparedSvg, opts: RenderOptions = RenderOptions()) -> Union[Rendered, Rejection]:
    """Prepared SVG -> PNG render with its pHash, or `render_error` / `blank_render`."""
    if prepared.drawable == 0:
        return Rejection(BLANK, "no drawable element (path, shape, text, image, use)")
    vw, vh = prepared.viewbox[2], prepared.viewbox[3]
    aspect = max(vw, vh) / min(vw, vh)
    if aspect > opts.max_aspect_ratio:
        return Rejection(RENDER_ERROR, f"viewBox aspect ratio {aspect:.1f} > render.max_aspect_ratio")
    width, height = render_size(prepared.viewbox, opts.size)
    png = render_png(prepared.text, width, height, opts)
    if isinstance(png, Rejection):
        return png
    try:
        img = Image.open(io.BytesIO(png))
        img.load()
    except (OSError, ValueError) as e:
        return Rejection(RENDER_ERROR, f"resvg returned an unreadable PNG: {e}"[:300])
    rgb = img.convert("RGB")
    std = pixel_std(rgb)
    if std < opts.blank_max_std:
        return Rejection(BLANK, f"near-uniform render (std {std:.2f} < render.blank_max_std={opts.blank_max_std})")
    return Rendered(png=png, width=img.width, height=img.height, phash=phash64(rgb), std=std)
