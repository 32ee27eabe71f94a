"""Two reactor handlers that log every record they handle and can be held in the middle of one.

Run as ``faust -A tests.apps.reactor_probe worker``. The handlers ``first`` and ``second`` (in
that order) read ``<app_id>.work``. For each record, each handler:

1. appends ``<handler> start <partition> <offset> <value>`` to the file ``REACTOR_LOG``;
2. waits while the file ``<REACTOR_HOLD_DIR>/<handler>-<value>`` exists (the test holds a
   handler inside a record by creating that file, and lets it go by removing it);
3. appends ``<handler> done <partition> <offset> <value>``.

Records are injected from inside the worker with ``Runtime.inject_record``, from two places:

- ``first``, on a record ``relay:<value>``, injects ``<value>`` (same key) after its hold and
  before its ``done`` line;
- a timer injects the content of the file ``REACTOR_INJECT_FILE`` (key ``timer``) when the
  file appears, then removes the file.

``GET /reactor-probe/partitions/`` lists the partitions of the topic this worker is assigned.

Each line is written and closed before the handler goes on, so a SIGKILL loses none of them: a
``start`` without its ``done`` is a record the handler was inside when the worker died.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from stream_app import ReactorRecord, Runtime

__all__ = ["TOPIC", "app", "first", "inject_on_request", "partitions", "runtime", "second"]

runtime = Runtime()
app = runtime.app

#: The topic both handlers read.
TOPIC = f"{runtime.settings.app_id}.work"

#: How often a held handler looks at its hold file, and the timer for its file (seconds).
_POLL_S = 0.02


def _log(line: str) -> None:
    path = os.environ.get("REACTOR_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


async def _handle(name: str, record: ReactorRecord) -> None:
    value = (record.value or b"").decode()
    where = f"{record.partition} {record.offset} {value}"
    _log(f"{name} start {where}")
    hold_dir = os.environ.get("REACTOR_HOLD_DIR")
    if hold_dir:
        hold = Path(hold_dir) / f"{name}-{value}"
        while hold.exists():
            await asyncio.sleep(_POLL_S)
    if name == "first" and value.startswith("relay:"):
        await runtime.inject_record(TOPIC, record.key or b"", value.removeprefix("relay:").encode())
    _log(f"{name} done {where}")


@runtime.handler(TOPIC, name="first")
async def first(record: ReactorRecord) -> None:
    """Log the record (start, possibly held, done)."""
    await _handle("first", record)


@runtime.handler(TOPIC, name="second")
async def second(record: ReactorRecord) -> None:
    """Log the record (start, possibly held, done), after ``first`` is done with it."""
    await _handle("second", record)


@app.timer(_POLL_S)
async def inject_on_request() -> None:
    """Inject the content of ``REACTOR_INJECT_FILE`` when the file appears, then remove it."""
    path = os.environ.get("REACTOR_INJECT_FILE")
    if path and Path(path).exists():
        await runtime.inject_record(TOPIC, b"timer", Path(path).read_text().strip().encode())
        Path(path).unlink()


@app.page("/reactor-probe/partitions/")
async def partitions(web: Any, request: Any) -> Any:
    """The partitions of :data:`TOPIC` assigned to this worker."""
    return web.json(sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == TOPIC))
