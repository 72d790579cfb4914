"""The renderer on hostile and broken pages (real Chromium): SSRF guard, timeouts, crashes, caps."""

from __future__ import annotations

import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from quarry.operators.gui import browser as browser_mod
from quarry.operators.gui.browser import (
    CHROMIUM_CANDIDATES,
    DISABLED_FEATURES,
    BrowserLaunchError,
    BrowserRenderer,
    PageJob,
    RendererSettings,
    find_chromium,
)


class Site:
    """A loopback HTTP server answering from a table path -> (status, content type, body, headers)."""

    def __init__(self, routes=None, host="127.0.0.1"):
        self.routes = routes or {}
        self.delays: dict[str, float] = {}  # path -> seconds before answering (a slow server)
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                site.hits.append(self.path)
                time.sleep(site.delays.get(self.path.split("?")[0], 0))
                status, ctype, body, headers = site.routes.get(self.path.split("?")[0],
                                                               (404, "text/plain", b"missing", {}))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_POST = do_GET

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def html(self, path, body, status=200, headers=None):
        self.routes[path] = (status, "text/html", body.encode(), headers or {})

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def sites():
    page, victim = Site(), Site()
    page.html("/hang.html", "<html><body><p>hang</p><script>for(;;){}</script></body></html>")
    # used by several tests: registered here, since pytest-xdist may run any one of them alone
    page.html("/fine.html", "<html><body><button>Fine</button></body></html>")
    yield page, victim
    page.close()
    victim.close()


@pytest.fixture(scope="module")
def renderer():
    r = BrowserRenderer(RendererSettings(timeout_s=3, extract_timeout_s=2, settle="networkidle",
                                         pages_in_flight=4, max_elements=50)).start()
    yield r
    r.close()


def job(url, **kw):
    return PageJob(url, 800, 600, allow_private=True, **kw)


def test_unsafe_requests_never_reach_their_targets(sites, renderer):
    page, victim = sites
    v = victim.base
    page.routes["/redirect-away.png"] = (302, "text/plain", b"", {"Location": f"{v}/via-redirect"})
    page.html("/ssrf.html", f"""<html><body><h1>Hello</h1>
      <img src="{v}/img.png" alt="x"><img src="/redirect-away.png" alt="y">
      <img src="http://169.254.169.254/latest/meta-data/" alt="z">
      <link rel="stylesheet" href="{v}/style.css"><iframe src="{v}/frame.html"></iframe>
      <script>fetch("{v}/fetch").catch(() => {{}}); fetch("file:///etc/passwd").catch(() => {{}});
              navigator.sendBeacon("{v}/beacon", "x");</script></body></html>""")
    result = renderer.render(job(page.base + "/ssrf.html"))
    time.sleep(0.3)
    assert victim.hits == []
    assert result.rejection is None and result.page is not None  # the page itself renders
    reasons = [r for r, _ in result.blocked]
    assert reasons.count("loopback") >= 5 and "metadata" in reasons
    assert any(u.endswith("/via-redirect") for _, u in result.blocked)


