"""The Beam side of reading inputs: matching patterns, planning, opening files, `ReadFiles`.

Parsing one opened file is `quarry.operators.inputs` (plain Python); this
module is what needs Beam: paths go through Beam's FileSystems (so `gs://` and
`s3://` work where Beam supports them), files are planned before the pipeline
starts, and `ReadFiles` spreads planned files over workers.

- `plan_files(patterns, InputSpec)`: the one planner. An `InputSpec` says what
  a DAG reads: which kinds of file, which columns it must find or sniff in a
  table (and with what config option the error names), what it looks at in a
  file at plan time. Every DAG's planner is a call of it; an input that cannot
  be read at all fails there, before the pipeline starts, with one line.
- `InputFile`: the one planned-file type (kind, resolved columns, position).
- `read_reject`: a record that did not read (`Unreadable`) -> its `read` reject row.

The caption DAG's reader is here too (`plan_inputs`, `read_file`,
`ReadImageText`): WebDataset tars (`key.jpg|png|...` + `key.txt` + optional
`key.json`), Parquet with image bytes and a caption column, JSONL lines
naming image files, and plain image files with a `stem.txt` caption.
"""

from __future__ import annotations

import functools
import os
import posixpath
import stat
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Optional, Union

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from quarry.operators.ids import content_id
from quarry.operators.inputs import reasons
from quarry.operators.inputs.columns import CAPTION_COLUMNS, IMAGE_COLUMNS, sniff
from quarry.operators.inputs.files import image_file
from quarry.operators.inputs.image_text import CAPTION_ROW_EXTRA, CaptionRecords
from quarry.operators.inputs.jsonl import jsonl_objects, line_reason
from quarry.operators.inputs.kinds import TABLE_KINDS, TABLE_SUFFIXES, kind_of
from quarry.operators.inputs.opening import open_file
from quarry.operators.inputs.parquet import parquet_names, parquet_rows
from quarry.operators.inputs.records import Unreadable, clean_source
from quarry.operators.inputs.tables import first_columns, table_rows
from quarry.operators.inputs.tar import tar_samples
from quarry.pipelines.stage import reject_row
from quarry.pipelines.stats import declare_total, parquet_row_total, tick
from quarry.schemas.common import ImageText, Origin, Reject
from quarry.schemas.config import ReaderConfig

STAGE = "read"
TABLE_ERRORS = (OSError, ValueError)  # what pyarrow raises for a corrupt Parquet page (ArrowInvalid is a ValueError)

__all__ = ["STAGE", "ColumnNeed", "Head", "InputError", "InputFile", "InputSpec", "Read", "ReadEachFile",
           "ReadFiles", "ReadImageText", "RowRecord", "beside", "clean_source", "match_inputs", "open_file", "open_input", "plan_files",
           "plan_inputs", "plan_tables", "read_file", "read_limited", "read_reject", "read_rows", "unreadable_table"]


class InputError(ValueError):
    """An input that cannot be read at all: reported before the pipeline starts."""


class Read(NamedTuple):
    samples: Any  # PCollection[ImageText]
    rejected: Any  # PCollection[Reject]


# --- files through Beam's FileSystems ------------------------------------------------------------


def match_inputs(pattern: str) -> list[str]:
    """Sorted paths matching a file, directory (read recursively) or glob; InputError if unreadable."""
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except BeamIOError as e:
        raise InputError(f"input {pattern}: {e}") from None
    paths = [m.path for m in found]
    # A bare directory matches itself; read what is below it.
    if len(paths) == 1 and _is_dir(paths[0]):
        return match_inputs(FileSystems.join(paths[0], "**"))
    return sorted(p for p in paths if _not_special(p))


def _is_dir(path: str) -> bool:
    return "://" not in path and os.path.isdir(path)


def _not_special(path: str) -> bool:
    """False for a local FIFO, socket or device: opening a FIFO blocks until someone writes to it."""
    if "://" in path:
        return True
    try:
        return not stat.S_ISFIFO(mode := os.stat(path).st_mode) and not stat.S_ISSOCK(mode) and not (
            stat.S_ISCHR(mode) or stat.S_ISBLK(mode))
    except OSError:
        return True  # gone or unreadable: reading it says so


