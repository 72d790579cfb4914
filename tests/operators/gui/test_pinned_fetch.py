"""The page fetcher connects only to checked addresses and bounds what it reads (a real local server)."""

from __future__ import annotations

import asyncio
import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import pytest

from quarry.operators.gui.netguard import AddressGuard
from quarry.operators.gui.pinned_fetch import fetch_pinned, pinned_session

BOMB = gzip.compress(b"\0" * (8 << 20))  # 8 MiB of zeros in ~8 KB


@pytest.fixture(scope="module")
def server():
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append({"path": self.path, "headers": dict(self.headers)})
            if self.path == "/bomb":
                body, extra = BOMB, [("Content-Encoding", "gzip")]
            else:
                body, extra = b"<p>hello</p>", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            for k, v in extra:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], seen
    httpd.shutdown()
    httpd.server_close()


def _fetch(guard: AddressGuard, url: str, max_bytes: int = 1 << 20, headers=None):
    async def go():
        async with pinned_session(guard, 5) as session:
            return await fetch_pinned(session, url, "GET", headers or {}, None, max_bytes)
    return asyncio.run(go())


def _guard_for(host: str, port: int, answer: str) -> AddressGuard:
    guard = AddressGuard(f"http://{host}:{port}", lambda h, p: [answer] if h == host else [])
    assert guard.check(f"http://{host}:{port}/").allowed
    return guard


def test_a_checked_name_is_fetched_from_its_checked_address(server):
    port, seen = server
    got = _fetch(_guard_for("site.test", port, "127.0.0.1"), f"http://site.test:{port}/page",
                 headers={"Accept-Encoding": "br", "Host": "evil", "User-Agent": "quarry-test", "Cookie": "c=1"})
    assert got.status == 200 and got.body == b"<p>hello</p>" and not got.too_large
    assert got.headers["set-cookie"] == "a=1\nb=2" and "content-length" not in got.headers
    sent = seen[-1]["headers"]
    assert sent["Host"] == f"site.test:{port}" and sent["User-Agent"] == "quarry-test" and sent["Cookie"] == "c=1"


def test_an_unchecked_name_is_never_resolved(server):
    port, _ = server
    guard = AddressGuard(None, lambda h, p: pytest.fail("the fetcher must not resolve"))
    with pytest.raises((aiohttp.ClientError, OSError)):
        _fetch(guard, f"http://unchecked.test:{port}/page")


def test_a_compressed_body_stops_at_the_limit_after_decompression(server):
    port, _ = server
    got = _fetch(_guard_for("site.test", port, "127.0.0.1"), f"http://site.test:{port}/bomb", max_bytes=64 << 10)
    assert got.too_large and len(got.body) == 64 << 10
    assert "content-encoding" not in got.headers  # the browser gets the decoded bytes
