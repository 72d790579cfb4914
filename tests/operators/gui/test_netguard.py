"""The address guard: which requests a rendered page may send."""

from __future__ import annotations

import asyncio
import time

import pytest

from quarry.operators.gui.netguard import AddressGuard, classify, input_url_verdict, origin_of


@pytest.mark.parametrize("addr, expected", [
    ("8.8.8.8", None),
    ("93.184.216.34", None),
    ("2606:4700:4700::1111", None),
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fd12:3456::1", "private"),
    ("100.64.0.1", "private"),
    ("169.254.169.254", "metadata"),
    ("fd00:ec2::254", "metadata"),
    ("100.100.100.200", "metadata"),
    ("169.254.1.1", "link_local"),
    ("fe80::1", "link_local"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.1", "private")  # documentation range: Python counts it private,
])
def test_classify(addr, expected):
    assert classify(addr) == expected


def fake_dns(table):
    calls = []

    def resolve(host, port):
        calls.append(host)
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    resolve.calls = calls
    return resolve


CASES = [
    ("https://public.example/a.png", None),
    ("https://internal.example/a.png", "private"),
    ("https://mixed.example/", "loopback"),  # any non-public answer refuses the host
    ("http://nowhere.example/", "unresolvable"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[::1]:8080/", "loopback"),
    ("http://127.0.0.1:9999/x", "loopback"),  # loopback, another port: not the page's origin
    ("http://127.0.0.1:8000/same-origin.css", None),
    ("file:///etc/passwd", "file_access"),
    ("ftp://public.example/x", "scheme"),
    ("ws://public.example/socket", "scheme"),
    ("data:image/png;base64,AAAA", None),
]


@pytest.mark.parametrize("url, reason", CASES)
def test_guard_checks_every_request(url, reason):
    dns = fake_dns({"public.example": ["93.184.216.34"], "internal.example": ["10.0.0.7"],
                    "mixed.example": ["93.184.216.34", "127.0.0.1"]})
    guard = AddressGuard(origin_of("http://127.0.0.1:8000/page.html"), dns)
    assert guard.check(url).reason == reason


@pytest.mark.parametrize("url, reason", CASES)
def test_async_check_gives_the_same_verdicts(url, reason):
    dns = fake_dns({"public.example": ["93.184.216.34"], "internal.example": ["10.0.0.7"],
                    "mixed.example": ["93.184.216.34", "127.0.0.1"]})
    guard = AddressGuard(origin_of("http://127.0.0.1:8000/page.html"), dns)
    assert asyncio.run(guard.acheck(url)).reason == reason


def test_async_check_resolves_off_the_event_loop_once_per_name():
    """A slow DNS answer stalls only the requests waiting for that name, and concurrent ones share it."""
    slow = fake_dns({"slow.example": ["93.184.216.34"], "fast.example": ["93.184.216.35"]})

    def resolver(host, port):
        if host == "slow.example":
            time.sleep(0.5)
        return slow(host, port)

    guard = AddressGuard(None, resolver)

    async def go():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        a, b = asyncio.ensure_future(guard.acheck("https://slow.example/a")), \
            asyncio.ensure_future(guard.acheck("https://slow.example/b"))
        fast = await guard.acheck("https://fast.example/")
        fast_done_before_slow = not a.done()
        verdicts = await asyncio.gather(a, b)
        t.cancel()
        return fast, fast_done_before_slow, verdicts, ticks

    fast, early, (a, b), ticks = asyncio.run(go())
    assert fast.allowed and early and a.allowed and b is a
    assert ticks >= 20  # the loop kept running while the slow name resolved
    assert slow.calls.count("slow.example") == 1 and guard.pinned("slow.example", 443) == ["93.184.216.34"]


def test_guard_caches_resolution_per_host_and_port():
    dns = fake_dns({"public.example": ["93.184.216.34"]})
    guard = AddressGuard("https://site.example:443", dns)
    for path in ("a", "b", "c"):
        assert guard.check(f"https://public.example/{path}").allowed
    assert dns.calls == ["public.example"]


def test_real_resolver_classifies_localhost():
    assert AddressGuard("https://site.example:443").check("http://localhost:1234/").reason == "loopback"


def test_file_pages_may_read_only_their_own_folder():
    guard = AddressGuard(origin_of("file:///data/pages/a.html"))
    assert guard.check("file:///data/pages/img/logo.png").allowed
    assert guard.check("file:///etc/passwd").reason == "file_access"
    assert guard.check("file:///data/other/x.css").reason == "file_access"


def test_input_urls():
    dns = fake_dns({"public.example": ["93.184.216.34"]})
    assert input_url_verdict("https://public.example/", False, dns).allowed
    assert input_url_verdict("http://127.0.0.1:5000/", False, dns).reason == "loopback"
    assert input_url_verdict("http://127.0.0.1:5000/", True, dns).allowed
    assert input_url_verdict("javascript:alert(1)", True, dns).reason == "scheme"


def test_checked_addresses_are_pinned_for_the_fetcher():
    """What a host resolved to when it was checked is what the fetcher connects to; a later answer
    (DNS rebinding) is never asked for."""
    dns = fake_dns({"public.example": ["93.184.216.34"], "site.example": ["10.1.1.1"]})
    guard = AddressGuard("http://site.example:80", dns)
    assert guard.pinned("public.example", 443) == []  # never checked: nothing to connect to
    assert guard.check("https://public.example/a").addresses == ("93.184.216.34",)
    assert guard.pinned("public.example", 443) == ["93.184.216.34"]
    assert guard.pinned("public.example", 80) == []  # per port
    assert guard.check("http://site.example/x").allowed  # own origin: not classified, still pinned
    assert guard.pinned("site.example", 80) == ["10.1.1.1"]
    dns_calls = list(dns.calls)
    guard.check("https://public.example/b")
    assert dns.calls == dns_calls  # once per page


def test_refused_hosts_have_no_pinned_address():
    guard = AddressGuard(None, fake_dns({"internal.example": ["10.0.0.7"]}))
    assert guard.check("http://internal.example/").reason == "private"
    assert guard.pinned("internal.example", 80) == []


def test_the_input_urls_check_seeds_the_pages_guard():
    dns = fake_dns({"public.example": ["93.184.216.34"]})
    verdict = input_url_verdict("https://public.example/page", False, dns)
    guard = AddressGuard(origin_of("https://public.example/page"), dns)
    guard.seed("https://public.example/page", verdict)
    assert guard.pinned("public.example", 443) == ["93.184.216.34"]
    guard.check("https://public.example/style.css")
    assert dns.calls == ["public.example"]  # the page's own requests reuse the input's answer
    private = input_url_verdict("http://127.0.0.1:5000/", True, dns)
    assert private.allowed and private.addresses == ("127.0.0.1",)
