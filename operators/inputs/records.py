"""What every reader hands back besides its records: `Unreadable` (a record that did not read), source names."""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Optional, Union

_SOURCE_CHARS = re.compile(r"[^A-Za-z0-9_.\-]+")

ReadBytes = Callable[[str], Union[bytes, str]]  # a path -> its bytes, or why not (the opener, passed in)


class Unreadable(NamedTuple):
    """One record of an input file that did not read: where it is in the file, why, and the source it names.

    `source` is the record's own source name (None: the reader's default); the
    pipeline makes it a `read` reject (`quarry.pipelines.read.read_reject`).
    """

    key: str
    reason: str
    detail: str
    source: Any = None


def clean_source(name: str) -> str:
    """Source names become Hive partition values: keep them path-safe."""
    cleaned = _SOURCE_CHARS.sub("_", name.strip()).strip("_.")
    return cleaned or "unknown"


def str_or_none(v: Any) -> Optional[str]:
    """`v` when it is a non-empty string, else None."""
    return v if isinstance(v, str) and v else None
