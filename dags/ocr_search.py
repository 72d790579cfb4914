"""`quarry run ocr_search`: OCR data and crop-then-search tasks from posters, charts, maps and scenes.

Two tasks, one table:
- `ocr` (GLM-4.5V §3.1): every picture with at least one valid line (recognition
  score >= text.min_score, line height >= text.min_height_px) becomes one row
  with its transcription in reading order, its lines (quadrilateral, box,
  confidence) and its entities; a picture without one is rejected `ocr/no_text`.
- `ocr_search` (GLM-5V-Turbo §3.3): each entity too small to read at the model's
  input size (line height < tasks.readable_px with the long side at
  tasks.model_input_side) becomes a question, a crop box (0-1000, with margin),
  the upscaled crop, the query (OCR of the crop) and the answer, as the tool
  calls crop(bbox) then search(query); a crop whose re-read does not match the
  entity (similarity < tasks.min_similarity) is rejected `verify/crop_unreadable`.

Tier rule: the entity's relative area (ViCrop buckets: < 0.005 hard, 0.005-0.05
medium, >= 0.05 easy), one step harder when its line height at the model input
is under tiers.small_text_px, one step easier at tiers.large_text_px or more.
An `ocr` row takes the tier of its hardest entity.
"""

from __future__ import annotations

import json
import pathlib

import apache_beam as beam

from quarry.dags.runner import BuildInfo, DagSpec
from quarry.operators.ocr.engine import OcrLoadError, describe, make_engine
from quarry.pipelines.decontam import FieldProbe, MaybeDecontaminate, plan_benchmarks
from quarry.pipelines.ocr_search import OcrSearchPipeline, ReadImages, plan_ocr_inputs
from quarry.pipelines.stats import CountTo
from quarry.pipelines.write import WriteImages, WriteRejects, WriteShards
from quarry.schemas.config import ConfigError
from quarry.schemas.ocr_search import OcrSearchConfig, OcrSearchRow


def plan(patterns: list[str], cfg: OcrSearchConfig):
    try:
        make_engine(cfg.ocr).preflight()  # a missing engine or model stops the run before any data is read
    except OcrLoadError as e:
        raise ConfigError(f"ocr: {e}") from None
    if cfg.decontam.enabled:
        plan_benchmarks(cfg.decontam)  # a benchmark file without usable columns stops the run here
    return plan_ocr_inputs(patterns, cfg.reader)


def build(pipeline: beam.Pipeline, cfg: OcrSearchConfig, files, output: str) -> BuildInfo:
    engine = make_engine(cfg.ocr)
    samples, read_rejected = pipeline | "Read" >> ReadImages(files, cfg.source or "unknown", cfg.reader)
    samples | "CountRead" >> CountTo(output, "read")
    out = samples | "OcrSearch" >> OcrSearchPipeline(cfg, engine.label(), output)
    # --set decontam.bench=PATH: the text read, question, answer and crop against benchmark sets
    rows, dc_rejected = out.rows | "Decontam" >> MaybeDecontaminate(
        cfg.decontam, output, FieldProbe(text=("text", "question", "answer"), image=("crop",)), dag="ocr_search",
        shards=cfg.shards)
    rows | "WriteRows" >> WriteShards(output, "ocr_search", OcrSearchRow, cfg.shards)
    out.images | "WriteImages" >> WriteImages(output, cfg.shards)
    (read_rejected, out.rejected, dc_rejected) | "AllRejects" >> beam.Flatten() | "WriteRejects" >> WriteRejects(output, cfg.shards)
    info = BuildInfo(extra={"ocr": describe(cfg.ocr)})
    if not cfg.source:
        info.notes.append("no --source given: records without a `source` field are tagged source=unknown")
    if not cfg.tasks.enabled:
        info.notes.append("crop-then-search tasks disabled (tasks.enabled=false): only `ocr` rows were made")
    return info


SPEC = DagSpec(
    name="ocr_search",
    summary="PP-OCR text lines, entities and crop-then-search tasks from posters, charts, maps and scenes",
    stages=(
        ("read", "image folders, WebDataset tars, Parquet or JSONL -> pictures (no caption needed)"),
        ("decode", "Pillow decode under a pixel limit (bombs rejected by header), downscale to ocr.max_side"),
        ("ocr", "PP-OCR det+cls+rec via RunInference (rapidocr ONNX or PaddleOCR); valid lines or no_text"),
        ("layout", "reading order, entities by proximity/alignment/height, kinds, ViCrop tiers"),
        ("tasks", "small entities -> crop box with margin, upscaled crop, question, crop()->search() trajectory"),
        ("verify", "OCR the upscaled crop again; edit similarity < tasks.min_similarity is crop_unreadable"),
        ("decontam", "optional (--set decontam.bench=PATH): text read, question, answer and crop against benchmark sets"),
        ("write", "rows by source and tier; pictures once in DIR/images"),
    ),
    config_model=OcrSearchConfig,
    plan=plan,
    build=build,
    one_to_one=False,
)


DEMO_BACKGROUNDS = ("coffee.jpg", "rocket.jpg")


def build_demo_input(folder: pathlib.Path) -> tuple[list[str], list[str]]:
    """A synthetic poster on a shipped demo photo, a bar chart, and one photo without text.

    Deterministic and offline (Pillow's bundled font, photos from dags/demo_data).
    The run shows `ocr` rows with lines and entities, `ocr_search` rows for the
    small words (crop box, upscaled crop, query, crop->search trajectory), a
    `no_text` reject, and the engine and models in the manifest.
    """
    from PIL import Image

    from quarry.operators.ocr.synth import bar_chart, poster

    demo = pathlib.Path(__file__).parent / "demo_data"
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    with Image.open(demo / DEMO_BACKGROUNDS[0]) as bg:
        synth = poster(bg, "demo-0", label_sizes=(9, 12, 16, 22))
    synth.image.save(folder / "poster.png")
    truth["poster.png"] = [t.__dict__ for t in synth.texts]
    chart = bar_chart("demo-chart", bars=3)
    chart.image.save(folder / "chart.png")
    truth["chart.png"] = [t.__dict__ for t in chart.texts]
    with Image.open(demo / DEMO_BACKGROUNDS[1]) as photo:  # a photo with no text: rejected no_text
        photo.convert("RGB").resize((320, 240)).save(folder / "no_text.jpg", quality=90)
    # What was drawn where (text, glyph box, font size): not an input (JSON is not an image or JSONL file).
    (folder / "truth.json").write_text(json.dumps(truth, indent=1))
    return [str(folder)], []