def test_same_origin_assets_load(sites, renderer):
    page, _ = sites
    page.routes["/logo.svg"] = (200, "image/svg+xml",
                                b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"/>', {})
    page.html("/own.html", '<html><body><img src="/logo.svg" alt="Logo" width="40" height="40"></body></html>')
    result = renderer.render(job(page.base + "/own.html"))
    assert result.blocked == [] and "/logo.svg" in page.hits
    assert [e.name for e in result.page.elements.elements] == ["Logo"]


def test_redirect_of_the_page_to_a_blocked_address_is_a_reject(sites, renderer):
    page, victim = sites
    page.routes["/go"] = (302, "text/plain", b"", {"Location": f"{victim.base}/admin"})
    result = renderer.render(job(page.base + "/go"))
    assert result.rejection.reason == "blocked_redirect"
    assert victim.hits == []


def test_private_input_urls_are_refused_unless_allowed(sites, renderer):
    page, _ = sites
    result = renderer.render(PageJob(page.base + "/own.html", allow_private=False))
    assert result.rejection.reason == "blocked_address"


def test_http_errors_and_non_html(sites, renderer):
    page, _ = sites
    page.routes["/pic.png"] = (200, "image/png", b"\x89PNG\r\n\x1a\n" + b"\0" * 32, {})
    page.html("/broken", "<h1>oops</h1>", status=503)
    missing, down, image = renderer.render_many([job(page.base + "/nothing-here"), job(page.base + "/broken"),
                                                 job(page.base + "/pic.png")])
    assert (missing.rejection.reason, missing.rejection.detail) == ("http_error", "HTTP 404")
    assert down.rejection.detail == "HTTP 503"
    assert image.rejection.reason == "not_html"


def test_pages_that_never_settle_time_out_in_bounded_time(sites, renderer):
    page, _ = sites
    page.html("/loop.html", "<html><body><p>spin</p><script>for(;;){}</script></body></html>")
    page.html("/late-loop.html", "<html><body><p>spin later</p><script>setTimeout(()=>{for(;;){}},1)</script></body></html>")
    page.html("/chatty.html", "<html><body><p>poll</p><script>setInterval(()=>fetch('/own.html?'+Math.random()),100)"
                              "</script></body></html>")
    t0 = time.monotonic()
    results = renderer.render_many([job(page.base + p) for p in ("/loop.html", "/late-loop.html", "/chatty.html",
                                                                  "/fine.html")])
    elapsed = time.monotonic() - t0
    assert [r.rejection.reason if r.rejection else "ok" for r in results] == \
        ["render_timeout", "render_timeout", "render_timeout", "ok"]
    assert elapsed < 3 + 2 + 5  # navigation budget + extraction budget + slack, all four in parallel
    assert renderer.render(job(page.base + "/fine.html")).page is not None  # the worker goes on


def test_dialogs_and_popups_do_not_block(sites, renderer):
    page, _ = sites
    page.html("/rude.html", "<html><body><button>Still here</button><script>alert('hi'); confirm('sure?');"
                            "window.open('/own.html');</script></body></html>")
    result = renderer.render(job(page.base + "/rude.html"))
    assert [e.name for e in result.page.elements.elements] == ["Still here"]


def test_huge_dom_is_capped_and_keeps_the_screenshot(sites, renderer):
    page, _ = sites
    buttons = "".join(f"<button>b{i}</button>" for i in range(3000))
    page.html("/huge.html", f"<html><body>{buttons}</body></html>")
    result = renderer.render(job(page.base + "/huge.html"))
    assert result.page.elements.capped and len(result.page.elements.elements) == 50
    assert result.page.png[:4] == b"\x89PNG" and result.page.width == 800


def _our_chromium(kind: str) -> list[int]:
    """Chromium processes below this test process: kind "renderer" or "browser" (the main process)."""
    me, out = os.getpid(), []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = open(f"/proc/{d}/cmdline", "rb").read()
        except OSError:
            continue
        # Chromium's child processes rewrite their argv into one space-separated string.
        argv0 = raw.split(b" ")[0].split(b"\0")[0]
        if b"chrom" not in argv0 or b"crashpad" in argv0:
            continue
        if (kind == "renderer") != (b"--type=renderer" in raw) or (kind == "browser" and b"--type=" in raw):
            continue
        pid = int(d)
        while pid > 1:
            try:
                pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                break
            if pid == me:
                out.append(int(d))
                break
    return out


def _kill_once_requested(kind: str, site: Site, path: str) -> threading.Thread:
    """Kill our Chromium processes of `kind` shortly after `site` served `path` (the page is then running)."""
    seen = site.hits.count(path)

    def kill():
        deadline = time.monotonic() + 15
        while site.hits.count(path) == seen and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        for pid in _our_chromium(kind):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    t = threading.Thread(target=kill)
    t.start()
    return t


def test_renderer_crash_is_a_reject_and_the_next_page_renders(sites):
    page, _ = sites
    r = BrowserRenderer(RendererSettings(timeout_s=20, extract_timeout_s=5)).start()
    try:
        killer = _kill_once_requested("renderer", page, "/hang.html")
        t0 = time.monotonic()
        result = r.render(job(page.base + "/hang.html"))
        killer.join()
        assert result.rejection.reason == "render_crash" and time.monotonic() - t0 < 10
        assert r.render(job(page.base + "/fine.html")).page is not None
    finally:
        r.close()


def test_browser_crash_is_a_reject_and_the_browser_restarts(sites):
    page, _ = sites
    r = BrowserRenderer(RendererSettings(timeout_s=20, extract_timeout_s=5)).start()
    try:
        killer = _kill_once_requested("browser", page, "/hang.html")
        result = r.render(job(page.base + "/hang.html"))
        killer.join()
        assert result.rejection.reason == "render_crash"
        after = r.render(job(page.base + "/fine.html"))
        assert after.page is not None and r.launches == 2
    finally:
        r.close()


def test_downloads_are_refused(sites, renderer):
    page, _ = sites
    page.routes["/report.bin"] = (200, "application/octet-stream", b"\0" * 64,
                                  {"Content-Disposition": "attachment; filename=report.bin"})
    result = renderer.render(job(page.base + "/report.bin"))
    assert result.page is None and result.rejection.reason in ("navigation_error", "not_html")


def test_file_pages_load_their_folder_but_no_other_local_file(tmp_path, renderer):
    (tmp_path / "logo.svg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg" width="30" height="30"/>')
    (tmp_path / "page.html").write_text(
        '<html><body><img src="logo.svg" alt="Local logo" width="30" height="30">'
        '<iframe src="file:///etc/hostname"></iframe><img src="file:///etc/passwd" alt="x"></body></html>')
    result = renderer.render(PageJob((tmp_path / "page.html").as_uri(), 800, 600))
    assert result.rejection is None
    assert "Local logo" in [e.name for e in result.page.elements.elements]
    assert ("file_access", "file:///etc/passwd") in result.blocked


def test_served_folders_reach_their_own_server_only(tmp_path, sites, renderer):
    from quarry.operators.gui.browser import HtmlFolderServer, local_read

    _, victim = sites
    (tmp_path / "style.css").write_text("h1 { color: red }")
    (tmp_path / "page.html").write_text(
        f'<html><head><link rel="stylesheet" href="style.css"></head><body><h1>Served</h1>'
        f'<img src="{victim.base}/from-served.png" alt="x"><script>fetch("{victim.base}/from-served")</script>'
        f'</body></html>')
    server = HtmlFolderServer(local_read)
    try:
        result = renderer.render(PageJob(server.url_for(str(tmp_path), "page.html"), 800, 600, allow_private=True,
                                         trusted_origin=True))
    finally:
        server.close()
    time.sleep(0.2)
    assert result.rejection is None and server.requests == 2  # the page and its stylesheet
    assert [r for r, _ in result.blocked] == ["loopback", "loopback"]
    assert not [h for h in victim.hits if "from-served" in h]


def test_served_folders_load_public_assets_through_the_guard_proxy(tmp_path, sites, monkeypatch):
    """No interception for a served folder: other origins go through its page's guard proxy, which lets
    public ones out (to the address it checked, once) and refuses private ones, WebSockets included."""
    import socket

    from quarry.operators.gui import netguard
    from quarry.operators.gui.browser import HtmlFolderServer, local_read

    cdn = Site(host="127.0.0.2")  # stands for a public CDN: the classifier is told so
    real = netguard.classify
    monkeypatch.setattr(netguard, "classify", lambda a: None if str(a) == "127.0.0.2" else real(a))
    cdn.routes["/logo.svg"] = (200, "image/svg+xml",
                               b'<svg xmlns="http://www.w3.org/2000/svg" width="30" height="30"/>', {})
    port = cdn.base.rsplit(":", 1)[1]
    calls = []

    def resolver(host, p):
        calls.append(host)
        return ["127.0.0.2"] if calls.count(host) == 1 else ["127.0.0.1"]  # a rebinding answer second time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    (tmp_path / "page.html").write_text(
        f'<html><body><img src="http://cdn.test:{port}/logo.svg" alt="CDN logo" width="30" height="30">'
        f'<script>fetch("http://cdn.test:{port}/again").catch(() => null);'
        f'new WebSocket("ws://127.0.0.1:{listener.getsockname()[1]}/");'
        f'fetch("{sites[1].base}/from-folder").catch(() => null);</script></body></html>')
    server = HtmlFolderServer(local_read)
    r = BrowserRenderer(RendererSettings(timeout_s=10, extract_timeout_s=5), resolver=resolver).start()
    try:
        result = r.render(PageJob(server.url_for(str(tmp_path), "page.html"), 800, 600, allow_private=True,
                                  trusted_origin=True))
        try:
            listener.accept()[0].close()
            accepted = 1
        except socket.timeout:
            accepted = 0
    finally:
        r.close()
        server.close()
        cdn.close()
        listener.close()
    assert result.rejection is None and "CDN logo" in [e.name for e in result.page.elements.elements]
    assert sorted(cdn.hits) == ["/again", "/logo.svg"] and calls == ["cdn.test"]
    assert accepted == 0 and not [h for h in sites[1].hits if "from-folder" in h]
    assert sorted(u.rsplit(":", 1)[0] for reason, u in result.blocked if reason == "loopback") == [
        "http://127.0.0.1", "https://127.0.0.1"]  # the fetch, and the WebSocket's CONNECT


class _CountingResolver:
    """`rebind.test` answers 127.0.0.1 once, then 127.0.0.2 (where nothing listens): a DNS rebinding."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host == "rebind.test":
            return ["127.0.0.1"] if self.calls.count(host) == 1 else ["127.0.0.2"]
        raise OSError(f"unknown test host {host}")


def test_a_name_is_resolved_once_per_page_and_requests_go_to_that_address(sites):
    page, _ = sites
    page.routes["/pinned.png"] = (200, "image/svg+xml",
                                  b'<svg xmlns="http://www.w3.org/2000/svg" width="30" height="30"/>', {})
    page.html("/rebind.html", '<html><body><img src="/pinned.png" alt="Pinned" width="30" height="30">'
                              '<script>fetch("/pinned.png?again")</script></body></html>')
    port = page.base.rsplit(":", 1)[1]
    resolver = _CountingResolver()
    r = BrowserRenderer(RendererSettings(timeout_s=5, extract_timeout_s=3), resolver=resolver).start()
    try:
        result = r.render(job(f"http://rebind.test:{port}/rebind.html"))
    finally:
        r.close()
    assert result.rejection is None, result.rejection
    assert resolver.calls == ["rebind.test"]  # neither Chromium nor the fetcher asked DNS again
    assert "Pinned" in [e.name for e in result.page.elements.elements]
    assert "/pinned.png" in page.hits and "/pinned.png?again" in page.hits  # served by the checked address


def test_websockets_cannot_reach_loopback(sites, renderer):
    """WebSockets bypass route handlers; the dead-end proxy refuses them before a connection is made."""
    import socket

    page, _ = sites
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    page.html("/ws.html", f'<html><body><p id="s">pending</p><script>'
                          f'const ws = new WebSocket("ws://127.0.0.1:{port}/");'
                          f'ws.onerror = () => {{ s.textContent = "socket failed"; }};</script></body></html>')
    try:
        result = renderer.render(job(page.base + "/ws.html"))
        accepted = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
                accepted += 1
                conn.close()
            except socket.timeout:
                pass
    finally:
        listener.close()
    assert result.rejection is None
    assert accepted == 0
    assert "socket failed" in [e.name for e in result.page.elements.elements]


def test_permission_prompts_are_refused(sites, renderer):
    page, _ = sites
    page.html("/ask.html", """<html><body><p id="n">notify pending</p><p id="g">geo pending</p><p id="c">cam pending</p>
      <script>
        Notification.requestPermission().then((p) => { n.textContent = "notify " + p; });
        navigator.geolocation.getCurrentPosition(() => { g.textContent = "geo granted"; },
                                                 (e) => { g.textContent = "geo refused"; });
        navigator.mediaDevices.getUserMedia({video: true}).then(() => { c.textContent = "cam granted"; },
                                                                 () => { c.textContent = "cam refused"; });
      </script></body></html>""")
    result = renderer.render(job(page.base + "/ask.html"))
    names = [e.name for e in result.page.elements.elements]
    assert not [n for n in names if "granted" in n], names
    assert "geo refused" in names and "cam refused" in names, names


def test_our_disabled_features_keep_playwrights_own(sites, renderer):
    """Chromium keeps only the last --disable-features: ours must still hold every one Playwright passes."""
    renderer.render(job(sites[0].base + "/fine.html"))
    pids = _our_chromium("browser")
    assert pids
    argv = open(f"/proc/{pids[0]}/cmdline", "rb").read().decode().split("\0")
    lists = [a.split("=", 1)[1].split(",") for a in argv if a.startswith("--disable-features=")]
    assert lists[-1] == list(DISABLED_FEATURES)
    missing = set().union(*map(set, lists[:-1])) - set(lists[-1])
    assert not missing, f"Playwright now also disables {sorted(missing)}: add them to PLAYWRIGHT_DISABLED_FEATURES"


def test_find_chromium_takes_the_first_installed_candidate(tmp_path, monkeypatch):
    shell, full = tmp_path / "chromium-headless-shell", tmp_path / "chromium"
    monkeypatch.setattr(browser_mod, "CHROMIUM_CANDIDATES", (str(shell), str(full)))
    with pytest.raises(BrowserLaunchError, match="none of .*chromium-headless-shell"):
        find_chromium("auto")
    full.write_bytes(b"")
    assert find_chromium("auto") == str(full)
    shell.write_bytes(b"")
    assert find_chromium("auto") == str(shell)
    assert find_chromium(None) is None  # Playwright's own browser
    assert find_chromium(str(full)) == str(full)
    with pytest.raises(BrowserLaunchError, match="nope does not exist.*apt-get install"):
        find_chromium(str(tmp_path / "nope"))


@pytest.mark.parametrize("executable", [c for c in CHROMIUM_CANDIDATES if os.path.exists(c)])
def test_every_installed_chromium_renders_the_same_elements(sites, executable):
    """The headless shell (the default) and the full browser both work, and find the same elements."""
    page, _ = sites
    page.html("/both.html", '<html><body><a href="#x">Docs</a><input placeholder="Search" style="width:200px">'
                            '<button>Go</button><p style="opacity:0">hidden</p></body></html>')
    r = BrowserRenderer(RendererSettings(executable_path=executable, timeout_s=10, settle="load")).start()
    try:
        result = r.render(job(page.base + "/both.html"))
    finally:
        r.close()
    assert result.rejection is None and result.page.width == 800
    assert [(e.tag, e.name) for e in result.page.elements.elements] == [("a", "Docs"), ("input", "Search"),
                                                                        ("button", "Go")]
