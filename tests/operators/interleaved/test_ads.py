"""QR/barcode detection on real photos with planted codes, and the ad rules as a table."""

from __future__ import annotations

import io
import pickle
from importlib import resources

import numpy as np
import pytest
import zxingcpp
from PIL import Image
from pydantic import ValidationError

from quarry.operators.interleaved.ads import (
    AD_IMAGE,
    AD_URL,
    BANNER_SHAPE,
    IAB_SIZE,
    QR_CODE,
    TAIL,
    AdDetector,
    ad_signals,
    decide_ad,
    find_codes,
)
from quarry.schemas.interleaved import AdsConfig

CFG = AdsConfig()
PHOTOS = [p.name for p in resources.files("quarry.dags").joinpath("demo_data").iterdir() if p.name.endswith(".jpg")]


def photo(name: str) -> Image.Image:
    data = resources.files("quarry.dags").joinpath("demo_data", name).read_bytes()
    return Image.open(io.BytesIO(data)).convert("RGB")


def code_image(text: str, fmt=zxingcpp.BarcodeFormat.QRCode, scale: int = 4) -> Image.Image:
    return Image.fromarray(np.array(zxingcpp.create_barcode(text, fmt).to_image(scale=scale))).convert("RGB")


def planted(name: str, code: Image.Image, at=(20, 20), side: int = 150) -> Image.Image:
    im = photo(name)
    im.paste(code.resize((side, side), Image.Resampling.NEAREST), at)
    return im


def test_no_codes_in_the_real_photos():
    assert len(PHOTOS) >= 10
    for name in PHOTOS:
        assert find_codes(photo(name), AdDetector(CFG).formats) == [], name


@pytest.mark.parametrize("name", ["astronaut.jpg", "coffee.jpg", "brick.jpg"])
def test_planted_qr_code_is_found(name):
    im = planted(name, code_image("https://example.com/promo"))
    assert [(c.format, c.text) for c in find_codes(im)] == [("QRCode", "https://example.com/promo")]
    verdict, signals, codes = AdDetector(CFG).check(im, None, at_tail=False)
    assert verdict.reason == QR_CODE and "https://example.com/promo" in verdict.detail
    assert codes == ["QRCode:https://example.com/promo"] and signals == []


def test_qr_code_in_a_large_image_is_found_on_the_downscaled_copy():
    big = photo("coffee.jpg").resize((3000, 2000))
    big.paste(code_image("scan me", scale=30), (100, 100))
    assert [c.text for c in find_codes(big, max_side=1024)] == ["scan me"]


def test_retail_barcode_is_found_and_formats_can_be_narrowed():
    im = Image.new("RGB", (400, 300), "white")
    im.paste(code_image("5901234123457", zxingcpp.BarcodeFormat.EAN13, scale=2).resize((300, 150)), (50, 70))
    assert [c.format for c in find_codes(im)] == ["EAN13"]
    only_qr = AdDetector(AdsConfig(code_formats=["QRCode"]))
    assert only_qr.codes(im) == []
    assert AdDetector(AdsConfig(detect_codes=False)).codes(planted("coffee.jpg", code_image("x"))) == []


@pytest.mark.parametrize("w, h, url, tail, signals, ad", [
    (728, 90, None, False, [IAB_SIZE, BANNER_SHAPE], True),  # leaderboard anywhere
    (730, 91, None, False, [IAB_SIZE, BANNER_SHAPE], True),  # within 2 %
    (160, 600, None, False, [IAB_SIZE], False),  # skyscraper shape: 3.75 < 4
    (300, 250, None, False, [IAB_SIZE], False),  # a 300x250 photo mid-article is a photo
    (300, 250, None, True, [IAB_SIZE, TAIL], True),  # ... but at the end it is an ad
    (1200, 200, None, True, [BANNER_SHAPE, TAIL], True),
    (1200, 200, None, False, [BANNER_SHAPE], False),
    (640, 480, "https://ad.doubleclick.net/x/y.jpg", False, [AD_URL], True),
    (640, 480, "https://cdn.example.org/ads/summer.jpg", False, [AD_URL], True),
    (640, 480, "https://example.org/articles/headline.jpg", True, [TAIL], False),
    (640, 480, "https://example.org/roads/map.jpg", False, [], False),
])
def test_ad_rules(w, h, url, tail, signals, ad):
    got = ad_signals(w, h, url, tail, CFG)
    assert got == signals
    verdict = decide_ad(got)
    assert (verdict is not None) == ad
    if ad:
        assert verdict.reason == AD_IMAGE and verdict.detail == "signals: " + ", ".join(signals)


def test_banner_photo_from_an_ad_server_is_an_ad_not_a_code():
    banner = photo("horse.jpg").resize((728, 90))
    verdict, signals, codes = AdDetector(CFG).check(banner, "https://tpc.googlesyndication.com/b.jpg", at_tail=False)
    assert verdict.reason == AD_IMAGE and signals == [AD_URL, IAB_SIZE, BANNER_SHAPE] and codes == []


def test_config_is_checked_and_the_detector_pickles():
    with pytest.raises(ValidationError, match="WIDTHxHEIGHT"):
        AdsConfig(iab_sizes=["728 by 90"])
    with pytest.raises(ValueError, match="code_formats"):
        AdDetector(AdsConfig(code_formats=["NotAFormat"]))
    clone = pickle.loads(pickle.dumps(AdDetector(CFG)))
    assert clone.codes(planted("coffee.jpg", code_image("again")))[0].text == "again"
