"""The ImageMining recipe (GLM-5V-Turbo §3.3, Visual Jump) wired as Beam steps.

    ReadImageRows -> Decode -> Mine (link, discover, question, filter, tag, tier; KB side input)
        -> [Rewrite] -> NearDuplicates -> [Decontam] -> WriteShards (QARow)
    Decode's images joined with the kept rows' image ids -> WriteImages (each image once)
    KB path -> KbIssues (skipped KB lines as rejects at stage `kb`, KB stats)

The knowledge base is a side input: `AsSingleton` of its path, loaded once per
worker process through `apache_beam.utils.shared.Shared` (one copy shared by
the worker's threads), never pickled with the pipeline. Many question rows come
from one image row, so stages count their inputs and outputs (`_stats`):
`decode`, `link` and `discover` count images (an image that yields no
candidate path is a `discover/no_path` reject), `discover.out` counts
candidate questions, `filter`, `rewrite` and `dedup` count questions.
"""

from __future__ import annotations

import functools
import json
import math
import posixpath
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.utils import shared

from quarry.operators import decode as decode_ops
from quarry.operators import decontam as decontam_ops
from quarry.operators.base import Rejection
from quarry.operators.decode import decode_image
from quarry.operators.ids import content_id, digest, stable_bucket
from quarry.operators.imagemining import kb as kb_ops
from quarry.operators.imagemining import qa
from quarry.operators.imagemining.kb import KnowledgeBase, load_kb, normalise
from quarry.operators.imagemining.kb_store import SqliteKnowledgeBase, ensure_kb_store, stage_in
from quarry.operators.inputs import reasons
from quarry.operators.inputs.records import Unreadable
from quarry.operators.trajectory import openai_messages
from quarry.pipelines.read import (
    InputFile,
    ReadRecords,
    RowRecord,
    beside,
    clean_source,
    read_limited,
    read_reject,
    read_rows,
)
from quarry.pipelines.spill import Gather, Stash, records, spill_dir
from quarry.pipelines.stage import REJECTED, count_stage, refused, reject_row, run_stage
from quarry.pipelines.stats import write_stats
from quarry.pipelines.write import any_copy, pack_row, unpack_row
from quarry.schemas.caption import DecodeConfig
from quarry.schemas.common import ImageCell, ImageRecord, Origin, Reject
from quarry.schemas.imagemining import (
    Hop,
    ImageMiningConfig,
    KbSection,
    LinkSection,
    QARow,
    QaSection,
    RewriterSection,
    TierSection,
)
from quarry.schemas.trajectory import ToolCall

TEXT_FIELDS = ("caption", "alt", "ocr_text")
IMAGE_FIELDS = ("image", "image_path", "path", "file_name")
KB_STATS = "kb"  # _stats/kb.json
EVENTS = ("link.in", "link.out", "link.unknown_entities", "link.ambiguous_names", "discover.in",
          "discover.out", "filter.in", "filter.out", "rewrite.in", "rewrite.out", "rewrite.fallback_error",
          "rewrite.fallback_filtered", "dedup.in", "dedup.out")

# The mining steps' own reasons (no operator decides them); read rejects are the reader's.
UNKNOWN_ENTITY = "unknown_entity"  # link: none of the given entities is in the KB
NO_ENTITIES = "no_entities"  # link: nothing to link in the row's texts
NO_PATH = "no_path"  # discover: no templated path from the image's entities
BOX_OUTSIDE_IMAGE = "box_outside_image"  # link: a listed entity's box is not on the image (wrong image or units)
BOX_ON_BLANK = "box_on_blank"  # link: a listed entity's box covers nearly uniform pixels
REASONS: tuple[str, ...] = (UNKNOWN_ENTITY, NO_ENTITIES, NO_PATH, BOX_OUTSIDE_IMAGE, BOX_ON_BLANK)


def box_off_image(box: Optional[tuple[float, float, float, float]], width: int, height: int) -> bool:
    """A listed box (pixels, or 0-1 relative) that leaves the image by more than 1% of a side."""
    if box is None:
        return False
    if max(box) <= 1.0:
        box = (box[0] * width, box[1] * height, box[2] * width, box[3] * height)
    sx, sy = 0.01 * width, 0.01 * height
    return box[0] < -sx or box[1] < -sy or box[2] > width + sx or box[3] > height + sy


BLANK_STD = 10.0  # grey-level standard deviation under which a box shows no object (sky, wall, padding)


def blank_boxes(image, entities) -> tuple[int, ...]:
    """Indices of listed entity boxes whose pixels are nearly uniform: nothing is there to recognise, so the box
    belongs to another image or scale. A check without a detector: a box cutting through several objects
    passes it (the README says so)."""
    import numpy as np

    out = []
    grey = None
    for i, (_, _, box) in enumerate(entities):
        if box is None:
            continue
        if grey is None:
            grey = np.asarray(image.convert("L"), dtype=np.float32)
        h, w = grey.shape
        if max(box) <= 1.0:
            box = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
        x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
        x1, y1 = min(w, int(math.ceil(box[2]))), min(h, int(math.ceil(box[3])))
        if x1 - x0 < 2 or y1 - y0 < 2 or float(grey[y0:y1, x0:x1].std()) < BLANK_STD:
            out.append(i)
    return tuple(out)


