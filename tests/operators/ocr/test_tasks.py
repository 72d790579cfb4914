"""Crop-then-search pieces: boxes, tiers, crops, similarity, crop verification."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image, ImageFilter

from quarry.operators.base import Rejection
from quarry.operators.ocr.engine import OcrLine
from quarry.operators.ocr.layout import Entity, Layout
from quarry.operators.ocr.tasks import (
    CROP_UNREADABLE,
    Verified,
    crop_box,
    crop_scale,
    image_tier,
    input_height,
    make_crop,
    plan_tasks,
    question_for,
    region_name,
    similarity,
    tier_for,
    to_1000,
    verify_crop,
)
from quarry.schemas.common import TIERS
from quarry.schemas.ocr_search import SearchTaskConfig, TierConfig


@pytest.fixture(scope="module")
def rapid_engine():
    from quarry.operators.ocr.engine import make_engine
    from quarry.schemas.ocr_search import OcrEngineConfig

    return make_engine(OcrEngineConfig(threads=1)).load()


def line(text: str, x0: float, y0: float, x1: float, y1: float) -> OcrLine:
    return OcrLine(text, 0.99, (x0, y0, x1, y0, x1, y1, x0, y1))


def test_to_1000_rounds_outwards_and_clamps():
    assert to_1000((10, 20, 110, 70), 200, 100) == [50, 200, 550, 700]
    assert to_1000((-5, 0, 300, 100), 200, 100) == [0, 0, 1000, 1000]


def test_input_height_never_upscales():
    assert input_height(20, 1344, 800, 672) == 10
    assert input_height(20, 300, 200, 672) == 20


@pytest.mark.parametrize("area,height,tier", [
    (0.10, 50, "very_easy"), (0.10, 20, "easy"), (0.10, 5, "medium"),
    (0.01, 50, "easy"), (0.01, 20, "medium"), (0.01, 5, "hard"),
    (0.001, 50, "medium"), (0.001, 20, "hard"), (0.001, 5, "very_hard"),
])
def test_tier_rule(area, height, tier):
    assert tier_for(area, height, TierConfig()) == tier


def test_smaller_text_is_never_an_easier_tier():
    cfg = TierConfig()
    areas, heights = [0.2, 0.05, 0.02, 0.005, 0.001, 0.0001], [80, 40, 30, 12, 8, 3]
    ranks = [TIERS.index(tier_for(a, h, cfg)) for a, h in zip(areas, heights)]
    assert ranks == sorted(ranks) and ranks[0] < ranks[-1]
    assert image_tier([(0.2, 80), (0.0001, 3)], cfg) == "very_hard"
    assert image_tier([], cfg) == "medium"


def test_tier_config_is_checked():
    with pytest.raises(ValueError):
        TierConfig(area_buckets=[0.05, 0.005])


def test_crop_box_margin_stays_inside():
    assert crop_box((10, 10, 50, 20), 10, 100, 100, 0.5) == (5, 5, 55, 25)
    assert crop_box((0, 90, 100, 100), 10, 100, 100, 2.0) == (0, 70, 100, 100)


def test_crop_scale_targets_height_within_caps():
    cfg = SearchTaskConfig(upscale_to_px=48, max_upscale=6, max_crop_side=1536)
    assert crop_scale(12, 100, 30, cfg) == 4
    assert crop_scale(4, 100, 30, cfg) == 6  # capped by max_upscale
    assert crop_scale(4, 1000, 30, cfg) == pytest.approx(1.536)  # capped by max_crop_side
    assert crop_scale(100, 100, 30, cfg) == 1  # never shrinks


def test_make_crop_cuts_the_box_of_a_downscaled_picture_and_upscales():
    pixels = np.zeros((50, 100, 3), np.uint8)  # the original was 200x100, scale 0.5
    pixels[10:20, 20:40] = 255
    crop, scale = make_crop(pixels, 0.5, (40, 20, 80, 40), 12, SearchTaskConfig(upscale_to_px=24))
    assert scale == pytest.approx(2.0)  # 12 px text at 0.5 is 6 px; x4 -> 24 px, i.e. x2 of the original
    assert crop.shape == (40, 80, 3) and crop.min() == 255


def test_region_and_question_are_stable():
    assert region_name((0, 0, 10, 10), 300, 300) == "top-left"
    assert region_name((140, 140, 160, 160), 300, 300) == "centre"
    assert region_name((280, 280, 300, 300), 300, 300) == "bottom-right"
    q = question_for("number", "top", "seed-1")
    assert q == question_for("number", "top", "seed-1") and "top" in q
    assert {question_for("label", "left", f"s{i}") for i in range(20)}.__len__() == 2


def test_similarity_is_the_ocr_reward_ignoring_case_and_spaces():
    assert similarity("Pla tform", "platform") == 1.0
    assert similarity("Harbor", "I Harbor") == pytest.approx(1 - 1 / 7)
    assert similarity("abc", "xyz") == 0.0


def test_verify_crop_keeps_a_reread_and_drops_neighbours():
    lines = [line("neighbour", 0, 0, 60, 10), line("Museum", 20, 40, 100, 70)]
    v = verify_crop("Museum", (10, 30, 110, 80), lines, 0.8)
    assert v == Verified("Museum", 1.0)


@pytest.mark.parametrize("lines", [[], [OcrLine("Musée 9", 0.9, (20, 40, 100, 40, 100, 70, 20, 70))]])
def test_verify_crop_rejects_what_does_not_reread(lines):
    v = verify_crop("Harbor Street", (10, 30, 110, 80), lines, 0.8)
    assert isinstance(v, Rejection) and v.reason == CROP_UNREADABLE


def test_plan_tasks_picks_small_entities_smallest_first():
    ents = (Entity((0,), "Big Title", (10, 10, 600, 80), 70.0, "title"),
            Entity((1,), "tiny", (10, 400, 40, 410), 10.0, "label"),
            Entity((2,), "small", (300, 300, 360, 316), 16.0, "label"))
    page = Layout((), ents)
    plans = plan_tasks(page, 640, 480, SearchTaskConfig(readable_px=20))
    assert [p.entity.text for p in plans] == ["tiny", "small"]
    assert plans[0].crop_box == (5, 395, 45, 415)
    assert plan_tasks(page, 640, 480, SearchTaskConfig(readable_px=20, max_tasks_per_image=1))[0].entity.text == "tiny"


def test_real_blurred_crop_is_unreadable(rapid_engine):
    """A crop blurred beyond reading: the engine reads nothing usable -> crop_unreadable."""
    from quarry.operators.ocr.synth import draw_text

    im = Image.new("RGB", (120, 60), (255, 255, 255))
    draw_text(im, (8, 15), "Harbor", 24, plate=None)
    sharp = rapid_engine.read(np.asarray(im))
    assert isinstance(verify_crop("Harbor", (0, 0, 120, 60), sharp, 0.8), Verified)
    blurred = np.asarray(im.filter(ImageFilter.GaussianBlur(6)))
    verdict = verify_crop("Harbor", (0, 0, 120, 60), rapid_engine.read(blurred), 0.8)
    assert isinstance(verdict, Rejection) and verdict.reason == CROP_UNREADABLE
