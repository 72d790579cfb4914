"""Fixes for Apache Beam bugs that lose data, applied when `quarry.pipelines` is imported.

Data-plane flush race (Beam 2.77, found by `benchmarks/bench_imagemining.py --images 100000`,
which wrote 7% fewer rows than it produced):

The portable runner behind the DirectRunner (FnApiRunner) sends a stage's input to each SDK
worker through a `data_plane.TimeBasedBufferingClosableOutputStream`: the runner thread writes
the input's chunks while a background thread flushes every `DATA_BUFFER_TIME_LIMIT_MS` (1 s).
`flush()` takes the buffer (`get()`), hands it to the send queue (which blocks while the queue
is full) and then clears it (`_clear()`); `write()` does not wait for it, so chunks written in
that window are cleared without being sent. The worker sees fewer elements and nothing fails.
Making `write()` wait for the flush instead deadlocks at the same scale (the worker reads a
bundle's input only once the runner has finished sending it).

It bites when a stage's input is a materialised buffer of many chunks that takes longer than a
second to write: large inputs of any stage with a side input computed from the same data
(`WriteParquetTable`'s shard assignment), with `--direct_running_mode=multi_processing` or
`multi_threading`.

The fix turns the runner's periodic flush off (`DATA_BUFFER_TIME_LIMIT_MS = 0`): its streams
become size-based, the runner never flushes a stage input early, and the input goes out whole
when the runner closes it, as a grouped (GroupByKey) input always does. The limit that comes
with it: one worker's input to one stage must stay under protobuf's 2 GiB per message; above
that the run fails with an error instead of losing rows (use more workers, or a distributed
runner). Regression tests: tests/pipelines/test_beam_fixes.py.
"""

from __future__ import annotations

from apache_beam.runners.portability.fn_api_runner import worker_handlers


def fix_data_plane_flush_race() -> None:
    """No periodic flush of runner-side data streams (read when the runner starts its data server)."""
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


fix_data_plane_flush_race()
