"""Contamination checks against benchmark sets: text n-grams and image hashes.

Plain Python (no Beam): normalise, tokenise, hash, load benchmark rows, build
an index, look training rows up in it.

Text (GPT-3's check, as datatrove's `NGramsDecontIndexer` does it):

- `normalize_text`: NFKC, case folded, then datatrove's `simplify_text`
  (lower-case, its punctuation table to spaces, whitespace folded, diacritics
  stripped) with number normalisation OFF (``3+4`` and ``5+6`` are different
  questions; datatrove's default maps both to ``0 0``), then every remaining
  Unicode punctuation or symbol character to a space.
- `tokenize`: whitespace-separated words, except that scripts written
  without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar,
  Tibetan) give one token per character, so a 13-gram of a Chinese question is
  13 characters, and a Chinese question pasted into English text still matches.
- `ngram_hashes`: datatrove's 64-bit xxhash of each n-gram joined by spaces
  (the exact hash datatrove's filter uses, so the two indexes agree).
- A text shorter than n tokens has no n-gram: it is matched whole (exact
  normalised match, `whole_hash`) if it has at least `min_exact_tokens` tokens.

Images: imagehash's 64-bit pHash (`quarry.operators.phash.phash64`) and a
content digest of the bytes. pHash lookup within `max_hamming` bits uses 4
bands of 16 bits with multi-probe: two hashes within distance d differ in at
most ``d // 4`` bits in some band (pigeonhole over 4 bands), so probing every
band value within ``max_hamming // 4`` bits of the query's (1 + 16 + 120 = 137
values per band at the default 8) finds every candidate; the final Hamming
check on the full 64 bits decides. No false negatives, whatever the distance.

The index (`DecontamIndex`) is numpy arrays (sorted uint64 hashes and the
item each came from), so it serialises to one compact ``.npz`` blob and
looks a whole row up with one `searchsorted` per table.
"""

from __future__ import annotations

import array
import io
import itertools
import json
import posixpath
import re
import string
import unicodedata
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np
import regex
from datatrove.utils.hashes.xxhash import xxhash64
from datatrove.utils.text import PUNCTUATION_TRANS, TextNormConfig, simplify_text

from quarry.operators.base import Rejection
from quarry.operators.decode import TOO_LARGE, decode_image
from quarry.operators.ids import digest
from quarry.operators.inputs.tables import table_rows
from quarry.operators.phash import hamming, phash64
from quarry.schemas.caption import DecodeConfig
from quarry.schemas.config import DecontamSection

CONTAMINATED_TEXT = "contaminated_text"
CONTAMINATED_IMAGE = "contaminated_image"
MATCH_REASONS: tuple[str, ...] = (CONTAMINATED_TEXT, CONTAMINATED_IMAGE)  # a `Match`: reject rows at stage decontam
UNREADABLE_IMAGE = "unreadable_image"
# Why a benchmark image could not be indexed (counted in the index stats, never a reject row).
BENCH_IMAGE_REASONS: tuple[str, ...] = (TOO_LARGE, UNREADABLE_IMAGE)
REASONS: tuple[str, ...] = MATCH_REASONS + (UNREADABLE_IMAGE,)

# Defaults are the config sections' (schemas/): the decode pixel limit and the `decontam` section.
DEFAULT_MAX_PIXELS: int = DecodeConfig().max_pixels
_SECTION = DecontamSection()

QUESTION_COLUMNS = ("question", "prompt", "query", "problem")
OPTION_COLUMNS = ("options", "choices")
ANSWER_COLUMNS = ("answer", "solution")
IMAGE_COLUMNS = ("image", "images", "decoded_image")
ID_COLUMNS = ("id", "question_id", "pid", "index", "idx", "sample_id")
_NUMBERED_IMAGE = re.compile(r"^image_(\d+)$")
_SPLIT_SHARD = re.compile(r"^(train|test|testmini|validation|val|dev|eval)(-\d+-of-\d+)?$", re.I)

# Matching kinds, as written in the contamination table.
TEXT_NGRAM, TEXT_EXACT, IMAGE_PHASH, IMAGE_EXACT = "text_ngram", "text_exact", "image_phash", "image_exact"

