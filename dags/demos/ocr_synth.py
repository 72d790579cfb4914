"""The ocr_synth demo: license texts and Chinese lines rendered onto shipped photos, plus one of each bad input."""

from __future__ import annotations

import json
import pathlib

from quarry.dags.demos import DemoInput

DEMO_BACKGROUNDS = ("coffee.jpg", "brick.jpg", "grass.jpg", "chelsea.jpg", "hubble_deep_field.jpg")
LICENSES = ("Apache-2.0", "BSD", "MPL-2.0", "GPL-3", "Artistic", "CC0-1.0")
LICENSE_DIR = pathlib.Path("/usr/share/common-licenses")  # Debian's base-files; a fallback text where missing
FALLBACK = ("Permission is hereby granted, free of charge, to any person obtaining a copy of this software and "
            "associated documentation files, to deal in the Software without restriction.")
CHINESE = (
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "上海位于长江入海口，是中国最大的经济中心城市之一。",
    "今天天气晴朗，我们一起去公园散步吧。",
    "数据集的每一行都记录了文字、阅读顺序和文字框。",
)


def _license(name: str, chars: int = 1500) -> str:
    path = LICENSE_DIR / name
    try:
        return path.read_text(encoding="utf-8")[:chars]
    except OSError:
        return FALLBACK


def build(folder: pathlib.Path) -> DemoInput:
    """Texts (.txt files and a JSONL) and backgrounds (shipped photos), offline and deterministic.

    Bad inputs, one each: an empty text, a text no installed font covers (Old Turkic), a JSONL line whose text
    is a number, a line that is not JSON, a truncated JPEG and a decompression-bomb PNG as backgrounds; one
    overlong text is cut at render.max_chars (`chars_cut` records it).
    """
    from PIL import Image

    demo = pathlib.Path(__file__).resolve().parents[1] / "demo_data"
    texts, bgs = folder / "texts", folder / "backgrounds"
    texts.mkdir(parents=True, exist_ok=True)
    bgs.mkdir(parents=True, exist_ok=True)
    for name in LICENSES:
        (texts / f"{name}.txt").write_text(_license(name), encoding="utf-8")
    (texts / "long.txt").write_text(_license("GPL-3", 20000), encoding="utf-8")  # cut to render.max_chars
    (texts / "empty.txt").write_text("  \n\n \t\n", encoding="utf-8")  # render/empty_text
    (texts / "old_turkic.txt").write_text("\U00010C00\U00010C01\U00010C02 \U00010C03", encoding="utf-8")
    rows = [{"text": line, "source": "demo-zh"} for line in CHINESE]
    rows += [{"text": "Short labels: EXIT  Platform 4  Open 9:00-17:00  No parking"},
             {"text": 12345}]  # read/text_not_string
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + ["{not json"]  # read/invalid_json
    (texts / "lines.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in DEMO_BACKGROUNDS:
        with Image.open(demo / name) as im:
            im.convert("RGB").save(bgs / pathlib.Path(name).with_suffix(".jpg").name, quality=90)
    data = (bgs / "coffee.jpg").read_bytes()
    (bgs / "truncated.jpg").write_bytes(data[: len(data) // 3])  # backgrounds/corrupt_image
    Image.new("1", (9000, 9000)).save(bgs / "bomb.png")  # 81 MP: backgrounds/image_too_large, header only
    return DemoInput([str(texts)], [f"backgrounds.input=[{bgs}]"])
