"""The interleaved demo: one JSONL of documents in all three shapes, images as files beside it."""

from __future__ import annotations

import io
import json
import pathlib
import shutil
from importlib import resources

from quarry.dags.demos import DemoInput

DEMO_SETS = [
    "relevance.model=quarry-tiny",
    "relevance.pretrained=none",
    "relevance.threshold=-1.0",
]


# What each demo document should become: key -> (stage, reason) for a reject, None for a row.
DEMO_EXPECTED: dict[str, tuple[str, str] | None] = {
    "line:1:space": None,
    "line:2:coffee": None,
    "line:3:cat": None,
    "line:4:rocket": None,
    "line:5:charts": None,
    "line:6:album": ("density", "image_dense"),
    "line:7:boilerplate": ("text", "low_quality_text"),
    "line:8:unequal": ("read", "unequal_lengths"),
    "line:9:out-of-range": ("read", "position_out_of_range"),
    "line:10:coins-broken-images": ("assemble", "no_images_left"),
    "line:11": ("read", "invalid_json"),
}
# Images of kept demo documents: (document key, image index) -> (stage, reason), None when kept.
DEMO_IMAGES: dict[tuple[str, int], tuple[str, str] | None] = {
    ("line:1:space", 0): None,
    ("line:2:coffee", 0): None,
    ("line:2:coffee", 1): ("ads", "qr_code"),
    ("line:3:cat", 0): None,
    ("line:3:cat", 1): ("ads", "ad_image"),
    ("line:4:rocket", 0): None,
    ("line:4:rocket", 1): ("read", "missing_image"),
    ("line:4:rocket", 2): ("ads", "ad_image"),
    ("line:5:charts", 0): None,
    ("line:5:charts", 1): None,
}


def _demo_file(name: str) -> bytes:
    return resources.files("quarry.dags").joinpath("demo_data", name).read_bytes()


