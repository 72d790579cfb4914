"""`quarry run grade --input SAMPLES --output DIR --set rollouts=PATH_OR_GLOB`: offline RL difficulty tiers.

GLM-4.5V §5: pass@k of several models, merged with offline human labels, into
five tiers; sampling then down-weights the too-easy and too-hard tiers.

Tier rule: every rollout is scored by the verifier of its sample's task
(`operators/verify.py`, `--set verifiers.TASK=KIND` to override); correct
when reward >= grade.correct_at (0.999: OCR and grounding rewards are partial,
so a near-miss is not correct). Per model: unbiased pass@k (k = grade.k,
default 1 = mean pass rate; capped at the model's rollout count). Per sample:
the mean over models. pass rate >= 1.0 very_easy, >= 0.75 easy, >= 0.25
medium, > 0 hard, else very_hard (grade.tiers.*). A `label_tier` column
(an offline human label) overrides the computed tier; both are kept
(`pass_tier`, `label_tier`).

Accounting: each sample row is one input: a row, or a reject (`read`,
`join`: duplicate_sample_id, `grade`: no_rollouts / no_verifier). Rollouts
are not inputs: rollouts of unknown sample ids and unreadable rollout rows
are counted (manifest stages `rollouts_read` and `rollouts_join`: inputs -
outputs = dropped), not rejected one by one. Sample images are not carried
(the output points back to the input by `origin`).

Summary: tier counts per source and task plus suggested sampling weights
(grade.weights) are written by a Beam combine to `DIR/_stats/grade_summary.json`;
the manifest's `extra` holds the weights, and, where the runner calls
`DagSpec.finish` after the run, the whole summary.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from quarry.dags.runner import BuildInfo, DagSpec
from quarry.operators.verify import verifier_for
from quarry.pipelines.grade import (
    ROLLOUT_COLUMNS,
    SAMPLE_COLUMNS,
    SUMMARY_FILE,
    GradePipeline,
    ReadRollouts,
    ReadSamples,
    plan_tables,
    read_summary,
)
from quarry.pipelines.stats import CountTo
from quarry.pipelines.write import WriteRejects, WriteShards
from quarry.schemas.config import ConfigError
from quarry.schemas.grade import GradeConfig, GradeRow


@dataclasses.dataclass(frozen=True)
class GradePlan:
    samples: list
    rollouts: list


def plan(patterns: list[str], cfg: GradeConfig) -> GradePlan:
    if not cfg.rollout_patterns():
        raise ConfigError("grade needs rollouts: --set rollouts=PATH_OR_GLOB (Parquet or JSONL with "
                          "sample_id, model, response)")
    for task, kind in cfg.verifiers.items():
        try:
            verifier_for(task, {task: kind})
        except ValueError as e:
            raise ConfigError(f"verifiers.{task}: {e}") from None
    samples = plan_tables(patterns, SAMPLE_COLUMNS, "samples")
    rollouts = plan_tables(cfg.rollout_patterns(), ROLLOUT_COLUMNS, "rollouts")
    return GradePlan(samples, rollouts)


def build(pipeline: beam.Pipeline, cfg: GradeConfig, plan: GradePlan, output: str) -> BuildInfo:
    samples, read_rejects = pipeline | "ReadSamples" >> ReadSamples(plan.samples, cfg.source or "unknown")
    samples | "CountRead" >> CountTo(output, "read")
    rollouts, invalid = pipeline | "ReadRollouts" >> ReadRollouts(plan.rollouts)
    (rollouts, invalid) | "AllRolloutRows" >> beam.Flatten() | "CountRolloutRows" >> CountTo(output, "rollouts_read.in")
    rollouts | "CountRolloutsRead" >> CountTo(output, "rollouts_read.out")
    graded = (samples, rollouts) | "Grade" >> GradePipeline(cfg, output)
    graded.rows | "Write" >> WriteShards(output, "grade", GradeRow, cfg.shards)
    (
        (read_rejects, graded.rejected)
        | "AllRejects" >> beam.Flatten()
        | "WriteRejects" >> WriteRejects(output, cfg.shards)
    )
    g = cfg.grade
    info = BuildInfo(extra={
        "correct_at": g.correct_at,
        "k": g.k,
        "tier_bounds": g.tiers.model_dump(),
        "sampling_weights": g.weights.model_dump(),
        "summary_file": f"_stats/{SUMMARY_FILE}",
        "rollout_files": len(plan.rollouts),
    })
    info.notes.append(
        "rollouts are not inputs: rollouts naming an unknown sample_id are counted in "
        "stages.rollouts_join (inputs - outputs) and unreadable rollout rows in stages.rollouts_read; "
        f"tier counts per source and task are in _stats/{SUMMARY_FILE}")
    if not cfg.source:
        info.notes.append("no --source given: samples without a `source` column are tagged source=unknown")
    return info


def finish(output: str, cfg: GradeConfig, info: BuildInfo) -> None:
    """After the run: put the Beam-computed summary (tier counts, unknown rollouts) into the manifest's extra."""
    summary = read_summary(output)
    if summary is None:
        return
    info.extra["tier_counts"] = summary["tier_counts"]
    info.extra["weighted_share"] = summary["weighted_share"]
    info.extra["unknown_rollouts"] = summary["unknown_rollouts"]
    if summary["unknown_rollouts"]:
        info.notes.append(f"{summary['unknown_rollouts']} rollouts named a sample_id no sample has (ignored)")


SPEC = DagSpec(
    name="grade",
    summary="RL difficulty tiers: verifier-scored rollouts -> pass@k per model -> five tiers, human labels win",
    stages=(
        ("read", "samples (Parquet/JSONL: sample_id, task, question, answer[, source, label_tier]) and rollouts"),
        ("join", "CoGroupByKey on sample_id; duplicate sample ids rejected, unknown rollout ids counted"),
        ("grade", "verifier reward per rollout, correct >= grade.correct_at, pass@k per model, mean, tier"),
        ("write", "Parquet shards by source and tier; tier counts + sampling weights in _stats/grade_summary.json"),
    ),
    config_model=GradeConfig,
    plan=plan,
    build=build,
    finish=finish,
)
