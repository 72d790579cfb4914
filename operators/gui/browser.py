"""Render pages with Playwright driving Chromium: screenshot + visible elements.

`BrowserRenderer` owns one browser per process, driven by Playwright's async
API on a background event-loop thread, so a synchronous caller (a Beam DoFn)
hands it a batch of pages and many render at once (`render.pages_in_flight`).
Each page gets a fresh context (no cookies, storage or cache shared between
pages), is navigated under `render.timeout_s` (load, then settle), and its
elements are extracted and screenshot under `render.extract_timeout_s`.

Bad pages are verdicts, not exceptions: `render_timeout` (never loads or
settles, or a script that never yields), `render_crash` (the renderer or
the browser died; the browser is relaunched for the next page),
`http_error`, `not_html`, `blocked_address` / `blocked_redirect`
(the address guard), `navigation_error`.

Safety: every request goes through a route handler that asks
`operators.netguard.AddressGuard` first, then fetches it itself
(`operators.pinned_fetch`: connections go only to the addresses the guard
checked, so DNS rebinding cannot change them) with redirects off, follows
redirects there checking each hop (a redirect to a blocked address never
leaves), and fulfils the browser's request. What Chromium would send by
itself (WebSockets) goes to a dead-end proxy that refuses every connection.
Downloads are refused (`accept_downloads=False`), popups closed, dialogs
dismissed, no permission granted, service workers blocked; http(s) pages
cannot read `file:` URLs (Chromium's own rule, and the guard).

`HtmlFolderServer` serves folders of saved `.html` files on loopback so
their relative assets load. Their pages are not intercepted at all: the
folder's origin is fetched directly, and every other request goes through a
per-page proxy that asks the same guard (`operators.guard_proxy`), so other
loopback ports stay blocked and pinning still holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import mimetypes
import os
import posixpath
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Union
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp

from quarry.operators.base import Rejection
from quarry.operators.gui import ui_code
from quarry.operators.gui.dom import EXTRACT_JS, LISTENER_PROBE_JS, PageElements, parse_elements
from quarry.operators.gui.guard_proxy import GuardProxy
from quarry.operators.gui.netguard import AddressGuard, Resolver, input_url_verdict, origin_of, system_resolver
from quarry.operators.gui.pinned_fetch import fetch_pinned, pinned_session
from quarry.schemas.gui import RenderConfig, Viewport

_RENDER, _VIEWPORT = RenderConfig(), Viewport()  # the defaults, written once in schemas/gui.py

# Chromium keeps only the LAST --disable-features switch, and Playwright passes its own before ours,
# so ours repeats Playwright's list (playwright 1.65; tests/operators/test_browser.py fails when an
# upgrade adds to it) and adds what quarry needs.
PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding", "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect", "TcpPortRandomizationWin", "OptimizationHints",
    "NetworkTimeServiceQuerying", "AimEnabled", "PreconnectToSearch", "msForceBrowserSignIn",
    "msEdgeUpdateLaunchServicesPreferredVersion",
)
DISABLED_FEATURES = PLAYWRIGHT_DISABLED_FEATURES + (
    # A warm spare renderer is started for the next page; with several contexts open it is mostly
    # for the wrong one and thrown away: 2.3 renderer processes per page instead of 1, ~10% more CPU.
    "SpareRendererForSitePerProcess",
    "Translate",
)
CHROMIUM_ARGS = (
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage", "--mute-audio", "--disable-features=" + ",".join(DISABLED_FEATURES),
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",  # WebRTC may not reach the network around the proxy
    # Partial raster redraws only the invalidated part of a tile over the old pixels, so an edge
    # repainted after a late image decode is anti-aliased a little differently: the same page gave
    # two PNGs (two image_ids) in 4-9 of 40 renders. Without it, 160 of 160 were identical.
    "--disable-partial-raster",
)


class BrowserLaunchError(RuntimeError):
    """The browser cannot start at all: a setup problem, not a bad page."""


HTML_TYPES = ("text/html", "application/xhtml+xml")

# `render.executable_path: auto` takes the first that exists. The headless shell is the browser
# Playwright itself launches for headless runs: the same Blink and V8 without the desktop browser
# around them. Measured on the gui benchmark: 0.73 core-seconds per page against 1.04 for the full
# `chromium` (the browser process does a third of the work: a fresh context is far cheaper).
CHROMIUM_CANDIDATES = ("/usr/bin/chromium-headless-shell", "/usr/bin/chromium")
AUTO = "auto"

# Why a page is a `render` reject.
BLOCKED_ADDRESS = "blocked_address"
RENDER_CRASH = "render_crash"
RENDER_TIMEOUT = "render_timeout"
BLOCKED_REDIRECT = "blocked_redirect"
RESPONSE_TOO_LARGE = "response_too_large"
NAVIGATION_ERROR = "navigation_error"
HTTP_ERROR = "http_error"
NOT_HTML = "not_html"
REASONS: tuple[str, ...] = (BLOCKED_ADDRESS, RENDER_CRASH, RENDER_TIMEOUT, BLOCKED_REDIRECT, RESPONSE_TOO_LARGE,
                            NAVIGATION_ERROR, HTTP_ERROR, NOT_HTML)


def find_chromium(executable_path: Optional[str] = AUTO) -> Optional[str]:
    """The Chromium binary for `render.executable_path`: `auto` = the first of CHROMIUM_CANDIDATES that
    exists, None = Playwright's own browser, anything else as given. Raises BrowserLaunchError
    when `auto` finds none or a given path does not exist."""
    if executable_path is None:
        return None
    if executable_path == AUTO:
        for candidate in CHROMIUM_CANDIDATES:
            if os.path.exists(candidate):
                return candidate
        raise BrowserLaunchError(
            f"render.executable_path=auto: none of {', '.join(CHROMIUM_CANDIDATES)} exists; install one "
            "(Debian: apt-get install chromium-headless-shell), give its path, or set render.executable_path=null "
            "to use Playwright's own browser (`playwright install chromium`)")
    if not os.path.exists(executable_path):
        raise BrowserLaunchError(
            f"render.executable_path: {executable_path} does not exist; install Chromium (Debian: apt-get install "
            "chromium-headless-shell), or set render.executable_path=auto, or null to use Playwright's own browser "
            "(`playwright install chromium`)")
    return executable_path


PAINTED_JS = """() => Promise.all([
    document.fonts ? document.fonts.ready : null,
    // only images already loaded: a lazy image below the fold never loads, its decode() never settles
    ...Array.from(document.images, (img) => (img.complete ? img.decode().catch(() => null) : null)),
]).then(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))))"""


@dataclass(frozen=True)
class PageJob:
    """One page to render at one viewport."""

    url: str
    width: int = _VIEWPORT.width
    height: int = _VIEWPORT.height
    device_scale_factor: float = _VIEWPORT.device_scale_factor
    is_mobile: bool = _VIEWPORT.is_mobile
    allow_private: bool = _RENDER.allow_private_inputs  # may `url` itself be on a private address
    # The page's origin is a server we run (HtmlFolderServer: files only, never redirects): no
    # interception; its own requests go direct, all others through the page's guard proxy.
    trusted_origin: bool = False


@dataclass
class RenderedPage:
    png: bytes
    width: int  # screenshot pixels
    height: int
    elements: PageElements
    final_url: str
    status: int
    # ui_code (RendererSettings.ui_code): the page's self-contained document and its sandbox render, or why not
    code: Union["ui_code.CodeRender", Rejection, None] = None


@dataclass
class RenderResult:
    page: Optional[RenderedPage]
    rejection: Optional[Rejection]
    blocked: list[tuple[str, str]] = field(default_factory=list)  # (reason, url) refused by the guard
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class RendererSettings:
    executable_path: Optional[str] = _RENDER.executable_path  # see find_chromium
    timeout_s: float = _RENDER.timeout_s
    extract_timeout_s: float = _RENDER.extract_timeout_s
    settle: str = _RENDER.settle
    pages_in_flight: int = _RENDER.pages_in_flight
    max_elements: int = _RENDER.max_elements
    max_nodes: int = _RENDER.max_nodes
    min_side_px: float = _RENDER.min_side_px
    max_redirects: int = _RENDER.max_redirects
    max_response_bytes: int = _RENDER.max_response_bytes
    ui_code: Optional[ui_code.CodeSettings] = None  # serialise each page to HTML and render it again (ui_code.py)


def _is_crash(err: BaseException) -> bool:
    text = str(err)
    return any(s in text for s in ("Target crashed", "has been closed", "Browser closed", "crashed",
                                   "Connection closed", "browser has disconnected"))


_HEAD = re.compile(rb"<head(\s[^>]*)?>", re.IGNORECASE)


def _with_base(html: bytes, base: str) -> bytes:
    """Add `<base href>` so relative links of a page served after a redirect resolve against its final URL."""
    if re.search(rb"<base\s", html[:8192], re.IGNORECASE):
        return html
    tag = b'<base href="' + base.replace('"', "%22").encode() + b'">'
    m = _HEAD.search(html[:8192])
    if m:
        return html[: m.end()] + tag + html[m.end():]
    return tag + html


class _PageState:
    def __init__(self, guard: AddressGuard, trusted_origin: Optional[str] = None):
        self.guard = guard
        self.trusted_origin = trusted_origin
        self.blocked: list[tuple[str, str]] = []
        self.nav_blocked: Optional[tuple[str, str]] = None  # the main document (or its redirect) refused
        self.too_large = False
        self.main_frame = None  # the page's main frame, once the page exists
        self.navigations: list[str] = []  # main-frame navigations (framenavigated)
        self._session: Optional[aiohttp.ClientSession] = None
        self._proxy: Optional[GuardProxy] = None

    def session(self, timeout_s: float) -> aiohttp.ClientSession:
        """The page's HTTP client, opened at its first fetch (most pages of a served folder never need one)."""
        if self._session is None:
            self._session = pinned_session(self.guard, timeout_s)
        return self._session

    async def start_proxy(self, timeout_s: float, max_bytes: int) -> int:
        """The guard proxy for a served folder's page (operators/gui/guard_proxy.py); returns its port."""
        self._proxy = GuardProxy(self.guard, self.blocked, lambda: self.session(timeout_s), timeout_s, max_bytes)
        return await self._proxy.start()

    async def close(self) -> None:
        if self._proxy is not None:
            await self._proxy.close()
        if self._session is not None:
            await self._session.close()


