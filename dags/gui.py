"""`quarry run gui`: GUI grounding tasks from real web pages rendered by Playwright + Chromium.

GLM-4.5V §3 (render pages, keep every visible DOM element with its rendered
box, boxes on a 0-1000 grid) and the GUI task hierarchy of GLM-5V-Turbo §4:
`element_perception` (box -> what it is and says), `grounding`
(expression -> box), single-step `action` (instruction -> click / type /
scroll) and `goal_action` (a goal the page can do -> the next action, with the
actions so far) rows, `critic` rows that judge candidate answers to the grounding and
action tasks, one screenshot per page stored once in `DIR/images`.

Language (`tasks.language`: en | zh; `operators/gui/wording.py`): the wording of
every instruction and prose answer (descriptions, critic prompts, verdict words
and reasons, UI-to-code prompts); page text quoted from the screenshot stays as
the page has it. The tasks are the same in both languages (targets, boxes,
actions, typed text, tiers); English rows keep their ids, Chinese rows get ids
of their own (`lang=zh` in the id), so a bilingual set can hold both.

Inputs: a URL list (`.txt`, one `http(s)://` or `file://` URL per line, `#`
comments), a Parquet/JSONL table with a `url` column (`input.url_column`), or
a folder of saved `.html` pages (served to the browser from loopback by each
worker, so relative assets load). One input is one page at one viewport
(`render.extra_viewports` adds more per page).

Tier rule (`operators/gui/tasks.py`): area level from the target's share of
the screenshot (>= 2% level 0, >= 0.5% 1, >= 0.1% 2, >= 0.02% 3, else 4;
`tiers.area_fractions`) plus a crowding bonus from the number of other visible
elements with the same role (< 5: +0, < 20: +1, else +2; `tiers.crowd_counts`),
capped at very_hard; tiers in order very_easy, easy, medium, hard, very_hard.
Scroll actions are very_easy.

Goal-level actions (`goal_action`; `operators/gui/goals.py`): goals only from
what the page can do: a form with one visible submit button whose every
fillable field is visible, empty and in reading order, with no other control
invalid (sign in / sign up / subscribe / "submit the "..." form" with the
value of each field; a lone search field: "search for ..."), one row per step
(type into each field with the earlier steps as history, then click submit);
an add-to-cart button in a card with one heading that names a product no other
heading names; a link whose shown text (1-4 words, not a question or verb
phrase, unique on the page) names another page or a section of this one (the
fragment's id exists). Same answer and verifier as `action` (the target's box).
Tier: the target's action tier +1, +1 more after earlier actions, capped.

Critic (`critic`: task + candidate answer -> correct / incorrect;
`operators/gui/critic.py`): per grounding or action task, the wrong candidates
the page supplies honestly (`neighbour`: the nearest other visible element,
its real box, IoU < `critic.max_iou` with the target, ink inside it;
`misread_label`: the target's box said of its label with one OCR-style
confusion, never the truth nor another text of the page; `wrong_text`: a
type action with text that does not fit the field) plus the task's own answer
as one correct candidate; answer `correct`/`incorrect`, exact verifier, the
reason as a column. Tier: the correct candidate keeps its task's; wrong_text
easy; misread hard for look-alike glyphs (l/1, O/0, rn/m), medium for a
dropped or swapped letter; neighbour easy +1 near (edge gap <= 10/1000), +1
same kind of element, +1 same name too, capped at very_hard.

UI-to-code (`ui_to_code`: screenshot -> HTML, `code_to_ui`: HTML -> screenshot;
`operators/gui/ui_code.py`): each rendered page's DOM, serialised after
layout with its used styles as one self-contained document (no scripts, no
external resources: served-folder assets inlined as data: URIs, others
dropped), rendered again in a fresh context with JavaScript off and every
request aborted, and kept when similarity = min(SSIM on 256-px greyscale,
pixel agreement within 16/255) >= `ui_code.threshold` (0.95). Its tier:
size level from elements serialised (< 50: 0, < 150: 1, < 400: 2, < 1000: 3,
else 4; `ui_code.tier_elements`) plus a depth bonus (deepest nesting < 10:
+0, < 18: +1, else +2; `ui_code.tier_depths`), capped at very_hard. A page
whose code gives no pair is one `ui_code` reject (too_large, unstable_dom,
navigated, network_request, render_mismatch, ...) besides its other rows.

Accounting: many rows come from one page, so `one_to_one` is false; every
page ends as rows or exactly one reject, and `extra.pages` says so
(`pages.inputs == pages.with_rows + rejected_total`). Stages count pages
(`render`, `tasks`) and rows (`tasks.out`); `ui_code` rejects are per pair, not per page, so
`pages.rejected` leaves them out and `extra.ui_code` counts them (`pages`, `pairs`, `rejected`).

Trajectories (`trajectory.enabled`; `operators/gui/explore.py`): from every page input, a rule-based walk
(seeded by the page: an in-origin link, or an in-origin form filled with values that fit each field and
submitted), at most `trajectory.max_steps` actions, `max_pages` pages and `seconds_per_site`; replayed at the
recorded coordinates in a fresh context and kept only if it ends in the same state (URL and visible text).
One `trajectory` row per step: the goal (every link opened, value typed and button pressed, and where it
ends), the actions so far (the screenshot is the page after them) -> the next action, verified like
`action` by the target's box; all on the 0-1000 grid. Tier: the target's area level with the page's
choices as crowding, +1 for the goal, +1 after the first step, capped. A trajectory that is not kept is one
`trajectory` reject (replay_mismatch, no_actions, start_failed) of a page that may have rows of its own, so
`pages.rejected` leaves them out and `extra.trajectory` counts them (`explored == kept + rejected`).
"""

