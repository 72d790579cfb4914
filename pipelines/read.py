"""Read image-text inputs in the formats users already have.

- WebDataset / img2dataset tar shards: `key.jpg|png|webp|...` + `key.txt` +
  optional `key.json` (members of one sample adjacent, as WebDataset writes them);
- Parquet with image bytes (binary, or a `{bytes, path}` struct as Hugging Face
  writes it) and a caption column;
- JSONL whose lines point to image files (relative to the JSONL's folder);
- a directory or glob of image files, a sidecar `stem.txt` being the caption.

Every path goes through Beam's FileSystems, so `gs://` and `s3://` work where
Beam supports them. A record that cannot be read becomes a `Reject` at stage
`read`; an input that cannot be read at all fails before the pipeline starts
(`plan_inputs`).
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
import tarfile
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator, NamedTuple, Optional, Union

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from quarry.operators.ids import content_id, digest
from quarry.operators.tables import jsonl_objects
from quarry.schemas.common import ImageText, Origin, Reject
from quarry.schemas.config import ReaderConfig

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
SIDECAR_EXTS = ("txt", "json", "caption")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PARQUET_SUFFIXES = (".parquet",)
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
IMAGE_COLUMNS = ("image", "jpg", "png", "webp", "image_bytes", "bytes", "img")
CAPTION_COLUMNS = ("caption", "text", "txt", "alt", "TEXT", "CAPTION")
IMAGE_PATH_FIELDS = ("image", "image_path", "path", "file", "file_name")
STAGE = "read"

_SOURCE_CHARS = re.compile(r"[^A-Za-z0-9_.\-]+")


class InputError(ValueError):
    """An input that cannot be read at all: reported before the pipeline starts."""


class Read(NamedTuple):
    samples: Any  # PCollection[ImageText]
    rejected: Any  # PCollection[Reject]


@dataclass(frozen=True)
class InputFile:
    path: str
    kind: str  # "tar" | "parquet" | "jsonl" | "image"
    image_column: Optional[str] = None
    caption_column: Optional[str] = None


def clean_source(name: str) -> str:
    """Source names become Hive partition values: keep them path-safe."""
    cleaned = _SOURCE_CHARS.sub("_", name.strip()).strip("_.")
    return cleaned or "unknown"


def file_kind(path: str) -> Optional[str]:
    """"tar", "parquet", "jsonl" or "image" from a path's suffix; None for anything else."""
    low = path.lower()
    if low.endswith(TAR_SUFFIXES):
        return "tar"
    if low.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if low.endswith(JSONL_SUFFIXES):
        return "jsonl"
    ext = low.rsplit(".", 1)[-1] if "." in posixpath.basename(low) else ""
    if ext in IMAGE_EXTS:
        return "image"
    return None


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
    return sorted(paths)


def _is_dir(path: str) -> bool:
    import os

    return "://" not in path and os.path.isdir(path)


def _pick_column(names: list[str], wanted: Optional[str], candidates: tuple[str, ...], what: str,
                 path: str, option: str) -> str:
    if wanted:
        if wanted not in names:
            raise InputError(f"input {path}: no column {wanted!r} ({what}); columns are {names}")
        return wanted
    for c in candidates:
        if c in names:
            return c
    raise InputError(
        f"input {path}: no {what} column (looked for {', '.join(candidates)}); columns are {names}. "
        f"Name it with --set {option}=COLUMN"
    )


def plan_inputs(patterns: list[str], cfg: ReaderConfig) -> list[InputFile]:
    """Expand patterns to typed input files; raise InputError for what cannot be read at all.

    Parquet footers are read here so a file with the wrong columns fails before
    anything is written, with the columns it has.
    """
    files: list[InputFile] = []
    for pattern in patterns:
        paths = match_inputs(pattern)
        if not paths:
            raise InputError(f"input {pattern}: no files match")
        typed = [(p, file_kind(p)) for p in paths]
        readable = [(p, k) for p, k in typed if k]
        if not readable:
            raise InputError(
                f"input {pattern}: none of the {len(paths)} matching files is a tar, Parquet, JSONL or image file"
            )
        for path, kind in readable:
            if kind == "parquet":
                try:
                    with FileSystems.open(path) as fh:
                        names = pq.ParquetFile(fh).schema_arrow.names
                except (BeamIOError, OSError, ValueError) as e:  # pyarrow: ArrowInvalid is a ValueError
                    raise InputError(f"input {path}: not a readable Parquet file ({e})") from None
                image_col = _pick_column(names, cfg.image_column, IMAGE_COLUMNS, "image", path, "reader.image_column")
                cap_col = _pick_column(names, cfg.caption_column, CAPTION_COLUMNS, "caption", path,
                                       "reader.caption_column")
                files.append(InputFile(path, kind, image_col, cap_col))
            else:
                files.append(InputFile(path, kind, caption_column=cfg.caption_column))
    return files


