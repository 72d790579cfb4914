"""Names say what the screenshot shows, and scroll tasks need a visible cue (real Chromium).

Issue 20's defects: a cookie banner named with its "Accept" button's text, a search form named by its
button ("a search reading 'Go'"), alt text described as the picture, and scroll tasks on pages that
visibly end inside the viewport.
"""

from __future__ import annotations

import pytest

from quarry.operators.gui.tasks import TaskSettings, describe, page_tasks

W, H = 800, 600
BANNER = """<html><body style="margin:0;font:16px sans-serif">
<section role="region" aria-label="" id="cookies" style="padding:20px;background:#eee">
  <p>We use cookies to run this shop.</p> <button>Accept</button> <button>Reject all</button></section>
<form role="search" style="margin:20px"><input type="search" placeholder="Search mugs"> <button>Go</button></form>
<img alt="A red enamel mug on a table" src="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='80' height='80'%3E%3Crect width='80' height='80' fill='red'/%3E%3C/svg%3E" width=80 height=80>
<button aria-label="Close dialog" style="width:30px;height:30px">x</button>
</body></html>"""
# scroll_height > viewport, but everything visible ends well above the fold (a tall empty footer)
ENDS_IN_VIEW = "<html><body style='margin:0'><h1>Short page</h1><p>All of it is here.</p><div style='height:2000px'></div></body></html>"
CUT = "<html><body style='margin:0'>" + "".join(f"<p style='font-size:40px;margin:0'>Line {i}</p>" for i in range(40)) + "</body></html>"
FITS = "<html><body style='margin:0'><h1>Fits</h1><p>No scrollbar.</p></body></html>"


def test_containers_are_not_named_by_their_controls_and_off_screen_names_are_not_described(render_html):
    els = render_html(BANNER, width=W, height=H).elements.elements
    by_tag = {}
    for e in els:
        by_tag.setdefault(e.tag, []).append(e)
    section = by_tag["section"][0]
    assert "Accept" not in section.name and "Reject" not in section.name
    form = by_tag["form"][0]
    assert "Go" not in form.name.split()
    img = by_tag["img"][0]
    assert img.name_source == "alt" and not img.name_shown
    assert describe(img) == "an image"
    close = next(e for e in els if e.name == "Close dialog")
    assert not close.name_shown and "Close dialog" not in describe(close)
    descriptions = [describe(e) for e in els]
    assert not any("interactive" in d for d in descriptions), descriptions
    search = next(e for e in els if e.input_type == "search")
    assert describe(search) == 'a search field showing the placeholder "Search mugs"'


@pytest.mark.parametrize("html, cue", [(CUT, True), (ENDS_IN_VIEW, False), (FITS, False)])
def test_scroll_tasks_only_with_a_visible_cue(render_html, html, cue):
    page = render_html(html, width=W, height=H)
    assert page.elements.scrollable is cue
    tasks = page_tasks("page", page.elements.elements, page.elements.scrollable, TaskSettings())
    assert any(t.action and t.action.startswith("scroll(") for t in tasks) is cue
