"""Visible DOM elements of a rendered page, with their boxes.

`EXTRACT_JS` runs inside the page (Playwright `page.evaluate`) and returns
every element a person can see in the viewport screenshot:

- a box from `getBoundingClientRect`, clipped to the viewport, at least
  `min_side` CSS px on both sides after clipping (so off-screen elements and
  `display:none` ones, whose box is empty, are out);
- not `visibility:hidden|collapse`, not `opacity:0` on it or any ancestor,
  not inside a closed `<details>` or `content-visibility:hidden`
  (`Element.checkVisibility` with every option, plus an explicit ancestor
  walk for opacity);
- not covered: `document.elementsFromPoint` at the centre and four inner
  points (25%/75% of the clipped box); a point counts when the topmost hit is
  the element or one of its descendants, and a majority of the points must.

Which elements: interactive ones (links, buttons, form fields, ARIA widget
roles, `onclick`, listeners for click/pointer/mouse events, `tabindex >= 0`,
`contenteditable`, `cursor:pointer` not inherited), media (img, svg,
canvas, video, picture, iframe), and elements with their own text or a
label. Plain layout containers with no own text are skipped, and so is
anything inside an interactive element (the button stands for its label).

Per element: tag, role (explicit `role`, else the implicit ARIA role of
the tag), accessible name (aria-labelledby, aria-label, a `<label>`, alt,
text, value, title, placeholder), whether it is interactive, and a DOM path.

`LISTENER_PROBE_JS` is an init script (runs before the page's own scripts)
that records which elements get click-like listeners, since a page cannot
otherwise tell.

Python side: `parse_elements` validates the raw result and turns CSS-pixel
boxes into screenshot-pixel boxes and 0-1000 normalised boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

LISTENER_PROBE_JS = r"""
(() => {
  const marks = new WeakSet();
  const kinds = new Set(['click', 'mousedown', 'mouseup', 'pointerdown', 'pointerup', 'touchstart', 'dblclick']);
  const orig = EventTarget.prototype.addEventListener;
  EventTarget.prototype.addEventListener = function (type, listener, options) {
    try { if (kinds.has(String(type)) && this instanceof Element) marks.add(this); } catch (e) {}
    return orig.call(this, type, listener, options);
  };
  Object.defineProperty(window, '__quarryHasClick', { value: (el) => marks.has(el), enumerable: false });
})();
"""

EXTRACT_JS = r"""
(opts) => {
  const W = window.innerWidth, H = window.innerHeight;
  const MIN = opts.minSide;
  const IMPLICIT = {
    a: (e) => e.hasAttribute('href') ? 'link' : null, area: (e) => e.hasAttribute('href') ? 'link' : null,
    button: () => 'button', summary: () => 'button', select: (e) => (e.multiple || e.size > 1) ? 'listbox' : 'combobox',
    textarea: () => 'textbox', img: (e) => e.getAttribute('alt') === '' ? 'presentation' : 'img',
    svg: () => 'img', canvas: () => null, video: () => null, iframe: () => null,
    h1: () => 'heading', h2: () => 'heading', h3: () => 'heading', h4: () => 'heading', h5: () => 'heading', h6: () => 'heading',
    nav: () => 'navigation', main: () => 'main', header: () => 'banner', footer: () => 'contentinfo', aside: () => 'complementary',
    form: () => 'form', ul: () => 'list', ol: () => 'list', li: () => 'listitem', table: () => 'table', tr: () => 'row',
    td: () => 'cell', th: () => 'columnheader', p: () => 'paragraph', option: () => 'option', dialog: () => 'dialog',
    progress: () => 'progressbar', meter: () => 'meter', hr: () => 'separator', blockquote: () => 'blockquote',
    code: () => 'code', pre: () => null, label: () => null, dt: () => 'term', dd: () => 'definition',
    input: (e) => {
      const t = (e.getAttribute('type') || 'text').toLowerCase();
      return ({checkbox: 'checkbox', radio: 'radio', range: 'slider', number: 'spinbutton', search: 'searchbox',
               button: 'button', submit: 'button', reset: 'button', image: 'button', email: 'textbox', tel: 'textbox',
               text: 'textbox', url: 'textbox', password: 'textbox', date: 'textbox', file: 'button', color: 'button'})[t] || 'textbox';
    },
  };
  const WIDGET_ROLES = new Set(['button', 'link', 'checkbox', 'radio', 'switch', 'tab', 'menuitem', 'menuitemcheckbox',
    'menuitemradio', 'option', 'textbox', 'searchbox', 'combobox', 'slider', 'spinbutton', 'treeitem']);
  const MEDIA = new Set(['img', 'svg', 'canvas', 'video', 'picture', 'iframe', 'embed', 'object', 'audio']);
  const SKIP = new Set(['script', 'style', 'noscript', 'template', 'head', 'meta', 'link', 'title', 'html', 'body',
    'br', 'wbr', 'source', 'track', 'param', 'option', 'optgroup', 'datalist', 'map', 'area']);
  const clean = (s) => (s || '').replace(/\s+/g, ' ').trim().slice(0, 200);
  const hasClick = window.__quarryHasClick || (() => false);

  function role(el, tag) {
    const explicit = (el.getAttribute('role') || '').trim().split(/\s+/)[0];
    if (explicit) return explicit.toLowerCase();
    const f = IMPLICIT[tag];
    return f ? f(el) : null;
  }
  function interactive(el, tag, r, cs) {
    if (tag === 'a' && el.hasAttribute('href')) return true;
    if (['button', 'select', 'textarea', 'summary'].includes(tag)) return !el.disabled;
    if (tag === 'input') return (el.type || '') !== 'hidden' && !el.disabled;
    if (r && WIDGET_ROLES.has(r)) return true;
    if (el.hasAttribute('onclick') || typeof el.onclick === 'function' || hasClick(el)) return true;
    if (el.isContentEditable && !(el.parentElement && el.parentElement.isContentEditable)) return true;
    const ti = el.getAttribute('tabindex');
    if (ti !== null && parseInt(ti, 10) >= 0) return true;
    if (cs.cursor === 'pointer') {
      const p = el.parentElement;
      return !p || getComputedStyle(p).cursor !== 'pointer';
    }
    return false;
  }
  function ownText(el) {
    let t = '';
    for (const n of el.childNodes) if (n.nodeType === 3) t += n.nodeValue;
    return clean(t);
  }
  function labelFor(el) {
    if (el.labels && el.labels.length) return clean(el.labels[0].innerText);
    return '';
  }
  function name(el, tag) {
    const by = el.getAttribute('aria-labelledby');
    if (by) {
      const t = by.split(/\s+/).map((id) => document.getElementById(id)).filter(Boolean).map((n) => n.innerText).join(' ');
      if (clean(t)) return clean(t);
    }
    const aria = clean(el.getAttribute('aria-label'));
    if (aria) return aria;
    if (tag === 'input' || tag === 'textarea' || tag === 'select') {
      const t = (el.type || '').toLowerCase();
      if (['submit', 'button', 'reset'].includes(t)) return clean(el.value) || (t === 'submit' ? 'Submit' : t === 'reset' ? 'Reset' : '');
      if (t === 'image') return clean(el.getAttribute('alt')) || clean(el.value);
      return labelFor(el) || clean(el.getAttribute('title')) || clean(el.getAttribute('placeholder'));
    }
    if (tag === 'img' || tag === 'area') { const a = clean(el.getAttribute('alt')); if (a) return a; }
    if (tag === 'svg') { const t = el.querySelector('title'); if (t && clean(t.textContent)) return clean(t.textContent); }
    const text = clean(el.innerText);
    if (text) return text;
    return clean(el.getAttribute('title')) || clean(el.getAttribute('placeholder')) || clean(el.getAttribute('value'));
  }
  function path(el) {
    const parts = [];
    for (let n = el; n && n.nodeType === 1 && parts.length < 40; n = n.parentElement) {
      const tag = n.tagName.toLowerCase();
      const p = n.parentElement;
      if (!p) { parts.push(tag); break; }
      let i = 1, same = 0;
      for (const s of p.children) { if (s.tagName === n.tagName) { same++; if (s === n) i = same; } }
      parts.push(same > 1 ? `${tag}:nth-of-type(${i})` : tag);
    }
    return parts.reverse().join('>');
  }
  function opaque(el) {
    for (let n = el; n && n.nodeType === 1; n = n.parentElement) {
      if (parseFloat(getComputedStyle(n).opacity) === 0) return false;
    }
    return true;
  }
  function uncovered(el, x1, y1, x2, y2) {
    const pts = [[(x1 + x2) / 2, (y1 + y2) / 2], [x1 + (x2 - x1) * 0.25, y1 + (y2 - y1) * 0.25],
                 [x1 + (x2 - x1) * 0.75, y1 + (y2 - y1) * 0.25], [x1 + (x2 - x1) * 0.25, y1 + (y2 - y1) * 0.75],
                 [x1 + (x2 - x1) * 0.75, y1 + (y2 - y1) * 0.75]];
    let hits = 0;
    for (const [x, y] of pts) {
      const stack = document.elementsFromPoint(x, y);
      if (!stack.length) continue;
      const top = stack[0];
      if (top === el || el.contains(top)) { hits++; continue; }
      // The element itself ignores the pointer (pointer-events:none): visible if what is on top holds it.
      if (!stack.includes(el) && top.contains(el) && getComputedStyle(el).pointerEvents === 'none') hits++;
    }
    return hits * 2 > pts.length;
  }

  const out = [];
  let nodes = 0, capped = false;
  const walker = document.createTreeWalker(document.body || document.documentElement, NodeFilter.SHOW_ELEMENT);
  let el = walker.currentNode;
  // Elements inside an interactive element are represented by it.
  const insideInteractive = new WeakSet();
  while (el) {
    if (++nodes > opts.maxNodes) { capped = true; break; }
    const tag = el.tagName.toLowerCase();
    const parent = el.parentElement;
    const underInteractive = parent && insideInteractive.has(parent);
    let skipChildren = false;
    if (underInteractive) insideInteractive.add(el);
    if (SKIP.has(tag) && tag !== 'body' && tag !== 'html') {
      skipChildren = true;
    } else if (tag !== 'body' && tag !== 'html' && !underInteractive) {
      const r = el.getBoundingClientRect();
      const x1 = Math.max(0, r.left), y1 = Math.max(0, r.top), x2 = Math.min(W, r.right), y2 = Math.min(H, r.bottom);
      if (el.namespaceURI === 'http://www.w3.org/2000/svg' && tag !== 'svg') {
        skipChildren = true;  // parts of an svg are the svg
      } else if (x2 - x1 >= MIN && y2 - y1 >= MIN) {
        const cs = getComputedStyle(el);
        const rl = role(el, tag);
        const inter = interactive(el, tag, rl, cs);
        if (inter) insideInteractive.add(el);
        const own = ownText(el);
        const labelled = el.hasAttribute('aria-label') || el.hasAttribute('title') || (el.hasAttribute('role') && rl !== 'presentation' && rl !== 'none');
        const media = MEDIA.has(tag);
        if (media && tag === 'svg') skipChildren = true;
        if ((inter || media || own || labelled) && rl !== 'presentation' && rl !== 'none'
            && el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true, contentVisibilityAuto: true})
            && cs.visibility === 'visible' && opaque(el) && uncovered(el, x1, y1, x2, y2)) {
          out.push({tag, role: rl, name: name(el, tag), interactive: inter, path: path(el),
                    box: [x1, y1, x2, y2], input_type: tag === 'input' ? (el.type || 'text').toLowerCase() : null});
          if (out.length >= opts.maxElements) { capped = true; break; }
        }
      }
    }
    if (skipChildren) {
      let next = null, n = el;
      while (n && !(next = walker.nextSibling())) { n = walker.parentNode(); if (!n) break; }
      el = next;
    } else {
      el = walker.nextNode();
    }
  }
  const doc = document.scrollingElement || document.documentElement;
  return {elements: out, capped, nodes, viewport: [W, H], scroll_height: doc ? doc.scrollHeight : H};
}
"""


@dataclass(frozen=True)
class Element:
    """One visible element; boxes [x1, y1, x2, y2]."""

    tag: str
    role: str | None
    name: str
    interactive: bool
    path: str
    box_css: tuple[float, float, float, float]  # CSS px, clipped to the viewport
    box_px: tuple[float, float, float, float]  # screenshot px
    box: tuple[int, int, int, int]  # 0-1000 normalised by screenshot width / height
    input_type: str | None = None

    @property
    def center(self) -> tuple[int, int]:
        x1, y1, x2, y2 = self.box
        return (round((x1 + x2) / 2), round((y1 + y2) / 2))

    @property
    def kind(self) -> str:
        """What a person would call it: the role, or the tag."""
        return self.role or self.tag


def normalise_box(box: tuple[float, float, float, float], width: float, height: float) -> tuple[int, int, int, int]:
    """Pixel box -> [x1, y1, x2, y2] on a 0-1000 grid (GLM convention), clamped, x1<=x2."""
    if width <= 0 or height <= 0:
        raise ValueError(f"screen size must be positive, got {width}x{height}")
    x1, y1, x2, y2 = box

    def scale(v: float, total: float) -> int:
        return int(min(1000, max(0, round(v / total * 1000))))

    return (scale(x1, width), scale(y1, height), scale(x2, width), scale(y2, height))


@dataclass(frozen=True)
class PageElements:
    elements: list[Element]
    capped: bool
    nodes: int
    scrollable: bool


def parse_elements(raw: dict[str, Any], device_scale_factor: float, min_side: float) -> PageElements:
    """The JS result -> validated elements (CSS box clipped again, screenshot-pixel and 0-1000 boxes)."""
    vw, vh = (float(v) for v in raw["viewport"])
    out: list[Element] = []
    for e in raw.get("elements", []):
        x1, y1, x2, y2 = (float(v) for v in e["box"])
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            continue
        x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(vw, x2), min(vh, y2)
        if x2 - x1 < min_side or y2 - y1 < min_side:
            continue
        css = (x1, y1, x2, y2)
        px = tuple(round(v * device_scale_factor, 2) for v in css)
        out.append(Element(
            tag=str(e["tag"]), role=e.get("role") or None, name=str(e.get("name") or ""),
            interactive=bool(e.get("interactive")), path=str(e["path"]), box_css=css, box_px=px,  # type: ignore[arg-type]
            box=normalise_box(css, vw, vh), input_type=e.get("input_type"),
        ))
    return PageElements(out, bool(raw.get("capped")), int(raw.get("nodes", 0)),
                        float(raw.get("scroll_height", vh)) > vh + 1)


def area_fraction(e: Element, viewport_w: float, viewport_h: float) -> float:
    x1, y1, x2, y2 = e.box_css
    return (x2 - x1) * (y2 - y1) / (viewport_w * viewport_h)
