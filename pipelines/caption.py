"""The caption recipe (GLM-4.5V §3.1) wired as Beam steps.

    ImageText -> Decode+Heuristics+PHash -> NearDuplicates -> CLIP -> Balance -> [Recaption]
              -> WriteFromSource (CaptionRow shards)

Image bytes never go through a shuffle. Decode, heuristics and pHash run
fused with reading; what travels on is the sample's metadata and, when CLIP
or recaption is on, a small JPEG of the picture (shorter side: `clip.thumbnail_side`, or
`recaption.image_side` if larger; the one copy both stages use). The kept
samples are grouped by input file (metadata only) and `WriteFromSource`
reads each input file a second time, streaming, to write the rows with their
original bytes: one shard per input file and partition, rows in input order.
Shuffling ids and scores instead of images is what keeps a run's memory and
network flat in the data size (and on the DirectRunner, which holds shuffled
data in memory, what keeps it from growing with the input).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from quarry.operators import clip as clip_ops
from quarry.operators import concepts as concept_ops
from quarry.operators import decode as decode_ops
from quarry.operators import decontam as decontam_ops
from quarry.operators import heuristics as heuristic_ops
from quarry.operators import recaption as recaption_ops
from quarry.operators.base import Rejection
from quarry.operators.clip import clip_thumbnail
from quarry.operators.decode import decode_image
from quarry.operators.heuristics import HeuristicFilter
from quarry.operators.lang import detect_lang
from quarry.operators.phash import phash64, phash64_orientations, to_hex
from quarry.pipelines.balance import BalanceConcepts
from quarry.pipelines.dedup import NEAR_DUPLICATE, DedupKey, SplitDuplicates
from quarry.pipelines.read import InputFile, read_file
from quarry.pipelines.stage import REJECTED, StageOutputs, count, refused, run_stage, to_reject
from quarry.pipelines.stats import Progress
from quarry.pipelines.write import SOURCE_CHANGED, StreamingShard, commit_input, hive_partition, shard_path
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.caption import CaptionConfig, CaptionRow, ClipConfig, DecodeConfig, HeuristicsConfig
from quarry.schemas.common import ImageCell, ImageText, Reject
from quarry.schemas.config import ReaderConfig, ShardConfig


@dataclass
class Candidate:
    """A sample that passed decode and heuristics, with what later stages need.

    `sample.image_bytes` holds the CLIP thumbnail (or nothing), not the original.
    """

    sample: ImageText
    width: int
    height: int
    image_format: str
    phash: int
    clip_score: Optional[float] = None
    clip_model: Optional[str] = None  # `model/pretrained` that scored it (clip.by_lang routes by language)
    orientations: tuple[int, ...] = ()  # pHashes of the 7 other orientations (dedup.orientations), else empty
    recaption: Optional[str] = None  # the recaption stage's (pipelines/recaption.py) text, when it was usable
    recaption_status: str = "off"  # "ok", "off", or why the recaption is not used (on_failure=keep_original)
    caption_source: str = "original"  # which caption the row trains on (recaption.merge_ratio)

    @property
    def sample_id(self) -> str:
        return self.sample.sample_id

    @property
    def caption(self) -> str:
        return self.sample.caption


def thumbnail_side(cfg: CaptionConfig) -> int:
    """The shorter side of the one small JPEG decode makes for the stages that look at pixels again (0: none)."""
    sides = [cfg.clip.thumbnail_side] * cfg.clip.enabled + [cfg.recaption.image_side] * cfg.recaption.enabled
    return max(sides, default=0)


def dedup_key(c: Candidate) -> DedupKey:
    return DedupKey(c.sample_id, c.phash, c.width, c.height, c.orientations)


def _origin_order(c: Candidate) -> tuple[str, str]:
    return (c.sample.origin.file, c.sample.origin.key)


class _DecodeAndFilter(beam.DoFn):
    """ImageText -> a light `Candidate`, or a `decode` / `heuristics` reject."""

    def __init__(self, decode: DecodeConfig, heuristics: HeuristicsConfig, clip: ClipConfig, thumbnail_side: int = 0,
                 orientations: bool = False):
        self.decode = decode
        self.orientations = orientations  # hash all 8 orientations (flip/rotation-aware dedup)
        self.heuristics = heuristics
        self.clip = clip
        # the small JPEG's shorter side (0: none); default: CLIP's when CLIP is on
        self.thumbnail_side = thumbnail_side or (clip.thumbnail_side if clip.enabled else 0)

    def setup(self):
        self.filter = HeuristicFilter(self.heuristics)

    def process(self, sample: ImageText):
        decoded = decode_image(sample.image_bytes, self.decode)
        if isinstance(decoded, Rejection):
            yield refused(to_reject(sample, "decode", decoded))
            return
        verdict = self.filter.check(decoded, sample.caption)
        if verdict is not None:
            yield refused(to_reject(sample, "heuristics", verdict))
            return
        thumb = clip_thumbnail(decoded.image, self.thumbnail_side) if self.thumbnail_side else b""
        light = sample.model_copy(update={"image_bytes": thumb})
        if self.orientations:
            hashes = phash64_orientations(decoded.image)  # element 0 is phash64's hash
            yield Candidate(light, decoded.width, decoded.height, decoded.format, hashes[0], orientations=hashes[1:])
        else:
            yield Candidate(light, decoded.width, decoded.height, decoded.format, phash64(decoded.image))


def _clip_decide(element, threshold: float, label: str):
    from quarry.operators.clip import decide

    candidate, score = element
    candidate = replace(candidate, clip_score=float(score), clip_model=label)  # Beam elements are not mutated in place
    verdict = decide(candidate.clip_score, threshold, label)
    if verdict is None:
        yield candidate
    else:
        yield refused(to_reject(candidate.sample, "clip", verdict))


def clip_route(c: Candidate, n: int, by_lang: dict[str, int]) -> int:
    """Which of the `n` CLIP models scores `c` (`CaptionClipConfig.routes`): its caption language's, else 0,
    the default. The language is the `lang` column's (operators/lang.py: the same function on the same text)."""
    return by_lang.get(detect_lang(c.sample.caption), 0)


