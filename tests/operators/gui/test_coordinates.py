"""One coordinate space per box column, checked on the pixels of real screenshots.

A page with solid-coloured blocks at known CSS positions is rendered by Chromium at device scale factors
1, 2 and 3 (desktop), and on a mobile viewport with and without a meta viewport (without one, Chromium lays
the page out 980 CSS px wide and zooms it to the screen, so CSS px x the scale factor is not the screenshot's
pixel). `box_px` must land on the block's pixels in the screenshot, and `box` (0-1000) must be `box_px` over
the screenshot's size.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

BLOCKS = {  # name -> (left, top, width, height) in CSS px, colour
    "Red": ((40, 60, 120, 50), (255, 0, 0)),
    "Green": ((200, 300, 80, 80), (0, 160, 0)),
    "Blue": ((20, 500, 300, 40), (0, 0, 255)),
}


def page(meta_viewport: bool) -> str:
    blocks = "".join(
        f'<button aria-label="{name}" style="position:absolute;left:{x}px;top:{y}px;width:{w}px;height:{h}px;'
        f'background:rgb{rgb};border:0;padding:0;margin:0"></button>'
        for name, ((x, y, w, h), rgb) in BLOCKS.items())
    meta = '<meta name="viewport" content="width=device-width, initial-scale=1">' if meta_viewport else ""
    return f"<html><head>{meta}</head><body style='margin:0;background:#fff;height:600px'>{blocks}</body></html>"


def check_boxes(rendered) -> None:
    img = Image.open(io.BytesIO(rendered.png)).convert("RGB")
    assert img.size == (rendered.width, rendered.height)
    found = {e.name: e for e in rendered.elements.elements if e.name in BLOCKS}
    assert set(found) == set(BLOCKS)
    for name, e in found.items():
        rgb = BLOCKS[name][1]
        x1, y1, x2, y2 = e.box_px
        assert 0 <= x1 < x2 <= img.width and 0 <= y1 < y2 <= img.height, (name, e.box_px, img.size)
        # every pixel a little inside box_px is the block's colour, and just outside it is not
        inner = img.crop((int(x1) + 2, int(y1) + 2, int(x2) - 2, int(y2) - 2))
        colours = inner.getcolors(1 << 16)
        assert colours is not None and len(colours) == 1 and colours[0][1] == rgb, (name, colours[:3])
        for px in ((x1 - 3, (y1 + y2) / 2), (x2 + 2, (y1 + y2) / 2), ((x1 + x2) / 2, y1 - 3), ((x1 + x2) / 2, y2 + 2)):
            if 0 <= px[0] < img.width and 0 <= px[1] < img.height:
                assert img.getpixel((int(px[0]), int(px[1]))) != rgb, (name, px)
        # box is box_px on the 0-1000 grid of the screenshot
        want = (x1 / img.width * 1000, y1 / img.height * 1000, x2 / img.width * 1000, y2 / img.height * 1000)
        assert all(abs(a - b) <= 1.01 for a, b in zip(e.box, want)), (name, e.box, want)


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_desktop_boxes_are_screenshot_pixels_at_every_scale_factor(render_html, scale):
    rendered = render_html(page(True), width=800, height=600, device_scale_factor=scale)
    assert (rendered.width, rendered.height) == (800 * scale, 600 * scale)
    check_boxes(rendered)
    red = next(e for e in rendered.elements.elements if e.name == "Red")
    assert red.box_css == (40, 60, 160, 110)  # CSS px stay CSS px
    assert red.box_px == (40 * scale, 60 * scale, 160 * scale, 110 * scale)


@pytest.mark.parametrize("meta_viewport", [True, False])
@pytest.mark.parametrize("scale", [2, 3])
def test_mobile_boxes_are_screenshot_pixels_with_and_without_a_meta_viewport(render_html, scale, meta_viewport):
    rendered = render_html(page(meta_viewport), width=390, height=844,
                      device_scale_factor=scale, is_mobile=True)
    assert rendered.width == 390 * scale
    check_boxes(rendered)
