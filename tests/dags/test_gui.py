"""The gui DAG end to end (real Beam, real Chromium, real Parquet): the demo site and a URL list
with broken and hostile pages; the manifest adds up per page, reruns give the same ids."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from quarry.dags.demos import gui as gui_demo
from quarry.dags.gui import SPEC, plan
from quarry.dags.runner import reject_counts, resolve_config, run_dag
from quarry.operators.grade import contract
from quarry.operators.gui.browser import find_chromium
from quarry.pipelines.gui import STAGE_REASONS
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.common import TIERS, ImageRecord
from quarry.schemas.config import ConfigError
from quarry.schemas.gui import GuiRow
from quarry.schemas.rl import VerifierSpec

pytestmark = pytest.mark.slow


def run(inputs, out, sets):
    cfg = resolve_config(SPEC, None, sets, None)
    return run_dag(SPEC, inputs, str(out), cfg)


def sql(out: Path, query: str):
    con = duckdb.connect()
    con.execute(f"CREATE VIEW rows AS SELECT * FROM read_parquet('{out}/data/**/*.parquet', hive_partitioning=true)")
    con.execute(f"CREATE VIEW rejects AS SELECT * FROM read_parquet('{out}/rejects/*.parquet')")
    con.execute(f"CREATE VIEW images AS SELECT * FROM read_parquet('{out}/images/*.parquet')")
    return con.sql(query).fetchall()


def test_demo_end_to_end(tmp_path):
    """One test, so parallel test workers do not each run the demo (a run is several seconds)."""
    demo = gui_demo.build(tmp_path)
    inputs, sets = demo.patterns, demo.sets
    demo = (tmp_path, inputs, sets, run(inputs, tmp_path / "out", sets))
    check_manifest_accounts_for_every_page(demo)
    check_rows_schema_images_and_tiers(demo)
    check_hidden_elements_never_appear_and_duplicates_are_disambiguated(demo)
    check_ui_code_pairs(demo)
    check_critic_rows(demo)
    check_goal_actions(demo)
    check_trajectories(demo)
    check_rerun_gives_the_same_ids(demo, tmp_path / "rerun")
    check_chinese_wording_gives_the_same_tasks(demo, tmp_path / "zh")


def check_manifest_accounts_for_every_page(demo):
    folder, _, _, m = demo
    pages = m.extra["pages"]
    assert pages == {"inputs": 4, "rendered": 3, "with_rows": 3, "rejected": 1, "balanced": True}
    assert m.rejected == {"render": {"render_timeout": 1}, "trajectory": {"start_failed": 1}}
    assert m.extra["trajectory"] == {"explored": 4, "kept": 3, "steps": m.stages["trajectory"].outputs,
                                     "rejected": 1, "balanced": True}
    assert m.extra["ui_code"] == {"pages": 3, "pairs": 3, "rejected": 0, "balanced": True}
    assert m.stages["ui_code"].inputs == 3 and m.stages["ui_code"].outputs == 3
    assert m.stages["render"].inputs == 4 and m.stages["render"].outputs == 3
    assert m.stages["tasks"].outputs + m.stages["trajectory"].outputs == m.kept > 30
    assert m.extra["requests_blocked"] >= 1  # the metadata-service image on shop.html
    assert m.extra["browser"] == find_chromium("auto")  # the binary `auto` resolved to, not the word
    assert json.loads((folder / "out" / "manifest.json").read_text())["one_to_one"] is False
    assert sql(folder / "out", "SELECT origin.key, stage, reason FROM rejects ORDER BY stage") == [
        ("slow.html", "render", "render_timeout"), ("slow.html", "trajectory", "start_failed")]


def check_rows_schema_images_and_tiers(demo):
    out = demo[0] / "out"
    for f in (out / "data").rglob("*.parquet"):
        assert pq.read_schema(f).remove_metadata().equals(arrow_schema(GuiRow).remove_metadata())
    for f in (out / "images").rglob("*.parquet"):
        assert pq.read_schema(f).remove_metadata().equals(arrow_schema(ImageRecord).remove_metadata())
    assert sql(out, "SELECT count(*) FROM rows WHERE image_id NOT IN (SELECT image_id FROM images)") == [(0,)]
    [(n, distinct)] = sql(out, "SELECT count(*), count(DISTINCT image_id) FROM images")
    assert n == distinct >= 3  # the pages' screenshots and the trajectories' steps, each once
    assert sql(out, "SELECT min(width), max(height) FROM images") == [(1280, 720)]
    tiers = {t for (t,) in sql(out, "SELECT DISTINCT tier FROM rows")}
    assert tiers <= set(TIERS) and len(tiers) >= 3
    assert {t for (t,) in sql(out, "SELECT DISTINCT task FROM rows")} == {
        "element_perception", "grounding", "action", "goal_action", "critic", "ui_to_code", "code_to_ui",
        "trajectory"}
    bad = sql(out, "SELECT count(*) FROM rows WHERE box IS NOT NULL AND (box[1] > box[3] OR box[2] > box[4] "
                   "OR box[1] < 0 OR box[4] > 1000)")
    assert bad == [(0,)]


def check_hidden_elements_never_appear_and_duplicates_are_disambiguated(demo):
    out = demo[0] / "out"
    names = " | ".join(n or "" for (n,) in sql(out, "SELECT DISTINCT element_name FROM rows"))
    for hidden in ("invisible", "Off-screen", "Close dialog", "hidden under the cookie banner", "Below the fold",
                   "Tiers</h2>"):
        assert hidden not in names
    carts = sorted(e for (e,) in sql(out, "SELECT expression FROM rows WHERE task='grounding' "
                                         "AND element_name='Add to cart'"))
    assert len(carts) == 3 and len(set(carts)) == 3 and all("Add to cart\" button " in c for c in carts)
    actions = dict(sql(out, "SELECT expression, action FROM rows WHERE task='action' AND page_url='login.html'"))
    assert actions['the "Sign in" button'].startswith("click(")
    assert actions['the "Email address" text field'].startswith("type(")


def check_ui_code_pairs(demo):
    """Every rendered demo page gives a screenshot <-> HTML pair whose sandbox render matches its screenshot."""
    out = demo[0] / "out"
    pairs = sql(out, "SELECT page_url, task, tier, answer, html, code_similarity, code_bytes, verifier, image_id "
                     "FROM rows WHERE task IN ('ui_to_code', 'code_to_ui') ORDER BY page_url, task")
    assert [(p, t) for p, t, *_ in pairs] == [(p, t) for p in ("docs.html", "login.html", "shop.html")
                                              for t in ("code_to_ui", "ui_to_code")]
    for page, task, tier, answer, html, sim, size, verifier, image_id in pairs:
        assert sim >= 0.95 and size == len(html.encode()) and tier == "very_easy"
        spec = None if verifier is None else {k: v for k, v in verifier.items() if v not in (None, False)}
        assert spec == ({"kind": "html_render", "viewport": "1280x720@1"} if task == "ui_to_code" else None)
        assert answer == (html if task == "ui_to_code" else "")
        assert "<script" not in html and "<link" not in html and "127.0.0.1" not in html
    # the screenshot is the page's own (stored once with the other tasks of the page)
    assert sql(out, "SELECT count(DISTINCT image_id) FROM rows WHERE task = 'ui_to_code'") == [(3,)]
    shop = next(h for p, t, _, _, h, *_ in pairs if p == "shop.html")
    assert shop.count("data:image/svg+xml;base64,") == 4  # logo.svg and 3 x mug.svg, inlined from the served folder
    assert "169.254.169.254" not in shop  # the blocked metadata image was dropped


def check_critic_rows(demo):
    """Critic rows judge the demo's grounding and action rows on the same screenshot: every error kind, verdicts
    that agree with the judged row's own verifier, boxes inside the screenshot, one correct candidate per target."""
    out = demo[0] / "out"
    rows = sql(out, "SELECT c.sample_id, c.image_id, c.width, c.height, c.question, c.answer, c.verifier, c.verdict, "
                    "c.error_kind, c.reason, c.candidate, c.candidate_box, c.candidate_iou, c.box, c.element_name, "
                    "c.tier, j.task, j.answer, j.verifier, j.image_id, j.expression, c.expression, c.judged_task "
                    "FROM rows c JOIN rows j ON c.judged_id = j.sample_id WHERE c.task = 'critic'")
    assert sql(out, "SELECT count(*) FROM rows WHERE task = 'critic'") == [(len(rows),)]  # each judges a row
    kinds = Counter(r[8] for r in rows)
    assert set(kinds) == {"none", "neighbour", "misread_label", "wrong_text"} and kinds["wrong_text"] >= 2
    assert kinds["none"] * 4 >= len(rows)  # one correct candidate per target that has up to three wrong ones
    per_target = Counter((r[16], r[20], r[19]) for r in rows if r[8] == "none")
    assert set(per_target.values()) == {1}
    for (sid, image_id, w, h, question, answer, verifier, verdict, kind, reason, cand, cbox, ciou, box, name, tier,
         jtask, janswer, jverifier, jimage, jexpr, expr, judged_task) in rows:
        assert image_id == jimage and jtask == judged_task and expr == jexpr
        assert answer == verdict == ("correct" if kind == "none" else "incorrect")
        assert {k: v for k, v in verifier.items() if v not in (None, False)} == {"kind": "exact"}
        assert cand in question and reason and tier in TIERS
        for b in (box, cbox):  # drawn inside the screenshot
            assert 0 <= b[0] < b[2] <= 1000 and 0 <= b[1] < b[3] <= 1000
            assert b[2] * w / 1000 <= w and b[3] * h / 1000 <= h
        spec = VerifierSpec.model_validate({k: v for k, v in jverifier.items() if v is not None})
        right = contract.build(spec)(cand, contract.reference(spec, janswer)).reward == 1.0
        assert right == (kind in ("none", "misread_label")), (kind, cand, janswer)
        if kind == "neighbour":
            assert cbox != box and ciou < 0.3 and reason.endswith(f"the instruction asks for {expr}")
        elif kind == "misread_label":
            said = cand.split(" <|begin_of_box|>")[0]
            assert cbox == box and said != expr and f'the screenshot shows "{name}"' in reason
        elif kind == "wrong_text":
            assert jtask == "action" and janswer.startswith("<|begin_of_box|>type(")
        else:
            assert cand == f"{expr} {janswer}"
    # the label beside its field is a realistic wrong target
    reasons = {r[9] for r in rows}
    assert 'the box is on the "Email address" label, the instruction asks for the "Email address" text field' in reasons