class ScoreAndDecideClip(beam.PTransform):
    """Candidates -> (kept candidates with `clip_score` and `clip_model`, `clip` rejects).

    One RunInference per distinct model of `clip` (the default and `clip.by_lang`'s): rows are partitioned by
    caption language, each part is scored by its model and kept at that model's threshold. A worker process
    loads each model once (or, with `clip.share_model`, each machine does), so memory is bounded by the
    configured models, not by the languages in the data; every batch holds one model's rows only. Without
    `by_lang` (or when every entry names the default model) it is one RunInference, as before.
    """

    def __init__(self, clip):
        super().__init__()
        self.models, self.by_lang = clip.routes()

    def expand(self, candidates):
        # Imported here: Beam's RunInference module imports torch (~4 s per
        # process), which workers of a run without CLIP should not pay.
        from quarry.pipelines.clip import ScoreClip

        parts = [candidates]
        if len(self.models) > 1:
            parts = candidates | "ClipRouteByLang" >> beam.Partition(clip_route, len(self.models), self.by_lang)
        kept, rejected = [], []
        for i, (part, mcfg) in enumerate(zip(parts, self.models)):
            langs = sorted(lang for lang, j in self.by_lang.items() if j == i)
            suffix = "" if i == 0 else "_" + "_".join(langs)  # ClipScore (default), ClipScore_zh, ...
            label = f"{mcfg.model}/{mcfg.pretrained}"
            setting = f"clip.by_lang.{langs[0]}" if i else "clip"
            scored = (
                part
                | f"ClipInputs{suffix}" >> beam.Map(lambda c: (c, (c.sample.image_bytes, c.sample.caption)))
                | f"ClipScore{suffix}" >> ScoreClip(mcfg, setting=setting)
                | f"ClipDecide{suffix}" >> beam.FlatMap(_clip_decide, mcfg.threshold, label).with_outputs(
                    REJECTED, main="kept")
            )
            kept.append(scored.kept)
            rejected.append(scored[REJECTED])
        if len(kept) == 1:
            return kept[0], rejected[0]
        return kept | "ClipKept" >> beam.Flatten(), rejected | "ClipRejects" >> beam.Flatten()


def decontam_probe(c: Candidate):
    """What the decontam stage checks of a candidate: the caption, and the pHash computed at decode
    (the original bytes are not carried, so identical images are found by pHash distance 0)."""
    from quarry.operators.decontam import ImageKey
    from quarry.pipelines.decontam import Probe

    s = c.sample
    return Probe(s.sample_id, s.source, s.origin, (("caption", s.caption),), (("image", ImageKey(c.phash)),))


def _keep_unflagged(c: Candidate, matches) -> Candidate:
    """decontam.action=flag: caption rows keep their schema; the matches are in DIR/contamination/."""
    return c


