"""Exploration and replay on small served sites, and the three hostile cases of issue 20."""

import time

import pytest

from quarry.operators.gui.browser import BrowserRenderer, HtmlFolderServer, PageJob, RendererSettings, local_read
from quarry.operators.gui.explore import ENDED_LOOP, ENDED_UNSTABLE, Explorer, ExploreSettings, goal_text

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
    assert actions[0].startswith("click(") and actions[1].startswith('type(') and "ada@example.com" in actions[1]
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
