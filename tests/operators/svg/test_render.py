"""Rendering prepared SVGs with resvg: sizes, blank renders, and nothing read or fetched."""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.phash import hamming
from quarry.operators.svg.prepare import PreparedSvg, prepare_svg
from quarry.operators.svg.render import Rendered, RenderOptions, RenderWorker, render, render_png, render_size

NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


def prepared(body: str, viewbox: str = "0 0 10 10") -> PreparedSvg:
    p = prepare_svg(f'<svg {NS} viewBox="{viewbox}">{body}</svg>'.encode())
    assert isinstance(p, PreparedSvg), p
    return p


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture()
def loopback():
    """A local HTTP server that records every request it receives."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, "PNG")
            self.end_headers()
            self.wfile.write(buf.getvalue())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def test_render_size_keeps_the_aspect_ratio():
    assert render_size((0, 0, 48, 48), 512) == (512, 512)
    assert render_size((0, 0, 200, 120), 512) == (512, 307)
    assert render_size((0, 0, 10, 40), 100) == (25, 100)
    assert render_size((0, 0, 1000, 1), 64) == (64, 1)


def test_render_draws_the_picture_on_white():
    r = render(prepared('<rect x="5" y="0" width="5" height="10" fill="#ff0000"/>'), RenderOptions(size=64))
    assert isinstance(r, Rendered) and (r.width, r.height) == (64, 64)
    px = pixels(r.png)
    assert tuple(px[32, 10]) == (255, 255, 255)  # left half: the background
    assert tuple(px[32, 50]) == (255, 0, 0)  # right half: the rect
    assert Image.open(io.BytesIO(r.png)).format == "PNG"


def test_text_renders_with_the_configured_fonts():
    r = render(prepared('<text x="1" y="8" font-size="8" font-family="NoSuchFont">Ab</text>'), RenderOptions(size=64))
    assert isinstance(r, Rendered) and r.std > 5


@pytest.mark.parametrize("body, reason", [
    ("", "blank_render"),
    ('<rect width="10" height="10" fill="#fff"/>', "blank_render"),  # white on white
    ('<rect width="10" height="10" fill="#3366cc"/>', "blank_render"),  # uniform
    ('<circle cx="5" cy="5" r="0.01"/>', "blank_render"),  # too small to see
    ('<g><desc>x</desc></g>', "blank_render"),
])
def test_blank_renders(body, reason):
    out = render(prepared(body), RenderOptions(size=64))
    assert isinstance(out, Rejection) and out.reason == reason, out


def test_elongated_viewbox_is_a_render_error():
    out = render(prepared('<rect width="1000" height="1"/>', "0 0 1000 1"), RenderOptions(size=64))
    assert isinstance(out, Rejection) and out.reason == "render_error"


def test_resvg_failure_is_a_render_error():
    out = render_png("<svg", 10, 10, RenderOptions())
    assert isinstance(out, Rejection) and out.reason == "render_error"


def test_near_identical_renders_have_close_phashes():
    shape = '<path d="M1 9L{x} 1L9 9Z" fill="#222"/><rect x="6" y="1" width="3" height="3" fill="#c33"/>'
    a = render(prepared(shape.format(x=3)), RenderOptions(size=128))
    b = render(prepared(shape.format(x=3.05)), RenderOptions(size=128))
    c = render(prepared('<path d="M0 0H10L0 10Z" fill="#222"/>'), RenderOptions(size=128))
    assert hamming(a.phash, b.phash) <= 4 < hamming(a.phash, c.phash)


def test_resvg_reads_local_paths_so_the_sanitiser_must_remove_them(tmp_path):
    """Why sanitising is not optional: resvg itself loads an absolute image path from disk."""
    red = tmp_path / "red.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(red)
    raw = f'<svg {NS} viewBox="0 0 4 4"><image href="{red}" width="4" height="4"/></svg>'
    assert tuple(pixels(render_png(raw, 8, 8, RenderOptions()))[4, 4]) == (255, 0, 0)  # read from disk
    p = prepare_svg(raw.encode())
    assert isinstance(p, PreparedSvg) and str(red) not in p.text and "element:image" in p.removed
    out = render(p, RenderOptions(size=8))
    assert isinstance(out, Rejection) and out.reason == "blank_render"  # nothing left to draw


def test_relative_paths_resolve_into_an_empty_directory(tmp_path, monkeypatch):
    """The second wall: a relative href that reached resvg resolves against an empty private directory."""
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "red.png")
    monkeypatch.chdir(tmp_path)
    raw = f'<svg {NS} viewBox="0 0 4 4"><image href="red.png" width="4" height="4"/></svg>'
    assert tuple(pixels(render_png(raw, 8, 8, RenderOptions()))[4, 4]) == (255, 255, 255)


def test_no_request_reaches_a_loopback_server(loopback):
    base, hits = loopback
    body = (
        f'<image href="{base}/a.png" width="5" height="5"/>'
        f'<image xlink:href="{base}/b.png" width="5" height="5"/>'
        f'<use href="{base}/c.svg#x"/>'
        f'<filter id="f"><feImage href="{base}/d.png"/></filter>'
        f'<rect width="5" height="5" fill="url({base}/e.svg#g)" style="filter:url(#f);stroke:url({base}/f#h)"/>'
        f'<style>@import url({base}/g.css); circle {{ fill: url({base}/h.svg#p) }}</style>'
        '<path d="M0 10L10 0M0 0L5 5" stroke="#000" stroke-width="2"/>'
    )
    raw = f'<svg {NS} viewBox="0 0 10 10">{body}</svg>'
    # resvg on the raw document: it does not fetch either (it has no network code) ...
    render_png(raw, 32, 32, RenderOptions())
    # ... and the sanitised document no longer names the server at all.
    p = prepare_svg(raw.encode())
    assert isinstance(p, PreparedSvg) and "127.0.0.1" not in p.text
    assert isinstance(render(p, RenderOptions(size=32)), Rendered)
    assert hits == []


def test_data_uri_raster_images_render():
    buf = io.BytesIO()
    img = Image.new("RGB", (4, 4), (0, 0, 255))
    img.paste((255, 255, 0), (0, 0, 2, 4))  # left half yellow: not a uniform picture
    img.save(buf, "PNG")
    import base64

    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = render(prepared(f'<image href="{uri}" width="10" height="10"/>'), RenderOptions(size=16))
    assert isinstance(r, Rendered) and tuple(pixels(r.png)[8, 12]) == (0, 0, 255)


def test_demo_pictures_render(tmp_path):
    demo = Path(__file__).resolve().parents[3] / "dags" / "demo_data" / "svg"
    for name in ("house.svg", "chart.svg", "triangle-geometry.svg", "inkscape-star.svg", "latin1.svg"):
        p = prepare_svg((demo / name).read_bytes())
        assert isinstance(render(p, RenderOptions(size=96)), Rendered), name


def filter_bomb(rects: int) -> PreparedSvg:
    """Small, within every document limit, and slow: morphology radius scales with the render size."""
    body = '<filter id="m"><feMorphology radius="20"/></filter>' + "".join(
        f'<rect x="{i % 10}" y="{i % 7}" width="5" height="5" filter="url(#m)"/>' for i in range(rects))
    return prepared(body, "0 0 20 20")


def test_render_worker_renders_like_in_process():
    p = prepared('<rect x="5" y="0" width="5" height="10" fill="#ff0000"/>')
    with RenderWorker(timeout_s=20) as worker:
        a = render(p, RenderOptions(size=48), worker.draw)
        b = render(p, RenderOptions(size=48), worker.draw)  # the same child serves many renders
    assert isinstance(a, Rendered) and a.png == b.png == render(p, RenderOptions(size=48)).png
    assert worker.restarts == 0


def test_render_worker_stops_a_slow_render_and_recovers():
    bomb = filter_bomb(200)  # minutes at 512 px in-process
    assert len(bomb.text) < 12_000
    good = prepared('<path d="M1 9L3 1L9 9Z" fill="#222"/>')
    with RenderWorker(timeout_s=1.0) as worker:
        assert isinstance(render(good, RenderOptions(size=32), worker.draw), Rendered)  # child started and warm
        started = time.perf_counter()
        out = render(bomb, RenderOptions(size=512), worker.draw)
        assert time.perf_counter() - started < 15  # the limit plus a kill, even on a loaded machine
        assert isinstance(out, Rejection) and out.reason == "render_error" and "render.timeout_s" in out.detail
        assert isinstance(render(good, RenderOptions(size=32), worker.draw), Rendered)  # a fresh child took over
        assert worker.restarts == 1


def test_render_worker_survives_its_child_dying():
    good = prepared('<path d="M1 9L3 1L9 9Z" fill="#222"/>')
    with RenderWorker(timeout_s=20) as worker:
        assert isinstance(render(good, RenderOptions(size=32), worker.draw), Rendered)
        worker._proc.kill()  # as the memory cap or a native crash would
        worker._proc.wait()
        assert isinstance(render(good, RenderOptions(size=32), worker.draw), Rendered)
        assert worker.restarts == 1


def test_render_worker_memory_cap_is_a_render_error():
    blurred = prepared('<filter id="b"><feGaussianBlur stdDeviation="2"/></filter>'
                       '<path d="M1 9L3 1L9 9Z" fill="#222" filter="url(#b)"/>')
    with RenderWorker(timeout_s=20, max_memory_mb=250) as worker:
        assert isinstance(render(blurred, RenderOptions(size=64), worker.draw), Rendered)
        out = render(blurred, RenderOptions(size=4096), worker.draw)  # 64 MiB canvas + filter buffers
        assert isinstance(out, Rejection) and out.reason == "render_error" and "died" in out.detail
        assert isinstance(render(blurred, RenderOptions(size=64), worker.draw), Rendered)
        assert worker.restarts == 1