def beside(path: str, base_file: str) -> str:
    """`path` as written in `base_file`: absolute paths and URLs as they are, others relative to its folder."""
    if "://" in path or path.startswith("/"):
        return path
    return FileSystems.join(posixpath.dirname(base_file), path)


def read_limited(path: str, limit: int) -> Union[bytes, str]:
    """A whole (small) file's bytes, or why not: unreadable, not a regular file, or larger than `limit`.

    `path` comes from the data (a JSONL line's image path), so whatever a filesystem raises for it is a reason,
    not an error: for a scheme it has no filesystem for, Beam raises ValueError (file://, http://, gs:// without
    the gcp extra), AttributeError (azfs:// without options) or AssertionError (s3:// without boto3). A local
    FIFO or device (which could block forever or never end) is refused unread.
    """
    if "://" not in path and not _not_special(path):
        return f"cannot read {path}: not a regular file"
    try:
        with FileSystems.open(path, compression_type="uncompressed") as fh:
            data = fh.read(limit + 1)
    except Exception as e:  # noqa: BLE001 - see above
        return f"cannot read {path}: {type(e).__name__}: {str(e)[:200]}"
    if len(data) > limit:
        return f"{path} is larger than {limit} bytes (reader.max_image_bytes)"
    return data


def open_input(path: str, key: str = "") -> Union[IO[bytes], Unreadable]:
    """`path` opened (`open_file`: .gz inputs inflate on the fly), or why not (the file is gone)."""
    try:
        return open_file(path)
    except (BeamIOError, OSError) as e:
        return Unreadable(key, reasons.UNREADABLE_FILE, str(e))


def read_opened(path: str, parse: Callable[[IO[bytes]], Iterable[Any]], key: str = "") -> Iterator[Any]:
    """What `parse` yields from `path` opened, or its Unreadable when it cannot be opened; closed after.

    A file that breaks off while being read (OSError: a truncated .gz) ends with one `#unreadable`
    Unreadable; what was read before it stays.
    """
    fh = open_input(path, key)
    if isinstance(fh, Unreadable):
        yield fh
        return
    with fh:
        try:
            yield from parse(fh)
        except OSError as e:
            yield Unreadable("#unreadable", reasons.UNREADABLE_FILE, f"{type(e).__name__}: {e}")


def unreadable_table(e: BaseException) -> Unreadable:
    """A table that broke while being read (a corrupt Parquet page, a truncated .gz): rows before it stay."""
    return Unreadable("#unreadable", reasons.UNREADABLE_FILE, f"{type(e).__name__}: {e}")


def read_reject(path: str, default_source: str, bad: Unreadable, sample_id: Optional[str] = None) -> Reject:
    """The `read` reject of a record of `path` that did not read; its id is the file name and key's unless given."""
    return reject_row(sample_id or content_id("reject", posixpath.basename(path), bad.key),
                      clean_source(bad.source or default_source), Origin(file=path, key=bad.key), STAGE,
                      (bad.reason, bad.detail))


# --- planning: one planner, one planned-file type ------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    """One planned input file: what it is, and what planning resolved for its reader."""

    path: str
    kind: str  # one of the planning spec's kinds: "tar", "parquet", "jsonl", "image", "svg", "urls", "html", ...
    image_column: Optional[str] = None  # Parquet: the column of image bytes
    caption_column: Optional[str] = None  # Parquet: the caption column; others: the caption field asked for
    svg_column: Optional[str] = None  # Parquet: the SVG column; JSONL: the SVG field asked for
    root: Optional[str] = None  # a saved page: the folder served as the site root
    index: int = 0  # position in the plan (shard numbers of writers that write one shard per input file)
    text_fields: tuple[str, ...] = ()  # columns checked as text (decontam)
    image_fields: tuple[str, ...] = ()  # columns checked as images (decontam)


