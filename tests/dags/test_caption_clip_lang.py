"""CLIP model choice per caption language (clip.by_lang): rows are routed by their `lang` to their language's
model and kept at that model's threshold; each row names its model (`clip_model`), the manifest records the
model that scored each language. Two random-weight quarry-tiny checkpoints stand in for an English and a
multilingual model (no download)."""

from __future__ import annotations

import io

import duckdb
import numpy as np
import pytest
from PIL import Image

from quarry.dags.registry import DAGS
from quarry.dags.runner import resolve_config, run_dag
from quarry.operators.clip import TINY_MODEL, ClipScorer, clip_thumbnail, import_open_clip
from quarry.operators.decode import decode_image
from quarry.schemas.caption import CaptionConfig, ClipConfig, DecodeConfig
from quarry.schemas.config import ConfigError

EN = ["a red bus parked on a busy street", "two dogs playing on the beach at noon",
      "a bowl of fresh fruit on a wooden table", "a lighthouse on a rocky coast at dusk",
      "a bicycle leaning against a stone wall"]
ZH = ["一辆红色的公共汽车停在繁忙的街道上", "两只狗在海滩上玩耍", "木桌上放着一碗新鲜的水果",
      "黄昏时岩石海岸上的灯塔", "一辆自行车靠在石墙上"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """Two differently seeded quarry-tiny checkpoints: `default` (English) and `zh`."""
    import torch

    open_clip = import_open_clip()
    folder = tmp_path_factory.mktemp("clip-lang")
    out = {}
    for name, seed in (("default", 1), ("zh", 2)):
        torch.manual_seed(seed)
        path = folder / f"tiny_{name}.pt"
        torch.save(open_clip.create_model(TINY_MODEL).state_dict(), path)
        out[name] = str(path)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, tuple[bytes, str]]:
    """Ten distinct pictures (no near duplicates), five with English and five with Chinese captions."""
    folder = tmp_path_factory.mktemp("clip-lang-in")
    rng = np.random.default_rng(7)
    out = {}
    for i, caption in enumerate(EN + ZH):
        im = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((320, 240), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        stem = f"p{i:02d}"
        (folder / f"{stem}.jpg").write_bytes(buf.getvalue())
        (folder / f"{stem}.txt").write_text(caption, encoding="utf-8")
        out[caption] = (buf.getvalue(), stem)
    out["_folder"] = (b"", str(folder))
    return out


def bare_scores(pretrained: str, pairs: list[tuple[bytes, str]]) -> list[float]:
    """What the clip stage should score: the decode step's 336 px JPEG of the picture, with its caption."""
    scorer = ClipScorer(ClipConfig(model=TINY_MODEL, pretrained=pretrained)).load()
    items = [(clip_thumbnail(decode_image(data, DecodeConfig()).image, 336), caption) for data, caption in pairs]
    return scorer.score_bytes_batch(items)


def sets(checkpoints, zh_threshold: float) -> list[str]:
    return ["clip.model=quarry-tiny", f"clip.pretrained={checkpoints['default']}", "clip.threshold=-1.0",
            "clip.by_lang.zh.model=quarry-tiny", f"clip.by_lang.zh.pretrained={checkpoints['zh']}",
            f"clip.by_lang.zh.threshold={zh_threshold}", "balance.enabled=false"]


def test_each_language_is_scored_and_kept_by_its_own_model(checkpoints, inputs, tmp_path):
    zh_scores = dict(zip(ZH, bare_scores(checkpoints["zh"], [(inputs[c][0], c) for c in ZH])))
    en_scores = dict(zip(EN, bare_scores(checkpoints["default"], [(inputs[c][0], c) for c in EN])))
    zh_by_default = bare_scores(checkpoints["default"], [(inputs[c][0], c) for c in ZH])
    assert max(abs(a - b) for a, b in zip(zh_by_default, zh_scores.values())) > 1e-3  # the models differ
    ordered = sorted(zh_scores.values())
    threshold = round((ordered[1] + ordered[2]) / 2, 6)  # between the 2nd and 3rd zh score: 3 kept, 2 dropped
    want_zh = {c for c, s in zh_scores.items() if s >= threshold}
    assert len(want_zh) == 3

    spec = DAGS["caption"]
    cfg = resolve_config(spec, None, sets(checkpoints, threshold), "web")
    m = run_dag(spec, [inputs["_folder"][1]], str(tmp_path / "out"), cfg)
    assert m.balanced and m.inputs == 10

    con = duckdb.connect()
    rows = con.sql(f"SELECT caption, lang, clip_model, clip_score, sample_id FROM read_parquet("
                   f"'{tmp_path}/out/data/**/*.parquet', hive_partitioning=true)").fetchall()
    zh_label, en_label = f"quarry-tiny/{checkpoints['zh']}", f"quarry-tiny/{checkpoints['default']}"
    got = {caption: (lang, model, score) for caption, lang, model, score, _id in rows}
    assert set(got) == set(EN) | want_zh  # every en row (threshold -1), the zh rows at or over the zh threshold
    for caption, (lang, model, score) in got.items():
        if caption in ZH:
            assert (lang, model) == ("zh", zh_label) and score == pytest.approx(zh_scores[caption], abs=1e-6)
        else:
            assert (lang, model) == ("en", en_label) and score == pytest.approx(en_scores[caption], abs=1e-6)

    rejects = con.sql(f"SELECT reason, detail FROM read_parquet('{tmp_path}/out/rejects/*.parquet') "
                      "WHERE stage = 'clip'").fetchall()
    assert len(rejects) == 2 and all(r == "clip_below_threshold" and zh_label in d and f"< {threshold:g}" in d
                                     for r, d in rejects)
    by_lang = m.extra["clip"]["by_lang"]
    assert by_lang["zh"] == {"model": zh_label, "rows": 3, "threshold": threshold, "multilingual": False}
    assert by_lang["en"] == {"model": en_label, "rows": 5, "threshold": -1.0, "multilingual": False}
    assert m.extra["clip"]["models_by_lang"]["zh"]["pretrained"] == checkpoints["zh"]
    assert m.rejected["clip"] == {"clip_below_threshold": 2}

    # A rerun: the same ids and the same kept set.
    again = run_dag(spec, [inputs["_folder"][1]], str(tmp_path / "again"), cfg)
    rows2 = con.sql(f"SELECT caption, lang, clip_model, clip_score, sample_id FROM read_parquet("
                    f"'{tmp_path}/again/data/**/*.parquet', hive_partitioning=true)").fetchall()
    assert sorted(rows2) == sorted(rows) and again.kept == m.kept == 8


def test_missing_weights_of_a_language_model_name_it_and_say_how(checkpoints, inputs, tmp_path, monkeypatch):
    from quarry.dags import caption

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = inputs["_folder"][1]
    base = ["clip.model=quarry-tiny", "clip.pretrained=none"]
    cfg = resolve_config(DAGS["caption"], None, base + ["clip.by_lang.zh.model=quarry-tiny",
                                                        "clip.by_lang.zh.pretrained=/nope/zh_clip.pt"], None)
    with pytest.raises(ConfigError) as e:
        caption.plan([folder], cfg)
    msg = str(e.value)
    assert msg.startswith("clip.by_lang.zh: ") and "/nope/zh_clip.pt" in msg and "does not exist" in msg
    assert "--set clip.by_lang.zh.pretrained=/path/to/open_clip_pytorch_model.bin" in msg

    cfg = resolve_config(DAGS["caption"], None, base + ["clip.by_lang.zh.model=xlm-roberta-base-ViT-B-32",
                                                        "clip.by_lang.zh.pretrained=laion5b_s13b_b90k"], None)
    with pytest.raises(ConfigError) as e:
        caption.plan([folder], cfg)
    msg = str(e.value)
    assert "clip.by_lang.zh: " in msg and "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k are not in the local cache" in msg
    assert "--set clip.by_lang.zh.pretrained=" in msg

    cfg = resolve_config(DAGS["caption"], None, base + ["clip.by_lang.zh.model=ViT-B-33",
                                                        "clip.by_lang.zh.pretrained=none"], None)
    with pytest.raises(ConfigError, match=r"clip.by_lang.zh: clip.by_lang.zh.model='ViT-B-33' is not an open_clip"):
        caption.plan([folder], cfg)


@pytest.mark.parametrize("by_lang, error", [
    ({"ZH": {"model": "x", "pretrained": "none"}}, "lowercase ISO 639-1"),
    ({"zh": {"model": "", "pretrained": "none"}}, "at least 1 character"),
    ({"zh": {"model": "x"}}, "pretrained"),
    ({"zh": {"model": "x", "pretrained": "none", "threshold": 2}}, "less than or equal to 1"),
    ({"zh": {"model": "x", "pretrained": "none", "tresh": 0.2}}, "tresh"),
    ({"zh": {"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "threshold": 0.1}},
     "one model has one threshold"),
])
def test_by_lang_is_validated(by_lang, error):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=error):
        CaptionConfig.model_validate({"clip": {"by_lang": by_lang}})


def test_routes_load_each_model_once():
    cfg = CaptionConfig.model_validate({"clip": {"model": TINY_MODEL, "pretrained": "none", "threshold": 0.1, "by_lang": {
        "zh": {"model": "xlm-roberta-base-ViT-B-32", "pretrained": "laion5b_s13b_b90k", "threshold": 0.2},
        "ja": {"model": "xlm-roberta-base-ViT-B-32", "pretrained": "laion5b_s13b_b90k", "threshold": 0.2},
        "fr": {"model": TINY_MODEL, "pretrained": "none"},  # the default model, its threshold: no second copy
    }}})
    models, by_lang = cfg.clip.routes()
    assert [(m.model, m.threshold) for m in models] == [(TINY_MODEL, 0.1), ("xlm-roberta-base-ViT-B-32", 0.2)]
    assert by_lang == {"fr": 0, "ja": 1, "zh": 1}
    assert type(models[1]) is ClipConfig and models[1].device == cfg.clip.device

    from quarry.dags.caption import clip_models

    assert [s for s, _ in clip_models(cfg)] == ["clip", "clip.by_lang.ja"]
