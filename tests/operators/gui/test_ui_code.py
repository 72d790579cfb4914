"""UI-to-code pairs (operators/gui/ui_code.py): real Chromium, served folders, hostile pages."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.gui import ui_code
from quarry.operators.gui.browser import (
    BrowserRenderer,
    HtmlFolderServer,
    PageJob,
    RendererSettings,
    find_chromium,
    local_read,
)

PNG_1PX = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8"
                        "cfc0f00000030101009a5d6e1f0000000049454e44ae426082")


@pytest.fixture(scope="module")
def served():
    """(renderer with ui_code on, folder server): pages written into a folder are rendered as the gui DAG does."""
    try:
        find_chromium()
    except Exception as e:  # noqa: BLE001 - no browser on this machine
        pytest.skip(str(e))
    server = HtmlFolderServer(local_read)
    r = BrowserRenderer(RendererSettings(timeout_s=10, extract_timeout_s=5, settle="load",
                                         ui_code=ui_code.CodeSettings(max_nodes=3000, max_bytes=1_500_000)),
                        read_asset=server.read_url).start()
    yield r, server
    r.close()
    server.close()


class Victim:
    """A second loopback server that must never be asked for anything."""

    def __init__(self):
        self.hits: list[str] = []
        victim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                victim.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PNG_1PX)))
                self.end_headers()
                self.wfile.write(PNG_1PX)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def render(served, folder, name, html, **viewport):
    r, server = served
    (folder / name).write_text(html)
    res = r.render(PageJob(server.url_for(str(folder), name), allow_private=True, trusted_origin=True, **viewport))
    assert res.rejection is None, res.rejection
    return res


def pair(res):
    code = res.page.code
    assert isinstance(code, ui_code.CodeRender), code
    return code, ui_code.decide(res.page.png, code, 0.95)


STYLED = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Styled</title>
<link rel="stylesheet" href="site.css"><style>
@font-face { font-family: "Served"; src: url("font.ttf"); }
.card::before { content: "\\2605 "; color: #c60; }
h1 { font: bold 30px/1.2 Served, serif; letter-spacing: 1px; }
</style></head>
<body onload="document.title='x'">
<header><img src="logo.png" width="40" height="20" alt="logo"> <a href="javascript:alert(1)">Bad link</a>
<a href="next.html">Next</a></header>
<h1>Tea and mugs</h1>
<div class="grid"><div class="card">One</div><div class="card">Two</div><div class="card" onclick="x()">Three</div></div>
<table><tr><th colspan="2">Head</th></tr><tr><td>a</td><td>b</td></tr></table>
<form><input type="text" value="typed"> <input type="checkbox" checked> <select><option>A</option>
<option selected>B</option></select></form>
<iframe src="frame.html" width="200" height="60"></iframe>
<svg width="60" height="30"><rect width="60" height="30" fill="teal" onclick="x()"/></svg>
<script>document.querySelector('h1').style.color = 'rgb(120, 20, 20)';</script>
</body></html>"""
CSS = """body { font-family: sans-serif; margin: 16px; background: #fafaf5 url("bg.png"); }
header { display: flex; gap: 12px; align-items: center; padding: 8px; background: #234; color: #fff; }
header a { color: #fd8; }
.grid { display: grid; grid-template-columns: repeat(3, 120px); gap: 8px; margin: 12px 0; }
.card { border: 1px solid #999; border-radius: 6px; padding: 10px; box-shadow: 0 1px 3px #0004; height: 30px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 10px; }"""


def write_assets(folder):
    (folder / "site.css").write_text(CSS)
    img = Image.new("RGB", (40, 20), (200, 40, 40))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    (folder / "logo.png").write_bytes(buf.getvalue())
    Image.new("RGB", (4, 4), (250, 250, 240)).save(folder / "bg.png")
    (folder / "frame.html").write_text("<p>framed</p>")
    fonts = [p for p in ("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",) if __import__("os").path.exists(p)]
    if fonts:
        (folder / "font.ttf").write_bytes(open(fonts[0], "rb").read())


