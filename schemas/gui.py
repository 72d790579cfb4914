"""The gui DAG: its config sections, the page input record, and its output row.

GLM-4.5V §3 (GUI grounding: Playwright renders pages, every visible DOM
element with its rendered box; boxes [x1, y1, x2, y2] normalised to 0-1000)
and the GUI task hierarchy of GLM-5V-Turbo §4 (element perception, grounding,
single-step action).
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import pyarrow as pa
from pydantic import Field, field_validator

from quarry.schemas.arrow import ArrowType
from quarry.schemas.common import Origin, Row, Sample
from quarry.schemas.config import DagConfig, Section
from quarry.schemas.rl import RlTask

TASKS = ("element_perception", "grounding", "action", "goal_action", "critic", "ui_to_code", "code_to_ui")
TRAJECTORY = "trajectory"  # rows of explored trajectories (trajectory.enabled; operators/gui/explore.py)
UI_CODE_TASKS = ("ui_to_code", "code_to_ui")  # the UI-to-code level (operators/gui/ui_code.py)


class Viewport(Section):
    """One browser window size a page is rendered at."""

    name: str = Field("desktop", pattern=r"^[A-Za-z0-9_\-]+$", description="tag carried to rows (`viewport`)")
    width: int = Field(1280, ge=64, le=4096)
    height: int = Field(720, ge=64, le=4096)
    device_scale_factor: float = Field(1.0, gt=0, le=4)
    is_mobile: bool = Field(False, description="mobile meta-viewport handling and touch events")


class RenderConfig(Section):
    width: int = Field(1280, ge=64, le=4096, description="viewport width in CSS pixels")
    height: int = Field(720, ge=64, le=4096, description="viewport height in CSS pixels")
    device_scale_factor: float = Field(1.0, gt=0, le=4, description="screenshot pixels per CSS pixel")
    extra_viewports: list[Viewport] = Field(
        default_factory=list,
        description="more viewports per URL, e.g. [{name: mobile, width: 390, height: 844, device_scale_factor: 2, "
                    "is_mobile: true}]; the main one is named `desktop`")
    timeout_s: float = Field(30.0, gt=0, le=600, description="navigation + settle (load, then network idle) per page")
    extract_timeout_s: float = Field(10.0, gt=0, le=600, description="element extraction + screenshot per page")
    settle: Literal["load", "networkidle"] = Field(
        "networkidle", description="what `settled` means: the load event, or also 500 ms without network traffic")
    executable_path: Optional[str] = Field(
        "auto", description="Chromium binary; auto = Debian's /usr/bin/chromium-headless-shell (the lighter headless "
        "browser Playwright itself uses), else /usr/bin/chromium; null = Playwright's own browser "
        "(`playwright install chromium`)")
    pages_in_flight: int = Field(4, ge=1, le=64, description="pages rendered concurrently per worker process")
    queued_pages: int = Field(
        4, ge=0, le=1024, description="pages a worker keeps submitted beyond those in flight, so the browser never "
        "waits while finished pages become tasks")
    max_elements: int = Field(400, ge=1, description="visible elements kept per page at most (DOM order)")
    max_nodes: int = Field(20_000, ge=1, description="DOM nodes inspected per page at most (huge DOMs are capped)")
    min_side_px: float = Field(2.0, ge=0, description="elements whose clipped box is thinner than this (CSS px) are dropped")
    allow_private_inputs: bool = Field(
        False, description="render input URLs on loopback/private hosts (subresources of other private origins stay blocked)")
    max_redirects: int = Field(5, ge=0, le=20)
    max_response_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="larger responses are aborted")

    def viewports(self) -> list[Viewport]:
        main = Viewport(name="desktop", width=self.width, height=self.height,
                        device_scale_factor=self.device_scale_factor)
        return [main] + list(self.extra_viewports)

    @field_validator("extra_viewports")
    @classmethod
    def _unique_names(cls, v: list[Viewport]) -> list[Viewport]:
        names = ["desktop"] + [x.name for x in v]
        if len(set(names)) != len(names):
            raise ValueError(f"viewport names must be unique (the main one is `desktop`): {names}")
        return v


class TasksConfig(Section):
    kinds: list[Literal["element_perception", "grounding", "action", "goal_action", "critic", "ui_to_code",
                        "code_to_ui"]] = Field(
        default_factory=lambda: list(TASKS), description="task kinds to emit; goal_action: an instruction naming a goal "
        "the page can do (fill and submit one of its forms, search, add a product to the cart, go to the page or "
        "section a link names) -> the next action, with the actions so far (operators/gui/goals.py); critic judges "
        "candidate answers to the "
        "page's grounding and action tasks (critic section); ui_to_code (screenshot -> HTML) and "
        "code_to_ui (HTML -> screenshot) serialise each page to one self-contained HTML document (ui_code section)")
    max_per_page: int = Field(200, ge=1, description="rows per page and task kind at most (id-seeded sample)")
    scroll: bool = Field(True, description="emit one scroll action on pages with a visible cue to scroll: taller than "
                         "the viewport, content below the fold and content cut by it (or ending within 5% of it)")
    language: Literal["en", "zh"] = Field(
        "en", description="wording of every gui task's instructions and prose answers (operators/gui/wording.py); "
        "page text quoted from the screenshot stays as the page has it; the tasks themselves (targets, boxes, "
        "actions, typed text, tiers) are the same in every language; English rows keep their ids, rows of another "
        "language get ids of their own (the id adds `lang=zh`)")


class TierConfig(Section):
    """Tier = area level + crowding bonus, capped at very_hard (see dags/gui.py)."""

    area_fractions: list[float] = Field(
        default_factory=lambda: [0.02, 0.005, 0.001, 0.0002],
        description="target area / screenshot area at or above these: level 0,1,2,3; below the last: 4")
    crowd_counts: list[int] = Field(
        default_factory=lambda: [5, 20],
        description="other visible elements of the same role: below the first +0, below the second +1, else +2")

    @field_validator("area_fractions")
    @classmethod
    def _four_descending(cls, v: list[float]) -> list[float]:
        if len(v) != 4 or v != sorted(v, reverse=True):
            raise ValueError("give 4 descending area fractions")
        return v

    @field_validator("crowd_counts")
    @classmethod
    def _two_ascending(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or v != sorted(v):
            raise ValueError("give 2 ascending counts")
        return v


class CriticConfig(Section):
    """Critic rows (operators/gui/critic.py): candidate answers to grounding and action tasks, judged."""

    errors: list[Literal["neighbour", "misread_label", "wrong_text"]] = Field(
        default_factory=lambda: ["neighbour", "misread_label", "wrong_text"],
        description="kinds of wrong candidate: the nearest other element, a misread label, a type action's wrong text")
    max_iou: float = Field(0.3, gt=0, le=1, description="a neighbour's box must have IoU below this with the target's")
    min_contrast: int = Field(24, ge=0, le=255, description="a neighbour's box must show ink: grey levels inside it "
                              "spread at least this much (a blank box is no element a person sees)")
    near: int = Field(10, ge=0, le=1000, description="neighbours within this edge gap (0-1000 units) are a tier harder")
    max_gap: int = Field(150, ge=0, le=1000, description="a neighbour lies within this edge gap (0-1000 units) of "
                         "the target; farther elements are no neighbour")


class UiCodeConfig(Section):
    """UI-to-code pairs (operators/gui/ui_code.py): the page's DOM as one self-contained HTML document, kept when
    its sandbox render matches the screenshot."""

    threshold: float = Field(0.95, ge=0, le=1, description="similarity (min of SSIM on 256-px-wide greyscale and "
                             "pixel agreement within 16/255) a pair needs; below: ui_code/render_mismatch")
    max_nodes: int = Field(3000, ge=1, description="pages with more DOM elements give no pair (ui_code/too_large)")
    max_bytes: int = Field(400_000, ge=1024, description="documents larger than this (UTF-8 bytes, assets inlined) "
                           "give no pair (ui_code/too_large)")
    max_asset_bytes: int = Field(1_000_000, ge=0, description="served-folder files larger than this are dropped, "
                                 "not inlined")
    quiet_ms: int = Field(200, ge=0, le=10_000, description="the DOM is watched this long after the screenshot; a "
                          "change means a script rewrites it (ui_code/unstable_dom)")
    tier_elements: list[int] = Field(default_factory=lambda: [50, 150, 400, 1000],
                                     description="elements serialised at or above these: size level 1, 2, 3, 4")
    tier_depths: list[int] = Field(default_factory=lambda: [10, 18],
                                   description="deepest element nesting at or above these: +1, +2 (capped at very_hard)")

    @field_validator("tier_elements")
    @classmethod
    def _four_ascending(cls, v: list[int]) -> list[int]:
        if len(v) != 4 or v != sorted(v):
            raise ValueError("give 4 ascending element counts")
        return v

    @field_validator("tier_depths")
    @classmethod
    def _two_depths(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or v != sorted(v):
            raise ValueError("give 2 ascending depths")
        return v


class TrajectoryConfig(Section):
    """Trajectory-level tasks (operators/gui/explore.py): explore a site by rules, replay once, keep matches."""

    enabled: bool = Field(False, description="explore served folders and URL lists into multi-step trajectories")
    max_steps: int = Field(6, ge=1, le=50, description="actions per trajectory at most")
    max_pages: int = Field(8, ge=1, le=200, description="distinct pages visited per site at most")
    seconds_per_site: float = Field(60.0, gt=0, le=600, description="wall time to explore one site (replay: the same)")
    settle_ms: int = Field(300, ge=0, le=10_000, description="quiet time after each action before the next screenshot")


class GuiInputConfig(Section):
    url_column: str = Field("url", description="Parquet/JSONL column holding the page URL")
    html_suffixes: list[str] = Field(default_factory=lambda: [".html", ".htm"],
                                     description="files served from a directory input")


class GuiConfig(DagConfig):
    input: GuiInputConfig = GuiInputConfig()
    render: RenderConfig = RenderConfig()
    tasks: TasksConfig = TasksConfig()
    tiers: TierConfig = TierConfig()
    critic: CriticConfig = CriticConfig()
    ui_code: UiCodeConfig = UiCodeConfig()
    trajectory: TrajectoryConfig = TrajectoryConfig()


class PageInput(Row):
    """One page to render at one viewport, as the reader yields it.

    `kind="url"`: `url` is fetched as given. `kind="html"`: `url` is the file's
    path relative to `root`, served by the worker's loopback server.
    """

    page_id: str
    source: str
    origin: Origin
    kind: Literal["url", "html"]
    url: str
    root: Optional[str] = None
    viewport: Viewport


class GuiRow(RlTask, Sample):
    """One GUI task on one screenshot (the RL contract of `schemas/rl.py`); the screenshot is `DIR/images` row
    `image_id`."""

    image_id: str
    width: Annotated[int, ArrowType(pa.int32())] = Field(description="screenshot width in pixels")
    height: Annotated[int, ArrowType(pa.int32())]
    viewport: str
    page_url: str = Field(description="the URL as given, or the html file's path relative to the input folder")
    final_url: str = Field(description="the URL the page ended at (after redirects); for served html the path inside the input folder, like page_url (the loopback port changes per run)")
    expression: Optional[str] = Field(None, description="the referring expression (grounding, action)")
    expression_kind: Optional[str] = Field(None, description="name | positional | role")
    action: Optional[str] = Field(None, description="click(x,y) | type(x,y,\"text\") | scroll(x,y,\"down\")")
    goal: Optional[str] = Field(None, description="goal_action, trajectory: the goal the instruction names (the "
                                "steps of one goal share it)")
    goal_kind: Optional[Literal["form", "search", "cart", "page", "section"]] = Field(
        None, description="goal_action: where the goal comes from: a form to fill and submit, a search form, a "
        "product's add-to-cart button, a link to another page, a link to a section of this page")
    history: Optional[list[str]] = Field(None, description="goal_action, trajectory: the actions before this one "
                                         "(action grammar, oldest first); goal_action: the screenshot is the page "
                                         "before all of them, trajectory: the page after them")
    # trajectory rows (operators/gui/explore.py): one row per step; null on the other tasks
    trajectory_id: Optional[str] = Field(None, description="trajectory: the id the steps of one trajectory share")
    step: Optional[int] = Field(None, description="trajectory: this step's index (0 first); its screenshot is the "
                                "page before its action")
    steps: Optional[int] = Field(None, description="trajectory: how many steps the trajectory has")
    url_after: Optional[str] = Field(None, description="trajectory: the URL after this step's action (served "
                                     "folders: the path inside the folder, like final_url)")
    trajectory_end: Optional[str] = Field(None, description="trajectory: why exploration stopped: max_steps | "
                                          "max_pages | time | loop | no_action | unstable_page")
    element_tag: Optional[str] = None
    element_role: Optional[str] = None
    element_name: Optional[str] = None
    element_interactive: Optional[bool] = None
    element_path: Optional[str] = None
    box: Optional[list[int]] = Field(None, description="[x1, y1, x2, y2] normalised to 0-1000")
    box_px: Optional[list[float]] = Field(None, description="[x1, y1, x2, y2] in screenshot pixels")
    box_kind: Optional[Literal["text", "block"]] = Field(
        None, description="text: the box is the union of the element's rendered text lines | block: its layout box")
    block_box: Optional[list[int]] = Field(None, description="[x1, y1, x2, y2] 0-1000: the element's layout box "
                                           "(equal to box when box_kind is block)")
    area_fraction: Annotated[Optional[float], ArrowType(pa.float32())] = None
    similar_elements: Optional[int] = Field(None, description="other visible elements with the target's role")
    page_elements: int = Field(description="visible elements found on the page")
    elements_capped: bool = Field(description="the page hit render.max_elements or render.max_nodes")
    blocked_requests: int = Field(0, description="requests the address guard refused on this page")
    # critic rows (operators/gui/critic.py); null on the other tasks. The element and box columns are the target's.
    judged_task: Optional[str] = Field(None, description="critic: the task the candidate answers (grounding | action)")
    judged_id: Optional[str] = Field(None, description="critic: sample_id of that grounding or action task")
    candidate: Optional[str] = Field(None, description="critic: the candidate answer judged: the element it names, "
                                     "then its box or action inside <|begin_of_box|>...<|end_of_box|> (0-1000 grid)")
    candidate_box: Optional[list[int]] = Field(None, description="critic: [x1, y1, x2, y2] 0-1000 of the element the "
                                               "candidate's box or action lands on")
    candidate_iou: Annotated[Optional[float], ArrowType(pa.float32())] = Field(
        None, description="critic: IoU of candidate_box with the target's box")
    verdict: Optional[Literal["correct", "incorrect"]] = Field(None, description="critic: the answer, as a column")
    error_kind: Optional[Literal["none", "neighbour", "misread_label", "wrong_text"]] = Field(
        None, description="critic: what is wrong with the candidate (none when correct)")
    reason: Optional[str] = Field(None, description="critic: one sentence naming what is right or wrong")
    # ui_to_code / code_to_ui rows (operators/gui/ui_code.py); null on the other tasks
    html: Optional[str] = Field(None, description="the self-contained HTML document that renders to the screenshot")
    code_similarity: Annotated[Optional[float], ArrowType(pa.float32())] = Field(
        None, description="min(code_ssim, code_pixel_agreement): the document's sandbox render vs the screenshot")
    code_ssim: Annotated[Optional[float], ArrowType(pa.float32())] = Field(
        None, description="SSIM of the two renders, greyscale, 256 px wide")
    code_pixel_agreement: Annotated[Optional[float], ArrowType(pa.float32())] = Field(
        None, description="share of pixels whose RGB channels all agree within 16/255")
    code_bytes: Optional[int] = Field(None, description="UTF-8 size of `html`")
    code_elements: Optional[int] = Field(None, description="elements in `html`")
    code_depth: Optional[int] = Field(None, description="deepest element nesting of `html` (body = 1)")
    code_assets_inlined: Optional[int] = Field(None, description="served-folder files inlined as data: URIs")
    code_assets_dropped: Optional[int] = Field(None, description="assets left out (not from the served folder, "
                                               "too large, embedded frames and media)")
