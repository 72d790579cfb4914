"""A per-page forward proxy on loopback that lets requests out only through the page's AddressGuard.

Used for pages of a served folder (`HtmlFolderServer`): their own origin is ours, so the browser
fetches it directly, and everything else the page asks for (a CDN font, a tracking pixel, a
`fetch()` to 127.0.0.1:6379) is sent by Chromium to this proxy (the context's proxy setting, with
only the folder's origin bypassing it). Why not Playwright's request interception, as for web
pages: with a route installed Chromium pauses *every* request, own-origin ones included, for a
round trip through Playwright's driver; on the benchmark corpus that was ~8% of the CPU per page
and ~10% of the throughput, for pages whose requests are nearly all to their own origin.

For each request: `CONNECT host:port` (https, wss) or an absolute-form `GET http://...` is checked
by the guard; a refused one is answered 403, recorded in `blocked`, and never leaves. An allowed
one goes only to the addresses the guard resolved and classified (no second DNS lookup, so no
rebinding): tunnels connect to them, plain http is fetched by `pinned_fetch` (body capped after
decompression). Chromium follows redirects itself, so each hop comes back here and is checked.
Tunnels carry at most `max_bytes` from upstream; everything is closed with the page.
"""

from __future__ import annotations

import asyncio
import contextlib
from http import HTTPStatus
from typing import Callable, Optional

import aiohttp

from quarry.operators.gui.netguard import AddressGuard
from quarry.operators.gui.pinned_fetch import fetch_pinned

MAX_HEAD = 64 * 1024


class GuardProxy:
    """`await start()` gives the port; `await close()` ends every connection. One per page."""

    def __init__(self, guard: AddressGuard, blocked: list[tuple[str, str]],
                 session: Callable[[], aiohttp.ClientSession], timeout_s: float, max_bytes: int):
        self.guard = guard
        self.blocked = blocked
        self.session = session  # the page's pinned aiohttp session, opened on first use
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._server: Optional[asyncio.AbstractServer] = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0, limit=MAX_HEAD)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        # CancelledError: the page is done (close()); asyncio would log a cancelled handler
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError,
                ValueError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request from Chromium; True when the connection may carry another."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout_s)
        except asyncio.IncompleteReadError:
            return False  # Chromium closed an idle keep-alive connection
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip()] = v.strip()
        if method == "CONNECT":
            await self._tunnel(target, reader, writer)
            return False
        if not target.startswith("http://"):
            await _reply(writer, 400)
            return False
        verdict = await self.guard.acheck(target)
        if not verdict.allowed:
            self.blocked.append((verdict.reason or "", target[:500]))
            await _reply(writer, 403)
            return True
        length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
        body = await asyncio.wait_for(reader.readexactly(length), self.timeout_s) if length else None
        try:
            fetched = await fetch_pinned(self.session(), target, method, headers, body, self.max_bytes)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            await _reply(writer, 502)
            return True
        if fetched.too_large:
            return False  # cut off: the browser sees a failed request
        out = [(k, v) for k, vs in fetched.headers.items() for v in vs.split("\n")]
        await _reply(writer, fetched.status, out, fetched.body)
        return True

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port_text = target.rpartition(":")
        if not host or not port_text.isdigit():
            await _reply(writer, 400)
            return
        port = int(port_text)
        # The scheme only picks the default port; the guard decides on host and port.
        url = f"https://{host}:{port}/"
        verdict = await self.guard.acheck(url)
        if not verdict.allowed:
            self.blocked.append((verdict.reason or "", url[:500]))
            await _reply(writer, 403)
            return
        upstream = None
        for address in self.guard.pinned(host, port):
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                upstream = await asyncio.wait_for(asyncio.open_connection(address, port), self.timeout_s)
                break
        if upstream is None:
            await _reply(writer, 502)
            return
        up_reader, up_writer = upstream
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, up_writer, None), _pipe(up_reader, writer, self.max_bytes))
        finally:
            up_writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, cap: Optional[int]) -> None:
    sent = 0
    try:
        while chunk := await src.read(1 << 16):
            sent += len(chunk)
            if cap is not None and sent > cap:
                break
            dst.write(chunk)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            dst.close()


async def _reply(writer: asyncio.StreamWriter, status: int, headers: list[tuple[str, str]] = (),
                 body: bytes = b"") -> None:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
