"""A batched input made without a broker, for unit tests that drive its parts directly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from stream_app.kafka.app import create_app
from stream_app.kafka.batch_input import BatchInput
from stream_app.settings import Settings


@contextmanager
def offline_batch_input(settings: Settings) -> Iterator[BatchInput]:
    """A :class:`BatchInput` of a new app for ``settings`` (never started); its thread pools
    and the app's loop are shut down after."""
    app = create_app(settings)
    reader = BatchInput(settings, app)
    try:
        yield reader
    finally:
        reader._txn_pool.shutdown()
        reader._pool.shutdown()
        app.loop.close()