_NORM = TextNormConfig(norm_numbers=False)
_PUNCT_OR_SYMBOL = regex.compile(r"[\p{P}\p{S}]+")
_SPACES = re.compile(r"\s+")
_COMBINING = regex.compile(r"\p{Mn}+")
_ASCII_PUNCT = str.maketrans({c: " " for c in string.punctuation})  # every ASCII punctuation or symbol
_NO_SPACE_SCRIPTS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"
_TOKEN = regex.compile(rf"[{_NO_SPACE_SCRIPTS}]|[^\s{_NO_SPACE_SCRIPTS}]+")
_UNSPACED = regex.compile(rf"[{_NO_SPACE_SCRIPTS}]")

PHASH_BANDS = 4
_BAND_BITS = 64 // PHASH_BANDS
_BAND_MASK = (1 << _BAND_BITS) - 1


class BenchmarkError(ValueError):
    """A benchmark file that cannot be used at all (missing column, unreadable): one clear line."""


# --- text ------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Case, punctuation, whitespace and Unicode-form folded (see the module docstring).

    Gives what `reference_normalize` (NFKC + casefold + datatrove's `simplify_text`
    without number folding + Unicode punctuation/symbols to spaces) gives, with
    C-speed steps: an ASCII text is lower-cased and its punctuation translated
    in one pass; other texts go through the same steps as regex and translate
    calls instead of datatrove's per-character generator.
    """
    if text.isascii():
        return " ".join(text.lower().translate(_ASCII_PUNCT).split())
    t = unicodedata.normalize("NFKC", text).casefold().translate(PUNCTUATION_TRANS)
    t = _COMBINING.sub("", unicodedata.normalize("NFD", t))  # diacritics, as simplify_text strips them
    t = _PUNCT_OR_SYMBOL.sub(" ", t)
    return unicodedata.normalize("NFC", " ".join(t.split()))


def reference_normalize(text: str) -> str:
    """The slow, obviously-right form of `normalize_text` (kept for tests and audits)."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = simplify_text(t, _NORM)
    t = _PUNCT_OR_SYMBOL.sub(" ", t)
    return unicodedata.normalize("NFC", _SPACES.sub(" ", t).strip())


def tokenize(text: str) -> list[str]:
    """Tokens of a text (normalised here): words, one token per character in unspaced scripts."""
    normal = normalize_text(text)
    return normal.split() if normal.isascii() else _TOKEN.findall(normal)


def ngram_hashes(tokens: list[str], n: int) -> list[int]:
    """datatrove's hash (xxhash64 of the space-joined n-gram) of every n-gram; [] when shorter."""
    return [xxhash64(" ".join(tokens[i:i + n])) for i in range(len(tokens) - n + 1)]


def text_ngram_hashes(text: str, n: int) -> tuple[list[str], list[int]]:
    """(tokens, `ngram_hashes(tokens, n)`) of a raw text, faster: where the normalised text is its
    tokens joined by single spaces (no unspaced script in it), each n-gram is a slice of it."""
    normal = normalize_text(text)
    if normal.isascii() or not _UNSPACED.search(normal):
        tokens = normal.split()
        if len(tokens) < n:
            return tokens, []
        ends, pos = [], -1
        for tok in tokens:
            pos += len(tok) + 1
            ends.append(pos)  # index just past the token
        starts = [0] + [e + 1 for e in ends[:-1]]
        return tokens, [xxhash64(normal[starts[i]:ends[i + n - 1]]) for i in range(len(tokens) - n + 1)]
    tokens = _TOKEN.findall(normal)
    return tokens, ngram_hashes(tokens, n)


def whole_hash(tokens: list[str]) -> int:
    """The hash of a whole (short) text, for exact normalised matching."""
    return xxhash64("\x1fwhole\x1f" + " ".join(tokens))


# --- images ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageKey:
    """What the image check needs of one picture: its pHash and the digest of its bytes."""

    phash: int
    digest64: Optional[int] = None  # first 8 bytes of the blake2b content digest (None: bytes not at hand)

    @staticmethod
    def of_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Union["ImageKey", Rejection]:
        decoded = decode_image(data, DecodeConfig(max_pixels=max_pixels))
        if isinstance(decoded, Rejection):
            return decoded
        return ImageKey(phash64(decoded.image), digest64(data))