class Head(NamedTuple):
    """What planning learned by looking into a file: its column names, and anything else the spec's `look` finds."""

    names: Optional[list[str]]  # None: not known (a JSONL file without an object), nothing is checked
    info: Any = None


def footer_names(fh: IO[bytes], kind: str) -> Head:
    """A Parquet file's column names, from its footer."""
    return Head(parquet_names(fh))


@dataclass(frozen=True)
class ColumnNeed:
    """A column a DAG must find in a table: the config names it (`wanted`), or it is sniffed among `candidates`.

    Resolved in the files planning looks into (Parquet footers); other files
    get `wanted` as it is (a JSON field to use, or None). `field` is the
    `InputFile` field that receives the column (None: only checked). The error
    messages are templates over wanted, what, names, option, looked (the
    candidates joined) and candidates.
    """

    field: Optional[str]
    what: str
    wanted: Optional[str]
    candidates: tuple[str, ...] = ()
    option: str = ""
    named_missing: str = "no column {wanted!r} ({what}); columns are {names}"
    not_found: str = "no {what} column (looked for {looked}); columns are {names}. Name it with --set {option}=COLUMN"

    def resolve(self, names: list[str]) -> Union[str, "_Missing"]:
        fmt = dict(wanted=self.wanted, what=self.what, names=names, option=self.option,
                   looked=", ".join(self.candidates), candidates=self.candidates)
        if self.wanted:
            return self.wanted if self.wanted in names else _Missing(self.named_missing.format(**fmt))
        found = sniff(names, self.candidates)
        return found if found is not None else _Missing(self.not_found.format(**fmt))


class _Missing(NamedTuple):
    message: str


@dataclass(frozen=True)
class InputSpec:
    """What a DAG reads, for `plan_files`.

    - `kinds`: the kinds it accepts, by suffix (`operators.inputs.kinds`), first match wins;
      `suffixes` adds kinds of its own or replaces a kind's suffixes;
    - `readable`: how the error names them ("none of the N matching files is {readable}");
    - `columns`: the columns it must find or sniff; `required`: columns every table must have;
    - `look(fh, kind) -> Head`: what planning reads of the files of `look_kinds` (default: Parquet footers);
      `unreadable`: the message when that fails (template over kind and e);
    - `finish(file, pattern, head) -> file`: what else it checks or resolves per file;
    - `what`: the message prefix ("input", "samples", ...); `error`: the exception raised;
      `match`: pattern -> paths (default `match_inputs`).
    """

    kinds: tuple[str, ...]
    readable: str
    suffixes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    columns: tuple[ColumnNeed, ...] = ()
    required: tuple[str, ...] = ()
    look: Callable[[IO[bytes], str], Head] = footer_names
    look_kinds: tuple[str, ...] = ("parquet",)
    unreadable: str = "not a readable Parquet file ({e})"
    finish: Optional[Callable[[InputFile, str, Optional[Head]], InputFile]] = None
    what: str = "input"
    error: type = InputError
    match: Callable[[str], list[str]] = match_inputs


def plan_files(patterns: Iterable[str], spec: InputSpec) -> list[InputFile]:
    """Expand patterns to planned input files; `spec.error` (one line) for what cannot be read at all."""
    files: list[InputFile] = []
    for pattern in patterns:
        paths = spec.match(pattern)
        if not paths:
            raise spec.error(f"{spec.what} {pattern}: no files match")
        readable = [(p, k) for p, k in ((p, kind_of(p, spec.kinds, spec.suffixes)) for p in paths) if k]
        if not readable:
            raise spec.error(f"{spec.what} {pattern}: none of the {len(paths)} matching files is {spec.readable}")
        for path, kind in readable:
            files.append(_plan_file(path, kind, pattern, len(files), spec))
    return files


