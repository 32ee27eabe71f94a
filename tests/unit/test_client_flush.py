"""Unit tests of stream_app.clients.flushing: a flush waits in slices, so an exception raised
by a callback served during the wait ends it at once instead of after the whole timeout."""

from __future__ import annotations

import time

import pytest

from stream_app.clients.flushing import FLUSH_SLICE_S, flush
from stream_app.errors import KafkaAuthError


class _Producer:
    """A producer whose queue drains after ``drained_after`` flush calls, or whose callbacks
    raise ``refusal`` on the ``raise_on``-th call."""

    def __init__(
        self, *, drained_after: int = 10**9, raise_on: int | None = None, queued: int = 3
    ) -> None:
        self.calls: list[float] = []
        self.drained_after = drained_after
        self.raise_on = raise_on
        self.queued = queued

    def flush(self, timeout: float) -> int:
        self.calls.append(timeout)
        if self.raise_on is not None and len(self.calls) >= self.raise_on:
            raise KafkaAuthError("authentication failed for user 'u' with mechanism PLAIN")
        return 0 if len(self.calls) >= self.drained_after else self.queued


def test_returns_as_soon_as_the_queue_is_empty() -> None:
    producer = _Producer(drained_after=2)
    assert flush(producer, 30.0) == 0
    assert len(producer.calls) == 2
    assert all(0 <= t <= FLUSH_SLICE_S for t in producer.calls)


def test_a_callback_exception_ends_the_wait_within_a_slice() -> None:
    producer = _Producer(raise_on=2)
    with pytest.raises(KafkaAuthError, match="user 'u'"):
        flush(producer, 30.0)
    assert len(producer.calls) == 2


def test_returns_what_is_still_queued_when_time_runs_out() -> None:
    producer = _Producer()
    started = time.monotonic()
    assert flush(producer, 0.0) == 3
    assert time.monotonic() - started < 1.0
