"""Image -> SVG code: a rule-based verifier that renders both SVGs and compares pixels.

The policy sees a rendered image and writes SVG code that draws it; the
reference is the SVG that drew the image. `SvgRenderVerifier` takes the
``<svg>...</svg>`` element out of the answer (from the first ``<svg`` to the
last ``</svg>``, so a ```` ```svg ```` fence or prose around it does not
matter), runs it through quarry's own `prepare_svg` (sanitise: scripts,
external references, entity and ``<use>`` bombs; normalise), renders it and
the reference the same way with resvg, and scores *ink agreement*:

- both are rendered at the reference's viewBox aspect, `size` px on the long
  side, on white; a response with another viewBox is fitted into the same
  width x height (its own ``preserveAspectRatio``), so the pixel grids align;
- a pixel is *ink* in a render when some channel differs from white by more
  than `tolerance`; over the pixels that are ink in either render, the reward
  is the share where the renders agree (every channel within `tolerance`).
  A blank response therefore scores 0 on a drawing however much of the image
  is white. Neither render has ink: reward 1 (the response is blank, as the
  reference is);
- reward 1.0 is `RIGHT` (reason ""), anything less is ``mismatch``. A response
  whose normalised text equals the reference's is `RIGHT` without rendering.

Reason codes (reward 0 unless ``""`` / ``mismatch``):

- ``unparseable_svg``: no ``<svg`` in the answer, or not well-formed XML, not
  an ``<svg>`` root, an unusable viewBox (`prepare_svg`'s ``invalid_svg``);
  a DTD is cut off with the text before ``<svg``, so an entity bomb lands here;
- ``unsafe_svg``: `prepare_svg` refused it (a ``<use>`` cycle or fan-out bomb,
  or something still external after sanitising);
- ``too_long``: the answer is longer than `max_chars`, or `prepare_svg`'s
  ``too_long`` (elements, normalised length) / ``too_large``;
- ``timeout``: the response's render took longer than `timeout_s` (isolate only);
- ``render_error``: resvg refused or failed on the response, or its process
  died (the `max_memory_mb` cap);
- ``bad_reference``: the reference is not an SVG that prepares and renders.

The reference is SVG text (str or bytes, box markers stripped), or a list of
them: then the best verdict over the list.

Rendering hostile SVG can take minutes (filters cost with the render size), so
by default (`isolate`) it runs in a `RenderWorker` child process with a time
limit and a memory cap, started on the first render and reused by this
verifier instance. The worker and a small cache of reference renders live in
an unpickled runtime slot: a pickled verifier (Beam ships DoFns that hold one)
arrives without them and starts its own. One instance renders one call at a
time (a lock); `close()` stops its worker.
"""

from __future__ import annotations

import functools
import io
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.grade.verify import (
    MISMATCH,
    RIGHT,
    TIMEOUT,
    TOO_LONG,
    Verdict,
    _fail,
    _ScoresExtractedAnswer,
    extract_answer,
)
from quarry.operators.svg import prepare as svg_prepare
from quarry.operators.svg.prepare import PreparedSvg, SvgLimits, prepare_svg
from quarry.operators.svg.render import RenderOptions, RenderWorker, render_png, render_size

UNPARSEABLE_SVG = "unparseable_svg"
UNSAFE_SVG = "unsafe_svg"
RENDER_ERROR = "render_error"
BAD_REFERENCE = "bad_reference"
REASONS: tuple[str, ...] = (MISMATCH, UNPARSEABLE_SVG, UNSAFE_SVG, TOO_LONG, TIMEOUT, RENDER_ERROR, BAD_REFERENCE)

MAX_SVG_CHARS = 200_000
REFERENCE_CACHE = 64  # reference renders kept per verifier (RL grades many rollouts per reference)
WHITE = 255

_PREPARE_REASONS = {
    svg_prepare.INVALID: UNPARSEABLE_SVG,
    svg_prepare.UNSAFE: UNSAFE_SVG,
    svg_prepare.TOO_LONG: TOO_LONG,
    svg_prepare.TOO_LARGE: TOO_LONG,
}
_SVG_START = re.compile(r"<svg[\s>/]")
_SVG_END = "</svg>"


@functools.lru_cache(maxsize=8)
def _limits(max_chars: int) -> SvgLimits:
    return SvgLimits(max_chars=max_chars)


@functools.lru_cache(maxsize=1)
def _render_options() -> RenderOptions:
    return RenderOptions(background="#ffffff")  # fonts: the svg DAG's defaults, so text draws as it did there