def check_goal_actions(demo):
    """Goal-level actions from the demo's own form, product cards and links: the steps of the sign-in form in
    order with their history, one goal per mug, link goals only for links that name where they lead; each gold
    answer scores 1 with its verifier and its point lies inside its target's box on the screenshot."""
    out = demo[0] / "out"
    rows = sql(out, "SELECT page_url, goal_kind, goal, history, action, answer, verifier, box, box_px, width, height, "
                    "element_name, tier, question FROM rows WHERE task = 'goal_action' ORDER BY page_url, goal, "
                    "len(history)")
    goals = Counter((page, kind) for page, kind, *_ in rows)
    assert goals == {("docs.html", "page"): 2, ("docs.html", "section"): 2, ("login.html", "form"): 3,
                     ("shop.html", "cart"): 3, ("shop.html", "page"): 3, ("shop.html", "search"): 2}
    login = [r for r in rows if r[0] == "login.html"]
    assert login[0][2].startswith('Sign in with the email address "') and '" and the password "' in login[0][2]
    assert [r[11] for r in login] == ["Email address", "Password", "Sign in"]
    assert [r[3] for r in login] == [[], [login[0][4]], [login[0][4], login[1][4]]]
    assert "the screenshot was taken before them" in login[2][13]
    assert {r[2] for r in rows if r[1] == "cart"} == {f'Add the "{m}" to the cart.' for m in ("Blue mug", "Tall mug",
                                                                                               "Travel mug")}
    linked = {r[11] for r in rows if r[1] in ("page", "section")}
    # not "Back to the shop" (a verb phrase), "Forgot your password?" (a question), nor docs.html's link to itself
    assert linked == {"Shop", "Sign in", "Tiers", "Rejects", "Home", "Docs"}
    for page, kind, goal, history, action, answer, verifier, box, box_px, w, h, name, tier, question in rows:
        assert goal in question and tier in TIERS and all(a in question for a in history)
        spec = VerifierSpec.model_validate({k: v for k, v in verifier.items() if v is not None})
        assert spec.kind == "action" and spec.box == [float(v) for v in box]
        assert contract.build(spec)(answer, contract.reference(spec, answer)).reward == 1.0
        x, y = (int(v) for v in re.match(r"\w+\((\d+),(\d+)", action).groups())
        assert box_px[0] <= x * w / 1000 <= box_px[2] and box_px[1] <= y * h / 1000 <= box_px[3]


