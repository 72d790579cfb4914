"""Exploration and replay on small served sites, and the three hostile cases of issue 20."""

import re
import time

import pytest

from quarry.operators.gui.browser import BrowserRenderer, HtmlFolderServer, PageJob, RendererSettings, local_read
from quarry.operators.gui.explore import (
    ENDED_LOOP,
    ENDED_UNSTABLE,
    REPLAY_MISMATCH,
    Explorer,
    ExploreSettings,
    Step,
    TrajectoryResult,
    fit_value,
    goal_text,
    grid_step,
    step_tier,
)
from quarry.operators.gui.wording import ZH

from .test_browser import Site


@pytest.fixture(scope="module")
def renderer():
    r = BrowserRenderer(RendererSettings(timeout_s=3, extract_timeout_s=2, pages_in_flight=2)).start()
    yield r
    r.close()


def _site(tmp_path, pages):
    for name, body in pages.items():
        (tmp_path / name).write_text(f"<html><body>{body}</body></html>")
    return HtmlFolderServer(local_read)


def _job(server, root, path):
    return PageJob(server.url_for(str(root), path), 640, 480, allow_private=True, trusted_origin=True)


def test_explore_follows_links_fills_forms_and_replays(tmp_path, renderer):
    server = _site(tmp_path, {
        "index.html": '<h1>Shop</h1><a href="about.html">About us</a>',
        "about.html": '<h1>About</h1><form action="thanks.html"><label>Email <input type="email" name="email">'
                      '</label><button>Send</button></form>',
        "thanks.html": "<h1>Thanks</h1><p>We got it.</p>",
    })
    root = str(tmp_path)
    rel = lambda url: url.split("/", 3)[3] if "127.0.0.1" in url else url  # noqa: E731
    ex = Explorer(renderer, ExploreSettings(max_steps=5, seconds_per_site=20, settle_ms=100), rel)
    try:
        t = ex.explore_and_replay(_job(server, root, "index.html"), "seed")
        t2 = ex.explore(_job(server, root, "index.html"), "seed")
    finally:
        server.close()
    assert t.rejection is None, t.rejection
    actions = [s.action for s in t.steps]
    assert actions == [s.action for s in t2.steps]  # deterministic
    assert actions[0].startswith("click(") and re.match(r"type\(\d+,\d+,\"[^\"]+@example\.\w+\"\)", actions[1])
    assert t.steps[-1].url_after.startswith("thanks.html")
    assert t.ended == ENDED_LOOP or t.ended == "no_action"
    assert "About us" in goal_text(t)


def test_links_to_private_addresses_are_never_requested(tmp_path, renderer):
    victim = Site()
    server = _site(tmp_path, {"index.html": f'<a href="{victim.base}/secret">Secret</a>'
                                            '<a href="http://10.0.0.1/admin">Admin</a><p>home</p>'})
    try:
        t = Explorer(renderer, ExploreSettings(seconds_per_site=10)).explore(
            _job(server, str(tmp_path), "index.html"), "s")
    finally:
        server.close()
        time.sleep(0.2)
        victim.close()
    assert not t.steps and t.ended == "no_action"
    assert not victim.hits


def test_a_form_posting_elsewhere_is_not_submitted(tmp_path, renderer):
    victim = Site()
    server = _site(tmp_path, {"index.html": f'<form method="post" action="{victim.base}/steal">'
                                            '<input name="q"><button>Go</button></form>'})
    try:
        t = Explorer(renderer, ExploreSettings(seconds_per_site=10)).explore(
            _job(server, str(tmp_path), "index.html"), "s")
    finally:
        server.close()
        time.sleep(0.2)
        victim.close()
    assert not t.steps and not victim.hits


def test_a_page_that_navigates_in_a_loop_ends_in_bounded_time(tmp_path, renderer):
    server = _site(tmp_path, {
        "index.html": '<a href="a.html">A</a>',
        "a.html": '<a href="b.html">B</a>',
        "b.html": '<a href="a.html">A again</a>',
        "spin.html": '<p>spin</p><script>setTimeout(() => location.href = "spin.html?" + Math.random(), 20)</script>',
    })
    ex = Explorer(renderer, ExploreSettings(max_steps=20, max_pages=50, seconds_per_site=8, settle_ms=50))
    try:
        t = ex.explore(_job(server, str(tmp_path), "index.html"), "s")
        t0 = time.monotonic()
        (tmp_path / "start.html").write_text('<a href="spin.html">Spin</a>')
        spin = ex.explore(_job(server, str(tmp_path), "start.html"), "s")
        took = time.monotonic() - t0
    finally:
        server.close()
    assert t.ended == ENDED_LOOP and len(t.steps) <= 3
    assert took < 8 + 20 and spin.ended in (ENDED_LOOP, ENDED_UNSTABLE, "time", "max_steps", "no_action")


