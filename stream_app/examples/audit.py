"""Audit: reactor handlers, called for every record of a topic.

Run it with ``faust -A stream_app.examples.audit worker -l info``.

Any producer writes audit events to ``<app_id>.audit`` (key: who did it, value: the event,
usually JSON such as ``{"action": "login", "severity": "low"}``). Two handlers get every
record, in this order:

- :func:`trail` appends it to the audit trail, the file named by ``AUDIT_TRAIL`` (one JSON
  line per record; the log when the variable is unset);
- :func:`alarms` logs a warning for events of severity ``high``.

Handlers are called at least once per record: after a crash, records whose offsets were not
committed are delivered again. The trail writes each record's ``topic/partition/offset``
(its identity) so readers can drop repeats.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from stream_app import ReactorRecord, Runtime

__all__ = ["TOPIC", "alarms", "app", "runtime", "trail"]

logger = logging.getLogger(__name__)

runtime = Runtime()
app = runtime.app

#: The topic the handlers read; the runtime creates it at start if it is missing.
TOPIC = f"{runtime.settings.app_id}.audit"

_TRAIL = os.environ.get("AUDIT_TRAIL")


@runtime.handler(TOPIC, name="trail")
def trail(record: ReactorRecord) -> None:
    """Append the record to the audit trail, whatever its value holds."""
    line = json.dumps(
        {
            "source": f"{record.topic}/{record.partition}/{record.offset}",
            "who": (record.key or b"").decode("utf-8", "replace"),
            "event": (record.value or b"").decode("utf-8", "replace"),
            "at_ms": record.timestamp_ms,
        },
        sort_keys=True,
    )
    if _TRAIL:
        with Path(_TRAIL).open("a") as fh:
            fh.write(line + "\n")
    else:
        logger.info("audit %s", line)


@runtime.handler(TOPIC, name="alarms")
async def alarms(record: ReactorRecord) -> None:
    """Log a warning for every event of severity ``high``.

    A value that is not a JSON object is in the trail already; raising here would only retry
    it and then dead-letter it, so it is noted and skipped.
    """
    try:
        event = json.loads(record.value or b"")
    except ValueError:
        logger.info("audit: %s/%s is not JSON; trail only", record.partition, record.offset)
        return
    if isinstance(event, dict) and event.get("severity") == "high":
        who = (record.key or b"").decode("utf-8", "replace")
        logger.warning("ALARM %s by %s: %s", event.get("action"), who, event)
