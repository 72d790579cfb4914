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

Boxes of text elements (headings, paragraphs, labels, links with text) hug
the rendered text: the union of the client rects (`Range.getClientRects`,
one per line box) of the element's visible text nodes, trimmed of
whitespace, controls' text left out; controls, media, containers and
elements holding media keep their block box (`box_kind`). Names of
containers leave their controls' text out too (a cookie banner is not
named by its "Accept" button), and each name says where it came from
(`name_source`: on screen or not).

`scroll_cue`: the page is taller than the viewport, content lies below
the fold, and content is cut by it (or ends within 5% of it), so the
screenshot shows there is more; a page that ends inside the viewport has
none.

Python side: `parse_elements` validates the raw result and turns CSS-pixel
boxes into screenshot-pixel boxes (scaled by screenshot size / CSS
viewport size) and 0-1000 normalised boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

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
  // Controls whose text is theirs, not their container's (a cookie banner's "Accept" button).
  const CONTROLS = 'button, select, textarea, input, option, [role=button], [role=checkbox], [role=radio], ' +
    '[role=switch], [role=textbox], [role=searchbox], [role=combobox], [role=slider], [role=spinbutton]';
  // Elements whose box stays the block: controls, media, landmarks and other containers.
  const BLOCK_ROLES = new Set(['button', 'checkbox', 'radio', 'switch', 'textbox', 'searchbox', 'combobox', 'slider',
    'spinbutton', 'listbox', 'img', 'navigation', 'main', 'banner', 'contentinfo', 'complementary', 'form', 'search',
    'list', 'table', 'row', 'dialog', 'alertdialog', 'region', 'group', 'toolbar', 'menu', 'menubar', 'tablist',
    'tree', 'grid', 'progressbar', 'meter', 'separator', 'tab', 'menuitem', 'option']);
  const BLOCK_TAGS = new Set(['input', 'select', 'textarea', 'button', 'form', 'nav', 'ul', 'ol', 'table', 'tbody',
    'thead', 'tr', 'dialog', 'fieldset', 'details', 'hr', 'progress', 'meter']);
  const MEDIA_SEL = 'img, svg, video, canvas, picture, iframe, embed, object';
  const visStyle = new Map();
  function textVisible(p) {
    let v = visStyle.get(p);
    if (v === undefined) { const cs = getComputedStyle(p); v = cs.visibility === 'visible' && parseFloat(cs.opacity) !== 0; visStyle.set(p, v); }
    return v;
  }
  // The element's own rendered text (controls inside it excluded): its text nodes, trimmed, one walk.
  function* textNodes(el) {
    const tw = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    let n, seen = 0;
    while ((n = tw.nextNode()) && seen++ < 5000) {
      const v = n.nodeValue;
      const a = v.search(/\S/);
      if (a < 0) continue;
      const p = n.parentElement;
      if (!p || !textVisible(p)) continue;
      const c = p.closest(CONTROLS);
      if (c && c !== el && el.contains(c)) continue;
      yield [n, a, v.length - (v.match(/\s*$/)[0].length)];
    }
  }
  const range = document.createRange();
  // Union of the client rects of the element's text (one per line box), clipped to the viewport; null if none.
  function textBox(el) {
    let x1 = Infinity, y1 = Infinity, x2 = -Infinity, y2 = -Infinity;
    for (const [n, a, b] of textNodes(el)) {
      range.setStart(n, a); range.setEnd(n, b);
      for (const r of range.getClientRects()) {
        if (r.width <= 0 || r.height <= 0) continue;
        x1 = Math.min(x1, r.left); y1 = Math.min(y1, r.top); x2 = Math.max(x2, r.right); y2 = Math.max(y2, r.bottom);
      }
    }
    if (x1 === Infinity) return null;
    x1 = Math.max(0, x1); y1 = Math.max(0, y1); x2 = Math.min(W, x2); y2 = Math.min(H, y2);
    return (x2 - x1 >= MIN && y2 - y1 >= MIN) ? [x1, y1, x2, y2] : null;
  }
  function textWithoutControls(el) {
    let t = '';
    for (const [n] of textNodes(el)) t += ' ' + n.nodeValue;
    return clean(t);
  }
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
  // [name, source]: source says whether the screenshot shows it (text, label, placeholder, value) or not
  // (aria, alt, title).
  function name(el, tag, r) {
    const by = el.getAttribute('aria-labelledby');
    if (by) {
      const t = by.split(/\s+/).map((id) => document.getElementById(id)).filter(Boolean).map((n) => n.innerText).join(' ');
      if (clean(t)) return [clean(t), 'label'];
    }
    const aria = clean(el.getAttribute('aria-label'));
    if (aria) {  // on screen when it repeats the placeholder or the text
      const low = aria.toLowerCase();
      if (clean(el.getAttribute('placeholder')).toLowerCase() === low) return [aria, 'placeholder'];
      if (tag !== 'input' && tag !== 'textarea' && clean(el.innerText).toLowerCase() === low) return [aria, 'text'];
      return [aria, 'aria'];
    }
    if (tag === 'input' || tag === 'textarea' || tag === 'select') {
      const t = (el.type || '').toLowerCase();
      if (['submit', 'button', 'reset'].includes(t)) return [clean(el.value) || (t === 'submit' ? 'Submit' : t === 'reset' ? 'Reset' : ''), 'value'];
      if (t === 'image') return clean(el.getAttribute('alt')) ? [clean(el.getAttribute('alt')), 'alt'] : [clean(el.value), 'value'];
      const lab = labelFor(el);
      if (lab) return [lab, 'label'];
      if (clean(el.getAttribute('title'))) return [clean(el.getAttribute('title')), 'title'];
      return [clean(el.getAttribute('placeholder')), 'placeholder'];
    }
    if (tag === 'img' || tag === 'area') { const a = clean(el.getAttribute('alt')); if (a) return [a, 'alt']; }
    if (tag === 'svg') { const t = el.querySelector('title'); if (t && clean(t.textContent)) return [clean(t.textContent), 'title']; }
    const inter = el.matches(CONTROLS) || (tag === 'a' && el.hasAttribute('href'));
    const text = inter ? clean(el.innerText) : textWithoutControls(el);
    if (text) return [text, 'text'];
    if (clean(el.getAttribute('title'))) return [clean(el.getAttribute('title')), 'title'];
    if (clean(el.getAttribute('placeholder'))) return [clean(el.getAttribute('placeholder')), 'placeholder'];
    return [clean(el.getAttribute('value')), 'value'];
  }
  function field(el, tag) {
    if (tag !== 'input' && tag !== 'textarea') return null;
    const g = (k) => clean(el.getAttribute(k));
    return {type: tag === 'textarea' ? 'textarea' : (el.type || 'text').toLowerCase(), name: g('name'), id: g('id'),
            autocomplete: g('autocomplete'), placeholder: g('placeholder'), pattern: (el.getAttribute('pattern') || '').slice(0, 200),
            inputmode: g('inputmode'), min: g('min'), max: g('max'), maxlength: el.maxLength > 0 ? el.maxLength : null,
            label: labelFor(el)};
  }
  // Goal-level actions (operators/gui/goals.py): which form a control belongs to, whether it submits it, what
  // the form needs, and where a link leads.
  const FILLABLE = new Set(['text', 'email', 'password', 'search', 'tel', 'url', 'number', 'date', 'time',
                            'datetime-local', 'month', 'week']);
  function fillable(c) {
    const t = c.tagName.toLowerCase();
    if (c.disabled || c.readOnly) return false;
    return t === 'textarea' || (t === 'input' && FILLABLE.has((c.type || 'text').toLowerCase()));
  }
  function submits(el, tag) {
    if (!el.form) return false;
    const t = (el.type || '').toLowerCase();
    return (tag === 'button' && t === 'submit') || (tag === 'input' && (t === 'submit' || t === 'image'));
  }
  function formNeeds(f) {
    // fillable fields, fields already holding text, and other controls that would stop the submission now
    let fields = 0, prefilled = 0, blocked = 0;
    for (const c of f.elements) {
      if (fillable(c)) { fields++; if (c.value) prefilled++; }
      else if (c.willValidate && !c.validity.valid) blocked++;
    }
    return {fields, prefilled, blocked};
  }
  function linkTo(el, tag) {
    if (tag !== 'a' || !el.hasAttribute('href')) return null;
    if (el.hasAttribute('download')) return 'other';
    const proto = (el.protocol || '').toLowerCase();
    if (!['http:', 'https:', 'file:'].includes(proto)) return 'other';
    if (el.origin === location.origin && el.pathname === location.pathname && el.search === location.search) {
      if (el.hash.length > 1) {
        let id = null;
        try { id = decodeURIComponent(el.hash.slice(1)); } catch (err) { return 'other'; }
        return document.getElementById(id) ? 'section' : 'same';
      }
      return 'same';
    }
    return 'page';
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
          const [nm, src] = name(el, tag, rl);
          const hug = !media && !BLOCK_TAGS.has(tag) && !(rl && BLOCK_ROLES.has(rl)) && !(inter && tag !== 'a')
                      && !el.querySelector(MEDIA_SEL);
          const tb = hug ? textBox(el) : null;
          out.push({tag, role: rl, name: nm, name_source: src, interactive: inter, path: path(el),
                    box: tb || [x1, y1, x2, y2], block_box: [x1, y1, x2, y2], box_kind: tb ? 'text' : 'block',
                    input_type: tag === 'input' ? (el.type || 'text').toLowerCase() : null, field: field(el, tag),
                    form: el.form ? path(el.form) : null, submits: submits(el, tag),
                    form_needs: submits(el, tag) ? formNeeds(el.form) : null, link_to: linkTo(el, tag)});
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
  const scrollHeight = doc ? doc.scrollHeight : H;
  // A visible cue to scroll: content below the fold, and content cut by the fold (or ending just above it).
  let below = false, cut = false, lowest = 0;
  if (scrollHeight > H + 1) {
    const tw = document.createTreeWalker(document.body || document.documentElement, NodeFilter.SHOW_TEXT);
    let n, seen = 0;
    while ((n = tw.nextNode()) && seen++ < opts.maxNodes && !(below && cut)) {
      if (!/\S/.test(n.nodeValue) || !n.parentElement || !textVisible(n.parentElement)) continue;
      range.selectNodeContents(n);
      for (const r of range.getClientRects()) {
        if (r.width <= 0 || r.height <= 0 || r.right <= 0 || r.left >= W) continue;
        if (r.top >= H) below = true;
        else if (r.bottom > H + 1) { below = true; cut = true; }
        else if (r.bottom > 0) lowest = Math.max(lowest, r.bottom);
      }
    }
    for (const m of document.querySelectorAll(MEDIA_SEL + ', input, button, select, textarea')) {
      if (below && cut) break;
      const r = m.getBoundingClientRect();
      if (r.width <= 0 || r.height <= 0 || r.right <= 0 || r.left >= W) continue;
      if (r.top >= H) below = true;
      else if (r.bottom > H + 1) { below = true; cut = r.top < H - 2 || cut; }
      else if (r.bottom > 0) lowest = Math.max(lowest, r.bottom);
    }
  }
  const cue = below && (cut || lowest >= H * (1 - (opts.foldMargin ?? 0.05)));
  return {elements: out, capped, nodes, viewport: [W, H], scroll_height: scrollHeight, scroll_cue: cue};
}
"""


@dataclass(frozen=True)
class Field:
    """What a text field asks for (the attributes typed text must fit)."""

    type: str = "text"
    name: str = ""
    id: str = ""
    autocomplete: str = ""
    placeholder: str = ""
    pattern: str = ""
    inputmode: str = ""
    min: str = ""
    max: str = ""
    maxlength: Optional[int] = None
    label: str = ""


@dataclass(frozen=True)
class FormNeeds:
    """What a form holds: its fillable text fields (enabled, not read-only; hidden ones too), how many of them
    already hold text, and how many other controls are invalid now (an unchecked required box, an empty required
    select) and would stop a submission."""

    fields: int = 0
    prefilled: int = 0
    blocked: int = 0


@dataclass(frozen=True)
class Element:
    """One visible element; boxes [x1, y1, x2, y2].

    Coordinate spaces: `box_css` is CSS px of the page's layout viewport
    (what `getBoundingClientRect` gives); `box_px` is pixels of the
    screenshot (CSS px x the screenshot's width / the viewport's CSS width:
    the device scale factor, times the page zoom on a mobile viewport
    without a meta viewport); `box` is 0-1000 of the screenshot's width and
    height. For text elements (`box_kind == "text"`) the box is the union
    of the rendered text's line boxes; `block_box_*` is the element's block.
    """

    tag: str
    role: str | None
    name: str
    interactive: bool
    path: str
    box_css: tuple[float, float, float, float]  # CSS px, clipped to the viewport
    box_px: tuple[float, float, float, float]  # screenshot px
    box: tuple[int, int, int, int]  # 0-1000 normalised by screenshot width / height
    input_type: str | None = None
    name_source: str = "text"  # text | label | placeholder | value (on screen) | aria | alt | title (not)
    box_kind: str = "block"  # text: the text's extent | block: the element's box
    block_box_css: tuple[float, float, float, float] | None = None
    block_box_px: tuple[float, float, float, float] | None = None
    block_box: tuple[int, int, int, int] | None = None  # 0-1000, like `box`
    field: Optional[Field] = None
    form: Optional[str] = None  # DOM path of the form a control belongs to
    submits: bool = False  # a submit button (or input type=submit/image) of `form`
    form_needs: Optional["FormNeeds"] = None  # on submit buttons: what their form asks for
    link_to: Optional[str] = None  # links: page (another page) | section (an id on this page) | same | other

    @property
    def center(self) -> tuple[int, int]:
        x1, y1, x2, y2 = self.box
        return (round((x1 + x2) / 2), round((y1 + y2) / 2))

    @property
    def kind(self) -> str:
        """What a person would call it: the role, or the tag."""
        return self.role or self.tag

    @property
    def name_shown(self) -> bool:
        """Is the name on the screenshot (text, a label, a placeholder, a button's value)?"""
        return self.name_source in SHOWN_NAME_SOURCES


SHOWN_NAME_SOURCES = ("text", "label", "placeholder", "value")


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


def _clip(box, vw: float, vh: float) -> Optional[tuple[float, float, float, float]]:
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None
    return (max(0.0, x1), max(0.0, y1), min(vw, x2), min(vh, y2))


def _field(raw: Optional[dict[str, Any]]) -> Optional[Field]:
    if not raw:
        return None
    ml = raw.get("maxlength")
    return Field(**{k: str(raw.get(k) or "") for k in ("type", "name", "id", "autocomplete", "placeholder", "pattern",
                                                        "inputmode", "min", "max", "label")},
                 maxlength=int(ml) if isinstance(ml, (int, float)) and ml > 0 else None)


def _needs(raw: Optional[dict[str, Any]]) -> Optional[FormNeeds]:
    if not raw:
        return None
    return FormNeeds(**{k: int(raw.get(k) or 0) for k in ("fields", "prefilled", "blocked")})


def parse_elements(raw: dict[str, Any], device_scale_factor: float, min_side: float,
                   image_size: Optional[tuple[int, int]] = None) -> PageElements:
    """The JS result -> validated elements (CSS box clipped again, screenshot-pixel and 0-1000 boxes).

    `image_size` (the screenshot's width, height) sets the CSS-px -> screenshot-px scale per axis; without
    it the scale is `device_scale_factor` (right unless a mobile page is zoomed to fit its layout width).
    """
    vw, vh = (float(v) for v in raw["viewport"])
    sx, sy = (image_size[0] / vw, image_size[1] / vh) if image_size else (device_scale_factor, device_scale_factor)
    out: list[Element] = []
    for e in raw.get("elements", []):
        css = _clip(e["box"], vw, vh)
        if css is None or css[2] - css[0] < min_side or css[3] - css[1] < min_side:
            continue
        block = _clip(e.get("block_box") or e["box"], vw, vh) or css

        def px(b):
            return (round(b[0] * sx, 2), round(b[1] * sy, 2), round(b[2] * sx, 2), round(b[3] * sy, 2))

        out.append(Element(
            tag=str(e["tag"]), role=e.get("role") or None, name=str(e.get("name") or ""),
            interactive=bool(e.get("interactive")), path=str(e["path"]), box_css=css, box_px=px(css),
            box=normalise_box(css, vw, vh), input_type=e.get("input_type"),
            name_source=str(e.get("name_source") or "text"), box_kind=str(e.get("box_kind") or "block"),
            block_box_css=block, block_box_px=px(block), block_box=normalise_box(block, vw, vh), field=_field(e.get("field")),
            form=e.get("form") or None, submits=bool(e.get("submits")), form_needs=_needs(e.get("form_needs")),
            link_to=e.get("link_to") or None,
        ))
    cue = raw.get("scroll_cue")
    taller = float(raw.get("scroll_height", vh)) > vh + 1
    return PageElements(out, bool(raw.get("capped")), int(raw.get("nodes", 0)),
                        taller if cue is None else bool(cue) and taller)


def area_fraction(e: Element, viewport_w: float, viewport_h: float) -> float:
    x1, y1, x2, y2 = e.box_css
    return (x2 - x1) * (y2 - y1) / (viewport_w * viewport_h)
