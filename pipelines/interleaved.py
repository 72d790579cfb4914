"""The interleaved web-document recipe (GLM-4.5V §3.1) wired as Beam steps.

    ReadDocuments -> CheckDocuments (text cleaning, image_dense, text quality,
                     per image: decode, QR/ads, heuristics, pHash, diagram score)
                  -> ScoreClip (image vs neighbouring paragraphs, RunInference)
                  -> JoinScores -> Finish (relevance decision, no_images_left, tier)
                  -> WriteFromSource (document shards + DIR/images)

One-to-one at the document level: every input document is a row or a
reject. Image-level drops (missing, corrupt, QR code, ad, heuristics,
irrelevant) do not reject the document; they are recorded in the row's
`images` list (kept=false, stage, reason, detail) and tallied in the
manifest (`extra.image_rejects`, stages `images`).

Image bytes never go through a shuffle: decoding and checks run fused with
reading; CLIP gets a small JPEG thumbnail through RunInference's batching
(no shuffle); what is grouped (scores joined to documents, documents grouped
by input file, image ownership) is text and ids. `WriteFromSource` reads each
input file a second time to write its kept documents and their kept images:
one data shard per input file and partition, one images shard per input file.
An image shared by documents of several files is written by the first file
(by plan order) that keeps it: only (image_id, file) pairs are shuffled to decide.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional, Union

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from quarry.operators import clip as clip_ops
from quarry.operators import decode as decode_ops
from quarry.operators import decontam as decontam_ops
from quarry.operators import heuristics as heuristic_ops
from quarry.operators.base import Rejection
from quarry.operators.clip import clip_thumbnail
from quarry.operators.clip import decide as clip_decide
from quarry.operators.decode import decode_image
from quarry.operators.heuristics import HeuristicFilter, image_stats
from quarry.operators.ids import digest
from quarry.operators.inputs import reasons
from quarry.operators.inputs.jsonl import bounded_objects
from quarry.operators.inputs.parquet import parquet_rows
from quarry.operators.inputs.records import Unreadable
from quarry.operators.interleaved import ads as ad_ops
from quarry.operators.interleaved import text_quality as text_ops
from quarry.operators.interleaved.ads import AdDetector
from quarry.operators.interleaved.documents import (
    IMAGE_DENSE,
    IMAGE_IRRELEVANT,
    MISSING_IMAGE,
    NO_IMAGES_LEFT,
    ImageRef,
    RawDocument,
    check_density,
    clean_text,
    count_words,
    detect_shape,
    diagram_score,
    neighbour_texts,
    parse_document,
    tail_flags,
    tier_for,
)
from quarry.operators.interleaved.text_quality import TextQuality
from quarry.operators.phash import phash64, to_hex
from quarry.pipelines.read import (
    TABLE_ERRORS,
    Head,
    InputError,
    InputFile,
    InputSpec,
    ReadRecords,
    clean_source,
    load_beside,
    plan_files,
    read_opened,
    read_reject,
    unreadable_table,
)
from quarry.pipelines.stage import REJECTED, StageOutputs, count, count_stage, refused, reject_row, run_stage, to_reject
from quarry.pipelines.stats import Progress, read_stats, write_stats
from quarry.pipelines.write import SOURCE_CHANGED, StreamingShard, hive_partition, shard_path
from quarry.pipelines.write import STAGE as WRITE
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.caption import DecodeConfig, HeuristicsConfig
from quarry.schemas.common import ImageCell, ImageRecord, Origin, Reject
from quarry.schemas.config import ReaderConfig, ShardConfig
from quarry.schemas.interleaved import (
    AdsConfig,
    DensityConfig,
    DocumentConfig,
    ImageHeuristicsConfig,
    ImageInfo,
    InterleavedConfig,
    InterleavedRow,
    RelevanceConfig,
    Segment,
    TextQualityConfig,
    TierConfig,
)

STAGE_READ = "read"
FILE_TOO_LARGE = "file_too_large"  # an image over reader.max_image_bytes (the readers' code, image level here)
REASONS: tuple[str, ...] = (FILE_TOO_LARGE,)
IMAGE_REASONS = "image_rejects"  # _stats/image_rejects.json


# --- planning and reading: plain generators over one file ------------------------------------


def plan_documents(patterns: list[str]) -> list[InputFile]:
    """JSONL and Parquet document files; InputError for what cannot be read at all."""
    return plan_files(patterns, InputSpec(
        kinds=("jsonl", "parquet"), readable="a JSONL or Parquet document file (interleaved reads documents, "
                                             "not loose images)", finish=_has_documents))


def _has_documents(f: InputFile, _pattern: str, head: Optional[Head]) -> InputFile:
    if head is not None and detect_shape({n: None for n in head.names}) is None:
        raise InputError(f"input {f.path}: no document columns (segments, texts+images, or "
                         f"text_list+image_info); columns are {head.names}")
    return f


def _record_key(prefix: str, rec: dict) -> str:
    for k in ("id", "doc_id", "key"):
        v = rec.get(k)
        if isinstance(v, (str, int)) and not isinstance(v, bool):
            return f"{prefix}:{v}"
    return prefix


class ReadSections(NamedTuple):
    """The config sections reading documents needs (an InterleavedConfig has both, so it serves as well)."""

    reader: ReaderConfig
    document: DocumentConfig

    @classmethod
    def of(cls, cfg: InterleavedConfig) -> "ReadSections":
        return cls(cfg.reader, cfg.document)


class _DocMaker:
    def __init__(self, f: InputFile, default_source: str, cfg: ReadSections):
        self.f = f
        self.name = f.path.rsplit("/", 1)[-1]
        self.default_source = default_source
        self.cfg = cfg
        self.load = load_beside(f.path, cfg.reader.max_image_bytes)

    def document(self, rec: Union[dict, str], key: str) -> Union[RawDocument, Unreadable]:
        if isinstance(rec, str):
            return Unreadable(key, reasons.INVALID_JSON, rec)
        doc = parse_document(rec, self.name, key, self.load, self.cfg.document)
        if isinstance(doc, Rejection):
            src = rec.get("source") if isinstance(rec.get("source"), str) else None
            return Unreadable(key, doc.reason, doc.detail, src)
        doc.file = self.f.path
        return doc


def _jsonl_records(fh, cfg: ReadSections) -> Iterator[tuple[str, Union[dict, str, None], int]]:
    """(key, the record | why it is not one | None when too large, size)."""
    for lineno, rec, size in bounded_objects(fh, cfg.document.max_record_bytes):
        key = f"line:{lineno}"
        yield (_record_key(key, rec) if isinstance(rec, dict) else key), rec, size


def _parquet_records(fh) -> Iterator[tuple[str, Union[dict, str, None], int]]:
    for row, rec in parquet_rows(fh, batch_size=16):
        yield _record_key(f"row:{row}", rec), rec, 0


def read_documents(f: InputFile, default_source: str, cfg: ReadSections,
                   wanted: Optional[set[str]] = None) -> Iterator[Union[RawDocument, Reject]]:
    """Every document of one input file, or its read reject. With `wanted`, only
    records whose key is in it are parsed (and their images loaded)."""
    for doc in _documents(f, default_source, cfg, wanted):
        yield read_reject(f.path, default_source, doc) if isinstance(doc, Unreadable) else doc


def _documents(f: InputFile, default_source: str, cfg: ReadSections,
               wanted: Optional[set[str]]) -> Iterator[Union[RawDocument, Unreadable]]:
    maker = _DocMaker(f, default_source, cfg)
    def parse(fh):  # AUTO compression: .jsonl.gz inflates on the fly
        records = _jsonl_records(fh, cfg) if f.kind == "jsonl" else _parquet_records(fh)
        try:
            for key, rec, size in records:
                if wanted is not None and key not in wanted:
                    continue
                if rec is None:
                    yield Unreadable(key, reasons.RECORD_TOO_LARGE,
                                     f"{size} bytes > document.max_record_bytes={cfg.document.max_record_bytes}")
                    continue
                yield maker.document(rec, key)
        except (*TABLE_ERRORS, EOFError) as e:  # a truncated .gz, a corrupt Parquet page
            yield unreadable_table(e)

    yield from read_opened(f.path, parse)


# --- per-document checks -----------------------------------------------------------------------


@dataclass
class DocState:
    """A document between the checks and the end: text and per-image facts, no image bytes."""

    sample_id: str
    source: str
    origin: Origin
    url: Optional[str]
    license: Optional[str]
    shape: str
    segments: list[tuple[str, Union[str, int]]]  # ("text", text) | ("image", image index)
    images: list[ImageInfo]
    n_words: int
    html_stripped: int
    scored: int = 0  # images sent to CLIP


@dataclass(frozen=True)
class CheckSections:
    """The config sections the per-document checks read (`document.strip_html`, `reader.max_image_bytes`, ...)."""

    document: DocumentConfig
    density: DensityConfig
    text: TextQualityConfig
    reader: ReaderConfig
    decode: DecodeConfig
    ads: AdsConfig
    image_heuristics: ImageHeuristicsConfig
    relevance: RelevanceConfig

    @classmethod
    def of(cls, cfg: InterleavedConfig) -> "CheckSections":
        return cls(cfg.document, cfg.density, cfg.text, cfg.reader, cfg.decode, cfg.ads, cfg.image_heuristics,
                   cfg.relevance)


class _CheckDocuments(beam.DoFn):
    """RawDocument -> DocState (main), CLIP requests (`clip`), document rejects (`rejected`)."""

    CLIP = "clip"

    def __init__(self, cfg: CheckSections, default_source: str):
        self.cfg = cfg
        self.default_source = default_source
        self.images_checked = beam.metrics.Metrics.counter("interleaved", "images_checked")
        self.images_kept = beam.metrics.Metrics.counter("interleaved", "images_kept_by_checks")

    def setup(self):
        cfg = self.cfg
        self.text_quality = TextQuality(cfg.text).load() if cfg.text.enabled else None
        self.ads = AdDetector(cfg.ads) if cfg.ads.enabled else None
        h = cfg.image_heuristics
        self.heuristics = HeuristicFilter(HeuristicsConfig(min_side=h.min_side, max_aspect_ratio=h.max_aspect_ratio,
                                                           solid_max_std=h.solid_max_std))

    def process(self, doc: RawDocument):
        cfg = self.cfg
        source = clean_source(doc.source or self.default_source)
        origin = Origin(file=doc.file, key=doc.key)
        text = clean_text(doc, cfg.document.strip_html)
        n_words = sum(count_words(t) for t in text.texts)
        n_images = len(doc.images)
        verdict = check_density(n_words, n_images, cfg.density)
        if verdict is not None:
            yield refused(reject_row(doc.sample_id, source, origin, "density", verdict))
            return
        if self.text_quality is not None:
            verdict = self.text_quality.check(text.joined)
            if verdict is not None:
                yield refused(reject_row(doc.sample_id, source, origin, "text", verdict))
                return
        tails = tail_flags(text.segments, cfg.ads.tail_words)
        images: list[ImageInfo] = []
        segments: list[tuple[str, Union[str, int]]] = []
        requests = []
        index = 0
        for position, seg in enumerate(text.segments):
            if isinstance(seg, str):
                segments.append(("text", seg))
                continue
            info, thumb = self._check_image(seg, index, tails[index])
            self.images_checked.inc()
            if info.kept:
                self.images_kept.inc()
            images.append(info)
            segments.append(("image", index))
            if info.kept and thumb is not None:
                contexts = neighbour_texts(text.segments, position, cfg.relevance.context_words,
                                           cfg.relevance.neighbours)
                for n, context in enumerate(contexts):
                    requests.append(((doc.sample_id, index, n), (thumb, context)))
            index += 1
        state = DocState(doc.sample_id, source, origin, doc.url, doc.license, doc.shape, segments, images,
                         n_words, text.html_stripped, scored=len({r[0][1] for r in requests}))
        for r in requests:
            yield beam.pvalue.TaggedOutput(self.CLIP, r)
        yield state

    def _check_image(self, ref: ImageRef, index: int, at_tail: bool) -> tuple[ImageInfo, Optional[bytes]]:
        cfg = self.cfg
        info = ImageInfo(index=index, url=ref.url, kept=False)
        if ref.data is None:
            info.stage, info.reason, info.detail = STAGE_READ, MISSING_IMAGE, ref.missing[:300]
            return info, None
        info.image_id = digest(ref.data)
        if len(ref.data) > cfg.reader.max_image_bytes:
            info.stage, info.reason = STAGE_READ, FILE_TOO_LARGE
            info.detail = f"{len(ref.data)} bytes > reader.max_image_bytes={cfg.reader.max_image_bytes}"
            return info, None
        decoded = decode_image(ref.data, cfg.decode)
        if isinstance(decoded, Rejection):
            info.stage, info.reason, info.detail = "decode", decoded.reason, decoded.detail[:300]
            return info, None
        info.width, info.height, info.format = decoded.width, decoded.height, decoded.format
        if self.ads is not None:
            verdict, signals, codes = self.ads.check(decoded.image, ref.url, at_tail)
            info.ad_signals, info.codes = signals, codes
            if verdict is not None:
                info.stage, info.reason, info.detail = "ads", verdict.reason, verdict.detail[:300]
                return info, None
        verdict = self.heuristics.check_image(image_stats(decoded))
        if verdict is not None:
            info.stage, info.reason, info.detail = "heuristics", verdict.reason, verdict.detail[:300]
            return info, None
        info.kept = True
        info.phash = to_hex(phash64(decoded.image))
        info.diagram_score = round(diagram_score(decoded.image), 4)
        thumb = clip_thumbnail(decoded.image, cfg.relevance.thumbnail_side) if cfg.relevance.enabled else None
        return info, thumb


# --- finishing -------------------------------------------------------------------------------


def finish(state: DocState, scores: dict[int, list[float]], relevance: RelevanceConfig, document: DocumentConfig,
           tiers: TierConfig) -> Union[InterleavedRow, Reject]:
    """Relevance decisions, the text-only rule (`document.keep_text_only`) and the tier: a row, or a
    `no_images_left` reject."""
    images = [i.model_copy() for i in state.images]
    label = f"{relevance.model}/{relevance.pretrained}"
    for info in images:
        got = scores.get(info.index)
        if not info.kept or not got:
            continue
        real = [s for s in got if s == s]  # NaN: thumbnail undecodable
        best = max(real) if real else float("nan")
        info.clip_score = None if best != best else round(best, 4)
        verdict = clip_decide(best, relevance.threshold, label)
        if verdict is not None:
            info.kept = False
            info.stage, info.detail = "relevance", verdict.detail
            info.reason = IMAGE_IRRELEVANT if verdict.reason != clip_ops.UNDECODABLE else verdict.reason
    kept = {i.index: i for i in images if i.kept}
    if not kept and not document.keep_text_only:
        counts: dict[str, int] = {}
        for i in images:
            counts[i.reason or "?"] = counts.get(i.reason or "?", 0) + 1
        detail = ("the document has no images" if not images else
                  "every image was dropped: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        return to_reject(state, "assemble", (NO_IMAGES_LEFT, detail))
    segments = []
    for kind, value in state.segments:
        if kind == "text":
            segments.append(Segment(kind="text", text=value))
        elif value in kept:
            segments.append(Segment(kind="image", image_id=kept[value].image_id))
    tier, per_image, share = tier_for(state.n_words, [kept[i].diagram_score or 0.0 for i in sorted(kept)], tiers)
    return InterleavedRow(
        sample_id=state.sample_id, source=state.source, tier=tier, task="interleaved", origin=state.origin,
        url=state.url, license=state.license, segments=segments, images=images, n_words=state.n_words,
        n_images=len(kept), n_images_in=len(images),
        words_per_image=None if per_image is None else round(per_image, 3),
        diagram_share=share, html_stripped=state.html_stripped, shape=state.shape,
    )


def _finish_joined(element, relevance: RelevanceConfig, document: DocumentConfig, tiers: TierConfig):
    _, grouped = element
    states, score_lists = list(grouped["doc"]), grouped["scores"]
    if not states:  # scores of a document that is not there cannot happen; nothing to emit
        return
    scores: dict[int, list[float]] = {}
    for index, score in score_lists:
        scores.setdefault(index, []).append(float(score))
    yield _route(finish(states[0], scores, relevance, document, tiers))


def decontam_probe(row: InterleavedRow):
    """What the optional decontam stage (`--set decontam.bench=PATH`) checks of a kept document:
    each text segment, and each kept image by its pHash and content digest (the bytes are not
    carried; `image_id` is the blake2b digest the index's `digest64` takes the first 8 bytes of)."""
    from quarry.operators.decontam import ImageKey
    from quarry.operators.phash import from_hex
    from quarry.pipelines.decontam import Probe

    texts = tuple((f"segments[{i}].text", s.text) for i, s in enumerate(row.segments) if s.kind == "text" and s.text)
    images = tuple((f"images[{i.index}]", ImageKey(from_hex(i.phash), int(i.image_id[:16], 16)))
                   for i in row.images if i.kept and i.phash and i.image_id)
    return Probe(row.sample_id, row.source, row.origin, texts, images)


def _unchanged(row: InterleavedRow, matches) -> InterleavedRow:
    """decontam.action=flag: rows keep their schema; the matches are in DIR/contamination/."""
    return row


def _route(result):
    return refused(result) if isinstance(result, Reject) else result


# --- the composite -------------------------------------------------------------------------


class InterleavedPipeline(beam.PTransform):
    """PCollection[RawDocument] -> StageOutputs(kept=InterleavedRow without image bytes, rejected=Reject)."""

    def __init__(self, cfg: InterleavedConfig, default_source: str, output_dir: Optional[str] = None):
        super().__init__()
        self.cfg = cfg
        self.default_source = clean_source(default_source)
        self.output_dir = output_dir

    def expand(self, docs):
        cfg, out_dir = self.cfg, self.output_dir
        checked = run_stage(docs | "ProgressCheck" >> Progress("check"), "CheckDocuments",
                            _CheckDocuments(CheckSections.of(cfg), self.default_source), out_dir, stage="checks",
                            tags=(_CheckDocuments.CLIP,))
        states = checked.kept
        finish_sections = (cfg.relevance, cfg.document, cfg.tiers)
        if cfg.relevance.enabled:
            from quarry.pipelines.clip import ScoreClip  # imports torch: only when CLIP runs

            scores = (
                checked[_CheckDocuments.CLIP]
                | "ProgressClip" >> Progress("clip")
                | "ClipScore" >> ScoreClip(cfg.relevance)
                | "KeyScoresByDoc" >> beam.MapTuple(lambda key, score: (key[0], (key[1], float(score))))
            )
            finished = (
                {"doc": states | "KeyDocs" >> beam.Map(lambda s: (s.sample_id, s)), "scores": scores}
                | "JoinScores" >> beam.CoGroupByKey()
                | "Finish" >> beam.FlatMap(_finish_joined, *finish_sections).with_outputs(REJECTED, main="kept")
            )
        else:
            finished = states | "Finish" >> beam.FlatMap(
                lambda s: [_route(finish(s, {}, *finish_sections))]).with_outputs(REJECTED, main="kept")
        kept = finished.kept
        rejected_parts = [checked.rejected, finished[REJECTED]]
        if cfg.decontam.enabled:  # --set decontam.bench=PATH: texts and kept images against benchmark sets
            from quarry.pipelines.decontam import MaybeDecontaminate

            kept, dc_rejected = kept | "Decontam" >> MaybeDecontaminate(
                cfg.decontam, out_dir, decontam_probe, dag="interleaved", flag_fn=_unchanged,
                shards=cfg.shards, max_pixels=cfg.decode.max_pixels)
            rejected_parts.append(dc_rejected)
        kept = kept | "ProgressKept" >> Progress("kept")
        count(finished.kept, out_dir, "assemble.out")
        all_images = kept | "ImagesOfRows" >> beam.FlatMap(lambda r: r.images)
        count_stage(out_dir, "images", all_images, all_images | "KeptImages" >> beam.Filter(lambda i: i.kept))
        if out_dir is not None:
            (
                (kept | "ImageReasons" >> beam.FlatMap(
                    lambda r: [f"{i.stage}/{i.reason}" for i in r.images if not i.kept]))
                | "CountImageReasons" >> beam.combiners.Count.PerElement()
                | "ToDict" >> beam.combiners.ToDict()
                | "WriteImageReasons" >> beam.Map(_write_image_reasons, out_dir)
            )
        rejected = rejected_parts | "AllRejects" >> beam.Flatten()
        return StageOutputs(kept, rejected)


def _write_image_reasons(reasons: dict, output_dir: str) -> None:
    # In the `_stats` count format (name, count) that the runner reads, plus the breakdown.
    write_stats(output_dir, IMAGE_REASONS,
                {"name": IMAGE_REASONS, "count": sum(reasons.values()), "reasons": dict(sorted(reasons.items()))})


def read_image_reasons(output_dir: str) -> dict[str, int]:
    payload = read_stats(output_dir, IMAGE_REASONS)
    return payload["reasons"] if payload else {}


# --- reading and writing -------------------------------------------------------------------


class ReadDocuments(ReadRecords):
    """Planned files -> (documents, read rejects). Files spread over workers; one file, one reader."""

    def __init__(self, files: list[InputFile], default_source: str, cfg: InterleavedConfig):
        super().__init__(files, functools.partial(read_documents, default_source=clean_source(default_source),
                                                  cfg=ReadSections.of(cfg)))


class _WriteFromSource(beam.DoFn):
    """(input file, {rows, owned image ids}) -> document shards and images shard, from a second read."""

    def __init__(self, files: list[InputFile], default_source: str, read: ReadSections, shards: ShardConfig,
                 output_dir: str):
        self.files = {f.path: (i, f) for i, f in enumerate(files)}
        self.default_source = clean_source(default_source)
        self.read = read
        self.shards = shards
        self.data_dir = FileSystems.join(output_dir, "data")
        self.images_dir = FileSystems.join(output_dir, "images")
        self.rows = beam.metrics.Metrics.counter("write", "interleaved_rows")
        self.images = beam.metrics.Metrics.counter("write", "images")

    def process(self, element):
        path, grouped = element
        rows = list(grouped["rows"])
        if not rows:
            return
        owned = set(grouped["owned"])
        index, f = self.files[path]
        wanted = {r.origin.key: r for r in rows}
        shards: dict[tuple[str, ...], StreamingShard] = {}
        images_shard: Optional[StreamingShard] = None
        written: set[str] = set()
        schema = arrow_schema(InterleavedRow)
        for doc in read_documents(f, self.default_source, self.read, wanted=set(wanted)):
            key = doc.origin.key if isinstance(doc, Reject) else doc.key
            row = wanted.pop(key, None)
            if row is None:
                continue
            if isinstance(doc, Reject) or doc.sample_id != row.sample_id:
                yield refused(to_reject(row, WRITE, (
                    SOURCE_CHANGED, "the input document changed between the first and the second read")))
                continue
            refs = doc.images
            for info in row.images:
                if not info.kept or info.image_id in written or info.image_id not in owned:
                    continue
                if images_shard is None:
                    images_shard = StreamingShard(shard_path(self.images_dir, (), "images", index, len(self.files)),
                                                  arrow_schema(ImageRecord), self.shards)
                images_shard.add(ImageRecord(image_id=info.image_id, image=ImageCell(bytes=refs[info.index].data),
                                             width=info.width, height=info.height, format=info.format).model_dump())
                written.add(info.image_id)
                self.images.inc()
            out = row.model_dump()
            partition = hive_partition(out)
            if partition not in shards:
                shards[partition] = StreamingShard(shard_path(self.data_dir, partition, "interleaved", index,
                                                              len(self.files)), schema, self.shards)
            shards[partition].add(out)
            self.rows.inc()
        for row in wanted.values():
            yield refused(to_reject(row, WRITE, (SOURCE_CHANGED, "the input document was not found on the second read")))
        for shard in shards.values():
            yield shard.close()
        if images_shard is not None:
            yield images_shard.close()


class WriteFromSource(beam.PTransform):
    """Kept rows -> `DIR/data/...` and `DIR/images/...`, image bytes read again from the inputs.

    Returns `(paths, rejected)`.
    """

    def __init__(self, files: list[InputFile], default_source: str, cfg: InterleavedConfig, output_dir: str):
        super().__init__()
        self.order = {f.path: i for i, f in enumerate(files)}
        self.fn = _WriteFromSource(files, default_source, ReadSections.of(cfg), cfg.shards, output_dir)

    def expand(self, rows):
        order = self.order
        path_of = {i: p for p, i in order.items()}
        by_file = rows | "KeyByInputFile" >> beam.Map(lambda r: (r.origin.file, r))
        owned = (
            rows
            | "KeptImageIds" >> beam.FlatMap(lambda r: {(i.image_id, order[r.origin.file])
                                                         for i in r.images if i.kept})
            | "FirstFileKeepingIt" >> beam.CombinePerKey(min)
            | "OwnerFile" >> beam.MapTuple(lambda image_id, n: (path_of[n], image_id))
        )
        out = (
            {"rows": by_file, "owned": owned}
            | "GroupByInputFile" >> beam.CoGroupByKey()
            | "WriteFromSource" >> beam.ParDo(self.fn).with_outputs(REJECTED, main="paths")
        )
        return out.paths, out[REJECTED]


# The reasons each stage of the interleaved DAG (dags/interleaved.py: SPEC.stages) can give; `read` is the
# reader's. `checks` and `relevance` drop images, not documents: their codes are in the rows' `images` lists
# (and `extra.image_rejects`), never reject rows.
STAGE_REASONS: dict[str, tuple[str, ...]] = {
    "density": (IMAGE_DENSE,),
    "text": text_ops.REASONS,
    "checks": (MISSING_IMAGE, FILE_TOO_LARGE) + decode_ops.REASONS + ad_ops.REASONS + heuristic_ops.IMAGE_REASONS,
    "relevance": (IMAGE_IRRELEVANT, clip_ops.UNDECODABLE),
    "assemble": (NO_IMAGES_LEFT,),
    "decontam": decontam_ops.MATCH_REASONS,
    "write": (SOURCE_CHANGED,),
}
