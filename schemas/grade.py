"""The grade DAG: its config sections and its output row.

Defaults (GLM-4.5V §5 gives the method, not the numbers; these are quarry's):
a rollout is correct when its reward >= 0.999 (exact and numeric verifiers
give 0 or 1; OCR and grounding give partial rewards, and a near-perfect OCR
transcription still counts as wrong); pass@1; tier boundaries 1.0 / 0.75 /
0.25 / > 0; sampling weights that down-weight the extremes.
"""

from __future__ import annotations

from typing import Annotated, Optional, Union

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from quarry.schemas.arrow import ArrowType
from quarry.schemas.common import ImageCell, Row, Sample, Tier
from quarry.schemas.config import SIDE_FILE, DagConfig, Section
from quarry.schemas.rl import VERIFIER_NAMES, RlTask, VerifierSpec

JUDGE_KIND = "judge"


class TierBounds(Section):
    very_easy_at: float = Field(1.0, ge=0.0, le=1.0, description="pass rate >= this is very_easy")
    easy_at: float = Field(0.75, ge=0.0, le=1.0, description="pass rate >= this is easy")
    medium_at: float = Field(0.25, ge=0.0, le=1.0, description="pass rate >= this is medium")
    hard_above: float = Field(0.0, ge=0.0, le=1.0, description="pass rate > this is hard; the rest is very_hard")

    @model_validator(mode="after")
    def _descending(self) -> "TierBounds":
        if not (self.very_easy_at >= self.easy_at >= self.medium_at >= self.hard_above):
            raise ValueError("need very_easy_at >= easy_at >= medium_at >= hard_above")
        return self


class SamplingWeights(Section):
    """Suggested sampling weight per tier (the paper down-weights too easy and too hard)."""

    very_easy: float = Field(0.2, ge=0.0)
    easy: float = Field(0.6, ge=0.0)
    medium: float = Field(1.0, ge=0.0)
    hard: float = Field(1.0, ge=0.0)
    very_hard: float = Field(0.3, ge=0.0)


class GradeSection(Section):
    correct_at: float = Field(
        0.999, ge=0.0, le=1.0,
        description="a rollout is correct when its reward >= this (OCR/grounding rewards are partial)")
    k: int = Field(1, ge=1, description="pass@k (unbiased estimator); k > n rollouts of a model is scored at pass@n")
    tiers: TierBounds = TierBounds()
    mc_to_fill_in: bool = Field(
        True, description="samples with `options` become fill-in-the-blank before scoring (GLM-4.5V §5)")
    judge_fallback: bool = Field(
        False, description="exact-match failures (reason mismatch) are asked again of the model judge (needs judge)")
    weights: SamplingWeights = SamplingWeights()


class ClientSection(Section):
    """An OpenAI-compatible chat endpoint (`quarry.operators.chat_client.ChatClientConfig` fields)."""

    base_url: str = Field(min_length=1, description="http://host:8000/v1 or the full chat-completions URL")
    model: str = Field(min_length=1, description="the served model name")
    api_key_env: Optional[str] = Field("OPENAI_API_KEY", description="env var holding the API key (none: no key)")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    max_backoff_s: float = Field(30.0, ge=0)
    max_concurrency: int = Field(8, ge=1, description="requests in flight at once, per worker")
    temperature: float = Field(0.0, ge=0)
    max_tokens: Optional[int] = Field(2048, ge=1)

    def client_fields(self) -> dict:
        return self.model_dump(include=set(ClientSection.model_fields))


class JudgeSection(ClientSection):
    """The model judge (`quarry.operators.grade.judge`); off unless this section is set."""

    prompt_path: Optional[str] = Field(None, json_schema_extra=SIDE_FILE, description="judge prompt template (default: the shipped one)")

    def verifier_mapping(self) -> dict:
        """The dict `judge_verifier_from` takes."""
        return {**self.client_fields(), "prompt_path": self.prompt_path}