from __future__ import annotations

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, RunCounts, Stage, with_reasons
from quarry.operators.gui.browser import BrowserLaunchError, find_chromium
from quarry.operators.inputs import reasons as read_reasons
from quarry.pipelines.decontam import FieldProbe
from quarry.pipelines.gui import STAGE_REASONS, GuiPipeline, ReadPages, plan_gui_inputs
from quarry.pipelines.stats import CountTo
from quarry.schemas.config import ConfigError
from quarry.schemas.gui import GuiConfig, GuiRow


def plan(patterns: list[str], cfg: GuiConfig):
    try:
        find_chromium(cfg.render.executable_path)
    except BrowserLaunchError as e:
        raise ConfigError(str(e)) from None
    return plan_gui_inputs(patterns, cfg)


def read(pipeline, cfg: GuiConfig, files):
    return pipeline | ReadPages(files, cfg.source or "unknown", cfg)


def transform(pages, cfg: GuiConfig, files, output: str) -> FamilyOutputs:
    out = pages | "Gui" >> GuiPipeline(cfg, output)
    out.blocked | "CountBlocked" >> CountTo(output, "requests_blocked", sum_values=True)
    return FamilyOutputs(out.rows, out.rejected, out.images)


def describe(cfg: GuiConfig, files) -> BuildInfo:
    r = cfg.render
    info = BuildInfo(extra={
        "browser": find_chromium(r.executable_path) or "playwright-bundled chromium",
        "viewports": [v.model_dump() for v in r.viewports()],
        "timeout_s": r.timeout_s,
        "pages_in_flight": r.pages_in_flight,
        "tasks": list(cfg.tasks.kinds) + (["trajectory"] if cfg.trajectory.enabled else []),
        "input_files": len(files),
    })
    if any(f.kind == "html" for f in files):
        info.notes.append("saved pages were served from a loopback HTTP server per worker; their rows' page_url is "
                          "the path relative to the input folder")
    return info