def digest64(data: bytes) -> int:
    return int(digest(data)[:16], 16)


def band_values(h: int) -> list[int]:
    """The 4 16-bit bands of a 64-bit hash, most significant first."""
    return [(h >> (_BAND_BITS * (PHASH_BANDS - 1 - b))) & _BAND_MASK for b in range(PHASH_BANDS)]


def _flip_masks(bits: int, radius: int) -> np.ndarray:
    """Every `bits`-bit mask with at most `radius` bits set (0 first)."""
    masks = [0]
    for r in range(1, radius + 1):
        for combo in itertools.combinations(range(bits), r):
            masks.append(sum(1 << b for b in combo))
    return np.array(masks, dtype=np.uint64)


# --- benchmark files -------------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """A benchmark file's resolved columns (None: the file has none of that kind)."""

    question: Optional[str]
    options: Optional[str]
    answer: Optional[str]
    images: tuple[str, ...]
    id: Optional[str]


@dataclass(frozen=True)
class BenchFile:
    path: str
    kind: str  # "parquet" | "jsonl"
    benchmark: str
    columns: Columns


@dataclass
class BenchItem:
    """One benchmark item: its texts by role and its images (bytes, or why they could not be read)."""

    benchmark: str
    item_id: str
    question: str = ""
    options: list[str] = field(default_factory=list)
    answer: str = ""
    images: list[tuple[str, Union[bytes, Rejection]]] = field(default_factory=list)  # (column, bytes or why not)


def benchmark_name(path: str) -> str:
    """`mmmu.parquet` -> mmmu; `mmmu/test-00000-of-00001.parquet` -> mmmu (split shards take their folder's name)."""
    base = posixpath.basename(path)
    stem = base
    for suffix in (".jsonl.gz", ".parquet", ".jsonl", ".ndjson", ".json"):
        if base.lower().endswith(suffix):
            stem = base[: -len(suffix)]
            break
    folder = posixpath.dirname(path)
    while _SPLIT_SHARD.match(stem) and folder:
        stem = posixpath.basename(folder)
        folder = posixpath.dirname(folder)
        if stem.lower() == "data" and folder:  # hub layout: name/data/test-*.parquet
            stem = posixpath.basename(folder)
            folder = posixpath.dirname(folder)
    return stem or base


def resolve_columns(names: list[str], mapping: Any, path: str, benchmark: str) -> Columns:
    """Columns from the mapping (each must exist) or the common names; BenchmarkError naming what is missing.

    `mapping` is a `BenchColumns` section (or None). A file must have a question
    column or an image column, else it cannot be checked against anything.
    """

    def pick(attr: str, candidates: tuple[str, ...]) -> Optional[str]:
        wanted = getattr(mapping, attr, None) if mapping is not None else None
        if wanted:
            if wanted not in names:
                raise BenchmarkError(f"benchmark {benchmark} ({path}): no column {wanted!r} "
                                     f"(decontam.columns.{benchmark}.{attr}); columns are {sorted(names)}")
            return wanted
        return next((c for c in candidates if c in names), None)

    question = pick("question", QUESTION_COLUMNS)
    options = pick("options", OPTION_COLUMNS)
    answer = pick("answer", ANSWER_COLUMNS)
    item_id = pick("id", ID_COLUMNS)
    wanted_images = getattr(mapping, "images", None) if mapping is not None else None
    if wanted_images:
        missing = [c for c in wanted_images if c not in names]
        if missing:
            raise BenchmarkError(f"benchmark {benchmark} ({path}): no column(s) {', '.join(map(repr, missing))} "
                                 f"(decontam.columns.{benchmark}.images); columns are {sorted(names)}")
        images = tuple(wanted_images)
    else:
        numbered = sorted((int(m.group(1)), c) for c in names if (m := _NUMBERED_IMAGE.match(c)))
        images = tuple(c for c in IMAGE_COLUMNS if c in names) + tuple(c for _, c in numbered)
    if question is None and not images:
        raise BenchmarkError(
            f"benchmark {benchmark} ({path}): no question column (looked for {', '.join(QUESTION_COLUMNS)}) and no "
            f"image column (looked for {', '.join(IMAGE_COLUMNS)}, image_1..image_N); columns are {sorted(names)}. "
            f"Name them with --set decontam.columns.{benchmark}.question=COLUMN")
    return Columns(question, options, answer, images, item_id)