class GenerateSection(ClientSection):
    """Rollout generation (`quarry.operators.grade.rollouts`) when no rollout files are given; off unless set."""

    k: int = Field(4, ge=1, description="rollouts per sample")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of the rollouts")
    use_n: bool = Field(True, description="one request with n=k (vLLM, SGLang); false: k requests of n=1")
    batch_size: int = Field(32, ge=1, description="samples per batch sent to the endpoint (max)")


class GradeConfig(DagConfig):
    rollouts: Optional[Union[str, list[str]]] = Field(
        None, json_schema_extra=SIDE_FILE, description="rollout files (Parquet or JSONL with sample_id, model, response): a path, glob or list")
    verifiers: dict[str, Union[str, VerifierSpec]] = Field(
        default_factory=dict,
        description="task -> a verifier kind (exact, numeric, ocr, grounding, action, svg_render, judge) or a rule "
                    "with parameters ({kind: numeric, rel_tol: 0.02}), replacing the rows' own verifier and the "
                    "task's default; judge needs the judge section")
    grade: GradeSection = GradeSection()
    judge: Optional[JudgeSection] = Field(None, description="model judge endpoint; unset = no judge")
    generate: Optional[GenerateSection] = Field(
        None, description="rollout endpoint: generate grade k rollouts per sample when no rollouts are given")

    @field_validator("rollouts")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not all(isinstance(p, str) and p for p in v):
            raise ValueError("rollouts must be paths or globs")
        return v

    @field_validator("verifiers")
    @classmethod
    def _known_kinds(cls, v: dict) -> dict:
        for task, kind in v.items():
            if isinstance(kind, str) and kind != JUDGE_KIND and kind not in VERIFIER_NAMES:
                raise ValueError(f"unknown verifier kind {kind!r} for task {task!r} (known: "
                                 f"{', '.join(VERIFIER_NAMES + (JUDGE_KIND,))})")
        return v

    def judge_tasks(self) -> set[str]:
        return {task for task, kind in self.verifiers.items() if kind == JUDGE_KIND}

    def rule_verifiers(self) -> dict[str, VerifierSpec]:
        """`verifiers` without the judge entries, each as a spec (a bare kind: the rule's default parameters)."""
        return {task: kind if isinstance(kind, VerifierSpec) else VerifierSpec(kind=kind)
                for task, kind in self.verifiers.items() if kind != JUDGE_KIND}

    def rollout_patterns(self) -> list[str]:
        if self.rollouts is None:
            return []
        return [self.rollouts] if isinstance(self.rollouts, str) else list(self.rollouts)


class ModelPass(Row):
    """One model's rollouts on one sample."""

    model: str
    n: Annotated[int, ArrowType(pa.int32())]
    correct: Annotated[int, ArrowType(pa.int32())]
    pass_rate: float


class GradeRow(RlTask, Sample):
    """One graded RL sample (the RL contract of `schemas/rl.py`). `tier` is `label_tier` when given, else
    `pass_tier`; `verifier` is the rule that judged it (null: the model judge)."""

    pass_rate: float = Field(description="mean over models of pass@k")
    mean_reward: float = Field(description="mean verifier reward over all rollouts")
    n_rollouts: Annotated[int, ArrowType(pa.int32())]
    n_correct: Annotated[int, ArrowType(pa.int32())]
    models: list[ModelPass] = Field(default_factory=list)
    pass_tier: Tier = Field(description="the tier the pass rate gives")
    label_tier: Optional[Tier] = Field(None, description="offline human label; overrides pass_tier")
    original_question: Optional[str] = Field(None, description="multiple-choice question before fill-in conversion")
    original_options: Optional[list[str]] = Field(None, description="its options")
    original_answer: Optional[str] = Field(None, description="its answer (letter, index or option text)")
    image: Optional[ImageCell] = Field(None, description="the sample's image, carried from the input's `image` column")
    image_id: Optional[str] = Field(None, description="the sample's image in DIR/images (rows of a quarry run)")
    image_ids: Optional[list[str]] = Field(None, description="a question over several pictures: all of them in "
                                                             "order (image_ids[0] = image_id), each in DIR/images")
