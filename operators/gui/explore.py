"""Rule-based exploration of a site into multi-step trajectories, replayed once to be kept.

From a start page, `explore` picks one action per step, deterministically (a `random.Random` seeded
by the sample id): click a visible link to the page's own origin, or fill a visible form whose
action is the page's own origin with values that fit each field's type, then submit it. Each step
records the screenshot before it (PNG), the action (`click(x,y)` / `type(x,y,"text")`, x and y in
the screenshot's pixel space: CSS pixels times the device scale factor), its target's box (same
space), the URL after (relative to the served root for saved folders) and a fingerprint of the page
state after (sha1 of URL + visible text).

`replay` performs the recorded actions at their coordinates in a fresh browser context and returns
the end-state fingerprint; a trajectory is kept only if it matches (`replay_mismatch`).

Safety: the context is the renderer's own (operators/gui/browser.py: `_PageState`, the route
handler or the served folder's guard proxy, downloads refused, popups closed, dialogs dismissed);
no second guard. On top of it, exploration never chooses a link or form outside the page's origin,
so a form that posts elsewhere is never submitted. Bounds: `max_steps` per trajectory, `max_pages`
distinct pages per site, `seconds_per_site` wall time. A step that lands on a page state already
seen (a navigation loop) or a page that will not settle ends the trajectory (it is truncated there:
`TrajectoryResult.ended` says why).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import random
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit

from quarry.operators.base import Rejection
from quarry.operators.gui.browser import PAINTED_JS, BrowserRenderer, PageJob, _PageState, _png_size, _proxy_setting
from quarry.operators.gui.dom import Field, normalise_box
from quarry.operators.gui.netguard import AddressGuard, input_url_verdict, origin_of
from quarry.operators.gui.tasks import TIER_NAMES, _quote, content_words, kind_of_field, text_for_field, tier_for
from quarry.operators.gui.wording import EN, Wording
from quarry.schemas.gui import TrajectoryConfig

REPLAY_MISMATCH = "replay_mismatch"
NO_ACTIONS = "no_actions"
START_FAILED = "start_failed"
REASONS = (REPLAY_MISMATCH, NO_ACTIONS, START_FAILED)

# why a trajectory ended (not a reject: the steps before it are kept)
ENDED_STEPS, ENDED_PAGES, ENDED_TIME, ENDED_LOOP, ENDED_NO_ACTION, ENDED_UNSTABLE, ENDED_BROKEN = (
    "max_steps", "max_pages", "time", "loop", "no_action", "unstable_page", "broken_form")

CANDIDATES_JS = """() => {
  const vis = (el) => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return r.width >= 2 && r.height >= 2 && r.bottom > 0 && r.right > 0 && r.top < innerHeight
      && r.left < innerWidth && s.visibility !== 'hidden' && s.display !== 'none'; };
  const box = (el) => { const r = el.getBoundingClientRect();
    return [Math.max(0, r.left), Math.max(0, r.top), Math.min(innerWidth, r.right), Math.min(innerHeight, r.bottom)]; };
  const links = [];
  for (const a of document.querySelectorAll('a[href]')) {
    if (!vis(a) || a.hasAttribute('download') || (a.target && a.target !== '_self')) continue;
    links.push({href: a.href, text: (a.innerText || '').trim().slice(0, 80), box: box(a)});
  }
  const forms = [];
  for (const f of document.forms) {
    const fields = [];
    for (const el of f.querySelectorAll('input, textarea')) {
      const t = (el.type || 'text').toLowerCase();
      if (['hidden', 'submit', 'button', 'reset', 'image', 'file', 'checkbox', 'radio'].includes(t) || !vis(el)) continue;
      const label = el.labels && el.labels[0] ? el.labels[0].innerText.trim() : '';
      const attr = (k) => el.getAttribute(k) || '';
      fields.push({type: el.tagName === 'TEXTAREA' ? 'textarea' : t, name: el.name || '', id: el.id || '',
                   placeholder: el.placeholder || '', label: label, autocomplete: attr('autocomplete'),
                   pattern: attr('pattern'), inputmode: attr('inputmode'), min: attr('min'), max: attr('max'),
                   maxlength: el.maxLength > 0 ? el.maxLength : null, role: attr('role'),
                   aria: attr('aria-label'), box: box(el)});
    }
    const sub = f.querySelector('button:not([type=button]):not([type=reset]), input[type=submit]');
    if (!sub || !vis(sub) || !fields.length) continue;
    forms.push({action: f.action, text: (sub.innerText || sub.value || '').trim().slice(0, 80),
                fields: fields, box: box(sub)});
  }
  return {links, forms, text: (document.body ? document.body.innerText : '').slice(0, 20000)};
}"""

_BODY_TEXT = "(document.body ? document.body.innerText : '').slice(0, 20000)"
TEXT_JS = f"() => {_BODY_TEXT}"
STATE_JS = f"() => [location.href, document.readyState, {_BODY_TEXT}]"
# Whether a click at (x, y) follows a link to another document or submits a form: such a click is awaited as a
# navigation (to its load), so the next screenshot never depends on how fast the machine is.
NAVIGATES_JS = """([x, y]) => {
  const el = document.elementFromPoint(x, y);
  if (!el) return false;
  const a = el.closest('a[href]');
  if (a) return !a.hasAttribute('download') && (!a.target || a.target === '_self')
    && a.href.split('#')[0] !== location.href.split('#')[0];
  const b = el.closest('button, input[type=submit], input[type=image]');
  return !!(b && b.form && (b.type === 'submit' || b.type === 'image'));
}"""


@dataclass(frozen=True)
class ExploreSettings:
    max_steps: int = 6  # actions per trajectory
    max_pages: int = 8  # distinct pages (URL) visited per site
    seconds_per_site: float = 60.0  # wall time for exploring one site (replay has the same again)
    settle_ms: int = 300  # quiet time after each action before the next screenshot

    @classmethod
    def from_config(cls, c: TrajectoryConfig) -> "ExploreSettings":
        return cls(c.max_steps, c.max_pages, c.seconds_per_site, c.settle_ms)


@dataclass
class Step:
    png: bytes
    width: int
    height: int
    action: str  # click(x,y) | type(x,y,"text"), screenshot pixels
    box: list[float]  # the target's box [x1, y1, x2, y2] in screenshot pixels
    target: str  # what the action acted on: a link's text, a field's label, a button's text
    url_after: str
    fingerprint: str
    choices: int = 0  # actions the page offered at this step (links and forms; a form's later fields: 1)


@dataclass
class TrajectoryResult:
    start_url: str
    steps: list[Step] = field(default_factory=list)
    ended: str = ENDED_STEPS
    rejection: Optional[Rejection] = None
    goal: str = ""
    blocked: list[tuple[str, str]] = field(default_factory=list)


def fingerprint(url: str, text: str) -> str:
    return hashlib.sha1((url + "\n" + " ".join(text.split())).encode()).hexdigest()


def fit_value(f: dict, words: list[str], key: str) -> Optional[str]:
    """Text that fits the field, chosen as the gui tasks choose it (operators/gui/tasks.py: its type, autocomplete,
    name, placeholder, label, pattern and maxlength; a search box gets words of the page), or None when none fits."""
    field = Field(type=f.get("type") or "text", name=f.get("name", ""), id=f.get("id", ""),
                  autocomplete=f.get("autocomplete", ""), placeholder=f.get("placeholder", ""),
                  pattern=f.get("pattern", ""), inputmode=f.get("inputmode", ""), min=f.get("min", ""),
                  max=f.get("max", ""), maxlength=f.get("maxlength"), label=f.get("label", ""))
    kind = kind_of_field(field, f.get("role") or None, f.get("aria", ""))
    return text_for_field(key, f"{key}|{f.get('name', '')}|{f.get('id', '')}", kind, field, words)


def _center(box, dsf: float) -> tuple[int, int]:
    return round((box[0] + box[2]) / 2 * dsf), round((box[1] + box[3]) / 2 * dsf)


def _px(box, dsf: float) -> list[float]:
    return [round(v * dsf, 1) for v in box]


class Explorer:
    """Explore and replay through one BrowserRenderer (its browser, its guards)."""

    def __init__(self, renderer: BrowserRenderer, settings: ExploreSettings = ExploreSettings(),
                 relative_url=lambda url: url):
        self.r = renderer
        self.s = settings
        self.relative_url = relative_url  # final_url-style: served folders relative to their root

    @property
    def limit_s(self) -> float:
        """The longest one exploration or replay can take (its own budget, the start page's load, closing)."""
        return self.s.seconds_per_site + self.r.page_limit_s + 30

    def explore(self, job: PageJob, seed: str) -> TrajectoryResult:
        self.r.start()
        return self.r._call(self._run(job, seed, None, self.relative_url), self.limit_s)

    def replay(self, job: PageJob, traj: TrajectoryResult) -> TrajectoryResult:
        self.r.start()
        return self.r._call(self._run(job, "", [s.action for s in traj.steps], self.relative_url), self.limit_s)

    def explore_and_replay(self, job: PageJob, seed: str) -> TrajectoryResult:
        return self.submit(job, seed).result(2 * self.limit_s)

    def submit(self, job: PageJob, seed: str, relative_url=None) -> "concurrent.futures.Future[TrajectoryResult]":
        """Explore and replay on the renderer's loop, beside its other pages (at most `pages_in_flight` contexts
        at a time in all); the future holds the trajectory, with a rejection when it is not kept. `relative_url`
        (this job's) replaces the explorer's own."""
        self.r.start()
        return asyncio.run_coroutine_threadsafe(
            self._explore_and_replay(job, seed, relative_url or self.relative_url), self.r._loop)

    async def _explore_and_replay(self, job: PageJob, seed: str, rel) -> TrajectoryResult:
        traj = await self._run(job, seed, None, rel)
        if traj.rejection is not None:
            return traj
        if not traj.steps and traj.ended in (ENDED_TIME, ENDED_UNSTABLE):
            traj.rejection = Rejection(START_FAILED, f"the start page did not settle for a first step ({traj.ended})")
            return traj
        if not traj.steps:
            traj.rejection = Rejection(NO_ACTIONS, "no in-origin link or form with fitting values on the start page")
            return traj
        again = await self._run(job, "", [s.action for s in traj.steps], rel)
        want, got = traj.steps[-1].fingerprint, again.steps[-1].fingerprint if again.steps else ""
        if again.rejection is not None or want != got:
            traj.rejection = Rejection(REPLAY_MISMATCH, f"end state {got[:12] or '(none)'} != {want[:12]}"
                                       + (f" ({again.rejection.detail})" if again.rejection else ""))
        return traj

    # --- the browser side (runs on the renderer's loop) -----------------------------------

    async def _run(self, job: PageJob, seed: str, actions: Optional[list[str]], rel) -> TrajectoryResult:
        r = self.r
        out = TrajectoryResult(job.url)
        async with r._sem:
            verdict = await asyncio.get_running_loop().run_in_executor(
                None, input_url_verdict, job.url, job.allow_private, r.resolver)
            if not verdict.allowed:
                out.rejection = Rejection(START_FAILED, f"{verdict.reason}: {verdict.detail}")
                return out
            origin = origin_of(job.url)
            state = _PageState(AddressGuard(origin, r.resolver), origin if job.trusted_origin else None)
            state.guard.seed(job.url, verdict)
            browser = await r._ensure_browser()
            if state.trusted_origin is None:
                proxy = r._dead_end_proxy()
            else:
                proxy = _proxy_setting(await state.start_proxy(r.s.timeout_s, r.s.max_response_bytes),
                                       state.trusted_origin)
            ctx = await browser.new_context(
                viewport={"width": job.width, "height": job.height}, device_scale_factor=job.device_scale_factor,
                is_mobile=job.is_mobile, has_touch=job.is_mobile, accept_downloads=False, service_workers="block",
                permissions=[], java_script_enabled=True, ignore_https_errors=False, proxy=proxy)
            try:
                if state.trusted_origin is None:
                    await ctx.route("**/*", lambda route: r._route(route, state))
                page = await ctx.new_page()
                state.main_frame = page.main_frame
                ctx.on("page", lambda p: p is not page and asyncio.ensure_future(p.close()))
                page.on("dialog", lambda d: asyncio.ensure_future(d.dismiss()))
                page.on("download", lambda d: asyncio.ensure_future(d.cancel()))
                budget = self.s.seconds_per_site
                try:
                    await asyncio.wait_for(self._steps(page, job, seed, actions, out, origin, rel), budget)
                except asyncio.TimeoutError:
                    out.ended = ENDED_TIME
            finally:
                try:
                    await asyncio.wait_for(ctx.close(), 10)
                except Exception:  # noqa: BLE001 - a dead browser: relaunched next time
                    await r._kill_browser()
                await state.close()
        out.blocked = state.blocked
        return out

    async def _eval(self, page, js: str, arg=None):
        """`page.evaluate`, bounded: a page whose script never yields would hold it forever."""
        return await asyncio.wait_for(page.evaluate(js, arg), self.r.s.extract_timeout_s)

    async def _settle(self, page) -> str:
        """Wait for the load, then until the URL, readyState and visible text read the same twice `settle_ms`
        apart (bounded by the render timeout): scripts that change the page after an action finish first.
        Then fonts, decoded images and two painted frames, as the renderer waits before its screenshot (the
        same page gives the same PNG under load). -> the page's visible text (TEXT_JS)."""
        from playwright.async_api import Error as PlaywrightError

        try:
            await page.wait_for_load_state("load", timeout=self.r.s.timeout_s * 1000)
        except PlaywrightError:
            pass
        loop = asyncio.get_running_loop()
        deadline, last = loop.time() + self.r.s.timeout_s, None
        while True:
            await asyncio.sleep(self.s.settle_ms / 1000)
            try:
                now = await self._eval(page, STATE_JS)
            except PlaywrightError:  # mid-navigation: read again
                now = None
            if (now is not None and now == last and now[1] == "complete") or loop.time() > deadline:
                break
            last = now
        await self._eval(page, PAINTED_JS)
        return now[2] if now is not None else await self._eval(page, TEXT_JS)

    async def _steps(self, page, job: PageJob, seed: str, actions, out: TrajectoryResult, origin: str, rel) -> None:
        from playwright.async_api import Error as PlaywrightError

        try:
            await page.goto(job.url, wait_until="load", timeout=self.r.s.timeout_s * 1000)
        except PlaywrightError as e:
            out.rejection = Rejection(START_FAILED, str(e).splitlines()[0][:300])
            return
        rng = random.Random(seed)
        dsf = job.device_scale_factor
        try:
            seen = {fingerprint(rel(page.url), await self._settle(page))}
        except (PlaywrightError, asyncio.TimeoutError):
            out.ended = ENDED_UNSTABLE
            return
        pages = {urlsplit(page.url)._replace(fragment="").geturl()}
        plan: list[tuple[str, list[float], str, str]] = []  # queued (action, css box, target, link href or '' in a form)
        dead: set[str] = set()  # links that led to an HTTP error: never chosen again
        choices = 1
        n = len(actions) if actions is not None else self.s.max_steps
        while len(out.steps) < n:
            try:
                png = await page.screenshot(type="png", animations="disabled", caret="hide",
                                            timeout=self.r.s.extract_timeout_s * 1000)
                if actions is not None:
                    action, box, target, href = actions[len(out.steps)], [0.0, 0.0, 0.0, 0.0], "", ""
                else:
                    if not plan:
                        plan, choices = await self._choose(page, rng, origin, f"{seed}|{rel(page.url)}", dead, dsf)
                        if not plan:
                            out.ended = ENDED_NO_ACTION
                            return
                    else:
                        choices = 1  # the next field of a form being filled
                    action, box, target, href = plan.pop(0)
                status = await self._perform(page, action, dsf)
                if actions is None and status is not None and status >= 400:
                    # a broken link is not a step: back to the page, choose again; a form that posts to an
                    # error ends the trajectory before its submit
                    await page.go_back(wait_until="load", timeout=self.r.s.timeout_s * 1000)
                    await self._settle(page)
                    if not href:
                        out.ended = ENDED_BROKEN
                        return
                    dead.add(href)
                    continue
                text = await self._settle(page)
                url = page.url
                fp = fingerprint(rel(url), text)
            except (PlaywrightError, asyncio.TimeoutError):  # the page keeps navigating (a loop), hangs or died
                out.ended = ENDED_UNSTABLE
                return
            w, h = _png_size(png)
            out.steps.append(Step(png, w, h, action, _px(box, dsf), target, rel(url), fp, choices))
            if actions is not None:
                continue
            pages.add(urlsplit(url)._replace(fragment="").geturl())
            if fp in seen and not plan:
                out.ended = ENDED_LOOP
                return
            seen.add(fp)
            if len(pages) >= self.s.max_pages:
                out.ended = ENDED_PAGES
                return
        out.ended = ENDED_STEPS

    async def _choose(self, page, rng: random.Random, origin: str, key: str, dead: set[str], dsf: float
                      ) -> tuple[list[tuple[str, list[float], str, str]], int]:
        """The next action(s): a link or a whole form (its fields then its submit), in-origin only; and how
        many such options the page offered."""
        c = await self._eval(page, CANDIDATES_JS)
        here = urlsplit(page.url)._replace(fragment="").geturl()
        words = content_words([c["text"]])
        options: list[list[tuple[tuple[str, Optional[str]], list[float], str, str]]] = []
        for f in c["forms"]:
            if origin_of(f["action"]) != origin:
                continue  # a form that posts elsewhere is never submitted
            plan = []
            for k, fld in enumerate(f["fields"]):
                value = fit_value(fld, words, f"{key}|{k}")
                if value is None:
                    break  # no text fits this field: the form is no option
                plan.append((("type", value), fld["box"], fld["label"] or fld["aria"] or fld["placeholder"]
                             or fld["name"], ""))
            else:
                plan.append((("click", None), f["box"], f["text"], ""))
                options.append(plan)
        for a in c["links"]:
            href = urlsplit(a["href"])._replace(fragment="").geturl()
            if origin_of(a["href"]) != origin or href == here or href in dead:
                continue
            options.append([(("click", None), a["box"], a["text"], href)])
        if not options:
            return [], 0
        chosen = options[rng.randrange(len(options))]
        out = []
        for (verb, value), box, target, href in chosen:
            x, y = _center(box, dsf)
            action = f"click({x},{y})" if verb == "click" else f'type({x},{y},"{value}")'
            out.append((action, box, target, href))
        return out, len(options)

    async def _perform(self, page, action: str, dsf: float) -> Optional[int]:
        """Do the action; a click that follows a link or submits a form is awaited to the new page's load and
        gives its HTTP status (None otherwise, or when a script kept the page)."""
        from playwright.async_api import Error as PlaywrightError

        verb, rest = action.split("(", 1)
        parts = rest.rstrip(")").split(",", 2)
        x, y = int(parts[0]) / dsf, int(parts[1]) / dsf
        if verb == "click" and await self._eval(page, NAVIGATES_JS, [x, y]):
            try:
                async with page.expect_navigation(wait_until="load", timeout=self.r.s.timeout_s * 1000) as nav:
                    await page.mouse.click(x, y)
                response = await nav.value
            except PlaywrightError:  # no navigation came (a script prevented it): the page settles as it is
                return None
            return response.status if response is not None else None
        await page.mouse.click(x, y)
        if verb == "type":
            text = parts[2].strip()[1:-1]
            await page.keyboard.press("Control+A")
            await page.keyboard.type(text)
        return None


def _name(target: str) -> str:
    return " ".join(target.split())


def _typed_value(action: str) -> str:
    return action.split(",", 2)[2].strip()[1:-2]


def goal_text(traj: TrajectoryResult, w: Wording = EN) -> str:
    """The goal, in words, from what the trajectory did and where it ended: every link it opens, every value it
    types and the button it presses, so the steps follow from the goal and the screenshots."""
    parts: list[str] = []
    typed: list[str] = []
    for s in traj.steps:
        if s.action.startswith("type("):
            typed.append(w.traj_typed.format(value=w.q(_typed_value(s.action)),
                                             field=_quote(_name(s.target), w=w) if s.target else w.traj_field))
        elif typed:
            parts.append(w.traj_fill.format(typed=w.listing(typed),
                                            button=_quote(_name(s.target), w=w) if s.target else w.traj_submit))
            typed = []
        else:
            parts.append(w.traj_open.format(target=_quote(_name(s.target), w=w)) if s.target else w.traj_link)
    if typed:  # the trajectory ended (max_steps) before the form was submitted
        parts.append(w.traj_fill_only.format(typed=w.listing(typed)))
    if not parts:
        return ""
    return w.traj_goal.format(steps=w.traj_then.join(parts), url=traj.steps[-1].url_after)


def step_prompt(goal: str, history: list[str], w: Wording = EN) -> str:
    """The instruction of one step: the goal, the actions taken so far (the screenshot shows the page after
    them, unlike goal_action's) and the answer format."""
    hist = (w.traj_history.format(lines="\n".join(f"{i}. {a}" for i, a in enumerate(history, 1)))
            if history else w.no_history)
    return w.goal_prompt.format(goal=goal, history=hist, hint="", suffix=w.action_suffix)


def grid_step(step: Step) -> tuple[str, tuple[int, int, int, int]]:
    """A step's action and target box on the 0-1000 grid of its screenshot (the other gui tasks' space)."""
    box = normalise_box(tuple(step.box), step.width, step.height)
    verb, rest = step.action.split("(", 1)
    parts = rest.split(",", 2)
    x, y = (min(1000, max(0, round(int(v) / total * 1000))) for v, total in
            ((parts[0], step.width), (parts[1].rstrip(")"), step.height)))
    return (f"click({x},{y})" if verb == "click" else f"type({x},{y},{parts[2]}"), box


def step_tier(step: Step, index: int, area_fractions, crowd_counts) -> tuple[str, float]:
    """(tier, area fraction): the target's area level with the page's choices as crowding (tasks.tier_for), +1
    after the first step (the history must be followed), capped at very_hard. No bonus for the goal, unlike
    goal_action: a trajectory's goal names each target by its text."""
    x1, y1, x2, y2 = step.box
    area = max(0.0, x2 - x1) * max(0.0, y2 - y1) / max(1, step.width * step.height)
    level = TIER_NAMES.index(tier_for(area, max(0, step.choices - 1), area_fractions, crowd_counts)) + min(1, index)
    return TIER_NAMES[min(len(TIER_NAMES) - 1, level)], round(area, 6)
