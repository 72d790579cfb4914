"""The caption recipe (GLM-4.5V §3.1) wired as Beam steps.

    ImageText -> Decode+Heuristics+PHash -> NearDuplicates -> CLIP -> Balance -> CaptionRow

Decode, heuristics and pHash run fused in one step so a decoded image never
crosses a process boundary; later steps carry the original bytes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import apache_beam as beam

from quarry.operators.base import Rejection
from quarry.operators.decode import decode_image
from quarry.operators.heuristics import HeuristicFilter
from quarry.operators.phash import phash64, to_hex
from quarry.pipelines.balance import BalanceConcepts
from quarry.pipelines.clip import ScoreClip
from quarry.pipelines.dedup import DedupKey, SplitDuplicates
from quarry.pipelines.stats import CountTo, Progress
from quarry.schemas.caption import CaptionConfig, CaptionRow
from quarry.schemas.common import ImageCell, ImageText, Reject


class Outputs(NamedTuple):
    kept: Any  # PCollection[CaptionRow]
    rejected: Any  # PCollection[Reject]


@dataclass
class Candidate:
    """A sample that passed decode and heuristics, with what later stages need."""

    sample: ImageText
    width: int
    height: int
    image_format: str
    phash: int
    clip_score: Optional[float] = None

    @property
    def sample_id(self) -> str:
        return self.sample.sample_id

    @property
    def caption(self) -> str:
        return self.sample.caption


def to_reject(sample: ImageText, stage: str, verdict: Rejection) -> Reject:
    return Reject(sample_id=sample.sample_id, source=sample.source, stage=stage, reason=verdict.reason,
                  detail=verdict.detail, origin=sample.origin)


def dedup_key(c: Candidate) -> DedupKey:
    return DedupKey(c.sample_id, c.phash, c.width, c.height)


def _origin_order(c: Candidate) -> tuple[str, str]:
    return (c.sample.origin.file, c.sample.origin.key)


class _DecodeAndFilter(beam.DoFn):
    REJECTED = "rejected"

    def __init__(self, cfg: CaptionConfig):
        self.cfg = cfg

    def setup(self):
        self.filter = HeuristicFilter(self.cfg.heuristics)

    def process(self, sample: ImageText):
        decoded = decode_image(sample.image_bytes, self.cfg.decode)
        if isinstance(decoded, Rejection):
            yield beam.pvalue.TaggedOutput(self.REJECTED, to_reject(sample, "decode", decoded))
            return
        verdict = self.filter.check(decoded, sample.caption)
        if verdict is not None:
            yield beam.pvalue.TaggedOutput(self.REJECTED, to_reject(sample, "heuristics", verdict))
            return
        yield Candidate(sample, decoded.width, decoded.height, decoded.format, phash64(decoded.image))


def _clip_decide(element, threshold: float, label: str):
    from quarry.operators.clip import decide

    candidate, score = element
    candidate.clip_score = float(score)
    verdict = decide(candidate.clip_score, threshold, label)
    if verdict is None:
        yield candidate
    else:
        yield beam.pvalue.TaggedOutput("rejected", to_reject(candidate.sample, "clip", verdict))


def to_row(c: Candidate, concepts: list[str], rarest: Optional[int], tier: str) -> CaptionRow:
    s = c.sample
    return CaptionRow(
        sample_id=s.sample_id, source=s.source, tier=tier, task="caption", origin=s.origin, url=s.url,
        license=s.license, caption=s.caption, image=ImageCell(bytes=s.image_bytes), width=c.width,
        height=c.height, image_format=c.image_format, phash=to_hex(c.phash), clip_score=c.clip_score,
        concepts=concepts, rarest_concept_count=rarest,
    )


class CaptionPipeline(beam.PTransform):
    """PCollection[ImageText] -> Outputs(kept=CaptionRow, rejected=Reject).

    `output_dir` receives per-stage counts (`_stats/`) for the manifest.
    """

    def __init__(self, cfg: CaptionConfig, vocabulary: list[str], output_dir: Optional[str] = None):
        super().__init__()
        self.cfg = cfg
        self.vocabulary = vocabulary
        self.output_dir = output_dir

    def _count(self, pcoll, name: str) -> None:
        if self.output_dir is not None:
            pcoll | f"Count[{name}]" >> CountTo(self.output_dir, name)

    def expand(self, samples):
        cfg = self.cfg
        rejected = []

        filtered = (
            samples
            | "ProgressDecode" >> Progress("decode")
            | "DecodeAndFilter" >> beam.ParDo(_DecodeAndFilter(cfg)).with_outputs(_DecodeAndFilter.REJECTED,
                                                                                 main="kept")
        )
        rejected.append(filtered[_DecodeAndFilter.REJECTED])
        candidates = filtered.kept
        self._count(samples, "decode.in")
        self._count(candidates, "decode.out")

        if cfg.dedup.enabled:
            dedup = candidates | "Dedup" >> SplitDuplicates(cfg.dedup.max_hamming, dedup_key, order_key=_origin_order)
            rejected.append(dedup.rejected | "DedupRejects" >> beam.MapTuple(
                lambda c, verdict: to_reject(c.sample, "dedup", verdict)))
            candidates = dedup.kept
            self._count(candidates, "dedup.out")

        if cfg.clip.enabled:
            label = f"{cfg.clip.model}/{cfg.clip.pretrained}"
            scored = (
                candidates
                | "ProgressClip" >> Progress("clip")
                | "ClipInputs" >> beam.Map(lambda c: (c, (c.sample.image_bytes, c.sample.caption)))
                | "ClipScore" >> ScoreClip(cfg.clip)
                | "ClipDecide" >> beam.FlatMap(_clip_decide, cfg.clip.threshold, label).with_outputs(
                    "rejected", main="kept")
            )
            rejected.append(scored.rejected)
            candidates = scored.kept
            self._count(candidates, "clip.out")

        balanced = candidates | "Balance" >> BalanceConcepts(cfg.balance, self.vocabulary)
        rejected.append(balanced.rejected | "BalanceRejects" >> beam.MapTuple(
            lambda c, verdict: to_reject(c.sample, "balance", verdict)))
        rows = (
            balanced.kept
            | "ToRows" >> beam.MapTuple(to_row)
            | "ProgressWrite" >> Progress("kept")
        )
        all_rejected = rejected | "AllRejects" >> beam.Flatten()
        return Outputs(rows, all_rejected)
