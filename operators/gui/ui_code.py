"""UI-to-code pairs (Design2Code / Vision2Web style): a screenshot <-> one self-contained HTML document.

The code is the page's own rendered DOM, serialised after layout in the
page's browser context (`SERIALIZE_JS`), right after the screenshot:

- every rendered element (display:none subtrees are left out) becomes the
  same tag with a generated class; each class is one distinct set of
  declarations: the element's computed values that differ from what the
  copy would get anyway (the tag's default in a blank document for
  non-inherited properties; the parent's value for inherited ones, unless
  the tag's default sets its own). Logical, SVG-only (on HTML), animation,
  transition and interaction properties are left out. `::before`/`::after`
  with content get their own rules. The stylesheet is one `<style>`: the
  page's `@font-face` rules, then `.sN{...}` rules in first-use order;
- kept attributes are a short allow list (form state from the live
  properties: value, checked, selected; colspan, start, lang, dir, alt...),
  `<a href>` as written, or `#` for javascript:/data:/file:/vbscript:;
  `<script>`, `<noscript>`, `<template>`, `<link>`, `<meta>` (but charset and
  viewport), `<base>`, `<style>` and event-handler attributes never appear;
  `<iframe>`, `<object>`, `<embed>`, `<video>`, `<audio>` and tainted
  canvases become empty `<div>`s of the same box; a readable canvas becomes
  an `<img>` of its pixels; inline `<svg>` keeps its markup without scripts,
  `foreignObject`, `<style>`, handlers or external references, with its
  computed paint inlined;
- assets (img sources, CSS `url()` values, `@font-face` sources) are
  inlined as data: URIs when the page came from the served folder and the
  file is there (read from the folder itself, not fetched again), else
  dropped: an image becomes a transparent pixel of the same box, a CSS
  `url()` becomes `none`, a font rule is left out.

Then the document is rendered in a FRESH browser context with JavaScript
disabled and every request aborted and counted (`rerender`), at the same
viewport and device scale factor, and compared with the page's screenshot
(`similarity`). Reasons a page gives no pair (stage `ui_code`):
``too_large`` (more than `max_nodes` elements, or the document over
`max_bytes`), ``unstable_dom`` (the DOM changed while being watched after
the screenshot: a script rewrites it, so the screenshot and the code would
disagree), ``navigated`` (the page navigated away after loading),
``network_request`` (the document asked for something at re-render; the
serialiser should make that impossible), ``unsafe_output`` (the same, for
markup: a last check of the text), ``capture_failed`` / ``rerender_failed``
(the browser refused or ran out of time), ``render_mismatch`` (similarity
below the threshold).

Similarity (`similarity`): the lower of (a) SSIM of the two screenshots as
greyscale, downscaled to `SIMILARITY_WIDTH` px wide (box filter), 7x7 uniform
windows, the usual constants (Wang et al. 2004), and (b) pixel agreement: the
share of full-resolution pixels whose RGB channels all lie within
`PIXEL_TOLERANCE` of 255. SSIM catches missing or moved structure; pixel
agreement catches colour and small shifts on mostly flat pages. Rounded to
4 decimals, so reruns give the same value.

Tier (`code_tier`): a size level from the elements serialised (< 50: 0,
< 150: 1, < 400: 2, < 1000: 3, else 4; `ui_code.tier_elements`) plus a depth
bonus from the deepest element nesting (< 10: +0, < 18: +1, else +2;
`ui_code.tier_depths`), capped at very_hard.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.gui.wording import EN

# Why a page gives no ui_code pair (stage `ui_code`).
TOO_LARGE = "too_large"
UNSTABLE_DOM = "unstable_dom"
NAVIGATED = "navigated"
NETWORK_REQUEST = "network_request"
UNSAFE_OUTPUT = "unsafe_output"
CAPTURE_FAILED = "capture_failed"
RERENDER_FAILED = "rerender_failed"
RENDER_MISMATCH = "render_mismatch"
REASONS: tuple[str, ...] = (TOO_LARGE, UNSTABLE_DOM, NAVIGATED, NETWORK_REQUEST, UNSAFE_OUTPUT, CAPTURE_FAILED,
                            RERENDER_FAILED, RENDER_MISMATCH)

UI_TO_CODE, CODE_TO_UI = "ui_to_code", "code_to_ui"
TASKS = (UI_TO_CODE, CODE_TO_UI)
TIER_NAMES = ("very_easy", "easy", "medium", "hard", "very_hard")

SIMILARITY_WIDTH = 256
PIXEL_TOLERANCE = 16
SANDBOX_URL = "http://ui-code.invalid/"  # the re-render's document address: fulfilled by the route, never fetched
TRANSPARENT_GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
WATCH_KEY = "__quarryUiCodeWatch"
_TOKEN = re.compile(r"@@qa:(\d+)@@")

UI_TO_CODE_PROMPT = EN.ui_to_code  # each language's in operators/gui/wording.py
CODE_TO_UI_PROMPT = EN.code_to_ui  # a generation pair: the document is the row's `html`, the target the screenshot

WATCH_JS = """(key) => {
    const w = {count: 0};
    w.observer = new MutationObserver((records) => { w.count += records.length; });
    w.observer.observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
    Object.defineProperty(window, key, {value: w, configurable: true, enumerable: false});
}"""

SERIALIZE_JS = r"""(opts) => {
  const watch = window[opts.watchKey];
  if (watch) {
    watch.count += watch.observer.takeRecords().length;
    watch.observer.disconnect();
    delete window[opts.watchKey];
    if (watch.count > 0) return {error: 'unstable_dom', detail: watch.count + ' DOM mutation(s) within ' + opts.quietMs + ' ms after the screenshot'};
  }
  const total = document.getElementsByTagName('*').length;
  if (total > opts.maxNodes) return {error: 'too_large', detail: total + ' elements > ui_code.max_nodes=' + opts.maxNodes};
  const SVG = 'http://www.w3.org/2000/svg';
  const INHERITED = new Set(['color', 'font-family', 'font-size', 'font-style', 'font-weight', 'font-variant',
    'font-stretch', 'font-kerning', 'font-feature-settings', 'font-variation-settings', 'font-optical-sizing',
    'font-size-adjust', 'font-synthesis-weight', 'font-synthesis-style', 'font-synthesis-small-caps',
    'font-variant-ligatures', 'font-variant-caps', 'font-variant-numeric', 'font-variant-east-asian',
    'font-variant-alternates', 'font-variant-position', 'font-palette', 'line-height', 'letter-spacing',
    'word-spacing', 'text-align', 'text-align-last', 'text-indent', 'text-transform', 'white-space',
    'white-space-collapse', 'text-wrap', 'text-wrap-mode', 'text-wrap-style', 'word-break', 'overflow-wrap',
    'line-break', 'hyphens', 'tab-size', 'text-shadow', 'text-rendering', 'text-underline-position',
    'text-underline-offset', 'text-decoration-skip-ink', 'text-emphasis-color', 'text-emphasis-position',
    'text-emphasis-style', 'visibility', 'cursor', 'direction', 'writing-mode', 'text-orientation',
    'list-style-type', 'list-style-position', 'list-style-image', 'border-collapse', 'border-spacing',
    'caption-side', 'empty-cells', 'quotes', 'orphans', 'widows', 'color-scheme', 'forced-color-adjust',
    'print-color-adjust', 'image-rendering', 'paint-order', 'ruby-position', 'accent-color', 'caret-color',
    'fill', 'fill-opacity', 'fill-rule', 'stroke', 'stroke-width', 'stroke-opacity', 'stroke-dasharray',
    'stroke-dashoffset', 'stroke-linecap', 'stroke-linejoin', 'stroke-miterlimit', 'text-anchor',
    'dominant-baseline', 'shape-rendering', 'clip-rule', 'color-interpolation', 'color-interpolation-filters',
    'color-rendering', 'marker-start', 'marker-mid', 'marker-end', 'pointer-events', 'user-select',
    '-webkit-text-fill-color', '-webkit-text-stroke-color', '-webkit-text-stroke-width', '-webkit-text-security',
    '-webkit-font-smoothing', '-webkit-locale', '-webkit-tap-highlight-color', '-webkit-text-orientation',
    '-webkit-writing-mode', '-webkit-border-horizontal-spacing', '-webkit-border-vertical-spacing',
    '-webkit-rtl-ordering', '-webkit-user-modify', '-webkit-hyphenate-character', 'math-depth', 'math-style',
    'math-shift', 'text-size-adjust', 'text-spacing-trim', 'text-autospace', 'hyphenate-character',
    'hyphenate-limit-chars', 'text-box-trim', 'dynamic-range-limit', 'interpolate-size']);
  const SVG_ONLY = new Set(['fill', 'fill-opacity', 'fill-rule', 'stroke', 'stroke-width', 'stroke-opacity',
    'stroke-dasharray', 'stroke-dashoffset', 'stroke-linecap', 'stroke-linejoin', 'stroke-miterlimit',
    'marker-start', 'marker-mid', 'marker-end', 'stop-color', 'stop-opacity', 'flood-color', 'flood-opacity',
    'lighting-color', 'color-interpolation', 'color-interpolation-filters', 'color-rendering', 'paint-order',
    'shape-rendering', 'text-anchor', 'dominant-baseline', 'alignment-baseline', 'baseline-shift', 'vector-effect',
    'buffered-rendering', 'clip-rule', 'mask-type', 'cx', 'cy', 'r', 'rx', 'ry', 'x', 'y', 'd']);
  const WEBKIT_KEEP = /^-webkit-(text-stroke|text-fill-color|line-clamp|box-|mask|text-security)/;
  const skip = (p) => p.startsWith('--') || /(^|-)(block|inline)(-|$)/.test(p) || /^border-(start|end)-/.test(p)
    || /^(transition|animation|cursor|pointer-events|user-select|will-change|touch-action|caret-|scroll-|overscroll|view-transition|interactivity|anchor-|position-try|position-anchor|timeline-|scroll-timeline|view-timeline|animation-|content-visibility|accent-color|speak|app-region|offset-path|caret-color|interest-)/.test(p)
    || (p.startsWith('-webkit-') && !WEBKIT_KEEP.test(p));
  const rootCs = getComputedStyle(document.documentElement);
  const names = [];
  for (let i = 0; i < rootCs.length; i++) { const p = rootCs[i]; if (!skip(p)) names.push(p); }
  // Defaults: a blank standards document in a hidden iframe (removed before returning).
  const frame = document.createElement('iframe');
  frame.setAttribute('style', 'position:fixed;left:-20000px;top:0;width:100px;height:100px;border:0;visibility:hidden');
  document.documentElement.appendChild(frame);
  try {
    const fdoc = frame.contentDocument;
    fdoc.open(); fdoc.write('<!DOCTYPE html><html><head></head><body></body></html>'); fdoc.close();
    const fwin = frame.contentWindow;
    const snap = (cs) => { const o = Object.create(null); for (const p of names) o[p] = cs.getPropertyValue(p); return o; };
    const baseline = snap(fwin.getComputedStyle(fdoc.body));
    const defaults = new Map();
    const defaultsFor = (tag, svg) => {
      const key = (svg ? 'svg:' : '') + tag;
      let d = defaults.get(key);
      if (d) return d;
      if (tag === 'html') d = snap(fwin.getComputedStyle(fdoc.documentElement));
      else if (tag === 'body') d = baseline;
      else {
        const el = svg ? fdoc.createElementNS(SVG, tag) : fdoc.createElement(tag);
        if (tag === 'a' || tag === 'area') el.setAttribute('href', '#');  // links are written with their href
        fdoc.body.appendChild(el);
        d = snap(fwin.getComputedStyle(el));
        fdoc.body.removeChild(el);
      }
      defaults.set(key, d);
      return d;
    };
    const assets = [], assetIndex = new Map();
    const asset = (url) => {
      if (url.startsWith('data:')) return url;
      let n = assetIndex.get(url);
      if (n === undefined) { n = assets.length; assets.push(url); assetIndex.set(url, n); }
      return '@@qa:' + n + '@@';
    };
    const urls = (v) => v.indexOf('url(') < 0 ? v : v.replace(/url\("([^"]*)"\)/g, (m, u) => 'url("' + asset(u) + '")');
    // Heights are written only where the page sets one (a rule or inline style naming height) or the
    // element is replaced: a fixed height on an auto-height block stops its last child's margin from
    // collapsing through it, and the content below moves.
    const heightSet = new Set();
    const markHeights = (rules) => {
      for (const r of rules) {
        if (r.style && r.selectorText && (r.style.getPropertyValue('height') || r.style.getPropertyValue('block-size'))) {
          try { for (const e of document.querySelectorAll(r.selectorText)) heightSet.add(e); } catch (e) {}
        }
        if (r.cssRules) { try { markHeights(r.cssRules); } catch (e) {} }
      }
    };
    for (const sheet of document.styleSheets) { try { markHeights(sheet.cssRules); } catch (e) {} }
    const REPLACED = new Set(['img', 'input', 'textarea', 'select', 'button', 'canvas', 'svg', 'video', 'iframe',
      'object', 'embed', 'audio', 'progress', 'meter', 'hr']);
    const CURRENT = ['border-top-color', 'border-right-color', 'border-bottom-color', 'border-left-color',
      'column-rule-color', 'row-rule-color', 'outline-color', 'text-decoration-color', 'text-emphasis-color',
      '-webkit-text-fill-color', '-webkit-text-stroke-color'];
    const decls = (values, def, parentValues, svgRoot, el) => {
      const out = [];
      const keepHeight = !el || heightSet.has(el) || (el.style && el.style.height) || REPLACED.has(el.localName);
      const sameAsColor = new Set(CURRENT.filter((p) => values[p] === values.color && def[p] === def.color));
      for (const p of names) {
        if (!svgRoot && SVG_ONLY.has(p)) continue;
        if (p === 'height' && !keepHeight) continue;
        if (sameAsColor.has(p)) continue;  // currentcolor: follows `color`
        if (p === 'transform-origin' && values.transform === 'none' && values.rotate === 'none'
            && values.scale === 'none' && values.translate === 'none') continue;
        if (p === 'perspective-origin' && values.perspective === 'none') continue;
        const v = values[p];
        let expected = def[p];
        if (parentValues && INHERITED.has(p) && def[p] === baseline[p]) expected = parentValues[p];
        if (v !== expected) out.push(p + ':' + urls(v));
      }
      return out.join(';');
    };
    const classes = new Map(), rules = [];
    const classFor = (own, before, after) => {
      if (!own && !before && !after) return '';
      const key = own + '\u0001' + before + '\u0001' + after;
      let c = classes.get(key);
      if (!c) { c = 's' + classes.size; classes.set(key, c); rules.push([c, own, before, after]); }
      return c;
    };
    const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
    const attr = (s) => String(s).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
    const VOID = new Set(['area', 'br', 'col', 'hr', 'img', 'input', 'wbr', 'source', 'track']);
    const DROP = new Set(['script', 'noscript', 'template', 'style', 'link', 'meta', 'base', 'title', 'head', 'source',
      'track', 'param', 'slot', 'frame', 'frameset', 'portal', 'fencedframe']);
    const BOXES = new Set(['iframe', 'object', 'embed', 'video', 'audio', 'applet']);
    const KEEP = {'*': ['lang', 'dir'], a: [], td: ['colspan', 'rowspan'], th: ['colspan', 'rowspan'],
      col: ['span'], colgroup: ['span'], ol: ['start', 'reversed', 'type'], li: ['value'], img: ['width', 'height'],
      input: ['type', 'placeholder', 'disabled', 'readonly', 'min', 'max', 'step', 'size', 'multiple'],
      textarea: ['placeholder', 'disabled', 'readonly', 'rows', 'cols'], select: ['disabled', 'multiple', 'size'],
      option: ['disabled', 'label'], optgroup: ['label', 'disabled'], button: ['disabled'], details: ['open'],
      dialog: ['open'], progress: ['value', 'max'], meter: ['value', 'min', 'max', 'low', 'high', 'optimum'],
      fieldset: ['disabled'], table: [], abbr: [], time: []};
    const UNSAFE_HREF = /^\s*(javascript|data|vbscript|file)\s*:/i;
    const PAINT = ['fill', 'fill-opacity', 'fill-rule', 'stroke', 'stroke-width', 'stroke-opacity', 'stroke-dasharray',
      'stroke-linecap', 'stroke-linejoin', 'opacity', 'display', 'visibility', 'font-family', 'font-size',
      'font-weight', 'text-anchor', 'color', 'stop-color', 'stop-opacity'];
    let size = 0, elements = 0, maxDepth = 0, dropped = 0, tooLarge = false;
    const parts = [];
    const push = (s) => { size += s.length; if (size > opts.maxBytes) tooLarge = true; parts.push(s); };
    const svgCopy = (el) => {
      const clone = el.cloneNode(true);
      const src = [el, ...el.querySelectorAll('*')], dst = [clone, ...clone.querySelectorAll('*')];
      for (let i = 0; i < dst.length; i++) {
        const d = dst[i], s = src[i];
        const tag = d.localName.toLowerCase();
        if (tag === 'script' || tag === 'foreignobject' || tag === 'style' || tag === 'iframe') { d.remove(); continue; }
        for (const a of Array.from(d.attributes)) {
          const n = a.name.toLowerCase();
          if (n.startsWith('on') || n === 'style' || n === 'class') d.removeAttribute(a.name);
          else if ((n === 'href' || n === 'xlink:href' || n === 'src') && !a.value.trim().startsWith('#')) {
            if (tag === 'image' && !UNSAFE_HREF.test(a.value)) {
              d.setAttribute(a.name, asset(new URL(a.value, document.baseURI).href));
            } else d.removeAttribute(a.name);
          } else if (/url\(/i.test(a.value) && !/url\(\s*['"]?#/i.test(a.value)) d.removeAttribute(a.name);
        }
        if (i === 0) continue;
        const cs = getComputedStyle(s), pcs = getComputedStyle(s.parentElement);
        const own = [];
        for (const p of PAINT) {
          const v = cs.getPropertyValue(p);
          if (v !== pcs.getPropertyValue(p) || p === 'display' && v === 'none') own.push(p + ':' + v);
        }
        if (own.length) d.setAttribute('style', own.join(';').replace(/url\("[^"]*"\)/g, 'none'));
      }
      return clone;
    };
    const walk = (el, parentValues, depth) => {
      if (tooLarge) return;
      const tag = el.localName.toLowerCase();
      if (DROP.has(tag) || el === frame) return;
      const cs = getComputedStyle(el);
      if (cs.display === 'none') return;
      elements += 1;
      if (depth > maxDepth) maxDepth = depth;
      const values = snap(cs);
      const isSvg = el.namespaceURI === SVG;
      if (isSvg) {  // an inline <svg> (its subtree is copied, not walked)
        const clone = svgCopy(el);
        const cls = classFor(decls(values, defaultsFor('svg', true), parentValues, true, el), '', '');
        if (cls) clone.setAttribute('class', cls); else clone.removeAttribute('class');
        for (const e of clone.querySelectorAll('*')) e.removeAttribute('class');
        const text = new XMLSerializer().serializeToString(clone);
        elements += clone.querySelectorAll('*').length;
        push(urls(text));
        return;
      }
      let outTag = tag, a = '', inner = null;
      const pseudo = (which) => {
        const pcs = getComputedStyle(el, which);
        const c = pcs.getPropertyValue('content');
        if (!c || c === 'none' || c === 'normal') return '';
        return decls(snap(pcs), defaultsFor('span', false), values, false);
      };
      let own, before = '', after = '';
      if (BOXES.has(tag) || (tag === 'canvas' && !canvasData(el))) {
        outTag = 'div'; dropped += 1;
        // an iframe or a video is an inline replaced box; an inline div would ignore its size
        const boxValues = values.display === 'inline' ? Object.assign({}, values, {display: 'inline-block'}) : values;
        own = decls(boxValues, defaultsFor('div', false), parentValues, false, el);
        inner = '';
      } else if (tag === 'canvas') {
        outTag = 'img';
        own = decls(values, defaultsFor('img', false), parentValues, false, el);
        a += ' src="' + attr(canvasData(el)) + '"';
      } else {
        own = decls(values, defaultsFor(tag, false), parentValues, false, el);
        if (!VOID.has(tag)) { before = pseudo('::before'); after = pseudo('::after'); }
        const keep = (KEEP[tag] || []).concat(KEEP['*']);
        for (const n of keep) if (el.hasAttribute(n)) a += ' ' + n + '="' + attr(el.getAttribute(n)) + '"';
        if (tag === 'a' && el.hasAttribute('href'))  // a javascript:/data:/file: link stays a link, to "#"
          a += ' href="' + (UNSAFE_HREF.test(el.getAttribute('href')) ? '#' : attr(el.getAttribute('href'))) + '"';
        if (tag === 'img') {
          const u = el.currentSrc || el.src;
          if (u && el.complete && el.naturalWidth > 0) a += ' src="' + asset(u) + '"';
          else { a += ' src="' + opts.blank + '"'; dropped += 1; }
          if (el.hasAttribute('alt')) a += ' alt="' + attr(el.getAttribute('alt')) + '"';
        }
        if (tag === 'input') {
          const type = (el.getAttribute('type') || '').toLowerCase();
          if (type === 'image') { a += ' src="' + opts.blank + '"'; dropped += 1; }
          else if (type !== 'file' && el.value !== '') a += ' value="' + attr(el.value) + '"';
          if (el.checked) a += ' checked';
        }
        if (tag === 'option' && el.selected) a += ' selected';
        if (tag === 'textarea') inner = esc(el.value);
      }
      const cls = classFor(own, before, after);
      push('<' + outTag + (cls ? ' class="' + cls + '"' : '') + a + '>');
      if (VOID.has(outTag)) return;
      if (inner !== null) push(inner);
      else for (const n of el.childNodes) {
        if (n.nodeType === 3) push(esc(n.data));
        else if (n.nodeType === 1) walk(n, values, depth + 1);
        if (tooLarge) return;
      }
      push('</' + outTag + '>');
    };
    const canvasCache = new Map();
    function canvasData(el) {
      if (canvasCache.has(el)) return canvasCache.get(el);
      let d = null;
      try { d = el.toDataURL('image/png'); } catch (e) { d = null; }
      canvasCache.set(el, d);
      return d;
    }
    const html = document.documentElement, body = document.body;
    const htmlValues = snap(getComputedStyle(html));
    const htmlClass = classFor(decls(htmlValues, defaultsFor('html', false), null, false, html), '', '');
    if (body) walk(body, htmlValues, 1);
    if (tooLarge) return {error: 'too_large', detail: 'code over ui_code.max_bytes=' + opts.maxBytes + ' bytes'};
    const fonts = [];
    const collect = (rules, base) => {
      for (const r of rules) {
        if (r instanceof CSSFontFaceRule) {
          fonts.push(r.cssText.replace(/url\(\s*(["']?)([^"')]*)\1\s*\)/g, (m, q, u) => {
            let abs; try { abs = new URL(u, base).href; } catch (e) { return 'url("@@qa:bad@@")'; }
            return 'url("' + asset(abs) + '")';
          }));
        } else if (r instanceof CSSImportRule) {
          try { if (r.styleSheet) collect(r.styleSheet.cssRules, r.styleSheet.href || base); } catch (e) {}
        } else if (r.cssRules) {
          try { collect(r.cssRules, base); } catch (e) {}
        }
      }
    };
    for (const sheet of document.styleSheets) {
      let rules = null;
      try { rules = sheet.cssRules; } catch (e) { rules = null; }
      if (rules) collect(rules, sheet.href || document.baseURI);
    }
    const vp = document.querySelector('meta[name="viewport" i]');
    return {
      body: parts.join(''), htmlClass, rules, fonts, assets, elements, depth: maxDepth, dropped,
      quirks: document.compatMode === 'BackCompat', lang: html.getAttribute('lang'), dir: html.getAttribute('dir'),
      viewport: vp ? vp.getAttribute('content') : null, title: document.title || '',
    };
  } finally {
    frame.remove();
  }
}"""


@dataclass(frozen=True)
class CodeSettings:
    max_nodes: int = 3000
    max_bytes: int = 400_000
    quiet_ms: int = 200
    max_asset_bytes: int = 1_000_000


@dataclass
class CodeCapture:
    """The self-contained document of one rendered page, before it is rendered again."""

    html: str
    elements: int
    depth: int
    assets_inlined: int
    assets_dropped: int


@dataclass
class CodeRender:
    """The document and its render in the sandbox (`png` None when the render failed: see `rejection`)."""

    capture: CodeCapture
    png: Optional[bytes]
    requests: int
    rejection: Optional[Rejection] = None


AssetReader = Callable[[str], Optional[tuple[bytes, str]]]  # absolute URL -> (bytes, content type) of the folder


async def capture(page, s: CodeSettings, read_asset: Optional[AssetReader], navigated: Callable[[], bool]
                  ) -> Union[CodeCapture, Rejection]:
    """Watch the DOM `quiet_ms` after the screenshot, then serialise it (module docstring). `navigated()` says
    whether the page's main frame left the document that was screenshot."""
    from playwright.async_api import Error as PlaywrightError

    try:
        await page.evaluate(WATCH_JS, WATCH_KEY)
        await asyncio.sleep(s.quiet_ms / 1000)
        if navigated():
            return Rejection(NAVIGATED, "the page navigated after loading")
        raw = await page.evaluate(SERIALIZE_JS, {"watchKey": WATCH_KEY, "quietMs": s.quiet_ms, "maxNodes": s.max_nodes,
                                                 "maxBytes": s.max_bytes, "blank": TRANSPARENT_GIF})
    except PlaywrightError as e:
        if navigated() or navigation_error(e):
            return Rejection(NAVIGATED, "the page navigated while its code was captured")
        return Rejection(CAPTURE_FAILED, str(e).splitlines()[0][:300])
    if navigated():
        return Rejection(NAVIGATED, "the page navigated while its code was captured")
    if not isinstance(raw, dict):
        return Rejection(CAPTURE_FAILED, f"serialiser returned {type(raw).__name__}")
    if raw.get("error"):
        return Rejection(str(raw["error"]), str(raw.get("detail", ""))[:300])
    return assemble(raw, s, read_asset)


def navigation_error(e: BaseException) -> bool:
    """Whether a Playwright error says the page's document went away under a call (it navigated)."""
    text = str(e)
    return "Execution context was destroyed" in text or "navigation" in text.lower()


def _data_uri(url: str, read_asset: Optional[AssetReader], max_bytes: int) -> Optional[str]:
    if read_asset is None:
        return None
    got = read_asset(url)
    if got is None or len(got[0]) > max_bytes:
        return None
    data, ctype = got
    return f"data:{ctype.split(';')[0].strip() or 'application/octet-stream'};base64,{base64.b64encode(data).decode()}"


def assemble(raw: dict, s: CodeSettings, read_asset: Optional[AssetReader]) -> Union[CodeCapture, Rejection]:
    """The serialiser's parts -> one document, assets inlined from the served folder or dropped."""
    assets: list[str] = list(raw.get("assets") or [])
    resolved = [_data_uri(u, read_asset, s.max_asset_bytes) for u in assets]

    def sub(text: str, drop: str) -> str:
        def one(m: re.Match) -> str:
            i = int(m.group(1))
            return resolved[i] if i < len(resolved) and resolved[i] is not None else drop
        return _TOKEN.sub(one, text)

    body = raw.get("body") or "<body></body>"
    # img src: a transparent pixel of the same box; CSS url(): none (the whole `url("...")`)
    body = re.sub(r'url\("@@qa:(\d+)@@"\)', lambda m: 'url("' + resolved[int(m.group(1))] + '")'
                  if resolved[int(m.group(1))] is not None else "none", body)
    body = sub(body, TRANSPARENT_GIF)
    css: list[str] = []
    for rule in raw.get("fonts") or []:
        if "@@qa:bad@@" in rule:
            continue
        if any(resolved[int(i)] is None for i in _TOKEN.findall(rule)):
            continue  # a font the folder does not hold: left out, the text falls back as it would
        css.append(sub(rule, ""))
    for cls, own, before, after in raw.get("rules") or []:
        for sel, decl in ((f".{cls}", own), (f".{cls}::before", before), (f".{cls}::after", after)):
            if decl:
                decl = re.sub(r'url\("@@qa:(\d+)@@"\)', lambda m: 'url("' + resolved[int(m.group(1))] + '")'
                              if resolved[int(m.group(1))] is not None else "none", decl)
                css.append(f"{sel}{{{decl}}}")
    head = ['<meta charset="utf-8">']
    if raw.get("viewport"):
        head.append(f'<meta name="viewport" content="{_attr(raw["viewport"])}">')
    if raw.get("title"):
        head.append(f"<title>{_text(raw['title'])}</title>")
    head.append("<style>\n" + "\n".join(css) + "\n</style>")
    html_attrs = "".join(f' {n}="{_attr(raw[n])}"' for n in ("lang", "dir") if raw.get(n))
    if raw.get("htmlClass"):
        html_attrs = f' class="{raw["htmlClass"]}"' + html_attrs
    doc = ("" if raw.get("quirks") else "<!DOCTYPE html>\n") + f"<html{html_attrs}><head>{''.join(head)}</head>" \
        + body + "</html>\n"
    size = len(doc.encode("utf-8"))
    if size > s.max_bytes:
        return Rejection(TOO_LARGE, f"{size} bytes > ui_code.max_bytes={s.max_bytes}")
    problem = unsafe_reason(doc)
    if problem:
        return Rejection(UNSAFE_OUTPUT, problem)
    inlined = sum(1 for r in resolved if r is not None)
    return CodeCapture(doc, int(raw.get("elements", 0)), int(raw.get("depth", 0)), inlined,
                       len(resolved) - inlined + int(raw.get("dropped", 0)))


def _attr(v: str) -> str:
    return str(v).replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _text(v: str) -> str:
    return str(v).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_UNSAFE_TAGS = (
    (re.compile(r"<\s*(script|iframe|object|embed|link|base|frame|frameset|applet|portal)\b", re.I), "a <{}> element"),
    (re.compile(r"<\s*meta\b[^>]*http-equiv", re.I), "a <meta http-equiv>"),
    (re.compile(r"<[^>]*\son[a-z]+\s*=", re.I), "an event-handler attribute"),
    (re.compile(r"<[^>]*=\s*\"\s*(javascript|vbscript)\s*:", re.I), "a {}: URL"),
    (re.compile(r"<[^>]*\ssrc\s*=\s*\"(?!data:)", re.I), "a src that is not a data: URI"),
    (re.compile(r"<[^>]*url\(\s*\"?(?!data:|#)[^)\"]", re.I), "a url() that is not a data: URI"),
)
_UNSAFE_CSS = (
    (re.compile(r"url\(\s*\"?(?!data:|#)[^)\"]", re.I), "a url() that is not a data: URI"),
    (re.compile(r"@import", re.I), "an @import"),
)
_STYLE = re.compile(r"<style>(.*?)</style>", re.S)


def unsafe_reason(html: str) -> Optional[str]:
    """Why a produced document could run code or reach the network (None: it cannot); a last check of the text
    (the serialiser never writes any of these; the sandbox render also blocks and counts requests)."""
    checks = [(p, w, html) for p, w in _UNSAFE_TAGS]
    checks += [(p, w, css) for css in _STYLE.findall(html) for p, w in _UNSAFE_CSS]
    for pattern, what, text in checks:
        m = pattern.search(text)
        if m:
            return "the document holds " + what.format(m.group(1).lower() if m.groups() else "")
    return None


# --- re-render in a sandbox ---------------------------------------------------------------------


async def rerender(browser, html: str, width: int, height: int, device_scale_factor: float, is_mobile: bool,
                   timeout_s: float, proxy: Optional[dict] = None) -> tuple[Optional[bytes], int, Optional[str]]:
    """Render `html` in a fresh context with JavaScript disabled, every request but the document itself aborted
    and counted; (png, requests, error). The document is served at `SANDBOX_URL` by the route, never fetched."""
    requests = 0
    body = html.encode("utf-8")
    ctx = await browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=device_scale_factor, is_mobile=is_mobile,
        has_touch=is_mobile, java_script_enabled=False, accept_downloads=False, service_workers="block",
        permissions=[], proxy=proxy)
    served = False

    async def route(r):
        nonlocal requests, served
        if r.request.url == SANDBOX_URL and not served:
            served = True
            await r.fulfill(status=200, headers={"content-type": "text/html; charset=utf-8"}, body=body)
            return
        requests += 1
        try:
            await r.abort("blockedbyclient")
        except Exception:  # noqa: BLE001 - the page is already gone
            pass

    try:
        await ctx.route("**/*", route)
        page = await ctx.new_page()
        page.on("dialog", lambda d: asyncio.ensure_future(d.dismiss()))

        async def work() -> bytes:
            await page.goto(SANDBOX_URL, wait_until="load", timeout=timeout_s * 1000)
            await page.evaluate("""() => (document.fonts ? document.fonts.ready : Promise.resolve()).then(() =>
                Promise.all(Array.from(document.images, (i) => (i.complete ? i.decode().catch(() => null) : null))))""")
            # no requestAnimationFrame or timers here: with JavaScript disabled they never fire (promises do);
            # the screenshot itself waits for a new frame
            return await page.screenshot(type="png", animations="disabled", caret="hide", timeout=timeout_s * 1000)

        try:
            png = await asyncio.wait_for(work(), timeout_s + 2)
        except asyncio.TimeoutError:
            return None, requests, f"not rendered within {timeout_s} s"
        except Exception as e:  # noqa: BLE001 - playwright.Error: the sandbox page failed
            return None, requests, str(e).splitlines()[0][:300]
        return png, requests, None
    finally:
        try:
            await asyncio.wait_for(ctx.close(), 10)
        except Exception:  # noqa: BLE001
            pass


# --- similarity and tiers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Similarity:
    score: float  # min(ssim, pixel_agreement)
    ssim: float
    pixel_agreement: float


def _box_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over every k x k window (valid positions only), by summed-area table."""
    c = np.cumsum(np.cumsum(np.pad(x, ((1, 0), (1, 0))), axis=0), axis=1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def ssim(a: np.ndarray, b: np.ndarray, k: int = 7) -> float:
    """Mean SSIM of two greyscale images (float64, 0-255) over k x k uniform windows."""
    if min(a.shape) < k:
        k = max(1, min(a.shape))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = _box_mean(a, k), _box_mean(b, k)
    va = _box_mean(a * a, k) - ma * ma
    vb = _box_mean(b * b, k) - mb * mb
    cov = _box_mean(a * b, k) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s.mean())


def _open(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    img.load()
    return img.convert("RGB")


def similarity(original: bytes, rendered: bytes, width: int = SIMILARITY_WIDTH,
               tolerance: int = PIXEL_TOLERANCE) -> Similarity:
    """How close the code's render is to the page's screenshot (module docstring); 0 when the sizes differ."""
    a, b = _open(original), _open(rendered)
    if a.size != b.size:
        return Similarity(0.0, 0.0, 0.0)
    pa, pb = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
    agree = float((np.abs(pa - pb) <= tolerance).all(axis=2).mean())
    w, h = a.size
    size = (min(width, w), max(1, round(h * min(width, w) / w)))
    ga = np.asarray(a.convert("L").resize(size, Image.BOX), dtype=np.float64)
    gb = np.asarray(b.convert("L").resize(size, Image.BOX), dtype=np.float64)
    s = max(0.0, ssim(ga, gb))
    return Similarity(round(min(s, agree), 4), round(s, 4), round(agree, 4))


def code_tier(elements: int, depth: int, element_levels: Sequence[int] = (50, 150, 400, 1000),
              depth_levels: Sequence[int] = (10, 18)) -> str:
    level = sum(elements >= b for b in element_levels)
    bonus = sum(depth >= b for b in depth_levels)
    return TIER_NAMES[min(4, level + bonus)]


def decide(original_png: bytes, code: CodeRender, threshold: float) -> Union[Similarity, Rejection]:
    """Keep a pair when its sandbox render is at least `threshold` similar to the screenshot."""
    if code.rejection is not None:
        return code.rejection
    if code.png is None:
        return Rejection(RERENDER_FAILED, "no screenshot")
    sim = similarity(original_png, code.png)
    if sim.score < threshold:
        return Rejection(RENDER_MISMATCH, f"similarity {sim.score:.4f} < ui_code.threshold={threshold} "
                                          f"(ssim {sim.ssim:.4f}, pixel agreement {sim.pixel_agreement:.4f})")
    return sim


def verifier_spec(task: str, width: int, height: int, device_scale_factor: float, is_mobile: bool):
    """The RL contract: ui_to_code is judged by rendering the response (`html_render`, `HtmlRenderVerifier`) at the
    row's viewport; code_to_ui is a generation pair without a verifier (`selfcheck` counts it as not RL)."""
    from quarry.schemas.rl import VerifierSpec

    if task != UI_TO_CODE:
        return None
    return VerifierSpec(kind="html_render",
                        viewport=f"{width}x{height}@{device_scale_factor:g}" + ("m" if is_mobile else ""))


# --- the html_render verifier (RL: screenshot -> HTML) ----------------------------------------------------------

MAX_HTML_CHARS = 1_000_000
BAD_REFERENCE = "bad_reference"
UNPARSEABLE_HTML = "unparseable_html"
_HTML_START = re.compile(r"<!doctype html|<html[\s>]", re.I)
_HTML_END = "</html>"


def html_document(text: str) -> Optional[str]:
    """From `<!DOCTYPE html` or `<html` to the last `</html>` (to the end when there is none); None without
    either, so prose or a ```html fence around the document does not matter."""
    m = _HTML_START.search(text)
    if m is None:
        return None
    end = text.lower().rfind(_HTML_END)
    return text[m.start(): end + len(_HTML_END)] if end > m.start() else text[m.start():]


class _Sandbox:
    """A verifier's per-process state: the browser and a cache of reference renders. Never pickled."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.renderer = None
        self.references: dict[tuple, bytes] = {}

    def __reduce__(self):
        return (_Sandbox, ())  # a copy starts empty: no browser handle travels

    def render(self, html: str, v: "HtmlRenderVerifier") -> tuple[Optional[bytes], Optional[str]]:
        from quarry.operators.gui.browser import BrowserRenderer, RendererSettings

        if self.renderer is None:
            self.renderer = BrowserRenderer(RendererSettings(extract_timeout_s=v.timeout_s)).start()
        png, _requests, error = self.renderer.render_code(html, v.width, v.height, v.device_scale_factor,
                                                          v.is_mobile)
        return png, error

    def close(self) -> None:
        with self.lock:
            if self.renderer is not None:
                self.renderer.close()
                self.renderer = None


def _make_sandbox() -> _Sandbox:
    return _Sandbox()


@dataclass(frozen=True)
class HtmlRenderVerifier:
    """Screenshot -> HTML: render the response and the reference in the ui_code sandbox (fresh context, JavaScript
    off, every request aborted) at the row's viewport and compare them with `similarity`.

    Reward: 1.0 (right) when the documents are the same text or the similarity reaches `threshold` (the bar a pair
    needed to be kept); below it, the similarity itself with reason ``mismatch``. ``unparseable_html``: no
    `<html`/`<!DOCTYPE html` in the answer; ``too_long``: over `max_chars`; ``render_error``: the response did not
    render; ``bad_reference``: the reference did not. The reference is the row's answer (or a list: the best).
    """

    width: int = 1280
    height: int = 720
    device_scale_factor: float = 1.0
    is_mobile: bool = False
    threshold: float = 0.95
    timeout_s: float = 10.0
    max_chars: int = MAX_HTML_CHARS
    require_box: bool = False
    _sandbox: _Sandbox = field(default_factory=_make_sandbox, init=False, repr=False, compare=False)

    def __call__(self, response: str, reference: object):
        from quarry.operators.grade.verify import extract_answer

        answer = extract_answer(response, require_box=self.require_box)
        if not isinstance(answer, str):
            return answer
        return self.score(answer, reference)

    def score(self, answer: str, reference: object):
        from quarry.operators.grade.verify import MISMATCH, RIGHT, TOO_LONG, Verdict, _fail

        if len(answer) > self.max_chars:
            return _fail(TOO_LONG)
        got = html_document(answer)
        if got is None:
            return _fail(UNPARSEABLE_HTML)
        refs = list(reference) if isinstance(reference, (list, tuple)) else [reference]
        best = None
        for ref in refs:
            raw = ref.decode("utf-8", "replace") if isinstance(ref, bytes) else str(ref)
            ref_doc = html_document(raw)
            if ref_doc is None:
                v = _fail(BAD_REFERENCE)
            elif ref_doc.strip() == got.strip():
                return RIGHT
            else:
                v = self._compare(got, ref_doc, Verdict, RIGHT, MISMATCH, _fail)
            if best is None or v.reward > best.reward:
                best = v
        return best if best is not None else _fail(BAD_REFERENCE)

    def _compare(self, got: str, ref: str, Verdict, RIGHT, MISMATCH, _fail):
        with self._sandbox.lock:
            key = (ref, self.width, self.height, self.device_scale_factor, self.is_mobile)
            ref_png = self._sandbox.references.get(key)
            if ref_png is None:
                ref_png, _ = self._sandbox.render(ref, self)
                if ref_png is None:
                    return _fail(BAD_REFERENCE)
                if len(self._sandbox.references) >= 64:
                    self._sandbox.references.pop(next(iter(self._sandbox.references)))
                self._sandbox.references[key] = ref_png
            png, _ = self._sandbox.render(got, self)
        if png is None:
            return _fail("render_error")
        sim = similarity(ref_png, png)
        return RIGHT if sim.score >= self.threshold else Verdict(sim.score, MISMATCH)

    def close(self) -> None:
        self._sandbox.close()
