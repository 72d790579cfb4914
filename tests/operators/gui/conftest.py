"""A Chromium renderer for tests that render small pages written to files: one browser per module."""

from __future__ import annotations

import pytest

from quarry.operators.gui.browser import BrowserRenderer, PageJob, RendererSettings, find_chromium


@pytest.fixture(scope="module")
def file_renderer():
    try:
        find_chromium()
    except Exception as e:  # noqa: BLE001 - no browser on this machine
        pytest.skip(str(e))
    r = BrowserRenderer(RendererSettings(timeout_s=10, extract_timeout_s=5, settle="load")).start()
    yield r
    r.close()


@pytest.fixture
def render_html(file_renderer, tmp_path):
    """A function: html (+ PageJob viewport keywords) -> the RenderedPage of it as a file:// page."""
    def render(html: str, **viewport):
        f = tmp_path / "page.html"
        f.write_text(html)
        res = file_renderer.render(PageJob(f.as_uri(), **viewport))
        assert res.rejection is None, res.rejection
        return res.page
    return render
