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
(`quarry.operators.svg.prepare`); as a second wall, `resources_dir` points at an
empty private directory, so a relative path that slipped through resolves to
nothing.

Time and memory: limits on the document (bytes, elements, `<use>` expansion)
do not bound render time. A 3.6 KB SVG of 50 rects sharing one
``<feMorphology radius="20">`` filter took resvg 4 minutes at 512 px
(the radius scales with the render, the cost with its square). So
`RenderWorker` runs resvg in a child process, one render at a time: a render
that overruns `timeout_s` has its process killed (and replaced) and is a
``render_error``; the child's address space is capped (`max_memory_mb`,
RLIMIT_AS) so an allocation bomb kills only the child, which is replaced too.
"""

from __future__ import annotations

import atexit
import io
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.phash import phash64
from quarry.operators.svg.prepare import PreparedSvg, config_default, schema_default

RENDER_ERROR = "render_error"
BLANK = "blank_render"
REASONS: tuple[str, ...] = (RENDER_ERROR, BLANK)

_EMPTY_DIR: Optional[str] = None
START_TIMEOUT_S = 120.0  # a cold interpreter on a loaded machine; only a broken install takes this long


def _empty_dir() -> str:
    """A private empty directory for resvg's `resources_dir` (one per process)."""
    global _EMPTY_DIR
    if _EMPTY_DIR is None or not os.path.isdir(_EMPTY_DIR):
        _EMPTY_DIR = tempfile.mkdtemp(prefix="quarry-svg-empty-")
        atexit.register(_remove_empty_dir, _EMPTY_DIR)
    return _EMPTY_DIR


def _remove_empty_dir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


@dataclass(frozen=True)
class RenderOptions:
    size: int = config_default("RenderConfig", "size")
    background: str = config_default("RenderConfig", "background")
    blank_max_std: float = config_default("RenderConfig", "blank_max_std")
    max_aspect_ratio: float = config_default("RenderConfig", "max_aspect_ratio")
    font_family: str = config_default("RenderConfig", "font_family")
    serif_family: str = config_default("RenderConfig", "serif_family")
    monospace_family: str = config_default("RenderConfig", "monospace_family")


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


Draw = Callable[[str, int, int, RenderOptions], Union[bytes, Rejection]]


def serve(read_fd: int, write_fd: int, max_memory_mb: int) -> None:
    """The child's loop: (text, width, height, opts) in, PNG bytes or a Rejection out, until EOF."""
    from multiprocessing.connection import Connection

    import resvg_py  # noqa: F401 - mapped before the cap, so the cap bounds renders, not start-up

    if max_memory_mb > 0:
        import resource

        limit = max_memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    outbox.send("ready")  # start-up (imports) is not charged to the first render's time limit
    while True:
        try:
            text, width, height, opts = inbox.recv()
        except (EOFError, OSError):  # the parent went away
            return
        outbox.send(render_png(text, width, height, opts))


class RenderWorker:
    """resvg in a child process with a time limit per render and a memory cap.

    `draw(text, width, height, opts)` has `render_png`'s contract. A render
    past `timeout_s` kills the child (the next call starts a new one) and
    returns `render_error`; so does a child that dies mid-render. The child
    is a plain `python -m quarry.operators.svg.render` talking over its stdin
    and stdout (not `multiprocessing`, which would re-import the parent's
    `__main__` and cannot start children from daemonic pool workers); it exits
    when its parent closes the pipe. One worker serves one thread: a Beam DoFn
    instance makes its own in `setup`.
    """

    def __init__(self, timeout_s: Optional[float] = None, max_memory_mb: Optional[int] = None):
        """`timeout_s` and `max_memory_mb` default to render.timeout_s and render.max_memory_mb."""
        timeout_s = schema_default("RenderConfig", "timeout_s") if timeout_s is None else timeout_s
        max_memory_mb = schema_default("RenderConfig", "max_memory_mb") if max_memory_mb is None else max_memory_mb
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.max_memory_mb = max_memory_mb
        self._proc: Optional[subprocess.Popen] = None
        self._inbox = self._outbox = None
        self.restarts = 0

    def _start(self) -> None:
        from multiprocessing.connection import Connection

        self._proc = subprocess.Popen(
            [sys.executable, "-m", "quarry.operators.svg.render", str(self.max_memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self._outbox = Connection(os.dup(self._proc.stdin.fileno()), readable=False)
        self._inbox = Connection(os.dup(self._proc.stdout.fileno()), writable=False)
        self._proc.stdin.close()
        self._proc.stdout.close()
        if not self._inbox.poll(START_TIMEOUT_S) or self._inbox.recv() != "ready":
            raise OSError(f"the render process did not start within {START_TIMEOUT_S} s")

    def _stop(self) -> None:
        if self._proc is not None:
            self._outbox.close()
            self._inbox.close()
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(5)
        self._proc = self._inbox = self._outbox = None

    def draw(self, text: str, width: int, height: int, opts: RenderOptions) -> Union[bytes, Rejection]:
        try:
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    self.restarts += 1
                self._stop()
                self._start()
            self._outbox.send((text, width, height, opts))
            if not self._inbox.poll(self.timeout_s):
                self._stop()
                self.restarts += 1
                return Rejection(RENDER_ERROR, f"render took longer than {self.timeout_s:g} s (render.timeout_s): "
                                               "the renderer was stopped")
            return self._inbox.recv()
        except (EOFError, OSError):  # the child died mid-render (memory cap, crash) or never started
            if self._proc is not None:
                try:
                    self._proc.wait(2)
                except subprocess.TimeoutExpired:
                    pass
            code = self._proc.poll() if self._proc is not None else None
            self._stop()
            self.restarts += 1
            return Rejection(RENDER_ERROR, f"the renderer process died (exit code {code}; "
                                           f"render.max_memory_mb={self.max_memory_mb})")

    def close(self) -> None:
        self._stop()

    def __enter__(self) -> "RenderWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def render(prepared: PreparedSvg, opts: Optional[RenderOptions] = None,
           draw: Draw = render_png) -> Union[Rendered, Rejection]:
    """Prepared SVG -> PNG render with its pHash, or `render_error` / `blank_render`.

    `draw` makes the PNG: `render_png` in this process, or a `RenderWorker`'s
    `draw` for a time- and memory-bounded child process. `opts`: the defaults.
    """
    opts = RenderOptions() if opts is None else opts
    if prepared.drawable == 0:
        return Rejection(BLANK, "no drawable element (path, shape, text, image, use)")
    vw, vh = prepared.viewbox[2], prepared.viewbox[3]
    aspect = max(vw, vh) / min(vw, vh)
    if aspect > opts.max_aspect_ratio:
        return Rejection(RENDER_ERROR, f"viewBox aspect ratio {aspect:.1f} > render.max_aspect_ratio")
    width, height = render_size(prepared.viewbox, opts.size)
    png = draw(prepared.text, width, height, opts)
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


if __name__ == "__main__":  # the RenderWorker child: protocol on duplicated stdin/stdout fds
    _read, _write = os.dup(0), os.dup(1)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the protocol
    serve(_read, _write, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
