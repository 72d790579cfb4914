"""WebDataset tars of one opened file: samples (members sharing a key) or single members, damage as data.

A WebDataset sample is the run of consecutive members whose names share a key
(the path up to the first dot of the file name): `k.jpg`, `k.txt`, `k.json`.
Directories and dotfiles (macOS resource forks) are skipped. A member over the
size cap is not read: its extension is listed with no bytes. A truncated or
corrupt tar ends the file with one `TarDamage`: what was complete before the
damage stays; the sample being read when it struck (its members may be cut)
and the rest are lost.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from typing import IO, Any, Iterator, NamedTuple, Optional, Union

DAMAGE = (tarfile.TarError, EOFError, OSError, ValueError)  # what a truncated or corrupt tar raises


class TarSample(NamedTuple):
    """One WebDataset sample: its members by lower-cased extension, and its `key.json` parsed."""

    key: str
    members: dict[str, Optional[bytes]]  # None: the member is over the size cap (not read)
    oversize: Optional[int]  # the size of the (last) member over the cap, if any
    meta: Union[dict[str, Any], str]  # `key.json` as an object ({} without one), or why it is not one


class TarMember(NamedTuple):
    """One file of a tar read member by member."""

    name: str
    data: Optional[bytes]  # None: over the size cap (not read)
    size: int


class TarDamage(NamedTuple):
    """A tar that cannot be read on: `key` is `<key of the sample being read>#unreadable` or `#unreadable`."""

    key: str
    detail: str


def parse_metadata(raw: Optional[bytes], blank_is_empty: bool = False) -> Union[dict[str, Any], str]:
    """A sidecar / `key.json` as an object, or why it is not one. None is {}; so is b"" with `blank_is_empty`."""
    if raw is None or (blank_is_empty and not raw):
        return {}
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"metadata is not JSON ({e})"
    except RecursionError:
        return "metadata is not JSON (nested too deeply)"
    return meta if isinstance(meta, dict) else "metadata JSON is not an object"


def _skipped(member: tarfile.TarInfo) -> bool:
    return not member.isfile() or posixpath.basename(member.name).startswith(".")


def _damage(key: Optional[str], e: BaseException) -> TarDamage:
    return TarDamage(f"{key}#unreadable" if key else "#unreadable", f"{type(e).__name__}: {e}")


def tar_samples(fh: IO[bytes], max_member_bytes: int,
                blank_metadata_is_empty: bool = False) -> Iterator[Union[TarSample, TarDamage]]:
    """The WebDataset samples of a tar, streamed (`mode="r|*"`: also .tar.gz), then a `TarDamage` if it is cut.

    An oversize `key.json` reads as empty (b""), so `meta` says it is not JSON
    unless `blank_metadata_is_empty`.
    """
    key: Optional[str] = None
    members: dict[str, Optional[bytes]] = {}
    oversize: Optional[int] = None

    def sample() -> TarSample:
        raw = members.get("json")
        meta = parse_metadata(b"" if raw is None and "json" in members else raw, blank_metadata_is_empty)
        return TarSample(key, dict(members), oversize, meta)  # type: ignore[arg-type]

    try:
        with tarfile.open(fileobj=fh, mode="r|*") as tar:
            for member in tar:
                if _skipped(member):
                    continue
                folder, base = posixpath.split(member.name)
                stem, _, ext = base.partition(".")  # WebDataset: key is the path up to the first dot
                if folder:
                    stem = f"{folder}/{stem}"
                if stem != key:
                    if key is not None:
                        yield sample()
                    key, members, oversize = stem, {}, None
                if member.size > max_member_bytes:
                    members[ext.lower()] = None
                    oversize = member.size
                    continue
                data = tar.extractfile(member)
                members[ext.lower()] = data.read() if data is not None else b""
            if key is not None:
                yield sample()
            key = None
    except DAMAGE as e:
        yield _damage(key, e)


def tar_members(fh: IO[bytes], max_member_bytes: int,
                suffixes: tuple[str, ...]) -> Iterator[Union[TarMember, TarDamage]]:
    """The members of a tar whose names end with one of `suffixes` (case-insensitive), one by one;
    then a `TarDamage` (key `#unreadable`) if it is cut."""
    try:
        with tarfile.open(fileobj=fh, mode="r|*") as tar:
            for member in tar:
                if _skipped(member) or not member.name.lower().endswith(suffixes):
                    continue
                if member.size > max_member_bytes:
                    yield TarMember(member.name, None, member.size)
                    continue
                data = tar.extractfile(member)
                yield TarMember(member.name, data.read() if data is not None else b"", member.size)
    except DAMAGE as e:
        yield _damage(None, e)
