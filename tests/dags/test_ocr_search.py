"""ocr_search end to end through run_dag: bad inputs, manifest accounting, recall on known words, stable ids."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from quarry.dags.demos import ocr_search as ocr_search_demo
from quarry.dags.ocr_search import SPEC
from quarry.dags.runner import reject_counts, resolve_config, run_dag
from quarry.operators.ocr.synth import box_contains, draw_text, poster, rotated
from quarry.operators.ocr.tasks import similarity
from quarry.pipelines.ocr_search import STAGE_REASONS
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.common import TIERS
from quarry.schemas.ocr_search import OcrSearchRow

DEMO = Path(__file__).resolve().parents[2] / "dags" / "demo_data"
SETS = ["ocr.threads=1"]  # one thread per engine: CI runs two test workers on 2 cores
LABEL_SIZES = (9, 12, 26)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (a decompression bomb's calling card), no real pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _strokes_cjk(size: tuple[int, int] = (240, 120)) -> Image.Image:
    """Chinese numerals 一 二 三 drawn as strokes (no CJK font is installed): non-Latin script input."""
    im = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(im)
    for k, bars in enumerate((1, 2, 3)):
        x = 20 + k * 70
        for b in range(bars):
            y = 60 if bars == 1 else 35 + b * (50 // (bars - 1))
            d.rectangle((x, y, x + 50, y + 6), fill=(0, 0, 0))
    return im


def make_inputs(folder: Path) -> dict:
    folder.mkdir(parents=True)
    with Image.open(DEMO / "coffee.jpg") as bg:
        synth = poster(bg, "dag-test", size=(480, 360), title_size=34, label_sizes=LABEL_SIZES)
    synth.image.save(folder / "poster.png")
    with Image.open(DEMO / "rocket.jpg") as photo:
        photo.convert("RGB").resize((160, 120)).save(folder / "photo.jpg", quality=90)
    jpeg = io.BytesIO()
    synth.image.save(jpeg, format="JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[:600])
    (folder / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    Image.new("RGB", (4, 4)).save(folder / "tiny.png")
    banner = Image.new("RGB", (5000, 160), (255, 255, 255))  # downscaled to ocr.max_side, never read whole
    draw_text(banner, (80, 50), "Harbor Festival", 48, plate=None)
    draw_text(banner, (4300, 50), "Gate 12", 48, plate=None)
    banner.save(folder / "banner.png")
    with Image.open(DEMO / "grass.jpg") as bg:
        rotated(poster(bg, "turned", size=(360, 240), title_size=30, label_sizes=()).image, 90).save(folder / "turned.png")
    _strokes_cjk().save(folder / "cjk.png")
    (folder / "README.txt").write_text("not an input")
    return {"poster": synth}


@pytest.mark.slow
def test_end_to_end(tmp_path):
    """One run checked several ways (one test, so `pytest -n 2` runs the pipeline once, not once per worker)."""
    truth = make_inputs(tmp_path / "in")
    cfg = resolve_config(SPEC, None, SETS, "posters")
    manifest = run_dag(SPEC, [str(tmp_path / "in")], str(tmp_path / "out"), cfg)
    run = (tmp_path, manifest, truth)
    check_manifest_adds_up_per_stage_and_bad_inputs_are_rejects(run)
    check_schema_images_and_the_huge_and_turned_pictures(run)
    check_small_words_are_found_by_crops_and_land_in_harder_tiers(run)
    check_rerun_gives_the_same_ids_and_rows(run, tmp_path / "rerun")


def rows(out: Path, where: str = "true") -> list[dict]:
    q = f"select * from read_parquet('{out}/data/**/*.parquet', hive_partitioning=true) where {where} order by sample_id"
    return duckdb.sql(q).to_df().to_dict("records")


def check_manifest_adds_up_per_stage_and_bad_inputs_are_rejects(run):
    root, m, _ = run
    assert m.dag == "ocr_search" and not m.one_to_one
    assert m.inputs == 8  # README.txt is not an input
    reasons = {(stage, reason): n for stage, rs in m.rejected.items() for reason, n in rs.items()}
    assert reasons[("decode", "corrupt_image")] == 1
    assert reasons[("decode", "image_too_large")] == 1
    assert reasons[("decode", "image_too_small")] == 1
    assert reasons[("ocr", "no_text")] >= 1  # the photo; the stroke-drawn numerals may join it
    s = m.stages
    assert s["decode"].inputs == m.inputs - sum(m.rejected.get("read", {}).values())
    assert s["decode"].inputs == s["decode"].outputs + sum(m.rejected["decode"].values())
    assert s["ocr"].inputs == s["decode"].outputs
    assert s["ocr"].inputs == s["ocr"].outputs + sum(m.rejected["ocr"].values())
    assert s["tasks"].inputs == s["tasks"].outputs + sum(m.rejected.get("verify", {}).values())
    assert m.kept == s["ocr"].outputs + s["tasks"].outputs
    assert m.extra["ocr"]["engine"] == "rapidocr" and m.extra["ocr"]["models"]["det"].startswith("PP-OCR")
    rejects = duckdb.sql(f"select origin.key as k, reason from read_parquet('{root}/out/rejects/*.parquet') "
                         "where stage != 'verify'").fetchall()  # verify rejects are tasks, not pictures
    by_key = dict(rejects)
    assert by_key["truncated.jpg"] == "corrupt_image" and by_key["bomb.png"] == "image_too_large"
    assert by_key["tiny.png"] == "image_too_small" and by_key["photo.jpg"] == "no_text"
    kept = {r["origin"]["key"] for r in rows(root / "out", "task = 'ocr'")}
    assert ("cjk.png" in kept) != ("cjk.png" in by_key)  # non-Latin strokes: a row or a reject, exactly once
    assert len(kept) + sum(1 for _ in by_key) == m.inputs


def check_schema_images_and_the_huge_and_turned_pictures(run):
    root, m, _ = run
    out = root / "out"
    for path in (out / "data").rglob("*.parquet"):
        assert pq.read_schema(path).remove_metadata() == arrow_schema(OcrSearchRow).remove_metadata()
    ocr_rows = {r["origin"]["key"]: r for r in rows(out, "task = 'ocr'")}
    assert {"poster.png", "banner.png", "turned.png"} <= set(ocr_rows)
    banner = ocr_rows["banner.png"]
    assert "HarborFestival" in banner["text"].replace(" ", "") and "Gate12" in banner["text"].replace(" ", "")
    assert banner["width"] == 5000 and banner["lines"][0]["box"][2] < 1000  # boxes in original pixels
    assert ocr_rows["turned.png"]["text"]  # text turned by 90 degrees is still read
    images = duckdb.sql(f"select image_id, width from read_parquet('{out}/images/*.parquet')").fetchall()
    assert sorted(i for i, _ in images) == sorted(r["image_id"] for r in ocr_rows.values())
    assert m.rows_by_partition and all(k.startswith("source=posters/") for k in m.rows_by_partition)


def check_small_words_are_found_by_crops_and_land_in_harder_tiers(run):
    root, _, truth = run
    synth = truth["poster"]
    poster_rows = rows(root / "out", "origin.key = 'poster.png'")
    ocr_row = next(r for r in poster_rows if r["task"] == "ocr")
    tasks = [r for r in poster_rows if r["task"] == "ocr_zoom"]  # no search.kb: crop-and-read tasks
    w, h = ocr_row["width"], ocr_row["height"]
    found, tiers = 0, {}
    labels = [t for t in synth.texts if t.kind == "label"]
    for t in labels:
        for r in tasks:
            x0, y0, x1, y1 = r["crop_box_1000"]
            crop = (x0 * w / 1000, y0 * h / 1000, x1 * w / 1000, y1 * h / 1000)
            if box_contains(crop, t.box, slack=1) and similarity(r["answer"], t.text) >= 0.8:
                found += 1
                tiers[t.size] = r["tier"]
                assert json.loads(r["trajectory"][0]["arguments"]) == {"bbox": list(r["crop_box_1000"])}
                assert len(r["trajectory"]) == 1 and r["trajectory"][0]["result"] == r["query"] == r["answer"]
                assert [m["role"] for m in json.loads(r["messages"])] == ["user", "assistant", "tool", "assistant"]
                for column in NON_NULL_TASK_COLUMNS:
                    assert r[column] is not None, column
                assert r["crop_similarity"] >= 0.8 and r["parent_id"] == ocr_row["sample_id"]
                Image.open(io.BytesIO(r["crop"]["bytes"])).verify()
    small = [t for t in labels if t.size < 20]
    ambiguous = duckdb.sql(f"select count(*) from read_parquet('{root}/out/rejects/*.parquet') where "
                           "origin.key = 'poster.png' and reason = 'ambiguous_reference'").fetchall()[0][0]
    # every small word got a verified crop task, unless another label shares its region (the question
    # "the small label near the top-right" would fit both)
    assert found + ambiguous >= len(small) and found > 0
    entity_tiers = {}  # every drawn word is an entity; small words are flagged small
    for t in synth.texts:
        match = [e for e in ocr_row["entities"] if similarity(e["text"], t.text) >= 0.8]
        assert match, (t.text, [e["text"] for e in ocr_row["entities"]])
        entity_tiers[t.size] = TIERS.index(match[0]["tier"])
        assert match[0]["small"] == (t.size < 20)
    sizes = sorted(entity_tiers)
    assert [entity_tiers[s] for s in sizes] == sorted((entity_tiers[s] for s in sizes), reverse=True)


# Columns every crop task row must fill (a comment once swallowed entity_kind and entity_box_1000).
NON_NULL_TASK_COLUMNS = ("question", "answer", "verifier", "query", "entity_kind", "entity_box_1000",
                         "crop_box_1000", "crop", "crop_scale", "crop_similarity", "rel_area", "input_height_px",
                         "messages", "parent_id", "image_id")


def check_rerun_gives_the_same_ids_and_rows(run, tmp_path):
    root, _, _ = run
    (tmp_path / "in").mkdir(parents=True)
    (tmp_path / "in" / "poster.png").write_bytes((root / "in" / "poster.png").read_bytes())
    cfg = resolve_config(SPEC, None, SETS, "posters")
    run_dag(SPEC, [str(tmp_path / "in")], str(tmp_path / "out"), cfg)
    drop = ("origin",)  # the file path differs between the two runs
    again = [{k: v for k, v in r.items() if k not in drop} for r in rows(tmp_path / "out")]
    first = [{k: v for k, v in r.items() if k not in drop} for r in rows(root / "out", "origin.key = 'poster.png'")]
    assert [r["sample_id"] for r in again] == [r["sample_id"] for r in first]
    assert json.dumps(again, default=_plain, sort_keys=True) == json.dumps(first, default=_plain, sort_keys=True)


def _plain(v):
    return v.tolist() if hasattr(v, "tolist") else v.hex() if isinstance(v, bytes) else str(v)


def test_demo_input_is_deterministic(tmp_path):
    demo = ocr_search_demo.build(tmp_path / "a")
    pats_a, sets = demo.patterns, demo.sets
    ocr_search_demo.build(tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["chart.png", "no_text.jpg", "poster.png", "truth.json"]
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert pats_a == [str(tmp_path / "a")] and sets == [f"search.kb={tmp_path / 'a-kb.jsonl'}"]
    assert (tmp_path / "a-kb.jsonl").read_bytes() == (tmp_path / "b-kb.jsonl").read_bytes()
    truth = json.loads((tmp_path / "a" / "truth.json").read_text())
    assert sorted(truth) == ["chart.png", "poster.png"] and all(t["box"] and t["size"] for t in truth["poster.png"])


@pytest.mark.slow
def test_decontam_drops_rows_whose_text_a_benchmark_question_holds(tmp_path):
    demo = ocr_search_demo.build(tmp_path / "in")
    inputs, _ = demo.patterns, demo.sets
    for name in ("chart.png", "no_text.jpg"):  # the poster alone
        (tmp_path / "in" / name).unlink()
    title = json.loads((tmp_path / "in" / "truth.json").read_text())["poster.png"][0]["text"]  # 44 px: read exactly
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "posterqa.jsonl").write_text(
        json.dumps({"id": "p1", "question": f"Which festival poster announces {title} in bold?"}) + "\n")
    n = len(title.split())  # n-grams as long as the title, so the transcription shares one with the question
    cfg = resolve_config(SPEC, None, SETS + [f"decontam.bench={tmp_path / 'bench'}", f"decontam.ngram={n}"], "posters")
    m = run_dag(SPEC, inputs, str(tmp_path / "out"), cfg)
    assert m.rejected["decontam"] == {"contaminated_text": 1}  # the `ocr` row holding the title
    # one match per field: the row's `text` and its `answer` (the RL contract's copy of the transcription)
    assert m.extra["contamination"]["by_benchmark"] == {"posterqa": 2}
    assert m.extra["contamination"]["rows_contaminated"] == 1
    assert [r["task"] for r in rows(tmp_path / "out")] and all(r["task"] == "ocr_zoom" for r in rows(tmp_path / "out"))


def test_every_reject_reason_is_listed_for_its_stage(tmp_path):
    """STAGE_REASONS names every stage of SPEC (but `read`, the reader's) and every (stage, reason) a run wrote."""
    assert set(STAGE_REASONS) == {s.name for s in SPEC.stages} - {"read"}
    make_inputs(tmp_path / "in")
    run_dag(SPEC, [str(tmp_path / "in")], str(tmp_path / "out"), resolve_config(SPEC, None, SETS, "posters"))
    listed = {(stage, r) for stage, reasons in STAGE_REASONS.items() for r in reasons}
    written = {(stage, r) for stage, reasons in reject_counts(str(tmp_path / "out")).items() for r in reasons
               if stage != "read"}
    assert len(written) >= 2 and written <= listed, written - listed


def test_chinese_questions_on_the_demo(tmp_path):
    """tasks.language=zh: every question in Chinese, the same tasks and answers as in English."""
    demo = ocr_search_demo.build(tmp_path / "in")
    runs = {}
    for lang in ("en", "zh"):
        cfg = resolve_config(SPEC, None, demo.sets + [f"tasks.language={lang}"], "demo")
        run_dag(SPEC, demo.patterns, str(tmp_path / lang), cfg)
        runs[lang] = {r["sample_id"]: r for r in rows(tmp_path / lang)}
    assert runs["zh"].keys() == runs["en"].keys() and any(r["task"] == "ocr_search" for r in runs["zh"].values())
    for sid, r in runs["zh"].items():
        assert (r["task"], r["answer"]) == (runs["en"][sid]["task"], runs["en"][sid]["answer"])
        assert "图" in r["question"] and not any("a" <= c.lower() <= "z" for c in r["question"]), r["question"]
