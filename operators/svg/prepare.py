"""SVG: inflate, parse safely, sanitise, normalise, measure. Plain Python, no Beam.

One call, `prepare_svg(data, ...)`, takes the bytes of one SVG to either a
`PreparedSvg` (canonical text plus counts) or a `Rejection`:

- ``too_large`` (a `.svgz` inflating past the cap: a gzip bomb; inflation
  stops at the cap, so the bomb costs the cap, not its claimed size);
- ``invalid_svg``: not well-formed XML (lxml's message), not UTF-8 or the
  declared encoding, the root is not ``<svg>``, an unusable viewBox;
- ``unsafe_svg``: a DTD that declares entities (billion laughs, XXE: refused
  before anything is expanded or fetched), a ``<use>`` cycle or a ``<use>``
  fan-out past ``limits.max_expanded_elements`` (the SVG form of the entity
  bomb), or anything the post-sanitise audit still finds external;
- ``too_long``: more than ``limits.max_elements`` elements, or normalised text
  longer than ``limits.max_chars``.

Parsing: lxml with ``resolve_entities=False, no_network=True, load_dtd=False,
huge_tree=False`` (libxml2's own depth and text-node caps stay on), comments
and processing instructions dropped by the parser.

Sanitising keeps the drawing and removes what can run or fetch: ``<script>``,
``<foreignObject>`` (HTML inside SVG), embedded players/frames, event-handler
attributes (``on*``), ``javascript:`` values, SMIL animations that set a
href or a handler, and every reference that is not a local ``#fragment`` or a
raster ``data:image/(png|jpeg|gif|webp)`` URI: ``href``/``xlink:href``
(``<image>``, ``<use>``, ``<feImage>`` pointing outside are dropped whole;
resvg would otherwise read absolute and relative paths from the local disk),
CSS ``url(...)`` in ``style`` attributes, ``<style>`` and presentation
attributes, CSS ``@import``, and CSS that uses escapes (which could spell
``url`` in a way a pattern misses). What was removed is listed per row
(`removed`). An audit pass then checks the result again; finding anything is
``unsafe_svg``.

Normalising makes duplicates that differ only in ids, whitespace, attribute
order or number formatting identical text: editor namespaces (Inkscape,
Sodipodi, Adobe, Sketch, RDF/CC/DC) and ``<metadata>`` go, ``xlink:href``
becomes ``href``, referenced ids are renamed ``i0, i1, ...`` in document order
and unreferenced ids dropped, coordinates, path data and transforms are
rounded to ``normalise.precision`` decimals and minified, the root gets a
``viewBox`` (derived from width/height, units converted to px, where
missing) and loses width/height (the renderer sets the size), and the
document is written by one canonical serializer (sorted attributes, no
whitespace between elements, one namespace declaration).
"""

from __future__ import annotations

import base64
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

from lxml import etree

from quarry.operators.base import Rejection
from quarry.operators.ids import digest

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
XML_NS = "http://www.w3.org/XML/1998/namespace"
XHTML_NS = "http://www.w3.org/1999/xhtml"
XINCLUDE_NS = ("http://www.w3.org/2001/XInclude", "http://www.w3.org/2003/XInclude")

TOO_LARGE = "too_large"
INVALID = "invalid_svg"
UNSAFE = "unsafe_svg"
TOO_LONG = "too_long"
REASONS: tuple[str, ...] = (TOO_LARGE, INVALID, UNSAFE, TOO_LONG)