def _text_of(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return ""


def _options_of(v: Any) -> list[str]:
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("["):
            try:
                parsed = json.loads(s)
            except (json.JSONDecodeError, RecursionError):
                try:  # MMMU writes Python list reprs
                    import ast

                    parsed = ast.literal_eval(s)
                except (ValueError, SyntaxError, RecursionError, MemoryError):
                    return [v]
            return [_text_of(x) for x in parsed] if isinstance(parsed, list) else [v]
        return [v]
    if isinstance(v, (list, tuple)):
        return [_text_of(x) for x in v]
    if isinstance(v, dict):  # {"label": [...], "text": [...]} as some hub datasets store choices
        texts = v.get("text")
        return [_text_of(x) for x in texts] if isinstance(texts, list) else []
    return []


ReadBytes = Callable[[str, int], Union[bytes, str]]  # (path, limit) -> bytes or why not


def _image_cells(v: Any) -> list[Any]:
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def image_bytes(cell: Any, base_file: str, read_bytes: ReadBytes, limit: int) -> Union[bytes, Rejection, None]:
    """One image cell (bytes, a {bytes, path} struct, or a path relative to `base_file`) -> bytes, why not, or None (empty)."""
    if cell is None:
        return None
    if isinstance(cell, dict):
        data = cell.get("bytes")
        if isinstance(data, (bytes, bytearray)) and data:
            return bytes(data) if len(data) <= limit else Rejection(TOO_LARGE, f"{len(data)} bytes")
        cell = cell.get("path")
        if not cell:
            return None
    if isinstance(cell, (bytes, bytearray)):
        if not cell:
            return None
        return bytes(cell) if len(cell) <= limit else Rejection(TOO_LARGE, f"{len(cell)} bytes")
    if isinstance(cell, str):
        if not cell.strip():
            return None
        path = cell if ("://" in cell or cell.startswith("/")) else posixpath.join(posixpath.dirname(base_file), cell)
        data = read_bytes(path, limit)
        if isinstance(data, str):
            return Rejection(UNREADABLE_IMAGE, data)
        return data
    return Rejection(UNREADABLE_IMAGE, f"an image cell of type {type(cell).__name__}")


def item_from_row(row: dict, f: BenchFile, key: str, read_bytes: ReadBytes, limit: int) -> BenchItem:
    c = f.columns
    rid = row.get(c.id) if c.id else None
    item_id = str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid) else key
    item = BenchItem(f.benchmark, item_id)
    if c.question:
        item.question = _text_of(row.get(c.question))
    if c.options:
        item.options = [o for o in _options_of(row.get(c.options)) if o]
    if c.answer:
        ans = row.get(c.answer)
        item.answer = _text_of(ans) if not isinstance(ans, list) else " ".join(map(_text_of, ans))
    for col in c.images:
        for i, cell in enumerate(_image_cells(row.get(col))):
            data = image_bytes(cell, f.path, read_bytes, limit)
            if data is not None:
                item.images.append((col if i == 0 else f"{col}[{i}]", data))
    return item


def read_benchmark_rows(fh: IO[bytes], f: BenchFile) -> Iterator[tuple[str, Union[dict, str]]]:
    """(key, row or why the row is unreadable) of one benchmark file, streamed."""
    c = f.columns
    wanted = [x for x in (c.question, c.options, c.answer, c.id, *c.images) if x]
    yield from table_rows(fh, f.kind, wanted, batch_size=256)


# --- the index -------------------------------------------------------------------------------


