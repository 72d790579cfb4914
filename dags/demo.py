"""`quarry demo`: run the DAGs on sample data shipped with quarry, offline.

The caption demo input is built deterministically from 13 public-domain/CC0
photos (`demo_data/`): good pairs, mirrored and rotated variants, planted
near-duplicates, and one of each kind of bad input (truncated and corrupt
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

    # Originals with specific captions (tail concepts), mirrored copies with
    # category captions (middle), rotated copies captioned only "photo" (the
    # head concept that balancing caps): every tier shows up.
    for i, (name, img) in enumerate(imgs.items()):
        shard_a.append((f"{i:04d}", {"jpg": _jpeg(img), "txt": CAPTIONS[name].encode(), "json": meta("stock", name)}))
        shard_b.append((f"m{i:03d}", {"jpg": _jpeg(ImageOps.mirror(img)),
                                      "txt": f"a mirrored photo of {CATEGORY[name]}".encode(),
                                      "json": meta("webcrawl", name)}))
        shard_a.append((f"r{i:03d}", {"jpg": _jpeg(img.rotate(90, expand=True)),
                                      "txt": b"a photo, turned on its side", "json": meta("stock", name)}))
        expected.extend(Expected(k, None, None) for k in (f"m{i:03d}", f"r{i:03d}"))
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


# The grade demo: RL samples of four task types and rollouts of two models.
GRADE_SAMPLES = [
    ("m-add", "math", "What is 17 + 25?", "42"),
    ("m-frac", "math", "Simplify 6/8.", "3/4"),
    ("m-sqrt", "math", "What is the square root of 2, to 3 decimals?", "1.414"),
    ("m-pct", "math", "What is 15% of 80?", "12"),
    ("o-sign", "ocr", "Read the sign.", "NO PARKING"),
    ("o-plate", "ocr", "Read the licence plate.", "KX 4417"),
    ("q-cat", "exact", "What animal is on the sofa?", '["cat", "kitten"]'),
    ("q-colour", "exact", "What colour is the car?", "red"),
    ("g-dog", "grounding", "Box the dog.", "[[120, 340, 410, 760]]"),
    ("g-none", "exact", "Nobody answered this one.", "yes"),
]
# (sample, model) -> responses' answers; None is a response without a box.
GRADE_ROLLOUTS = {
    ("m-add", "glm-a"): ["42", "42", "42", "42"], ("m-add", "glm-b"): ["42", "42.0", "42", "42"],
    ("m-frac", "glm-a"): ["3/4", "0.75", "6/8", "0.7"], ("m-frac", "glm-b"): ["3/4", "3/4", "0.75", "0.75"],
    ("m-sqrt", "glm-a"): ["1.414", "1.41", "1.732", None], ("m-sqrt", "glm-b"): ["1.5", "1.414", "2", "1.4"],
    ("m-pct", "glm-a"): ["12", "1200", "15", "12"], ("m-pct", "glm-b"): ["8", "12", "20", "12"],
    ("o-sign", "glm-a"): ["NO PARKING"] * 4, ("o-sign", "glm-b"): ["NO PARKING", "NO PARKlNG", "NO PARKING", "NO PARKING"],
    ("o-plate", "glm-a"): ["KX 4471", "KX4417", "KX 4417", "HX 4417"], ("o-plate", "glm-b"): ["KX 4411"] * 4,
    ("q-cat", "glm-a"): ["Cat", "kitten", "a cat", "dog"], ("q-cat", "glm-b"): ["cat"] * 4,
    ("q-colour", "glm-a"): ["maroon", "dark red", "crimson", "burgundy"], ("q-colour", "glm-b"): ["orange"] * 4,
    ("g-dog", "glm-a"): ["[118, 338, 412, 765]", "[0, 0, 100, 100]", "[120, 340, 410, 760]", None],
    ("g-dog", "glm-b"): ["[500, 500, 900, 900]"] * 4,
    ("unknown-id", "glm-a"): ["1"],
}


def build_grade_input(folder: Path) -> tuple[Path, Path]:
    """Write the grade demo's samples and rollouts (JSONL); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = folder / "samples.jsonl"
    samples.write_text("".join(json.dumps({"sample_id": sid, "source": "demo-rl", "task": task, "question": q,
                                           "answer": a}) + "\n" for sid, task, q, a in GRADE_SAMPLES))
    rollouts = folder / "rollouts.jsonl"
    lines = []
    for (sid, model), answers in GRADE_ROLLOUTS.items():
        for a in answers:
            response = "<think>...</think><answer>I am not sure.</answer>" if a is None else (
                f"<think>...</think><answer><|begin_of_box|>{a}<|end_of_box|></answer>")
            lines.append(json.dumps({"sample_id": sid, "model": model, "response": response}))
    rollouts.write_text("\n".join(lines) + "\n")
    return samples, rollouts


def run_demo(output: str, overwrite: bool = False) -> int:
    from quarry.dags.inspect import summary
    from quarry.dags.registry import DAGS
    from quarry.dags.runner import resolve_config, run_dag

    out = Path(output)
    inputs = out / "inputs" / "caption"
    build_caption_input(inputs)
    spec = DAGS["caption"]
    cfg = resolve_config(spec, None, DEMO_SETS, "demo")
    print(f"quarry demo: caption DAG on {inputs} (2 WebDataset shards)", flush=True)
    manifest = run_dag(spec, [str(inputs / "*.tar")], str(out / "caption"), cfg, overwrite=overwrite)
    print(summary(str(out / "caption")))
    print()
    print("!" * 78)
    print("! The demo scores with quarry-tiny, a random-weight CLIP: its clip_score values are")
    print("! meaningless. Point clip.model / clip.pretrained at real weights for real data.")
    print("!" * 78)
    print(f"\nshards: {out / 'caption' / 'data'}   manifest: {out / 'caption' / 'manifest.json'}")

    samples, rollouts = build_grade_input(out / "inputs" / "grade")
    spec = DAGS["grade"]
    cfg = resolve_config(spec, None, [f"rollouts={rollouts}"], "demo-rl")
    print(f"\nquarry demo: grade DAG on {samples} with {rollouts} (2 models, 4 rollouts each)", flush=True)
    graded = run_dag(spec, [str(samples)], str(out / "grade"), cfg, overwrite=overwrite)
    print(summary(str(out / "grade")))
    ok = bool(manifest.balanced and graded.balanced)
    for name in EXTRA_DEMOS:
        ok = _run_module_demo(name, out, overwrite) and ok
    print(f"\ntry: quarry inspect {out / 'caption'} --sql \"SELECT tier, count(*) FROM shards GROUP BY tier\"")
    return 0 if ok else 1


# DAGs whose module provides `build_demo_input(folder) -> (input patterns, --set overrides)`.
EXTRA_DEMOS = ("gui", "ocr_search", "svg", "imagemining", "interleaved", "decontam")


def _run_module_demo(name: str, out: Path, overwrite: bool) -> bool:
    """Run DAG `name` on the demo input its module builds; True when its manifest adds up."""
    import importlib

    from quarry.dags.inspect import summary
    from quarry.dags.registry import DAGS
    from quarry.dags.runner import resolve_config, run_dag

    spec = DAGS[name]
    patterns, sets = importlib.import_module(f"quarry.dags.{name}").build_demo_input(out / "inputs" / name)
    cfg = resolve_config(spec, None, sets, f"demo-{name}")
    print(f"\nquarry demo: {name} DAG on {', '.join(patterns)}", flush=True)
    manifest = run_dag(spec, patterns, str(out / name), cfg, overwrite=overwrite)
    print(summary(str(out / name)))
    return manifest.balanced is not False