def check_trajectories(demo):
    """One kept trajectory from each rendered page: steps in order, the history the earlier steps' actions, the
    goal naming each step's target, every gold answer scoring 1, each click inside its target on the step's own
    screenshot, and the form steps typing values that fit their fields; the screenshots follow the page."""
    out = demo[0] / "out"
    rows = sql(out, "SELECT trajectory_id, step, steps, page_url, final_url, url_after, goal, history, action, answer, "
                    "verifier, box, box_px, width, height, element_name, tier, question, image_id, trajectory_end "
                    "FROM rows WHERE task = 'trajectory' ORDER BY page_url, step")
    by_traj: dict[str, list] = {}
    for r in rows:
        by_traj.setdefault(r[0], []).append(r)
    assert sorted({r[3] for r in rows}) == ["docs.html", "login.html", "shop.html"] and len(by_traj) == 3
    for steps in by_traj.values():
        assert [r[1] for r in steps] == list(range(steps[0][2])) and steps[0][4] == steps[0][3]
        for prev, r in zip(steps, steps[1:]):
            assert r[7] == prev[7] + [prev[8]] and r[4] == prev[5]  # history grows; each step starts where the last ended
        assert steps[-1][6].endswith(f"you should end at {steps[-1][5]}.")
        assert len({r[18] for r in steps if not r[8].startswith("type(")}) >= 1
    for (tid, step, n, page, start, after, goal, history, action, answer, verifier, box, box_px, w, h, name, tier,
         question, image_id, end) in rows:
        assert goal in question and all(a in question for a in history) and name and name in goal
        assert tier in TIERS and end in ("max_steps", "max_pages", "loop", "no_action", "broken_form")
        spec = VerifierSpec.model_validate({k: v for k, v in verifier.items() if v is not None})
        assert spec.kind == "action" and spec.box == [float(v) for v in box]
        assert contract.build(spec)(answer, contract.reference(spec, answer)).reward == 1.0
        x, y = (int(v) for v in re.match(r"\w+\((\d+),(\d+)", action).groups())
        assert box_px[0] - 1 <= x * w / 1000 <= box_px[2] + 1 and box_px[1] - 1 <= y * h / 1000 <= box_px[3] + 1
        assert "127.0.0.1" not in after + question
        assert after.split("?")[0] not in ("index.html", "reset.html")  # links to missing pages are never a step
    typed = {r[15]: r[8] for r in rows if r[8].startswith("type(")}
    assert re.search(r'"[^"@]+@example\.\w+"', typed["Email address"]) and "@" not in typed["Password"]
    login = next(s for s in by_traj.values() if s[0][3] == "login.html")
    assert [r[15] for r in login] == ["Email address", "Password", "Sign in"]
    assert "the screenshot shows the page after them" in login[2][17]
    # the step after typing shows the typed text: its screenshot is not the page's first one
    assert len({r[18] for r in login}) == 3