# Elements that run code, embed other documents or media: removed with their subtree.
ACTIVE_ELEMENTS = frozenset({
    "script", "foreignObject", "iframe", "embed", "object", "handler", "listener", "audio", "video",
    "canvas", "discard", "prefetch", "tbreak",
})
# Elements whose whole point is the resource they reference: dropped when the reference is removed.
REFERENCING_ELEMENTS = frozenset({"image", "use", "feImage", "tref", "font-face-uri", "cursor"})
ANIMATION_ELEMENTS = frozenset({"animate", "set", "animateMotion", "animateTransform", "animateColor"})
TEXT_ELEMENTS = frozenset({"text", "tspan", "textPath", "title", "desc", "style"})
SHAPE_ELEMENTS = frozenset({"rect", "circle", "ellipse", "line", "polyline", "polygon"})
DRAWABLE_ELEMENTS = SHAPE_ELEMENTS | {"path", "text", "image", "use"}
EDITOR_ONLY_ELEMENTS = frozenset({"metadata"})
# Attributes whose numbers are coordinates or lengths: rounded to the configured precision.
NUMERIC_ATTRIBUTES = frozenset({
    "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "ry", "fx", "fy", "fr", "width", "height",
    "points", "transform", "gradientTransform", "patternTransform", "viewBox", "stroke-width",
    "stroke-dasharray", "stroke-dashoffset", "font-size", "dx", "dy", "refX", "refY", "markerWidth",
    "markerHeight", "stdDeviation", "letter-spacing", "word-spacing", "startOffset", "textLength", "offset",
    "opacity", "fill-opacity", "stroke-opacity", "stop-opacity", "stroke-miterlimit",
})
URL_ATTRIBUTES_PREFIX = "url("
RASTER_DATA_URI = re.compile(r"^data:image/(png|jpe?g|gif|webp)[;,]", re.I)
CSS_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.I | re.S)
CSS_IMPORT = re.compile(r"@import\b[^;]*;?", re.I)
CSS_ID_SELECTOR = re.compile(r"#([A-Za-z_][\w\-]*)")
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x20\x7f]+")
UNIT_PX = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}
LENGTH = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(px|pt|pc|mm|cm|in)?\s*$")
DEFAULT_VIEWBOX = (0.0, 0.0, 100.0, 100.0)  # what renderers assume for an SVG with no size at all


def schema_default(section: str, name: str):
    """The default of `schemas/svg.py`'s `section.name`: every default is written once, there.

    Imported when asked, so importing this module (the render child does) does not import the schemas.
    """
    from quarry.schemas import svg

    return getattr(svg, section).model_fields[name].default


def config_default(section: str, name: str):
    """A dataclass field defaulting to `schema_default(section, name)`."""
    return field(default_factory=lambda: schema_default(section, name))


@dataclass(frozen=True)
class SvgLimits:
    max_inflated_bytes: int = config_default("SvgReaderConfig", "max_inflated_bytes")
    max_elements: int = config_default("SvgLimitsConfig", "max_elements")
    max_expanded_elements: int = config_default("SvgLimitsConfig", "max_expanded_elements")
    max_chars: int = config_default("SvgLimitsConfig", "max_chars")


@dataclass(frozen=True)
class NormaliseOptions:
    precision: int = config_default("NormaliseConfig", "precision")
    rename_ids: bool = config_default("NormaliseConfig", "rename_ids")
    keep_title: bool = config_default("NormaliseConfig", "keep_title")


@dataclass
class PreparedSvg:
    """A safe, canonical SVG and what was measured on it."""

    text: str
    digest: str  # content hash of `text`: the exact-duplicate key and pair id
    viewbox: tuple[float, float, float, float]
    viewbox_derived: bool
    input_bytes: int
    element_count: int
    path_count: int
    path_commands: int
    drawable: int  # elements that draw something (shapes, paths, text, images, uses)
    removed: list[str] = field(default_factory=list)

    @property
    def chars(self) -> int:
        return len(self.text)


# --- bytes -> tree -------------------------------------------------------------------------


def inflate(data: bytes, limit: int) -> Union[bytes, Rejection]:
    """Gunzip `.svgz` bytes (recognised by the gzip magic) up to `limit` bytes; plain bytes pass through."""
    if data[:2] != b"\x1f\x8b":
        return data
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        return Rejection(INVALID, f"corrupt gzip (.svgz): {e}")
    if len(out) > limit:
        return Rejection(TOO_LARGE, f"gzip inflates past {limit} bytes (reader.max_inflated_bytes); "
                                    f"{len(data)} compressed bytes")
    if not d.eof:
        return Rejection(INVALID, "truncated gzip (.svgz)")
    return out


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, dtd_validation=False,
        remove_comments=True, remove_pis=True, remove_blank_text=True,
        # Not collect_ids=False: with lxml 6.1 / libxml2 2.14 it makes the parser load the
        # external DTD subset (<!DOCTYPE svg SYSTEM "file:///...">) despite load_dtd=False.
    )