# --- record parsing: plain generators over one file, no Beam --------------------------------


class _Maker:
    """Builds records and rejects for one input file."""

    def __init__(self, path: str, default_source: str):
        self.path = path
        self.name = posixpath.basename(path)
        self.default_source = default_source

    def origin(self, key: str) -> Origin:
        return Origin(file=self.path, key=key)

    def reject(self, key: str, reason: str, detail: str, source: Optional[str] = None) -> Reject:
        return Reject(
            sample_id=content_id("reject", self.name, key),
            source=clean_source(source or self.default_source),
            stage=STAGE,
            reason=reason,
            detail=detail[:500],
            origin=self.origin(key),
        )

    def sample(self, key: str, image: bytes, caption: str, meta: dict[str, Any]) -> ImageText:
        source = meta.get("source") if isinstance(meta.get("source"), str) else None
        return ImageText(
            # Content plus position: stable across reruns and moves, and two
            # identical inputs stay two samples (dedup then keeps one).
            sample_id=content_id(digest(image), caption, self.name, key),
            source=clean_source(source or self.default_source),
            origin=self.origin(key),
            image_bytes=image,
            caption=caption,
            url=_str_or_none(meta.get("url") or meta.get("URL")),
            license=_str_or_none(meta.get("license") or meta.get("LICENSE")),
        )


def _str_or_none(v: Any) -> Optional[str]:
    return v if isinstance(v, str) and v else None


def _caption_from(raw: Optional[bytes], meta: dict[str, Any], field: Optional[str]) -> Union[str, tuple[str, str]]:
    """The caption text, or (reason, detail) when there is none usable."""
    if raw is not None:
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            return ("caption_not_text", f"caption is not UTF-8 ({e.reason} at byte {e.start})")
    for k in ((field,) if field else ()) + CAPTION_COLUMNS:
        if k and isinstance(meta.get(k), str):
            return meta[k].strip()
    return ("missing_caption", "no caption file or caption field")


def _parse_meta(raw: Optional[bytes]) -> Union[dict[str, Any], str]:
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"metadata is not JSON ({e})"
    return meta if isinstance(meta, dict) else "metadata JSON is not an object"


