"""SVG prepare: safe parse, sanitise, normalise, measure. Tables of (input, expected reason)."""

from __future__ import annotations

import base64
import gzip
import os
import random
import time
from pathlib import Path

import pytest
from lxml import etree

from quarry.operators.base import Rejection
from quarry.operators.svg.prepare import (
    NormaliseOptions,
    PreparedSvg,
    SvgLimits,
    audit,
    is_safe_reference,
    minify_path,
    prepare_svg,
    sanitise_css,
    tier_of,
)

NS = 'xmlns="http://www.w3.org/2000/svg"'
XL = 'xmlns:xlink="http://www.w3.org/1999/xlink"'
DEMO = Path(__file__).resolve().parents[3] / "dags" / "demo_data" / "svg"
PAPIRUS = Path("/usr/share/icons/Papirus")


def svg(body: str, attrs: str = 'viewBox="0 0 10 10"') -> bytes:
    return f"<svg {NS} {XL} {attrs}>{body}</svg>".encode()


def ok(data: bytes, **kw) -> PreparedSvg:
    out = prepare_svg(data, **kw)
    assert isinstance(out, PreparedSvg), out
    return out


BILLION_LAUGHS = (DEMO / "billion-laughs.svg").read_bytes()
XXE = (DEMO / "xxe-local-file.svg").read_bytes()
QUADRATIC_BLOWUP = ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "' + "x" * 50_000 + '">]>'
                    f'<svg {NS}><text>' + "&a;" * 2_000 + "</text></svg>").encode()
PARAMETER_ENTITY = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY % ext SYSTEM "http://127.0.0.1:9/x.dtd"> %ext;]>'
                    b'<svg xmlns="http://www.w3.org/2000/svg"/>')
UTF16_XXE = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE svg [<!ENTITY s SYSTEM "file:///etc/passwd">]>'
             f'<svg {NS}><text>&s;</text></svg>').encode("utf-16")


def use_bomb(levels: int, fanout: int) -> bytes:
    circle = '<circle r="1"/>'
    groups = ['<g id="l0">' + circle * fanout + "</g>"]
    for i in range(1, levels):
        use = f'<use href="#l{i - 1}"/>'
        groups.append(f'<g id="l{i}">' + use * fanout + "</g>")
    return svg("<defs>" + "".join(groups) + f'</defs><use href="#l{levels - 1}"/>')


@pytest.mark.parametrize("name, data, reason", [
    ("billion laughs", BILLION_LAUGHS, "unsafe_svg"),
    ("xxe local file", XXE, "unsafe_svg"),
    ("quadratic blowup", QUADRATIC_BLOWUP, "unsafe_svg"),
    ("external parameter entity", PARAMETER_ENTITY, "unsafe_svg"),
    ("utf-16 xxe", UTF16_XXE, "unsafe_svg"),
    ("use fan-out bomb", use_bomb(7, 8), "unsafe_svg"),
    ("use cycle", svg('<g id="a"><use href="#b"/></g><g id="b"><use href="#a"/></g>'), "unsafe_svg"),
    ("use chain too deep", svg("".join(f'<g id="u{i}"><use href="#u{i + 1}"/></g>' for i in range(300))
                               + '<g id="u300"><circle r="1"/></g>'), "unsafe_svg"),
    ("malformed", (DEMO / "malformed.svg").read_bytes(), "invalid_svg"),
    ("not xml", b"\x89PNG\r\n\x1a\n not an svg", "invalid_svg"),
    ("empty", b"", "invalid_svg"),
    ("whitespace only", b"  \n ", "invalid_svg"),
    ("not utf-8", (DEMO / "not-utf8.svg").read_bytes(), "invalid_svg"),
    ("html root", b"<html><body/></html>", "invalid_svg"),
    ("zero viewBox", svg('<rect width="1" height="1"/>', 'viewBox="0 0 0 10"'), "invalid_svg"),
    ("garbage viewBox", svg('<rect width="1" height="1"/>', 'viewBox="a b"'), "invalid_svg"),
    ("corrupt gzip", b"\x1f\x8b\x08\x00garbage", "invalid_svg"),
    ("truncated gzip", gzip.compress(svg('<rect width="1" height="1"/>'))[:-12], "invalid_svg"),
    ("too many elements", svg('<rect width="1" height="1"/>' * 30), "too_long"),
    ("huge path", svg('<path d="M0 0' + " L1.5 2.25" * 5_000 + '"/>'), "too_long"),
    ("deep nesting", svg("<g>" * 5_000 + "</g>" * 5_000), "invalid_svg"),  # libxml2's depth cap (no huge_tree)
])
def test_bad_inputs_get_their_reason(name, data, reason):
    limits = SvgLimits(max_elements=25) if name == "too many elements" else SvgLimits()
    started = time.perf_counter()
    out = prepare_svg(data, limits)
    assert isinstance(out, Rejection), name
    assert out.reason == reason, (name, out)
    assert time.perf_counter() - started < 2.0, name  # bounded, whatever the input claims


