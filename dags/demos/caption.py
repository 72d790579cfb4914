"""The caption demo: two WebDataset shards made from 13 shipped photos.

The caption demo input is built deterministically from 13 public-domain/CC0
photos (`demo_data/`): good pairs, mirrored and rotated copies (near duplicates
once dedup hashes every orientation), planted near-duplicates, and one of each kind of bad input (truncated and corrupt
files, a decompression bomb, tiny, banner and solid images, captions that are
empty, punctuation, URLs, not UTF-8, or missing). `build_caption_input`
returns what each record should become, and the tests hold the run to it.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

from PIL import Image, ImageOps

from quarry.dags.demos import DemoInput

CAPTIONS = {
    "astronaut": "a photo of an astronaut in a white space suit holding a helmet, with the american flag",
    "chelsea": "a photo of a tabby cat with green eyes looking to the side",
    "coffee": "a photo of a cup of coffee with latte art on a saucer with a spoon",
    "rocket": "a photo of a rocket on the launch pad at sunrise",
    "hubble_deep_field": "the hubble deep field: thousands of galaxies in the night sky, a telescope image",
    "coins": "a black and white photo of old coins on a table",
    "grass": "a close-up photo of green grass texture",
    "brick": "a photo of a red brick wall texture",
    "gravel": "a close-up photo of grey gravel stones on the ground",
    "horse": "a black silhouette of a horse on a white background",
    "camera": "a black and white photo of a person with a camera on a tripod in a park",
    "cell": "a microscope image of a cell",
    "grace_hopper": "a portrait photo of grace hopper in navy uniform",
}

CATEGORY = {
    "astronaut": "the sky", "rocket": "the sky", "hubble_deep_field": "the sky",
    "grass": "a texture", "brick": "a texture", "gravel": "a texture", "cell": "a texture", "coins": "a texture",
    "chelsea": "an animal", "horse": "an animal", "camera": "a person", "grace_hopper": "a person",
    "coffee": "a cup",
}

# The demo's config: the shipped random-weight CLIP (no download possible), a
# low threshold (random scores mean nothing), a small t so the head concept
# "photo" is visibly capped on 50-odd samples, and tier limits scaled to match.
DEMO_SETS = [
    "clip.model=quarry-tiny",
    "clip.pretrained=none",
    "clip.threshold=-1.0",
    "balance.t=8",
    "balance.tier_counts=[8,5,3,2]",
]


@dataclass(frozen=True)
class Expected:
    key: str
    stage: Optional[str]  # None: kept (unless clip or balance drop it)
    reason: Optional[str]


def _jpeg(img: Image.Image, quality: int = 88) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's header)."""
    raw = bytearray(_png(Image.new("L", (8, 8), 0)))
    ihdr = struct.pack(">II", width, height) + bytes(raw[24:29])
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(raw)


def base_images() -> dict[str, Image.Image]:
    folder = resources.files("quarry.dags") / "demo_data"
    out = {}
    for name in CAPTIONS:
        with (folder / f"{name}.jpg").open("rb") as fh:
            out[name] = Image.open(io.BytesIO(fh.read())).convert("RGB")
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible tar bytes
    tar.addfile(info, io.BytesIO(data))