def _plan_file(path: str, kind: str, pattern: str, index: int, spec: InputSpec) -> InputFile:
    where = f"{spec.what} {path}: "
    head = None
    if kind in spec.look_kinds:
        try:
            with open_file(path) as fh:
                head = spec.look(fh, kind)
        except (BeamIOError, OSError, ValueError) as e:
            raise spec.error(where + spec.unreadable.format(kind=kind, e=e)) from None
    names = head.names if head is not None else None
    if names is not None and spec.required:
        missing = [c for c in spec.required if c not in names]
        if missing:
            raise spec.error(f"{where}missing column(s) {', '.join(missing)}; columns are {sorted(names)}; "
                             f"a {spec.what} file needs {', '.join(spec.required)}")
    resolved: dict[str, Optional[str]] = {}
    for need in spec.columns:
        column = need.wanted if names is None else need.resolve(names)
        if isinstance(column, _Missing):
            raise spec.error(where + column.message)
        if need.field:
            resolved[need.field] = column
    f = InputFile(path, kind, index=index, **resolved)
    return spec.finish(f, pattern, head) if spec.finish else f


# --- table rows (grade, imagemining) ------------------------------------------------------------


def plan_tables(patterns: list[str], required: tuple[str, ...], what: str) -> list[InputFile]:
    """Parquet/JSONL files; InputError for what cannot be read or lacks a required column.

    Parquet: the footer's columns. JSONL: the first line that is a JSON object
    (later lines missing a field become rejects).
    """
    return plan_files(patterns, InputSpec(
        kinds=TABLE_KINDS, suffixes=TABLE_SUFFIXES, readable="Parquet or JSONL", required=required, what=what,
        look=_first_columns, look_kinds=TABLE_KINDS, unreadable="not a readable {kind} file ({e})"))


def _first_columns(fh: IO[bytes], kind: str) -> Head:
    return Head(first_columns(fh, kind))


class RowRecord(NamedTuple):
    """One row of a table file, or why it did not read (`row` None)."""

    file: str
    key: str  # "line:N" (1-based) or "row:N" (0-based)
    row: Optional[dict]  # None when the line/row could not be read
    reason: str = ""
    detail: str = ""


def read_rows(f: InputFile, columns: Optional[tuple[str, ...]] = None) -> Iterator[RowRecord]:
    """One Parquet/JSONL file -> RowRecords, streamed (a Parquet batch at a time)."""
    def parse(fh):
        try:
            for key, rec in table_rows(fh, f.kind, columns):
                yield RowRecord(f.path, key, None, line_reason(rec), rec) if isinstance(rec, str) else \
                    RowRecord(f.path, key, rec)
        except TABLE_ERRORS as e:
            yield unreadable_table(e)

    for item in read_opened(f.path, parse, "#unreadable"):
        yield RowRecord(f.path, item.key, None, item.reason, item.detail) if isinstance(item, Unreadable) else item


# --- the caption DAG's reader --------------------------------------------------------------------


def plan_inputs(patterns: list[str], cfg: ReaderConfig) -> list[InputFile]:
    """Tars, Parquet, JSONL and image files; a Parquet file without an image and a caption column fails here."""
    return plan_files(patterns, InputSpec(
        kinds=("tar", "parquet", "jsonl", "image"), readable="a tar, Parquet, JSONL or image file",
        columns=(ColumnNeed("image_column", "image", cfg.image_column, IMAGE_COLUMNS, "reader.image_column"),
                 ColumnNeed("caption_column", "caption", cfg.caption_column, CAPTION_COLUMNS,
                            "reader.caption_column"))))


def read_file(f: InputFile, default_source: str, cfg: ReaderConfig) -> Iterator[Union[ImageText, Reject]]:
    """Every record of one input file, as samples or read rejects."""
    for rec in _caption_records(f, default_source, cfg):
        yield read_reject(f.path, default_source, rec) if isinstance(rec, Unreadable) else rec