class _Runtime:
    """A verifier's per-process state: the render worker and the reference cache. Never pickled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.worker: Optional[RenderWorker] = None
        # raw reference text -> (normalised text, rendered pixels)
        self.references: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()

    def __reduce__(self):
        return (_Runtime, ())  # a copy (pickle, copy, deepcopy) starts empty: no process handle travels

    def close(self) -> None:
        with self.lock:
            if self.worker is not None:
                self.worker.close()
                self.worker = None


def svg_element(text: str) -> Optional[str]:
    """From the first ``<svg`` to the last ``</svg>`` (to the end when there is none); None without ``<svg``."""
    m = _SVG_START.search(text)
    if m is None:
        return None
    end = text.rfind(_SVG_END)
    return text[m.start() : end + len(_SVG_END)] if end > m.start() else text[m.start() :]


@dataclass(frozen=True)
class SvgRenderVerifier(_ScoresExtractedAnswer):
    """Image -> SVG: reward = ink agreement of the response's and the reference's renders (module docstring)."""

    size: int = 128  # render long side, px
    tolerance: int = 16  # per channel, of 255: ink threshold and agreement threshold
    isolate: bool = True  # render in a RenderWorker child (timeout, memory cap); False: in-process, no timeout
    timeout_s: float = 5.0  # per render (isolate)
    max_memory_mb: int = 1024  # address-space cap of the render child (isolate), 0 = none
    max_chars: int = MAX_SVG_CHARS  # answer length cap, and normalised-length cap of prepare_svg
    require_box: bool = False  # SVG answers are often written without GLM's box markers
    _runtime: _Runtime = field(default_factory=_Runtime, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")
        if not 0 <= self.tolerance < WHITE:
            raise ValueError(f"tolerance must be in [0, 255), got {self.tolerance}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")

    def score(self, answer: str, reference: object) -> Verdict:
        if len(answer) > self.max_chars:
            return _fail(TOO_LONG)
        got = self._prepare(answer)
        if isinstance(got, Verdict):
            return got
        if isinstance(reference, (list, tuple)):  # alternatives, as the other verifiers take: the best
            verdicts = [self._score_one(got, r) for r in reference]
            return max(verdicts, key=lambda v: v.reward) if verdicts else _fail(BAD_REFERENCE)
        return self._score_one(got, reference)

    def _score_one(self, got: PreparedSvg, reference: object) -> Verdict:
        with self._runtime.lock:
            ref = self._reference(reference)
            if isinstance(ref, Verdict):
                return ref
            ref_text, ref_px = ref
            if got.text == ref_text:  # one canonical document draws one picture
                return RIGHT
            height, width = ref_px.shape[:2]
            got_px = self._pixels(got.text, width, height)
        if isinstance(got_px, Verdict):
            return got_px
        reward = ink_agreement(got_px, ref_px, self.tolerance)
        return RIGHT if reward == 1.0 else Verdict(reward, MISMATCH)

    def close(self) -> None:
        """Stop the render worker (a later call starts a new one)."""
        self._runtime.close()

    # --- helpers -------------------------------------------------------------

    def _prepare(self, text: str) -> Union[PreparedSvg, Verdict]:
        svg = svg_element(text)
        if svg is None:
            return _fail(UNPARSEABLE_SVG)
        # "replace": a lone surrogate in model output must not raise.
        out = prepare_svg(svg.encode("utf-8", "replace"), _limits(self.max_chars))
        if isinstance(out, Rejection):
            return _fail(_PREPARE_REASONS.get(out.reason, UNPARSEABLE_SVG))
        return out

    def _reference(self, reference: object) -> Union[tuple[str, np.ndarray], Verdict]:
        """(normalised text, pixels) of the reference, cached; caller holds the lock."""
        raw = reference.decode("utf-8", "replace") if isinstance(reference, bytes) else str(reference)
        cache = self._runtime.references
        if raw in cache:
            cache.move_to_end(raw)
            return cache[raw]
        text = extract_answer(raw, require_box=False)  # strips <|begin_of_box|> markers
        prepared = self._prepare(text) if isinstance(text, str) else None
        if not isinstance(prepared, PreparedSvg):
            return _fail(BAD_REFERENCE)
        width, height = render_size(prepared.viewbox, self.size)
        px = self._pixels(prepared.text, width, height)
        if isinstance(px, Verdict):
            return px if px.reason == TIMEOUT else _fail(BAD_REFERENCE)
        cache[raw] = (prepared.text, px)
        if len(cache) > REFERENCE_CACHE:
            cache.popitem(last=False)
        return prepared.text, px

    def _pixels(self, text: str, width: int, height: int) -> Union[np.ndarray, Verdict]:
        """Render a prepared SVG to exactly width x height RGB (int16) on white; caller holds the lock."""
        # prepare_svg drops the root's width/height. Setting them to the pixel size makes resvg draw
        # exactly width x height with the document's viewBox fitted by its preserveAspectRatio;
        # without them resvg-py keeps the viewBox aspect and shrinks the image instead.
        sized = text.replace("<svg", f'<svg width="{width}" height="{height}"', 1)
        if self.isolate:
            if self._runtime.worker is None:
                self._runtime.worker = RenderWorker(self.timeout_s, self.max_memory_mb)
            started = time.monotonic()
            png = self._runtime.worker.draw(sized, width, height, _render_options())
            # RenderWorker reports an overrun as a render_error; only the clock tells it apart.
            if isinstance(png, Rejection) and time.monotonic() - started >= self.timeout_s:
                return _fail(TIMEOUT)
        else:
            png = render_png(sized, width, height, _render_options())
        if isinstance(png, Rejection):
            return _fail(RENDER_ERROR)
        try:
            img = Image.open(io.BytesIO(png))
            img.load()
        except (OSError, ValueError):
            return _fail(RENDER_ERROR)
        if img.size != (width, height):
            return _fail(RENDER_ERROR)
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def ink_agreement(a: np.ndarray, b: np.ndarray, tolerance: int) -> float:
    """Share of pixels, among those that are ink in `a` or `b`, where `a` and `b` agree; 1.0 with no ink."""
    ink = (np.abs(a - WHITE) > tolerance).any(axis=2) | (np.abs(b - WHITE) > tolerance).any(axis=2)
    n = int(ink.sum())
    if n == 0:
        return 1.0
    agree = (np.abs(a - b) <= tolerance).all(axis=2)
    return float((agree & ink).sum()) / n
