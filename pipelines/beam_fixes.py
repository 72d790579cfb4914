"""Fixes for Apache Beam bugs that lose data, applied when `quarry.pipelines` is imported.

Data-plane flush race (Beam 2.77, found by `benchmarks/bench_imagemining.py --images 100000`,
which wrote 7% fewer rows than it produced):

The portable runner behind the DirectRunner (FnApiRunner) sends a stage's input to an SDK
worker through `data_plane.TimeBasedBufferingClosableOutputStream`, which flushes from a
background thread every `DATA_BUFFER_TIME_LIMIT_MS` (1 s). `flush()` holds a lock while it
takes the buffer (`get()`), hands it to the send queue (which blocks while the queue is full)
and then clears it (`_clear()`), but `write()` takes no lock: chunks the runner writes in that
window are cleared without being sent. The worker sees fewer elements and nothing fails.

It bites when a stage's input is a materialised buffer of many chunks that takes longer than
a second to write, which is the case for large inputs of any stage that has a side input
computed from the same data (`WriteParquetTable`'s shard assignment), with
`--direct_running_mode=multi_processing` (or multi_threading). A GroupByKey's output is
written as one piece and is not affected.

The fix makes `write()` take the same lock as `flush()`, so a chunk is either in the flushed
piece or stays in the buffer. Regression test: tests/pipelines/test_beam_fixes.py.
"""

from __future__ import annotations

from apache_beam.runners.worker import data_plane

_PATCHED = "_quarry_write_locked"


def fix_data_plane_flush_race() -> bool:
    """Serialise `write` with the periodic `flush` of the time-based data-plane stream (idempotent).

    Returns False when this Beam version's stream has no flush lock to share (nothing patched).
    """
    cls = getattr(data_plane, "TimeBasedBufferingClosableOutputStream", None)
    if cls is None or getattr(cls, _PATCHED, False):
        return cls is not None
    if "flush" not in vars(cls) or "close" not in vars(cls):
        return False
    base_write = super(cls, cls).write  # the buffering stream's own write (Cython OutputStream)

    def write(self, b, nested=False):
        with self._flush_lock:
            base_write(self, b, nested)

    cls.write = write
    setattr(cls, _PATCHED, True)
    return True


fix_data_plane_flush_race()
