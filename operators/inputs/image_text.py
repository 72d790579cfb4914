"""Image-text records from what the parsers of this package read: the caption reader's and the ocr_search one's.

The caption reader needs a caption (a `.txt`/`.caption` member or sidecar, or a
caption field); the ocr_search reader takes pictures with or without one.
Each method turns one parsed record (a tar sample, a Parquet row, a JSONL
line, an image file) into an `ImageText`, or an `Unreadable` saying why not.
"""

from __future__ import annotations

import posixpath
from typing import Any, Optional, Union

from quarry.operators.ids import content_id, digest
from quarry.operators.inputs import reasons as r
from quarry.operators.inputs.columns import CAPTION_COLUMNS, IMAGE_PATH_FIELDS
from quarry.operators.inputs.files import ImageFile
from quarry.operators.inputs.jsonl import line_reason
from quarry.operators.inputs.kinds import IMAGE_EXTS
from quarry.operators.inputs.records import ReadBytes, Unreadable, clean_source, str_or_none
from quarry.operators.inputs.tar import TarDamage, TarSample, parse_metadata
from quarry.schemas.common import ImageText, Origin

CAPTION_ROW_EXTRA = ("source", "url", "URL", "license", "key")  # Parquet columns the caption reader carries
PICTURE_ROW_EXTRA = ("source", "url", "license", "caption", "text")  # ... and the ocr_search reader

Record = Union[ImageText, Unreadable]


def caption_of(raw: Optional[bytes], meta: dict[str, Any], field: Optional[str]) -> Union[str, tuple[str, str]]:
    """The caption text, or (reason, detail) when there is none usable."""
    if raw is not None:
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            return (r.CAPTION_NOT_TEXT, f"caption is not UTF-8 ({e.reason} at byte {e.start})")
    for k in ((field,) if field else ()) + CAPTION_COLUMNS:
        if k and isinstance(meta.get(k), str):
            return meta[k].strip()
    return (r.MISSING_CAPTION, "no caption file or caption field")


def _image_cell(v: Any) -> Any:
    return v.get("bytes") if isinstance(v, dict) else v  # Hugging Face Image struct {bytes, path}


def image_path_of(obj: dict) -> Optional[str]:
    """The image path a JSONL line names (`image`, `image_path`, `path`, `file`, `file_name`)."""
    return next((obj[k] for k in IMAGE_PATH_FIELDS if isinstance(obj.get(k), str)), None)


def _load_problem(data: str) -> str:
    return r.MISSING_IMAGE if "cannot read" in data else r.FILE_TOO_LARGE


def tar_unreadable(item: Union[TarSample, TarDamage]) -> Optional[Unreadable]:
    """Why a tar item is no sample at all (the tar broke here, or its `key.json` is not an object), else None."""
    if isinstance(item, TarDamage):
        return Unreadable(item.key, r.UNREADABLE_TAR, item.detail)
    if isinstance(item.meta, str):
        return Unreadable(item.key, r.INVALID_METADATA, item.meta)
    return None


class CaptionRecords:
    """Captioned samples of one input file (the caption DAG's reader)."""

    def __init__(self, path: str, default_source: str, caption_column: Optional[str], max_image_bytes: int):
        self.path, self.name, self.default_source = path, posixpath.basename(path), default_source
        self.caption_column, self.max_image_bytes = caption_column, max_image_bytes

    def sample(self, key: str, image: bytes, caption: str, meta: dict[str, Any]) -> ImageText:
        source = meta.get("source") if isinstance(meta.get("source"), str) else None
        return ImageText(
            # Content plus position: stable across reruns and moves, and two
            # identical inputs stay two samples (dedup then keeps one).
            sample_id=content_id(digest(image), caption, self.name, key),
            source=clean_source(source or self.default_source),
            origin=Origin(file=self.path, key=key),
            image_bytes=image,
            caption=caption,
            url=str_or_none(meta.get("url") or meta.get("URL")),
            license=str_or_none(meta.get("license") or meta.get("LICENSE")),
        )

    def from_tar(self, item: Union[TarSample, TarDamage]) -> Record:
        bad = tar_unreadable(item)
        if bad is not None:
            return bad
        key, members, meta = item.key, item.members, item.meta
        if item.oversize is not None:
            return Unreadable(key, r.FILE_TOO_LARGE,
                              f"{item.oversize} bytes > reader.max_image_bytes={self.max_image_bytes}",
                              meta.get("source"))
        image_ext = next((e for e in IMAGE_EXTS if e in members), None)
        if image_ext is None:
            return Unreadable(key, r.MISSING_IMAGE, f"members: {sorted(members)}", meta.get("source"))
        caption = caption_of(members.get("txt", members.get("caption")), meta, self.caption_column)
        if isinstance(caption, tuple):
            return Unreadable(key, caption[0], caption[1], meta.get("source"))
        return self.sample(key, members[image_ext], caption, meta)  # type: ignore[arg-type]

    def from_row(self, row: int, rec: dict, image_column: str, caption_column: str) -> Record:
        key = f"row:{row}"
        image = _image_cell(rec.get(image_column))
        caption = rec.get(caption_column)
        meta = {k: rec.get(k) for k in CAPTION_ROW_EXTRA if k in rec}
        if not isinstance(image, (bytes, bytearray)) or not image:
            return Unreadable(key, r.MISSING_IMAGE, f"column {image_column!r} holds {type(image).__name__}",
                              str_or_none(meta.get("source")))
        if not isinstance(caption, str):
            return Unreadable(key, r.MISSING_CAPTION, f"column {caption_column!r} holds {type(caption).__name__}",
                              str_or_none(meta.get("source")))
        if len(image) > self.max_image_bytes:
            return Unreadable(key, r.FILE_TOO_LARGE, f"{len(image)} bytes", str_or_none(meta.get("source")))
        return self.sample(key, bytes(image), caption.strip(), meta)

    def from_line(self, lineno: int, obj: Union[dict, str], load: ReadBytes) -> Record:
        """A JSONL line naming an image file; `load(relative or absolute path)` reads it."""
        key = f"line:{lineno}"
        if isinstance(obj, str):
            return Unreadable(key, line_reason(obj), obj)
        if isinstance(obj.get("id") or obj.get("key"), (str, int)):
            key = f"{key}:{obj.get('id') or obj.get('key')}"
        rel = image_path_of(obj)
        if rel is None:
            return Unreadable(key, r.MISSING_IMAGE, f"no image path field ({', '.join(IMAGE_PATH_FIELDS)})",
                              str_or_none(obj.get("source")))
        data = load(rel)
        if isinstance(data, str):
            return Unreadable(key, _load_problem(data), data, str_or_none(obj.get("source")))
        caption = caption_of(None, obj, self.caption_column)
        if isinstance(caption, tuple):
            return Unreadable(key, caption[0], caption[1], str_or_none(obj.get("source")))
        return self.sample(key, data, caption, obj)

    def from_image_file(self, f: ImageFile) -> Record:
        """A plain image file; `stem.txt` beside it is the caption, `stem.json` its metadata."""
        key = self.name
        if isinstance(f.data, str):
            return Unreadable(key, r.FILE_TOO_LARGE if "larger" in f.data else r.MISSING_IMAGE, f.data)
        meta = parse_metadata(f.sidecars.get("json"))
        if isinstance(meta, str):
            return Unreadable(key, r.INVALID_METADATA, meta)
        caption = caption_of(f.sidecars.get("txt"), meta, self.caption_column)
        if isinstance(caption, tuple):
            return Unreadable(key, caption[0], caption[1], meta.get("source"))
        return self.sample(key, f.data, caption, meta)


