"""The knowledge base as an indexed SQLite file, for KBs too large for a worker's memory (`kb.store=sqlite`).

Plain Python, no Beam (the file reader of `ensure_kb_store` goes through
Beam's FileSystems, imported when called). `build_kb_store` streams the KB
JSONL once through the same parser as the in-memory `KnowledgeBase`
(`operators/imagemining/kb.py: read_kb`), so both keep the same entities, facts, objects
order and issues; `SqliteKnowledgeBase` answers the same queries with the
same objects. Memory stays bounded both ways: the build writes in
transactions and keeps facts that name an entity not seen yet in a staging
table; queries go through indexes with bounded LRU caches.

Why an indexed store and not a Beam join: path walks, ambiguity checks and
text-shortcut counts need random access to any part of the KB for each image.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional
from urllib.request import pathname2url

from quarry.operators.imagemining.kb import (
    MAX_ISSUES,
    MIN_CHARS,
    Entity,
    FactLine,
    KbError,
    KbIssue,
    KbQueries,
    KbSink,
    Linker,
    Literal,
    Match,
    Object,
    _word_char,
    entity_names_norm,
    long_enough,
    merge_relations,
    parse_record,
    read_kb,
)

FORMAT = 2  # bump when the tables change: older stores are rebuilt (2: Han and kana end words)
BATCH_ROWS = 50_000  # rows per write transaction
MAX_NAME_SEGMENTS = 32  # names longer than this many word/punctuation runs are not linked from text
_FINGERPRINT_BYTES = 1 << 20

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entities (id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, aliases TEXT NOT NULL,
                       description TEXT NOT NULL, images TEXT NOT NULL);
-- facts as read (before relation renaming); the unique index finds duplicate facts
CREATE TABLE raw_facts (seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, relation TEXT NOT NULL,
                        okey TEXT NOT NULL, object_id TEXT, value TEXT, vtype TEXT, unit TEXT);
CREATE UNIQUE INDEX raw_facts_key ON raw_facts (subject, relation, okey);
-- facts naming an entity not seen yet: the raw line, parsed again once every entity is known
CREATE TABLE pending (line INTEGER PRIMARY KEY, raw TEXT NOT NULL);
CREATE TABLE name_rows (kind INTEGER NOT NULL, surface TEXT NOT NULL, entity_id TEXT NOT NULL);
CREATE TABLE issues (seq INTEGER PRIMARY KEY, line INTEGER NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL);
"""

_FINAL = """
-- rpos: the relation's place among the subject's relations, opos: the object's place in the relation
CREATE TABLE facts (subject TEXT NOT NULL, rpos INTEGER NOT NULL, opos INTEGER NOT NULL, relation TEXT NOT NULL,
                    object_id TEXT, value TEXT, vtype TEXT, unit TEXT,
                    PRIMARY KEY (subject, rpos, opos)) WITHOUT ROWID;
"""

_INDEXES = """
CREATE TABLE degrees (id TEXT PRIMARY KEY, degree INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO degrees SELECT id, SUM(n) FROM (
    SELECT subject AS id, COUNT(*) AS n FROM facts GROUP BY subject
    UNION ALL SELECT object_id, COUNT(*) FROM facts WHERE object_id IS NOT NULL GROUP BY object_id) GROUP BY id;
CREATE TABLE subject_index (type TEXT NOT NULL, relation TEXT NOT NULL, subject TEXT NOT NULL,
                            PRIMARY KEY (type, relation, subject)) WITHOUT ROWID;
INSERT OR IGNORE INTO subject_index SELECT e.type, f.relation, f.subject FROM facts f JOIN entities e ON e.id = f.subject;
-- kind 0: exact names and aliases, 1: normalised; ids joined by \x1f
CREATE TABLE names (kind INTEGER NOT NULL, surface TEXT NOT NULL, ids TEXT NOT NULL,
                    PRIMARY KEY (kind, surface)) WITHOUT ROWID;
INSERT INTO names SELECT kind, surface, group_concat(entity_id, char(31))
    FROM (SELECT DISTINCT kind, surface, entity_id FROM name_rows) GROUP BY kind, surface;
DROP TABLE name_rows;
DROP TABLE raw_facts;
DROP TABLE pending;
"""


