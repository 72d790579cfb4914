"""CLIP scorer: loading errors, scoring and deciding.

Uses the random-weight `quarry-tiny` model: scores are real cosine
similarities but mean nothing, so no test compares a matching caption with a
non-matching one.
"""

from __future__ import annotations

import io
import math
import pickle
import subprocess
import sys
import time

import pytest
from PIL import Image, ImageDraw

from quarry.operators.base import Rejection
from quarry.operators.clip import (
    BELOW_THRESHOLD,
    TINY_MODEL,
    UNDECODABLE,
    ClipLoadError,
    ClipScorer,
    ClipWeightsMissing,
    UnknownClipModel,
    decide,
    image_for_clip,
    import_open_clip,
)
from quarry.schemas.caption import ClipConfig
from quarry.schemas.config import ConfigError


def tiny(**kw) -> ClipConfig:
    return ClipConfig(model=TINY_MODEL, pretrained=kw.pop("pretrained", "none"), **kw)


def picture(seed: int, size=(320, 240), mode="RGB") -> Image.Image:
    """A small real picture: a gradient with a few shapes, different per seed."""
    w, h = size
    im = Image.linear_gradient("L").resize((w, h)).convert(mode)
    d = ImageDraw.Draw(im)
    for k in range(3):
        x, y = (seed * 37 + k * 53) % w, (seed * 71 + k * 29) % h
        colour = ((seed * 90 + k * 60) % 256, (k * 120) % 256, (seed * 40) % 256) + ((255,) if mode == "RGBA" else ())
        d.ellipse([x, y, x + w // 4, y + h // 4], fill=colour)
    return im


def encode(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


CAPTIONS = ["a red ball on a grey wall", "two dogs running on a beach", "", "a chart of monthly sales"]


@pytest.fixture(scope="module")
def scorer() -> ClipScorer:
    return ClipScorer(tiny()).load()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    """quarry-tiny weights saved as a local checkpoint, so two loads agree."""
    import torch

    open_clip = import_open_clip()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_MODEL)
    path = tmp_path_factory.mktemp("clip") / "quarry_tiny.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def test_operator_module_imports_neither_beam_nor_torch():
    code = (
        "import sys, quarry.operators.clip; "
        "assert 'apache_beam' not in sys.modules; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- config and loading


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"device": "gpu"}, "clip.device"),
        ({"device": "cpu", "precision": "fp16"}, "fp16"),
        ({"min_batch_size": 65, "max_batch_size": 64}, "min_batch_size"),
        ({"pretrained": " "}, "clip.pretrained"),
    ],
)
def test_bad_config_fails_on_construction(changes, message):
    with pytest.raises(ConfigError, match=message):
        ClipScorer(tiny(**changes))


def test_construction_loads_nothing_and_pickles_small(scorer):
    fresh = ClipScorer(tiny())
    assert not fresh.loaded
    clone = pickle.loads(pickle.dumps(scorer))
    assert scorer.loaded and not clone.loaded
    assert clone.cfg == scorer.cfg
    assert len(pickle.dumps(scorer)) < 4096  # the config, not the weights


def test_unknown_architecture():
    with pytest.raises(UnknownClipModel, match=r"'ViT-B-33'.*did you mean ViT-B-32.*ViT-B-16"):
        ClipScorer(ClipConfig(model="ViT-B-33", pretrained="none")).load()


def test_missing_checkpoint_path_names_model_path_and_remedy(tmp_path):
    path = str(tmp_path / "nope" / "open_clip_pytorch_model.bin")
    with pytest.raises(ClipWeightsMissing) as err:
        ClipScorer(ClipConfig(model="ViT-B-32", pretrained=path)).load()
    msg = str(err.value)
    assert "ViT-B-32" in msg and path in msg
    assert "--set clip.pretrained=/path/to/open_clip_pytorch_model.bin" in msg
    assert "HF_HUB_OFFLINE=1" in msg


def test_uncached_tag_offline_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ClipWeightsMissing) as err:
        ClipScorer(ClipConfig(model="ViT-B-32", pretrained="laion2b_s34b_b79k")).load()
    assert time.monotonic() - start < 5  # no download retries
    msg = str(err.value)
    assert "ViT-B-32/laion2b_s34b_b79k" in msg and "HF_HUB_OFFLINE=1" in msg and "clip.pretrained=" in msg


