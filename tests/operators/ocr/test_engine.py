"""The OCR interface: geometry, downscaling, the rapidocr engine on real pictures, paddle's guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quarry.operators.ocr.engine import OcrLine, OcrLoadError, PaddleOcrEngine, describe, fit_for_ocr, make_engine
from quarry.operators.ocr.synth import poster, rotated
from quarry.schemas.ocr_search import OcrEngineConfig

DEMO = Path(__file__).resolve().parents[3] / "dags" / "demo_data"


CFG = OcrEngineConfig(threads=1)  # one thread per engine: CI runs two test workers on 2 cores


@pytest.fixture(scope="module")
def engine():
    return make_engine(CFG).load()


def pixels(im: Image.Image) -> np.ndarray:
    return fit_for_ocr(im, CFG.max_side, CFG.min_short_side, CFG.max_upscale)[0]


def test_line_geometry():
    ln = OcrLine("x", 0.9, (10, 20, 110, 20, 110, 50, 10, 50))
    assert ln.box == (10, 20, 110, 50) and ln.height == 30
    tilted = OcrLine("x", 0.9, (0, 0, 80, 60, 68, 76, -12, 16))  # a line turned by ~37 degrees, 20 px tall
    assert tilted.height == pytest.approx(20, abs=0.1)
    assert ln.scaled(2.0, 5, 7).quad == (25, 47, 225, 47, 225, 107, 25, 107)


def test_fit_for_ocr_downscales_huge_and_upscales_small_pictures_within_bounds():
    arr, scale = fit_for_ocr(Image.new("RGB", (6000, 300)), 2048, 736, 2.0)
    assert arr.shape == (102, 2048, 3) and scale == pytest.approx(2048 / 6000)
    arr, scale = fit_for_ocr(Image.new("L", (300, 200)), 2048)
    assert arr.shape == (200, 300, 3) and scale == 1.0 and arr.dtype == np.uint8
    arr, scale = fit_for_ocr(Image.new("RGB", (480, 360)), 2048, 736, 2.0)
    assert scale == 2.0 and arr.shape == (720, 960, 3)  # capped by max_upscale
    arr, scale = fit_for_ocr(Image.new("RGB", (1500, 600)), 2048, 736, 2.0)
    assert scale == pytest.approx(736 / 600)
    arr, scale = fit_for_ocr(Image.new("RGB", (1900, 300)), 2048, 736, 2.0)
    assert scale == pytest.approx(2048 / 1900)  # capped by max_side


def test_rapidocr_reads_poster_text_exactly_in_place(engine):
    with Image.open(DEMO / "coffee.jpg") as bg:
        synth = poster(bg, "ocr-test", size=(480, 360), title_size=36, label_sizes=(16,))
    arr = pixels(synth.image)
    scale = arr.shape[1] / synth.image.width
    lines = [ln.scaled(1 / scale) for ln in engine.read(arr)]
    by_text = {ln.text.replace(" ", ""): ln for ln in lines}
    for truth in synth.texts:
        got = by_text.get(truth.text.replace(" ", ""))
        assert got is not None, (truth.text, [ln.text for ln in lines])
        x0, y0, x1, y1 = got.box
        cx, cy = (truth.box[0] + truth.box[2]) / 2, (truth.box[1] + truth.box[3]) / 2
        assert x0 <= cx <= x1 and y0 <= cy <= y1
        assert got.score > 0.9


def test_rapidocr_reads_upside_down_text(engine):
    with Image.open(DEMO / "grass.jpg") as bg:
        synth = poster(bg, "upside", size=(360, 240), title_size=32, label_sizes=())
    lines = engine.read(pixels(rotated(synth.image, 180)))
    assert [ln.text for ln in lines] == [synth.texts[0].text]


def test_rapidocr_engine_reports_models():
    info = describe(OcrEngineConfig())
    assert info["engine"] == "rapidocr" and info["models"]["det"].startswith("PP-OCR")
    assert info["models"]["rec"].startswith("PP-OCR") and "onnxruntime" in info
    assert make_engine(OcrEngineConfig()).label().startswith("rapidocr/PP-OCR")


def test_rapidocr_models_cover_chinese_and_english():
    """Non-Latin scripts: the shipped recogniser's dictionary holds CJK as well as Latin characters."""
    chars = set(make_engine(CFG).charset())
    assert len(chars) > 5000
    assert set("中文路口東京") <= chars and set("AZaz09%") <= chars


# A CJK font from Debian's fonts-wqy-microhei (scripts/apt-packages.txt) to draw real Chinese text.
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")


@pytest.mark.skipif(not CJK_FONT.exists(), reason="fonts-wqy-microhei is not installed (scripts/setup.sh installs it)")
def test_rapidocr_reads_chinese_and_english_on_one_poster(engine):
    from PIL import ImageDraw, ImageFont

    with Image.open(DEMO / "brick.jpg") as bg:
        im = bg.convert("RGB").resize((640, 360))
    draw = ImageDraw.Draw(im)
    texts = [("北京欢迎你", (40, 40), 48), ("人民路 88 号", (40, 140), 36), ("Open 9:00", (40, 240), 36)]
    for text, xy, size in texts:
        font = ImageFont.truetype(str(CJK_FONT), size)
        x0, y0, x1, y1 = draw.textbbox(xy, text, font=font)
        draw.rectangle((x0 - 8, y0 - 8, x1 + 8, y1 + 8), fill="white")
        draw.text(xy, text, font=font, fill="black")
    read = [ln.text.replace(" ", "") for ln in engine.read(pixels(im))]
    assert read == [t.replace(" ", "") for t, _, _ in texts]


def test_rapidocr_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(OcrLoadError, match="ocr.det_model: no file"):
        make_engine(OcrEngineConfig(det_model=str(tmp_path / "nope.onnx"))).preflight()


def test_paddleocr_without_paddle_says_how_to_install():
    pytest.importorskip("rapidocr")
    try:
        import paddleocr  # noqa: F401
    except ImportError:
        with pytest.raises(OcrLoadError, match=r"quarry\[paddle\]"):
            PaddleOcrEngine(OcrEngineConfig(engine="paddleocr")).load()
    else:  # paddle present: the model directories are still required
        with pytest.raises(OcrLoadError, match="ocr.det_model is required"):
            PaddleOcrEngine(OcrEngineConfig(engine="paddleocr")).preflight()
    assert PaddleOcrEngine(OcrEngineConfig(engine="paddleocr", det_model="/m/PP-OCRv5_server_det",
                                           rec_model="/m/PP-OCRv5_server_rec")).models()["det"] == "PP-OCRv5_server_det"