class BrowserRenderer:
    """One browser, many pages in flight. Thread-safe `submit` / `render_many`; call `close()` when done."""

    def __init__(self, settings: RendererSettings, resolver: Resolver = system_resolver,
                 read_asset: Optional[ui_code.AssetReader] = None):
        self.s = settings
        self.resolver = resolver
        self.read_asset = read_asset  # served-folder files by URL, inlined into ui_code documents
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._pw = None
        self._browser = None
        self._sem: Optional[asyncio.Semaphore] = None
        self._launch_lock: Optional[asyncio.Lock] = None
        self.launches = 0
        self._start_lock = threading.Lock()
        self._dead_end: Optional[socket.socket] = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> "BrowserRenderer":
        with self._start_lock:
            if self._loop is not None:
                return self
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="quarry-browser", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
            try:
                self._call(self._start(), 120)
            except BaseException:
                self.close()
                raise
        return self

    def _call(self, coro, timeout: Optional[float]):
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        from playwright.async_api import async_playwright

        self._sem = asyncio.Semaphore(self.s.pages_in_flight)
        self._launch_lock = asyncio.Lock()
        self._pw = await async_playwright().start()
        await self._ensure_browser()

    async def _ensure_browser(self):
        async with self._launch_lock:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            if self._browser is not None:
                try:
                    await asyncio.wait_for(self._browser.close(), 5)
                except Exception:  # noqa: BLE001 - a dead browser may fail to close in many ways
                    pass
            executable = find_chromium(self.s.executable_path)
            try:
                self._browser = await self._pw.chromium.launch(
                    executable_path=executable, args=list(CHROMIUM_ARGS), headless=True, timeout=60_000)
            except Exception as e:  # playwright.Error: missing binary, bad flags
                hint = ("set render.executable_path to a Chromium binary (Debian: apt-get install chromium-headless-shell)"
                        if executable else "run `playwright install chromium` or set render.executable_path")
                raise BrowserLaunchError(f"cannot launch Chromium ({executable or 'Playwright bundled'}): "
                                         f"{str(e).splitlines()[0]}; {hint}") from None
            self.launches += 1
            return self._browser

    def close(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown():
            try:
                if self._browser is not None:
                    await asyncio.wait_for(self._browser.close(), 10)
            except Exception:  # noqa: BLE001 - closing a crashed browser
                pass
            try:
                if self._pw is not None:
                    await asyncio.wait_for(self._pw.stop(), 10)
            except Exception:  # noqa: BLE001
                pass

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(30)
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if self._dead_end is not None:
            self._dead_end.close()
            self._dead_end = None
        self._loop = self._thread = self._browser = self._pw = None

    # --- rendering ------------------------------------------------------------------------

    @property
    def page_limit_s(self) -> float:
        """The longest one page can take once it is in flight (its own limits plus closing its context)."""
        return self.s.timeout_s + self.s.extract_timeout_s + 30 + self._code_limit_s

    @property
    def _code_limit_s(self) -> float:
        """The longest the ui_code capture and its sandbox render take (0 without ui_code)."""
        if self.s.ui_code is None:
            return 0.0
        return self.s.ui_code.quiet_ms / 1000 + 3 * self.s.extract_timeout_s + 15

    def submit(self, job: PageJob) -> concurrent.futures.Future:
        """Start rendering `job` and return at once; at most `pages_in_flight` render, the rest queue.

        A caller that keeps more pages submitted than are in flight keeps the browser busy while
        it handles finished ones (no batch barrier waiting for the slowest page).
        """
        if self._loop is None:
            self.start()
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._render_one(job), self._loop)

    def render_many(self, jobs: list[PageJob]) -> list[RenderResult]:
        """Render jobs concurrently (at most `pages_in_flight` at once); results in job order."""
        futures = [self.submit(j) for j in jobs]
        waves = -(-len(jobs) // self.s.pages_in_flight)
        deadline = time.monotonic() + self.page_limit_s * max(1, waves) + 60
        return [f.result(max(0.0, deadline - time.monotonic())) for f in futures]

    def render(self, job: PageJob) -> RenderResult:
        return self.render_many([job])[0]

    def render_code(self, html: str, width: int, height: int, device_scale_factor: float = 1.0,
                    is_mobile: bool = False) -> tuple[Optional[bytes], int, Optional[str]]:
        """Render a document in the ui_code sandbox (a fresh context, JavaScript off, every request aborted):
        (png, requests asked for, error). At most `pages_in_flight` renders at once with the pages."""
        if self._loop is None:
            self.start()

        async def go():
            async with self._sem:
                browser = await self._ensure_browser()
                return await ui_code.rerender(browser, html, width, height, device_scale_factor, is_mobile,
                                              self.s.extract_timeout_s, self._dead_end_proxy())

        return self._call(go(), self.s.extract_timeout_s + 30)

    async def _render_one(self, job: PageJob) -> RenderResult:
        async with self._sem:
            t0 = time.monotonic()
            # resolved in a worker thread: a slow DNS answer must not stall the other pages in flight
            verdict = await asyncio.get_running_loop().run_in_executor(
                None, input_url_verdict, job.url, job.allow_private, self.resolver)
            if not verdict.allowed:
                return RenderResult(None, Rejection(BLOCKED_ADDRESS, f"{verdict.reason}: {verdict.detail}"),
                                    [(verdict.reason or "", job.url)])
            origin = origin_of(job.url)
            state = _PageState(AddressGuard(origin, self.resolver), origin if job.trusted_origin else None)
            state.guard.seed(job.url, verdict)  # the main document connects to the address just checked
            try:
                result = await self._render_guarded(job, state)
            finally:
                await state.close()
            if result.page is not None and isinstance(result.page.code, ui_code.CodeCapture):
                result.page.code = await self._render_code(result.page.code, job)
            result.blocked = state.blocked
            result.elapsed_s = round(time.monotonic() - t0, 3)
            return result

    async def _render_guarded(self, job: PageJob, state: _PageState) -> RenderResult:
        try:
            browser = await self._ensure_browser()
            if state.trusted_origin is None:
                proxy = self._dead_end_proxy()
            else:  # a served folder: no interception, other origins go through the page's guard proxy
                port = await state.start_proxy(self.s.timeout_s, self.s.max_response_bytes)
                proxy = _proxy_setting(port, state.trusted_origin)
            ctx = await browser.new_context(
                viewport={"width": job.width, "height": job.height}, device_scale_factor=job.device_scale_factor,
                is_mobile=job.is_mobile, has_touch=job.is_mobile, accept_downloads=False, service_workers="block",
                permissions=[], java_script_enabled=True, ignore_https_errors=False, proxy=proxy)
        except BrowserLaunchError:
            raise
        except Exception as e:  # noqa: BLE001 - the browser died between pages: relaunch next time
            return RenderResult(None, Rejection(RENDER_CRASH, f"new context: {str(e).splitlines()[0][:300]}"))
        try:
            await ctx.add_init_script(LISTENER_PROBE_JS)
            if state.trusted_origin is None:
                await ctx.route("**/*", lambda route: self._route(route, state))
            page = await ctx.new_page()
            state.main_frame = page.main_frame
            page.on("framenavigated", lambda f: f is page.main_frame and state.navigations.append(f.url))
            ctx.on("page", lambda p: p is not page and asyncio.ensure_future(_close_quietly(p)))
            page.on("dialog", lambda d: asyncio.ensure_future(_dismiss_quietly(d)))
            crashed = asyncio.get_running_loop().create_future()
            page.on("crash", lambda _p: crashed.done() or crashed.set_result(True))
            work = asyncio.ensure_future(self._load_and_extract(page, job, state))
            limit = self.s.timeout_s + self.s.extract_timeout_s + 5
            if self.s.ui_code is not None:
                limit += self.s.ui_code.quiet_ms / 1000 + self.s.extract_timeout_s + 1
            done, _ = await asyncio.wait([work, crashed], timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                return work.result()
            work.cancel()
            work.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieve, never log
            if crashed in done:
                return RenderResult(None, Rejection(RENDER_CRASH, "the page's renderer process died"))
            return RenderResult(None, Rejection(RENDER_TIMEOUT, f"no result within {limit:.0f} s"))
        except Exception as e:  # noqa: BLE001 - a browser that died mid-page
            if _is_crash(e):
                return RenderResult(None, Rejection(RENDER_CRASH, str(e).splitlines()[0][:300]))
            raise
        finally:
            try:
                await asyncio.wait_for(ctx.close(), 10)
            except Exception:  # noqa: BLE001 - context of a dead browser; relaunch it
                await self._kill_browser()

    def _dead_end_proxy(self) -> dict[str, str]:
        """What Chromium would send by itself (WebSockets, anything no route handler sees) goes to a
        proxy port that refuses every connection."""
        if self._dead_end is None:
            self._dead_end = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._dead_end.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused at once
        return _proxy_setting(self._dead_end.getsockname()[1])

    async def _kill_browser(self) -> None:
        b, self._browser = self._browser, None
        if b is not None:
            try:
                await asyncio.wait_for(b.close(), 5)
            except Exception:  # noqa: BLE001
                pass

    async def _load_and_extract(self, page, job: PageJob, state: _PageState) -> RenderResult:
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        t0 = time.monotonic()
        budget_ms = self.s.timeout_s * 1000
        try:
            response = await page.goto(job.url, wait_until="load", timeout=budget_ms)
        except PlaywrightTimeout:
            return RenderResult(None, Rejection(RENDER_TIMEOUT, f"not loaded within render.timeout_s={self.s.timeout_s}"))
        except PlaywrightError as e:
            if state.nav_blocked is not None:
                reason, url = state.nav_blocked
                return RenderResult(None, Rejection(BLOCKED_REDIRECT, f"{reason}: {url}"[:500]))
            if _is_crash(e):
                return RenderResult(None, Rejection(RENDER_CRASH, str(e).splitlines()[0][:300]))
            if state.too_large:
                return RenderResult(None, Rejection(RESPONSE_TOO_LARGE, f"> {self.s.max_response_bytes} bytes"))
            return RenderResult(None, Rejection(NAVIGATION_ERROR, str(e).splitlines()[0][:300]))
        if response is None:
            return RenderResult(None, Rejection(NAVIGATION_ERROR, "no response for the main document"))
        if response.status >= 400:
            return RenderResult(None, Rejection(HTTP_ERROR, f"HTTP {response.status}"))
        ctype = (await response.header_value("content-type") or "").split(";")[0].strip().lower()
        if not job.url.startswith("file:") and ctype not in HTML_TYPES:
            return RenderResult(None, Rejection(NOT_HTML, f"content-type {ctype or '(none)'}"))
        if self.s.settle == "networkidle":
            left = budget_ms - (time.monotonic() - t0) * 1000
            try:
                if left <= 0:
                    raise PlaywrightTimeout("no time left")
                await page.wait_for_load_state("networkidle", timeout=left)
            except PlaywrightTimeout:
                return RenderResult(None, Rejection(
                    RENDER_TIMEOUT, f"network not idle within render.timeout_s={self.s.timeout_s}"))
        opts = {"minSide": self.s.min_side_px, "maxElements": self.s.max_elements, "maxNodes": self.s.max_nodes}
        loaded_navigations = len(state.navigations)
        try:
            # Fonts loaded, images decoded and two frames painted before measuring and taking the
            # screenshot: under CPU load `load` can fire before decoded images reach the screen, and
            # the same page then gives a different PNG (and image_id) on a rerun.
            await asyncio.wait_for(page.evaluate(PAINTED_JS), self.s.extract_timeout_s)
            raw = await asyncio.wait_for(page.evaluate(EXTRACT_JS, opts), self.s.extract_timeout_s)
            png = await page.screenshot(type="png", animations="disabled", caret="hide",
                                        timeout=self.s.extract_timeout_s * 1000)
        except (asyncio.TimeoutError, PlaywrightTimeout):
            return RenderResult(None, Rejection(
                RENDER_TIMEOUT, f"extraction/screenshot not done within render.extract_timeout_s={self.s.extract_timeout_s}"))
        except PlaywrightError as e:
            # the page left itself while it was measured (the navigation event may come after the error)
            if len(state.navigations) > loaded_navigations or ui_code.navigation_error(e):
                return RenderResult(None, Rejection(NAVIGATION_ERROR, "the page navigated after loading, while it "
                                                                      f"was measured: {str(e).splitlines()[0][:200]}"))
            raise
        width, height = _png_size(png)
        elements = parse_elements(raw, job.device_scale_factor, self.s.min_side_px, (width, height))
        rendered = RenderedPage(png, width, height, elements, page.url, response.status)
        if self.s.ui_code is not None:
            rendered.code = await self._capture_code(page, job, state, loaded_navigations)
        return RenderResult(rendered, None)

    async def _capture_code(self, page, job: PageJob, state: _PageState, navigations: int):
        """The page's self-contained document (ui_code.capture), within render.extract_timeout_s."""
        assert self.s.ui_code is not None
        read_asset = self.read_asset if state.trusted_origin is not None else None  # served folders only
        try:
            return await asyncio.wait_for(
                ui_code.capture(page, self.s.ui_code, read_asset, lambda: len(state.navigations) > navigations),
                self.s.ui_code.quiet_ms / 1000 + self.s.extract_timeout_s)
        except asyncio.TimeoutError:
            return Rejection(ui_code.CAPTURE_FAILED, f"not serialised within render.extract_timeout_s="
                                                     f"{self.s.extract_timeout_s}")

    async def _render_code(self, cap: "ui_code.CodeCapture", job: PageJob) -> "ui_code.CodeRender":
        """Render a captured document again in a sandbox context (no JavaScript, every request aborted)."""
        try:
            browser = await self._ensure_browser()
            png, requests, error = await ui_code.rerender(
                browser, cap.html, job.width, job.height, job.device_scale_factor, job.is_mobile,
                self.s.extract_timeout_s, self._dead_end_proxy())
        except BrowserLaunchError:
            raise
        except Exception as e:  # noqa: BLE001 - the browser died between the page and its sandbox render
            png, requests, error = None, 0, str(e).splitlines()[0][:300]
        rejection = None
        if requests:
            rejection = Rejection(ui_code.NETWORK_REQUEST, f"{requests} request(s) at re-render (all aborted)")
        elif png is None:
            rejection = Rejection(ui_code.RERENDER_FAILED, error or "no screenshot")
        return ui_code.CodeRender(cap, png, requests, rejection)

    async def _route(self, route, state: _PageState) -> None:
        from playwright.async_api import Error as PlaywrightError

        request = route.request
        url = request.url
        is_main = False
        if request.is_navigation_request():
            try:
                is_main = request.frame is state.main_frame
            except PlaywrightError:  # a popup's first request: its frame does not exist yet
                is_main = False
        verdict = await state.guard.acheck(url)
        if not verdict.allowed:
            state.blocked.append((verdict.reason or "", url[:500]))
            if is_main:
                state.nav_blocked = (verdict.reason or "", url)
            await _abort_quietly(route)
            return
        if not url.startswith(("http://", "https://")):
            await route.continue_()
            return
        try:
            fetched, final_url = await self._fetch_following_redirects(request, url, state, is_main)
            if fetched is None:  # a hop was refused
                await _abort_quietly(route)
                return
            if fetched.too_large:
                state.too_large = state.too_large or is_main
                await _abort_quietly(route)
                return
            body = fetched.body
            if final_url != url and request.is_navigation_request() and \
                    fetched.headers.get("content-type", "").startswith("text/html"):
                body = _with_base(body, final_url)
            await route.fulfill(status=fetched.status, headers=fetched.headers, body=body)
        except (PlaywrightError, OSError, asyncio.TimeoutError, aiohttp.ClientError, ValueError):
            await _abort_quietly(route)

    async def _fetch_following_redirects(self, request, url: str, state: _PageState, is_main: bool):
        """Fetch from the pinned addresses with redirects off; follow them here, checking each hop."""
        method, body = request.method, request.post_data_buffer
        headers = await request.all_headers()
        current, hops = url, 0
        while True:
            fetched = await fetch_pinned(state.session(self.s.timeout_s), current, method, headers, body,
                                         self.s.max_response_bytes)
            location = fetched.headers.get("location")
            if not (300 <= fetched.status < 400 and location):
                return fetched, current
            target = urljoin(current, location)
            hop = await state.guard.acheck(target)
            if not hop.allowed or hops >= self.s.max_redirects:
                reason = hop.reason if not hop.allowed else "too_many_redirects"
                state.blocked.append((reason or "", target[:500]))
                if is_main:
                    state.nav_blocked = (reason or "", target)
                return None, target
            if origin_of(target) != origin_of(current):  # credentials stay with the origin they were sent to
                headers = {k: v for k, v in headers.items() if k.lower() not in ("cookie", "authorization")}
            if fetched.status == 303 or (fetched.status in (301, 302) and method == "POST"):
                method, body = "GET", None  # what browsers do
            hops += 1
            current = target


def _proxy_setting(port: int, direct_origin: Optional[str] = None) -> dict[str, str]:
    bypass = ["<-loopback>"]  # loopback too goes to the proxy (Chromium bypasses it by default)
    if direct_origin is not None:
        bypass.append(direct_origin.split("://", 1)[1])
    return {"server": f"http://127.0.0.1:{port}", "bypass": ",".join(bypass)}


async def _abort_quietly(route) -> None:
    try:
        await route.abort("blockedbyclient")
    except Exception:  # noqa: BLE001 - the page is already gone
        pass


async def _close_quietly(page) -> None:
    try:
        await page.close()
    except Exception:  # noqa: BLE001
        pass


async def _dismiss_quietly(dialog) -> None:
    try:
        await dialog.dismiss()
    except Exception:  # noqa: BLE001
        pass


def _png_size(png: bytes) -> tuple[int, int]:
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        raise ValueError("screenshot is not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


# --- serving folders of saved pages on loopback ---------------------------------------------


class HtmlFolderServer:
    """Serves registered folders on loopback, one port per folder: `http://127.0.0.1:PORT/<relative path>`.

    One port per folder keeps root-relative links (`/_static/site.css`) and
    `../` links inside the folder working. `read(root, relpath) -> bytes | None`
    reads a file (None: missing). Paths that climb out of a root are 404.
    Only GET/HEAD; loopback only.
    """

    def __init__(self, read: Callable[[str, str], Optional[bytes]], max_bytes: int = 20 * 1024 * 1024):
        self.read = read
        self.max_bytes = max_bytes
        self.requests = 0
        self._servers: dict[str, tuple[ThreadingHTTPServer, str]] = {}
        self._lock = threading.Lock()

    def _server_for(self, root: str) -> str:
        with self._lock:
            if root in self._servers:
                return self._servers[root][1]
            server = self

            class Handler(BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"  # keep-alive: a page's assets reuse a few connections

                def log_message(self, *args):
                    pass

                def do_HEAD(self):
                    self._serve(body=False)

                def do_GET(self):
                    self._serve(body=True)

                def _serve(self, body: bool):
                    server.requests += 1
                    data, ctype = server.lookup(root, self.path)
                    if data is None:
                        self.send_error(404)
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Cache-Control", "max-age=3600")
                    self.end_headers()
                    if body:
                        try:
                            self.wfile.write(data)
                        except (BrokenPipeError, ConnectionResetError):
                            pass

            httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            httpd.daemon_threads = True
            threading.Thread(target=httpd.serve_forever, name="quarry-html-server", daemon=True).start()
            base = f"http://127.0.0.1:{httpd.server_address[1]}"
            self._servers[root] = (httpd, base)
            return base

    def url_for(self, root: str, relpath: str) -> str:
        quoted = "/".join(_quote(p) for p in relpath.split("/"))
        return f"{self._server_for(root)}/{quoted}"

    def read_url(self, url: str) -> Optional[tuple[bytes, str]]:
        """(bytes, content type) of a served file by its absolute URL; None when no folder here serves it."""
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            root = next((r for r, (_, b) in self._servers.items() if b == base), None)
        if root is None:
            return None
        data, ctype = self.lookup(root, parts.path)
        return None if data is None else (data, ctype)

    def lookup(self, root: str, path: str) -> tuple[Optional[bytes], str]:
        rel = unquote(urlsplit(path).path).lstrip("/")
        if not rel:
            return None, ""
        norm = posixpath.normpath(rel)
        if norm.startswith("../") or norm == ".." or norm.startswith("/"):
            return None, ""
        data = self.read(root, norm)
        if data is None or len(data) > self.max_bytes:
            return None, ""
        ctype = mimetypes.guess_type(norm)[0] or "application/octet-stream"
        if ctype == "text/html" and b"charset" not in data[:1024].lower():
            ctype += "; charset=utf-8"
        return data, ctype

    def close(self) -> None:
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for httpd, _ in servers:
            httpd.shutdown()
            httpd.server_close()


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")


def local_read(root: str, relpath: str) -> Optional[bytes]:
    """`HtmlFolderServer` reader for local folders."""
    path = os.path.join(root, relpath)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


RenderOutcome = Union[RenderedPage, Rejection]
