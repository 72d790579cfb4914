"""Opening an input file for reading, anywhere Beam's FileSystems reach, with gzip inflated a bounded chunk at a time.

Here (not in pipelines/) so operators that read side files (knowledge bases, benchmark tables) open them the
same way the readers do.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import IO

from apache_beam.io.filesystems import FileSystems


class _Inflating(gzip.GzipFile):
    """A gzip stream over a raw handle, closing both; a truncated or corrupt stream raises OSError
    (gzip raises EOFError and zlib.error too), which every reader treats as the file breaking off."""

    def __init__(self, raw: IO[bytes]):
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def _guarded(self, read, *args):
        try:
            return read(*args)
        except (EOFError, zlib.error) as e:
            raise OSError(f"truncated or corrupt gzip stream ({e})") from None

    def read(self, size=-1):
        return self._guarded(super().read, size)

    def read1(self, size=-1):
        return self._guarded(super().read1, size)

    def readline(self, size=-1):
        return self._guarded(super().readline, size)

    def readinto(self, b):
        return self._guarded(super().readinto, b)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def open_file(path: str) -> IO[bytes]:
    """`path` opened for reading; `.gz` / `.tgz` inflated on the fly by Python's gzip, a bounded chunk at a time.

    Not Beam's AUTO compression: its CompressedFile inflates each 16 MiB read of compressed bytes in one call,
    so a 1 MiB gzip bomb became 1 GiB in memory at once (2 GiB peak for a .tar.gz, 10 GiB for a .jsonl.gz).
    """
    raw = FileSystems.open(path, compression_type="uncompressed")
    return _Inflating(raw) if path.lower().endswith((".gz", ".tgz")) else raw


def read_text(path: "str | os.PathLike[str]", max_bytes: int = 64 * 1024 * 1024, encoding: str = "utf-8") -> str:
    """A small side file (templates, a prompt, a vocabulary) read through Beam's FileSystems, so a `gs://` path
    works on remote workers as a local one does on a laptop. OSError (BeamIOError is one) when it cannot be
    read, ValueError when it is over `max_bytes` or not text."""
    path = os.fspath(path)
    with open_file(path) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes} bytes")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not {encoding} text ({e})") from None


__all__ = ["open_file", "read_text"]