# --------------------------------------------------------------------------- plain parts


@dataclass(frozen=True)
class ImageInput:
    """One image row as read: bytes, the entities it names, its texts."""

    sample_id: str
    source: str
    origin: Origin
    image_bytes: bytes
    entities: tuple[tuple[Optional[str], Optional[str], Optional[tuple[float, float, float, float]]], ...]
    texts: tuple[tuple[str, str], ...]  # (field, text)
    domain: Optional[str] = None
    url: Optional[str] = None
    license: Optional[str] = None


@dataclass(frozen=True)
class ImageMeta:
    """An image after decode: no bytes (they go to DIR/images once), its size and id."""

    input: ImageInput
    image_id: str
    width: int
    height: int
    blank: tuple[int, ...] = ()  # listed entity boxes on nearly uniform pixels (`blank_boxes`)


def _box(v: Any) -> Union[None, tuple[float, float, float, float], str]:
    if v is None:
        return None
    if isinstance(v, dict):
        v = [v.get(k) for k in ("x0", "y0", "x1", "y1")]
    if not isinstance(v, (list, tuple)) or len(v) != 4 or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
        return f"box {v!r} is not [x0, y0, x1, y1] of finite numbers"
    x0, y0, x1, y1 = (float(x) for x in v)
    if x1 <= x0 or y1 <= y0:
        return f"box {list(v)} is empty"
    return (x0, y0, x1, y1)


def parse_image_row(rec: RowRecord, default_source: str, max_image_bytes: int) -> Union[ImageInput, Reject]:
    """A JSONL/Parquet image row -> ImageInput, or a Reject at stage `read`.

    Fields: `image` (a path relative to the file, bytes, or `{bytes, path}`),
    `entities` (a list of `{"id": KB id}` (or `kb_id`, `entity_id`, `qid`) or
    `{"name": ...}`, each with an optional `box` [x0, y0, x1, y1] in pixels, or
    relative to the image when every coordinate is <= 1; a bare string is an id),
    `caption`, `alt`, `ocr_text` (str or a list of lines), `domain`, `source`,
    `url`, `license`, `id`.
    """
    name = posixpath.basename(rec.file)
    if rec.row is None:
        return read_reject(rec.file, default_source, Unreadable(rec.key, rec.reason, rec.detail))
    row = rec.row
    source = clean_source(row["source"] if isinstance(row.get("source"), str) and row["source"] else default_source)
    key = rec.key
    if isinstance(row.get("id"), (str, int)) and not isinstance(row.get("id"), bool):
        key = f"{key}:{row['id']}"
    origin = Origin(file=rec.file, key=key)

    def bad(reason: str, detail: str) -> Reject:
        return read_reject(rec.file, source, Unreadable(key, reason, detail))

    value = next((row[k] for k in IMAGE_FIELDS if row.get(k) is not None), None)
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        data: Union[bytes, str] = bytes(value)
        if len(data) > max_image_bytes:
            return bad(reasons.FILE_TOO_LARGE, f"{len(data)} bytes > reader.max_image_bytes")
    elif isinstance(value, str) and value:
        data = read_limited(beside(value, rec.file), max_image_bytes)
        if isinstance(data, str):
            return bad(reasons.MISSING_IMAGE if "cannot read" in data else reasons.FILE_TOO_LARGE, data)
    else:
        return bad(reasons.MISSING_IMAGE, f"no image ({', '.join(IMAGE_FIELDS)}: a path, bytes or {{bytes, path}})")
    raw_entities = row.get("entities") or []
    if not isinstance(raw_entities, (list, tuple)):
        return bad(reasons.INVALID_ENTITIES, f"entities is {type(raw_entities).__name__}, not a list")
    entities = []
    for e in raw_entities:
        if isinstance(e, str):
            e = {"id": e}
        if not isinstance(e, dict):
            return bad(reasons.INVALID_ENTITIES, f"entity {e!r} is not an object")
        eid = next((e[k] for k in ("id", "kb_id", "entity_id", "qid") if e.get(k) is not None), None)
        ename = e.get("name")
        box = _box(e.get("box"))
        if isinstance(box, str):
            return bad(reasons.INVALID_ENTITIES, box)
        eid = str(eid) if isinstance(eid, (str, int)) and not isinstance(eid, bool) and str(eid) else None
        ename = ename if isinstance(ename, str) and ename.strip() else None
        if eid is None and ename is None:
            return bad(reasons.INVALID_ENTITIES, f"entity {e!r} has neither an id nor a name")
        entities.append((eid, ename, box))
    texts = []
    for f in TEXT_FIELDS:
        v = row.get(f)
        if isinstance(v, (list, tuple)):
            v = "\n".join(x for x in v if isinstance(x, str))
        if isinstance(v, str) and v.strip():
            texts.append((f, v[:20_000]))
    assert isinstance(data, bytes)
    return ImageInput(
        sample_id=content_id("imagemining-image", digest(data), name, key), source=source, origin=origin, image_bytes=data, entities=tuple(entities), texts=tuple(texts),
        domain=row["domain"] if isinstance(row.get("domain"), str) and row["domain"] else None,
        url=row.get("url") if isinstance(row.get("url"), str) else None,
        license=row.get("license") if isinstance(row.get("license"), str) else None,
    )