def _jpeg(im, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def demo_images() -> dict[str, bytes]:
    """The demo's pictures: shipped photos plus a planted QR code, banner ads and charts (deterministic)."""
    import numpy as np
    import zxingcpp
    from PIL import Image, ImageDraw

    out = {n: _demo_file(n) for n in ("astronaut.jpg", "coffee.jpg", "chelsea.jpg", "rocket.jpg", "grass.jpg",
                                      "brick.jpg", "gravel.jpg", "coins.jpg", "horse.jpg", "camera.jpg")}
    qr = zxingcpp.create_barcode("https://example.com/scan-for-a-discount", zxingcpp.BarcodeFormat.QRCode)
    code = Image.fromarray(np.array(qr.to_image(scale=5))).convert("RGB")
    poster = Image.open(io.BytesIO(out["chelsea.jpg"])).convert("RGB")
    poster.paste(code.resize((170, 170), Image.Resampling.NEAREST), (20, 20))
    out["scan-me.jpg"] = _jpeg(poster, 95)
    horse = Image.open(io.BytesIO(out["horse.jpg"])).convert("RGB")
    out["banner-728x90.jpg"] = _jpeg(horse.resize((728, 90)))
    rocket = Image.open(io.BytesIO(out["rocket.jpg"])).convert("RGB")
    out["rectangle-300x250.jpg"] = _jpeg(rocket.resize((300, 250)))
    for name, values in (("rain-bars.png", [120, 220, 90, 160]), ("rain-months.png", [40, 70, 180, 200])):
        chart = Image.new("RGB", (400, 300), "white")
        d = ImageDraw.Draw(chart)
        d.line([(40, 20), (40, 270), (380, 270)], fill="black", width=2)
        for i, (v, colour) in enumerate(zip(values, ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"])):
            d.rectangle([60 + i * 80, 270 - v, 110 + i * 80, 270], fill=colour)
        out[name] = _png(chart)
    return out


def build(folder: pathlib.Path) -> DemoInput:
    """Write a small deterministic offline demo input into `folder`.

    One JSONL file, all three document shapes, images as files beside it:
    five clean articles (one with a planted QR poster, one with a 728x90
    banner from an ad server, one with a 300x250 ad at its end, a missing
    image and an HTML fragment, one with two charts: a hard tier), a photo
    album, a boilerplate page, unequal lists, an out-of-range MMC4 position,
    an article whose images are all corrupt, and a line that is not JSON.
    See DEMO_EXPECTED / DEMO_IMAGES for what each becomes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    images = folder / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir()
    for name, data in demo_images().items():
        (images / name).write_bytes(data)
    a = json.loads(_demo_file("interleaved/articles.json"))

    def seg(kind: str, value: str, **extra) -> dict:
        return {"type": kind, ("text" if kind == "text" else "path"): value, **extra}

    def img(name: str) -> str:
        return f"images/{name}"

    space, coffee, cat, rocket, coins, charts = (a[k] for k in ("space", "coffee", "cat", "rocket", "coins", "charts"))
    html = f"<p>{rocket[1].replace('several stages', '<b>several stages</b>')}</p><script>var ad = 1;</script>"
    docs = [
        {"id": "space", "url": "https://example.org/space", "segments": [
            seg("text", space[0]), seg("image", img("astronaut.jpg")), seg("text", space[1]),
            seg("text", space[2]), seg("text", space[3])]},
        {"id": "coffee", "url": "https://example.org/coffee",
         "texts": [coffee[0], None, coffee[1], coffee[2], None, coffee[3]],
         "images": [None, img("coffee.jpg"), None, None, img("scan-me.jpg"), None]},
        {"id": "cat", "url": "https://example.org/cats", "text_list": cat,
         "image_info": [{"image_name": img("chelsea.jpg"), "matched_text_index": 0},
                        {"image_name": img("banner-728x90.jpg"), "matched_text_index": 2,
                         "raw_url": "https://ad.doubleclick.net/banner/728x90.jpg"}]},
        {"id": "rocket", "url": "https://example.org/rockets", "source": "science", "segments": [
            seg("text", rocket[0]), seg("image", img("rocket.jpg")), seg("text", html),
            seg("image", img("not-downloaded.jpg")), seg("text", rocket[2]), seg("text", rocket[3]),
            seg("image", img("rectangle-300x250.jpg"))]},
        {"id": "charts", "url": "https://example.org/rain", "source": "science", "segments": [
            seg("text", charts[0]), seg("image", img("rain-bars.png")), seg("text", charts[1]),
            seg("text", charts[2]), seg("image", img("rain-months.png")), seg("text", charts[3])]},
        {"id": "album", "url": "https://example.org/holiday-album", "segments": [
            x for n in ("grass.jpg", "brick.jpg", "gravel.jpg", "coins.jpg", "horse.jpg", "camera.jpg")
            for x in (seg("image", img(n)), seg("text", f"Our holiday, picture {n[:-4]}."))]},
        {"id": "boilerplate", "url": "https://example.org/portal", "segments": [
            seg("text", "Home | About | Contact"), seg("image", img("astronaut.jpg")),
            *[seg("text", t) for t in ["Click here to subscribe!", "Copyright 2026. All rights reserved.",
                                        "Privacy policy | Terms of use", "Log in | Register"] * 6]]},
        {"id": "unequal", "texts": [coffee[0], None], "images": [None, img("coffee.jpg"), None]},
        {"id": "out-of-range", "text_list": cat[:2], "image_info": [{"image_name": img("chelsea.jpg"),
                                                                     "matched_text_index": 5}]},
        {"id": "coins-broken-images", "url": "https://example.org/coins", "segments": [
            seg("text", coins[0]), {"type": "image", "image": "data:image/jpeg;base64,bm90IGFuIGltYWdl"},
            seg("text", coins[1]), seg("text", coins[2]), seg("text", coins[3])]},
    ]
    lines = [json.dumps(d) for d in docs] + ['{"segments": [truncated']
    (folder / "documents.jsonl").write_text("\n".join(lines) + "\n")
    return DemoInput([str(folder / "documents.jsonl")], list(DEMO_SETS) + ["source=web"])
