"""Text cleaning and datatrove's filters on one text: tables of (input, expected)."""

from __future__ import annotations

import json
import pickle
from importlib import resources

import pytest

from quarry.operators.interleaved.text_quality import (
    LOW_QUALITY,
    TOO_MUCH_TEXT,
    TextQuality,
    cap_text,
    looks_like_html,
    strip_html,
)
from quarry.schemas.interleaved import TextQualityConfig

ARTICLES = json.loads(resources.files("quarry.dags").joinpath("demo_data", "interleaved", "articles.json").read_text())
GOOD = "\n\n".join(ARTICLES["coffee"])


@pytest.fixture(scope="module")
def quality() -> TextQuality:
    return TextQuality(TextQualityConfig()).load()


@pytest.mark.parametrize("text, expected, had_html", [
    ("Plain prose, with a < b and c > d.", "Plain prose, with a < b and c > d.", False),
    ("Fish & chips", "Fish & chips", False),
    ("<p>Hello <b>world</b></p><script>var x = 1;</script>", "Hello world", True),
    ("<style>p {color: red}</style><div>Kept text</div>", "Kept text", True),
    ("Tom &amp; Jerry &#8212; a cartoon", "Tom & Jerry \u2014 a cartoon", True),
    ("<ul><li>one</li><li>two</li></ul>", "one\ntwo", True),
    ("<div><p>unclosed paragraph", "unclosed paragraph", True),
    ("before<!-- a comment -->after<br>next line", "beforeafter\nnext line", True),
    ("<p>first</p>\n\n\n<p>second</p>", "first\n\nsecond", True),
])
def test_strip_html(text, expected, had_html):
    assert strip_html(text) == (expected, had_html)
    assert looks_like_html(text) == had_html


def test_strip_html_is_bounded_on_hostile_markup():
    nested = "<div>" * 5000 + "deep" + "</div>" * 5000
    out, had = strip_html(nested)
    assert had and "deep" in out
    entity_bomb = '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><p>&b;&b;</p>'
    out, had = strip_html(entity_bomb)
    assert had and len(out) < 200  # the HTML parser does not expand DTD entities


def test_cap_text():
    assert cap_text(10, 10) is None
    r = cap_text(11, 10)
    assert r.reason == TOO_MUCH_TEXT and "11 characters" in r.detail


def test_good_article_passes_every_filter(quality):
    for name, paragraphs in ARTICLES.items():
        assert quality.check("\n\n".join(paragraphs)) is None, name


@pytest.mark.parametrize("text, detail", [
    ("Home | About | Contact\n\nPrivacy policy | Terms of use\n\nLog in", "gopher_quality: gopher_short_doc"),
    ("\n\n".join(["Home | About | Contact | Shop | Cart | Help | Login | Register | Blog | News"] * 20),
     "gopher_quality: gopher_below_alpha_threshold"),
    (GOOD + "\n\n" + "\n\n".join([ARTICLES["coffee"][0]] * 6), "gopher_repetition: dup_para_frac"),
])
def test_boilerplate_and_repetition_are_low_quality(quality, text, detail):
    r = quality.check(text)
    assert r is not None and r.reason == LOW_QUALITY and r.detail == detail


def test_each_filter_reports_its_own_reason():
    c4 = TextQuality(TextQualityConfig(filters=["c4"])).load()
    r = c4.check(GOOD.replace("kitchen scale", "kitchen scale {like this}"))
    assert (r.reason, r.detail) == (LOW_QUALITY, "c4: curly_bracket")
    r = c4.check("One sentence only. And a second one.")
    assert r.detail == "c4: too_few_sentences"
    fineweb = TextQuality(TextQualityConfig(filters=["fineweb"])).load()
    assert fineweb.check("\n".join(["short line"] * 40)).detail.startswith("fineweb: ")
    assert fineweb.check(GOOD) is None


def test_config_and_pickling():
    with pytest.raises(ValueError, match="twice"):
        TextQuality(TextQualityConfig(filters=["c4", "c4"]))
    with pytest.raises(ValueError):
        TextQualityConfig(filters=["c4_badwords"])
    tq = TextQuality(TextQualityConfig(filters=["gopher_repetition"])).load()
    clone = pickle.loads(pickle.dumps(tq))
    assert clone._filters is None and clone.check(GOOD) is None  # rebuilt on first use


def test_sanitize_and_strip_never_raise_on_random_markup(quality):
    import random
    import string

    from quarry.operators.interleaved.text_quality import sanitize_text

    assert sanitize_text("a\x00b\x0bc\td\ne\ud800f") == "abc\td\ne\ufffdf"
    rng = random.Random(0)
    alphabet = string.printable + "\x00\x01\x0b\u200b\u00a0é漢😀<>&;/!-\ud800"
    for _ in range(300):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        s = s.replace("a", "<p>").replace("b", "</p>").replace("c", "<script>").replace("d", "&amp;")
        out, _ = strip_html(sanitize_text(s))
        out.encode("utf-8")  # no lone surrogates left
        verdict = quality.check(out)
        assert verdict is None or verdict.reason == LOW_QUALITY