@dataclass
class IndexStats:
    items: int = 0
    benchmarks: dict[str, int] = field(default_factory=dict)  # items per benchmark
    texts_indexed: int = 0
    texts_too_short: int = 0
    images: int = 0
    images_unreadable: int = 0
    unreadable_examples: list[str] = field(default_factory=list)  # "benchmark/item/column: reason" (first few)
    rows_unreadable: int = 0

    def merge(self, other: "IndexStats") -> None:
        self.items += other.items
        for k, v in other.benchmarks.items():
            self.benchmarks[k] = self.benchmarks.get(k, 0) + v
        self.texts_indexed += other.texts_indexed
        self.texts_too_short += other.texts_too_short
        self.images += other.images
        self.images_unreadable += other.images_unreadable
        self.rows_unreadable += other.rows_unreadable
        self.unreadable_examples = sorted(self.unreadable_examples + other.unreadable_examples)[:20]

    def as_dict(self) -> dict:
        return {"items": self.items, "benchmarks": dict(sorted(self.benchmarks.items())),
                "texts_indexed": self.texts_indexed, "texts_too_short": self.texts_too_short,
                "images": self.images, "images_unreadable": self.images_unreadable,
                "rows_unreadable": self.rows_unreadable, "unreadable_examples": self.unreadable_examples}


@dataclass
class IndexPart:
    """Hashes of some benchmark items, before sorting: what one file (or one worker) contributes.

    Items are numbered locally (0..len(items)-1); `merge` renumbers.
    """

    items: list[tuple[str, str]] = field(default_factory=list)  # (benchmark, item_id)
    # Flat typed arrays (not one numpy array per item): they pickle as one buffer between Beam workers.
    ngram: array.array = field(default_factory=lambda: array.array("Q"))  # n-gram hashes
    ngram_items: array.array = field(default_factory=lambda: array.array("q"))  # the item of each
    whole: list[int] = field(default_factory=list)
    whole_items: list[int] = field(default_factory=list)
    phash: list[int] = field(default_factory=list)
    digest: list[int] = field(default_factory=list)
    image_items: list[int] = field(default_factory=list)
    image_labels: list[str] = field(default_factory=list)
    stats: IndexStats = field(default_factory=IndexStats)

    def merge(self, other: "IndexPart") -> "IndexPart":
        offset = len(self.items)
        self.items.extend(other.items)
        self.ngram.extend(other.ngram)
        if other.ngram_items:
            shifted = np.frombuffer(other.ngram_items, dtype=np.int64) + offset
            self.ngram_items.frombytes(shifted.astype(np.int64).tobytes())
        self.whole.extend(other.whole)
        self.whole_items.extend(i + offset for i in other.whole_items)
        self.phash.extend(other.phash)
        self.digest.extend(other.digest)
        self.image_items.extend(i + offset for i in other.image_items)
        self.image_labels.extend(other.image_labels)
        self.stats.merge(other.stats)
        return self


@dataclass(frozen=True)
class IndexSettings:
    ngram: int = _SECTION.ngram
    min_exact_tokens: int = _SECTION.min_exact_tokens
    check_options: bool = _SECTION.check_options
    max_hamming: int = _SECTION.max_hamming
    max_pixels: int = DEFAULT_MAX_PIXELS  # benchmark images decode under the DAG's decode.max_pixels


def index_item(part: IndexPart, item: BenchItem, s: IndexSettings) -> None:
    """Add one benchmark item's hashes to `part`."""
    idx = len(part.items)
    part.items.append((item.benchmark, item.item_id))
    part.stats.items += 1
    part.stats.benchmarks[item.benchmark] = part.stats.benchmarks.get(item.benchmark, 0) + 1
    texts = [item.question]
    if s.check_options:
        texts += item.options + [item.answer]
    hashes: list[int] = []
    for role, text in enumerate(texts):
        tokens, text_hashes = text_ngram_hashes(text, s.ngram) if text else ([], [])
        if not tokens:
            continue
        if text_hashes:
            hashes.extend(text_hashes)
            part.stats.texts_indexed += 1
        elif role == 0 and len(tokens) >= s.min_exact_tokens:
            # Only a question is matched whole when short: a short answer ("B", "42") or option is not evidence.
            part.whole.append(whole_hash(tokens))
            part.whole_items.append(idx)
            part.stats.texts_indexed += 1
        elif role == 0:
            part.stats.texts_too_short += 1
    if hashes:
        arr = np.unique(np.array(hashes, dtype=np.uint64))
        part.ngram.frombytes(arr.tobytes())
        part.ngram_items.frombytes(np.full(len(arr), idx, dtype=np.int64).tobytes())
    for label, data in item.images:
        key = data if isinstance(data, Rejection) else ImageKey.of_bytes(data, s.max_pixels)
        if isinstance(key, Rejection):
            part.stats.images_unreadable += 1
            if len(part.stats.unreadable_examples) < 20:
                part.stats.unreadable_examples.append(f"{item.benchmark}/{item.item_id}/{label}: {key.reason} "
                                                      f"({key.detail[:120]})")
            continue
        part.stats.images += 1
        part.phash.append(key.phash)
        part.digest.append(key.digest64)
        part.image_items.append(idx)
        part.image_labels.append(label)


