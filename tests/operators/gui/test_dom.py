"""Element extraction on a page whose elements sit at known positions (real Chromium)."""

from __future__ import annotations

import pytest

from quarry.operators.gui.browser import BrowserRenderer, HtmlFolderServer, PageJob, RendererSettings, local_read
from quarry.operators.gui.dom import parse_elements

W, H = 1280, 720

# name -> CSS box of every element a person can see on PAGE
VISIBLE = {
    "Save": (100, 50, 220, 90),
    "Pricing": (300, 50, 400, 80),
    "Your email": (100, 150, 400, 190),
    "Company logo": (500, 150, 564, 214),
    "Plain paragraph": (100, 300, 500, 330),
    "Cut by the edge": (1200, 400, 1280, 440),  # clipped to the viewport
    "Top of the stack": (700, 500, 900, 560),
    "Clickable tile": (100, 600, 300, 640),
}
HIDDEN = ("Display none", "Visibility hidden", "Inherited hidden", "Faded parent", "Off to the left",
          "Below the fold", "Under the overlay", "Zero width", "In closed details")

PAGE = """<!doctype html><html><head><style>
body { margin: 0; font: 16px sans-serif; } .a { position: absolute; margin: 0; padding: 0; border: 0; box-sizing: border-box; }
</style></head><body>
<button class=a style="left:100px;top:50px;width:120px;height:40px">Save</button>
<a class=a href="/pricing" style="left:300px;top:50px;width:100px;height:30px">Pricing</a>
<input class=a aria-label="Your email" style="left:100px;top:150px;width:300px;height:40px">
<img class=a alt="Company logo" src="logo.svg" style="left:500px;top:150px;width:64px;height:64px">
<p class=a style="left:100px;top:300px;width:400px;height:30px">Plain paragraph</p>
<p class=a style="left:1200px;top:400px;width:300px;height:40px;white-space:nowrap">Cut by the edge</p>
<p class=a style="left:700px;top:500px;width:200px;height:60px;z-index:5;background:#eee">Top of the stack</p>
<div class=a id=tile style="left:100px;top:600px;width:200px;height:40px">Clickable tile</div>
<script>document.getElementById('tile').addEventListener('click', () => {});</script>

<p class=a style="left:600px;top:50px;width:200px;height:30px;display:none">Display none</p>
<p class=a style="left:600px;top:100px;width:200px;height:30px;visibility:hidden">Visibility hidden</p>
<div class=a style="left:600px;top:150px;width:200px;height:30px;visibility:hidden"><span>Inherited hidden</span></div>
<div class=a style="left:600px;top:200px;width:200px;height:30px;opacity:0"><button>Faded parent</button></div>
<p class=a style="left:-500px;top:250px;width:200px;height:30px">Off to the left</p>
<p class=a style="left:100px;top:900px;width:200px;height:30px">Below the fold</p>
<p class=a style="left:900px;top:300px;width:200px;height:30px">Under the overlay</p>
<div class=a style="left:880px;top:280px;width:260px;height:80px;background:#333"></div>
<p class=a style="left:900px;top:400px;width:0;height:30px;overflow:hidden">Zero width</p>
<details class=a style="left:100px;top:450px;width:300px;height:40px"><summary>Details</summary><p>In closed details</p></details>
</body></html>"""

LOGO = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="teal"/></svg>'


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "page.html").write_text(PAGE)
    (site / "logo.svg").write_bytes(LOGO)
    server = HtmlFolderServer(local_read)
    renderer = BrowserRenderer(RendererSettings(timeout_s=10, settle="load")).start()
    try:
        result = renderer.render(PageJob(server.url_for(str(site), "page.html"), W, H, allow_private=True))
    finally:
        renderer.close()
        server.close()
    assert result.rejection is None, result.rejection
    return result.page


def expected_box(css):
    return tuple(round(v / s * 1000) for v, s in zip(css, (W, H, W, H)))


def test_every_visible_element_is_found_with_its_box(rendered):
    found = {e.name: e for e in rendered.elements.elements}
    for name, css in VISIBLE.items():
        assert name in found, (name, sorted(found))
        e = found[name]
        want = tuple(v / s * 1000 for v, s in zip(css, (W, H, W, H)))
        block = tuple(v / s * 1000 for v, s in zip(e.block_box_css, (W, H, W, H)))
        assert all(abs(a - b) <= 3 for a, b in zip(block, want)), (name, block, want)
        if e.box_kind == "text":  # the text's extent, inside the block
            x1, y1, x2, y2 = e.box_css
            bx1, by1, bx2, by2 = e.block_box_css
            assert bx1 - 1 <= x1 < x2 <= bx2 + 1 and by1 - 1 <= y1 < y2 <= by2 + 1, (name, e.box_css, e.block_box_css)
        else:
            assert all(abs(a - b) <= 3 for a, b in zip(e.box, expected_box(css))), (name, e.box, want)
    kinds = {name: found[name].box_kind for name in VISIBLE}
    assert kinds == {"Save": "block", "Pricing": "text", "Your email": "block", "Company logo": "block",
                     "Plain paragraph": "text", "Cut by the edge": "text", "Top of the stack": "text",
                     "Clickable tile": "block"}  # a control


def test_no_hidden_offscreen_or_covered_element_appears(rendered):
    names = " | ".join(e.name for e in rendered.elements.elements)
    for hidden in HIDDEN:
        assert hidden not in names, hidden


def test_roles_interactivity_and_paths(rendered):
    found = {e.name: e for e in rendered.elements.elements}
    assert (found["Save"].role, found["Save"].interactive) == ("button", True)
    assert (found["Pricing"].role, found["Pricing"].interactive) == ("link", True)
    assert (found["Your email"].role, found["Your email"].tag) == ("textbox", "input")
    assert found["Company logo"].role == "img" and not found["Company logo"].interactive
    assert found["Plain paragraph"].role == "paragraph" and not found["Plain paragraph"].interactive
    assert found["Clickable tile"].interactive  # addEventListener('click') seen by the init script
    assert found["Save"].path == "html>body>button"
    assert rendered.width == W and rendered.height == H and rendered.png[:4] == b"\x89PNG"
    assert not rendered.elements.scrollable or rendered.elements.nodes > 0


def test_parse_elements_scales_pixel_boxes_and_drops_slivers():
    raw = {"viewport": [640, 360], "capped": False, "nodes": 3, "scroll_height": 1000, "elements": [
        {"tag": "a", "role": "link", "name": "x", "interactive": True, "path": "html>body>a", "box": [64, 36, 128, 72]},
        {"tag": "p", "role": "paragraph", "name": "sliver", "interactive": False, "path": "p", "box": [0, 0, 1, 50]},
        {"tag": "p", "role": "paragraph", "name": "nan", "interactive": False, "path": "p2",
         "box": [float("nan"), 0, 5, 5]},
    ]}
    page = parse_elements(raw, device_scale_factor=2.0, min_side=2.0)
    assert [e.name for e in page.elements] == ["x"]
    assert page.elements[0].box == (100, 100, 200, 200)
    assert page.elements[0].box_px == (128, 72, 256, 144)
    assert page.scrollable