def to_row(c: Candidate, concepts: list[str], rarest: Optional[int], tier: str, image: bytes) -> CaptionRow:
    s = c.sample
    return CaptionRow(
        sample_id=s.sample_id, source=s.source, tier=tier, task="caption", origin=s.origin, url=s.url,
        license=s.license, caption=s.caption, image=ImageCell(bytes=image), width=c.width,
        height=c.height, image_format=c.image_format, phash=to_hex(c.phash), clip_score=c.clip_score,
        clip_model=c.clip_model,
        concepts=concepts, rarest_concept_count=rarest, lang=detect_lang(s.caption), recaption=c.recaption,
        recaption_status=c.recaption_status, caption_source=c.caption_source,
        train_caption=c.recaption if c.caption_source == "recaption" else s.caption,
    )


class _WriteFromSource(beam.DoFn):
    """(input file, its kept samples) -> shards written from a second read of the file.

    Outputs written paths; a kept sample the second read does not find again
    unchanged (the input changed under the run) is a `write/source_changed` reject.
    Each input's shards and write rejects are committed (`DIR/.quarry/done/<index>.json`)
    once final; an input whose marker `done` holds for the same kept rows is not read
    again: its files stay, its rejects come from the marker (a resumed run).
    """

    def __init__(self, files: list[InputFile], default_source: str, reader: ReaderConfig, shards: ShardConfig,
                 output_dir: str, done: Optional[dict] = None):
        self.files = {f.path: (i, f) for i, f in enumerate(files)}
        self.default_source = default_source
        self.reader = reader
        self.shards = shards
        self.output_dir = output_dir
        self.data_dir = FileSystems.join(output_dir, "data")
        self.done = done or {}
        self.rows = beam.metrics.Metrics.counter("write", "caption_rows")
        self.skipped = beam.metrics.Metrics.counter("write", "caption_inputs_resumed")

    def process(self, element):
        path, pairs = element
        index, f = self.files[path]
        digest = _kept_digest(pairs)
        marker = self.done.get(f"{index:05d}")
        if (marker is not None and marker.get("input") == path and marker.get("kept") == digest
                and all(FileSystems.exists(FileSystems.join(self.output_dir, rel)) for rel in marker["files"])):
            self.skipped.inc()
            for row in marker["rejects"]:
                yield refused(Reject.model_validate(row))
            for rel in marker["files"]:
                yield FileSystems.join(self.output_dir, rel)
            return
        rejects = list(self._write(index, f, pairs))
        written = [r for r in rejects if isinstance(r, str)]
        commit_input(self.output_dir, f"{index:05d}", written, {
            "input": path, "kept": digest,
            "rejects": [r.value.model_dump(mode="json") for r in rejects if not isinstance(r, str)]})
        yield from rejects

    def _write(self, index: int, f: InputFile, pairs):
        wanted = {p.element.sample.origin.key: p for p in pairs}
        shards: dict[tuple[str, ...], StreamingShard] = {}
        schema = arrow_schema(CaptionRow)
        for rec in read_file(f, self.default_source, self.reader):
            pair = wanted.get(rec.origin.key) if isinstance(rec, ImageText) else None
            if pair is None:
                continue
            del wanted[rec.origin.key]
            if rec.sample_id != pair.element.sample_id:
                yield refused(to_reject(pair.element.sample, "write", (
                    SOURCE_CHANGED, "the input record changed between the first and the second read")))
                continue
            row = to_row(pair.element, list(pair.concepts), pair.rarest_count, pair.tier, rec.image_bytes).model_dump()
            partition = hive_partition(row)
            if partition not in shards:
                shards[partition] = StreamingShard(
                    shard_path(self.data_dir, partition, "caption", index, len(self.files)), schema, self.shards)
            shards[partition].add(row)
            self.rows.inc()
        for pair in wanted.values():
            yield refused(to_reject(pair.element.sample, "write", (
                SOURCE_CHANGED, "the input record was not found on the second read")))
        for shard in shards.values():
            yield shard.close()


def _kept_digest(pairs) -> str:
    """What an input's shards hold, as a hash: a marker counts only for the same kept rows, tiers and scores."""
    import hashlib
    import json

    facts = sorted((p.element.sample_id, p.tier, list(p.concepts), p.rarest_count, p.element.clip_score,
                    p.element.clip_model)
                   + ((p.element.recaption, p.element.recaption_status, p.element.caption_source)
                      if p.element.recaption_status != "off" else ()) for p in pairs)
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


