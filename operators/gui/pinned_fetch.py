"""HTTP(S) fetches that connect only to addresses the page's AddressGuard already checked.

Why not let the browser (or Playwright's `route.fetch`) make the request: both resolve the host
name again, and a DNS answer that changes between the check and the connection (DNS rebinding:
first a public address, then 127.0.0.1) would reach the crawler's own network. Here aiohttp asks
`PinnedResolver` for addresses, and it answers only from the guard's cache, so the connection goes
to exactly the address that was classified. TLS still verifies the certificate against the host
name (aiohttp passes the name for SNI and hostname checking).

Bodies are read up to `max_bytes` (after decompression, so a gzip bomb stops there too).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Optional

import aiohttp
from aiohttp.abc import AbstractResolver

from quarry.operators.gui.netguard import AddressGuard

# Not forwarded: they describe the connection, not the resource; aiohttp sets its own.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding"})
# Not handed back to the browser: the body it gets is already decoded and complete.
DECODED = frozenset({"content-encoding", "content-length", "transfer-encoding", "connection", "keep-alive"})


class PinnedResolver(AbstractResolver):
    """Resolves only names the guard has resolved and allowed for this page; never asks DNS itself."""

    def __init__(self, guard: AddressGuard):
        self.guard = guard

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        addrs = self.guard.pinned(host, port)
        if not addrs:
            raise OSError(f"{host}:{port} was not checked by the address guard")
        return [{"hostname": host, "host": a, "port": port, "proto": 0, "flags": socket.AI_NUMERICHOST,
                 "family": socket.AF_INET6 if ":" in a else socket.AF_INET} for a in addrs]

    async def close(self) -> None:
        return None


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]  # Set-Cookie values joined by newlines (Playwright's convention)
    body: bytes
    too_large: bool = False


def pinned_session(guard: AddressGuard, timeout_s: float) -> aiohttp.ClientSession:
    """One session per page: its connections were opened to that page's checked addresses only."""
    connector = aiohttp.TCPConnector(resolver=PinnedResolver(guard), use_dns_cache=False, limit_per_host=6)
    return aiohttp.ClientSession(connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                                 timeout=aiohttp.ClientTimeout(total=timeout_s))


async def fetch_pinned(session: aiohttp.ClientSession, url: str, method: str, headers: dict[str, str],
                       body: Optional[bytes], max_bytes: int) -> Fetched:
    """One request, no redirects followed (the caller checks each hop). Raises aiohttp.ClientError/OSError."""
    send = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP and not k.startswith(":")}
    async with session.request(method, url, headers=send, data=body, allow_redirects=False) as resp:
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                break
        data = b"".join(chunks)
        out: dict[str, str] = {}
        for k, v in resp.headers.items():
            key = k.lower()
            if key in DECODED:
                continue
            out[key] = f"{out[key]}\n{v}" if key in out else v
        return Fetched(resp.status, out, data[:max_bytes], too_large=len(data) > max_bytes)