def test_gzip_bomb_stops_at_the_cap_in_bounded_time_and_memory():
    bomb = gzip.compress(b"<svg " + b" " * (64 * 1024 * 1024) + b"/>", compresslevel=9)
    assert len(bomb) < 100_000
    started = time.perf_counter()
    out = prepare_svg(bomb, SvgLimits(max_inflated_bytes=1 << 20))
    assert isinstance(out, Rejection) and out.reason == "too_large"
    assert time.perf_counter() - started < 1.0  # inflating stops at 1 MiB, not 64 MiB


def test_svgz_within_the_cap_is_read():
    p = ok(gzip.compress(svg('<rect width="4" height="4" fill="red"/>')))
    assert "<rect" in p.text


def test_external_dtd_subsets_are_never_loaded(tmp_path):
    dtd = tmp_path / "evil.dtd"
    dtd.write_text('<!ENTITY leak "LEAKED">')
    doc = (f'<?xml version="1.0"?><!DOCTYPE svg SYSTEM "{dtd.as_uri()}"><svg {NS} viewBox="0 0 9 9">'
           '<text x="1" y="5">&leak;</text></svg>').encode()
    out = prepare_svg(doc)
    assert isinstance(out, Rejection) or "LEAKED" not in out.text  # an undefined entity, never the file's value
    garbage = tmp_path / "garbage.dtd"
    garbage.write_text("this is not a DTD at all <<<")
    public = ('<?xml version="1.0"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
              '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">').encode()
    for head in (public, f'<!DOCTYPE svg SYSTEM "{garbage.as_uri()}">'.encode()):
        # Common real-world DOCTYPEs parse (the subset is neither fetched nor read) and are dropped.
        p = ok(head + svg('<rect width="3" height="3"/>'))
        assert "DOCTYPE" not in p.text and "<rect" in p.text


def test_xxe_never_reads_the_file():
    out = prepare_svg(XXE)
    assert isinstance(out, Rejection)
    passwd = Path("/etc/passwd").read_text().splitlines()[0] if Path("/etc/passwd").exists() else "root:x:0:0"
    assert passwd not in out.detail


