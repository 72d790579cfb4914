"""`quarry compact DIR`: rewrite a finished run's many small shards as few large ones, in place.

The caption DAG writes one shard per input file and partition (so a killed run resumes per input), which on
a real run is thousands of small files per `source=<s>/tier=<t>` folder. Compaction rewrites each table of
a finished run (`data`, `rejects`, `images`: whichever it has) so that every partition holds shards of about
`target_bytes`, with row groups cut by the writer's own rule (`pipelines/write.py: StreamingShard`: at most
`shards.row_group_size` rows, about `row_group_bytes` by the writer's byte estimate).

What stays the same: every row, its schema (with the `datasets` feature metadata), each column's codec
(read from the old files' footers), and the order of the rows: a partition's old shards are read in
shard-index order, each in its own row order (caption: input file, then input order; the other writers:
hash bucket, then id), so a reader that reads the folder front to back sees the same sequence as before.
Shard boundaries follow from that sequence alone (a shard closes once its rows' estimated bytes reach the
target), so compacting twice, or compacting two equal runs, gives the same bytes. File names keep the
naming contract (`<dag>-<nnnnn>-of-<NNNNN>.parquet`, numbered anew per partition).

How it stays safe:
- It holds the run directory's lock (`DIR/.quarry.lock`, as a run does) and refuses a directory that a
  running run holds, one without a manifest, and one marked `_INCOMPLETE`; and one whose files do not hold
  the rows its manifest counts.
- It streams: old shards are read in record batches of ~16 MB through a 4 MB read buffer, and only the
  new row group being filled waits in memory (as slices of those batches, plus one copy while it is
  written), never a partition. Measured: 300 MB in 200 shards with 8 MB row groups, Arrow's peak 56 MB.
  Pages are cut every 64 values (pyarrow's default of 1,024 made ~64 MB pages of 64 KB images), so the
  new files' pages are smaller than the run writer's; codecs and values are the same.
- New shards go to `DIR/.quarry/compact/new/<table>/`; their rows are counted from the footers, and their
  ids read back in order, against the old files before anything is swapped. Then a journal is written
  (the commit point), and each table is swapped in one atomic exchange of folders (`renameat2`
  RENAME_EXCHANGE; a plain rename pair where the filesystem has none), then the manifest is replaced. A
  kill before the journal leaves the old layout (the next compaction removes the leftovers); a kill after
  it leaves each table wholly old or wholly new, with the same rows, and the next `quarry compact DIR`
  finishes the swap from the journal first.
- The completion markers in `DIR/.quarry/done/` list the old per-input files, so they are removed; the run
  stays finished, so `quarry run ... --resume` on it says "already complete" and changes nothing.
- The manifest keeps its counts (checked again on the swapped files) and records the compaction in a note
  and in `extra.compaction` (settings, files before and after, the new shards with their rows).

Local run directories only (the swap renames folders; object stores have no atomic rename).
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from quarry.dags.runner import INCOMPLETE, LOCK_FILE, DataLossError, UsageError, output_lock, write_manifest
from quarry.pipelines.write import (
    DONE_DIR,
    FAULT_ENV,
    STATE_DIR,
    StreamingShard,
    batch_row_bytes,
    column_codecs,
    write_json_atomic,
)
from quarry.schemas.config import ShardConfig
from quarry.schemas.manifest import Manifest

MB = 1024 * 1024
TARGET_MB = 500
ROW_GROUP_MB = 100
TABLES = ("data", "rejects", "images")  # compacted where present; `data` is Hive-partitioned, the others flat
ID_COLUMNS = ("sample_id", "image_id")  # the first a table has is read back to check the new files' rows
WORK = "compact"  # DIR/.quarry/compact/: new/<table>/, manifest.json, journal.json while a compaction goes
JOURNAL = "journal.json"
NOTE = "compacted by `quarry compact`"
SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>\d+)-of-(?P<count>\d+)\.parquet$")
BATCH_BYTES = 16 * MB  # rows read at a time, by the old footers' bytes per row
WRITE_BATCH = 64  # values between Parquet page-size checks: pages of ~1 MB + 64 values, not 1,024 images
READ_BUFFER = 4 * MB  # read column chunks through a buffer of this size, not a whole row group at once


class CompactError(UsageError):
    """A run directory that cannot be compacted as it is: one line, nothing changed."""


@dataclass
class Table:
    """One table of the run as found: its Parquet files per partition, in shard order."""

    name: str
    partitions: dict[str, list[Path]]  # "source=s/tier=t" (or "") -> files, in shard-index order
    prefix: str
    schema: pa.Schema
    codecs: Any
    rows: dict[str, int]  # partition -> rows (footers)
    id_column: Optional[str]

    @property
    def files(self) -> int:
        return sum(len(f) for f in self.partitions.values())

    @property
    def total(self) -> int:
        return sum(self.rows.values())


@dataclass
class Written:
    """One table rewritten under the work folder."""

    name: str
    shards: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # partition -> (file name, rows)
    ids: dict[str, str] = field(default_factory=dict)  # partition -> hash of the ids in order

    @property
    def files(self) -> int:
        return sum(len(s) for s in self.shards.values())


@dataclass
class CompactReport:
    output: str
    files_before: dict[str, int]
    files_after: dict[str, int]
    rows: dict[str, int]
    seconds: float
    recovered: Optional[str] = None  # what was done first about an interrupted compaction

    def line(self) -> str:
        tables = ", ".join(f"{t} {self.files_before[t]} -> {self.files_after[t]} files ({self.rows[t]:,} rows)"
                           for t in self.files_before)
        return f"compact: {tables or 'no shards'} in {self.seconds:.1f}s -> {self.output}"


def compact(output: str, target_mb: float = TARGET_MB, row_group_mb: float = ROW_GROUP_MB) -> CompactReport:
    """Compact the finished run in `output` in place; see the module docstring. Raises CompactError (nothing
    changed) and DataLossError (the rewritten files do not hold the old rows: nothing swapped; or, checked
    once more after the swap, the message says which table and how many)."""
    t0 = time.monotonic()
    if "://" in output:
        raise CompactError(f"compact: {output}: only local run directories can be compacted (the swap renames "
                           "folders, which object stores cannot do atomically)")
    if target_mb <= 0 or row_group_mb <= 0:
        raise CompactError(f"compact: --target-mb and --row-group-mb must be above 0 (got {target_mb}, {row_group_mb})")
    root = Path(output)
    if not root.is_dir():
        raise CompactError(f"compact: {output} is not a directory")
    with _locked(output):
        recovered = _recover(root)
        manifest = _finished_manifest(root)
        shards_cfg = ShardConfig.model_validate(manifest.config.get("shards", {}))
        cfg = shards_cfg.model_copy(update={"row_group_bytes": max(1024, int(row_group_mb * MB))})
        target = max(1, int(target_mb * MB))
        tables = [t for t in (_scan(root, name, manifest) for name in TABLES) if t is not None]
        _check_against_manifest(root, tables, manifest)
        work = root / STATE_DIR / WORK
        try:
            written = [_rewrite(t, work / "new" / t.name, cfg, target) for t in tables]
            for t, w in zip(tables, written):
                _verify(t, w, work / "new" / t.name)
            _fault("written")
            new_manifest = _recorded(manifest, tables, written, target, cfg)
            write_manifest(str(work), new_manifest)
            journal = {"tables": {t.name: _listing(work / "new" / t.name) for t in tables}}
            write_json_atomic(str(work / JOURNAL), journal)  # the commit point: from here on, roll forward
        except BaseException:
            if not (work / JOURNAL).exists():
                shutil.rmtree(work, ignore_errors=True)  # the old layout was never touched
            raise
        _fault("committed")
        _finish_swap(root, journal)
        after = {t.name: _footer_rows(root / t.name) for t in tables}
        lost = [f"{t.name}: {t.total} rows before, {sum(after[t.name].values())} after"
                for t in tables if after[t.name] != _nonzero(t.rows)]
        if lost:
            raise DataLossError(f"compact: {output}: rows changed in the swap ({'; '.join(lost)})")
        return CompactReport(output, {t.name: t.files for t in tables}, {w.name: w.files for w in written},
                             {t.name: t.total for t in tables}, time.monotonic() - t0, recovered)


class _locked:
    """The run's own lock (`runner.output_lock`), with a compaction's words when a run holds it."""

    def __init__(self, output: str):
        self.output = output
        self.cm = output_lock(output)

    def __enter__(self):
        try:
            return self.cm.__enter__()
        except UsageError:
            holder = (Path(self.output) / LOCK_FILE).read_text().strip() or "unknown"
            raise CompactError(f"compact: {self.output} is in use by a running run ({holder}); "
                               "wait for it to finish, then compact") from None

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)


def _finished_manifest(root: Path) -> Manifest:
    if (root / INCOMPLETE).exists():
        raise CompactError(f"compact: {root} holds an unfinished run ({INCOMPLETE}): finish it with "
                           "`quarry run ... --resume` (or rerun it) before compacting")
    path = root / "manifest.json"
    if not path.exists():
        raise CompactError(f"compact: {root} holds no finished run (no manifest.json)")
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValueError as e:
        raise CompactError(f"compact: {path} is not a quarry manifest ({str(e).splitlines()[0]})") from None


def _shard_key(path: Path) -> tuple[int, str]:
    m = SHARD_NAME.match(path.name)
    return (int(m["index"]) if m else -1, path.name)


def _scan(root: Path, name: str, manifest: Manifest) -> Optional[Table]:
    """A table's files grouped by partition folder; refuses anything but Parquet files, and mixed schemas."""
    top = root / name
    if not top.is_dir():
        return None
    partitions: dict[str, list[Path]] = {}
    for p in sorted(top.rglob("*")):
        if p.is_dir():
            continue
        if p.suffix != ".parquet":
            raise CompactError(f"compact: {p} is not a Parquet shard (a finished run holds only shards in {name}/)")
        partitions.setdefault(_partition(p, top), []).append(p)
    if not partitions:
        return None
    partitions = {k: sorted(v, key=_shard_key) for k, v in sorted(partitions.items())}
    first = next(iter(partitions.values()))[0]
    schema = pq.read_schema(first)
    rows: dict[str, int] = {}
    prefixes = set()
    for part, files in partitions.items():
        rows[part] = 0
        for f in files:
            with pq.ParquetFile(f) as pf:
                if not pf.schema_arrow.equals(schema, check_metadata=True):
                    raise CompactError(f"compact: {f} has another schema than {first}: cannot merge them")
                rows[part] += pf.metadata.num_rows
            m = SHARD_NAME.match(f.name)
            prefixes.add(m["prefix"] if m else None)
    default = manifest.dag if name == "data" else name
    prefix = prefixes.pop() if len(prefixes) == 1 and None not in prefixes else default
    id_column = next((c for c in ID_COLUMNS if c in schema.names), None)
    return Table(name, partitions, prefix, schema, _codecs(first, schema, manifest), rows, id_column)