class Miner:
    """What a worker holds once (through `Shared`): the KB, the templates, the filters."""

    def __init__(self, kb_path: str, templates_path: Optional[str], language: str, min_hops: int, check_ocr: bool,
                 link_min_chars: int, store_path: Optional[str] = None):
        self.templates = qa.load_templates(templates_path, language)
        self.kb: Union[KnowledgeBase, SqliteKnowledgeBase]
        if store_path is None:
            self.kb = load_kb(kb_path)
            self.kb.rename_relations(self.templates.relation_aliases)  # one name per relation for shortcut counts
        else:
            # the driver built it (dags/imagemining.py: plan); this fetches a remote one to the machine once and
            # checks it is up to date (head/tail digest)
            local = stage_in(store_path)
            ensure_kb_store(kb_path, local, self.templates.relation_aliases, log=lambda m: None)
            self.kb = SqliteKnowledgeBase(local)  # relations renamed when the store was built
        self.filters = qa.Filters(self.kb, self.templates, min_hops, check_ocr)
        self.link_min_chars = link_min_chars
        self._linker = None

    @property
    def linker(self):
        if self._linker is None:
            self._linker = self.kb.new_linker(self.link_min_chars)
        return self._linker


class MineSections(NamedTuple):
    """The config sections the mining steps read (the DAG config has them too, under the same names)."""

    kb: KbSection
    link: LinkSection
    qa: QaSection
    tiers: TierSection

    @classmethod
    def of(cls, cfg: ImageMiningConfig) -> "MineSections":
        return cls(cfg.kb, cfg.link, cfg.qa, cfg.tiers)


def _store_path(kb_path: str, kb: KbSection) -> Optional[str]:
    """The sqlite store of this KB (kb.store=sqlite), None for the in-memory KB."""
    if kb.store != "sqlite":
        return None
    return kb.store_path or f"{kb_path}.sqlite"


def _miner_key(kb_path: str, cfg: MineSections) -> str:
    return "|".join(map(str, (kb_path, cfg.kb.store, _store_path(kb_path, cfg.kb), cfg.qa.templates,
                              cfg.qa.language, cfg.qa.min_hops, cfg.qa.check_ocr, cfg.link.min_chars)))


def _acquire(handle: shared.Shared, kb_path: str, cfg: MineSections) -> Miner:
    return handle.acquire(lambda: Miner(kb_path, cfg.qa.templates, cfg.qa.language, cfg.qa.min_hops,
                                        cfg.qa.check_ocr, cfg.link.min_chars, _store_path(kb_path, cfg.kb)),
                          tag=_miner_key(kb_path, cfg))


@dataclass(frozen=True)
class Mined:
    """A question that passed the filters, with what the rewriter and dedup still need."""

    row: QARow
    candidate: qa.Candidate
    context: qa.ImageContext
    answer_key: str

    def dedup_key(self, scope: str) -> str:
        if scope == "image":
            return f"{self.row.image_id}|{self.answer_key}"
        if scope == "entity":
            return f"{self.row.image_entity_id}|{self.answer_key}"
        return self.answer_key


def link_entities(miner: Miner, image: ImageMeta, cfg: MineSections
                  ) -> tuple[list[qa.ImageEntity], int, list[str]]:
    """The image's KB entities: given ids (kept when in the KB), given names (linked), else linked from text.

    Returns (entities, unknown ids given, ambiguous surfaces).
    """
    kb = miner.kb
    out: dict[str, qa.ImageEntity] = {}
    unknown = 0
    ambiguous: list[str] = []
    for eid, ename, box in image.input.entities:
        if box is not None and max(box) <= 1.0:  # a box relative to the image: to pixels
            box = (box[0] * image.width, box[1] * image.height, box[2] * image.width, box[3] * image.height)
        if eid is not None:
            if eid in kb.entities:
                out.setdefault(eid, qa.ImageEntity(eid, box, "id"))
            else:
                unknown += 1
            continue
        links, amb = miner.linker.link({"name": ename or ""})
        ambiguous += amb
        if links:
            out.setdefault(links[0].entity_id, qa.ImageEntity(links[0].entity_id, box, links[0].method))
        else:
            unknown += 1
    if not image.input.entities:
        texts = {f: t for f, t in image.input.texts if f in cfg.link.fields}
        links, amb = miner.linker.link(texts)
        ambiguous += amb
        for link in links:
            out.setdefault(link.entity_id, qa.ImageEntity(link.entity_id, None, link.method))
    return list(out.values())[: cfg.link.max_entities], unknown, ambiguous