def _okey(obj: Object) -> str:
    """What makes two objects the same fact (`Literal` equality is on value, type and unit)."""
    if isinstance(obj, Literal):
        return json.dumps(["l", obj.value, obj.type, obj.unit])
    return "e" + obj


def _segments(text: str) -> list[int]:
    """Positions where a whole-word match may start or end: 0, len(text), and every place that is not
    between two word characters (the rule of `EntityLinker`)."""
    return [0] + [i for i in range(1, len(text)) if not (_word_char(text[i - 1]) and _word_char(text[i]))] + [len(text)]


class _Builder(KbSink):
    """`read_kb`'s sink that writes to SQLite in transactions; memory is bounded by small caches."""

    def __init__(self, con: sqlite3.Connection, progress: Optional[Callable[[str], None]]):
        self.con = con
        self.lines = 0
        self.issue_count = 0
        self.progress = progress
        self._since_commit = 0
        self._seq = 0
        self._known: OrderedDict[str, None] = OrderedDict()  # recently seen entity ids (positive answers only)
        self.max_segments = 0
        self.max_chars = 0

    def _wrote(self, n: int = 1) -> None:
        self._since_commit += n
        if self._since_commit >= BATCH_ROWS:
            self.con.commit()
            self._since_commit = 0
            if self.progress is not None and self.lines and self.lines % 1_000_000 < BATCH_ROWS:
                self.progress(f"kb store: {self.lines:,} lines read")

    def has_entity(self, eid: str) -> bool:
        if eid in self._known:
            return True
        if self.con.execute("SELECT 1 FROM entities WHERE id = ?", (eid,)).fetchone() is None:
            return False
        self._known[eid] = None
        if len(self._known) > 100_000:
            self._known.popitem(last=False)
        return True

    def put_entity(self, entity: Entity) -> bool:
        cur = self.con.execute(
            "INSERT OR IGNORE INTO entities VALUES (?, ?, ?, ?, ?, ?)",
            (entity.id, entity.name, entity.type, json.dumps(entity.aliases), entity.description,
             json.dumps(entity.images)))
        if cur.rowcount == 0:
            return False
        names = [(0, n) for n in dict.fromkeys(entity.names)] + [(1, n) for n in entity_names_norm(entity)]
        self.con.executemany("INSERT INTO name_rows VALUES (?, ?, ?)", [(k, n, entity.id) for k, n in names])
        for _, n in names:
            self.max_segments = max(self.max_segments, len(_segments(n)) - 1)
            self.max_chars = max(self.max_chars, len(n))
        self._wrote(1 + len(names))
        return True

    def put_fact(self, subject: str, relation: str, obj: Object) -> bool:
        self._seq += 1
        row = (obj, None, None, None) if isinstance(obj, str) else (None, obj.value, obj.type, obj.unit)
        cur = self.con.execute("INSERT OR IGNORE INTO raw_facts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (self._seq, subject, relation, _okey(obj), *row))
        self._wrote()
        return cur.rowcount > 0

    def defer(self, lineno: int, raw: str, fact: FactLine) -> None:
        self.con.execute("INSERT INTO pending VALUES (?, ?)", (lineno, raw))
        self._wrote()

    def deferred(self) -> Iterator[tuple[int, FactLine]]:
        self.con.commit()
        # a second cursor: the loop body writes through the connection
        cur = self.con.cursor()
        for lineno, raw in cur.execute("SELECT line, raw FROM pending ORDER BY line"):
            fact = parse_record(raw)
            assert isinstance(fact, FactLine)
            yield lineno, fact

    def issue(self, line: int, reason: str, detail: str) -> None:
        self.issue_count += 1
        if self.issue_count <= MAX_ISSUES:
            self.con.execute("INSERT INTO issues (line, reason, detail) VALUES (?, ?, ?)", (line, reason, detail[:300]))
            self._wrote()

    def finish(self, aliases: dict[str, str]) -> dict[str, int]:
        """Facts renamed per subject (`merge_relations`), then the query tables and indexes."""
        con = self.con
        con.commit()
        con.executescript(_FINAL)
        rows = con.cursor().execute("SELECT subject, relation, object_id, value, vtype, unit FROM raw_facts "
                                    "ORDER BY subject, seq")
        out: list[tuple] = []
        for subject, group in itertools.groupby(rows, key=lambda r: r[0]):
            rels: dict[str, list[Object]] = {}
            for _, relation, oid, value, vtype, unit in group:
                rels.setdefault(relation, []).append(oid if oid is not None else Literal(value, vtype, unit))
            merge_relations(rels, aliases)
            for rpos, (relation, objs) in enumerate(rels.items()):
                for opos, o in enumerate(objs):
                    lit = (None, None, None) if isinstance(o, str) else (o.value, o.type, o.unit)
                    out.append((subject, rpos, opos, relation, o if isinstance(o, str) else None, *lit))
            if len(out) >= BATCH_ROWS:
                con.executemany("INSERT INTO facts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", out)
                out = []
        con.executemany("INSERT INTO facts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", out)
        con.commit()
        con.executescript(_INDEXES)
        facts = con.execute("SELECT COUNT(*) FROM facts").fetchone()[0]
        multi = con.execute("SELECT COUNT(*) FROM (SELECT 1 FROM facts GROUP BY subject, rpos "
                            "HAVING COUNT(*) > 1)").fetchone()[0]
        entities = con.execute("SELECT COUNT(*) FROM entities").fetchone()[0]
        return {"lines": self.lines, "entities": entities, "facts": facts, "multi_valued_pairs": multi,
                "skipped_lines": self.issue_count}


def aliases_digest(relation_aliases: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(relation_aliases.items())).encode()).hexdigest()[:16]


