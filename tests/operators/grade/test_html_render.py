"""The html_render verifier (screenshot -> HTML, gui ui_to_code rows): real Chromium in the ui_code sandbox."""

from __future__ import annotations

import pickle

import pytest

from quarry.operators.grade import contract
from quarry.operators.grade.verify import BOX_BEGIN, BOX_END, MISMATCH, TOO_LONG, verifier_from_spec
from quarry.operators.gui.browser import find_chromium
from quarry.operators.gui.ui_code import UNPARSEABLE_HTML, HtmlRenderVerifier, html_document
from quarry.schemas.rl import VerifierSpec

GOLD = ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><style>.a{background:#234;color:#fff;padding:20px}'
        '.b{font:bold 28px sans-serif;margin:16px}</style></head><body><div class="a">Header</div>'
        '<p class="b">Tea and mugs</p></body></html>\n')


@pytest.fixture(scope="module")
def verifier():
    try:
        find_chromium()
    except Exception as e:  # noqa: BLE001 - no browser on this machine
        pytest.skip(str(e))
    v = verifier_from_spec("html_render", viewport="480x320@1")
    yield v
    v.close()


def test_the_gold_document_is_right_without_rendering():
    v = HtmlRenderVerifier(width=480, height=320)
    assert v(f"<think>t</think>{BOX_BEGIN}{GOLD}{BOX_END}", GOLD).reward == 1.0
    assert v._sandbox.renderer is None  # same text: no browser started


def test_an_equivalent_document_renders_the_same_and_is_right(verifier):
    same = GOLD.replace("<body>", "<body><!-- written differently -->").replace(".b{", ".b{color:#000;")
    assert verifier("Here is the page:\n```html\n" + same + "\n```", GOLD).reward == 1.0


def test_wrong_documents_score_their_similarity(verifier):
    blank = verifier("<html><body></body></html>", GOLD)
    assert blank.reason == MISMATCH and 0 < blank.reward < 0.95
    spec = VerifierSpec(kind="html_render", viewport="480x320@1")
    perturbed = contract.perturbed_answer(spec, GOLD)
    assert "invert(1)" in perturbed
    got = verifier(contract.gold_response(perturbed), contract.reference(spec, GOLD))
    assert got.reason == MISMATCH and got.reward < 0.95


def test_answers_that_are_not_html_or_too_long():
    v = HtmlRenderVerifier(max_chars=100)
    assert v("I cannot draw that.", GOLD).reason == UNPARSEABLE_HTML
    assert v("<html>" + "x" * 200 + "</html>", GOLD).reason == TOO_LONG


def test_the_verifier_pickles_without_its_browser(verifier):
    verifier("<html><body><p>x</p></body></html>", GOLD)  # starts the browser
    copy = pickle.loads(pickle.dumps(verifier))
    assert copy._sandbox.renderer is None and copy.width == 480


def test_html_document_takes_the_document_out_of_prose():
    assert html_document("text <html><body>a</body></html> more") == "<html><body>a</body></html>"
    assert html_document("<!DOCTYPE html><html>cut") == "<!DOCTYPE html><html>cut"
    assert html_document("no document") is None


def test_the_viewport_spec_is_checked():
    assert VerifierSpec(kind="html_render", viewport="390x844@2m").viewport == "390x844@2m"
    v = verifier_from_spec("html_render", viewport="390x844@2.5m")
    assert (v.width, v.height, v.device_scale_factor, v.is_mobile) == (390, 844, 2.5, True)
    with pytest.raises(ValueError):
        VerifierSpec(kind="html_render", viewport="huge")
    with pytest.raises(ValueError, match="takes no viewport"):
        VerifierSpec(kind="exact", viewport="390x844@2")