def test_unknown_tag_lists_known_tags():
    with pytest.raises(ClipWeightsMissing, match=r"'laion_9b'.*known tags for ViT-B-32: .*laion2b_s34b_b79k"):
        ClipScorer(ClipConfig(model="ViT-B-32", pretrained="laion_9b")).preflight()


def test_checkpoint_for_another_architecture(tmp_path, tiny_checkpoint):
    import torch

    state = torch.load(tiny_checkpoint)
    state.pop("text_projection")
    bad = tmp_path / "broken.pt"
    torch.save(state, bad)
    with pytest.raises(ClipLoadError, match="does not fit open_clip architecture quarry-tiny"):
        ClipScorer(tiny(pretrained=str(bad))).load()


def test_cuda_requested_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ClipLoadError, match="no CUDA device"):
        ClipScorer(tiny(device="cuda")).load()


def test_describe_resolves_device_and_precision(scorer):
    import torch

    d = scorer.describe()
    cuda = torch.cuda.is_available()
    assert d == {
        "model": TINY_MODEL,
        "pretrained": "none",
        "device": "cuda" if cuda else "cpu",
        "precision": "bf16" if cuda else "fp32",
        "random_weights": True,
    }
    unloaded = ClipScorer(tiny(device="auto", pretrained="/w/x.bin")).describe()
    assert unloaded["device"] == "auto" and unloaded["precision"] == "auto"  # as configured: workers decide
    assert unloaded["random_weights"] is False


# ---- scoring


def test_scores_are_cosines_and_deterministic(scorer):
    images = [picture(i) for i in range(len(CAPTIONS))]
    first = scorer.score_batch(images, CAPTIONS)
    again = scorer.score_batch(images, CAPTIONS)
    assert len(first) == len(CAPTIONS)
    assert all(isinstance(s, float) and -1.0 <= s <= 1.0 for s in first)
    assert first == again
    assert scorer.score_batch([], []) == []
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        scorer.score_batch(images[:2], CAPTIONS[:1])


def test_pair_score_does_not_depend_on_batch_company(scorer):
    images = [picture(i) for i in range(len(CAPTIONS))]
    batch = scorer.score_batch(images, CAPTIONS)
    alone = [scorer.score_batch([im], [c])[0] for im, c in zip(images, CAPTIONS)]
    assert alone == pytest.approx(batch, abs=1e-5)


def test_score_bytes_batch_decodes_and_marks_bad_bytes_nan(scorer):
    jpeg = encode(picture(1, (640, 480)), "JPEG", quality=90)
    png = encode(picture(2, mode="RGBA"), "PNG")
    items = [(jpeg, CAPTIONS[0]), (b"\xff\xd8\xff garbage", CAPTIONS[1]), (png, CAPTIONS[3]), (jpeg[:200], "cut")]
    scores = scorer.score_bytes_batch(items)
    assert math.isnan(scores[1]) and math.isnan(scores[3])
    expected = scorer.score_batch(
        [image_for_clip(jpeg, scorer.image_size), image_for_clip(png, scorer.image_size)],
        [CAPTIONS[0], CAPTIONS[3]],
    )
    assert [scores[0], scores[2]] == pytest.approx(expected, abs=1e-6)
    assert scorer.decide(scores[1]).reason == UNDECODABLE


def test_image_for_clip_decodes_jpeg_at_reduced_scale_upright_rgb():
    big = encode(picture(3, (1600, 1200)), "JPEG")
    im = image_for_clip(big, 64)
    assert im.mode == "RGB"
    assert 64 <= min(im.size) and im.size[0] <= 400  # draft: 1/8 scale, not the full 1600 px
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° on display
    rotated = image_for_clip(encode(picture(3, (320, 240)), "JPEG", exif=exif), 224)
    assert rotated.size == (240, 320)
    clear = Image.new("RGBA", (80, 80), (0, 0, 0, 0))  # transparent black shows as white
    assert image_for_clip(encode(clear, "PNG"), 64).getpixel((5, 5)) == (255, 255, 255)
    assert image_for_clip(encode(picture(4).convert("L"), "PNG"), 64).mode == "RGB"


