"""Write rows as Parquet shards with stable names and contents.

Layout (DESIGN.md):
    DIR/data/source=<s>/tier=<t>/<dag>-<nnnnn>-of-<NNNNN>.parquet
    DIR/rejects/rejects-<nnnnn>-of-<NNNNN>.parquet
    DIR/images/images-<nnnnn>-of-<NNNNN>.parquet

How shards stay identical across reruns and runners: rows are counted (and
their bytes estimated) per partition, the shard count of a partition follows
from `shards.max_rows` / `shards.max_bytes`, each row goes to shard
`hash(id) % count`, and a shard's rows are sorted by id before writing. File
names are fixed by the partition and shard index, so parallel workers never
write the same name, and a retried bundle rewrites the same bytes (files are
written under a temporary name and renamed).
"""

from __future__ import annotations

import math
import pickle
import posixpath
import zlib
from typing import Any, Callable, Iterable, NamedTuple, Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput
from pydantic import BaseModel

from quarry.operators.ids import stable_bucket
from quarry.pipelines.spill import Gather, Stash, records, spill_dir
from quarry.pipelines.stage import REJECTED
from quarry.pipelines.stats import CountTo
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.config import ShardConfig

STAGE = "write"
# Writers that read an input file a second time (caption, interleaved, decontam) reject a kept sample
# whose record is no longer there unchanged.
SOURCE_CHANGED = "source_changed"
REASONS: tuple[str, ...] = (SOURCE_CHANGED,)

Partition = tuple[str, ...]  # e.g. ("source=laion", "tier=hard"); () for an unpartitioned table


def hive_partition(row: dict[str, Any]) -> Partition:
    return (f"source={row['source']}", f"tier={row['tier']}")


def no_partition(row: dict[str, Any]) -> Partition:
    return ()


def _row_bytes(row: dict[str, Any]) -> int:
    """A cheap size estimate: binary payloads dominate, the rest is small."""
    size = 64
    for v in row.values():
        if isinstance(v, (bytes, str)):
            size += len(v)
        elif isinstance(v, dict):
            size += _row_bytes(v)
        elif isinstance(v, list):
            size += 8 * len(v) + sum(len(x) for x in v if isinstance(x, (str, bytes)))
    return size


def shard_path(table_dir: str, partition: Partition, prefix: str, index: int, count: int) -> str:
    return FileSystems.join(table_dir, *partition, f"{prefix}-{index:05d}-of-{count:05d}.parquet")


def image_byte_columns(schema: pa.Schema) -> list[str]:
    """Paths of encoded-image byte columns: `bytes` inside a struct (the Hugging Face Image cell, `{bytes, path}`)."""
    out = []

    def walk(prefix: str, t: pa.DataType) -> None:
        if pa.types.is_struct(t):
            for f in t:
                if f.name == "bytes" and (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)):
                    out.append(f"{prefix}.bytes")
                else:
                    walk(f"{prefix}.{f.name}", f.type)

    for f in schema:
        walk(f.name, f.type)
    return out


def column_codecs(schema: pa.Schema, codec: str) -> Any:
    """The Parquet codec per column: `codec`, except encoded images (PNG/JPEG/WebP), stored as they are, since a
    second compression of their bytes saves ~1% for its CPU."""
    if codec == "none":
        return None
    images = image_byte_columns(schema)
    if not images:
        return codec
    return {c: ("none" if c in images else codec) for c in _leaf_paths(schema)}


def _leaf_paths(schema: pa.Schema) -> list[str]:
    out = []

    def walk(prefix: str, t: pa.DataType) -> None:
        if pa.types.is_struct(t):
            for f in t:
                walk(f"{prefix}.{f.name}", f.type)
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            walk(f"{prefix}.list.element", t.value_type)
        else:
            out.append(prefix)

    for f in schema:
        walk(f.name, f.type)
    return out


