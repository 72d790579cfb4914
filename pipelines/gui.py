"""The gui recipe (GLM-4.5V GUI grounding, GLM-5V-Turbo GUI hierarchy) wired as Beam steps.

    input files -> ReadPages (one PageInput per URL and viewport)
                -> RenderPages (Playwright: screenshot + visible elements, many in flight)
                -> MakeTasks (GuiRow per task, ImageRecord per screenshot)

One input is one page at one viewport; it ends as task rows or one reject
(`read`, `render`, `tasks`). Many rows come from one page, so the manifest
also counts pages into and out of each stage. The screenshot travels with
the page record only between fused steps (render -> tasks) and is written
once to `DIR/images`; rows carry its `image_id`.

Browsers are per worker process: the first `RenderPages` instance of a
process starts Chromium (and, for folders of saved pages, a loopback HTTP
server); the others in that process share it; the last teardown closes it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
from dataclasses import replace
from typing import Any, Iterator, NamedTuple, Optional, Union
from urllib.parse import unquote, urlsplit, urlunsplit

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from quarry.operators import decontam as decontam_ops
from quarry.operators.base import Rejection
from quarry.operators.gui import browser as browser_ops
from quarry.operators.gui import critic, explore, ui_code
from quarry.operators.gui.browser import BrowserRenderer, HtmlFolderServer, PageJob, RendererSettings, RenderResult
from quarry.operators.gui.goals import GOAL_ACTION, goal_tasks
from quarry.operators.gui.tasks import TaskSettings, boxed, language_parts, page_tasks, task_id, verifier_spec
from quarry.operators.gui.wording import WORDINGS
from quarry.operators.ids import content_id, digest
from quarry.operators.inputs import reasons
from quarry.operators.inputs.files import page_bytes, url_lines
from quarry.operators.inputs.jsonl import jsonl_objects, line_reason
from quarry.operators.inputs.kinds import URL_LIST_SUFFIXES
from quarry.operators.inputs.parquet import parquet_rows
from quarry.operators.inputs.records import Unreadable
from quarry.pipelines.read import (
    TABLE_ERRORS,
    ColumnNeed,
    InputError,
    InputFile,
    InputSpec,
    ReadRecords,
    clean_source,
    plan_files,
    read_opened,
    read_reject,
    unreadable_table,
)
from quarry.pipelines.stage import count, refused, reject_row, run_stage
from quarry.pipelines.stats import Progress
from quarry.schemas.common import ImageCell, ImageRecord, Origin, Reject
from quarry.schemas.gui import (
    TRAJECTORY,
    UI_CODE_TASKS,
    CriticConfig,
    GuiConfig,
    GuiRow,
    PageInput,
    RenderConfig,
    TasksConfig,
    TierConfig,
    UiCodeConfig,
    Viewport,
)
from quarry.schemas.rl import VerifierSpec

MAX_URL_CHARS = 4096
LOCAL_PAGE_SUFFIXES = (".html", ".htm", ".xhtml")  # what a file:// URL of a URL list may name
MAX_HTML_BYTES = 20 * 1024 * 1024

# Why a rendered page is a `tasks` reject (the tasks step decides, no operator).
NO_ELEMENTS = "no_elements"
NO_TASKS = "no_tasks"
REASONS: tuple[str, ...] = (NO_ELEMENTS, NO_TASKS)  # the recipe's own; read rejects are the reader's


class Outputs(NamedTuple):
    rows: Any  # PCollection[GuiRow]
    images: Any  # PCollection[ImageRecord]
    rejected: Any  # PCollection[Reject]
    blocked: Any  # PCollection[int]: guard refusals per rendered page


def plan_gui_inputs(patterns: list[str], cfg: GuiConfig) -> list[InputFile]:
    """URL lists, URL tables, or folders of saved pages -> typed input files; InputError for the unreadable."""
    suffixes = tuple(s.lower() for s in cfg.input.html_suffixes)
    url_column = cfg.input.url_column
    return plan_files(patterns, InputSpec(
        kinds=("urls", "parquet", "jsonl", "html"), suffixes={"html": suffixes},
        readable=(f"a URL list ({', '.join(URL_LIST_SUFFIXES)}), a Parquet/JSONL table with a {url_column!r} "
                  f"column, or a saved page ({', '.join(suffixes)})"),
        columns=(ColumnNeed(None, "url", url_column, option="input.url_column",
                            named_missing="no {wanted!r} column (columns are {names}); name it with --set "
                                          "{option}=COLUMN"),),
        finish=_site_root))


def _site_root(f: InputFile, pattern: str, _head) -> InputFile:
    """A saved page is served from the folder given (or the page's own folder), which must be local."""
    if f.kind != "html":
        return f
    if "://" in f.path:
        raise InputError(f"input {f.path}: saved pages are served from local folders only")
    is_dir = "://" not in pattern and os.path.isdir(pattern)
    return replace(f, root=os.path.abspath(pattern if is_dir else os.path.dirname(f.path)))


# --- reading: plain generators, no Beam ---------------------------------------------------


def url_problem(url: str) -> Optional[str]:
    """Why a URL cannot be a page input, or None."""
    if len(url) > MAX_URL_CHARS:
        return f"URL longer than {MAX_URL_CHARS} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        return f"unparsable URL ({e})"
    if parts.scheme.lower() not in ("http", "https", "file"):
        return f"scheme {parts.scheme or '(none)'!r}: inputs are http(s):// or file:// URLs"
    if parts.scheme.lower() != "file" and not parts.hostname:
        return "no host"
    # a URL list is often mined, not written: file:///etc/passwd would become a screenshot of the file
    if parts.scheme.lower() == "file" and not parts.path.lower().endswith(LOCAL_PAGE_SUFFIXES):
        return f"file:// URLs must name an HTML page ({', '.join(LOCAL_PAGE_SUFFIXES)})"
    if any(c in url for c in "\r\n\t ") or not url.isprintable():
        return "URL holds whitespace or control characters"
    return None


def _page_inputs(source: str, origin: Origin, kind: str, url: str, identity: str, viewports: list[Viewport],
                 root: Optional[str] = None) -> list[PageInput]:
    return [PageInput(page_id=content_id("gui-page", identity, vp.model_dump_json()), source=source, origin=origin,
                      kind=kind, url=url, root=root, viewport=vp) for vp in viewports]


def read_gui_file(f: InputFile, source: str, cfg: GuiConfig) -> Iterator[Union[PageInput, Reject]]:
    """Every page input (per viewport) of one input file, or read rejects."""
    for rec in _gui_records(f, source, cfg):
        yield read_reject(f.path, source, rec) if isinstance(rec, Unreadable) else rec


def _gui_records(f: InputFile, source: str, cfg: GuiConfig) -> Iterator[Union[PageInput, Unreadable]]:
    viewports = cfg.render.viewports()
    if f.kind == "html":
        rel = os.path.relpath(f.path, f.root).replace(os.sep, "/")
        try:
            with FileSystems.open(f.path, compression_type="uncompressed") as fh:
                data = page_bytes(fh, MAX_HTML_BYTES)
        except (BeamIOError, OSError) as e:
            yield Unreadable(rel, reasons.UNREADABLE_FILE, str(e))
            return
        if data is None:
            yield Unreadable(rel, reasons.FILE_TOO_LARGE, f"> {MAX_HTML_BYTES} bytes")
            return
        yield from _page_inputs(source, Origin(file=f.path, key=rel), "html", rel, f"html:{rel}:{digest(data)}",
                                viewports, f.root)
        return

    def parse(fh):
        if f.kind == "urls":
            for lineno, line in url_lines(fh):
                yield from _url_record(f.path, f"line:{lineno}", source, line, viewports)
        elif f.kind == "parquet":
            try:
                for row, rec in parquet_rows(fh, [cfg.input.url_column, "source"], 1024):
                    yield from _table_record(f.path, f"row:{row}", source, rec, cfg, viewports)
            except TABLE_ERRORS as e:
                yield unreadable_table(e)
        else:
            for lineno, rec in jsonl_objects(fh):
                if isinstance(rec, str):
                    yield Unreadable(f"line:{lineno}", line_reason(rec), rec)
                    continue
                yield from _table_record(f.path, f"line:{lineno}", source, rec, cfg, viewports)

    yield from read_opened(f.path, parse)


def _table_record(path: str, key: str, source: str, rec: dict, cfg: GuiConfig, viewports: list[Viewport]):
    own = rec.get("source")
    src = clean_source(own) if isinstance(own, str) and own else source
    url = rec.get(cfg.input.url_column)
    if not isinstance(url, str) or not url.strip():
        yield Unreadable(key, reasons.MISSING_URL, f"field {cfg.input.url_column!r} holds {type(url).__name__}", src)
        return
    yield from _url_record(path, key, src, url.strip(), viewports)


def _url_record(path: str, key: str, source: str, url: str, viewports: list[Viewport]):
    problem = url_problem(url)
    if problem:
        yield Unreadable(key, reasons.INVALID_URL, f"{problem}: {url[:200]!r}", source)
        return
    yield from _page_inputs(source, Origin(file=path, key=key), "url", url, f"url:{url}", viewports)


class ReadPages(ReadRecords):
    """Planned input files -> (pages, rejected)."""

    def __init__(self, files: list[InputFile], source: str, cfg: GuiConfig):
        super().__init__(files, functools.partial(read_gui_file, source=clean_source(source), cfg=cfg))


# --- rendering ------------------------------------------------------------------------------


def code_settings(u: UiCodeConfig) -> ui_code.CodeSettings:
    return ui_code.CodeSettings(max_nodes=u.max_nodes, max_bytes=u.max_bytes, quiet_ms=u.quiet_ms,
                                max_asset_bytes=u.max_asset_bytes)


def renderer_settings(r: RenderConfig, code: Optional[ui_code.CodeSettings] = None) -> RendererSettings:
    """The renderer's settings; with `code`, each page is also serialised to HTML and rendered again."""
    return RendererSettings(
        executable_path=r.executable_path, timeout_s=r.timeout_s, extract_timeout_s=r.extract_timeout_s,
        settle=r.settle, pages_in_flight=r.pages_in_flight, max_elements=r.max_elements, max_nodes=r.max_nodes,
        min_side_px=r.min_side_px, max_redirects=r.max_redirects, max_response_bytes=r.max_response_bytes,
        ui_code=code)


def _local_or_fs_read(root: str, relpath: str) -> Optional[bytes]:
    path = FileSystems.join(root, relpath)
    try:
        with FileSystems.open(path, compression_type="uncompressed") as fh:
            return page_bytes(fh, MAX_HTML_BYTES)
    except (BeamIOError, OSError):
        return None


class _Worker:
    """The browser and the folder server of one worker process, shared by its DoFn instances."""

    _lock = threading.Lock()
    _pool: dict[RendererSettings, "_Worker"] = {}

    def __init__(self, settings: RendererSettings):
        self.settings = settings
        self.server = HtmlFolderServer(_local_or_fs_read)
        self.renderer = BrowserRenderer(settings, read_asset=self.server.read_url).start()
        self.users = 0

    @classmethod
    def acquire(cls, settings: RendererSettings) -> "_Worker":
        with cls._lock:
            w = cls._pool.get(settings)
            if w is None:
                w = cls._pool[settings] = cls(settings)
            w.users += 1
            return w

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users > 0:
                return
            self._pool.pop(self.settings, None)
        self.renderer.close()
        self.server.close()


def page_job(p: PageInput, server: HtmlFolderServer, allow_private: bool) -> PageJob:
    vp = p.viewport
    if p.kind == "html":
        return PageJob(server.url_for(p.root or "", p.url), vp.width, vp.height, vp.device_scale_factor,
                       vp.is_mobile, allow_private=True, trusted_origin=True)  # our own loopback server
    return PageJob(p.url, vp.width, vp.height, vp.device_scale_factor, vp.is_mobile, allow_private=allow_private)


class _RenderPages(beam.DoFn):
    """PageInput -> (PageInput, RenderResult), many pages in flight; failures -> render rejects.

    Pages are handed to the browser as they arrive and passed on as they finish, in any order
    (shards sort by id): up to `render.queued_pages` wait submitted beyond the ones in flight,
    so the browser keeps rendering while this thread makes tasks of finished pages, and no page
    waits for a slower neighbour. `finish_bundle` drains the rest (the pipeline is batch, in
    the global window).
    """

    BLOCKED = "blocked"

    def __init__(self, cfg: RenderConfig, code: Optional[ui_code.CodeSettings] = None):
        self.cfg = cfg
        self.code = code
        self.rendered = beam.metrics.Metrics.counter("gui", "pages_rendered")
        self.failed = beam.metrics.Metrics.counter("gui", "pages_rejected")
        self.blocked = beam.metrics.Metrics.counter("gui", "requests_blocked")
        self.restarts = beam.metrics.Metrics.counter("gui", "browser_launches")

    def setup(self):
        self.worker = _Worker.acquire(renderer_settings(self.cfg, self.code))

    def teardown(self):
        worker, self.worker = getattr(self, "worker", None), None
        if worker is not None:
            worker.release()

    def start_bundle(self):
        self.pending: dict[concurrent.futures.Future, PageInput] = {}
        self.launches = self.worker.renderer.launches

    def process(self, p: PageInput):
        renderer = self.worker.renderer
        self.pending[renderer.submit(page_job(p, self.worker.server, self.cfg.allow_private_inputs))] = p
        yield from self._finished(wait=len(self.pending) > self.cfg.pages_in_flight + self.cfg.queued_pages)

    def finish_bundle(self):
        self.restarts.inc(self.worker.renderer.launches - self.launches)
        while self.pending:
            for out in self._finished(wait=True):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
                else:
                    yield GlobalWindows.windowed_value(out)

    def _finished(self, wait: bool):
        """Outputs of the pages done by now; with `wait`, block until at least one is."""
        renderer = self.worker.renderer
        if wait:
            # Every page in flight ends within its own limit; the queue ahead of the oldest is bounded.
            waves = len(self.pending) / self.cfg.pages_in_flight + 1
            done, _ = concurrent.futures.wait(list(self.pending), timeout=renderer.page_limit_s * waves + 60,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            if not done:
                raise RuntimeError(f"the browser returned none of {len(self.pending)} pages in time")
        else:
            done = [f for f in self.pending if f.done()]
        for fut in done:
            p, res = self.pending.pop(fut), fut.result()
            self.blocked.inc(len(res.blocked))
            yield beam.pvalue.TaggedOutput(self.BLOCKED, len(res.blocked))
            if res.page is None:
                self.failed.inc()
                yield refused(reject_row(p.page_id, p.source, p.origin, "render", res.rejection))
            else:
                self.rendered.inc()
                yield (p, res)


# --- tasks ----------------------------------------------------------------------------------


def task_settings(tasks: TasksConfig, tiers: TierConfig) -> TaskSettings:
    return TaskSettings(kinds=tuple(tasks.kinds), max_per_page=tasks.max_per_page, scroll=tasks.scroll,
                        area_fractions=tuple(tiers.area_fractions), crowd_counts=tuple(tiers.crowd_counts),
                        language=tasks.language)


def critic_settings(c: CriticConfig, tasks: TasksConfig) -> critic.CriticSettings:
    return critic.CriticSettings(errors=tuple(c.errors), max_iou=c.max_iou, min_contrast=c.min_contrast, near=c.near,
                                 max_gap=c.max_gap,
                                 max_per_page=tasks.max_per_page, language=tasks.language)


def final_url_of(p: PageInput, final_url: str) -> str:
    """Where the page ended, reproducibly: for a served folder the path inside the folder (as `page_url`),
    since the loopback server's port differs from run to run; web pages keep their URL."""
    parts = urlsplit(final_url)
    if p.kind != "html" or parts.hostname not in ("127.0.0.1", "localhost"):
        return final_url
    return urlunsplit(("", "", unquote(parts.path).lstrip("/"), parts.query, parts.fragment))


def page_image(res: RenderResult) -> ImageRecord:
    page = res.page
    assert page is not None
    return ImageRecord(image_id=digest(page.png), image=ImageCell(bytes=page.png), width=page.width,
                       height=page.height, format="png")


def page_rows(p: PageInput, res: RenderResult, settings: TaskSettings,
              critic_cfg: Optional[critic.CriticSettings] = None) -> tuple[list[GuiRow], Optional[ImageRecord]]:
    """The task rows of one page (and its screenshot record); critic rows judge its grounding and action tasks,
    which are made for them even when those kinds are not emitted themselves."""
    page = res.page
    assert page is not None
    elements = page.elements
    wanted = settings.kinds
    tasks = page_tasks(p.page_id, elements.elements, elements.scrollable,
                       replace(settings, kinds=critic.with_kinds(wanted)))
    judged: list[critic.Candidate] = []
    if "critic" in wanted:
        judged = critic.critic_candidates(p.page_id, tasks, elements.elements, page.png, critic_cfg or critic.CriticSettings(
            max_per_page=settings.max_per_page, language=settings.language))
    tasks = [t for t in tasks if t.task in wanted]
    if GOAL_ACTION in wanted:
        tasks += goal_tasks(p.page_id, elements.elements, settings)
    if not tasks and not judged:
        return [], None
    image_id = digest(page.png)

    def row(t, **fields) -> GuiRow:
        e = t.element
        return GuiRow(
            source=p.source, origin=p.origin, url=p.url if p.kind == "url" else None, parent_id=p.page_id,
            image_id=image_id, width=page.width, height=page.height, viewport=p.viewport.name, page_url=p.url,
            final_url=final_url_of(p, page.final_url), expression=t.expression, expression_kind=t.expression_kind,
            action=t.action, goal=t.goal, goal_kind=t.goal_kind, history=list(t.history) if t.goal else None,
            element_tag=e.tag if e else None, element_role=e.role if e else None,
            element_name=e.name if e else None, element_interactive=e.interactive if e else None,
            element_path=e.path if e else None, box=list(e.box) if e else None,
            box_px=list(e.box_px) if e else None, box_kind=e.box_kind if e else None,
            block_box=list(e.block_box) if e and e.block_box else None, area_fraction=t.area_fraction,
            similar_elements=t.similar, page_elements=len(elements.elements), elements_capped=elements.capped,
            blocked_requests=len(res.blocked), **fields)

    rows = [row(t, sample_id=task_id(p.page_id, t), tier=t.tier, task=t.task, question=t.prompt, answer=t.answer,
                verifier=verifier_spec(t)) for t in tasks]
    rows += [row(c.task, sample_id=critic.candidate_id(p.page_id, c), tier=c.tier, task="critic",
                 question=critic.question(c), answer=critic.answer(c), verifier=critic.verifier_spec(),
                 judged_task=c.task.task, judged_id=task_id(p.page_id, c.task), candidate=c.candidate,
                 candidate_box=list(c.box), candidate_iou=c.iou, verdict=c.verdict, error_kind=c.error_kind,
                 reason=c.reason) for c in judged]
    return rows, page_image(res)


def code_id(p: PageInput, task: str, language: str = "en") -> str:
    return content_id("gui-ui-code", p.page_id, task, *language_parts(language))


def code_rows(p: PageInput, res: RenderResult, cfg: UiCodeConfig, kinds: tuple[str, ...], language: str = "en"
              ) -> tuple[list[GuiRow], Optional[Reject]]:
    """The ui_to_code / code_to_ui rows of one page, or the ui_code reject that says why there are none."""
    page = res.page
    assert page is not None
    code = page.code
    if code is None:
        return [], None
    if isinstance(code, Rejection):
        return [], reject_row(code_id(p, ui_code.UI_TO_CODE, language), p.source, p.origin, "ui_code", code)
    verdict = ui_code.decide(page.png, code, cfg.threshold)
    if isinstance(verdict, Rejection):
        return [], reject_row(code_id(p, ui_code.UI_TO_CODE, language), p.source, p.origin, "ui_code", verdict)
    cap, vp = code.capture, p.viewport
    tier = ui_code.code_tier(cap.elements, cap.depth, cfg.tier_elements, cfg.tier_depths)
    dsf = f"{vp.device_scale_factor:g}"
    rows = []
    for task in (t for t in ui_code.TASKS if t in kinds):
        w = WORDINGS[language]
        prompt = w.ui_to_code if task == ui_code.UI_TO_CODE else w.code_to_ui
        rows.append(GuiRow(
            sample_id=code_id(p, task, language), source=p.source, tier=tier, task=task, origin=p.origin,
            url=p.url if p.kind == "url" else None, parent_id=p.page_id, image_id=digest(page.png), width=page.width,
            height=page.height, viewport=vp.name, page_url=p.url, final_url=final_url_of(p, page.final_url),
            question=prompt.format(width=vp.width, height=vp.height, dsf=dsf),
            answer=cap.html if task == ui_code.UI_TO_CODE else "", verifier=ui_code.verifier_spec(task, vp.width, vp.height, vp.device_scale_factor, vp.is_mobile),
            page_elements=len(page.elements.elements), elements_capped=page.elements.capped,
            blocked_requests=len(res.blocked), html=cap.html, code_similarity=verdict.score, code_ssim=verdict.ssim,
            code_pixel_agreement=verdict.pixel_agreement, code_bytes=len(cap.html.encode("utf-8")),
            code_elements=cap.elements, code_depth=cap.depth, code_assets_inlined=cap.assets_inlined,
            code_assets_dropped=cap.assets_dropped))
    return rows, None


def trajectory_id(p: PageInput, language: str = "en") -> str:
    return content_id("gui-trajectory", p.page_id, *language_parts(language))


def trajectory_rows(p: PageInput, traj: explore.TrajectoryResult, tiers: TierConfig, language: str = "en"
                    ) -> tuple[list[GuiRow], list[ImageRecord], Optional[Reject]]:
    """One trajectory-level row per step of a kept trajectory (the goal, the actions so far, this step's screenshot
    -> its action, verified like `action` by the target's box), the step screenshots, or its one reject."""
    tid = trajectory_id(p, language)
    if traj.rejection is not None:
        return [], [], reject_row(tid, p.source, p.origin, "trajectory", traj.rejection)
    w = WORDINGS[language]
    goal = explore.goal_text(traj, w)
    start = final_url_of(p, traj.start_url)
    rows, images, history = [], {}, []
    for i, st in enumerate(traj.steps):
        action, box = explore.grid_step(st)
        tier, area = explore.step_tier(st, i, tiers.area_fractions, tiers.crowd_counts)
        image_id = digest(st.png)
        images.setdefault(image_id, ImageRecord(image_id=image_id, image=ImageCell(bytes=st.png), width=st.width,
                                                height=st.height, format="png"))
        rows.append(GuiRow(
            sample_id=content_id("gui-trajectory-step", tid, str(i)), source=p.source, tier=tier, task=TRAJECTORY,
            origin=p.origin, url=p.url if p.kind == "url" else None, parent_id=p.page_id, image_id=image_id,
            width=st.width, height=st.height, viewport=p.viewport.name, page_url=p.url,
            final_url=traj.steps[i - 1].url_after if i else start, question=explore.step_prompt(goal, history, w),
            answer=boxed(action), verifier=VerifierSpec(kind="action", box=[float(v) for v in box]), action=action,
            goal=goal, history=list(history), trajectory_id=tid, step=i, steps=len(traj.steps),
            url_after=st.url_after, trajectory_end=traj.ended, element_name=" ".join(st.target.split()) or None,
            box=list(box), box_px=list(st.box), box_kind="block", area_fraction=area, similar_elements=st.choices - 1,
            page_elements=st.choices, elements_capped=False, blocked_requests=len(traj.blocked)))
        history.append(action)
    return rows, list(images.values()), None


class _ExploreSites(beam.DoFn):
    """PageInput -> the rows and screenshots of the trajectory explored from it (explored, replayed in a fresh
    context, kept when the end states match), or one `trajectory` reject; several sites in flight per worker."""

    IMAGES = "trajectory_images"
    STEPS = "trajectory_steps"

    def __init__(self, cfg: GuiConfig):
        self.cfg = cfg

    def setup(self):
        # the renderer settings of the render stage, so both share one browser per worker process
        code = code_settings(self.cfg.ui_code) if set(self.cfg.tasks.kinds) & set(UI_CODE_TASKS) else None
        self.worker = _Worker.acquire(renderer_settings(self.cfg.render, code))
        self.explorer = explore.Explorer(self.worker.renderer, explore.ExploreSettings.from_config(
            self.cfg.trajectory))

    def teardown(self):
        worker, self.worker = getattr(self, "worker", None), None
        if worker is not None:
            worker.release()

    def start_bundle(self):
        self.pending: dict[concurrent.futures.Future, PageInput] = {}

    def process(self, p: PageInput):
        job = page_job(p, self.worker.server, self.cfg.render.allow_private_inputs)
        # seeded by the English id, so a run in another language explores the same steps
        self.pending[self.explorer.submit(job, trajectory_id(p), functools.partial(final_url_of, p))] = p
        yield from self._finished(wait=len(self.pending) >= self.cfg.render.pages_in_flight)

    def finish_bundle(self):
        while self.pending:
            for out in self._finished(wait=True):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
                else:
                    yield GlobalWindows.windowed_value(out)

    def _finished(self, wait: bool):
        if wait:
            waves = len(self.pending) / self.cfg.render.pages_in_flight + 1  # explore + replay per wave
            done, _ = concurrent.futures.wait(list(self.pending), timeout=2 * self.explorer.limit_s * waves,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            if not done:
                raise RuntimeError(f"the browser returned none of {len(self.pending)} trajectories in time")
        else:
            done = [f for f in self.pending if f.done()]
        for fut in done:
            p, traj = self.pending.pop(fut), fut.result()
            rows, images, reject = trajectory_rows(p, traj, self.cfg.tiers, self.cfg.tasks.language)
            if reject is not None:
                yield refused(reject)
                continue
            for im in images:
                yield beam.pvalue.TaggedOutput(self.IMAGES, im)
            yield beam.pvalue.TaggedOutput(self.STEPS, len(rows))
            yield from rows


class _MakeTasks(beam.DoFn):
    """(PageInput, RenderResult) -> task rows, ui_code rows, the screenshot once, and rejects: a page without any
    row is one `tasks` reject; a page whose code gives no pair is also one `ui_code` reject (per pair, not page)."""

    IMAGES = "images"
    CODE_IN = "code_in"  # one per page whose code was captured or refused
    CODE_OUT = "code_out"  # one per pair kept

    def __init__(self, settings: TaskSettings, code: UiCodeConfig, critic_cfg: critic.CriticSettings):
        self.settings = settings
        self.code = code
        self.critic = critic_cfg

    def process(self, element):
        p, res = element
        rows, _ = page_rows(p, res, self.settings, self.critic)
        pairs, code_reject = code_rows(p, res, self.code, self.settings.kinds, self.settings.language)
        if res.page.code is not None:
            yield beam.pvalue.TaggedOutput(self.CODE_IN, 1)
        if code_reject is not None:
            yield refused(code_reject)
        elif pairs:
            yield beam.pvalue.TaggedOutput(self.CODE_OUT, 1)
        rows += pairs
        if not rows:
            n = len(res.page.elements.elements)
            reason = NO_ELEMENTS if n == 0 else NO_TASKS
            yield refused(reject_row(p.page_id, p.source, p.origin, "tasks", Rejection(
                reason, f"{n} visible elements, none usable for {', '.join(self.settings.kinds)}")))
            return
        yield beam.pvalue.TaggedOutput(self.IMAGES, page_image(res))
        yield from rows


class GuiPipeline(beam.PTransform):
    """PCollection[PageInput] -> Outputs(rows, images, rejected, blocked); page counts to `DIR/_stats`."""

    def __init__(self, cfg: GuiConfig, output_dir: Optional[str] = None):
        super().__init__()
        self.cfg = cfg
        self.output_dir = output_dir

    def expand(self, pages):
        cfg, out_dir = self.cfg, self.output_dir
        code = code_settings(cfg.ui_code) if set(cfg.tasks.kinds) & set(UI_CODE_TASKS) else None
        rendered = run_stage(pages | "ProgressRender" >> Progress("render"), "RenderPages",
                             _RenderPages(cfg.render, code), out_dir, "render", tags=(_RenderPages.BLOCKED,))
        tasks = run_stage(rendered.kept, "MakeTasks", _MakeTasks(task_settings(cfg.tasks, cfg.tiers), cfg.ui_code,
                                                       critic_settings(cfg.critic, cfg.tasks)),
                          out_dir, "tasks", tags=(_MakeTasks.IMAGES, _MakeTasks.CODE_IN, _MakeTasks.CODE_OUT))
        count(tasks[_MakeTasks.IMAGES], out_dir, "images.out")
        count(tasks[_MakeTasks.CODE_IN], out_dir, "ui_code.in")
        count(tasks[_MakeTasks.CODE_OUT], out_dir, "ui_code.out")
        rows, images = [tasks.kept], [tasks[_MakeTasks.IMAGES]]
        rejected = [rendered.rejected, tasks.rejected]
        if cfg.trajectory.enabled:
            traj = run_stage(pages, "ExploreSites", _ExploreSites(cfg), out_dir, "trajectory",
                             tags=(_ExploreSites.IMAGES, _ExploreSites.STEPS))
            count(traj[_ExploreSites.STEPS], out_dir, "trajectory.kept")  # trajectories; trajectory.out counts steps
            rows.append(traj.kept)
            images.append(traj[_ExploreSites.IMAGES])
            rejected.append(traj.rejected)
        return Outputs(_flatten(rows, "GuiRows"), _flatten(images, "GuiImages"),
                       _flatten(rejected, "GuiRejects"), rendered[_RenderPages.BLOCKED])


def _flatten(parts: list, label: str):
    return parts[0] if len(parts) == 1 else tuple(parts) | label >> beam.Flatten()


# The reasons each stage of the gui DAG (dags/gui.py: SPEC.stages) can give its reject rows; `read` is the reader's.
STAGE_REASONS: dict[str, tuple[str, ...]] = {
    "render": browser_ops.REASONS,
    "tasks": REASONS,
    "ui_code": ui_code.REASONS,
    "trajectory": explore.REASONS,
    "decontam": (decontam_ops.CONTAMINATED_TEXT, decontam_ops.CONTAMINATED_IMAGE),
    "write": (),
}
