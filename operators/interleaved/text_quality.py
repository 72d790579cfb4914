"""Text of web documents: HTML fragments to plain text, size caps, and datatrove's quality filters.

datatrove's heuristic filters are used as a library on one text: each filter's
`filter(Document)` returns True or `(False, reason)` (`gopher_short_doc`,
`top_2_gram`, `too_few_sentences`, `line_punct_ratio`, ...). `TextQuality`
runs the configured filters in order and turns the first failure into a
`low_quality_text` rejection whose detail is `<filter>: <datatrove reason>`.
Only filters that need no download run by default: Gopher quality and
repetition (Rae et al., 2021), C4 (Raffel et al., 2020) and FineWeb, each
with datatrove's own thresholds. (C4's bad-words list and the fastText
language filter fetch files, so they are left out.)

Filters are built in `load()` (once per worker, in `DoFn.setup`): the Gopher
filter loads spaCy's blank English tokenizer (no model download) on first use,
which `load()` does with a warm-up call so the first document pays nothing.
C4's filter rewrites `doc.text` (it drops lines); each filter gets a fresh
`Document`, so the verdict is the only thing kept.
"""

from __future__ import annotations

import html
import re
from typing import Optional

from quarry.operators.base import Rejection
from quarry.schemas.interleaved import TextQualityConfig

LOW_QUALITY = "low_quality_text"
TOO_MUCH_TEXT = "too_much_text"
REASONS: tuple[str, ...] = (LOW_QUALITY, TOO_MUCH_TEXT)

# Something that looks like markup: a tag, a comment, or a character entity.
_TAG = r"</?[A-Za-z][A-Za-z0-9:-]{0,30}(?:\s[^<>]{0,2000})?/?>|<!--.{0,10000}?-->|<![A-Za-z][^<>]{0,2000}>"
_MARKUP = re.compile(_TAG + r"|&(?:[A-Za-z]{2,10}|#\d{1,7}|#x[0-9A-Fa-f]{1,6});", re.DOTALL)
_TAGS_ONLY = re.compile(_TAG, re.DOTALL)
_INVISIBLE_BLOCKS = re.compile(r"<(script|style|noscript|template)\b[^>]{0,2000}>.{0,1000000}?</\1\s*>",
                               re.DOTALL | re.IGNORECASE)
# Elements whose content is not text a reader sees.
_INVISIBLE = ("script", "style", "noscript", "template", "head", "iframe", "object", "svg")
# Elements that end a line when rendered.
_BLOCK = frozenset({
    "p", "div", "br", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
    "pre", "section", "article", "header", "footer", "dd", "dt", "figcaption", "hr", "title",
})
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def sanitize_text(text: str) -> str:
    """Text that every later step can hold: C0 control characters (other than tab and
    newlines) removed, lone UTF-16 surrogates (JSON allows `\\ud800`) replaced by U+FFFD.
    lxml refuses the first, UTF-8 (Parquet, spaCy) the second."""
    if _CONTROLS.search(text):
        text = _CONTROLS.sub("", text)
    if _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text


def looks_like_html(text: str) -> bool:
    return ("<" in text or "&" in text) and _MARKUP.search(text) is not None


def strip_html(text: str) -> tuple[str, bool]:
    """`(plain text, whether it held markup)`.

    Text without markup comes back unchanged (apart from nothing: not even
    whitespace is touched). Markup is parsed by lxml's HTML parser (no network,
    no external entities), scripts and styles are dropped, block elements end
    lines, entities are decoded, runs of spaces collapse.
    """
    if not looks_like_html(text):
        return text, False
    import lxml.etree
    import lxml.html

    try:
        root = lxml.html.fragment_fromstring(text, create_parent="div")
    except (lxml.etree.ParserError, ValueError):  # nothing parseable: keep the text as it was
        return text, False
    for el in list(root.iter(*_INVISIBLE)):
        el.drop_tree()
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.lower() in _BLOCK:
            el.tail = "\n" + (el.tail or "")
    for el in root.iter(lxml.etree.Comment, lxml.etree.ProcessingInstruction):
        el.text = ""
    plain = root.text_content()
    if not plain.strip():
        # libxml2 drops what lies deeper than its nesting limit (256): fall back to removing tags.
        plain = html.unescape(_TAGS_ONLY.sub(" ", _INVISIBLE_BLOCKS.sub(" ", text)))
    lines = [_SPACES.sub(" ", line).strip() for line in plain.split("\n")]
    out = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    return out, True


def cap_text(n_chars: int, max_chars: int) -> Optional[Rejection]:
    """`too_much_text` when a document's text is larger than the cap (checked before any parsing of it)."""
    if n_chars > max_chars:
        return Rejection(TOO_MUCH_TEXT, f"{n_chars} characters > document.max_text_chars={max_chars}")
    return None


def _build(name: str):
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return {
        "gopher_quality": GopherQualityFilter,
        "gopher_repetition": GopherRepetitionFilter,
        "c4": C4QualityFilter,
        "fineweb": FineWebQualityFilter,
    }[name]()


class TextQuality:
    """datatrove's offline heuristic filters on one document text."""

    def __init__(self, cfg: TextQualityConfig):
        if len(set(cfg.filters)) != len(cfg.filters):
            raise ValueError(f"text.filters lists a filter twice: {cfg.filters}")
        self.cfg = cfg
        self._filters: Optional[list[tuple[str, object]]] = None

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg}  # pickles as its config; filters are rebuilt by load()

    def __setstate__(self, state: dict) -> None:
        self.cfg = state["cfg"]
        self._filters = None

    def load(self) -> "TextQuality":
        if self._filters is None:
            self._filters = [(name, _build(name)) for name in self.cfg.filters]
            self.check("Warm up the tokenizer with a short sentence. It loads once per process.")
        return self

    def check(self, text: str) -> Optional[Rejection]:
        """None keeps; else `low_quality_text` with `<filter>: <reason>`."""
        from datatrove.data import Document

        if self._filters is None:
            self.load()
        for name, f in self._filters:
            verdict = f.filter(Document(text=text, id="quarry"))
            if verdict is True:
                continue
            reason = verdict[1] if isinstance(verdict, tuple) and len(verdict) > 1 else "rejected"
            if isinstance(verdict, tuple) and verdict[0]:
                continue
            return Rejection(LOW_QUALITY, f"{name}: {reason}")
        return None