def _local(tag: str) -> tuple[Optional[str], str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


_ENTITY_DECLS = tuple("<!ENTITY".encode(enc) for enc in ("ascii", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"))


def parse(data: bytes, limits: SvgLimits) -> Union[etree._Element, Rejection]:
    """Bytes -> the root element, refusing DTD entities before anything is expanded."""
    if not data.strip():
        return Rejection(INVALID, "empty input")
    if any(decl in data for decl in _ENTITY_DECLS):
        # Refused before parsing: entity bombs (billion laughs), XXE (SYSTEM "file:///..."),
        # parameter entities. libxml2 would stop some of them too, as a syntax error.
        return Rejection(UNSAFE, "the DTD declares entities (entity expansion and external entities are refused)")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        return Rejection(INVALID, f"not well-formed XML: {e}"[:300])
    except ValueError as e:  # lxml raises this for some encoding problems
        return Rejection(INVALID, f"cannot decode: {e}"[:300])
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        names = sorted({e.name for e in dtd.iterentities()})[:5]
        return Rejection(UNSAFE, f"DTD declares entities {names} (entity expansion and external entities are refused)")
    count = 0
    for el in root.iter():
        if isinstance(el, etree._Entity):
            return Rejection(UNSAFE, f"entity reference &{el.name}; (entities are refused)")
        count += 1
        if count > limits.max_elements:
            return Rejection(TOO_LONG, f"more than {limits.max_elements} elements (limits.max_elements)")
    ns, local = _local(root.tag) if isinstance(root.tag, str) else (None, "")
    if local != "svg" or ns not in (SVG_NS, None):
        return Rejection(INVALID, f"root element is {root.tag!r}, not svg")
    if ns is None:  # inline-HTML style SVG without xmlns: move un-namespaced elements into SVG
        for el in root.iter():
            if isinstance(el.tag, str) and not el.tag.startswith("{"):
                el.tag = f"{{{SVG_NS}}}{el.tag}"
    return root


# --- sanitising ----------------------------------------------------------------------------


def _squash(value: str) -> str:
    """A value as a URL parser sees it: control characters and whitespace removed, lowercased."""
    return _CONTROL.sub("", value).lower()


_RASTER_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF")


def is_safe_reference(value: str) -> bool:
    """Local `#fragment`, or a base64 raster data URI whose bytes really start as PNG, JPEG, GIF or WebP.

    The magic check keeps an SVG (which could reference files in turn) from
    riding in under an image/png label, whatever the renderer sniffs.
    """
    v = value.strip()
    if v.startswith("#"):
        return True
    squashed = _squash(v)
    if not RASTER_DATA_URI.match(squashed) or ";base64," not in squashed[:64]:
        return False
    payload = _CONTROL.sub("", v.split(",", 1)[1])[:16]
    try:
        head = base64.b64decode(payload[: len(payload) // 4 * 4], validate=False)
    except ValueError:
        return False
    return head.startswith(_RASTER_MAGIC)


def sanitise_css(text: str) -> tuple[str, list[str]]:
    """CSS with external `url(...)` replaced by `none` and `@import` removed; what was removed."""
    removed: list[str] = []
    if "\\" in text:
        return "", ["css:escaped"]  # escapes can spell url( or @import past any pattern

    def repl(m: re.Match) -> str:
        target = m.group(2).strip()
        if target.startswith("#"):
            return f"url({target})"
        removed.append("url:external")
        return "none"

    out = CSS_URL.sub(repl, text)
    out, n = CSS_IMPORT.subn("", out)
    removed.extend(["css:import"] * n)
    return out, removed


def _is_hostile_value(value: str) -> bool:
    v = _squash(value)
    return "javascript:" in v or "vbscript:" in v or "data:text/html" in v


def _walk(root: etree._Element) -> Iterator[etree._Element]:
    """Elements in document order; the caller may drop the element it was just given, and
    then its subtree is not visited (an `iter()` snapshot would still visit it)."""
    stack = [root]
    while stack:
        el = stack.pop()
        yield el
        if el is root or el.getparent() is not None:  # still attached: visit its children
            stack.extend(reversed(list(el)))


def _drop(el: etree._Element) -> None:
    parent = el.getparent()
    if parent is not None:
        parent.remove(el)


def sanitise(root: etree._Element) -> list[str]:
    """Remove in place what can run code or reach outside the document; returns what was removed."""
    removed: list[str] = []
    for el in _walk(root):
        if not isinstance(el.tag, str):
            _drop(el)
            continue
        ns, local = _local(el.tag)
        if ns != SVG_NS:
            if ns == XHTML_NS or ns in XINCLUDE_NS:
                removed.append(f"element:{local}")
            _drop(el)  # editor metadata (Inkscape, Sodipodi, RDF, Adobe) or foreign markup
            continue
        if local in ACTIVE_ELEMENTS:
            removed.append(local)
            _drop(el)
            continue
        if local in ANIMATION_ELEMENTS:
            target = (el.get("attributeName") or "").strip().lower()
            values = " ".join(el.get(a, "") for a in ("to", "from", "values", "by"))
            if target.endswith("href") or target.startswith("on") or _is_hostile_value(values) or (
                    "url(" in values.lower() and not all(is_safe_reference(m.group(2))
                                                          for m in CSS_URL.finditer(values))):
                removed.append(f"animation:{target or local}")
                _drop(el)
                continue
        dropped = False
        for name in list(el.attrib):
            value = el.attrib[name]
            ans, alocal = _local(name)
            if ans not in (None, XLINK_NS, XML_NS):
                del el.attrib[name]  # editor attributes: normalisation, not safety
                continue
            if alocal.lower().startswith("on"):
                removed.append(f"attr:{alocal}")
                del el.attrib[name]
            elif alocal == "href":
                if not is_safe_reference(value):
                    removed.append("href:javascript" if _is_hostile_value(value) else "href:external")
                    del el.attrib[name]
                    if local in REFERENCING_ELEMENTS:
                        removed.append(f"element:{local}")
                        _drop(el)
                        dropped = True
                        break
            elif _is_hostile_value(value):
                removed.append(f"attr:{alocal}:javascript")
                del el.attrib[name]
            elif alocal == "style" or "url(" in value.lower() or "@import" in value.lower():
                cleaned, what = sanitise_css(value)
                if what:
                    removed.extend(what)
                    if cleaned.strip() and alocal == "style":
                        el.attrib[name] = cleaned
                    else:
                        del el.attrib[name]
        if dropped:
            continue
        if local == "style" and el.text:
            cleaned, what = sanitise_css(el.text)
            removed.extend(what)
            el.text = cleaned
    return removed


def audit(root: etree._Element) -> Optional[str]:
    """What, if anything, is still active or external after sanitising (None when clean)."""
    for el in root.iter():
        if not isinstance(el.tag, str):
            return "non-element node"
        ns, local = _local(el.tag)
        if ns != SVG_NS or local in ACTIVE_ELEMENTS:
            return f"element {el.tag}"
        for name, value in el.attrib.items():
            _, alocal = _local(name)
            if alocal.lower().startswith("on"):
                return f"attribute {alocal}"
            if alocal == "href" and not is_safe_reference(value):
                return f"href {value[:80]!r}"
            if _is_hostile_value(value):
                return f"attribute {alocal} holds a script URL"
            for m in CSS_URL.finditer(value):
                if not m.group(2).strip().startswith("#"):
                    return f"url({m.group(2)[:80]}) in {alocal}"
        if local == "style" and el.text:
            if "\\" in el.text or CSS_IMPORT.search(el.text) or any(
                    not m.group(2).strip().startswith("#") for m in CSS_URL.finditer(el.text)):
                return "external reference in <style>"
    return None


# --- <use> expansion ------------------------------------------------------------------------


def _href(el: etree._Element) -> Optional[str]:
    return el.get("href") if el.get("href") is not None else el.get(f"{{{XLINK_NS}}}href")


def expanded_size(root: etree._Element, limit: int) -> Optional[str]:
    """None when the document, with every `<use>` expanded, stays within `limit` elements; else why not."""
    by_id = {}
    for el in root.iter():
        i = el.get("id")
        if i is not None and i not in by_id:
            by_id[i] = el
    memo: dict[etree._Element, int] = {}
    active: set = set()

    def size(el: etree._Element, depth: int) -> int:
        if el in memo:
            return memo[el]
        if el in active:
            raise _UseBomb("<use> references form a cycle")
        if depth > 200:
            raise _UseBomb("<use> chain deeper than 200")
        active.add(el)
        n = 1
        for child in el:
            n += size(child, depth + 1)
            if n > limit:
                raise _UseBomb(f"more than {limit} elements once <use> is expanded (limits.max_expanded_elements)")
        if _local(el.tag)[1] == "use":
            ref = (_href(el) or "").strip()
            target = by_id.get(ref[1:]) if ref.startswith("#") else None
            if target is not None:
                n += size(target, depth + 1)
        active.discard(el)
        if n > limit:
            raise _UseBomb(f"more than {limit} elements once <use> is expanded (limits.max_expanded_elements)")
        memo[el] = n
        return n

    try:
        size(root, 0)
    except _UseBomb as e:
        return str(e)
    return None


class _UseBomb(Exception):
    pass


# --- normalising ---------------------------------------------------------------------------


def fmt_number(x: float, precision: int) -> str:
    if not math.isfinite(x):
        return "0"
    s = f"{round(x, precision):.{precision}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def round_numbers(value: str, precision: int) -> str:
    return NUMBER.sub(lambda m: fmt_number(float(m.group(0)), precision), _WS.sub(" ", value.strip()))


_PATH_ARGS = {"m": 2, "l": 2, "h": 1, "v": 1, "c": 6, "s": 4, "q": 4, "t": 2, "a": 7, "z": 0}
_PATH_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_PATH_SEP = re.compile(r"[\s,]*")


def minify_path(d: str, precision: int) -> Optional[tuple[str, int]]:
    """Path data rounded and minified, with its segment count; None when `d` does not parse.

    Arc flags are read as single characters (`a1 1 0 011 1` is valid SVG), so
    optimiser-compacted paths survive.
    """
    pos, n = 0, len(d)
    out: list[str] = []
    segments = 0
    prev_num = False

    def skip(p: int) -> int:
        return _PATH_SEP.match(d, p).end()

    pos = skip(pos)
    while pos < n:
        cmd = d[pos]
        if cmd.lower() not in _PATH_ARGS:
            return None
        pos = skip(pos + 1)
        out.append("Z" if cmd == "z" else cmd)  # closepath: z and Z are the same command
        prev_num = False
        nargs = _PATH_ARGS[cmd.lower()]
        if nargs == 0:
            segments += 1
            continue
        first = True
        while first or (pos < n and d[pos].lower() not in _PATH_ARGS):
            first = False
            for i in range(nargs):
                if cmd in "Aa" and i in (3, 4):
                    if pos >= n or d[pos] not in "01":
                        return None
                    token = d[pos]
                    pos = skip(pos + 1)
                else:
                    m = _PATH_NUMBER.match(d, pos)
                    if m is None:
                        return None
                    token = fmt_number(float(m.group(0)), precision)
                    pos = skip(m.end())
                if prev_num and not token.startswith("-"):
                    out.append(" ")
                out.append(token)
                prev_num = True
            segments += 1
    return "".join(out), segments


def _parse_length(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    m = LENGTH.match(value)
    if m is None:
        return None
    v = float(m.group(1)) * UNIT_PX[m.group(2) or ""]
    return v if v > 0 and math.isfinite(v) else None


def _viewbox(root: etree._Element) -> Union[tuple[tuple[float, float, float, float], bool], Rejection]:
    raw = root.get("viewBox")
    if raw is not None:
        nums = [float(x) for x in NUMBER.findall(raw)]
        if len(nums) != 4 or not all(math.isfinite(x) for x in nums) or nums[2] <= 0 or nums[3] <= 0:
            return Rejection(INVALID, f"unusable viewBox {raw[:80]!r}")
        return (nums[0], nums[1], nums[2], nums[3]), False
    w, h = _parse_length(root.get("width")), _parse_length(root.get("height"))
    if w is None and h is None:
        return DEFAULT_VIEWBOX, True
    return (0.0, 0.0, w or h, h or w), True


def _references(root: etree._Element) -> list[str]:
    """Ids referenced by href="#id", url(#id) or CSS #id selectors, in document order (first seen)."""
    seen: dict[str, None] = {}
    for el in root.iter():
        for name, value in el.attrib.items():
            if _local(name)[1] == "href" and value.strip().startswith("#"):
                seen.setdefault(value.strip()[1:], None)
            elif "url(" in value:
                for m in CSS_URL.finditer(value):
                    t = m.group(2).strip()
                    if t.startswith("#"):
                        seen.setdefault(t[1:], None)
        if _local(el.tag)[1] == "style" and el.text:
            for m in CSS_URL.finditer(el.text):
                t = m.group(2).strip()
                if t.startswith("#"):
                    seen.setdefault(t[1:], None)
            for m in CSS_ID_SELECTOR.finditer(el.text):
                seen.setdefault(m.group(1), None)
    return list(seen)


def _rename_ids(root: etree._Element) -> None:
    referenced = set(_references(root))
    mapping: dict[str, str] = {}
    for el in root.iter():
        i = el.get("id")
        if i is None:
            continue
        if i in referenced and i not in mapping:
            mapping[i] = f"i{len(mapping)}"
            el.set("id", mapping[i])
        else:
            del el.attrib["id"]  # unreferenced, or a duplicate id (only the first can be referenced)

    def sub_url(value: str) -> str:
        def repl(m: re.Match) -> str:
            t = m.group(2).strip()
            return f"url(#{mapping[t[1:]]})" if t.startswith("#") and t[1:] in mapping else m.group(0)
        return CSS_URL.sub(repl, value)

    for el in root.iter():
        for name, value in list(el.attrib.items()):
            if _local(name)[1] == "href" and value.strip().startswith("#"):
                target = value.strip()[1:]
                if target in mapping:
                    el.set(name, f"#{mapping[target]}")
            elif "url(" in value:
                el.set(name, sub_url(value))
        if _local(el.tag)[1] == "style" and el.text:
            text = sub_url(el.text)
            el.text = CSS_ID_SELECTOR.sub(lambda m: f"#{mapping.get(m.group(1), m.group(1))}", text)


def _clean_tree(root: etree._Element, opts: NormaliseOptions) -> None:
    """Editor leftovers, whitespace, xlink:href -> href, numbers rounded and minified."""
    drop = set(EDITOR_ONLY_ELEMENTS)
    if not opts.keep_title:
        drop |= {"title", "desc"}
    for el in _walk(root):
        local = _local(el.tag)[1]
        if local in drop:
            _drop(el)
            continue
        for name in list(el.attrib):
            ans, alocal = _local(name)
            value = el.attrib[name]
            if ans == XLINK_NS:
                del el.attrib[name]
                if alocal == "href" and el.get("href") is None:
                    el.set("href", value.strip())
                continue
            if alocal in NUMERIC_ATTRIBUTES:
                el.set(name, round_numbers(value, opts.precision))
            elif alocal == "d":
                minified = minify_path(value, opts.precision)
                el.set(name, minified[0] if minified is not None else _WS.sub(" ", value.strip()))
            else:
                el.set(name, _WS.sub(" ", value.strip()))
        if local in TEXT_ELEMENTS:
            if el.text is not None:
                el.text = _WS.sub(" ", el.text) if local != "style" else _WS.sub(" ", el.text).strip()
        else:
            el.text = None
        parent = el.getparent()
        if parent is not None and _local(parent.tag)[1] not in TEXT_ELEMENTS:
            el.tail = None
        elif el.tail is not None:
            el.tail = _WS.sub(" ", el.tail)
    # Empty containers without an id draw nothing: drop them, innermost first.
    for el in reversed(list(root.iter())):
        if el is not root and _local(el.tag)[1] in ("g", "defs") and len(el) == 0 and el.get("id") is None:
            _drop(el)


def _escape_attr(v: str) -> str:
    return v.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


def _escape_text(v: str) -> str:
    return v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def serialise(root: etree._Element) -> str:
    """Canonical text: SVG namespace declared once, attributes sorted, no inter-element whitespace."""
    parts: list[str] = []

    def attr_name(name: str) -> str:
        ns, local = _local(name)
        return f"xml:{local}" if ns == XML_NS else local

    def walk(el: etree._Element, is_root: bool) -> None:
        local = _local(el.tag)[1]
        attrs = sorted((attr_name(k), v) for k, v in el.attrib.items())
        if is_root:
            attrs = [("xmlns", SVG_NS)] + attrs
        parts.append("<" + local + "".join(f' {k}="{_escape_attr(v)}"' for k, v in attrs))
        if len(el) == 0 and not el.text:
            parts.append("/>")
        else:
            parts.append(">")
            if el.text:
                parts.append(_escape_text(el.text))
            for child in el:
                walk(child, False)
                if child.tail:
                    parts.append(_escape_text(child.tail))
            parts.append(f"</{local}>")

    walk(root, True)
    return "".join(parts)


def measure(root: etree._Element) -> tuple[int, int, int, int]:
    """(elements, paths, path commands, drawable elements); a basic shape counts as one command."""
    elements = paths = commands = drawable = 0
    for el in root.iter():
        elements += 1
        local = _local(el.tag)[1]
        if local == "path":
            paths += 1
            parsed = minify_path(el.get("d", ""), 8)
            commands += parsed[1] if parsed is not None else 0
        elif local in SHAPE_ELEMENTS:
            commands += 1
        if local in DRAWABLE_ELEMENTS:
            drawable += 1
    return elements, paths, commands, drawable


def prepare_svg(data: bytes, limits: Optional[SvgLimits] = None,
                opts: Optional[NormaliseOptions] = None) -> Union[PreparedSvg, Rejection]:
    """Bytes of one `.svg`/`.svgz` -> a safe canonical `PreparedSvg`, or why not (limits, opts: the defaults)."""
    limits = SvgLimits() if limits is None else limits
    opts = NormaliseOptions() if opts is None else opts
    raw = inflate(data, limits.max_inflated_bytes)
    if isinstance(raw, Rejection):
        return raw
    root = parse(raw, limits)
    if isinstance(root, Rejection):
        return root
    removed = sanitise(root)
    problem = audit(root)
    if problem is not None:
        return Rejection(UNSAFE, f"still external or active after sanitising: {problem}")
    bomb = expanded_size(root, limits.max_expanded_elements)
    if bomb is not None:
        return Rejection(UNSAFE, bomb)
    box = _viewbox(root)
    if isinstance(box, Rejection):
        return box
    viewbox, derived = box
    for name in ("width", "height", "x", "y"):
        root.attrib.pop(name, None)
    root.set("viewBox", " ".join(fmt_number(v, opts.precision) for v in viewbox))
    if opts.rename_ids:
        _rename_ids(root)
    _clean_tree(root, opts)
    text = serialise(root)
    if len(text) > limits.max_chars:
        return Rejection(TOO_LONG, f"{len(text)} characters after normalising > limits.max_chars={limits.max_chars}")
    elements, paths, commands, drawable = measure(root)
    return PreparedSvg(
        text=text, digest=digest(text.encode()), viewbox=viewbox, viewbox_derived=derived, input_bytes=len(raw),
        element_count=elements, path_count=paths, path_commands=commands, drawable=drawable, removed=removed,
    )


def tier_index(value: int, bounds: list[int]) -> int:
    """0 (very_easy) .. 4 (very_hard): the first bound `value` is below."""
    for i, b in enumerate(bounds):
        if value < b:
            return i
    return len(bounds)


def tier_of(prepared: PreparedSvg, char_bounds: list[int], command_bounds: list[int]) -> str:
    """The harder of the tier by code length and the tier by path complexity."""
    from quarry.schemas.common import TIERS

    return TIERS[max(tier_index(prepared.chars, char_bounds), tier_index(prepared.path_commands, command_bounds))]
