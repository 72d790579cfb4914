"""The caption DAG: its config sections and its output row.

Defaults and where they come from: GLM-4.5V §3.1 (CLIP score > 0.3),
DataComp (minimum side 200 px), MetaCLIP (t = 20,000 at 400M pairs).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from quarry.schemas.arrow import ArrowType
from quarry.schemas.common import ImageCell, Sample
from quarry.schemas.config import SIDE_FILE, DagConfig, Section


class DecodeConfig(Section):
    max_pixels: int = Field(
        40_000_000, ge=1, description="width*height above this is `image_too_large` (read from the header, before decoding)"
    )


class HeuristicsConfig(Section):
    min_side: int = Field(200, ge=1, description="shorter image side in pixels (DataComp uses 200)")
    max_aspect_ratio: float = Field(3.0, ge=1.0, description="long side / short side")
    solid_max_std: float = Field(
        3.0, ge=0.0, description="images whose pixel standard deviation (0-255, on a 64x64 thumbnail) is below this are `solid_color`"
    )
    min_caption_words: int = Field(3, ge=0, description="fewer words is `caption_too_short` (DataComp: > 2 words)")
    max_caption_words: int = Field(256, ge=1)
    min_caption_chars: int = Field(6, ge=0, description="fewer characters is `caption_too_short` (DataComp: > 5)")
    max_caption_chars: int = Field(2_000, ge=1)


class DedupConfig(Section):
    enabled: bool = True
    max_hamming: int = Field(4, ge=0, le=15, description="pHash (64-bit) distance at or under which two images are duplicates")
    orientations: bool = Field(
        True, description="also hash each image mirrored and turned by 90/180/270 degrees (operators/phash.py: "
        "phash64_orientations), so mirrored and rotated copies are near duplicates too")


class ClipConfig(Section):
    enabled: bool = True
    model: str = Field("ViT-B-32", description="open_clip architecture name (`quarry-tiny` = random-weight test model)")
    pretrained: str = Field(
        "laion2b_s34b_b79k",
        description="open_clip pretrained tag, a local checkpoint path (.pt/.bin/.safetensors), or `none` for random weights",
    )
    threshold: float = Field(0.3, ge=-1.0, le=1.0, description="keep pairs with cosine similarity >= this (per model!)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    accelerator: Optional[str] = Field(
        None, description="Beam accelerator resource hint for the model step only, e.g. "
        "'type:nvidia-l4;count:1;install-nvidia-driver' (Dataflow reads it; other runners ignore it); off unless set. "
        "Do not also pass Dataflow's worker_accelerator service option: hints and that option do not combine")
    share_model: Optional[bool] = Field(
        None, description="one model per worker machine, served to all its SDK processes (RunInference "
        "share_model_across_processes); unset: shared unless the runner runs one process (in-process DirectRunner): "
        "one copy in memory, and its torch threads get every core")
    threads: int = Field(0, ge=0, description="torch intra-op threads where the model runs; 0: the process's cores "
                         "divided by the model copies on its machine (all of them for a shared model)")
    forward_rows: int = Field(0, ge=0, description="images per image-tower forward pass (every pass has this shape, "
                              "so a score does not depend on its batch); 0: 8 on CPU, max_batch_size on a GPU")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field("auto", description="auto = bf16 on CUDA, fp32 on CPU")
    thumbnail_side: int = Field(
        336, ge=16, description="shorter side of the JPEG copy CLIP scores (>= the model's input size; 336 fits ViT-L-14-336)"
    )
    min_batch_size: int = Field(8, ge=1)
    max_batch_size: int = Field(64, ge=1)


class ClipLangModel(Section):
    """The CLIP model that scores the captions of one language (`clip.by_lang`)."""

    model: str = Field(..., min_length=1, description="open_clip architecture name, e.g. xlm-roberta-base-ViT-B-32")
    pretrained: str = Field(..., min_length=1, description="open_clip pretrained tag, a local checkpoint path, or "
                            "`none` for random weights")
    threshold: Optional[float] = Field(
        None, ge=-1.0, le=1.0, description="keep pairs with cosine similarity >= this; a threshold means something "
        "for one model only, so give this model's (unset: clip.threshold)")

    @property
    def label(self) -> str:
        return f"{self.model}/{self.pretrained}"


_LANG_CODE = re.compile(r"^(?:[a-z]{2,3}|und)$")


class CaptionClipConfig(ClipConfig):
    """The caption DAG's CLIP: the default model (`clip.model`, `clip.pretrained`, `clip.threshold`) and,
    per caption language (the `lang` column, operators/lang.py), another model with its own threshold."""

    by_lang: dict[str, ClipLangModel] = Field(
        default_factory=dict, description="caption language (ISO 639-1, as the `lang` column) -> the model that "
        "scores that language's captions, e.g. {zh: {model: xlm-roberta-base-ViT-B-32, pretrained: "
        "laion5b_s13b_b90k, threshold: 0.2}}; languages without an entry use the default model. Device, "
        "precision, batching and sharing are the default's")

    @field_validator("by_lang")
    @classmethod
    def _lang_codes(cls, v: dict[str, ClipLangModel]) -> dict[str, ClipLangModel]:
        bad = [k for k in v if not _LANG_CODE.match(k)]
        if bad:
            raise ValueError(f"language keys must be lowercase ISO 639-1 codes as the lang column holds (e.g. zh, "
                             f"en) or und, got {', '.join(map(repr, bad))}")
        return v

    def lang_config(self, lang: str) -> ClipConfig:
        """The plain ClipConfig that scores captions in `lang`: the default's, with the entry's model,
        pretrained and threshold where `by_lang` has one."""
        base = ClipConfig.model_validate(self.model_dump(exclude={"by_lang"}))
        entry = self.by_lang.get(lang)
        if entry is None:
            return base
        threshold = self.threshold if entry.threshold is None else entry.threshold
        return base.model_copy(update={"model": entry.model, "pretrained": entry.pretrained, "threshold": threshold})

    def routes(self) -> tuple[list[ClipConfig], dict[str, int]]:
        """The distinct models to load (index 0: the default) and, per language of `by_lang`, the index of its
        model. A model named twice (two languages, or a language and the default) is loaded once, so it must
        have one threshold."""
        models = [self.lang_config("")]
        index: dict[str, int] = {}
        for lang in sorted(self.by_lang):
            c = self.lang_config(lang)
            for i, m in enumerate(models):
                if (m.model, m.pretrained.strip()) == (c.model, c.pretrained.strip()):
                    if m.threshold != c.threshold:
                        raise ValueError(f"clip.by_lang.{lang}: {c.model}/{c.pretrained} is also used with "
                                         f"threshold {m.threshold:g}; one model has one threshold")
                    index[lang] = i
                    break
            else:
                index[lang] = len(models)
                models.append(c)
        return models, index

    @model_validator(mode="after")
    def _one_threshold_per_model(self) -> "CaptionClipConfig":
        self.routes()
        return self


class BalanceConfig(Section):
    enabled: bool = True
    vocabulary: Optional[str] = Field(
        None, json_schema_extra=SIDE_FILE, description="text file, one entry per line, or MetaCLIP's metadata.json; default: the small vocabulary shipped with quarry"
    )
    t: int = Field(20_000, ge=1, description="MetaCLIP cap: an entry matched by more than t pairs samples each with t/count")
    fold_case: bool = Field(False, description="match case-insensitively (MetaCLIP matches case-sensitively)")
    keep_unmatched: bool = Field(False, description="keep pairs that match no entry instead of rejecting `no_concept_match`")
    tier_counts: Optional[list[float]] = Field(
        None, description="minimum rarest-concept counts for very_easy, easy, medium, hard (4 descending numbers); "
                          "default t, t/10, t/100, t/1000"
    )

    @field_validator("tier_counts")
    @classmethod
    def _four_descending(cls, v: Optional[list[float]]) -> Optional[list[float]]:
        if v is not None and (len(v) != 4 or v != sorted(v, reverse=True)):
            raise ValueError("give 4 descending counts (very_easy, easy, medium, hard)")
        return v


class RecaptionConfig(Section):
    """GLM-4.5V §3.1 step 4: kept pairs recaptioned by a model served over the OpenAI-compatible chat API
    (vLLM, SGLang), the recaption checked against the original, and a seeded share trained on the recaption."""

    enabled: bool = Field(False, description="off by default: it needs a served captioning model")
    base_url: str = Field("http://localhost:8000/v1", description="server root, its /v1, or the full "
                          "/v1/chat/completions URL")
    model: str = Field("", description="the served model's name (required when enabled), e.g. what vLLM's "
                       "--served-model-name says")
    api_key_env: Optional[str] = Field(None, description="environment variable holding the API key (the key itself "
                                       "is never in the config); unset: no Authorization header")
    prompt: Optional[str] = Field(
        None, json_schema_extra=SIDE_FILE, description="prompt file with {caption} (and optionally {language}); "
        "default: operators/data/recaption_prompt.txt")
    max_concurrency: int = Field(32, ge=1, le=4096, description="requests in flight per worker process")
    timeout_s: float = Field(60.0, gt=0, description="wall time of one attempt (connect, send, wait, read)")
    run_timeout_s: Optional[float] = Field(
        None, gt=0, description="wall time a worker spends on recaption from its first request; what is unanswered "
        "then is `run_timeout` (per worker, i.e. per DoFn instance: a runner has no run-wide clock)")
    max_retries: int = Field(3, ge=0, le=20, description="retries of 408, 429, 5xx, timeouts and connection errors")
    backoff_s: float = Field(1.0, ge=0, description="first backoff; doubled per retry, full jitter")
    max_backoff_s: float = Field(30.0, ge=0, description="cap on one backoff sleep, a 429's Retry-After included")
    max_response_bytes: int = Field(1_000_000, ge=1_000, description="a larger response body is `response_too_large`")
    temperature: float = Field(0.0, ge=0, description="0: the same recaption on a rerun (with `seed`)")
    max_tokens: int = Field(512, ge=16, description="a reply cut at this many tokens is `truncated`")
    seed: int = Field(0, description="sent as the request's `seed` (vLLM and SGLang honour it) and seeds "
                      "the merge choice")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="merged into each request body")
    image_side: int = Field(448, ge=32, description="shorter side of the JPEG sent to the model (the decode step "
                            "makes one copy for CLIP and recaption: the larger of this and clip.thumbnail_side)")
    merge_ratio: float = Field(
        0.5, ge=0.0, le=1.0, description="share of rows whose training caption (`train_caption`) is the recaption, "
        "chosen by a hash of the sample id and `seed` (GLM-4.5V names no ratio)")
    on_failure: Literal["reject", "keep_original"] = Field(
        "reject", description="reject: a pair whose recaption fails a check or a request is a `recaption` reject; "
        "keep_original: it is kept with its original caption and the reason in `recaption_status`")
    lang: Optional[str] = Field(None, description="the recaption's required language (ISO 639-1); unset: the "
                                "original caption's (operators/lang.py)")
    min_words: int = Field(8, ge=0, description="fewer is `too_short` (each CJK character counts as a word, as in "
                           "heuristics)")
    max_words: int = Field(400, ge=1, description="more is `too_long`")
    check_entities: bool = Field(True, description="named entities and quoted text of the original must be kept "
                                "(Chinese names: jieba's POS tags, operators/recaption.py)")
    check_numbers: bool = Field(True, description="numbers of the original must be kept")
    ocr_check: bool = Field(
        False, description="OCR the image (rapidocr, PP-OCR models shipped in its wheel; quarry[ocr]) and reject a "
        "recaption whose quoted text the image does not show (`ocr_contradiction`); off: the check is skipped")
    preflight: bool = Field(True, description="before the run, GET <base>/v1/models: an unreachable endpoint or an "
                            "unserved model stops the run with one line")

    @model_validator(mode="after")
    def _model_when_enabled(self) -> "RecaptionConfig":
        if self.enabled and not self.model.strip():
            raise ValueError("recaption.enabled needs recaption.model (the served model's name)")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) > max_words ({self.max_words})")
        return self


class CaptionConfig(DagConfig):
    decode: DecodeConfig = DecodeConfig()
    heuristics: HeuristicsConfig = HeuristicsConfig()
    dedup: DedupConfig = DedupConfig()
    clip: CaptionClipConfig = CaptionClipConfig()
    balance: BalanceConfig = BalanceConfig()
    recaption: RecaptionConfig = RecaptionConfig()


class CaptionRow(Sample):
    """One kept image-caption pair."""

    caption: str
    image: ImageCell
    width: Annotated[int, ArrowType(pa.int32())]
    height: Annotated[int, ArrowType(pa.int32())]
    image_format: str
    phash: str = Field(description="64-bit pHash as 16 hex digits")
    clip_score: Annotated[Optional[float], ArrowType(pa.float32())] = None
    clip_model: Optional[str] = Field(None, description="`model/pretrained` of the CLIP model that scored the row "
                                      "(clip.by_lang picks it by `lang`); None when the clip stage is off")
    concepts: list[str] = Field(default_factory=list, description="vocabulary entries the caption matched")
    rarest_concept_count: Optional[int] = Field(None, description="dataset-wide match count of the rarest matched entry")
    lang: str = Field("und", description="the caption's language, ISO 639-1 (operators/lang.py: py3langid, CJK by script); "
                      "'und' for a caption without letters")
    recaption: Optional[str] = Field(None, description="the model's recaption (recaption stage; None when off or failed)")
    recaption_status: str = Field("off", description="`ok`, `off` (stage disabled), or the reason the recaption "
                                  "was not used (recaption.on_failure=keep_original)")
    caption_source: Literal["original", "recaption"] = Field(
        "original", description="which caption `train_caption` is (recaption.merge_ratio, seeded by sample id)")
    train_caption: Optional[str] = Field(None, description="the caption to train on: `caption` or `recaption`")