def build_kb_store(lines: Iterable[str], db_path: str, relation_aliases: dict[str, str],
                   fingerprint: Optional[dict] = None, progress: Optional[Callable[[str], None]] = None
                   ) -> dict[str, int]:
    """Stream KB JSONL lines into a SQLite file at `db_path` (written aside, then renamed); returns KB stats.

    `fingerprint` (of the source file, see `kb_fingerprint`) is recorded so a later run can tell whether
    the store is up to date.
    """
    tmp = f"{db_path}.tmp-{os.getpid()}-{threading.get_ident()}"
    Path(tmp).unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        # a temp file renamed only when complete: no journal needed, a crash leaves no half store in place
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        con.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages
        con.executescript(_SCHEMA)
        builder = _Builder(con, progress)
        read_kb(lines, builder)
        stats = builder.finish(relation_aliases)
        meta = {"format": FORMAT, "fingerprint": fingerprint, "aliases": aliases_digest(relation_aliases),
                "stats": stats, "issue_count": builder.issue_count,
                "max_segments": min(builder.max_segments, MAX_NAME_SEGMENTS), "max_chars": builder.max_chars}
        con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        con.commit()
        con.execute("VACUUM")
        con.close()
        os.replace(tmp, db_path)
    except BaseException:
        con.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    return stats


def read_meta(db_path: str) -> Optional[dict[str, Any]]:
    """The store's meta table, or None when the file is missing or no complete store."""
    if not os.path.isfile(db_path):
        return None
    try:
        con = sqlite3.connect(f"file:{pathname2url(os.path.abspath(db_path))}?mode=ro", uri=True)
        try:
            return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
        finally:
            con.close()
    except sqlite3.Error:
        return None


def kb_fingerprint(path: str) -> dict[str, Any]:
    """Size, modification time and digests of the first and last MiB of the KB file (Beam path)."""
    from apache_beam.io.filesystems import FileSystems

    meta = FileSystems.match([path])[0].metadata_list[0]
    h = hashlib.sha256()
    with FileSystems.open(path, compression_type="uncompressed") as fh:
        h.update(fh.read(_FINGERPRINT_BYTES))
        if meta.size_in_bytes > 2 * _FINGERPRINT_BYTES:
            try:
                fh.seek(meta.size_in_bytes - _FINGERPRINT_BYTES)
                h.update(fh.read(_FINGERPRINT_BYTES))
            except (OSError, NotImplementedError, ValueError):  # not seekable: size, mtime and head only
                pass
    return {"size": meta.size_in_bytes, "mtime": getattr(meta, "last_updated_in_seconds", None),
            "digest": h.hexdigest()[:32]}