def finish(output: str, cfg: GuiConfig, info: BuildInfo, run: RunCounts) -> None:
    counts, pages_in = run.counts, run.inputs()
    code_rejected = sum(run.rejected.get("ui_code", {}).values())
    traj_rejected = sum(run.rejected.get("trajectory", {}).values())
    # a ui_code reject is one pair, a trajectory reject one trajectory, of a page that may have rows
    rejected = run.rejected_total - code_rejected - traj_rejected
    with_rows = counts.get("images.out", 0)
    info.extra["pages"] = {
        "inputs": pages_in, "rendered": counts.get("render.out", 0), "with_rows": with_rows,
        "rejected": rejected, "balanced": pages_in == with_rows + rejected,
    }
    info.extra["requests_blocked"] = counts.get("requests_blocked", 0)
    info.extra["ui_code"] = {"pages": counts.get("ui_code.in", 0), "pairs": counts.get("ui_code.out", 0),
                             "rejected": code_rejected,
                             "balanced": counts.get("ui_code.in", 0) == counts.get("ui_code.out", 0) + code_rejected}
    if cfg.trajectory.enabled:
        explored, kept = counts.get("trajectory.in", 0), counts.get("trajectory.kept", 0)
        info.extra["trajectory"] = {"explored": explored, "kept": kept, "steps": counts.get("trajectory.out", 0),
                                    "rejected": traj_rejected, "balanced": explored == kept + traj_rejected}


# What this DAG's reader can reject a record for (operators/inputs/reasons.py).
READ_REASONS = (read_reasons.UNREADABLE_FILE, read_reasons.FILE_TOO_LARGE, read_reasons.INVALID_JSON, read_reasons.RECORD_TOO_LARGE, read_reasons.MISSING_URL, read_reasons.INVALID_URL)


SPEC = DagSpec(
    name="gui",
    summary="GUI grounding: Playwright renders pages; visible elements with boxes -> perception, grounding, action, "
            "goal-level action and critic tasks; UI-to-code pairs",
    stages=with_reasons((
        Stage("read", "URL lists, Parquet/JSONL url tables, or folders of saved .html pages -> one page per viewport", where="operators/inputs/files.py, pipelines/gui.py"),
        Stage("render", "Chromium via Playwright: fresh context per page, pages in flight, address guard on every request, "
                        "screenshot + visible elements (box, role, name, interactive, DOM path)", where="operators/gui/browser.py, pipelines/gui.py"),
        Stage("tasks", "element_perception, grounding (name or positional expressions, ambiguous ones dropped), "
                       "action (click/type/scroll); goal_action (a goal from the page's own forms, product cards "
                       "and links -> the next action, with the history); tier from area and crowding; critic: "
                       "candidate answers to the "
                       "grounding and action tasks (a neighbouring element, a misread label, wrong typed text, and "
                       "the right one) judged correct / incorrect with the reason",
              where="operators/gui/tasks.py, operators/gui/goals.py, operators/gui/critic.py"),
        Stage("ui_code", "ui_to_code / code_to_ui: the rendered DOM as one self-contained HTML document (used styles, "
                         "no scripts, assets inlined or dropped), rendered again with JavaScript off and every request "
                         "aborted; kept at similarity >= ui_code.threshold; tier from DOM size and depth",
              where="operators/gui/ui_code.py, pipelines/gui.py"),
        Stage("trajectory", "optional (--set trajectory.enabled=true): from each page, explore by rules (in-origin "
                            "links, in-origin forms filled with values that fit each field, submitted) into a "
                            "multi-step trajectory, replay it in a fresh context, keep it when the end states match; "
                            "one row per step (goal, actions so far, screenshot -> action)",
              where="operators/gui/explore.py, pipelines/gui.py"),
        Stage("decontam", "optional (--set decontam.bench=PATH): question, expression and element name against benchmark sets", where="pipelines/decontam.py"),
        Stage("write", "task rows by source and tier; screenshots once in DIR/images", where="pipelines/write.py"),
    ), {**STAGE_REASONS, "read": READ_REASONS}),
    config_model=GuiConfig,
    plan=plan,
    read=read,
    transform=transform,
    describe=describe,
    row_model=GuiRow,
    # task text (question, expression, element name) against benchmark questions (--set decontam.bench=PATH)
    decontam_fields=FieldProbe(text=("question", "expression", "element_name")),
    unsourced="pages without a `source` field",
    one_to_one=False,
    finish=finish,
)