def test_sanitiser_removes_scripts_handlers_and_external_references():
    data = svg(
        '<script>alert(1)</script>'
        '<foreignObject><div xmlns="http://www.w3.org/1999/xhtml"><script>x()</script></div></foreignObject>'
        '<a xlink:href="javascript:alert(2)"><circle r="3" onclick="alert(3)" ONMOUSEOVER="x()"/></a>'
        '<a href=" jav&#x09;ascript:alert(6)"><rect width="1" height="1"/></a>'
        '<image href="file:///etc/passwd" width="5" height="5"/>'
        '<image xlink:href="/etc/hostname" width="5" height="5"/>'
        '<image href="http://127.0.0.1:9/p.png" width="5" height="5"/>'
        '<image href="data:image/svg+xml;base64,PHN2Zy8+" width="5" height="5"/>'
        f'<image href="data:image/png;base64,{PNG_B64}" width="5" height="5"/>'
        '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/>'
        '<use href="other.svg#icon"/><use href="#keep"/>'
        '<filter id="f"><feImage href="https://example.org/x.png"/></filter>'
        '<rect id="keep" width="2" height="2" fill="url(http://127.0.0.1:9/#g)" stroke="red"'
        ' style="fill:red;mask:url(https://evil/x.svg#m);filter:url(#f)"/>'
        '<style>@import url(http://127.0.0.1:9/x.css); rect{fill:url("/etc/x#y")} .a{fill:url(#keep)}</style>'
        '<style>r\\65 ct{fill:u\\72l(http://127.0.0.1:9/)}</style>'
        '<set attributeName="xlink:href" to="javascript:alert(5)"/>'
        '<animate attributeName="onclick" to="alert(7)"/>'
        '<animate attributeName="fill" values="red;url(http://127.0.0.1:9/#x)"/>'
        '<animate attributeName="opacity" values="0;1"/>',
        'viewBox="0 0 10 10" onload="alert(0)"',
    )
    p = ok(data)
    low = p.text.lower()
    for bad in ("script", "javascript", "onclick", "onmouseover", "onload", "foreignobject", "passwd", "hostname",
                "127.0.0.1", "evil", "other.svg", "example.org", "@import", "svg+xml", "\\"):
        assert bad not in low, (bad, p.text)
    assert "data:image/png;base64" in p.text  # raster data URIs are kept
    assert 'href="#i' in p.text and "url(#i" in p.text  # local references kept (renamed)
    assert 'attributeName="opacity"' in p.text  # harmless animation kept
    assert "<circle" in p.text and 'stroke="red"' in p.text  # the drawing stays
    for code in ("script", "foreignObject", "attr:onclick", "attr:onload", "href:javascript", "href:external",
                 "element:image", "element:use", "element:feImage", "url:external", "css:import", "css:escaped",
                 "animation:xlink:href", "animation:onclick", "animation:fill", "element:include"):
        assert code in p.removed, (code, p.removed)
    assert audit(etree.fromstring(p.text.encode())) is None


PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
JPEG_B64 = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 16).decode()
SVG_AS_PNG = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg"><image href="/etc/x.png"/></svg>').decode()


@pytest.mark.parametrize("value, safe", [
    ("#a", True), ("  #frag", True), (f"data:image/png;base64,{PNG_B64}", True),
    (f"DATA:image/JPEG;base64,{JPEG_B64}", True), (f"data:image/png;base64,{PNG_B64[:12]}\n{PNG_B64[12:]}", True),
    (f"data:image/png;base64,{SVG_AS_PNG}", False), (f"data:image/jpeg;base64,{PNG_B64[:2]}", False),
    ("data:image/webp,xx", False), ("data:image/png;base64,AAA", False),
    ("data:image/svg+xml,<svg/>", False), ("data:text/html,<script>", False),
    ("file:///etc/passwd", False), ("/etc/passwd", False), ("icon.png", False), ("http://127.0.0.1/x", False),
    ("//host/x", False), ("javascript:alert(1)", False), ("", False),
])
def test_safe_references(value, safe):
    assert is_safe_reference(value) is safe


def test_css_sanitiser():
    out, removed = sanitise_css("fill:url(#a);stroke:url( 'http://x/y' );@import 'z.css';")
    assert out == "fill:url(#a);stroke:none;" and removed == ["url:external", "css:import"]
    assert sanitise_css("fill:u\\rl(x)") == ("", ["css:escaped"])


def test_duplicates_differing_in_ids_whitespace_order_and_numbers_normalise_to_one_text():
    a = ok((DEMO / "house.svg").read_bytes())
    b = ok((DEMO / "house-copy.svg").read_bytes())
    assert a.text == b.text and a.digest == b.digest
    c = ok(svg('<g  id="x1"><circle cx="1.0" cy="2" r="3" id="unused"/></g>', 'viewBox="0 0 10 10" version="1.1"'))
    d = ok(f'<svg version="1.1" viewBox=" 0,0 10,10 " {NS}>\n  <g>\n    <circle r="3.000" cy="2.0" cx="1"/>\n'
           "  </g>\n</svg>".encode())
    assert c.text == d.text
    different = ok(svg('<g><circle cx="1" cy="2" r="4"/></g>', 'viewBox="0 0 10 10" version="1.1"'))
    assert different.digest != c.digest


