"""Image -> SVG verifier: tables of (response, reference, expected reward range, reason)."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest

from quarry.operators.grade.svg_render import SvgRenderVerifier, ink_agreement, svg_element
from quarry.operators.svg.prepare import PreparedSvg, prepare_svg

NS = 'xmlns="http://www.w3.org/2000/svg"'
XL = 'xmlns:xlink="http://www.w3.org/1999/xlink"'
B0, B1 = "<|begin_of_box|>", "<|end_of_box|>"
DEMO = Path(__file__).resolve().parents[3] / "dags" / "demo_data" / "svg"


def svg(body: str, viewbox: str = "0 0 100 80", attrs: str = "") -> str:
    return f'<svg {NS} {XL} viewBox="{viewbox}"{attrs}>{body}</svg>'


def normalised(text: str) -> str:
    p = prepare_svg(text.encode())
    assert isinstance(p, PreparedSvg), p
    return p.text


RECT = '<rect x="10" y="10" width="30" height="20" fill="#cc0000"/>'
CIRCLE = '<circle cx="70" cy="50" r="20" fill="#0000ff"/>'
# The reference as the svg DAG stores it: sanitised and normalised. Not square, so the aspect matters.
REF = normalised(svg(RECT + CIRCLE))
REWRITE = (  # the same drawing: other attribute order, whitespace, number formatting, width/height added
    f'<svg width="100" height="80"   viewBox="0 0 100.0 80" {NS}>\n'
    '  <circle fill="#00f" r="20.0" cy="50" cx="70.00" />\n'
    '  <rect fill="#cc0000" height="20" width="30" y="10.0" x="10"/>\n</svg>'
)
# The same picture at twice the coordinates: another viewBox, fitted into the same pixels.
SCALED = svg('<rect x="20" y="20" width="60" height="40" fill="#cc0000"/>'
             '<circle cx="140" cy="100" r="40" fill="#0000ff"/>', viewbox="0 0 200 160")
HOUSE = (DEMO / "house.svg").read_text()
HOUSE_COPY = (DEMO / "house-copy.svg").read_text()


def use_bomb(levels: int, fanout: int) -> str:
    groups = ['<g id="l0">' + '<circle r="1"/>' * fanout + "</g>"]
    groups += [f'<g id="l{i}">' + f'<use href="#l{i - 1}"/>' * fanout + "</g>" for i in range(1, levels)]
    return svg("<defs>" + "".join(groups) + f'</defs><use href="#l{levels - 1}"/>')


def filter_bomb(rects: int) -> str:
    """A few KB, within every document limit, and slow: morphology cost grows with the render size."""
    body = '<filter id="m"><feMorphology radius="20"/></filter>' + "".join(
        f'<rect x="{i % 10}" y="{i % 7}" width="5" height="5" filter="url(#m)"/>' for i in range(rects))
    return svg(body, viewbox="0 0 20 20")


CASES = [
    # response, reference, lowest reward, highest reward, reason
    pytest.param(REF, REF, 1.0, 1.0, "", id="gold"),
    pytest.param(f"Here it is: {B0}{REF}{B1}", REF, 1.0, 1.0, "", id="gold-in-box-markers"),
    pytest.param(f"The image shows a rectangle.\n```svg\n{REF}\n```\nDone.", REF, 1.0, 1.0, "", id="gold-in-fence"),
    pytest.param(f"```xml\n{REF}\n```", f"{B0}{REF}{B1}", 1.0, 1.0, "", id="reference-in-box-markers"),
    pytest.param(f"<think>draft {svg(RECT)}</think>{REF}", REF, 1.0, 1.0, "", id="draft-in-thinking-ignored"),
    pytest.param(REWRITE, REF, 1.0, 1.0, "", id="equivalent-rewrite"),
    pytest.param(svg(CIRCLE + RECT), REF, 1.0, 1.0, "", id="disjoint-shapes-reordered"),
    pytest.param(SCALED, REF, 0.98, 1.0, None, id="other-viewbox-same-picture"),
    pytest.param(svg('<path d="M10 10h30v20h-30z" fill="#cc0000"/>' + CIRCLE), REF, 0.98, 1.0, None, id="rect-as-path"),
    pytest.param(HOUSE_COPY, HOUSE, 1.0, 1.0, "", id="demo-house-copy"),
    pytest.param(svg(""), REF, 0.0, 0.05, "mismatch", id="empty-svg"),
    pytest.param(f'<svg {NS} viewBox="0 0 100 80"/>', REF, 0.0, 0.05, "mismatch", id="self-closing-empty-svg"),
    pytest.param(svg(RECT + CIRCLE.replace("#0000ff", "#00ff00")), REF, 0.05, 0.9, "mismatch", id="colour-changed"),
    pytest.param(svg(RECT.replace('x="10"', 'x="50"') + CIRCLE), REF, 0.05, 0.9, "mismatch", id="shape-moved"),
    pytest.param(svg(RECT), REF, 0.05, 0.9, "mismatch", id="shape-missing"),
    pytest.param(svg(RECT + CIRCLE + '<rect width="100" height="80" fill="#000" opacity="0.5"/>'), REF,
                 0.0, 0.05, "mismatch", id="everything-covered"),
    pytest.param(svg(""), svg("", viewbox="0 0 10 10"), 1.0, 1.0, "", id="both-blank"),
    pytest.param(svg(RECT), svg(""), 0.0, 0.0, "mismatch", id="drawing-on-blank-reference"),
    pytest.param("I cannot draw that.", REF, 0.0, 0.0, "unparseable_svg", id="no-svg"),
    pytest.param("<svgfoo/>", REF, 0.0, 0.0, "unparseable_svg", id="not-an-svg-tag"),
    pytest.param(svg(RECT)[:-20], REF, 0.0, 0.0, "unparseable_svg", id="truncated"),
    pytest.param(svg("<rect/>", viewbox="0 0 0 10"), REF, 0.0, 0.0, "unparseable_svg", id="zero-viewbox"),
    pytest.param("<svg " + " " * 200_001 + "/>", REF, 0.0, 0.0, "too_long", id="too-long"),
    pytest.param(svg('<circle r="1"/>' * 20_001), REF, 0.0, 0.0, "too_long", id="too-many-elements"),
    pytest.param(REF, "no svg here", 0.0, 0.0, "bad_reference", id="bad-reference"),
    pytest.param(REF, [], 0.0, 0.0, "bad_reference", id="no-references"),
    pytest.param(REF, ["no svg here", svg(RECT), REF.encode()], 1.0, 1.0, "", id="best-of-references"),
    pytest.param(svg(RECT), [svg(CIRCLE), REF], 0.3, 0.9, "mismatch", id="best-mismatch-of-references"),
    # Hostile responses: never a crash, bounded time, reward 0 or the sanitised drawing.
    pytest.param((DEMO / "billion-laughs.svg").read_text(), REF, 0.0, 0.0, "unparseable_svg", id="billion-laughs"),
    pytest.param((DEMO / "xxe-local-file.svg").read_text(), REF, 0.0, 0.0, "unparseable_svg", id="xxe"),
    pytest.param(use_bomb(7, 8), REF, 0.0, 0.0, "unsafe_svg", id="use-fan-out-bomb"),
    pytest.param(svg('<g id="a"><use href="#b"/></g><g id="b"><use href="#a"/></g>'), REF, 0.0, 0.0, "unsafe_svg",
                 id="use-cycle"),
    pytest.param(svg('<script>alert(1)</script>' + RECT + CIRCLE, attrs=' onload="alert(2)"'), REF, 1.0, 1.0, "",
                 id="script-sanitised"),
    pytest.param(svg(RECT + CIRCLE + '<image href="http://10.0.0.1/x.png" width="100" height="80"/>'
                     '<image xlink:href="/etc/passwd" width="100" height="80"/>'), REF, 1.0, 1.0, "",
                 id="external-images-removed"),
    pytest.param(svg('<image href="http://10.0.0.1/x.png" width="100" height="80"/>'), REF, 0.0, 0.0, "mismatch",
                 id="only-an-external-image"),
    pytest.param("<svg \ud800 />", REF, 0.0, 0.0, "unparseable_svg", id="lone-surrogate"),
]


@pytest.fixture(scope="module", params=[True, False], ids=["isolated", "in-process"])
def verifier(request):
    v = SvgRenderVerifier(isolate=request.param)
    yield v
    v.close()


@pytest.mark.parametrize("response, reference, lo, hi, reason", CASES)
def test_verdicts(verifier, response, reference, lo, hi, reason):
    started = time.perf_counter()
    verdict = verifier(response, reference)
    assert time.perf_counter() - started < 5  # the first isolated call includes starting the render process
    assert lo <= verdict.reward <= hi, verdict
    if reason is not None:
        assert verdict.reason == reason, verdict
    assert (verdict.reward == 1.0) == (verdict.reason == "")


def test_ink_agreement_counts_only_ink():
    import numpy as np

    white = np.full((4, 4, 3), 255, dtype=np.int16)
    one = white.copy()
    one[0, 0] = 0
    two = one.copy()
    two[3, 3] = 0
    assert ink_agreement(white, white, 16) == 1.0
    assert ink_agreement(one, white, 16) == 0.0  # a blank answer gets nothing for the white background
    assert ink_agreement(two, one, 16) == 0.5
    assert ink_agreement(one + 10, one, 16) == 1.0  # within tolerance: not ink, and agreeing


def test_svg_element_is_cut_from_prose():
    assert svg_element("a <svg x='1'><g/></svg> b </svg> c") == "<svg x='1'><g/></svg> b </svg>"
    assert svg_element("see <svg/>") == "<svg/>"
    assert svg_element("<svgz/>") is None


def test_slow_render_times_out_and_the_worker_recovers():
    v = SvgRenderVerifier(timeout_s=0.3)
    try:
        assert v(REF, REF).reward == 1.0  # starts the worker (start-up is not charged to the timeout)
        started = time.perf_counter()
        verdict = v(filter_bomb(200), REF)  # seconds at 128 px, minutes at 512
        assert time.perf_counter() - started < 5
        assert verdict.reward == 0.0 and verdict.reason == "timeout"
        assert v(svg(RECT), REF).reason == "mismatch"  # a fresh render process took over
    finally:
        v.close()


def test_the_worker_is_reused():
    v = SvgRenderVerifier()
    try:
        v(svg(RECT), REF)
        worker = v._runtime.worker
        pid = worker._proc.pid
        for body in (RECT, CIRCLE, ""):
            v(svg(body), REF)
        assert v._runtime.worker is worker and worker._proc.pid == pid and worker.restarts == 0
    finally:
        v.close()


def test_pickles_before_and_after_a_call():
    v = SvgRenderVerifier(size=64, tolerance=8)
    copy = pickle.loads(pickle.dumps(v))
    assert copy == v and hash(copy) == hash(v)
    try:
        assert v(svg(RECT), REF).reason == "mismatch"
        assert v._runtime.worker is not None
        copy = pickle.loads(pickle.dumps(v))  # the live worker does not travel
        assert copy == v and copy._runtime.worker is None and not copy._runtime.references
        assert copy(svg(RECT), REF) == v(svg(RECT), REF)
        assert copy(REF, REF).reward == 1.0
    finally:
        v.close()
        copy.close()


def test_invalid_settings_are_refused():
    for kw in ({"size": 4}, {"tolerance": 255}, {"timeout_s": 0}):
        with pytest.raises(ValueError):
            SvgRenderVerifier(**kw)
