"""Wait for a confluent-kafka producer's queue to drain, stopping at a callback's exception.

A Python exception raised in a client callback (the ``error_cb`` of
:meth:`~stream_app.settings.Settings.kafka_client_config` raises
:class:`~stream_app.errors.KafkaAuthError` when the cluster refuses the credentials) surfaces
only when the call serving the callback returns, and one ``flush(timeout)`` waits out its whole
timeout first. :func:`flush` waits in short slices instead, so a refusal ends the wait within a
slice.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["FLUSH_SLICE_S", "flush"]

#: Longest one slice of :func:`flush` waits before the callbacks' exceptions are raised.
FLUSH_SLICE_S = 0.25


def flush(producer: Any, timeout: float) -> int:
    """Flush ``producer`` for up to ``timeout`` seconds; return the messages still queued.

    Raises:
        Exception: Whatever a callback served meanwhile raised (e.g. ``KafkaAuthError``).
    """
    deadline = time.monotonic() + timeout
    while True:
        left: int = producer.flush(max(0.0, min(FLUSH_SLICE_S, deadline - time.monotonic())))
        if not left or time.monotonic() >= deadline:
            return left