def to_row(miner: Miner, image: ImageMeta, c: qa.Candidate, ctx: qa.ImageContext, crop_share: float,
           tiers: TierSection) -> QARow:
    kb = miner.kb
    tags = qa.tag(kb, miner.templates, c, ctx, crop_share)
    start = kb.entities[c.path.start]
    degree = kb.degree.get(start.id, 0)
    tier = qa.tier_for(c.path.kb_hops, tags.visual_hops, tags.crops_needed, degree, tiers.rare_degree,
                       tiers.popular_degree)
    inp = image.input
    answer = qa.answer_fields(kb, c.path.answer)
    steps = qa.tool_steps(kb, c, ctx, tags)
    return QARow(
        sample_id=qa.candidate_id(inp.sample_id, c.path, miner.templates.language), source=inp.source, tier=tier,
        task="visual_jump_qa", origin=inp.origin, url=inp.url, license=inp.license, parent_id=inp.sample_id,
        image_id=image.image_id, width=image.width, height=image.height, question=c.question,
        template_question=c.question, rewritten=False, language=miner.templates.language, **answer,
        image_entity_id=start.id, image_entity_name=start.name, image_entity_type=start.type,
        link_method=c.image_entity.link_method, entity_degree=degree, image_ids=list(tags.image_ids),
        hops=c.path.kb_hops, visual_hops=tags.visual_hops, hop_kinds=["visual" if h.visual else "kb" for h in tags.chain],
        crops_needed=tags.crops_needed,
        relations=[r if qa.is_visual(r) else miner.templates.canonical(r) for r in c.path.relations],
        chain=[Hop(step=h.step, kind=h.kind, subject_id=h.subject_id, subject_name=h.subject_name,
                   relation=h.relation, object_id=h.object_id, object_name=h.object_name, visual=h.visual,
                   image=h.image, box=[float(x) for x in h.box] if h.box is not None else None)
               for h in tags.chain],
        category=tags.category, domain=tags.domain, need_image_before_search=tags.need_image_before_search,
        need_image_during_search=tags.need_image_during_search, requires_crop=tags.requires_crop,
        crop_box=tags.crop_box, box_share=tags.box_share,
        trajectory=[ToolCall(name=n, arguments=a, result=r) for n, a, r in steps],
        messages=json.dumps(openai_messages(c.question, steps, answer["answer"]), ensure_ascii=False),
    )


@dataclass(frozen=True)
class Linked:
    """An image with the KB entities linked to it (what the mining step and the view index read)."""

    image: ImageMeta
    entities: tuple[qa.ImageEntity, ...]

    def view(self) -> Optional[qa.ImageView]:
        """The picture as a view for visual hops: its boxed KB entities (two at least), else None."""
        boxed = tuple(sorted((e.entity_id, e.box) for e in self.entities if e.box is not None))
        if len(boxed) < 2:
            return None
        return qa.ImageView(self.image.image_id, self.image.width, self.image.height, boxed)


def link_image(miner: Miner, image: ImageMeta, cfg: MineSections):
    """One decoded image -> (Linked | Reject | event name)s: box checks, then the KB entities it shows."""
    inp = image.input
    yield "link.in"
    off = [name or eid for eid, name, box in inp.entities if box_off_image(box, image.width, image.height)]
    if off:  # boxes that miss the picture: the listing belongs to another image or another scale
        yield reject_row(inp.sample_id, inp.source, inp.origin, "link", Rejection(
            BOX_OUTSIDE_IMAGE, f"box of {off[0]!r} lies outside the {image.width}x{image.height} image"))
        return
    if image.blank:
        eid, name, _ = inp.entities[image.blank[0]]
        yield reject_row(inp.sample_id, inp.source, inp.origin, "link", Rejection(
            BOX_ON_BLANK, f"box of {name or eid!r} covers nearly uniform pixels (grey std < {BLANK_STD:g}): "
                          "no object there"))
        return
    entities, unknown, ambiguous = link_entities(miner, image, cfg)
    if unknown:
        yield from ["link.unknown_entities"] * unknown
    if ambiguous:
        yield "link.ambiguous_names"
    if not entities:
        if inp.entities:
            verdict = Rejection(UNKNOWN_ENTITY, f"none of the {len(inp.entities)} entities given is in the KB")
        else:
            detail = "no KB name or alias found in " + (", ".join(f for f, _ in inp.texts) or "the row (no text)")
            if ambiguous:
                detail += f"; ambiguous names: {', '.join(ambiguous[:5])}"
            verdict = Rejection(NO_ENTITIES, detail)
        yield reject_row(inp.sample_id, inp.source, inp.origin, "link", verdict)
        return
    yield "link.out"
    yield Linked(image, tuple(entities))