def _codecs(path: Path, schema: pa.Schema, manifest: Manifest) -> Any:
    """Each column's codec as the old file has it (uncompressed image bytes stay so); the run's configured
    codec by the writer's rule for a file without row groups."""
    meta = pq.read_metadata(path)
    if meta.num_row_groups == 0:
        return column_codecs(schema, manifest.config.get("shards", {}).get("compression", "zstd"))
    rg = meta.row_group(0)
    codecs = {rg.column(i).path_in_schema: rg.column(i).compression for i in range(rg.num_columns)}
    codecs = {c: ("none" if v == "UNCOMPRESSED" else v.lower()) for c, v in codecs.items()}
    return next(iter(codecs.values())) if len(set(codecs.values())) == 1 else codecs


def _partition(path: Path, top: Path) -> str:
    rel = path.parent.relative_to(top).as_posix()
    return "" if rel == "." else rel


def _footer_rows(top: Path) -> dict[str, int]:
    """Rows per partition from the footers; partitions without rows left out."""
    out: dict[str, int] = {}
    for p in sorted(top.rglob("*.parquet")):
        part = _partition(p, top)
        out[part] = out.get(part, 0) + pq.read_metadata(p).num_rows
    return {k: v for k, v in out.items() if v}


def _nonzero(rows: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in rows.items() if v}


