"""`quarry run grade --input SAMPLES --output DIR --set rollouts=PATH_OR_GLOB`: offline RL difficulty tiers.

SAMPLES is a run directory of an RL-producing DAG (`--input OUT/gui`: its
`data/` shards, its `images/` joined by `image_id`) or Parquet/JSONL rows with
the RL contract of `schemas/rl.py` (task, question, answer, answer_aliases,
verifier, image or image_id).

GLM-4.5V §5: pass@k of several models, merged with offline human labels, into
five tiers; sampling then down-weights the too-easy and too-hard tiers.

Tier rule: every rollout is scored by the rule the row's `verifier` names,
with its parameters, else its task's default (`operators/grade/contract.py`,
`operators/grade/verify.py`; `--set verifiers.TASK=KIND` overrides both); correct
when reward >= grade.correct_at (0.999: OCR and grounding rewards are partial,
so a near-miss is not correct). Per model: unbiased pass@k (k = grade.k,
default 1 = mean pass rate; capped at the model's rollout count). Per sample:
the mean over models. pass rate >= 1.0 very_easy, >= 0.75 easy, >= 0.25
medium, > 0 hard, else very_hard (grade.tiers.*). A `label_tier` column
(an offline human label) overrides the computed tier; both are kept
(`pass_tier`, `label_tier`).

Accounting: each sample row is one input: a row, or a reject (`read`:
also invalid_verifier / empty_answer, `join`: duplicate_sample_id (the first
row in input order wins) / missing_image, `grade`: no_rollouts / no_verifier). Rollouts
are not inputs: rollouts of unknown sample ids and unreadable rollout rows
are counted (manifest stages `rollouts_read` and `rollouts_join`: inputs -
outputs = dropped), not rejected one by one. A sample's `image` column is
carried to its row; every row's `origin` points back to its input row.

Optional steps, each off unless configured:

- multiple choice -> fill in the blank (grade.mc_to_fill_in, default true):
  a sample with an `options` column (a list, or a JSON list as text) is
  graded as the fill-in question and answer of `operators/grade/mc.py`; the
  original question/options/answer are kept (`original_*` columns); an item
  that cannot stand without its options is rejected at stage `mc`
  (mc_not_convertible).
- model judge (`judge` section: base_url, model, api_key_env, timeout_s,
  max_concurrency, prompt_path ...): tasks mapped to the `judge` kind
  (`--set verifiers.open_qa=judge`) are scored by the judge; with
  grade.judge_fallback=true, exact/numeric mismatches are asked of the judge
  ("exact match, falling back to a model judge"). Judge calls are counted in
  stage `judge` (inputs - outputs = judge errors, scored 0).
- rollout generation (`generate` section: base_url, model, k, use_n,
  batch_size ...): with no rollout files, k rollouts per sample are generated
  in a Beam step; failed requests are null responses scored 0 (stage
  `rollouts_generate`: inputs - outputs = failures).

Summary: tier counts per source and task plus suggested sampling weights
(grade.weights) are written by a Beam combine to `DIR/_stats/grade_summary.json`;
the manifest's `extra` holds the weights, and, where the runner calls
`DagSpec.finish` after the run, the whole summary.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from quarry.dags.runner import BuildInfo, DagSpec, FamilyOutputs, RunCounts, Stage, with_reasons
from quarry.operators.grade import contract
from quarry.operators.grade.judge import judge_verifier_from
from quarry.operators.inputs import reasons as read_reasons
from quarry.pipelines.grade import (
    ROLLOUT_COLUMNS,
    SAMPLE_COLUMNS,
    STAGE_REASONS,
    SUMMARY_FILE,
    GenerateRollouts,
    GradePipeline,
    JoinImages,
    MultipleChoiceToFillIn,
    ReadRollouts,
    ReadSamples,
    decontam_probe,
    read_summary,
    run_sizes,
)
from quarry.pipelines.read import plan_tables
from quarry.pipelines.stats import CountTo
from quarry.schemas.config import ConfigError
from quarry.schemas.grade import GradeConfig, GradeRow


@dataclasses.dataclass(frozen=True)
class GradePlan:
    samples: list
    rollouts: list
    images: list = dataclasses.field(default_factory=list)  # the `DIR/images` tables of run directories


def expand_runs(patterns: list[str]) -> tuple[list[str], list[str]]:
    """(sample patterns, image-table patterns): a quarry run directory (it has `manifest.json`) stands for its
    `data/` shards, and its `images/` table is joined to rows that carry an `image_id`."""
    samples, images = [], []
    for p in patterns:
        if FileSystems.exists(FileSystems.join(p, "manifest.json")):
            samples.append(FileSystems.join(p, "data"))
            if FileSystems.exists(FileSystems.join(p, "images")):
                images.append(FileSystems.join(p, "images"))
        else:
            samples.append(p)
    return samples, images


def plan(patterns: list[str], cfg: GradeConfig) -> GradePlan:
    if not cfg.rollout_patterns() and cfg.generate is None:
        raise ConfigError("grade needs rollouts: --set rollouts=PATH_OR_GLOB (Parquet or JSONL with "
                          "sample_id, model, response), or a generate section (generate.base_url, generate.model)")
    judged = sorted(cfg.judge_tasks())
    if judged and cfg.judge is None:
        raise ConfigError(f"verifiers.{judged[0]}=judge needs a judge section: --set judge.base_url=URL "
                          "--set judge.model=NAME")
    if cfg.grade.judge_fallback and cfg.judge is None:
        raise ConfigError("grade.judge_fallback needs a judge section: --set judge.base_url=URL --set judge.model=NAME")
    if cfg.judge is not None:
        try:
            judge_verifier_from(cfg.judge.verifier_mapping())
        except (ValueError, OSError) as e:
            raise ConfigError(f"judge: {e}") from None
    sample_patterns, image_patterns = expand_runs(patterns)
    samples = plan_tables(sample_patterns, SAMPLE_COLUMNS, "samples")
    rollouts = plan_tables(cfg.rollout_patterns(), ROLLOUT_COLUMNS, "rollouts") if cfg.rollout_patterns() else []
    images = plan_tables(image_patterns, ("image_id", "image"), "images") if image_patterns else []
    return GradePlan(samples, rollouts, images)


def read(pipeline, cfg: GradeConfig, plan: GradePlan):
    return pipeline | ReadSamples(plan.samples, cfg.source or "unknown")


def transform(samples, cfg: GradeConfig, plan: GradePlan, output: str) -> FamilyOutputs:
    rejects, images = [], None
    if plan.images:  # rows of quarry runs: the image each row's image_id names
        samples, images, image_rejects = samples | "Images" >> JoinImages(
            plan.images, attach=not plan.rollouts or cfg.decontam.enabled)
        rejects.append(image_rejects)
    if cfg.decontam.enabled:  # --set decontam.bench=PATH: before fill-in conversion rewrites the question
        from quarry.pipelines.decontam import MaybeDecontaminate

        samples, dc_rejects = samples | "Decontam" >> MaybeDecontaminate(
            cfg.decontam, output, decontam_probe, dag="grade", flag_fn=lambda s, _matches: s, shards=cfg.shards)
        rejects.append(dc_rejects)
    if cfg.grade.mc_to_fill_in:
        samples, mc_rejects = samples | "MultipleChoice" >> MultipleChoiceToFillIn()
        rejects.append(mc_rejects)
    if not plan.rollouts:
        rollouts = samples | "GenerateRollouts" >> GenerateRollouts(cfg.generate, output)
    else:
        rollouts, invalid = samples.pipeline | "ReadRollouts" >> ReadRollouts(plan.rollouts)
        sizes = run_sizes(rollouts, "RolloutsPerRun")
        ((sizes, invalid) | "AllRolloutRows" >> beam.Flatten()
         | "CountRolloutRows" >> CountTo(output, "rollouts_read.in", sum_values=True))
        sizes | "CountRolloutsRead" >> CountTo(output, "rollouts_read.out", sum_values=True)
    graded = (samples, rollouts) | "Grade" >> GradePipeline(cfg, output)
    rejects.append(graded.rejected)
    return FamilyOutputs(graded.rows, tuple(rejects) | "GradeRejects" >> beam.Flatten(), images)


def describe(cfg: GradeConfig, plan: GradePlan) -> BuildInfo:
    g = cfg.grade
    info = BuildInfo(extra={
        "correct_at": g.correct_at,
        "k": g.k,
        "tier_bounds": g.tiers.model_dump(),
        "sampling_weights": g.weights.model_dump(),
        "summary_file": f"_stats/{SUMMARY_FILE}",
        "rollout_files": len(plan.rollouts),
        "mc_to_fill_in": g.mc_to_fill_in,
        "judge_tasks": sorted(cfg.judge_tasks()),
        "judge_fallback": g.judge_fallback,
    })
    if cfg.judge is not None:
        info.extra["judge_model"] = cfg.judge.model
    if not plan.rollouts:
        info.extra["generated"] = {"model": cfg.generate.model, "k": cfg.generate.k}
        info.notes.append(f"rollouts generated by {cfg.generate.model} (k={cfg.generate.k}); failed requests "
                          "are null responses scored 0, counted in stages.rollouts_generate (inputs - outputs)")
    elif cfg.generate is not None:
        info.notes.append("rollout files given: the generate section is ignored")
    info.notes.append(
        "rollouts are not inputs: rollouts naming an unknown sample_id are counted in "
        "stages.rollouts_join (inputs - outputs) and unreadable rollout rows in stages.rollouts_read; "
        f"tier counts per source and task are in _stats/{SUMMARY_FILE}")
    return info


def finish(output: str, cfg: GradeConfig, info: BuildInfo, run: RunCounts) -> None:
    """After the run: put the Beam-computed summary (tier counts, unknown rollouts) into the manifest's extra."""
    summary = read_summary(output)
    if summary is None:
        return
    info.extra["tier_counts"] = summary["tier_counts"]
    info.extra["weighted_share"] = summary["weighted_share"]
    info.extra["unknown_rollouts"] = summary["unknown_rollouts"]
    if summary["unknown_rollouts"]:
        info.notes.append(f"{summary['unknown_rollouts']} rollouts named a sample_id no sample has (ignored)")