def test_a_trajectory_whose_end_state_differs_on_replay_is_rejected(tmp_path, renderer):
    server = _site(tmp_path, {
        "index.html": '<a href="lucky.html">Lucky</a>',
        "lucky.html": '<p id="n"></p><script>n.textContent = "number " + Math.random()</script>',
    })
    try:
        t = Explorer(renderer, ExploreSettings(seconds_per_site=10, settle_ms=50)).explore_and_replay(
            _job(server, str(tmp_path), "index.html"), "s")
    finally:
        server.close()
    assert len(t.steps) == 1 and t.rejection is not None and t.rejection.reason == REPLAY_MISMATCH


@pytest.mark.parametrize("field, kind_check", [
    ({"type": "email", "name": "contact"}, lambda v: "@" in v),
    ({"type": "password", "name": "pw"}, lambda v: len(v) >= 8 and "@" not in v),
    ({"type": "text", "name": "zip", "pattern": "[0-9]{5}"}, lambda v: v.isdigit() and len(v) == 5),
    ({"type": "search", "name": "q"}, lambda v: set(v.split()) <= {"blue", "mugs", "holds"}),
    ({"type": "text", "label": "Email address"}, lambda v: "@" in v),
])
def test_typed_values_fit_the_field_as_the_gui_tasks_choose_them(field, kind_check):
    value = fit_value(field, ["blue", "mugs", "holds"], "k")
    assert value is not None and kind_check(value), value


def test_a_field_no_text_fits_gives_none():
    assert fit_value({"type": "text", "name": "code", "pattern": "[A-Z]{12}"}, ["mugs"], "k") is None


def _step(action, box, w=1280, h=720, choices=3, target="Shop", url="shop.html"):
    return Step(b"", w, h, action, box, target, url, "fp", choices)


def test_grid_step_maps_pixels_to_the_0_1000_grid_inside_its_box():
    action, box = grid_step(_step('type(640,360,"a, b")', [600.0, 340.0, 680.0, 380.0]))
    assert action == 'type(500,500,"a, b")' and box == (469, 472, 531, 528)
    action, box = grid_step(_step("click(1279,719)", [1270.0, 700.0, 1280.0, 720.0]))
    assert action == "click(999,999)" and box[0] <= 999 <= box[2] and box[1] <= 999 <= box[3]


def test_goal_text_names_every_step_in_both_languages_and_a_form_left_unsubmitted():
    t = TrajectoryResult("x", [_step("click(1,1)", [0, 0, 2, 2], target="Shop"),
                               _step('type(1,1,"ada@example.com")', [0, 0, 2, 2], target="Email"),
                               _step("click(1,1)", [0, 0, 2, 2], target="Sign\n in", url="done.html")])
    assert goal_text(t) == ('Starting here, open "Shop", then fill in "ada@example.com" as "Email" and press '
                            '"Sign in"; you should end at done.html.')
    assert goal_text(t, ZH).startswith("从这里开始，打开“Shop”，然后填写“Email”填“ada@example.com”")
    t.steps = t.steps[:2]
    assert goal_text(t).endswith('then fill in "ada@example.com" as "Email"; you should end at shop.html.')


def test_step_tier_rises_after_the_first_step_and_with_choices():
    big = [0.0, 0.0, 400.0, 300.0]  # 13% of the screenshot: level 0
    assert step_tier(_step("click(1,1)", big, choices=1), 0, (0.02, 0.005, 0.001, 0.0002), (5, 20))[0] == "very_easy"
    assert step_tier(_step("click(1,1)", big, choices=1), 2, (0.02, 0.005, 0.001, 0.0002), (5, 20))[0] == "easy"
    assert step_tier(_step("click(1,1)", big, choices=30), 0, (0.02, 0.005, 0.001, 0.0002), (5, 20))[0] == "medium"


def test_a_slow_next_page_is_awaited_and_broken_links_are_no_step(renderer):
    """A link whose page takes a second to answer is followed to that page (the step never records the page it
    left, however short settle_ms is), and links that answer 404 are not steps: exploration goes back and picks
    another one, so the trajectory has no error page in it."""
    site = Site()
    site.html("/index.html", '<h1>Home</h1><a href="/gone1.html">One</a> <a href="/gone2.html">Two</a> '
                             '<a href="/gone3.html">Three</a> <a href="/slow.html">Slow</a>')
    site.html("/slow.html", '<h1>Slow page</h1><a href="/index.html">Back home</a>')
    site.delays["/slow.html"] = 1.0
    job = PageJob(site.base + "/index.html", 640, 480, allow_private=True, trusted_origin=True)
    try:
        t = Explorer(renderer, ExploreSettings(max_steps=2, seconds_per_site=20, settle_ms=30)).explore_and_replay(
            job, "seed")
    finally:
        site.close()
    assert t.rejection is None, t.rejection
    assert [s.target for s in t.steps] == ["Slow", "Back home"] and t.steps[0].url_after.endswith("/slow.html")
    assert any(h.startswith("/gone") for h in site.hits)  # a broken link was tried first, and left out
    assert not any("gone" in s.url_after for s in t.steps)