def ensure_kb_store(kb_path: str, db_path: str, relation_aliases: dict[str, str],
                    log: Callable[[str], None] = print) -> tuple[dict[str, int], bool]:
    """Reuse the store at `db_path` when it was built from this KB file and these relation aliases, else
    build it; returns (KB stats, reused)."""
    from apache_beam.io.filesystem import BeamIOError

    from quarry.operators.imagemining.kb import _lines
    from quarry.operators.inputs.opening import open_file

    try:
        fingerprint = kb_fingerprint(kb_path)
    except (BeamIOError, OSError, IndexError) as e:
        raise KbError(f"knowledge base {kb_path}: cannot read it ({e})") from None
    meta = read_meta(db_path)
    if (meta is not None and meta.get("format") == FORMAT and meta.get("fingerprint") == fingerprint
            and meta.get("aliases") == aliases_digest(relation_aliases)):
        log(f"kb store {db_path}: up to date with {kb_path}, reused")
        return meta["stats"], True
    log(f"kb store {db_path}: {'stale, rebuilding' if meta else 'building'} from {kb_path}")
    t0 = time.monotonic()
    try:
        with open_file(kb_path) as fh:
            stats = build_kb_store(_lines(fh), db_path, relation_aliases, fingerprint, log)
    except (BeamIOError, OSError) as e:
        raise KbError(f"knowledge base {kb_path}: cannot read it ({e})") from None
    log(f"kb store {db_path}: {stats['entities']:,} entities, {stats['facts']:,} facts "
        f"in {time.monotonic() - t0:.1f} s")
    return stats, False


# --------------------------------------------------------------------------- remote stores

_STAGED = "quarry-kb-stores"  # under the temp dir: local copies of remote stores, one per machine


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _remote_size(path: str) -> Optional[int]:
    from apache_beam.io.filesystems import FileSystems

    try:
        found = FileSystems.match([path])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing object or bucket reads as "not there"
        return None
    return found[0].size_in_bytes if found else None


def staged_path(store_path: str) -> str:
    """Where this machine keeps its copy of a remote store (SQLite opens local files only)."""
    import tempfile

    folder = Path(tempfile.gettempdir()) / _STAGED
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / (hashlib.sha256(store_path.encode()).hexdigest()[:24] + ".sqlite"))


