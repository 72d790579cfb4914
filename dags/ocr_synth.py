"""`quarry run ocr_synth`: corpus text rendered onto real background pictures, with exact OCR ground truth.

GLM-4.5V §3.1, OCR source 1 ("synthetic document images: corpus text rendered with varied fonts, sizes, colours
and orientations onto real image backgrounds"). `--input` is text (.txt files, one sample each; Parquet/JSONL
rows with a text column, e.g. the interleaved DAG's documents); `--set backgrounds.input=GLOB` the pictures (any
image input the ocr_search reader takes: image files, tars, Parquet, JSONL).

Each text becomes one `ocr` row (the ocr task's row shape plus word boxes): the rendered PNG, the drawn text in
reading order (= the RL answer, verifier `ocr`), line and word quads and boxes (pixels, 0-1000). Rotated text:
`quad` is the rotated quadrilateral, `box` its axis-aligned box. Tier rule: operators/ocr/render.py `tier_for`
(font size, worst line contrast, rotation, density). Choices are seeded by the sample id: reruns give
byte-identical images.
"""

from __future__ import annotations

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, Stage, with_reasons
from quarry.operators.ocr import render as render_ops
from quarry.pipelines.decontam import FieldProbe
from quarry.pipelines.ocr_search import plan_ocr_inputs
from quarry.pipelines.ocr_synth import STAGE_REASONS, OcrSynthPipeline, ReadTexts, SynthPlan, WriteSynth, plan_texts
from quarry.schemas.config import ConfigError
from quarry.schemas.ocr_synth import OcrSynthConfig, OcrSynthRow


def plan(patterns: list[str], cfg: OcrSynthConfig) -> SynthPlan:
    if not cfg.backgrounds.input:
        raise ConfigError("backgrounds.input: give the background pictures (--set backgrounds.input=GLOB)")
    unknown = [f for f in cfg.render.fonts if f not in render_ops.FONT_FILES]
    if unknown:
        raise ConfigError(f"render.fonts: unknown font(s) {unknown}; known: {', '.join(render_ops.FONT_FILES)}")
    if not render_ops.installed_fonts(tuple(cfg.render.fonts)):
        raise ConfigError("render.fonts: none is installed (scripts/apt-packages.txt: fonts-dejavu-core, "
                          "fonts-wqy-microhei)")
    return SynthPlan(plan_texts(patterns, cfg.text), plan_ocr_inputs(list(cfg.backgrounds.input), cfg.reader))


def read(pipeline, cfg: OcrSynthConfig, files: SynthPlan):
    return pipeline | ReadTexts(files.texts, cfg.source or "unknown", cfg.text)


def transform(samples, cfg: OcrSynthConfig, files: SynthPlan, output: str) -> FamilyOutputs:
    out = samples | "OcrSynth" >> OcrSynthPipeline(cfg, files.backgrounds, output)
    return FamilyOutputs(out.rows, out.rejected)


def write(rows, cfg: OcrSynthConfig, files: SynthPlan, output: str):
    """Rows travel without their PNG; each is drawn again from its text, background and seed as it is written."""
    _, rejected = rows | "Write" >> WriteSynth(cfg, files, output)
    return rejected


def describe(cfg: OcrSynthConfig, files: SynthPlan) -> BuildInfo:
    fonts = render_ops.installed_fonts(tuple(cfg.render.fonts))
    return BuildInfo(extra={"fonts": list(fonts), "text_files": len(files.texts),
                            "background_files": len(files.backgrounds)})


SPEC = DagSpec(
    name="ocr_synth",
    summary="corpus text rendered onto real backgrounds: OCR rows with exact text, line and word boxes",
    stages=with_reasons((
        Stage("read", ".txt files, Parquet/JSONL text column -> text samples; background pictures as ocr_search reads them",
              where="pipelines/ocr_synth.py, pipelines/ocr_search.py"),
        Stage("backgrounds", "Pillow decode under a pixel limit (bombs rejected by header), scaled to "
                             "render.canvas_side, one side input", where="operators/decode.py, pipelines/ocr_synth.py"),
        Stage("render", "font covering every character, size, layout, rotation, per-line colour by WCAG contrast; "
                        "exact line and word quads; tier", where="operators/ocr/render.py"),
        Stage("decontam", "optional (--set decontam.bench=PATH): rendered text and image against benchmark sets",
              where="pipelines/decontam.py"),
        Stage("write", "rows by source and tier; texts and backgrounds read again and each PNG drawn again as it "
                       "is written (size and digest checked), so no image travels a shuffle",
              where="pipelines/ocr_synth.py, pipelines/write.py"),
    ), STAGE_REASONS),
    config_model=OcrSynthConfig,
    plan=plan,
    read=read,
    transform=transform,
    write=write,
    describe=describe,
    row_model=OcrSynthRow,
    decontam_fields=FieldProbe(text=("text",), image=("image",)),
    unsourced="text records without a `source` field",
    one_to_one=False,
)
