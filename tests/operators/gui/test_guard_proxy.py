"""The served-folder proxy: only checked requests leave, only to checked addresses (real sockets)."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from quarry.operators.gui import netguard
from quarry.operators.gui.guard_proxy import GuardProxy
from quarry.operators.gui.netguard import AddressGuard
from quarry.operators.gui.pinned_fetch import pinned_session

# 127.0.0.2 stands for a public CDN address here: the tests patch the classifier to call it public.
CDN = "127.0.0.2"


@pytest.fixture
def cdn_is_public(monkeypatch):
    real = netguard.classify
    monkeypatch.setattr(netguard, "classify", lambda a: None if str(a) == CDN else real(a))


@pytest.fixture(scope="module")
def upstream():
    """An HTTP server on 127.0.0.2 (the 'CDN') that records what reaches it."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            body = b"x" * 300_000 if self.path == "/big" else b"font bytes"
            self.send_response(302 if self.path == "/hop" else 200)
            if self.path == "/hop":
                self.send_header("Location", "http://127.0.0.1:9/private")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer((CDN, 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], hits
    httpd.shutdown()
    httpd.server_close()


class Resolver:
    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, host, port):
        self.calls.append(host)
        if host == "cdn.test":  # a rebinding answer after the first: the proxy must never ask again
            return [CDN] if self.calls.count(host) == 1 else ["127.0.0.1"]
        raise OSError(f"unknown host {host}")


def _complete(data: bytes) -> bool:
    """A whole response is in (its head and Content-Length bytes); the proxy keeps connections open."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    return len(body) >= (length[0] if length else 0)


async def _through_proxy(requests: list[bytes], max_bytes: int = 1 << 20, read_limit: int = 1 << 21):
    """Send raw requests to a fresh proxy, one connection each; return (answers, blocked, resolver calls)."""
    resolver, blocked = Resolver(), []
    guard = AddressGuard("http://folder.test:1", resolver)
    sessions = []

    def session():
        if not sessions:
            sessions.append(pinned_session(guard, 5))
        return sessions[0]

    proxy = GuardProxy(guard, blocked, session, 5, max_bytes)
    port = await proxy.start()
    answers = []
    try:
        for raw in requests:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            try:
                await writer.drain()
            except ConnectionError:  # the proxy hung up on an oversized head
                pass
            data = b""
            try:
                while len(data) < read_limit:
                    chunk = await asyncio.wait_for(reader.read(1 << 16), 3)
                    if not chunk:
                        break
                    data += chunk
                    if _complete(data):
                        break
            except (asyncio.TimeoutError, ConnectionError):
                pass
            answers.append((data, reader, writer))
    finally:
        for _, _, w in answers:
            w.close()
        await proxy.close()
        for s in sessions:
            await s.close()
    return [a for a, _, _ in answers], blocked, resolver.calls


def test_private_targets_are_refused_before_any_connection(upstream):
    answers, blocked, _ = asyncio.run(_through_proxy([
        b"GET http://127.0.0.1:6379/ HTTP/1.1\r\nHost: 127.0.0.1:6379\r\n\r\n",
        b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
        b"CONNECT 10.0.0.5:443 HTTP/1.1\r\nHost: 10.0.0.5:443\r\n\r\n",
        b"CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    ]))
    assert all(a.startswith(b"HTTP/1.1 403") for a in answers), answers
    assert [r for r, _ in blocked] == ["loopback", "metadata", "private", "loopback"]


def test_allowed_requests_go_to_the_checked_address_only(upstream, cdn_is_public):
    port, hits = upstream
    answers, blocked, calls = asyncio.run(_through_proxy([
        f"GET http://cdn.test:{port}/font.woff HTTP/1.1\r\nHost: cdn.test:{port}\r\nProxy-Connection: keep-alive\r\n\r\n"
        .encode(),
        f"GET http://cdn.test:{port}/again HTTP/1.1\r\nHost: cdn.test:{port}\r\n\r\n".encode(),
    ]))
    assert answers[0].startswith(b"HTTP/1.1 200") and answers[0].endswith(b"font bytes")
    assert answers[1].endswith(b"font bytes") and hits[-2:] == ["/font.woff", "/again"]
    assert calls == ["cdn.test"] and blocked == []  # resolved once: the rebinding answer was never asked for


def test_redirects_go_back_to_the_browser_and_each_hop_is_checked(upstream, cdn_is_public):
    port, _ = upstream
    answers, blocked, _ = asyncio.run(_through_proxy([
        f"GET http://cdn.test:{port}/hop HTTP/1.1\r\nHost: cdn.test:{port}\r\n\r\n".encode(),
        b"GET http://127.0.0.1:9/private HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n",  # what Chromium sends next
    ]))
    assert answers[0].startswith(b"HTTP/1.1 302") and b"location: http://127.0.0.1:9/private" in answers[0].lower()
    assert answers[1].startswith(b"HTTP/1.1 403") and blocked == [("loopback", "http://127.0.0.1:9/private")]


def test_tunnels_reach_checked_addresses_and_stop_at_the_byte_cap(upstream, cdn_is_public):
    port, hits = upstream

    async def go():
        resolver, blocked = Resolver(), []
        guard = AddressGuard(None, resolver)
        proxy = GuardProxy(guard, blocked, lambda: None, 5, 100_000)
        proxy_port = await proxy.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        writer.write(f"CONNECT cdn.test:{port} HTTP/1.1\r\nHost: cdn.test:{port}\r\n\r\n".encode())
        opened = await reader.readuntil(b"\r\n\r\n")
        writer.write(f"GET /big HTTP/1.1\r\nHost: cdn.test:{port}\r\n\r\n".encode())  # inside the tunnel
        got = b""
        while chunk := await asyncio.wait_for(reader.read(1 << 16), 5):
            got += chunk
        writer.close()
        await proxy.close()
        return opened, got, resolver.calls

    opened, got, calls = asyncio.run(go())
    assert opened.startswith(b"HTTP/1.1 200") and hits[-1] == "/big" and calls == ["cdn.test"]
    assert 0 < len(got) <= 100_000  # the 300 kB body was cut at the cap and the tunnel closed


def test_garbage_and_silence_end_the_connection_without_harm():
    answers, blocked, _ = asyncio.run(_through_proxy([
        b"junk\r\n\r\n",
        b"\x16\x03\x01 not http\r\n\r\n",
        b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT nohost HTTP/1.1\r\n\r\n",
        b"GET http://a" + b"a" * 70_000,  # a head longer than the limit, never finished
    ]))
    assert answers[0] == b"" and answers[-1] == b""
    assert all(a.startswith(b"HTTP/1.1 400") for a in answers[1:4]) and blocked == []