class WriteFromSource(beam.PTransform):
    """Kept `BalancedPair`s -> caption shards, bytes read again from the inputs.

    Returns `(paths, rejected)`.
    """

    def __init__(self, files: list[InputFile], default_source: str, reader: ReaderConfig, shards: ShardConfig,
                 output_dir: str, done: Optional[dict] = None):
        super().__init__()
        self.fn = _WriteFromSource(files, default_source, reader, shards, output_dir, done)

    def expand(self, kept):
        out = (
            kept
            | "KeyByInputFile" >> beam.Map(lambda p: (p.element.sample.origin.file, p))
            | "GroupByInputFile" >> beam.GroupByKey()
            | "WriteFromSource" >> beam.ParDo(self.fn).with_outputs(REJECTED, main="paths")
        )
        return out.paths, out[REJECTED]


class CaptionPipeline(beam.PTransform):
    """PCollection[ImageText] -> StageOutputs(kept=BalancedPair, rejected=Reject).

    Kept pairs carry metadata, scores and tiers but not the image bytes:
    `WriteFromSource` writes them. `output_dir` receives per-stage counts
    (`_stats/`) for the manifest.
    """

    def __init__(self, cfg: CaptionConfig, vocabulary: list[str], output_dir: Optional[str] = None,
                 recaption_prompt: str = ""):
        super().__init__()
        self.cfg = cfg
        self.vocabulary = vocabulary
        self.output_dir = output_dir
        self.recaption_prompt = recaption_prompt  # the template text (dags/caption.py: plan reads it once)

    def expand(self, samples):
        cfg, out_dir = self.cfg, self.output_dir
        rejected = []

        # `decode.in` / `decode.out`: decode and heuristics run as one step (their rejects keep their stages).
        filtered = run_stage(samples | "ProgressDecode" >> Progress("decode"), "DecodeAndFilter",
                             _DecodeAndFilter(cfg.decode, cfg.heuristics, cfg.clip, thumbnail_side(cfg),
                                              orientations=cfg.dedup.enabled and cfg.dedup.orientations), out_dir,
                             stage="decode")
        rejected.append(filtered.rejected)
        candidates = filtered.kept

        if cfg.dedup.enabled:
            dedup = candidates | "Dedup" >> SplitDuplicates(cfg.dedup.max_hamming, dedup_key, order_key=_origin_order)
            rejected.append(dedup.rejected | "DedupRejects" >> beam.MapTuple(
                lambda c, verdict: to_reject(c.sample, "dedup", verdict)))
            candidates = dedup.kept
            count(candidates, out_dir, "dedup.out")

        if cfg.clip.enabled:
            candidates, clip_rejected = candidates | "ProgressClip" >> Progress("clip") | "Clip" >> ScoreAndDecideClip(
                cfg.clip)
            rejected.append(clip_rejected)
            count(candidates, out_dir, "clip.out")

        if cfg.decontam.enabled:  # --set decontam.bench=PATH: caption and image against benchmark sets
            from quarry.pipelines.decontam import MaybeDecontaminate

            candidates, dc_rejected = candidates | "Decontam" >> MaybeDecontaminate(
                cfg.decontam, out_dir, decontam_probe, dag="caption", flag_fn=_keep_unflagged,
                shards=cfg.shards, max_pixels=cfg.decode.max_pixels)
            rejected.append(dc_rejected)

        balanced = candidates | "Balance" >> BalanceConcepts(cfg.balance, self.vocabulary)
        rejected.append(balanced.rejected | "BalanceRejects" >> beam.MapTuple(
            lambda c, verdict: to_reject(c.sample, "balance", verdict)))
        kept = balanced.kept
        if cfg.recaption.enabled:
            from quarry.pipelines.recaption import Recaption

            prompt = self.recaption_prompt or recaption_ops.load_prompt(cfg.recaption.prompt)
            kept, recaption_rejected = kept | "ProgressRecaption" >> Progress("recaption") | "Recaption" >> Recaption(
                cfg.recaption, prompt, out_dir)
            rejected.append(recaption_rejected)
        kept = kept | "ProgressKept" >> Progress("kept")
        all_rejected = rejected | "AllRejects" >> beam.Flatten()
        return StageOutputs(kept, all_rejected)


# The reasons each stage of the caption DAG (dags/caption.py: SPEC.stages) can give its reject rows; `read` is the
# reader's.
STAGE_REASONS: dict[str, tuple[str, ...]] = {
    "decode": decode_ops.REASONS,
    "heuristics": heuristic_ops.REASONS,
    "dedup": (NEAR_DUPLICATE,),
    "clip": clip_ops.REASONS,
    "decontam": decontam_ops.MATCH_REASONS,
    "balance": concept_ops.REASONS,
    "recaption": recaption_ops.REASONS,
    "write": (SOURCE_CHANGED,),
}