def _check_against_manifest(root: Path, tables: list[Table], manifest: Manifest) -> None:
    """A run whose files do not hold what its manifest counts is not compacted (that would hide the loss)."""
    by_name = {t.name: t for t in tables}
    data = by_name.get("data")
    have = _nonzero(data.rows) if data else {}
    if (data.total if data else 0) != manifest.kept or have != _nonzero(manifest.rows_by_partition):
        raise CompactError(f"compact: {root}: data/ holds {data.total if data else 0} rows, the manifest counts "
                           f"{manifest.kept} (or other partitions): not compacting a run that does not add up")
    rejects = by_name.get("rejects")
    if (rejects.total if rejects else 0) != manifest.rejected_total:
        raise CompactError(f"compact: {root}: rejects/ holds {rejects.total if rejects else 0} rows, the manifest "
                           f"counts {manifest.rejected_total}: not compacting a run that does not add up")


def _batch_rows(path: Path) -> int:
    meta = pq.read_metadata(path)
    if meta.num_row_groups == 0 or meta.num_rows == 0:
        return 1024
    per_row = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) / meta.num_rows
    return int(min(8192, max(16, BATCH_BYTES / max(per_row, 1))))


def _rewrite(table: Table, out: Path, cfg: ShardConfig, target: int) -> Written:
    """Stream every partition's rows, in order, into shards of about `target` estimated bytes."""
    written = Written(table.name)
    for part, files in table.partitions.items():
        folder = out / part if part else out
        folder.mkdir(parents=True, exist_ok=True)
        ids = hashlib.sha256()
        done: list[tuple[Path, int]] = []
        shard: Optional[StreamingShard] = None

        def feed(rows: pa.RecordBatch, sizes: list[int]) -> StreamingShard:
            nonlocal shard
            if shard is None:
                shard = StreamingShard(str(folder / f"part-{len(done):05d}.parquet"), table.schema, cfg, table.codecs,
                                       WRITE_BATCH)
            shard.add_batch(rows, sizes)
            return shard

        for f in files:
            with pq.ParquetFile(f, pre_buffer=False, buffer_size=READ_BUFFER) as source:
                for batch in source.iter_batches(batch_size=_batch_rows(f), use_threads=False):
                    if table.id_column is not None:
                        _hash_ids(ids, batch.column(table.id_column))
                    sizes = batch_row_bytes(batch)
                    start, filled = 0, shard.bytes if shard is not None else 0
                    for i, size in enumerate(sizes):  # a shard closes once its rows' bytes reach the target
                        filled += size
                        if filled >= target:
                            full = feed(batch.slice(start, i + 1 - start), sizes[start:i + 1])
                            done.append((Path(full.close()), full.rows))
                            shard, start, filled = None, i + 1, 0
                    if start < batch.num_rows:
                        feed(batch.slice(start), sizes[start:])
        if shard is not None:
            done.append((Path(shard.close()), shard.rows))
        names = []
        for i, (path, n) in enumerate(done):
            name = f"{table.prefix}-{i:05d}-of-{len(done):05d}.parquet"  # the writer's naming contract
            path.rename(folder / name)
            names.append((name, n))
        written.shards[part] = names
        written.ids[part] = ids.hexdigest()
    return written