def test_a_styled_served_page_becomes_a_self_contained_document_that_renders_the_same(served, tmp_path):
    write_assets(tmp_path)
    res = render(served, tmp_path, "styled.html", STYLED)
    code, verdict = pair(res)
    html = code.capture.html
    assert isinstance(verdict, ui_code.Similarity) and verdict.score >= 0.95, verdict
    assert code.requests == 0  # the sandbox render asked for nothing
    assert ui_code.unsafe_reason(html) is None
    assert not re.search(r'(src|href)="https?:|url\("?https?:', html)
    for banned in ("<script", "onload", "onclick", "<iframe", "<link", "javascript:", "127.0.0.1"):
        assert banned not in html, banned
    assert 'href="next.html"' in html  # inert relative links stay
    assert html.count("data:image/png;base64,") >= 2  # the served logo and the CSS background
    assert "font/ttf;base64," in html or "application/octet-stream;base64" in html or "font-sfnt" in html \
        or not (tmp_path / "font.ttf").exists()
    assert 'value="typed"' in html and " checked" in html and re.search(r"<option[^>]* selected>B", html)
    assert "::before{" in html and "rgb(120, 20, 20)" in html  # pseudo content and the script's own restyle
    assert code.capture.assets_inlined >= 2 and code.capture.assets_dropped >= 1  # the iframe became a box


def test_external_images_and_fonts_are_dropped_and_the_render_makes_no_request(served, tmp_path):
    victim = Victim()
    try:
        html = f"""<!doctype html><html><head><style>
          @font-face {{ font-family: Remote; src: url("{victim.base}/font.woff2"); }}
          body {{ font-family: Remote, sans-serif; background-image: url("{victim.base}/bg.png"); }}
          </style></head><body><h1>Remote assets</h1><img src="{victim.base}/a.png" width="30" height="30" alt="">
          <p style="background: url('{victim.base}/p.png')">Text</p></body></html>"""
        res = render(served, tmp_path, "remote.html", html)
        code, verdict = pair(res)
        assert victim.hits == []  # the page's own requests were refused by the guard, the sandbox made none
        assert code.requests == 0 and victim.base not in code.capture.html and "Remote" in code.capture.html
        assert "@font-face" not in code.capture.html
        assert isinstance(verdict, ui_code.Similarity)
    finally:
        victim.close()


def test_the_sandbox_blocks_and_counts_every_request():
    """rerender itself: a document that asks for things gets nothing, and says how many it asked for."""
    try:
        find_chromium()
    except Exception as e:  # noqa: BLE001
        pytest.skip(str(e))
    r = BrowserRenderer(RendererSettings(settle="load")).start()
    try:
        html = ('<html><body><img src="http://127.0.0.1:9/a.png"><link rel="stylesheet" href="https://example.org/s.css">'
                '<script>fetch("http://127.0.0.1:9/x")</script><p style="background:url(/b.png)">x</p></body></html>')

        async def go():
            browser = await r._ensure_browser()
            return await ui_code.rerender(browser, html, 320, 200, 1.0, False, 5, r._dead_end_proxy())

        png, requests, error = r._call(go(), 30)
        assert error is None and png[:4] == b"\x89PNG"
        assert requests == 3  # img, stylesheet, background; the script never ran (JavaScript is off)
    finally:
        r.close()


def test_a_huge_dom_is_too_large_within_bounded_time(served, tmp_path):
    html = "<html><body>" + "<div><span>x</span></div>" * 3000 + "</body></html>"
    t0 = time.monotonic()
    res = render(served, tmp_path, "huge.html", html)
    assert isinstance(res.page.code, Rejection) and res.page.code.reason == ui_code.TOO_LARGE
    assert "ui_code.max_nodes" in res.page.code.detail
    assert time.monotonic() - t0 < 20


def test_a_document_over_the_byte_limit_is_too_large(tmp_path):
    raw = {"body": "<body>" + "x" * 5000 + "</body>", "rules": [], "fonts": [], "assets": []}
    got = ui_code.assemble(raw, ui_code.CodeSettings(max_bytes=2000), None)
    assert isinstance(got, Rejection) and got.reason == ui_code.TOO_LARGE


def test_a_script_that_keeps_rewriting_the_dom_is_unstable(served, tmp_path):
    html = """<html><body><p id="t">0</p><script>
      let n = 0; setInterval(() => { document.getElementById('t').textContent = String(++n); }, 20);
      </script></body></html>"""
    res = render(served, tmp_path, "ticker.html", html)
    assert isinstance(res.page.code, Rejection) and res.page.code.reason == ui_code.UNSTABLE_DOM


def test_a_page_that_navigates_away_gives_no_pair(served, tmp_path):
    (tmp_path / "elsewhere.html").write_text("<html><body><h1>Elsewhere</h1></body></html>")
    html = """<html><body><h1>Leaving</h1><script>
      window.addEventListener('load', () => setTimeout(() => { location.href = 'elsewhere.html'; }, 30));
      </script></body></html>"""
    t0 = time.monotonic()
    r, server = served
    (tmp_path / "leave.html").write_text(html)
    res = r.render(PageJob(server.url_for(str(tmp_path), "leave.html"), allow_private=True, trusted_origin=True))
    assert time.monotonic() - t0 < 30
    if res.page is not None:  # the page's rows may stand; its code must not
        assert isinstance(res.page.code, Rejection), res.page.code
        assert res.page.code.reason in (ui_code.NAVIGATED, ui_code.UNSTABLE_DOM), res.page.code


