"""The worker of the atomic tests: runs the logs of :mod:`tests.apps.atomic_logs`.

Run as ``faust -A tests.apps.atomic_probe worker`` with ``STREAM_APP_PROCESSING_GUARANTEE=
exactly_once`` (atomic logs refuse to run without it).
"""

from __future__ import annotations

from stream_app import Runtime
from tests.apps.atomic_logs import bids, lots, scripted

__all__ = ["app", "runtime"]

runtime = Runtime()
app = runtime.app
runtime.atomic(lots)
runtime.atomic(bids)
runtime.atomic(scripted)