def mine_linked(miner: Miner, linked: Linked, cfg: MineSections,
                views_of: Optional[Callable[[str], Sequence[qa.ImageView]]] = None):
    """One linked image -> (Mined | Reject | event name)s: discover, question, filter, tag.

    `views_of`: entity id -> other pictures of the input showing it (visual hops in the middle); None: KB
    paths only.
    """
    image, entities = linked.image, list(linked.entities)
    inp = image.input
    yield "discover.in"
    ocr = " ".join(t for f, t in inp.texts if f == "ocr_text")
    ctx = qa.ImageContext(image.image_id, image.width, image.height, tuple(entities),
                          normalise(ocr) if ocr else "", inp.domain)
    found = 0
    for ie in entities:
        for c in qa.candidates_for(miner.kb, miner.templates, ctx, ie, cfg.qa.min_hops, cfg.qa.max_hops,
                                   cfg.qa.max_degree, cfg.qa.max_paths_per_entity, views_of):
            found += 1
            yield "discover.out"
            yield "filter.in"
            sid = qa.candidate_id(inp.sample_id, c.path, miner.templates.language)
            verdict = miner.filters.check(c, ctx)
            if verdict is not None:
                yield reject_row(sid, inp.source, inp.origin, "filter", verdict)
                continue
            yield "filter.out"
            yield Mined(to_row(miner, image, c, ctx, cfg.qa.crop_share, cfg.tiers), c, ctx,
                        miner.kb.object_key(c.path.answer))
    if not found:
        yield reject_row(inp.sample_id, inp.source, inp.origin, "discover", Rejection(
            NO_PATH, f"no path of {cfg.qa.min_hops}-{cfg.qa.max_hops} templated hops from "
                       f"{', '.join(e.entity_id for e in entities)}"))


def mine_image(miner: Miner, image: ImageMeta, cfg: MineSections,
               views_of: Optional[Callable[[str], Sequence[qa.ImageView]]] = None):
    """`link_image` then `mine_linked`, in one call (the bare loop of the benchmark, tests)."""
    for out in link_image(miner, image, cfg):
        if isinstance(out, Linked):
            yield from mine_linked(miner, out, cfg, views_of)
        else:
            yield out


def view_index(views: Iterable[qa.ImageView], per_entity: int) -> dict[str, tuple[qa.ImageView, ...]]:
    """entity id -> the views showing it, at most `per_entity` (smallest image ids: the same in every run)."""
    index: dict[str, list[qa.ImageView]] = {}
    for v in views:
        for eid, _ in v.entities:
            index.setdefault(eid, []).append(v)
    return {eid: tuple(_fewest(vs, per_entity)) for eid, vs in index.items()}


def _fewest(views: Iterable[qa.ImageView], n: int) -> list[qa.ImageView]:
    """One view per image id (the smallest listing, for a picture listed twice), the `n` smallest ids."""
    best: dict[str, qa.ImageView] = {}
    for v in views:
        if v.image_id not in best or (v.entities,) < (best[v.image_id].entities,):
            best[v.image_id] = v
    return [best[k] for k in sorted(best)[:n]]


class KeepViews(beam.CombineFn):
    """Per entity: the views showing it, at most `n` (`_fewest`); small accumulators, so it lifts."""

    def __init__(self, n: int):
        self.n = n

    def create_accumulator(self):
        return []

    def add_input(self, acc, view):
        return _fewest([*acc, view], self.n)

    def merge_accumulators(self, accs):
        return _fewest([v for acc in accs for v in acc], self.n)

    def extract_output(self, acc):
        return tuple(acc)


# --------------------------------------------------------------------------- Beam


def read_image_rows(f: InputFile, default_source: str, max_image_bytes: int) -> Iterator[Union[ImageInput, Reject]]:
    """One image-row file -> image inputs and read rejects."""
    for rec in read_rows(f):
        yield parse_image_row(rec, default_source, max_image_bytes)


class ReadImageRows(ReadRecords):
    """Image-row files (JSONL/Parquet) -> (ImageInput, rejects at stage `read`)."""

    def __init__(self, files: list[InputFile], default_source: str, max_image_bytes: int):
        super().__init__(files, functools.partial(read_image_rows, default_source=clean_source(default_source),
                                                  max_image_bytes=max_image_bytes))


class _Decode(beam.DoFn):
    IMAGES = "images"

    def __init__(self, decode: DecodeConfig):
        self.decode = decode

    def process(self, inp: ImageInput):
        decoded = decode_image(inp.image_bytes, self.decode)
        if isinstance(decoded, Rejection):
            yield refused(reject_row(inp.sample_id, inp.source, inp.origin, "decode", decoded))
            return
        image_id = digest(inp.image_bytes)
        yield beam.pvalue.TaggedOutput(self.IMAGES, ImageRecord(
            image_id=image_id, image=ImageCell(bytes=inp.image_bytes), width=decoded.width, height=decoded.height,
            format=decoded.format))
        yield ImageMeta(replace(inp, image_bytes=b""), image_id, decoded.width, decoded.height,
                        blank_boxes(decoded.image, inp.entities) if inp.entities else ())