def test_local_checkpoint_loads_the_same_weights(tiny_checkpoint, tmp_path):
    import torch
    from safetensors.torch import save_file

    images = [picture(i) for i in range(3)]
    a = ClipScorer(tiny(pretrained=tiny_checkpoint)).load()
    b = ClipScorer(tiny(pretrained=tiny_checkpoint)).load()
    assert a.describe()["random_weights"] is False
    assert a.score_batch(images, CAPTIONS[:3]) == b.score_batch(images, CAPTIONS[:3])
    st = tmp_path / "quarry_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in torch.load(tiny_checkpoint).items()}, str(st))
    c = ClipScorer(tiny(pretrained=str(st))).load()
    assert c.score_batch(images, CAPTIONS[:3]) == pytest.approx(a.score_batch(images, CAPTIONS[:3]), abs=1e-6)


# ---- deciding


LABEL = "ViT-B-32/laion2b_s34b_b79k"


@pytest.mark.parametrize(
    "score, threshold, expected",
    [
        (0.31, 0.3, None),
        (0.3, 0.3, None),  # ">= threshold" keeps
        (0.2129, 0.3, Rejection(BELOW_THRESHOLD, f"score=0.213 < 0.3 ({LABEL})")),
        (-0.5, 0.0, Rejection(BELOW_THRESHOLD, f"score=-0.500 < 0 ({LABEL})")),
        (-1.0, -1.0, None),
        (math.nan, 0.3, Rejection(UNDECODABLE, f"image bytes could not be decoded for CLIP ({LABEL})")),
    ],
)
def test_decide(score, threshold, expected):
    assert decide(score, threshold, LABEL) == expected


def test_decide_without_label_and_scorer_decide():
    assert decide(0.1, 0.3) == Rejection(BELOW_THRESHOLD, "score=0.100 < 0.3")
    s = ClipScorer(tiny(threshold=0.25))
    assert s.decide(0.2) == Rejection(BELOW_THRESHOLD, "score=0.200 < 0.25 (quarry-tiny/none)")
    assert s.decide(0.25) is None


@pytest.mark.parametrize("threads", [1, 2])
def test_a_score_does_not_depend_on_the_batch_it_is_in(threads):
    """Batch boundaries differ between runners and reruns; the score of a pair must not (shards stay
    byte-identical). Without a fixed forward shape, 2 torch threads score batch 1 and batch 2 differently."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(20)]
    captions = [f"a photo of thing {i}" for i in range(20)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        s = ClipScorer(tiny(max_batch_size=8)).load()
        alone = [s.score_batch([im], [c])[0] for im, c in zip(images, captions)]
        assert s.score_batch(images[:3], captions[:3]) == alone[:3]
        assert s.score_batch(images, captions) == alone  # 20 rows: 3 forward passes of 8
        assert s.score_batch(images[::-1], captions[::-1]) == alone[::-1]
    finally:
        torch.set_num_threads(before)


# ---- the text tower on each caption's own tokens


NO_CAUSAL_TINY = "quarry-tiny-nocausal"


@pytest.fixture(scope="module")
def text_models():
    """quarry-tiny and ViT-B-32 with random weights (real open_clip CLIP text towers, 77 positions)."""
    import torch

    open_clip = import_open_clip()
    torch.manual_seed(0)
    return {name: open_clip.create_model(name).eval() for name in (TINY_MODEL, "ViT-B-32")}


LONG = " ".join(["a very long caption about a busy street market"] * 12)  # > 77 tokens: cut at the context
TEXTS = ["", "a dog", "a photo of a red car next to a wooden table and two people", LONG,
         "一只猫坐在窗台上", "x " * 30]


@pytest.mark.parametrize("name", [TINY_MODEL, "ViT-B-32"])
def test_trimmed_text_tower_gives_the_full_context_embeddings(text_models, name):
    """Cutting tokens after the end-of-text token changes nothing: the causal mask hides later positions from
    earlier ones, and the tower pools the end token. Same embeddings as open_clip's 77-token encode_text."""
    import torch

    from quarry.operators.clip import encode_text_trimmed, text_lengths, text_trimmable

    open_clip = import_open_clip()
    model = text_models[name]
    assert text_trimmable(model)
    tokens = open_clip.get_tokenizer(name)(TEXTS)
    lengths = text_lengths(tokens, model.text_pool_type, model.text_eos_id)
    assert lengths[0] == 2 and lengths[3] == 77 and all(1 < n <= 77 for n in lengths)
    with torch.inference_mode():
        full = model.encode_text(tokens)
        for width in sorted({max(lengths), 16, 24, 77}):
            rows = [i for i, n in enumerate(lengths) if n <= width]
            cut = encode_text_trimmed(model, tokens[rows, :width])
            torch.testing.assert_close(cut, full[rows], rtol=1e-4, atol=1e-5)


