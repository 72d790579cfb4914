"""Big values cross a local run's shuffles on disk, as 32-byte references.

The DirectRunner holds every shuffle, and every stage input that waits for a side input, in the runner
process's memory, and sends one worker's input to a stage as one protobuf message (< 2 GiB). A DAG whose
rows are many (imagemining: ~19 questions an image) or large (ocr_synth, documents) then needs memory in
proportion to its output. On such a run a stage that hands rows to a shuffle writes them instead to an
append-only spill file of its bundle, `DIR/.quarry/spill/<table>/<uuid>.bin`, and sends on
`uuid | offset | length`; the stage after the shuffle reads the bytes back with one `pread`. What crosses
the shuffle is then a few dozen bytes a row, whatever the row holds.

Only where every worker sees the same local disk: the DirectRunner with a local output directory (in
process or multi-process). Distributed runners shuffle values themselves (Dataflow's shuffle is on disk),
so there the values travel as they are, and the output is the same either way: spilling changes how rows
wait, never which shard they go to or in what order (tests/pipelines/test_spill.py).

A spill file is written whole before its bundle commits (finish_bundle closes it), and its references
reach readers only through a shuffle, so a reader never sees a file still being written; a retried
bundle writes a new file. Files are removed when the run ends (dags/runner.py: `clear_spill`).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import struct
import uuid
from typing import Any, Optional

import apache_beam as beam

SPILL_DIR = ".quarry/spill"
_REF = struct.Struct("<16sQQ")  # spill file uuid, offset, length
# The DirectRunner by class name (beam.Pipeline() gets a SwitchingDirectRunner)
_LOCAL_RUNNERS = {"switchingdirectrunner", "directrunner", "bundlebaseddirectrunner", "fnapirunner"}


def _runner_name(pipeline: beam.Pipeline) -> str:
    runner = getattr(pipeline, "runner", None)  # the runner instance the pipeline was built with
    return type(runner).__name__.lower() if runner is not None else ""


def is_direct_run(pipeline: beam.Pipeline) -> bool:
    return _runner_name(pipeline) in _LOCAL_RUNNERS


def spill_dir(pipeline: beam.Pipeline, output_dir: Optional[str], name: str) -> Optional[str]:
    """Where a local run spills the values of shuffle `name` under `output_dir`; None where they travel as
    they are (no output directory, a remote one, or a runner whose workers may not share this disk)."""
    if not output_dir or "://" in output_dir or not is_direct_run(pipeline):
        return None
    return posixpath.join(os.path.abspath(output_dir), SPILL_DIR, name)


def clear_spill(output_dir: str) -> None:
    """Remove a run's spill files (after the run, and any a killed run left behind)."""
    if "://" not in output_dir:
        shutil.rmtree(os.path.join(output_dir, SPILL_DIR), ignore_errors=True)


MALLOC_ARENAS = "2"


def bound_heap_arenas() -> None:
    """At most MALLOC_ARENAS glibc heap arenas in this process and in the SDK processes it starts.

    glibc gives threads their own arenas (up to 8 per core) and freed buffers stay resident in them; the
    DirectRunner's runner process has dozens of gRPC and bundle threads. Measured: 500k grouped elements
    grew the runner by 373 MiB with glibc's default, 249 MiB with two arenas. This process is limited with
    `mallopt` (arenas made from now on), SDK processes through the environment they read at start. A value
    the user set wins; not glibc: nothing happens."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    os.environ["MALLOC_ARENA_MAX"] = MALLOC_ARENAS
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, int(MALLOC_ARENAS))  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        pass


class SpillWriter:
    """One bundle's spill file, opened at its first value."""

    def __init__(self, directory: str):
        self.directory = directory
        self._fh: Any = None
        self._key = b""
        self._offset = 0

    def put(self, blob: bytes) -> bytes:
        if self._fh is None:
            os.makedirs(self.directory, exist_ok=True)
            self._key, self._offset = uuid.uuid4().bytes, 0
            self._fh = open(os.path.join(self.directory, self._key.hex() + ".bin"), "wb", buffering=1 << 20)
        self._fh.write(blob)
        ref = _REF.pack(self._key, self._offset, len(blob))
        self._offset += len(blob)
        return ref

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()  # flushed to the OS before the bundle commits, so before any reader opens it
            self._fh = None


