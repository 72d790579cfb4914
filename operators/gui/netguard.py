"""Which requests a rendered page may send: address classification and DNS resolution.

A page may load from public addresses and from its own origin. Anything
else that resolves to loopback, private (RFC 1918, unique-local IPv6, CGNAT),
link-local, cloud-metadata, multicast, reserved or unspecified addresses is
refused before it is sent (SSRF: a crawled page must not reach the crawler's
own network or the cloud metadata service). Only `http`, `https`, `data` and
`blob` URLs are allowed; `file:` only inside the page's own folder when the
page itself is a local file.

`AddressGuard.check` resolves names with `getaddrinfo` and refuses a host if
ANY of its addresses is not public (a name that maps to both a public and a
private address is refused). A name that does not resolve is refused too: the
request could not succeed, and refusing it costs nothing. Each name is
resolved once per page and the answer is kept: `pinned()` hands exactly those
addresses to the fetcher (operators/gui/pinned_fetch.py), which connects to them
and never resolves again, so an answer that changes after the check (DNS
rebinding) is never used. `acheck` is the same check for an event loop (the
renderer's): lookups run in a worker thread, so one slow DNS answer does not
stall every page in flight.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable, Optional, Union
from urllib.parse import SplitResult, urlsplit

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Cloud metadata endpoints: AWS/GCP/Azure/OpenStack 169.254.169.254 (link-local
# anyway), AWS IPv6 fd00:ec2::254, Alibaba 100.100.100.200 (CGNAT range),
# Oracle 192.0.0.192.
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192", "169.254.170.2"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")

Resolver = Callable[[str, int], list[str]]


def classify(addr: Union[str, IPAddress]) -> Optional[str]:
    """None for a public address, else why not: metadata, loopback, private, link_local, ..."""
    ip = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
            return classify(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return classify(ip.sixtofour)
    if ip in METADATA:
        return "metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT) or ip.is_private:
        return "private"  # RFC 1918, unique-local, CGNAT, and the special-purpose ranges Python counts as private
    if not ip.is_global:
        return "reserved"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0].split("%", 1)[0] for info in infos})


def origin_of(url: str) -> str:
    """scheme://host:port (ports made explicit), or `file://<folder>/` for a local file."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        folder = parts.path.rsplit("/", 1)[0] + "/"
        return f"file://{folder}"
    port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


@dataclass(frozen=True)
class Verdict:
    """`reason` is None when the request may go."""

    reason: Optional[str]
    detail: str = ""
    addresses: tuple[str, ...] = ()  # what the host resolved to when it was allowed: connect only to these

    @property
    def allowed(self) -> bool:
        return self.reason is None


ALLOW = Verdict(None)


def _host_key(parts: SplitResult) -> tuple[str, int]:
    """(host, port) of an http(s) URL, the guard's cache key; ValueError for a bad port."""
    return parts.hostname.lower(), parts.port or (443 if parts.scheme.lower() == "https" else 80)


class AddressGuard:
    """Decides per request URL; caches resolutions (one guard per page)."""

    def __init__(self, page_origin: Optional[str], resolver: Resolver = system_resolver):
        self.page_origin = page_origin
        self.resolver = resolver
        self._cache: dict[tuple[str, int], Verdict] = {}
        self._pending: dict[tuple[str, int], asyncio.Future] = {}

    def check(self, url: str) -> Verdict:
        early, key, own = self._parse(url)
        if early is not None:
            return early
        if key not in self._cache:
            self._cache[key] = self._resolve_and_classify(*key, classify_addresses=not own)
        return self._cache[key]

    async def acheck(self, url: str) -> Verdict:
        """`check` for an event loop: a name is resolved in a worker thread, so a slow DNS answer stalls
        only the requests that wait for it, not every page in flight; concurrent checks of one name
        share one lookup (still resolved once per page)."""
        early, key, own = self._parse(url)
        if early is not None:
            return early
        if key in self._cache:
            return self._cache[key]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().run_in_executor(
                None, functools.partial(self._resolve_and_classify, *key, classify_addresses=not own))
            self._pending[key] = pending
            pending.add_done_callback(functools.partial(self._resolved, key))
        return await asyncio.shield(pending)  # a waiter that is cancelled leaves the lookup to the others

    def _resolved(self, key: tuple[str, int], done: asyncio.Future) -> None:
        self._pending.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self._cache[key] = done.result()

    def _parse(self, url: str) -> tuple[Optional[Verdict], tuple[str, int], bool]:
        """(a verdict that needs no lookup, or None; the (host, port) to look up; is it the page's own origin)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        none = ("", 0)
        if scheme in ("data", "blob", "about"):
            return ALLOW, none, False
        if scheme == "file":
            if self.page_origin and self.page_origin.startswith("file://") and origin_of(url).startswith(
                    self.page_origin) and ".." not in parts.path.split("/"):
                return ALLOW, none, False
            return Verdict("file_access", "file: URLs outside the page's own folder"), none, False
        if scheme not in ("http", "https"):
            return Verdict("scheme", f"scheme {scheme or '(none)'} is not fetched"), none, False
        if not parts.hostname:
            return Verdict("no_host", url[:200]), none, False
        try:
            key = _host_key(parts)
        except ValueError:
            return Verdict("bad_port", url[:200]), none, False
        # The page's own origin may be anything it was allowed to be (a served folder on loopback,
        # a private input with render.allow_private); it is resolved once all the same, for pinning.
        own = self.page_origin is not None and origin_of(url) == self.page_origin
        return None, key, own

    def seed(self, url: str, verdict: Verdict) -> None:
        """Keep the verdict an earlier check gave `url` (the input URL's), so its addresses are the pinned ones."""
        parts = urlsplit(url)
        if verdict.allowed and verdict.addresses and parts.hostname:
            self._cache[_host_key(parts)] = verdict

    def pinned(self, host: str, port: int) -> list[str]:
        """The addresses checked for host:port on this page; empty when it was never allowed."""
        verdict = self._cache.get((host.strip("[]").lower(), port))
        return list(verdict.addresses) if verdict is not None and verdict.allowed else []

    def _resolve_and_classify(self, host: str, port: int, classify_addresses: bool = True) -> Verdict:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addrs = [str(literal)]
        else:
            try:
                addrs = self.resolver(host, port)
            except (OSError, UnicodeError) as e:
                return Verdict("unresolvable", f"{host}: {e}")
            if not addrs:
                return Verdict("unresolvable", host)
        if not classify_addresses:
            return Verdict(None, addresses=tuple(addrs))
        for a in addrs:
            try:
                reason = classify(a)
            except ValueError:
                return Verdict("unresolvable", f"{host} -> {a!r}")
            if reason is not None:
                return Verdict(reason, f"{host} -> {a}")
        return Verdict(None, addresses=tuple(addrs))


def input_url_verdict(url: str, allow_private: bool, resolver: Resolver = system_resolver) -> Verdict:
    """May an input URL be navigated to at all? (Its own later requests go through AddressGuard.)"""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return ALLOW
    if scheme not in ("http", "https"):
        return Verdict("scheme", f"input URLs are http(s) or file, got {scheme or '(none)'}")
    if allow_private:  # resolved (for pinning) but not classified: the input is its own origin
        return AddressGuard(origin_of(url), resolver).check(url) if parts.hostname else Verdict("no_host", url[:200])
    return AddressGuard(None, resolver).check(url)