# What this DAG's reader can reject a record for (operators/inputs/reasons.py).
READ_REASONS = (read_reasons.UNREADABLE_FILE, read_reasons.FILE_TOO_LARGE, read_reasons.INVALID_JSON,
                read_reasons.RECORD_TOO_LARGE, read_reasons.MISSING_FIELD, read_reasons.MISSING_IMAGE, read_reasons.INVALID_LABEL_TIER,
                *contract.REASONS)


SPEC = DagSpec(
    name="grade",
    summary="RL difficulty tiers: verifier-scored rollouts -> pass@k per model -> five tiers, human labels win",
    stages=with_reasons((
        Stage("read", "samples (a quarry run directory, or Parquet/JSONL with the RL contract of schemas/rl.py: "
                      "sample_id, task, question, answer[, answer_aliases, verifier, image_id, source, label_tier, "
                      "options]) and rollouts (files, or generated with the generate section)",
              where="operators/inputs/tables.py, operators/grade/contract.py, pipelines/grade.py"),
        Stage("decontam", "optional (--set decontam.bench=PATH): question, answer, options and image against "
                          "benchmark sets", where="pipelines/decontam.py"),
        Stage("mc", "multiple choice -> fill in the blank (grade.mc_to_fill_in); unconvertible items rejected", where="operators/grade/mc.py"),
        Stage("join", "a run's images joined by image_id (missing ones rejected); CoGroupByKey on sample_id: the "
                      "first row in input order wins, later duplicates rejected, unknown rollout ids counted",
              where="pipelines/grade.py"),
        Stage("grade", "verifier (or model judge) reward per rollout, correct >= grade.correct_at, pass@k per model, "
                       "mean, tier", where="operators/grade/verify.py, operators/grade/tiers.py"),
        Stage("write", "Parquet shards by source and tier; tier counts + sampling weights in _stats/grade_summary.json", where="pipelines/write.py"),
    ), {**STAGE_REASONS, "read": READ_REASONS}),
    config_model=GradeConfig,
    plan=plan,
    read=read,
    transform=transform,
    describe=describe,
    row_model=GradeRow,
    unsourced="samples without a `source` column",
    finish=finish,
)