def check_rerun_gives_the_same_ids(demo, tmp_path):
    folder, inputs, sets, m = demo
    again = run(inputs, tmp_path / "again", sets)
    assert again.kept == m.kept
    q = "SELECT sample_id, image_id, answer FROM rows ORDER BY sample_id"
    assert sql(tmp_path / "again", q) == sql(folder / "out", q)
    # Served pages' final_url is the path inside the folder, not the random loopback port: byte-identical shards.
    assert sql(tmp_path / "again", "SELECT DISTINCT final_url FROM rows ORDER BY 1") == [
        ("docs.html",), ("login.html",), ("shop.html",)]
    shards = sorted(p.relative_to(folder / "out") for p in (folder / "out" / "data").rglob("*.parquet"))
    assert shards == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again" / "data").rglob("*.parquet"))
    for rel in shards:
        assert (folder / "out" / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel


def check_chinese_wording_gives_the_same_tasks(demo, tmp_path):
    """`tasks.language=zh`: the same tasks (count, targets, boxes, actions, tiers, verdicts) as the English run,
    Han characters in every instruction and prose answer, page text quoted as it is, ids of their own."""
    folder, inputs, sets, m = demo
    zh = run(inputs, tmp_path / "zh", sets + ["tasks.language=zh"])
    assert zh.kept == m.kept and zh.rejected == m.rejected
    shape = ("SELECT task, page_url, element_path, box, box_px, action, tier, verdict, error_kind, candidate_box, "
             "candidate_iou, judged_task, image_id, code_similarity, goal_kind, history FROM rows ORDER BY ALL")
    assert sql(tmp_path / "zh", shape) == sql(folder / "out", shape)
    rows = sql(tmp_path / "zh", "SELECT task, question, answer, reason, element_name, expression FROM rows")
    han = re.compile(r"[\u4e00-\u9fff]")
    for task, question, answer, reason, name, expr in rows:
        assert han.search(question), question
        if task in ("element_perception", "critic"):
            assert han.search(answer) and (task != "critic" or han.search(reason)), (answer, reason)
        if expr and name and '"' not in name:
            assert name[:70] in expr  # page labels are quoted, not translated
    en_ids = {i for (i,) in sql(folder / "out", "SELECT sample_id FROM rows")}
    zh_ids = {i for (i,) in sql(tmp_path / "zh", "SELECT sample_id FROM rows")}
    assert len(zh_ids) == zh.kept and not en_ids & zh_ids


class Site:
    def __init__(self):
        self.routes: dict[str, tuple[int, str, bytes, dict]] = {}
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                site.hits.append(self.path)
                status, ctype, body, headers = site.routes.get(self.path, (404, "text/html", b"<h1>404</h1>", {}))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_a_missing_browser_stops_the_run_before_it_starts(tmp_path):
    cfg = resolve_config(SPEC, None, [f"render.executable_path={tmp_path}/no-chromium"], None)
    with pytest.raises(ConfigError, match="no-chromium does not exist; install Chromium"):
        plan([str(tmp_path)], cfg)


def test_url_list_with_broken_and_hostile_pages(tmp_path):
    site, victim = Site(), Site()
    try:
        site.routes["/good.html"] = (200, "text/html", (
            f'<html><body><h1>Welcome</h1><a href="/next">Next page</a><img src="{victim.base}/pixel.gif" alt="">'
            f'<script>fetch("{victim.base}/exfiltrate")</script></body></html>').encode(), {})
        site.routes["/data.json"] = (200, "application/json", b"{}", {})
        site.routes["/moved"] = (301, "text/html", b"", {"Location": f"{victim.base}/internal"})
        (tmp_path / "urls.txt").write_text("\n".join([
            f"{site.base}/good.html", f"{site.base}/gone.html", f"{site.base}/data.json", f"{site.base}/moved",
            "mailto:someone@example.org"]) + "\n")
        m = run([str(tmp_path / "urls.txt")], tmp_path / "out",
                ["render.allow_private_inputs=true", "render.timeout_s=5", "source=crawl"])
        assert victim.hits == []
        assert m.rejected == {"read": {"invalid_url": 1}, "render": {"http_error": 1, "not_html": 1,
                                                                     "blocked_redirect": 1}}
        assert m.extra["pages"] == {"inputs": 5, "rendered": 1, "with_rows": 1, "rejected": 4, "balanced": True}
        assert m.extra["requests_blocked"] >= 3
        rows = sql(tmp_path / "out", "SELECT DISTINCT source, page_url, blocked_requests FROM rows")
        assert rows == [("crawl", f"{site.base}/good.html", 2)]
    finally:
        site.httpd.shutdown()
        victim.httpd.shutdown()


@pytest.mark.slow
def test_decontam_drops_tasks_whose_text_is_a_benchmark_question(tmp_path):
    demo = gui_demo.build(tmp_path)
    inputs, sets = demo.patterns, demo.sets
    site = Path(inputs[0])
    for page in ("docs.html", "login.html", "slow.html"):  # one page is enough
        (site / page).unlink()
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "webqa.jsonl").write_text(json.dumps({"id": "w1", "question": "Add to cart"}) + "\n")
    m = run(inputs, tmp_path / "out", sets + [f"decontam.bench={tmp_path / 'bench'}"])
    dropped = m.rejected["decontam"]["contaminated_text"]
    assert dropped >= 3 and m.extra["contamination"]["by_benchmark"] == {"webqa": dropped}
    assert sql(tmp_path / "out", "SELECT count(*) FROM rows WHERE element_name = 'Add to cart'") == [(0,)]
    assert m.kept > 10  # the rest of the page's tasks stay


def test_every_reject_reason_is_listed_for_its_stage(tmp_path):
    """STAGE_REASONS names every stage of SPEC (but `read`, the reader's) and every (stage, reason) the demo wrote."""
    assert set(STAGE_REASONS) == {s.name for s in SPEC.stages} - {"read"}
    demo = gui_demo.build(tmp_path)
    run(demo.patterns, tmp_path / "out", demo.sets)
    listed = {(stage, r) for stage, reasons in STAGE_REASONS.items() for r in reasons}
    written = {(stage, r) for stage, reasons in reject_counts(str(tmp_path / "out")).items() for r in reasons
               if stage != "read"}
    assert written and written <= listed, written - listed
