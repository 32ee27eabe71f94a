"""Log levels an operator can alert on: a worker that rides out a fault logs no ERROR line.

Kafka clients report every failed connection attempt, metadata refresh, fetch and heartbeat of a
fault they then recover from by themselves: a 20 s broker outage made a worker log about 2,000
ERROR lines (``Unable connect to node…``, ``Unable to update metadata…``) before it carried on,
and every first start logged ``GroupCoordinatorNotAvailableError`` and a "not found" for the
leader topic Faust was creating. None of them needs a person. :class:`TransientErrors` turns the
ones known to be retried into WARNINGs and lets one through per :data:`RATE_WINDOW_S` for each
kind, saying how many like it it held back; anything else keeps its level, so an ERROR line
still means something failed that the worker did not get past.

:func:`quiet_transient_errors` installs it on aiokafka's loggers (Faust's consumer and producer)
and on :data:`RDKAFKA_LOGGER`, the logger stream_app gives the librdkafka clients of a worker
(the batched input, its producers, the tail reads of table recovery) instead of their own
``%3|…|FAIL|`` lines on stderr.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping

__all__ = [
    "RATE_WINDOW_S",
    "RDKAFKA_LOGGER",
    "RDKAFKA_TRANSIENT_WORDS",
    "TRANSIENT",
    "TransientErrors",
    "quiet_transient_errors",
    "rdkafka_logger",
]

#: One WARNING per kind of transient error in this many seconds; the rest are counted.
RATE_WINDOW_S = 10.0

#: Name of the logger that receives the librdkafka logs of a worker's confluent-kafka clients.
RDKAFKA_LOGGER = "stream_app.rdkafka"

#: Messages (the logging call's format string, or for librdkafka its facility) that a Kafka
#: client logs at ERROR or WARNING for a failure it retries by itself, by logger name.
TRANSIENT: Mapping[str, frozenset[str]] = {
    # aiokafka.client logs as "aiokafka".
    "aiokafka": frozenset(
        {
            "Unable connect to node with id %s: %s",
            'Unable connect to "%s:%s": %s',
            "Unable to update metadata from %s",
        }
    ),
    "aiokafka.cluster": frozenset({"Topic %s not found in cluster metadata"}),
    "aiokafka.consumer.group_coordinator": frozenset(
        {
            "Error sending %s to node %s [%s] -- marking coordinator dead",
            "Group Coordinator Request failed: %s",
            "Heartbeat session expired - marking coordinator dead",
            "Heartbeat send request failed: %s. Will retry.",
            "LeaveGroup request failed: %s",
            "OffsetCommit failed before join, ignoring: %s",
            "OffsetCommit failed for group %s due to group error (%s), will rejoin",
        }
    ),
    "aiokafka.consumer.fetcher": frozenset(
        {"Failed fetch messages from %s: %s", "Failed fetch offsets from %s: %s"}
    ),
    # WARNINGs, but one per request retried: hundreds a second while a broker is away.
    "aiokafka.producer.sender": frozenset(
        {
            "Got error produce response: %s",
            "Got error produce response on topic-partition %s, retrying. Error: %s",
        }
    ),
    # Formatted before logging, so matched by its start (a kind ending in "*").
    "faust.transport.producer": frozenset({"producer buffer full size *"}),
    # librdkafka facilities: a connection that failed or dropped, a request that timed out.
    RDKAFKA_LOGGER: frozenset({"FAIL", "REQTMOUT"}),
}

#: Words of a librdkafka log message (any facility) that name a failure it retries: a request
#: that met a broker going away, or a coordinator still loading after a restart.
RDKAFKA_TRANSIENT_WORDS = (
    "Broker transport failure",
    "Coordinator load in progress",
    "Not coordinator",
    "Coordinator not available",
)


class TransientErrors(logging.Filter):
    """Logs a known transient ERROR as a WARNING, and known transient ERRORs and WARNINGs at
    most once per kind per ``window`` seconds.

    Args:
        kinds: Format strings (or, on :data:`RDKAFKA_LOGGER`, librdkafka facilities) of the
            errors to treat as transient.
        window: Seconds between two records of one kind; the records in between are dropped and
            counted, and the next one let through says how many there were.

    Records of other kinds, and records at other levels, pass unchanged.
    """

    def __init__(self, kinds: Iterable[str], *, window: float = RATE_WINDOW_S) -> None:
        super().__init__()
        self.kinds = frozenset(kinds)
        self.window = window
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def _kind(self, record: logging.LogRecord) -> str | None:
        if record.levelno not in (logging.ERROR, logging.WARNING) or record.exc_info:
            return None
        if record.name == RDKAFKA_LOGGER or record.msg == "%s [%s] %s":
            # confluent-kafka logs ("%s [%s] %s", facility, client name, message).
            args = record.args
            if not isinstance(args, tuple) or len(args) != 3:
                return None
            facility, _client, message = args
            if facility in self.kinds:
                return str(facility)
            if any(words in str(message) for words in RDKAFKA_TRANSIENT_WORDS):
                return f"{facility}: {str(message).split(': ', 1)[-1][:60]}"
            return None
        template = record.msg if isinstance(record.msg, str) else None
        if template is None:
            return None
        if template in self.kinds:
            return template
        return next(
            (k for k in self.kinds if k.endswith("*") and template.startswith(k[:-1])), None
        )

    def filter(self, record: logging.LogRecord) -> bool:
        """Re-level a transient error to WARNING and rate-limit it (and a transient warning);
        pass anything else."""
        kind = self._kind(record)
        if kind is None:
            return True
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.window:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        if held:
            record.msg = f"{record.getMessage()} (and {held} more like it, held back)"
            record.args = ()
        return True


def rdkafka_logger() -> logging.Logger:
    """The logger to pass as ``logger`` in a worker's confluent-kafka client configuration."""
    return logging.getLogger(RDKAFKA_LOGGER)


_installed: dict[str, TransientErrors] = {}


def quiet_transient_errors() -> None:
    """Install :class:`TransientErrors` on the Kafka clients' loggers (once per process)."""
    for name, kinds in TRANSIENT.items():
        if name not in _installed:
            _installed[name] = TransientErrors(kinds)
            logging.getLogger(name).addFilter(_installed[name])