def build_caption_input(folder: Path) -> list[Expected]:
    """Write two WebDataset shards into `folder`; return what each record should become."""
    folder.mkdir(parents=True, exist_ok=True)
    imgs = base_images()
    expected: list[Expected] = []
    shard_a: list[tuple[str, dict[str, bytes]]] = []
    shard_b: list[tuple[str, dict[str, bytes]]] = []

    def meta(source: str, name: str) -> bytes:
        return json.dumps({"source": source, "url": f"https://example.org/{name}", "license": "CC0"}).encode()

    # Originals with specific captions (tail concepts), mirrored copies with category captions, copies turned
    # by 90 degrees captioned only "photo", and two crops of each. Dedup hashes every orientation (dedup.orientations), so the
    # mirrored and turned copies are near duplicates of their original; they are 5% smaller, so the
    # original (most pixels) is the one kept.
    for i, (name, img) in enumerate(imgs.items()):
        smaller = img.resize((img.width * 19 // 20, img.height * 19 // 20), Image.LANCZOS)
        shard_a.append((f"{i:04d}", {"jpg": _jpeg(img), "txt": CAPTIONS[name].encode(), "json": meta("stock", name)}))
        shard_b.append((f"m{i:03d}", {"jpg": _jpeg(ImageOps.mirror(smaller)),
                                      "txt": f"a mirrored photo of {CATEGORY[name]}".encode(),
                                      "json": meta("webcrawl", name)}))
        shard_a.append((f"r{i:03d}", {"jpg": _jpeg(smaller.rotate(90, expand=True)),
                                      "txt": b"a photo, turned on its side", "json": meta("stock", name)}))
        expected.extend(Expected(k, "dedup", "near_duplicate") for k in (f"m{i:03d}", f"r{i:03d}"))
        # Two crops of 60% of the picture (opposite corners, scaled back up) are other pictures (18+ bits from
        # every orientation of every photo): one with the category caption (the middle tiers), one captioned
        # only "photo" (the head concept that balancing caps).
        w, h = img.size
        for key, box, caption in ((f"c{i:03d}", (w * 2 // 5, h * 2 // 5, w, h), f"a cropped photo of {CATEGORY[name]}"),
                                  (f"k{i:03d}", (0, 0, w * 3 // 5, h * 3 // 5), "a photo, cropped close")):
            shard_b.append((key, {"jpg": _jpeg(img.crop(box).resize((w, h), Image.LANCZOS)), "txt": caption.encode(),
                                  "json": meta("webcrawl", name)}))
            expected.append(Expected(key, None, None))
        # "cell" is not in the shipped vocabulary: that pair shows `no_concept_match`.
        expected.append(Expected(f"{i:04d}", *(("balance", "no_concept_match") if name == "cell" else (None, None))))

    # Near-duplicates: smaller recompressed copies and one exact byte copy (the original is kept).
    for j, name in enumerate(["astronaut", "chelsea", "coffee", "rocket"]):
        img = imgs[name]
        copy = img.resize((img.width * 17 // 20, img.height * 17 // 20), Image.LANCZOS)
        shard_b.append((f"d{j:03d}", {"jpg": _jpeg(copy, quality=70), "txt": CAPTIONS[name].encode(),
                                      "json": meta("webcrawl", name)}))
        expected.append(Expected(f"d{j:03d}", "dedup", "near_duplicate"))
    exact = dict(shard_a[0][1])
    shard_b.append(("x000", {"jpg": exact["jpg"], "txt": b"the same astronaut photo again, byte for byte",
                             "json": meta("webcrawl", "astronaut")}))
    expected.append(Expected("x000", "dedup", "near_duplicate"))

    good = _jpeg(imgs["coffee"])
    bad: list[tuple[str, dict[str, bytes], str, str]] = [
        ("b000", {"jpg": good[: len(good) // 2], "txt": b"a photo of coffee, cut off half way"}, "decode", "corrupt_image"),
        ("b001", {"jpg": b"", "txt": b"a photo that is zero bytes long"}, "decode", "corrupt_image"),
        ("b002", {"jpg": bytes(range(256)) * 8, "txt": b"a photo made of random bytes"}, "decode", "corrupt_image"),
        ("b003", {"png": png_bomb(), "txt": b"a photo whose header claims 1.6 gigapixels"}, "decode", "image_too_large"),
        ("b004", {"jpg": _jpeg(imgs["rocket"].resize((120, 80))), "txt": b"a tiny photo of a rocket"},
         "heuristics", "too_small"),
        ("b005", {"jpg": _jpeg(imgs["grass"].resize((1200, 240))), "txt": b"a long banner of green grass"},
         "heuristics", "bad_aspect_ratio"),
        ("b006", {"png": _png(Image.new("RGB", (400, 300), (200, 30, 30))), "txt": b"a plain red square"},
         "heuristics", "solid_color"),
        ("b007", {"jpg": _jpeg(imgs["brick"]), "txt": b""}, "heuristics", "caption_not_text"),
        ("b008", {"jpg": _jpeg(imgs["gravel"]), "txt": b"!!! ... ???"}, "heuristics", "caption_not_text"),
        ("b009", {"jpg": _jpeg(imgs["cell"]), "txt": b"https://example.org/img/123.jpg"}, "heuristics",
         "caption_not_text"),
        ("b010", {"jpg": _jpeg(imgs["horse"]), "txt": b"horse"}, "heuristics", "caption_too_short"),
        ("b011", {"jpg": _jpeg(imgs["camera"]), "txt": "un caf\u00e9".encode("latin-1") + b" \xff\xfe photo"},
         "read", "caption_not_text"),
        ("b012", {"jpg": _jpeg(imgs["coins"])}, "read", "missing_caption"),
        ("b013", {"txt": b"a caption whose image is missing"}, "read", "missing_image"),
        ("b014", {"jpg": _jpeg(imgs["hubble_deep_field"]), "txt": b"galaxies", "json": b"{not json"},
         "read", "invalid_metadata"),
    ]
    for key, members, stage, reason in bad:
        shard_b.append((key, members))
        expected.append(Expected(key, stage, reason))

    for shard_name, records in (("demo-000000.tar", shard_a), ("demo-000001.tar", shard_b)):
        with tarfile.open(folder / shard_name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, members in records:
                for ext, data in members.items():
                    _add(tar, f"{key}.{ext}", data)
    return expected


def build(folder: Path) -> DemoInput:
    build_caption_input(folder)
    return DemoInput([str(folder / "*.tar")], list(DEMO_SETS), "demo")
