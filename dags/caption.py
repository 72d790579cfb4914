"""`quarry run caption`: image-caption pairs, filtered, deduplicated, CLIP-scored, concept-balanced.

Tier rule: the rarity of the caption's rarest matched concept (its dataset-wide
match count c against `balance.t`): c >= t very_easy (a head concept),
c >= t/10 easy, c >= t/100 medium, c >= t/1000 hard, else very_hard; a kept
pair that matched nothing is medium. Tail concepts are the hard part of the
distribution, so they are the hard tiers.

CLIP per language (`clip.by_lang`, e.g. ``{zh: {model: xlm-roberta-base-ViT-B-32, pretrained: laion5b_s13b_b90k,
threshold: 0.2}}``): pairs are routed by their caption's language (the `lang` column) to that language's model and
kept at its threshold; other languages use `clip.model`. Each row names its model (`clip_model`), and the
manifest's `extra.clip.by_lang` counts the kept rows per language and the model that scored them.

Recaption (GLM-4.5V §3.1 step 4; optional, `recaption.enabled`): the balanced pairs go to a captioning model
served over the OpenAI-compatible chat API (vLLM, SGLang): the small JPEG as an image part plus the prompt of
`operators/data/recaption_prompt.txt` (or `recaption.prompt`). The recaption is checked against the original
(operators/recaption.py: check_recaption); rows keep both (`caption`, `recaption`), and a seeded
`recaption.merge_ratio` of them train on the recaption (`caption_source`, `train_caption`). A failed request or
check is a `recaption` reject (or, with `recaption.on_failure=keep_original`, a row with the reason in
`recaption_status`); the manifest's `extra.recaption.outcomes` counts every outcome.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, RunCounts, Stage, with_reasons
from quarry.operators.clip import ClipLoadError, ClipScorer
from quarry.operators.concepts import VocabularyError, load_vocabulary
from quarry.operators.inputs import reasons as read_reasons
from quarry.operators.recaption import PromptError, chat_url, load_prompt
from quarry.operators.recaption import preflight as recaption_preflight
from quarry.pipelines.caption import STAGE_REASONS, CaptionPipeline, WriteFromSource
from quarry.pipelines.read import ReadImageText, plan_inputs
from quarry.pipelines.recaption import OUTCOME_PREFIX
from quarry.pipelines.write import read_markers
from quarry.schemas.caption import CaptionConfig, ClipConfig
from quarry.schemas.config import ConfigError

TINY_WARNING = (
    "CLIP ran the random-weight test model quarry-tiny: clip_score values are MEANINGLESS and the "
    "clip stage kept or dropped pairs at random. Use a real model (clip.model=ViT-B-32, "
    "clip.pretrained=<tag or checkpoint path>) for real data."
)


class CaptionPlan(NamedTuple):
    files: list
    vocabulary: list[str]  # read once, here: tiers need it even with balancing off
    recaption_prompt: str = ""  # the recaption template, read once, here (recaption.enabled)


def plan(patterns: list[str], cfg: CaptionConfig) -> CaptionPlan:
    try:
        vocabulary = load_vocabulary(cfg.balance.vocabulary)
    except VocabularyError as e:
        raise ConfigError(f"balance.vocabulary: {e}") from None
    files = plan_inputs(patterns, cfg.reader)
    if cfg.clip.enabled:
        # missing weights, of the default model or of a language's, stop the run before any data is read
        for setting, clip in clip_models(cfg):
            try:
                ClipScorer(clip, setting=setting).preflight()
            except ClipLoadError as e:
                raise ConfigError(f"{setting}: {e}") from None
    prompt = ""
    if cfg.recaption.enabled:
        prompt = _plan_recaption(cfg)
    return CaptionPlan(files, vocabulary, prompt)


def clip_models(cfg: CaptionConfig) -> list[tuple[str, ClipConfig]]:
    """(config section, ClipConfig) of each distinct CLIP model the run loads: `clip` first, then each
    `clip.by_lang.<lang>` whose model is not one already listed."""
    models, by_lang = cfg.clip.routes()
    first = {i: lang for lang, i in sorted(by_lang.items(), reverse=True)}  # the lowest language per model
    return [("clip", models[0])] + [(f"clip.by_lang.{first[i]}", m) for i, m in enumerate(models) if i]


def _plan_recaption(cfg: CaptionConfig) -> str:
    """The prompt template; with `recaption.preflight`, the endpoint must answer and serve the model."""
    rc = cfg.recaption
    try:
        prompt = load_prompt(rc.prompt)
    except PromptError as e:
        raise ConfigError(f"recaption.prompt: {e}") from None
    if rc.preflight:
        key = os.environ.get(rc.api_key_env) if rc.api_key_env else None
        problem = recaption_preflight(rc.base_url, rc.model, key, timeout_s=min(rc.timeout_s, 10.0))
        if problem is not None:
            raise ConfigError(f"recaption: {problem}; start the server, fix recaption.base_url / recaption.model, "
                              "or set recaption.preflight=false (then each pair is a recaption reject)")
    if rc.check_entities:
        import importlib.util

        if importlib.util.find_spec("jieba") is None:  # Chinese names for the entity check (operators/recaption.py)
            raise ConfigError("recaption.check_entities needs jieba for Chinese captions: pip install 'quarry[caption]' "
                              "(or set recaption.check_entities=false)")
    if rc.ocr_check:
        from quarry.operators.ocr.engine import OcrLoadError, make_engine
        from quarry.schemas.ocr_search import OcrEngineConfig

        try:
            make_engine(OcrEngineConfig()).preflight()
        except OcrLoadError as e:
            raise ConfigError(f"recaption.ocr_check: {e}") from None
    return prompt


def read(pipeline, cfg: CaptionConfig, plan: CaptionPlan):
    return pipeline | ReadImageText(plan.files, cfg.source or "unknown", cfg.reader)


def transform(samples, cfg: CaptionConfig, plan: CaptionPlan, output: str) -> FamilyOutputs:
    out = samples | "Caption" >> CaptionPipeline(cfg, plan.vocabulary, output, plan.recaption_prompt)
    return FamilyOutputs(out.kept, out.rejected)


def write(kept, cfg: CaptionConfig, plan: CaptionPlan, output: str):
    """Kept rows are written from a second read of their input files (no image bytes in shuffles), one input
    at a time, each committed with a marker; inputs a killed run committed are kept as they are (--resume)."""
    _, write_rejected = kept | "Write" >> WriteFromSource(plan.files, cfg.source or "unknown", cfg.reader, cfg.shards,
                                                          output, done=read_markers(output))
    return write_rejected


def describe(cfg: CaptionConfig, plan: CaptionPlan) -> BuildInfo:
    info = BuildInfo(extra={"vocabulary_entries": len(plan.vocabulary)})
    if cfg.clip.enabled:
        info.extra["clip"] = {"model": cfg.clip.model, "pretrained": cfg.clip.pretrained,
                              "threshold": cfg.clip.threshold}
        if cfg.clip.by_lang:
            info.extra["clip"]["models_by_lang"] = {
                lang: {"model": c.model, "pretrained": c.pretrained, "threshold": c.threshold}
                for lang, c in ((lang, cfg.clip.lang_config(lang)) for lang in sorted(cfg.clip.by_lang))}
        if any(c.model == "quarry-tiny" for _setting, c in clip_models(cfg)):
            info.notes.append(TINY_WARNING)
    else:
        info.notes.append("clip stage disabled (clip.enabled=false): pairs were not relevance-filtered")
    if not cfg.dedup.enabled:
        info.notes.append("dedup stage disabled (dedup.enabled=false)")
    rc = cfg.recaption
    if rc.enabled:
        info.extra["recaption"] = {
            "model": rc.model, "endpoint": chat_url(rc.base_url), "prompt": rc.prompt or "shipped",
            "prompt_sha256": hashlib.sha256(plan.recaption_prompt.encode()).hexdigest()[:16],
            "merge_ratio": rc.merge_ratio, "on_failure": rc.on_failure,
            "ocr_check": "rapidocr (PP-OCR, shipped models)" if rc.ocr_check else
            "skipped: recaption.ocr_check=false (no OCR engine configured for the caption DAG)"}
    return info


def finish(output: str, cfg: CaptionConfig, info: BuildInfo, run: RunCounts) -> None:
    """After the run: which CLIP model scored which languages, and the recaption outcomes."""
    if cfg.clip.enabled:
        clip = info.extra.setdefault("clip", {})
        clip["multilingual"] = _multilingual(cfg.clip.model, cfg.clip.pretrained)
        # The model that really scored each language's kept rows, from the rows' own clip_model column.
        by_lang: dict[str, dict] = {}
        for (lang, model), n in _column_counts(output, "lang", "clip_model").items():
            entry = by_lang.setdefault(lang, {"models": {}, "rows": 0})
            entry["models"][model] = n
            entry["rows"] += n
        for lang, entry in by_lang.items():
            if len(entry["models"]) == 1:  # the usual case: one model per language
                (label,) = entry.pop("models")
                entry["model"] = label
            lc = cfg.clip.lang_config(lang)
            entry["threshold"] = lc.threshold
            entry["multilingual"] = _multilingual(lc.model, lc.pretrained)
        clip["by_lang"] = {lang: by_lang[lang] for lang in sorted(by_lang)}
        for lang, entry in clip["by_lang"].items():
            lc = cfg.clip.lang_config(lang)
            if lang not in ("en", "und") and not entry["multilingual"] and lc.model != "quarry-tiny":
                info.notes.append(f"clip: {entry['rows']} kept row(s) in {lang!r} were scored by "
                                  f"{lc.model}/{lc.pretrained}, an English-text model; a multilingual one scores "
                                  f"them fairly: e.g. --set clip.by_lang.{lang}.model=xlm-roberta-base-ViT-B-32 "
                                  f"--set clip.by_lang.{lang}.pretrained=laion5b_s13b_b90k "
                                  f"--set clip.by_lang.{lang}.threshold=<its threshold>")
    if cfg.recaption.enabled:
        rec = info.extra.setdefault("recaption", {})
        outcomes = {k[len(OUTCOME_PREFIX):]: n for k, n in run.counts.items() if k.startswith(OUTCOME_PREFIX)}
        rec["outcomes"] = dict(sorted(outcomes.items()))
        rec["requested"] = run.counts.get("recaption.in", 0)
        rec["outcomes_balanced"] = sum(outcomes.values()) == rec["requested"]
        rec["caption_source"] = _column_counts(output, "caption_source")
        rec["rejected"] = run.rejected.get("recaption", {})


def _multilingual(model: str, pretrained: str) -> bool:
    """open_clip's multilingual text towers: XLM-R, mT5/NLLB-based (e.g. nllb-clip), and multilingual tags."""
    name = f"{model} {pretrained}".lower()
    return any(k in name for k in ("xlm", "mt5", "nllb", "multilingual"))


