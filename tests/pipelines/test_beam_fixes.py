"""The Beam data-plane flush race (pipelines/beam_fixes.py): a stage input written while the runner's
periodic flush is blocked on a full send queue loses chunks; with the fix the runner's streams have no
periodic flush and every byte arrives once."""

from __future__ import annotations

import threading
import time

from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker import data_plane

import quarry.pipelines  # noqa: F401  (applies the fix)

CHUNK = 1000
CHUNKS = 150


def _send_stage_input(time_limit_ms: int) -> tuple[bytes, bytes]:
    """What the runner does for a stage input: chunk after chunk into the stream its data channel makes."""
    received: list[bytes] = []

    def slow_send(data: bytes) -> None:  # the send queue is full: a flush blocks for a while
        if data:
            time.sleep(0.02)
            received.append(data)

    stream = data_plane.ClosableOutputStream.create(slow_send, slow_send, time_limit_ms)
    sent = [bytes([i % 251]) * CHUNK for i in range(CHUNKS)]

    def write_all() -> None:
        for chunk in sent:
            stream.write(chunk)
            time.sleep(0.001)

    writer = threading.Thread(target=write_all)
    writer.start()
    writer.join()
    stream.close()
    return b"".join(sent), b"".join(received)


def test_runner_streams_have_no_periodic_flush():
    assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0
    stream = data_plane.ClosableOutputStream.create(None, None, worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)
    assert not isinstance(stream, data_plane.TimeBasedBufferingClosableOutputStream)


def test_every_chunk_of_a_stage_input_arrives_once():
    sent, received = _send_stage_input(worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)
    assert received == sent


def test_with_a_periodic_flush_chunks_are_lost():
    """Why the fix exists, and proof the test above can fail: Beam's time-based stream under the same schedule."""
    losses = [len(sent) - len(received) for sent, received in (_send_stage_input(5) for _ in range(3))]
    assert max(losses) >= CHUNK, losses