def test_towers_that_see_padding_are_not_trimmed(text_models):
    """A text tower without the causal mask (or pooling the last position) sees the padding: full context."""
    import copy

    import torch

    from quarry.operators.clip import text_trimmable

    open_clip = import_open_clip()
    cfg = copy.deepcopy(open_clip.get_model_config(TINY_MODEL))
    cfg["text_cfg"].update(no_causal_mask=True, pool_type="last")
    open_clip.factory._MODEL_CONFIGS[NO_CAUSAL_TINY] = cfg
    try:
        torch.manual_seed(0)
        model = open_clip.create_model(NO_CAUSAL_TINY).eval()
        assert not text_trimmable(model)
        scorer = ClipScorer(tiny()).load()
        scorer._model = model  # the scorer falls back to open_clip's encode_text over the whole context
        scorer._trim = text_trimmable(model)
        tokens = open_clip.get_tokenizer(TINY_MODEL)(TEXTS)
        with torch.inference_mode():
            torch.testing.assert_close(scorer._encode_text(tokens), model.encode_text(tokens), rtol=1e-4, atol=1e-5)
    finally:
        del open_clip.factory._MODEL_CONFIGS[NO_CAUSAL_TINY]


def test_scores_equal_open_clip_full_context_scores(text_models):
    """What the scorer computes (fixed-shape image passes, trimmed text) is open_clip's plain cosine."""
    import torch
    import torch.nn.functional as F

    open_clip = import_open_clip()
    s = ClipScorer(tiny()).load()
    assert s.runtime()["trimmed_text"] is True and s.runtime()["forward_rows"] == 8
    images = [picture(i) for i in range(len(TEXTS))]
    with torch.inference_mode():
        img = F.normalize(s._model.encode_image(torch.stack([s._preprocess(im) for im in images])), dim=-1)
        txt = F.normalize(s._model.encode_text(open_clip.get_tokenizer(TINY_MODEL)(TEXTS)), dim=-1)
    assert s.score_batch(images, TEXTS) == pytest.approx((img * txt).sum(-1).tolist(), abs=1e-5)


@pytest.mark.parametrize("configured, copies, cores, expected", [
    (0, 1, 2, 2), (0, 2, 2, 1), (0, 3, 2, 1), (0, 2, 16, 8), (3, 2, 2, 3),
])
def test_torch_threads_share_the_cores_among_model_copies(monkeypatch, configured, copies, cores, expected):
    from quarry.operators import clip as clip_ops

    monkeypatch.setattr(clip_ops, "usable_cores", lambda: cores)
    assert clip_ops.torch_threads(configured, copies) == expected


def test_load_sets_the_threads_of_its_copy(monkeypatch):
    import torch

    from quarry.operators import clip as clip_ops

    before = torch.get_num_threads()
    monkeypatch.setattr(clip_ops, "usable_cores", lambda: 2)
    try:
        s = ClipScorer(tiny(), copies_on_machine=2).load()
        assert torch.get_num_threads() == 1 and s.runtime()["threads"] == 1
        assert pickle.loads(pickle.dumps(s)).copies_on_machine == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="at least 1"):
        ClipScorer(tiny(), copies_on_machine=0)


def test_preflight_of_random_weights_or_a_file_imports_no_torch(tmp_path):
    code = (
        "import sys\n"
        "from quarry.operators.clip import ClipScorer, UnknownClipModel, ClipWeightsMissing\n"
        "from quarry.schemas.caption import ClipConfig\n"
        "ClipScorer(ClipConfig(model='ViT-B-32', pretrained='none')).preflight()\n"
        "ClipScorer(ClipConfig(model='quarry-tiny', pretrained='none')).preflight()\n"
        "try:\n"
        "    ClipScorer(ClipConfig(model='ViT-B-33', pretrained='none')).preflight(); raise SystemExit('no error')\n"
        "except UnknownClipModel as e:\n"
        "    assert 'did you mean ViT-B-32' in str(e), e\n"
        f"try:\n"
        f"    ClipScorer(ClipConfig(model='ViT-B-32', pretrained={str(tmp_path / 'x.pt')!r})).preflight()\n"
        "    raise SystemExit('no error')\n"
        "except ClipWeightsMissing as e:\n"
        "    assert 'does not exist' in str(e), e\n"
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