@dataclass(frozen=True)
class Match:
    """One training-row field that matched one benchmark item."""

    field: str
    kind: str  # TEXT_NGRAM | TEXT_EXACT | IMAGE_PHASH | IMAGE_EXACT
    benchmark: str
    item_id: str
    detail: str  # the matched n-gram, the matched text, or the image column
    distance: Optional[int] = None  # pHash bits, images only

    @property
    def reason(self) -> str:
        return CONTAMINATED_TEXT if self.kind in (TEXT_NGRAM, TEXT_EXACT) else CONTAMINATED_IMAGE


def _sorted_table(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by key, then value: a key held by several items resolves to the first item."""
    order = np.lexsort((values, keys))
    return keys[order], values[order]


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> list[tuple[int, int]]:
    """(query position, value) for every query hash found in the sorted `keys` (first entry per key)."""
    if len(keys) == 0 or len(query) == 0:
        return []
    pos = np.searchsorted(keys, query)
    pos[pos == len(keys)] = 0
    hit = np.nonzero(keys[pos] == query)[0]
    return [(int(i), int(values[pos[i]])) for i in hit]


class DecontamIndex:
    """The benchmark index: sorted hash tables plus item names. Build with `from_part`, ship with `to_bytes`."""

    def __init__(self, settings: IndexSettings, benchmarks: list[str], item_bench: np.ndarray, item_ids: list[str],
                 ngram_keys: np.ndarray, ngram_items: np.ndarray, whole_keys: np.ndarray, whole_items: np.ndarray,
                 phash: np.ndarray, digest_keys: np.ndarray, digest_images: np.ndarray, image_items: np.ndarray,
                 image_labels: list[str], stats: IndexStats):
        self.settings = settings
        self.benchmarks = benchmarks
        self.item_bench = item_bench
        self.item_ids = item_ids
        self.ngram_keys, self.ngram_items = ngram_keys, ngram_items
        self.whole_keys, self.whole_items = whole_keys, whole_items
        self.phash = phash  # uint64 per image
        self.digest_keys, self.digest_images = digest_keys, digest_images
        self.image_items = image_items
        self.image_labels = image_labels
        self.stats = stats
        # One sorted table of (band << 16 | band value) for the four bands: a query's 4 x 137 probes
        # are one searchsorted call.
        self._probes = _flip_masks(_BAND_BITS, settings.max_hamming // PHASH_BANDS)
        band_keys = [((phash >> np.uint64(_BAND_BITS * (PHASH_BANDS - 1 - b))) & np.uint64(_BAND_MASK))
                     | np.uint64(b << _BAND_BITS) for b in range(PHASH_BANDS)]
        self._band_keys, self._band_images = _sorted_table(
            np.concatenate(band_keys) if len(phash) else np.zeros(0, np.uint64),
            np.tile(np.arange(len(phash), dtype=np.int64), PHASH_BANDS))
        self._band_tags = (np.arange(PHASH_BANDS, dtype=np.uint64) << np.uint64(_BAND_BITS))[:, None]
        # CSR offsets: the images of table key k are _band_images[_band_offsets[k]:_band_offsets[k + 1]],
        # so a probe is two array reads, not a binary search (4 x 65,537 int64: 2 MiB).
        self._band_offsets = np.searchsorted(
            self._band_keys, np.arange(PHASH_BANDS * (1 << _BAND_BITS) + 1, dtype=np.uint64)).astype(np.int64)

    # -- building --

    @classmethod
    def from_part(cls, part: IndexPart, settings: IndexSettings) -> "DecontamIndex":
        """Sort everything by (benchmark, item id), so the index (and which item a match names) does
        not depend on the order in which workers contributed their parts."""
        order = sorted(range(len(part.items)), key=part.items.__getitem__)
        rank = np.empty(len(order), dtype=np.int32)  # item numbers as int32: 2**31 items is beyond any benchmark suite
        rank[order] = np.arange(len(order), dtype=np.int32)
        items = [part.items[i] for i in order]
        benchmarks = sorted({b for b, _ in items})
        bench_no = {b: i for i, b in enumerate(benchmarks)}
        item_bench = np.array([bench_no[b] for b, _ in items], dtype=np.int32)
        item_ids = [i for _, i in items]
        if part.ngram:
            ng_keys, ng_items = _sorted_table(np.frombuffer(part.ngram, dtype=np.uint64).copy(),
                                              rank[np.frombuffer(part.ngram_items, dtype=np.int64)])
        else:
            ng_keys, ng_items = np.zeros(0, np.uint64), np.zeros(0, np.int32)
        wh_keys, wh_items = _sorted_table(np.array(part.whole, dtype=np.uint64),
                                          rank[np.array(part.whole_items, dtype=np.int64)])
        img_items = rank[np.array(part.image_items, dtype=np.int64)]
        img_order = sorted(range(len(img_items)), key=lambda j: (int(img_items[j]), part.image_labels[j], part.phash[j]))
        phash = np.array([part.phash[j] for j in img_order], dtype=np.uint64)
        digests = np.array([part.digest[j] for j in img_order], dtype=np.uint64)
        dg_keys, dg_images = _sorted_table(digests, np.arange(len(digests), dtype=np.int64))
        return cls(settings, benchmarks, item_bench, item_ids, ng_keys, ng_items, wh_keys, wh_items,
                   phash, dg_keys, dg_images, img_items[img_order] if len(img_order) else np.zeros(0, np.int64),
                   [part.image_labels[j] for j in img_order], part.stats)

    @classmethod
    def from_items(cls, items: Iterable[BenchItem], settings: IndexSettings) -> "DecontamIndex":
        part = IndexPart()
        for item in items:
            index_item(part, item, settings)
        return cls.from_part(part, settings)

    # -- shipping --

    def to_bytes(self) -> bytes:
        meta = {"settings": self.settings.__dict__, "benchmarks": self.benchmarks, "stats": self.stats.as_dict()}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                 item_bench=self.item_bench, item_ids=np.array(self.item_ids, dtype=object).astype(str),
                 ngram_keys=self.ngram_keys, ngram_items=self.ngram_items, whole_keys=self.whole_keys,
                 whole_items=self.whole_items, phash=self.phash, digest_keys=self.digest_keys,
                 digest_images=self.digest_images, image_items=self.image_items,
                 image_labels=np.array(self.image_labels, dtype=object).astype(str))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "DecontamIndex":
        z = np.load(io.BytesIO(blob), allow_pickle=False)
        meta = json.loads(z["meta"].tobytes())
        s = meta["stats"]
        stats = IndexStats(s["items"], s["benchmarks"], s["texts_indexed"], s["texts_too_short"], s["images"],
                           s["images_unreadable"], s["unreadable_examples"], s["rows_unreadable"])
        return cls(IndexSettings(**meta["settings"]), meta["benchmarks"], z["item_bench"], z["item_ids"].tolist(),
                   z["ngram_keys"], z["ngram_items"], z["whole_keys"], z["whole_items"], z["phash"],
                   z["digest_keys"], z["digest_images"], z["image_items"], z["image_labels"].tolist(), stats)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays and the item names (approximate)."""
        arrays = (self.item_bench, self.ngram_keys, self.ngram_items, self.whole_keys, self.whole_items, self.phash,
                  self.digest_keys, self.digest_images, self.image_items, self._band_keys, self._band_images,
                  self._band_offsets)
        names = sum(len(x) + 49 for x in self.item_ids) + sum(len(x) + 49 for x in self.image_labels)
        return int(sum(a.nbytes for a in arrays) + names + 8 * (len(self.item_ids) + len(self.image_labels)))

    def _item(self, i: int) -> tuple[str, str]:
        return self.benchmarks[int(self.item_bench[i])], self.item_ids[i]

    # -- lookup --

    def check_text(self, field_name: str, text: str) -> Optional[Match]:
        """The first match of one text field (None: clean). Empty text is clean."""
        if not text:
            return None
        n = self.settings.ngram
        tokens, hashes = text_ngram_hashes(text, n)
        if hashes:
            query = np.array(hashes, dtype=np.uint64)
            found = _lookup(self.ngram_keys, self.ngram_items, query)
            if found:
                pos, item = min(found)
                bench, item_id = self._item(item)
                return Match(field_name, TEXT_NGRAM, bench, item_id, " ".join(tokens[pos:pos + n]))
            return None  # whole-text hashes are of questions shorter than n: a longer text cannot be one
        if len(tokens) >= self.settings.min_exact_tokens:
            found = _lookup(self.whole_keys, self.whole_items, np.array([whole_hash(tokens)], dtype=np.uint64))
            if found:
                bench, item_id = self._item(found[0][1])
                return Match(field_name, TEXT_EXACT, bench, item_id, " ".join(tokens)[:300])
        return None

    def phash_candidates(self, h: int) -> np.ndarray:
        """Image numbers whose pHash agrees with `h` on some band up to the probe radius
        (a superset of every image within max_hamming: see the module docstring)."""
        if len(self.phash) == 0:
            return np.zeros(0, np.int64)
        values = np.array(band_values(h), dtype=np.uint64)[:, None]
        probes = ((values ^ self._probes[None, :]) | self._band_tags).ravel().astype(np.int64)  # all distinct
        lo = self._band_offsets[probes]
        counts = self._band_offsets[probes + 1] - lo
        hit = counts > 0
        if not hit.any():
            return np.zeros(0, np.int64)
        lo, counts = lo[hit], counts[hit]
        # every position in the hit ranges, without a Python loop
        starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        positions = starts + np.arange(int(counts.sum()))
        return self._band_images[positions]  # an image sharing several bands comes back more than once

    def check_image(self, field_name: str, key: ImageKey) -> Optional[Match]:
        """Identical bytes, else the nearest benchmark image within max_hamming (None: clean)."""
        found = [] if key.digest64 is None else _lookup(self.digest_keys, self.digest_images,
                                                        np.array([key.digest64], dtype=np.uint64))
        if found:
            image = found[0][1]
            bench, item_id = self._item(int(self.image_items[image]))
            return Match(field_name, IMAGE_EXACT, bench, item_id, self.image_labels[image], 0)
        cands = self.phash_candidates(key.phash)
        if len(cands) == 0:
            return None
        dist = np.bitwise_count(self.phash[cands] ^ np.uint64(key.phash))
        best = int(np.argmin(dist))
        if int(dist[best]) > self.settings.max_hamming:
            return None
        image = int(cands[best])
        bench, item_id = self._item(int(self.image_items[image]))
        return Match(field_name, IMAGE_PHASH, bench, item_id, self.image_labels[image], int(dist[best]))

    def nearest_image_brute(self, h: int) -> Optional[tuple[int, int]]:
        """(image number, distance) of the nearest benchmark pHash by full scan (for tests and audits)."""
        if len(self.phash) == 0:
            return None
        dist = np.bitwise_count(self.phash ^ np.uint64(h))
        best = int(np.argmin(dist))
        return best, int(dist[best])


def check_row(index: DecontamIndex, texts: Iterable[tuple[str, str]],
              images: Iterable[tuple[str, ImageKey]]) -> list[Match]:
    """Every field of one row that matches (one match per field at most), texts first."""
    out: list[Match] = []
    for name, text in texts:
        m = index.check_text(name, text)
        if m is not None:
            out.append(m)
    for name, key in images:
        m = index.check_image(name, key)
        if m is not None:
            out.append(m)
    return out


__all__ = [
    "BenchFile", "BenchItem", "BenchmarkError", "Columns", "DecontamIndex", "ImageKey", "IndexPart",
    "IndexSettings", "IndexStats", "Match", "benchmark_name", "check_row", "hamming", "index_item",
    "item_from_row", "ngram_hashes", "normalize_text", "reference_normalize", "text_ngram_hashes", "resolve_columns", "tokenize", "whole_hash",
]