def _hash_ids(h: "hashlib._Hash", column: pa.Array) -> None:
    for v in column.to_pylist():
        h.update(str(v).encode() + b"\n")


def _verify(table: Table, written: Written, out: Path) -> None:
    """The new files hold the old rows: the same count per partition (footers) and the same ids in order."""
    rows = _footer_rows(out)
    if rows != _nonzero(table.rows):
        raise DataLossError(f"compact: {table.name}: the rewritten shards hold {sum(rows.values())} rows, the old "
                            f"ones {table.total} (nothing was swapped)")
    if table.id_column is None:
        return
    for part, shards in written.shards.items():
        h = hashlib.sha256()
        for name, _ in shards:
            path = (out / part / name) if part else (out / name)
            _hash_ids(h, pq.read_table(path, columns=[table.id_column]).column(table.id_column))
        if h.hexdigest() != written.ids[part]:
            raise DataLossError(f"compact: {table.name}/{part}: the rewritten shards' {table.id_column}s differ from "
                                "the old ones' (nothing was swapped)")


def _recorded(manifest: Manifest, tables: list[Table], written: list[Written], target: int,
              cfg: ShardConfig) -> Manifest:
    """The manifest with the same counts, a note and `extra.compaction` (a second compaction replaces both)."""
    before = {t.name: t.files for t in tables}
    after = {w.name: w.files for w in written}
    summary = ", ".join(f"{t} {before[t]} -> {after[t]} files" for t in before)
    note = (f"{NOTE}: {summary} (shards of ~{target / MB:g} MB, row groups of at most {cfg.row_group_size} rows "
            f"and ~{cfg.row_group_bytes / MB:g} MB), rows and their order unchanged; the per-input completion "
            f"markers ({STATE_DIR}/{DONE_DIR}/) were removed with the files they listed")
    extra = dict(manifest.extra)
    previous = extra.get("compaction", {})
    extra["compaction"] = {
        "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "target_bytes": target,
        "row_group_bytes": cfg.row_group_bytes,
        "row_group_size": cfg.row_group_size,
        "files_before": before,
        "files_after": after,
        "files_written_by_the_run": previous.get("files_written_by_the_run", before),
        "rows": {t.name: t.total for t in tables},
        "shards": {w.name: {f"{part}/{name}" if part else name: n for part, names in w.shards.items()
                            for name, n in names} for w in written},
    }
    notes = [n for n in manifest.notes if not n.startswith(NOTE)] + [note]
    return manifest.model_copy(update={"notes": notes, "extra": extra})