def _tagged(outputs, counter=None):
    """A step's (kept | Reject | event name)s as Beam outputs."""
    for out in outputs:
        if isinstance(out, str):
            yield beam.pvalue.TaggedOutput(EVENTS_TAG, out)
        elif isinstance(out, Reject):
            yield refused(out)
        else:
            if counter is not None:
                counter.inc()
            yield out


EVENTS_TAG = "events"


class _Link(beam.DoFn):
    def __init__(self, cfg: MineSections, handle: shared.Shared):
        self.cfg = cfg
        self.handle = handle

    def process(self, image: ImageMeta, kb_path: str):
        yield from _tagged(link_image(_acquire(self.handle, kb_path, self.cfg), image, self.cfg))


class _Mine(beam.DoFn):
    def __init__(self, cfg: MineSections, handle: shared.Shared):
        self.cfg = cfg
        self.handle = handle
        self.questions = beam.metrics.Metrics.counter("imagemining", "questions_kept")

    def process(self, linked: Linked, kb_path: str, views: Optional[dict] = None):
        miner = _acquire(self.handle, kb_path, self.cfg)
        views_of = (lambda eid: views.get(eid, ())) if views is not None else None
        yield from _tagged(mine_linked(miner, linked, self.cfg, views_of), self.questions)


class _Rewrite(beam.DoFn):
    """Batches of Mined -> Mined with the paraphrase when it passes every filter, else the template question."""

    def __init__(self, rewriter: RewriterSection, cfg: MineSections, handle: shared.Shared):
        self.rewriter = rewriter
        self.cfg = cfg
        self.handle = handle

    def setup(self):
        from quarry.operators.chat_client import ChatClient, ChatClientConfig

        section = self.rewriter
        self.client = ChatClient(ChatClientConfig(**section.client_fields()))
        self.prompt = qa.load_rewrite_prompt(section.prompt)

    def process(self, batch: list, kb_path: str):
        miner = _acquire(self.handle, kb_path, self.cfg)
        results = self.client.complete_many(qa.rewrite_messages(self.prompt, [m.row.question for m in batch]))
        for m, result in zip(batch, results):
            yield beam.pvalue.TaggedOutput(EVENTS_TAG, "rewrite.in")
            text = qa.parse_rewrite(result.texts[0]) if result.ok and result.texts else None
            if text is None:
                yield beam.pvalue.TaggedOutput(EVENTS_TAG, "rewrite.fallback_error")
                yield m
                continue
            verdict = miner.filters.check(m.candidate, m.context, question=text)
            if verdict is not None:
                yield beam.pvalue.TaggedOutput(EVENTS_TAG, "rewrite.fallback_filtered")
                yield beam.pvalue.TaggedOutput(EVENTS_TAG, f"rewrite.filtered.{verdict.reason}")
                yield m
                continue
            yield beam.pvalue.TaggedOutput(EVENTS_TAG, "rewrite.out")
            yield replace(m, row=m.row.model_copy(update={"question": text, "rewritten": True}))


DEDUP_BUCKETS = 4096  # answer keys are hashed into this many groups: few shuffle elements, small groups


class _KeyForDedup(beam.DoFn):
    """Mined -> (bucket of its answer key, (answer key, packed row dict or its spill reference)): only the row
    crosses the shuffle, compressed or on disk (pipelines/spill.py), gathered per bucket (`Gather`); the
    candidate and image context stay behind, and the id and question are read from the row after the
    shuffle."""

    def __init__(self, scope: str, stash: Stash):
        self.scope = scope
        self.stash = stash

    def process(self, m: Mined):
        key = m.dedup_key(self.scope)
        packed = pack_row(m.row.model_dump(), not self.stash.spills)
        yield stable_bucket(key, DEDUP_BUCKETS), (key, self.stash.put(packed))

    def finish_bundle(self):
        self.stash.finish()


