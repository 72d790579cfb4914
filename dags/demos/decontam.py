"""The decontam demo: a tiny benchmark and training rows, half of them contaminated."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from quarry.dags.demos import DemoInput


def build(folder: Path) -> DemoInput:
    """A tiny benchmark (3 text questions, one image) and 8 training rows, 4 of them contaminated
    (verbatim, case/punctuation-edited, Chinese, recompressed+resized image)."""
    import io

    import numpy as np
    from PIL import Image

    folder = Path(folder)
    (folder / "bench").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261121)

    def picture(seed_rng) -> Image.Image:
        small = (seed_rng.random((6, 6, 3)) * 255).astype(np.uint8)
        return Image.fromarray(small).resize((160, 160), Image.BICUBIC)

    def encode(img: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    bench_img, clean_img = picture(rng), picture(rng)
    q_geo = ("In the figure, triangle ABC is inscribed in the circle with AB as its diameter; if angle CAB is "
             "35 degrees, what is the measure of angle ABC?")
    q_chart = "According to the bar chart, which year had the highest number of visitors to the national park?"
    q_zh = "如图所示，在平行四边形ABCD中，对角线AC与BD相交于点O，若AC等于八，求AO的长度"
    pq.write_table(pa.table({
        "id": ["geo-1", "chart-7", "zh-3"],
        "question": [q_geo, q_chart, q_zh],
        "options": [["35", "55", "65", "90"], [], []],
        "answer": ["55", "2019", "4"],
        "image": [{"bytes": encode(bench_img, "PNG"), "path": None}, None, None],
    }), folder / "bench" / "demobench.parquet")
    rows = [
        {"sample_id": "t-verbatim", "source": "webqa", "question": q_geo, "answer": "55"},
        {"sample_id": "t-edited", "source": "webqa", "question": q_chart.upper().replace(",", "") + "!!",
         "answer": "2019"},
        {"sample_id": "t-chinese", "source": "k12", "question": "题目：" + q_zh.replace("，", " "), "answer": "4"},
        {"sample_id": "t-image", "source": "k12", "question": "What is drawn here?",
         "image": encode(bench_img.resize((240, 240)), "JPEG", quality=60)},
        {"sample_id": "t-clean-1", "source": "webqa", "question": "What is the boiling point of water at sea level "
                                                                   "in degrees Celsius under standard pressure?",
         "answer": "100"},
        {"sample_id": "t-clean-2", "source": "webqa", "question": "Name the largest planet in the solar system.",
         "answer": "Jupiter"},
        {"sample_id": "t-clean-3", "source": "k12", "question": "What is drawn here?",
         "image": encode(clean_img, "JPEG", quality=90)},
        {"sample_id": "t-empty", "source": "k12", "question": "", "answer": ""},
    ]
    schema = pa.schema([("sample_id", pa.string()), ("source", pa.string()), ("question", pa.string()),
                        ("answer", pa.string()), ("image", pa.binary())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "train.parquet")
    return DemoInput([str(folder / "train.parquet")], [f"decontam.bench={folder / 'bench'}"])