def _listing(top: Path) -> dict[str, int]:
    return {p.relative_to(top).as_posix(): p.stat().st_size for p in sorted(top.rglob("*")) if p.is_file()}


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE); else two renames (a tiny window in
    which `b` is missing, which `_finish_swap` also recovers from)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
    except (OSError, AttributeError):
        pass
    aside = a.with_name(a.name + ".old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def _finish_swap(root: Path, journal: dict[str, Any]) -> None:
    """Put every journaled table in place (each one atomically), then the manifest; remove the stale markers
    and the work folder. Safe to run again after a kill at any point."""
    work = root / STATE_DIR / WORK
    for name, listing in journal["tables"].items():
        live, staged = root / name, work / "new" / name
        if live.is_dir() and _listing(live) == listing:
            continue  # swapped before a kill
        if not (staged.is_dir() and _listing(staged) == listing):
            raise CompactError(f"compact: {root}: cannot finish an interrupted compaction: neither {live} nor "
                               f"{staged} holds the journaled shards of {name}")
        if live.exists():
            _exchange(staged, live)
        else:
            os.rename(staged, live)
        _fault(f"swapped:{name}")
    staged_manifest = work / "manifest.json"
    if staged_manifest.exists():
        os.replace(staged_manifest, root / "manifest.json")
    shutil.rmtree(root / STATE_DIR / DONE_DIR, ignore_errors=True)  # they list the per-input files, now gone
    shutil.rmtree(work)


def _recover(root: Path) -> Optional[str]:
    """What an interrupted compaction left: finished from its journal, or removed (it never touched the run)."""
    work = root / STATE_DIR / WORK
    if not work.exists():
        return None
    journal = work / JOURNAL
    if journal.exists():
        _finish_swap(root, json.loads(journal.read_text()))
        return "finished the swap of an interrupted compaction"
    shutil.rmtree(work)
    return "removed the unfinished files of an interrupted compaction (the run was unchanged)"


def _fault(point: str) -> None:
    """The tests' kill switch: QUARRY_TEST_FAULT=compact:<point> SIGKILLs this process at that point."""
    if os.environ.get(FAULT_ENV, "") == f"compact:{point}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