def test_normalise_strips_editor_metadata_and_derives_the_viewbox():
    p = ok((DEMO / "inkscape-star.svg").read_bytes())
    for gone in ("inkscape", "sodipodi", "metadata", "rdf", "dc:", "xmlns:", "width=", "height=", "<!--"):
        assert gone not in p.text, gone
    assert p.viewbox_derived and p.text.startswith('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 181.42 181.42"')
    assert p.removed == []  # editor leftovers are normalisation, not safety removals
    plain = ok(svg('<rect width="1" height="1"/>', 'width="32px" height="16"'))
    assert plain.viewbox == (0.0, 0.0, 32.0, 16.0) and plain.viewbox_derived
    assert ok(svg('<rect width="1" height="1"/>', "")).viewbox == (0.0, 0.0, 100.0, 100.0)
    assert not ok(svg('<rect width="1" height="1"/>')).viewbox_derived


def test_svg_without_namespace_is_adopted():
    p = ok(b'<svg viewBox="0 0 4 4"><rect width="2" height="2"/></svg>')
    assert p.text == '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"><rect height="2" width="2"/></svg>'


def test_text_is_kept_and_latin1_with_declared_encoding_decodes():
    p = ok((DEMO / "latin1.svg").read_bytes())
    assert "café °C" in p.text


def test_titles_are_dropped_unless_asked():
    data = svg('<title>Logo of X</title><rect width="1" height="1"/>')
    assert "Logo" not in ok(data).text
    assert "<title>Logo of X</title>" in ok(data, opts=NormaliseOptions(keep_title=True)).text


@pytest.mark.parametrize("d, precision, expected, segments", [
    ("M 10.000,20 L 30.123456 -4e-1 Z", 2, "M10 20L30.12-0.4Z", 3),
    ("m1 1 2 2 3 3z", 0, "m1 1 2 2 3 3Z", 4),
    ("M0 0a1 1 0 011 1", 2, "M0 0a1 1 0 0 1 1 1", 2),  # compact arc flags (SVGO output)
    ("M0,0 A 5 5 30 1 0 10 10 5 5 0 0 1 0 0", 1, "M0 0A5 5 30 1 0 10 10 5 5 0 0 1 0 0", 3),
    ("M1.005.5h-.25v1e2", 2, "M1 0.5h-0.25v100", 3),
    ("", 2, "", 0),
])
def test_path_minify(d, precision, expected, segments):
    assert minify_path(d, precision) == (expected, segments)


@pytest.mark.parametrize("d", ["M0 0 X 1", "M0 0a1 1 0 2 1 1 1", "M0", "10 10"])
def test_path_minify_refuses_what_does_not_parse(d):
    assert minify_path(d, 2) is None


def test_measure_and_tiers():
    p = ok(svg('<path d="M0 0L1 1L2 2Z"/><rect width="1" height="1"/><circle r="1"/><g/>'))
    assert (p.path_count, p.path_commands, p.drawable) == (1, 6, 3)
    assert p.element_count == 4  # svg, path, rect, circle: the empty <g> is dropped
    assert tier_of(p, [1000, 3000, 8000, 16000], [20, 80, 250, 800]) == "very_easy"
    assert tier_of(p, [10, 20, 30, 40], [20, 80, 250, 800]) == "very_hard"  # length wins when harder
    assert tier_of(p, [1000, 3000, 8000, 16000], [1, 2, 6, 800]) == "hard"  # complexity wins when harder


def test_prepare_is_deterministic():
    data = (DEMO / "script-and-handlers.svg").read_bytes()
    assert ok(data) == ok(data)


def _papirus_sample(n: int, seed: int) -> list[Path]:
    if not PAPIRUS.is_dir():
        pytest.skip(f"{PAPIRUS} is absent (Debian papirus-icon-theme, installed by scripts/apt-packages.txt)")
    files = sorted(p for p in (PAPIRUS / "48x48" / "apps").glob("*.svg") if not p.is_symlink())
    files += sorted(p for p in (PAPIRUS / "symbolic").rglob("*.svg") if not p.is_symlink())
    return random.Random(seed).sample(files, min(n, len(files)))


def test_real_icons_prepare_cleanly_and_reprepare_to_themselves():
    files = _papirus_sample(300, seed=5)
    prepared = [prepare_svg(f.read_bytes()) for f in files]
    good = [p for p in prepared if isinstance(p, PreparedSvg)]
    assert len(good) >= 0.97 * len(files), [p for p in prepared if isinstance(p, Rejection)][:5]
    for p in good[:100]:
        again = ok(p.text.encode())  # idempotent: the canonical text is its own normal form
        assert again.text == p.text, p.text[:200]
        assert os.sep + "etc" not in p.text
