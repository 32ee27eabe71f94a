"""The atomic-log benchmark's worker: ``faust -A bench.apps.atomic_bids worker``.

The subjects of :mod:`bench.atomic` (:mod:`bench.apps.atomic_model`: the atomic logs ``bids``,
with a fold, ``quick``, the same with its validator inline, and ``full``, without a fold, each
with its in-worker validator, and the entity ``lots``)
on one :class:`~stream_app.Runtime`, so that every part runs the same module, process and
settings. Run it ``exactly_once`` (``STREAM_APP_PROCESSING_GUARANTEE``), which atomic logs
need. Nothing here counts: the benchmark reads what each subject committed to its event topic.
"""

from __future__ import annotations

from bench.apps.atomic_model import bids, full, lots, quick
from bench.apps.harness import faust_options, start_profile_if_requested
from stream_app import Runtime, get_settings
from stream_app.kafka.app import create_app

__all__ = ["app", "runtime"]

start_profile_if_requested()

settings = get_settings()
runtime = Runtime(settings, app=create_app(settings, **faust_options()))
app = runtime.app
runtime.atomic(bids)
runtime.atomic(full)
runtime.atomic(quick)
runtime.entity(lots)