class SpillReader:
    """Reads values back by reference, one open descriptor per spill file until `close`."""

    def __init__(self, directory: str):
        self.directory = directory
        self._fds: dict[bytes, int] = {}

    def get(self, ref: bytes) -> bytes:
        key, offset, length = _REF.unpack(ref)
        fd = self._fds.get(key)
        if fd is None:
            fd = self._fds[key] = os.open(os.path.join(self.directory, key.hex() + ".bin"), os.O_RDONLY)
        blob = os.pread(fd, length, offset)
        if len(blob) != length:  # a spill file cut short (disk full, removed mid-run): fail, never lose the row
            raise IOError(f"spill file {key.hex()} in {self.directory} holds {len(blob)} of {length} bytes "
                          f"at {offset}")
        return blob

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class Stash:
    """The DoFn side of spilling: `put(blob)` gives what crosses the shuffle (a reference, or the blob where
    the run does not spill) and `get` undoes it after the shuffle. Call `finish` at the end of each bundle
    (closes the writer's file and the reader's descriptors); a Stash pickles as its directory alone."""

    def __init__(self, directory: Optional[str]):
        self.directory = directory
        self._writer: Optional[SpillWriter] = None
        self._reader: Optional[SpillReader] = None

    def __getstate__(self):
        return {"directory": self.directory}

    def __setstate__(self, state):
        self.__init__(state["directory"])

    @property
    def spills(self) -> bool:
        """Whether `put` writes blobs to disk (else they cross the shuffle themselves)."""
        return self.directory is not None

    def put(self, blob: bytes) -> bytes:
        if self.directory is None:
            return blob
        if self._writer is None:
            self._writer = SpillWriter(self.directory)
        return self._writer.put(blob)

    def get(self, stashed: bytes) -> bytes:
        if self.directory is None:
            return stashed
        if self._reader is None:
            self._reader = SpillReader(self.directory)
        return self._reader.get(stashed)

    def finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None:
            self._reader.close()


_FRAME = struct.Struct("<HI")  # key length, payload length


class Gather(beam.CombineFn):
    """`(key, (name, payload))` -> `(key, framed records)`: what a GroupByKey of many small values would do,
    as a combine. The DirectRunner keeps ~800 bytes of Python objects per grouped element in its memory
    (measured: 500k elements of a 40-byte key and a 32-byte value grew the runner by 379 MiB); a combine is
    lifted into the workers, which append each bundle's values for a key to one bytearray, so the shuffle
    carries one element per key and bundle whose size is the records'. `records` reads them back."""

    def create_accumulator(self):
        return bytearray()

    def add_input(self, acc, value):
        name, payload = value
        raw = name.encode()
        acc += _FRAME.pack(len(raw), len(payload))
        acc += raw
        acc += payload
        return acc

    def merge_accumulators(self, accumulators):
        it = iter(accumulators)
        out = next(it, None)
        out = bytearray() if out is None else out
        for acc in it:
            out += acc
        return out

    def extract_output(self, acc):
        return bytes(acc)


def records(blob: bytes) -> list[tuple[str, memoryview]]:
    """The (name, payload) records `Gather` framed, in the order they were added; payloads are views into
    `blob` (no copy of a shard's rows)."""
    out, at, view = [], 0, memoryview(blob)
    while at < len(blob):
        n, m = _FRAME.unpack_from(blob, at)
        at += _FRAME.size
        out.append((bytes(view[at:at + n]).decode(), view[at + n:at + n + m]))
        at += n + m
    return out


__all__ = ["MALLOC_ARENAS", "SPILL_DIR", "Gather", "bound_heap_arenas", "is_direct_run", "records", "SpillReader", "SpillWriter", "Stash", "clear_spill", "spill_dir"]