def _caption_records(f: InputFile, default_source: str, cfg: ReaderConfig) -> Iterator[Union[ImageText, Unreadable]]:
    make = CaptionRecords(f.path, default_source, cfg.caption_column, cfg.max_image_bytes)
    if f.kind == "image":
        yield make.from_image_file(image_file(f.path, read_limited, FileSystems.exists, cfg.max_image_bytes))
        return

    def parse(fh):
        if f.kind == "tar":
            yield from map(make.from_tar, tar_samples(fh, cfg.max_image_bytes))
        elif f.kind == "jsonl":
            load = load_beside(f.path, cfg.max_image_bytes)
            for lineno, obj in jsonl_objects(fh):
                yield make.from_line(lineno, obj, load)
        elif f.kind == "parquet":
            try:
                for row, rec in parquet_rows(fh, [f.image_column, f.caption_column, *CAPTION_ROW_EXTRA], 256):
                    yield make.from_row(row, rec, f.image_column, f.caption_column)
            except TABLE_ERRORS as e:
                yield unreadable_table(e)
        else:  # pragma: no cover - plan_inputs only makes the kinds above
            raise ValueError(f"unknown input kind {f.kind}")

    yield from read_opened(f.path, parse)


def _load_beside(rel: str, base: str, limit: int) -> Union[bytes, str]:
    return read_limited(beside(rel, base), limit)


def load_beside(base: str, limit: int) -> Callable[[str], Union[bytes, str]]:
    """A reader of files named in `base` (relative to its folder), up to `limit` bytes; picklable."""
    return functools.partial(_load_beside, base=base, limit=limit)


class ReadEachFile(beam.DoFn):
    """One planned input file -> what `read(file)` yields: records on the main output, `Reject`s on REJECTED.

    `read` is a module-level function, or a `functools.partial` of one, so the DoFn pickles to workers.
    """

    REJECTED = "rejected"

    def __init__(self, read: Callable[[Any], Iterable[Any]]):
        self.read = read
        self.records = beam.metrics.Metrics.counter("read", "records")
        self.rejects = beam.metrics.Metrics.counter("read", "rejected")

    def process(self, f):
        tick("read", n=0)  # the stage starts (its rate counts from here) before its first file ends
        for rec in self.read(f):
            tick("records")
            if isinstance(rec, Reject):
                self.rejects.inc()
                yield beam.pvalue.TaggedOutput(self.REJECTED, rec)
            else:
                self.records.inc()
                yield rec
        tick("read")  # one more file read (the progress line's `read n/N files`)


class ReadRecords(beam.PTransform):
    """Planned input files -> `Read(records, rejected)`: what `read(file)` yields, `Reject`s apart.

    `read` is a module-level function, or a `functools.partial` of one (it pickles to workers). Files
    are reshuffled so that many files spread over workers; one file is read by one worker, streaming.
    Each family's reader is this transform with its own `read`.
    """

    def __init__(self, files: list[InputFile], read: Callable[[InputFile], Iterable[Any]]):
        super().__init__()
        self.files = files
        self.read = read

    def expand(self, pbegin):
        declare_total("read", len(self.files), "files")  # progress totals; Parquet footers say their rows cheaply
        kinds = {getattr(f, "kind", None) for f in self.files}
        declare_total("records", parquet_row_total([f.path for f in self.files]) if kinds == {"parquet"} else None)
        out = pbegin | ReadFiles(self.files, ReadEachFile(self.read), ReadEachFile.REJECTED)
        return Read(out.main, out[ReadEachFile.REJECTED])


class ReadImageText(ReadRecords):
    """Image-text inputs (the caption DAG) -> `Read(samples, rejected)`."""

    def __init__(self, files: list[InputFile], default_source: str, cfg: ReaderConfig):
        super().__init__(files, functools.partial(read_file, default_source=clean_source(default_source), cfg=cfg))


class ReadFiles(beam.PTransform):
    """Input files -> the outputs of `reader`, a DoFn over one file (main + one tagged output).

    Files are reshuffled so that many files spread over workers; one file is
    read by one worker, streaming. The result has `.main` and `[tag]`.
    """

    def __init__(self, files: list, reader: beam.DoFn, tag: str):
        super().__init__()
        self.files = files
        self.reader = reader
        self.tag = tag

    def expand(self, pbegin):
        return (
            pbegin
            | "ListFiles" >> beam.Create(self.files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadRecords" >> beam.ParDo(self.reader).with_outputs(self.tag, main="main")
        )