class PictureRecords:
    """Pictures of one input file, a caption optional (the ocr_search DAG's reader)."""

    def __init__(self, path: str, default_source: str, max_image_bytes: int):
        self.path, self.name, self.default_source = path, posixpath.basename(path), default_source
        self.max_image_bytes = max_image_bytes

    @staticmethod
    def source_of(meta: Optional[dict[str, Any]]) -> Optional[str]:
        return str_or_none((meta or {}).get("source"))

    def sample(self, key: str, image: bytes, meta: dict[str, Any]) -> Record:
        if len(image) > self.max_image_bytes:
            return Unreadable(key, r.FILE_TOO_LARGE, f"{len(image)} bytes > reader.max_image_bytes",
                              self.source_of(meta))
        text = meta.get("caption") or meta.get("text")
        url, lic = meta.get("url"), meta.get("license")
        return ImageText(sample_id=content_id(digest(image), self.name, key),
                         source=clean_source(self.source_of(meta) or self.default_source),
                         origin=Origin(file=self.path, key=key), image_bytes=image,
                         caption=text if isinstance(text, str) else "",
                         url=url if isinstance(url, str) and url else None,
                         license=lic if isinstance(lic, str) and lic else None)

    def from_tar(self, item: Union[TarSample, TarDamage]) -> Record:
        """A tar sample read with `blank_metadata_is_empty=True`."""
        bad = tar_unreadable(item)
        if bad is not None:
            return bad
        key, members, meta = item.key, item.members, item.meta
        ext = next((e for e in IMAGE_EXTS if e in members), None)
        if ext is None:
            return Unreadable(key, r.MISSING_IMAGE, f"members: {sorted(members)}", self.source_of(meta))
        image = members[ext]
        if image is None:
            return Unreadable(key, r.FILE_TOO_LARGE, "image member > reader.max_image_bytes", self.source_of(meta))
        return self.sample(key, image, meta)

    def from_row(self, row: int, rec: dict, column: str) -> Record:
        key = f"row:{row}"
        image = _image_cell(rec.get(column))
        meta = {k: rec.get(k) for k in PICTURE_ROW_EXTRA if k in rec and k != column}
        if not isinstance(image, (bytes, bytearray)) or not image:
            return Unreadable(key, r.MISSING_IMAGE, f"column {column!r} holds {type(image).__name__}",
                              self.source_of(meta))
        return self.sample(key, bytes(image), meta)

    def from_line(self, lineno: int, obj: Union[dict, str], load: ReadBytes) -> Record:
        key = f"line:{lineno}"
        if isinstance(obj, str):
            return Unreadable(key, line_reason(obj), obj)
        rel = image_path_of(obj)
        if rel is None:
            return Unreadable(key, r.MISSING_IMAGE, f"no image path field ({', '.join(IMAGE_PATH_FIELDS)})",
                              self.source_of(obj))
        data = load(rel)
        if isinstance(data, str):
            return Unreadable(key, _load_problem(data), data, self.source_of(obj))
        return self.sample(key, data, obj)

    def from_image_file(self, f: ImageFile) -> Record:
        """A plain image file; `stem.json` beside it may give source, url, license."""
        if isinstance(f.data, str):
            return Unreadable(self.name, r.FILE_TOO_LARGE if "larger" in f.data else r.MISSING_IMAGE, f.data)
        meta = parse_metadata(f.sidecars.get("json"), blank_is_empty=True)
        if isinstance(meta, str):
            return Unreadable(self.name, r.INVALID_METADATA, meta)
        return self.sample(self.name, f.data, meta)