def read_tar(fh: IO[bytes], maker: _Maker, cfg: ReaderConfig) -> Iterator[Union[ImageText, Reject]]:
    """WebDataset tar: consecutive members sharing a key form one sample."""
    group_key: Optional[str] = None
    members: dict[str, bytes] = {}

    def flush() -> Iterator[Union[ImageText, Reject]]:
        if group_key is not None:
            yield _tar_sample(group_key, members, maker, cfg)

    try:
        with tarfile.open(fileobj=fh, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if posixpath.basename(member.name).startswith("."):
                    continue  # macOS resource forks and other dotfiles
                folder, base = posixpath.split(member.name)
                stem, _, ext = base.partition(".")  # WebDataset: key is the path up to the first dot
                if folder:
                    stem = f"{folder}/{stem}"
                if stem != group_key:
                    yield from flush()
                    group_key, members = stem, {}
                if member.size > cfg.max_image_bytes:
                    members[ext.lower()] = b""
                    members["__too_large__"] = str(member.size).encode()
                    continue
                data = tar.extractfile(member)
                members[ext.lower()] = data.read() if data is not None else b""
            yield from flush()
            group_key = None
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        # A truncated or corrupt tar: samples completed before the damage stay; the
        # sample being read (its members may be cut) and the rest become one reject.
        key = f"{group_key}#unreadable" if group_key else "#unreadable"
        yield maker.reject(key, "unreadable_tar", f"{type(e).__name__}: {e}")


def _tar_sample(key: str, members: dict[str, bytes], maker: _Maker, cfg: ReaderConfig) -> Union[ImageText, Reject]:
    meta = _parse_meta(members.get("json"))
    if isinstance(meta, str):
        return maker.reject(key, "invalid_metadata", meta)
    if "__too_large__" in members:
        return maker.reject(key, "file_too_large",
                            f"{members['__too_large__'].decode()} bytes > reader.max_image_bytes={cfg.max_image_bytes}",
                            meta.get("source"))
    image_ext = next((e for e in IMAGE_EXTS if e in members), None)
    if image_ext is None:
        return maker.reject(key, "missing_image", f"members: {sorted(members)}", meta.get("source"))
    caption = _caption_from(members.get("txt", members.get("caption")), meta, cfg.caption_column)
    if isinstance(caption, tuple):
        return maker.reject(key, caption[0], caption[1], meta.get("source"))
    return maker.sample(key, members[image_ext], caption, meta)


def read_parquet(fh: IO[bytes], maker: _Maker, f: InputFile, cfg: ReaderConfig) -> Iterator[Union[ImageText, Reject]]:
    """Parquet rows, streamed batch by batch (never the whole file in memory)."""
    pf = pq.ParquetFile(fh)
    names = pf.schema_arrow.names
    extra = [c for c in ("source", "url", "URL", "license", "key") if c in names]
    columns = [f.image_column, f.caption_column] + [c for c in extra if c not in (f.image_column, f.caption_column)]
    row = 0
    for batch in pf.iter_batches(batch_size=256, columns=columns):
        for rec in batch.to_pylist():
            key = f"row:{row}"
            row += 1
            image = rec.get(f.image_column)
            if isinstance(image, dict):  # Hugging Face Image struct {bytes, path}
                image = image.get("bytes")
            caption = rec.get(f.caption_column)
            meta = {k: rec.get(k) for k in extra}
            if not isinstance(image, (bytes, bytearray)) or not image:
                yield maker.reject(key, "missing_image", f"column {f.image_column!r} holds {type(image).__name__}",
                                   _str_or_none(meta.get("source")))
            elif not isinstance(caption, str):
                yield maker.reject(key, "missing_caption", f"column {f.caption_column!r} holds {type(caption).__name__}",
                                   _str_or_none(meta.get("source")))
            elif len(image) > cfg.max_image_bytes:
                yield maker.reject(key, "file_too_large", f"{len(image)} bytes", _str_or_none(meta.get("source")))
            else:
                yield maker.sample(key, bytes(image), caption.strip(), meta)


def beside(path: str, base_file: str) -> str:
    """`path` as written in `base_file`: absolute paths and URLs as they are, others relative to its folder."""
    if "://" in path or path.startswith("/"):
        return path
    return FileSystems.join(posixpath.dirname(base_file), path)


def read_limited(path: str, limit: int) -> Union[bytes, str]:
    """A whole (small) file's bytes, or why not: unreadable, or larger than `limit`."""
    try:
        with FileSystems.open(path, compression_type="uncompressed") as fh:
            data = fh.read(limit + 1)
    except (BeamIOError, OSError) as e:
        return f"cannot read {path}: {e}"
    if len(data) > limit:
        return f"{path} is larger than {limit} bytes (reader.max_image_bytes)"
    return data


def table_kind(path: str) -> Optional[str]:
    """"parquet" or "jsonl" for a table file (a .json file of JSON lines too), else None."""
    kind = "jsonl" if path.lower().endswith(".json") else file_kind(path)
    return kind if kind in ("parquet", "jsonl") else None


def read_jsonl(fh: IO[bytes], maker: _Maker, cfg: ReaderConfig) -> Iterator[Union[ImageText, Reject]]:
    """JSONL lines `{"image": "rel/or/abs/path.jpg", "caption": "...", ...}`."""
    for lineno, rec in jsonl_objects(fh):
        key = f"line:{lineno}"
        if isinstance(rec, str):
            yield maker.reject(key, "invalid_json", rec)
            continue
        if isinstance(rec.get("id") or rec.get("key"), (str, int)):
            key = f"{key}:{rec.get('id') or rec.get('key')}"
        rel = next((rec[k] for k in IMAGE_PATH_FIELDS if isinstance(rec.get(k), str)), None)
        if rel is None:
            yield maker.reject(key, "missing_image", f"no image path field ({', '.join(IMAGE_PATH_FIELDS)})",
                               _str_or_none(rec.get("source")))
            continue
        data = read_limited(beside(rel, maker.path), cfg.max_image_bytes)
        if isinstance(data, str):
            yield maker.reject(key, "missing_image" if "cannot read" in data else "file_too_large", data,
                               _str_or_none(rec.get("source")))
            continue
        caption = _caption_from(None, rec, cfg.caption_column)
        if isinstance(caption, tuple):
            yield maker.reject(key, caption[0], caption[1], _str_or_none(rec.get("source")))
            continue
        yield maker.sample(key, data, caption, rec)


def read_image_file(maker: _Maker, cfg: ReaderConfig) -> Iterator[Union[ImageText, Reject]]:
    """A plain image file; `stem.txt` beside it is the caption, `stem.json` its metadata."""
    key = maker.name
    data = read_limited(maker.path, cfg.max_image_bytes)
    if isinstance(data, str):
        yield maker.reject(key, "file_too_large" if "larger" in data else "missing_image", data)
        return
    stem = maker.path.rsplit(".", 1)[0]
    txt = read_limited(stem + ".txt", 1 << 20) if FileSystems.exists(stem + ".txt") else None
    raw_meta = read_limited(stem + ".json", 1 << 20) if FileSystems.exists(stem + ".json") else None
    meta = _parse_meta(raw_meta if isinstance(raw_meta, bytes) else None)
    if isinstance(meta, str):
        yield maker.reject(key, "invalid_metadata", meta)
        return
    caption = _caption_from(txt if isinstance(txt, bytes) else None, meta, cfg.caption_column)
    if isinstance(caption, tuple):
        yield maker.reject(key, caption[0], caption[1], meta.get("source"))
        return
    yield maker.sample(key, data, caption, meta)


def read_file(f: InputFile, default_source: str, cfg: ReaderConfig) -> Iterator[Union[ImageText, Reject]]:
    """Every record of one input file, as samples or read rejects."""
    maker = _Maker(f.path, default_source)
    if f.kind == "image":
        yield from read_image_file(maker, cfg)
        return
    try:
        fh = FileSystems.open(f.path)  # AUTO compression: .gz inputs are inflated on the fly
    except (BeamIOError, OSError) as e:  # gone between planning and reading
        yield maker.reject("", "unreadable_file", str(e))
        return
    with fh:
        if f.kind == "tar":
            yield from read_tar(fh, maker, cfg)
        elif f.kind == "jsonl":
            yield from read_jsonl(fh, maker, cfg)
        elif f.kind == "parquet":
            try:
                yield from read_parquet(fh, maker, f, cfg)
            except (OSError, ValueError) as e:  # pyarrow raises these for corrupt pages
                yield maker.reject("#unreadable", "unreadable_file", f"{type(e).__name__}: {e}")
        else:  # pragma: no cover - plan_inputs only makes the kinds above
            raise ValueError(f"unknown input kind {f.kind}")


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
        for rec in self.read(f):
            if isinstance(rec, Reject):
                self.rejects.inc()
                yield beam.pvalue.TaggedOutput(self.REJECTED, rec)
            else:
                self.records.inc()
                yield rec


class ReadImageText(beam.PTransform):
    """Planned input files -> `Read(samples, rejected)`.

    Files are reshuffled so that many files spread over workers; one file is
    read by one worker, streaming.
    """

    def __init__(self, files: list[InputFile], default_source: str, cfg: ReaderConfig):
        super().__init__()
        self.files = files
        self.default_source = clean_source(default_source)
        self.cfg = cfg

    def expand(self, pbegin):
        reader = ReadEachFile(functools.partial(read_file, default_source=self.default_source, cfg=self.cfg))
        out = pbegin | ReadFiles(self.files, reader, ReadEachFile.REJECTED)
        return Read(out.main, out[ReadEachFile.REJECTED])


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