def stage_in(store_path: str) -> str:
    """A local copy of a remote store (`gs://.../kb.sqlite`), fetched once per machine: the SDK processes of a
    worker share it (a file lock; the copy lands under its final name atomically). A local path is returned as
    it is. KbError when the remote store cannot be read."""
    if not is_remote(store_path):
        return store_path
    import fcntl
    import shutil

    from apache_beam.io.filesystems import FileSystems

    local = staged_path(store_path)
    size = _remote_size(store_path)
    if size is None:
        raise KbError(f"kb store {store_path}: not found (the driver uploads it when the run starts)")
    with open(local + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(local) and os.path.getsize(local) == size:
            return local
        tmp = f"{local}.{os.getpid()}.part"
        try:
            with FileSystems.open(store_path, compression_type="uncompressed") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
        except OSError as e:
            raise KbError(f"kb store {store_path}: cannot read it ({e})") from None
        os.replace(tmp, local)
    return local


def publish(local: str, store_path: str) -> None:
    """Upload a store the driver built to its remote `store_path` (written beside, then renamed)."""
    import shutil

    from apache_beam.io.filesystems import FileSystems

    tmp = store_path + ".uploading"
    with open(local, "rb") as src, FileSystems.create(tmp) as dst:
        shutil.copyfileobj(src, dst, 8 << 20)
    if _remote_size(store_path) is not None:
        FileSystems.delete([store_path])
    FileSystems.rename([tmp], [store_path])


def ensure_store_anywhere(kb_path: str, store_path: str, relation_aliases: dict[str, str],
                          log: Callable[[str], None] = print) -> tuple[dict[str, int], bool]:
    """`ensure_kb_store` for a local or remote `store_path`: a remote store is fetched to this machine, checked
    against the KB, and uploaded again when it had to be built."""
    if not is_remote(store_path):
        return ensure_kb_store(kb_path, store_path, relation_aliases, log)
    local = stage_in(store_path) if _remote_size(store_path) is not None else staged_path(store_path)
    stats, reused = ensure_kb_store(kb_path, local, relation_aliases, log)
    if not reused:
        log(f"kb store: uploading to {store_path}")
        publish(local, store_path)
    return stats, reused


# --------------------------------------------------------------------------- queries


_MISSING = object()


class LruCache:
    """A bounded mapping: the least recently used entry goes first (thread-safe)."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, key, default=None):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return default

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            if len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def get(self, key, load: Callable[[], Any]):
        value = self.peek(key, _MISSING)
        if value is _MISSING:
            value = load()
            self.put(key, value)
        return value

    def __len__(self) -> int:
        return len(self._data)


class _Entities(Mapping):
    """`kb.entities` read from the store: id -> Entity, insertion order, cached."""

    def __init__(self, kb: "SqliteKnowledgeBase"):
        self._kb = kb

    def _load(self, eid: str):
        row = self._kb._one("SELECT id, name, type, aliases, description, images FROM entities WHERE id = ?", (eid,))
        if row is None:
            return _MISSING
        eid, name, etype, aliases, description, images = row
        return Entity(eid, name, etype, tuple(json.loads(aliases)), description, tuple(json.loads(images)))

    def __getitem__(self, eid: str) -> Entity:
        got = self._kb.entity_cache.get(eid, lambda: self._load(eid)) if isinstance(eid, str) else _MISSING
        if got is _MISSING:
            raise KeyError(eid)
        return got

    def __contains__(self, eid: object) -> bool:
        try:
            self[eid]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        for (eid,) in self._kb._cursor().execute("SELECT id FROM entities ORDER BY rowid"):
            yield eid

    def __len__(self) -> int:
        return self._kb._meta["stats"]["entities"]


class _Degrees(Mapping):
    """`kb.degree` read from the store: facts naming an entity (0 for any other key, like a defaultdict)."""

    def __init__(self, kb: "SqliteKnowledgeBase"):
        self._kb = kb

    def __getitem__(self, eid: str) -> int:
        def load():
            row = self._kb._one("SELECT degree FROM degrees WHERE id = ?", (eid,))
            return 0 if row is None else row[0]

        return self._kb.degree_cache.get(eid, load)

    def get(self, eid, default=None):
        d = self[eid]
        return d if d or self._has(eid) else default

    def _has(self, eid) -> bool:
        return self._kb._one("SELECT 1 FROM degrees WHERE id = ?", (eid,)) is not None

    def __contains__(self, eid: object) -> bool:
        return self._has(eid)

    def __iter__(self) -> Iterator[str]:
        for (eid,) in self._kb._cursor().execute("SELECT id FROM degrees"):
            yield eid

    def __len__(self) -> int:
        return self._kb._one("SELECT COUNT(*) FROM degrees")[0]


class _Subjects(Sequence):
    """`subjects_with`'s answer, read from the index in pages as it is iterated (callers stop early)."""

    PAGE = 1_000

    def __init__(self, kb: "SqliteKnowledgeBase", etype: str, relation: str):
        self._kb, self._key = kb, (etype, relation)

    def __iter__(self) -> Iterator[str]:
        after = ""
        while True:
            page = [s for (s,) in self._kb._cursor().execute(
                "SELECT subject FROM subject_index WHERE type = ? AND relation = ? AND subject > ? "
                "ORDER BY subject LIMIT ?", (*self._key, after, self.PAGE))]
            yield from page
            if len(page) < self.PAGE:
                return
            after = page[-1]

    def __len__(self) -> int:
        return self._kb._one("SELECT COUNT(*) FROM subject_index WHERE type = ? AND relation = ?", self._key)[0]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(self)[i]
        if i < 0:
            i += len(self)
        row = self._kb._one("SELECT subject FROM subject_index WHERE type = ? AND relation = ? "
                            "ORDER BY subject LIMIT 1 OFFSET ?", (*self._key, i)) if i >= 0 else None
        if row is None:
            raise IndexError(i)
        return row[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"_Subjects{self._key}"


class SqliteKnowledgeBase(KbQueries):
    """The `KnowledgeBase` query API over a store built by `build_kb_store`, read-only.

    One connection per thread; entities, degrees, a subject's relations and
    normalised names are cached in bounded LRU caches (`cache_size` entries each).
    """

    def __init__(self, db_path: str, cache_size: int = 100_000):
        self.db_path = db_path
        self._uri = f"file:{pathname2url(os.path.abspath(db_path))}?mode=ro"
        self._local = threading.local()
        meta = read_meta(db_path)
        if meta is None or meta.get("format") != FORMAT:
            raise KbError(f"kb store {db_path}: missing or not a complete store of this version (rebuild it)")
        self._meta = meta
        self.entity_cache = LruCache(cache_size)
        self.degree_cache = LruCache(cache_size)
        self.relations_cache = LruCache(cache_size)
        self.names_cache = LruCache(cache_size)
        self.entities: Mapping[str, Entity] = _Entities(self)
        self.degree: Mapping[str, int] = _Degrees(self)
        self.lines: int = meta["stats"]["lines"]
        self.issue_count: int = meta["issue_count"]
        self.fact_count: int = meta["stats"]["facts"]
        self.aliases_digest: str = meta["aliases"]
        self._issues: Optional[list[KbIssue]] = None

    def _cursor(self) -> sqlite3.Cursor:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = sqlite3.connect(self._uri, uri=True)
        return con.cursor()

    def _one(self, sql: str, args: tuple = ()) -> Optional[tuple]:
        return self._cursor().execute(sql, args).fetchone()

    def relations(self, subject: str) -> dict[str, list[Object]]:
        def load() -> dict[str, list[Object]]:
            rels: dict[str, list[Object]] = {}
            for relation, oid, value, vtype, unit in self._cursor().execute(
                    "SELECT relation, object_id, value, vtype, unit FROM facts WHERE subject = ? ORDER BY rpos, opos",
                    (subject,)):
                rels.setdefault(relation, []).append(oid if oid is not None else Literal(value, vtype, unit))
            return rels

        return self.relations_cache.get(subject, load)

    def objects(self, subject: str, relation: str) -> list[Object]:
        return self.relations(subject).get(relation, [])

    def names_norm(self, eid: str) -> tuple[str, ...]:
        return self.names_cache.get(eid, lambda: entity_names_norm(self.entities[eid]))

    def subjects_with(self, etype: str, relation: str) -> Sequence[str]:
        return _Subjects(self, etype, relation)

    def stats(self) -> dict[str, int]:
        return dict(self._meta["stats"])

    @property
    def issues(self) -> list[KbIssue]:
        """The first MAX_ISSUES issues (all are counted in `issue_count`)."""
        if self._issues is None:
            self._issues = [KbIssue(*row) for row in self._cursor().execute(
                "SELECT line, reason, detail FROM issues ORDER BY seq")]
        return self._issues

    def new_linker(self, min_chars: int = MIN_CHARS) -> "SqliteLinker":
        return SqliteLinker(self, min_chars)

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


class SqliteLinker(Linker):
    """`EntityLinker`'s results from the store's names table: every span of a text that may be a whole-word
    match (up to the longest name's word and punctuation runs) is looked up in the index."""

    def __init__(self, kb: SqliteKnowledgeBase, min_chars: int = MIN_CHARS, cache_size: int = 100_000):
        self.kb = kb
        self.min_chars = min_chars
        self.max_segments = kb._meta["max_segments"]
        self.max_chars = kb._meta["max_chars"]
        self.cache = LruCache(cache_size)  # (kind, surface) -> entity ids (empty: no such name)

    def _lookup(self, kind: int, surfaces: list[str]) -> dict[str, tuple[str, ...]]:
        found: dict[str, tuple[str, ...]] = {}
        todo = []
        for s in surfaces:
            got = self.cache.peek((kind, s))
            if got is None:
                todo.append(s)
            elif got:
                found[s] = got
        for i in range(0, len(todo), 500):
            chunk = todo[i:i + 500]
            hits = {surface: tuple(sorted(ids.split("\x1f"))) for surface, ids in self.kb._cursor().execute(
                f"SELECT surface, ids FROM names WHERE kind = ? AND surface IN ({','.join('?' * len(chunk))})",
                (kind, *chunk))}
            for s in chunk:
                ids = hits.get(s, ())
                self.cache.put((kind, s), ids)
                if ids:
                    found[s] = ids
        return found

    def _find(self, method: str, text: str) -> list[Match]:
        cuts = _segments(text)
        spans: dict[str, list[tuple[int, int]]] = {}
        for a in range(len(cuts) - 1):
            i = cuts[a]
            if text[i].isspace():  # names and aliases are stripped: none starts or ends with a space
                continue
            for b in range(a + 1, min(a + self.max_segments, len(cuts) - 1) + 1):
                j = cuts[b]
                if j - i > self.max_chars:
                    break
                if not long_enough(text[i:j], self.min_chars) or text[j - 1].isspace():
                    continue
                spans.setdefault(text[i:j], []).append((i, j))
        hits = self._lookup(0 if method == "exact" else 1, list(spans))
        return [(i, j, s, ids) for s, ids in hits.items() for i, j in spans[s]]