def test_meta_refresh_is_not_carried_into_the_document(served, tmp_path):
    html = """<html><head><meta http-equiv="refresh" content="5;url=http://127.0.0.1:9/"></head>
      <body><p>Stay</p></body></html>"""
    res = render(served, tmp_path, "refresh.html", html)
    code, verdict = pair(res)
    assert "http-equiv" not in code.capture.html and code.requests == 0
    assert isinstance(verdict, ui_code.Similarity)


@pytest.mark.parametrize("dsf", [1, 2, 3])
def test_pairs_keep_the_viewport_and_device_scale_factor(served, tmp_path, dsf):
    write_assets(tmp_path)
    res = render(served, tmp_path, "styled.html", STYLED, width=480, height=320, device_scale_factor=dsf)
    code, verdict = pair(res)
    assert Image.open(io.BytesIO(code.png)).size == (480 * dsf, 320 * dsf) == (res.page.width, res.page.height)
    assert isinstance(verdict, ui_code.Similarity) and verdict.score >= 0.95, verdict


def test_the_same_page_gives_the_same_document_and_similarity(served, tmp_path):
    write_assets(tmp_path)
    a = pair(render(served, tmp_path, "styled.html", STYLED))
    b = pair(render(served, tmp_path, "styled.html", STYLED))
    assert a[0].capture.html == b[0].capture.html and a[1] == b[1]
    assert not re.search(r":\d{4,5}/", a[0].capture.html)  # no loopback port anywhere


@pytest.mark.parametrize("html, reason", [
    ("<html><body><p>fine</p></body></html>", None),
    ('<html><body><p>text that says src="x" and url(y) and onload=1</p></body></html>', None),
    ("<html><body><script>x</script></body></html>", "a <script> element"),
    ('<html><body><p onclick="x()">a</p></body></html>', "event-handler"),
    ('<html><body><a href="javascript:alert(1)">a</a></body></html>', "javascript: URL"),
    ('<html><body><img src="http://x/a.png"></body></html>', "src that is not a data: URI"),
    ('<html><head><style>.a{background:url("http://x/a.png")}</style></head></html>', "url() that is not"),
    ('<html><head><style>@import "x.css";</style></head></html>', "@import"),
    ('<html><head><meta http-equiv="refresh" content="0"></head></html>', "http-equiv"),
    ('<html><body><iframe></iframe></body></html>', "<iframe>"),
])
def test_unsafe_reason(html, reason):
    got = ui_code.unsafe_reason(html)
    assert (got is None) if reason is None else (reason in got), got


def _png(color, size=(64, 48), box=None):
    img = Image.new("RGB", size, color)
    if box:
        img.paste((0, 0, 0), box)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_similarity_is_one_for_equal_images_and_low_for_missing_content():
    page = _png((255, 255, 255), box=(8, 8, 56, 20))
    assert ui_code.similarity(page, page) == ui_code.Similarity(1.0, 1.0, 1.0)
    blank = ui_code.similarity(page, _png((255, 255, 255)))
    assert blank.score < 0.95 and blank.ssim < 0.95
    moved = ui_code.similarity(page, _png((255, 255, 255), box=(10, 10, 58, 22)))
    assert moved.score < 0.95
    assert ui_code.similarity(page, _png((255, 255, 255), size=(32, 48))).score == 0.0  # other size


@pytest.mark.parametrize("elements, depth, tier", [
    (10, 3, "very_easy"), (49, 9, "very_easy"), (50, 3, "easy"), (10, 10, "easy"), (200, 12, "hard"),
    (500, 5, "hard"), (1200, 3, "very_hard"), (100, 20, "hard"), (2000, 30, "very_hard"),
])
def test_code_tier(elements, depth, tier):
    assert ui_code.code_tier(elements, depth) == tier


def test_watch_and_serialise_scripts_are_plain_functions():
    # evaluated by Playwright as function expressions
    assert ui_code.WATCH_JS.startswith("(key) =>") and ui_code.SERIALIZE_JS.startswith("(opts) =>")
    assert asyncio.iscoroutinefunction(ui_code.capture) and asyncio.iscoroutinefunction(ui_code.rerender)