def _column_counts(output: str, *columns: str) -> dict:
    """value -> rows over the run's shards, reading the named columns (several: a tuple of values per key)."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from quarry.pipelines.write import written_files

    out: dict = {}
    for path in written_files(FileSystems.join(output, "data")):
        with FileSystems.open(path, compression_type="uncompressed") as fh:
            table = pq.read_table(fh, columns=list(columns))
        keys = zip(*(table[c].to_pylist() for c in columns)) if len(columns) > 1 else table[columns[0]].to_pylist()
        for v in keys:
            out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: str(kv[0])))


# What this DAG's reader can reject a record for (operators/inputs/reasons.py).
READ_REASONS = (read_reasons.UNREADABLE_FILE, read_reasons.FILE_TOO_LARGE, read_reasons.INVALID_JSON, read_reasons.RECORD_TOO_LARGE, read_reasons.UNREADABLE_TAR, read_reasons.INVALID_METADATA, read_reasons.MISSING_IMAGE, read_reasons.MISSING_CAPTION, read_reasons.CAPTION_NOT_TEXT)


SPEC = DagSpec(
    name="caption",
    summary="image-caption pairs: heuristic filters, pHash dedup, CLIP score >= 0.3, MetaCLIP balancing",
    stages=with_reasons((
        Stage("read", "WebDataset tar, Parquet, JSONL or image files -> records", where="operators/inputs/image_text.py, pipelines/read.py"),
        Stage("decode", "Pillow decode under a pixel limit, EXIF orientation, RGB", where="operators/decode.py"),
        Stage("heuristics", "min side, aspect ratio, solid colour, caption length and text-ness", where="operators/heuristics.py"),
        Stage("dedup", "64-bit pHash near-duplicates (banded, no all-pairs), best resolution kept", where="operators/phash.py, pipelines/dedup.py"),
        Stage("clip", "open_clip image-text cosine via RunInference, keep >= clip.threshold", where="operators/clip.py, pipelines/clip.py"),
        Stage("decontam", "optional (--set decontam.bench=PATH): caption and pHash against benchmark sets", where="operators/decontam.py, pipelines/decontam.py"),
        Stage("balance", "MetaCLIP concept matching (Aho-Corasick), head concepts capped at t", where="operators/concepts.py, pipelines/balance.py"),
        Stage("recaption", "optional (recaption.enabled): factual recaption by a served model (OpenAI chat API), "
              "checked against the original; recaption.merge_ratio of rows train on it", where="operators/recaption.py, pipelines/recaption.py"),
        Stage("write", "Parquet shards by source and tier, bytes read again from the inputs (no image shuffle)", where="pipelines/caption.py, pipelines/write.py"),
    ), {**STAGE_REASONS, "read": READ_REASONS}),
    config_model=CaptionConfig,
    plan=plan,
    read=read,
    transform=transform,
    describe=describe,
    write=write,
    finish=finish,
    resumable=("the global stages (decode, dedup, CLIP, balance, and recaption when on: its requests are sent "
               "again) run again over every input, since dedup and tiers depend on all of them; each input's shards are written once and committed, so only the inputs "
               "without a marker are read a second time and written"),
    input_files=lambda plan: [f.path for f in plan.files],
)
