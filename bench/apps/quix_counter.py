"""The counter in Quix Streams, as its users write it: ``<venv-quix>/bin/python -m
bench.apps.quix_counter``.

The peer subject of :mod:`bench.peers`. It runs in its own virtualenv (``bench/.venv-quix``,
made by :mod:`bench.peers`): Quix Streams pins a confluent-kafka older than the project's, so
it cannot share the project's environment. It is the same update as
:mod:`bench.apps.cell_counter` and :mod:`bench.apps.faust_counter`, written idiomatically: an
:class:`~quixstreams.Application` (``auto_offset_reset="earliest"``, the cell's commit interval,
``processing_guarantee`` ``at-least-once`` or ``exactly-once``), one ``StreamingDataFrame`` on
``<app_id>.counter.in`` with a stateful ``apply`` (RocksDB state with its changelog topic, which
Quix creates and names) that validates each record with the same envelope model
(:data:`bench.apps.model.MESSAGES`, i.e. :class:`stream_app.core.envelope.MessageTypes`) and
keeps the cell's :class:`~bench.apps.model.Count` under the state key ``count``.

The producer gets the settings every subject of the benchmark has: ``linger.ms`` 5 and
idempotence (Quix enables idempotence itself under exactly-once).

Configured by environment: ``BENCH_BOOTSTRAP``, ``BENCH_GROUP`` (consumer group, also the state
folder's name), ``BENCH_TOPIC``, ``BENCH_STATE_DIR``, ``BENCH_GUARANTEE`` (``at_least_once`` or
``exactly_once``), ``BENCH_COMMIT_INTERVAL_S``, ``BENCH_EXPECTED`` and ``BENCH_PROGRESS_FILE``:
the :class:`~bench.apps.harness.Progress` snapshot is written there (atomically) at the first
record and at the ``BENCH_EXPECTED``-th, for the benchmark to read. It runs until SIGTERM.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any


def _stream_app_core_only() -> None:
    """Make ``stream_app.core`` importable without ``stream_app/__init__.py``.

    The package's ``__init__`` imports the runtime (Faust, the project's confluent-kafka), which
    this virtualenv does not have; the envelope model (``stream_app.core.envelope``, pydantic
    only) is imported from the same source files by registering the package by its path.
    """
    if "stream_app" not in sys.modules:
        package = types.ModuleType("stream_app")
        package.__path__ = [str(Path(__file__).resolve().parents[2] / "stream_app")]
        sys.modules["stream_app"] = package


_stream_app_core_only()

from quixstreams import Application, State  # noqa: E402

from bench.apps.harness import Progress  # noqa: E402
from bench.apps.model import MESSAGES, Count, Increment, apply_increment  # noqa: E402

__all__ = ["build", "main"]

#: The largest record value accepted, as the cell's default ``max_message_bytes``.
MAX_MESSAGE_BYTES = 1_048_576
#: The project's guarantee names, as Quix spells them.
GUARANTEES = {"at_least_once": "at-least-once", "exactly_once": "exactly-once"}


def _write_progress(progress: Progress, path: Path) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(progress.snapshot()))
    os.replace(scratch, path)


def build(env: dict[str, str]) -> Application:
    """The application and its dataframe, configured from ``env`` (see the module docstring)."""
    progress = Progress.from_env()
    progress_file = Path(env["BENCH_PROGRESS_FILE"])
    app = Application(
        broker_address=env["BENCH_BOOTSTRAP"],
        consumer_group=env["BENCH_GROUP"],
        auto_offset_reset="earliest",
        commit_interval=float(env["BENCH_COMMIT_INTERVAL_S"]),
        processing_guarantee=GUARANTEES[env["BENCH_GUARANTEE"]],  # type: ignore[arg-type]
        state_dir=env["BENCH_STATE_DIR"],
        producer_extra_config={"linger.ms": 5, "enable.idempotence": True},
        loglevel="WARNING",
    )
    topic = app.topic(env["BENCH_TOPIC"], key_deserializer="bytes", value_deserializer="bytes")

    def count(value: bytes, key: bytes, timestamp: int, headers: Any, state: State) -> int:
        message = MESSAGES.decode(key, value, max_bytes=MAX_MESSAGE_BYTES)
        assert isinstance(message.body, Increment)
        stored = state.get("count")
        data = apply_increment(Count.model_validate(stored) if stored else None, message.body)
        state.set("count", data.model_dump())
        progress.note()
        if progress.count in (1, progress.expected):
            _write_progress(progress, progress_file)
        return data.count

    app.dataframe(topic).apply(count, stateful=True, metadata=True)
    return app


def main() -> None:
    """Run the counter until SIGTERM."""
    build(dict(os.environ)).run()


if __name__ == "__main__":
    main()