class _NearDuplicates(beam.DoFn):
    """One bucket of answers -> per answer, the row dicts kept, near-duplicates as rejects (decided on the
    questions alone). An answer of more than HOLD rows is read twice rather than held whole."""

    HOLD = 1_000

    def __init__(self, threshold: float, stash: Stash):
        self.threshold = threshold
        self.stash = stash

    def process(self, element):
        _, gathered = element
        by_answer: dict[str, list] = {}
        for key, stashed in records(gathered):
            by_answer.setdefault(key, []).append(stashed)
        for key in sorted(by_answer):
            yield from self._answer(by_answer[key])

    def _answer(self, stashed: list):
        read = lambda s: unpack_row(self.stash.get(s))  # noqa: E731
        held = [read(s) for s in stashed] if len(stashed) <= self.HOLD else None
        rows = held if held is not None else (read(s) for s in stashed)
        questions = {r["sample_id"]: (r["question"], i) for i, r in enumerate(rows)}
        dropped = qa.near_duplicates([(sid, q) for sid, (q, _) in questions.items()], self.threshold)
        for sid, (_, i) in sorted(questions.items()):
            r = held[i] if held is not None else read(stashed[i])
            if sid in dropped:
                yield refused(reject_row(sid, r["source"], Origin(**r["origin"]), "dedup", Rejection(
                    qa.NEAR_DUPLICATE, f"near-duplicate of {dropped[sid]} (same answer)")))
            else:
                yield r

    def finish_bundle(self):
        self.stash.finish()


class _KeyImage(beam.DoFn):
    """ImageRecord -> (image_id, the record packed or its spill reference): the image bytes wait for the join
    with the rows that use them on disk where the run spills."""

    def __init__(self, stash: Stash):
        self.stash = stash

    def process(self, r):
        yield r.image_id, self.stash.put(pack_row(r, not self.stash.spills))

    def finish_bundle(self):
        self.stash.finish()


class _ImagesInUse(beam.DoFn):
    def __init__(self, stash: Stash):
        self.stash = stash

    def process(self, element):
        _, joined = element
        if any(True for _ in joined["used"]):
            for stashed in joined["image"]:  # one copy per image_id already (OneCopyPerImage)
                yield unpack_row(self.stash.get(stashed))

    def finish_bundle(self):
        self.stash.finish()


class CountEvents(beam.PTransform):
    """Event names -> one `_stats/<name>.json` count per name in `names` (zeros included) plus any other seen."""

    def __init__(self, output_dir: str, names: tuple[str, ...]):
        super().__init__()
        self.output_dir = output_dir
        self.names = names

    def expand(self, events):
        out, names = self.output_dir, self.names

        def write(counts: dict) -> None:
            for name in sorted(set(names) | set(counts)):
                write_stats(out, name, {"name": name, "count": int(counts.get(name, 0))})

        return (
            events
            | "CountPerName" >> beam.combiners.Count.PerElement()
            | "ToDict" >> beam.combiners.ToDict()
            | "WriteCounts" >> beam.Map(write)
        )


def kb_rejects(kb_path: str, handle: shared.Shared, cfg: MineSections, source: Optional[str],
               output_dir: Optional[str]):
    """The KB's skipped lines as rejects at stage `kb`; its stats to `_stats/kb.json`."""
    import time

    t0 = time.monotonic()
    miner = _acquire(handle, kb_path, cfg)
    load_s = time.monotonic() - t0
    kb = miner.kb
    if output_dir is not None:
        write_stats(output_dir, KB_STATS,
                    {"name": "kb", "count": kb.lines, "stats": kb.stats(), "load_s": round(load_s, 3)})
    name = posixpath.basename(kb_path)
    source = clean_source(source or "kb")
    for issue in kb.issues:
        origin = Origin(file=kb_path, key=f"line:{issue.line}")
        yield reject_row(content_id("kb", name, str(issue.line)), source, origin, "kb", (issue.reason, issue.detail))


class Outputs(NamedTuple):
    rows: Any  # PCollection[dict]: QARow dicts
    images: Any  # PCollection[ImageRecord]: images some row refers to
    rejected: Any  # PCollection[Reject]