class StreamingShard:
    """One Parquet shard written row group by row group (memory: one row group).

    For writers that already know a stable name and order for their rows (one
    input file's rows, in input order) and so need no shuffle to write. Rows come
    as dicts (`add`) or, already in Arrow form, as record batches (`add_batch`,
    dags/compact.py); one shard takes one kind. Either way a row group closes at
    `cfg.row_group_size` rows or once its rows' `_row_bytes` reach
    `cfg.row_group_bytes`, and holds the same bytes.
    """

    def __init__(self, path: str, schema: pa.Schema, cfg: ShardConfig, codecs: Any = None,
                 write_batch_size: Optional[int] = None):
        """`codecs`: the Parquet codec per column path, where not `column_codecs(schema, cfg.compression)`
        (dags/compact.py keeps the codecs of the files it rewrites). `write_batch_size`: values Parquet encodes
        between two page-size checks (pyarrow's default 1,024 makes pages of ~64 MB of 64 KB images, and holds
        that much more while a row group is written)."""
        self.path = path
        self.schema = schema
        self.cfg = cfg
        self.rows = 0
        self.bytes = 0  # the rows' estimated bytes (`_row_bytes`), as the row groups are cut by
        self._pending: list[dict[str, Any]] = []
        self._batches: list[pa.RecordBatch] = []  # from add_batch, dictionary columns decoded
        self._pending_rows = 0
        self._pending_bytes = 0
        self._tmp = path + ".inprogress"
        self._sink = FileSystems.create(self._tmp)
        self._writer = pq.ParquetWriter(self._sink, schema,
                                        compression=column_codecs(schema, cfg.compression) if codecs is None else codecs,
                                        **({} if write_batch_size is None else {"write_batch_size": write_batch_size}))

    def _grow(self, size: int) -> bool:
        """Count one more pending row of `size` estimated bytes; True when its row group is full."""
        self._pending_rows += 1
        self._pending_bytes += size
        self.bytes += size
        self.rows += 1
        return self._pending_rows >= self.cfg.row_group_size or self._pending_bytes >= self.cfg.row_group_bytes

    def add(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        if self._grow(_row_bytes(row)):
            self._flush()

    def add_batch(self, batch: pa.RecordBatch, sizes: list[int]) -> None:
        """Rows of this shard's schema as a record batch, with each row's `_row_bytes` (`batch_row_bytes`):
        cut into row groups by the same rule as `add`, without Python rows. The batch's slices wait for their
        row group, so memory stays one row group."""
        batch = _decoded(batch)
        start = 0
        for i, size in enumerate(sizes):
            if self._grow(size):
                self._batches.append(batch.slice(start, i + 1 - start))
                start = i + 1
                self._flush()
        if start < batch.num_rows:
            self._batches.append(batch.slice(start))

    def _flush(self) -> None:
        if self._pending:
            table = pa.Table.from_pylist(self._pending, schema=self.schema)
        elif self._batches:  # one chunk, dictionaries encoded anew in order of appearance: as from_pylist makes
            table = pa.Table.from_batches(self._batches).combine_chunks().cast(self.schema)
        else:
            return
        self._writer.write_table(table, row_group_size=self.cfg.row_group_size)
        self._pending = []
        self._batches = []
        self._pending_rows = 0
        self._pending_bytes = 0

    def close(self) -> str:
        self._flush()
        self._writer.close()
        self._sink.close()
        if FileSystems.exists(self.path):  # a retried bundle: same name, same content
            FileSystems.delete([self.path])
        FileSystems.rename([self._tmp], [self.path])
        return self.path


def _decoded(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Dictionary columns (the partition columns) as plain values, so row groups made of slices of many files'
    batches get one dictionary each, in order of appearance, whatever dictionaries the files had."""
    if not any(pa.types.is_dictionary(f.type) for f in batch.schema):
        return batch
    cols = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


def batch_row_bytes(batch: pa.RecordBatch, step: int = 256) -> list[int]:
    """`_row_bytes` of each row of a record batch (as Python rows `step` at a time, so at most that many exist)."""
    out: list[int] = []
    for i in range(0, batch.num_rows, step):
        out += [_row_bytes(r) for r in batch.slice(i, step).to_pylist()]
    return out


def write_parquet(path: str, rows: Iterable[dict[str, Any]], schema: pa.Schema, cfg: ShardConfig) -> None:
    """Write rows (already in order) to `path` atomically, in row groups."""
    shard = StreamingShard(path, schema, cfg)
    for row in rows:
        shard.add(row)
    shard.close()


_PACK_RAW, _PACK_ZLIB = b"r", b"z"
_ZLIB_BELOW = 64 * 1024  # rows up to this are text (compress ~3-5x); bigger ones carry image bytes (no gain)


def pack_row(d: dict[str, Any], compress: bool = True) -> bytes:
    """A row dict as it crosses the writer's shuffle: pickled, and zlib'd (level 1) when small and `compress`.
    The runner may hold a shuffle in memory (the DirectRunner holds all of them), so rows travel compressed
    and unpack only in the shard that writes them; rows spilled to disk skip zlib (~30 us a row of the
    ~50 us their packing cost, 1.6x the bytes on a local disk)."""
    blob = pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL)
    return _PACK_ZLIB + zlib.compress(blob, 1) if compress and len(blob) < _ZLIB_BELOW else _PACK_RAW + blob


def unpack_row(b: bytes) -> dict[str, Any]:
    return pickle.loads(zlib.decompress(b[1:]) if b[:1] == _PACK_ZLIB else b[1:])


class _KeyByPartition(beam.DoFn):
    """row dict -> (partition, (id, bytes, packed row or its spill reference))."""

    def __init__(self, partition_fn: Callable[[dict[str, Any]], Partition], id_field: str,
                 size_fn: Callable[[dict[str, Any]], int], stash: Stash):
        self.partition_fn = partition_fn
        self.id_field = id_field
        self.size_fn = size_fn
        self.stash = stash

    def process(self, d):
        stash = self.stash
        yield self.partition_fn(d), (d[self.id_field], self.size_fn(d), stash.put(pack_row(d, not stash.spills)))

    def finish_bundle(self):
        self.stash.finish()


class _WriteShard(beam.DoFn):
    def __init__(self, table_dir: str, prefix: str, schema: pa.Schema, cfg: ShardConfig, id_field: str,
                 stash: Stash, attach: Optional[Callable[..., Iterable[Any]]] = None):
        self.table_dir = table_dir
        self.prefix = prefix
        self.schema = schema
        self.cfg = cfg
        self.id_field = id_field
        self.stash = stash
        self.attach = attach
        self.rows_written = beam.metrics.Metrics.counter("write", f"{prefix}_rows")

    def process(self, element, shard_counts, **side):
        (partition, index), gathered = element
        get = self.stash.get
        ordered = (unpack_row(get(b)) for _, b in sorted(records(gathered), key=lambda p: p[0]))  # (id, packed row)s
        shard = StreamingShard(shard_path(self.table_dir, partition, self.prefix, index, shard_counts[partition]),
                               self.schema, self.cfg)
        for row in ordered if self.attach is None else self.attach(ordered, **side):
            if isinstance(row, TaggedOutput):  # a row `attach` refused: its reject
                yield row
            else:
                shard.add(row)
        self.rows_written.inc(shard.rows)
        yield shard.close()

    def finish_bundle(self):
        self.stash.finish()


def _shard_count(stats: tuple[int, int], cfg: ShardConfig) -> int:
    rows, nbytes = stats
    return max(1, math.ceil(rows / cfg.max_rows), math.ceil(nbytes / cfg.max_bytes))


class _SumPairs(beam.CombineFn):
    def create_accumulator(self):
        return (0, 0)

    def add_input(self, acc, x):
        return (acc[0] + x[0], acc[1] + x[1])

    def merge_accumulators(self, accs: Iterable[tuple[int, int]]):
        rows = nbytes = 0
        for r, b in accs:
            rows += r
            nbytes += b
        return (rows, nbytes)

    def extract_output(self, acc):
        return acc


class WriteParquetTable(beam.PTransform):
    """PCollection of pydantic rows -> Parquet shards under `table_dir`.

    Returns the PCollection of written file paths; with `attach`, `(paths, rejected)`. `attach(rows, **side)`
    (side: `side_inputs`, e.g. an `AsSingleton`) completes a shard's row dicts, in id order, as they are
    written: it yields each row to write, or a `refused` reject instead. So a payload it can make again
    (a rendered image) need not travel the shuffle; `size_fn` then estimates a row's bytes with it.
    """

    def __init__(self, table_dir: str, prefix: str, model: type[BaseModel], cfg: ShardConfig,
                 partition_fn: Callable[[dict[str, Any]], Partition] = no_partition, id_field: str = "sample_id",
                 attach: Optional[Callable[..., Iterable[Any]]] = None, side_inputs: Optional[dict[str, Any]] = None,
                 size_fn: Callable[[dict[str, Any]], int] = _row_bytes):
        super().__init__()
        self.table_dir = table_dir
        self.prefix = prefix
        self.model = model
        self.cfg = cfg
        self.partition_fn = partition_fn
        self.id_field = id_field
        self.attach = attach
        self.attach_inputs = side_inputs or {}
        self.size_fn = size_fn

    def expand(self, rows):
        cfg = self.cfg
        parent, name = posixpath.split(self.table_dir.rstrip("/"))
        stash = Stash(spill_dir(rows.pipeline, parent, f"{name}-{self.prefix}") if cfg.spill else None)
        keyed = (  # (partition, (id, bytes, packed row or reference)): waits for the shard counts, crosses the shuffle
            rows
            | "ToDict" >> beam.Map(lambda r: r.model_dump() if isinstance(r, BaseModel) else r)
            | "KeyByPartition" >> beam.ParDo(_KeyByPartition(self.partition_fn, self.id_field, self.size_fn, stash))
        )
        counts = (
            keyed
            | "SizeRows" >> beam.Map(lambda kv: (kv[0], (1, kv[1][1])))
            | "SizePartitions" >> beam.CombinePerKey(_SumPairs())
            | "ShardCounts" >> beam.Map(lambda kv: (kv[0], _shard_count(kv[1], cfg)))
        )
        write = beam.ParDo(_WriteShard(self.table_dir, self.prefix, arrow_schema(self.model), cfg, self.id_field,
                                       stash, self.attach), shard_counts=beam.pvalue.AsDict(counts), **self.attach_inputs)
        written = (
            keyed
            | "AssignShard" >> beam.Map(
                lambda kv, n: ((kv[0], stable_bucket(kv[1][0], n[kv[0]])), (kv[1][0], kv[1][2])),
                n=beam.pvalue.AsDict(counts))
            | "GroupShards" >> beam.CombinePerKey(Gather())  # a GroupByKey of compact records (pipelines/spill.py)
            | "WriteShard" >> (write if self.attach is None else write.with_outputs(REJECTED, main="paths"))
        )
        return written if self.attach is None else (written.paths, written[REJECTED])


# `_stats/<name>.json` counts of what reached the writers; the manifest compares them with the rows in
# the files, so rows lost between the pipeline and the shards fail the run instead of going unnoticed.
WRITE_ROWS, WRITE_REJECTS = "write.rows", "write.rejects"


class _CountedWrite(beam.PTransform):
    def __init__(self, output_dir: str, count_name: str, inner: WriteParquetTable):
        super().__init__()
        self.output_dir = output_dir
        self.count_name = count_name
        self.inner = inner

    def expand(self, rows):
        rows | "CountSent" >> CountTo(self.output_dir, self.count_name)
        return rows | self.inner


class WriteShards(_CountedWrite):
    """Output rows -> `DIR/data/source=<s>/tier=<t>/<dag>-nnnnn-of-NNNNN.parquet`."""

    def __init__(self, output_dir: str, dag: str, model: type[BaseModel], cfg: ShardConfig):
        super().__init__(output_dir, WRITE_ROWS,
                         WriteParquetTable(FileSystems.join(output_dir, "data"), dag, model, cfg, hive_partition))


class WriteRejects(_CountedWrite):
    """Reject rows -> `DIR/rejects/rejects-nnnnn-of-NNNNN.parquet`."""

    def __init__(self, output_dir: str, cfg: ShardConfig):
        from quarry.schemas.common import Reject

        super().__init__(output_dir, WRITE_REJECTS,
                         WriteParquetTable(FileSystems.join(output_dir, "rejects"), "rejects", Reject, cfg))


def any_copy(values):
    """CombinePerKey fn for values that are all equal (an image_id is a content hash): keep any one."""
    return next(iter(values))


class WriteImages(beam.PTransform):
    """Shared images -> `DIR/images/images-nnnnn-of-NNNNN.parquet`, one row per distinct `image_id`."""

    def __init__(self, output_dir: str, cfg: ShardConfig):
        super().__init__()
        from quarry.schemas.common import ImageRecord

        self.inner = WriteParquetTable(FileSystems.join(output_dir, "images"), "images", ImageRecord, cfg,
                                       id_field="image_id")

    def expand(self, images):
        return (
            images
            | "KeyByImageId" >> beam.Map(lambda r: (r.image_id, r))
            | "OnePerImage" >> beam.CombinePerKey(any_copy)
            | "DropKey" >> beam.Values()
            | self.inner
        )


def written_files(table_dir: str) -> list[str]:
    """Every Parquet file below a table directory (no temporaries)."""
    pattern = FileSystems.join(table_dir, "**")
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except BeamIOError:  # a missing directory simply holds no files
        return []
    return sorted(m.path for m in found if m.path.endswith(".parquet"))


def count_rows(paths: list[str]) -> dict[str, int]:
    """Rows per file from Parquet footers (no data pages read)."""
    out = {}
    for p in paths:
        with FileSystems.open(p, compression_type="uncompressed") as fh:
            out[p] = pq.ParquetFile(fh).metadata.num_rows
    return out



# Completion markers (datatrove-style): a writer that commits one input's files at a time records them in
# `DIR/.quarry/done/<key>.json`, written (atomically) after those files are final. A resumed run keeps the
# files a marker lists and skips that input's write; every other data file is a leftover and is removed.
STATE_DIR = ".quarry"
DONE_DIR = "done"
# A fault hook for the resume tests: `kill:N` SIGKILLs the run, `pause:N` sleeps, right after its N-th commit.
FAULT_ENV = "QUARRY_TEST_FAULT"


def marker_path(output_dir: str, key: str) -> str:
    return FileSystems.join(output_dir, STATE_DIR, DONE_DIR, f"{key}.json")


def write_json_atomic(path: str, payload: dict[str, Any]) -> None:
    import json

    tmp = path + ".inprogress"
    with FileSystems.create(tmp) as fh:
        fh.write(json.dumps(payload, sort_keys=True, indent=1).encode())
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def commit_input(output_dir: str, key: str, files: list[str], payload: dict[str, Any]) -> None:
    """Mark one input's files final: `files` (paths under `output_dir`) plus what a resumed run needs again."""
    rel = sorted(p[len(output_dir):].lstrip("/") for p in files)
    write_json_atomic(marker_path(output_dir, key), {**payload, "files": rel})
    _fault_point()


_commits = 0


def _fault_point() -> None:
    import os

    global _commits
    _commits += 1
    fault = os.environ.get(FAULT_ENV, "")
    if ":" not in fault:
        return
    what, n = fault.split(":", 1)
    if _commits == int(n):
        if what == "kill":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        elif what == "pause":
            import time

            time.sleep(120)


def read_markers(output_dir: str) -> dict[str, dict[str, Any]]:
    """key -> marker payload for every committed input (none for a fresh directory)."""
    import json

    pattern = FileSystems.join(output_dir, STATE_DIR, DONE_DIR, "*.json")
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except BeamIOError:
        return {}
    out = {}
    for m in found:
        with FileSystems.open(m.path, compression_type="uncompressed") as fh:
            out[m.path.rsplit("/", 1)[-1][: -len(".json")]] = json.loads(fh.read())
    return out


class Committed(NamedTuple):
    """What a resumed writer hands on for a committed input instead of writing it again."""

    files: list[str]  # the committed files' paths
    rejects: list[dict[str, Any]]  # its write rejects, as `Reject` dicts


def committed_output(output_dir: str, marker: Optional[dict[str, Any]], digest: str) -> Optional[Committed]:
    """A marker's files and rejects when it was written for the same rows (`digest`, its `kept`) and its files
    are all there; None: the input is written again."""
    if marker is None or marker.get("kept") != digest:
        return None
    files = [FileSystems.join(output_dir, rel) for rel in marker["files"]]
    if not all(FileSystems.exists(p) for p in files):
        return None
    return Committed(files, list(marker.get("rejects", [])))


def committed_files(output_dir: str, markers: dict[str, dict[str, Any]]) -> set[str]:
    return {FileSystems.join(output_dir, rel) for m in markers.values() for rel in m["files"]}