class ImageMiningPipeline(beam.PTransform):
    """PCollection[ImageInput] -> Outputs(rows, images, rejected); counts to `output_dir/_stats`."""

    def __init__(self, cfg: ImageMiningConfig, kb_path: str, output_dir: Optional[str] = None):
        super().__init__()
        self.cfg = cfg
        self.kb_path = kb_path
        self.output_dir = output_dir
        self.handle = shared.Shared()

    def expand(self, inputs):
        cfg, out_dir = self.cfg, self.output_dir
        sections = MineSections.of(cfg)
        kb = inputs.pipeline | "KbPath" >> beam.Create([self.kb_path])
        kb_side = beam.pvalue.AsSingleton(kb)
        decoded = run_stage(inputs, "Decode", _Decode(cfg.decode), out_dir, "decode", tags=(_Decode.IMAGES,))
        # One input file is read and decoded by one worker; mining is the heavy part, so the (byte-free)
        # images spread over all workers first.
        linked = (decoded.kept | "SpreadImages" >> beam.Reshuffle()
                  | "Link" >> beam.ParDo(_Link(sections, self.handle), kb_path=kb_side).with_outputs(
            REJECTED, EVENTS_TAG, main="linked"))
        side: dict[str, Any] = {}
        if cfg.qa.visual_hops:  # entity -> the other pictures showing it, for visual hops in the middle of chains
            views = (linked.linked
                     | "Views" >> beam.FlatMap(lambda lk: [(eid, v) for v in [lk.view()] if v is not None
                                                           for eid, _ in v.entities])
                     | "ViewsPerEntity" >> beam.CombinePerKey(KeepViews(cfg.qa.views_per_entity)))
            side["views"] = beam.pvalue.AsDict(views)
        mined = linked.linked | "Mine" >> beam.ParDo(_Mine(sections, self.handle), kb_path=kb_side, **side) \
            .with_outputs(REJECTED, EVENTS_TAG, main="questions")
        events = [linked[EVENTS_TAG], mined[EVENTS_TAG]]
        questions = mined.questions
        if cfg.rewriter is not None:
            rewritten = (
                questions
                | "BatchForRewrite" >> beam.BatchElements(min_batch_size=1, max_batch_size=cfg.rewriter.batch_size)
                | "Rewrite" >> beam.ParDo(_Rewrite(cfg.rewriter, sections, self.handle), kb_path=kb_side).with_outputs(
                    EVENTS_TAG, main="questions")
            )
            events.append(rewritten[EVENTS_TAG])
            questions = rewritten.questions
        rejected = [decoded.rejected, linked.rejected, mined.rejected]
        if cfg.dedup.enabled:
            stash = Stash(spill_dir(inputs.pipeline, out_dir, "imagemining-dedup") if cfg.shards.spill else None)
            deduped = (
                questions
                | "KeyByAnswer" >> beam.ParDo(_KeyForDedup(cfg.dedup.scope, stash))
                | "GroupByAnswer" >> beam.CombinePerKey(Gather())
                | "NearDuplicates" >> beam.ParDo(_NearDuplicates(cfg.dedup.threshold, stash)).with_outputs(
                    REJECTED, main="rows")
            )
            count_stage(out_dir, "dedup", questions, deduped.rows)
            rows = deduped.rows
            rejected.append(deduped.rejected)
        else:
            rows = questions | "Rows" >> beam.Map(lambda m: m.row.model_dump())
        if cfg.decontam.enabled:  # --set decontam.bench=PATH: questions and answers against benchmark sets
            from quarry.pipelines.decontam import FieldProbe, MaybeDecontaminate

            rows, dc_rejected = rows | "Decontam" >> MaybeDecontaminate(
                cfg.decontam, out_dir, FieldProbe(text=("question", "answer")), dag="imagemining",
                flag_fn=lambda row, _matches: row, shards=cfg.shards, max_pixels=cfg.decode.max_pixels)
            rejected.append(dc_rejected)
        kb_rejected = kb | "KbIssues" >> beam.FlatMap(kb_rejects, self.handle, sections, cfg.source, out_dir)
        rejected.append(kb_rejected)
        # Copies collapse before the join (combiner lifting: per worker, before the shuffle), so an
        # image that many input rows show, and the many rows that use one image, cross it once.
        used = (rows | "UsedImageIds" >> beam.FlatMap(lambda r: [(i, None) for i in r["image_ids"]])
                | "OneUsePerImage" >> beam.CombinePerKey(any_copy))
        images_stash = Stash(spill_dir(inputs.pipeline, out_dir, "imagemining-images") if cfg.shards.spill else None)
        shown = (decoded[_Decode.IMAGES] | "KeyImages" >> beam.ParDo(_KeyImage(images_stash))
                 | "OneCopyPerImage" >> beam.CombinePerKey(any_copy))
        images = (
            {"image": shown, "used": used}
            | "JoinImagesToRows" >> beam.CoGroupByKey()
            | "ImagesInUse" >> beam.ParDo(_ImagesInUse(images_stash))
        )
        if out_dir is not None:
            names = tuple(n for n in EVENTS if not n.startswith("dedup")
                          and (cfg.rewriter is not None or not n.startswith("rewrite")))
            (tuple(events) | "AllEvents" >> beam.Flatten() | "CountEvents" >> CountEvents(out_dir, names))
        return Outputs(rows, images, rejected | "AllRejects" >> beam.Flatten())


# The reasons each stage of the imagemining DAG (dags/imagemining.py: SPEC.stages) can give its reject rows;
# `read` is the reader's. `kb` is no stage of the DAG's list: skipped KB lines, rejects but not inputs.
STAGE_REASONS: dict[str, tuple[str, ...]] = {
    "decode": (decode_ops.CORRUPT, decode_ops.TOO_LARGE),
    "link": (UNKNOWN_ENTITY, NO_ENTITIES, BOX_OUTSIDE_IMAGE, BOX_ON_BLANK),
    "discover": (NO_PATH,),
    "filter": qa.FILTER_REASONS,
    "rewrite": (),
    "dedup": (qa.NEAR_DUPLICATE,),
    "decontam": (decontam_ops.CONTAMINATED_TEXT, decontam_ops.CONTAMINATED_IMAGE),
    "write": (),
    "kb": kb_ops.REASONS,
}
