"""Dead letters: records that could not be processed, kept with the reason.

A dead letter is the original record, byte for byte (key and value), re-published on
``<app_id>.dead-letters`` with headers that say why and where it came from. Keeping the value
untouched means a record can be redriven after a fix by producing it again (``stream-app
dead-letters redrive``); the headers follow the ``stream_app.dlq.*`` naming so any Kafka tool can
read them.

When the original value is itself too large for the dead-letter topic, the first
``max_bytes`` bytes are kept and the ``truncated`` / ``original-size`` headers say so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["HEADER_PREFIX", "DeadLetter"]

HEADER_PREFIX = "stream_app.dlq."

_FIELDS = (
    "reason",
    "error",
    "app",
    "behaviour",
    "source-topic",
    "source-partition",
    "source-offset",
    "timestamp-ms",
    "original-size",
    "truncated",
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record that could not be processed, with the reason.

    Attributes:
        key: The original record key, unchanged.
        value: The original record value (truncated to the size limit if it was larger).
        reason: A short code: ``malformed-json``, ``schema``, ``unknown-type``, ``oversized``,
            ``invalid-key``, or another error's ``reason``.
        error: The human-readable error message.
        app: The app id of the worker that rejected it.
        behaviour: The behaviour whose input it was.
        source_topic: Topic the record was read from.
        source_partition: Partition it was read from.
        source_offset: Offset it was read from.
        timestamp_ms: When it was dead-lettered (milliseconds since the epoch).
        original_size: Length of the original value in bytes (``-1`` for no value).
        truncated: Whether :attr:`value` holds only the first bytes of the original.
    """

    key: bytes | None
    value: bytes | None
    reason: str
    error: str
    app: str
    behaviour: str
    source_topic: str
    source_partition: int
    source_offset: int
    timestamp_ms: int
    original_size: int
    truncated: bool

    @classmethod
    def for_record(
        cls,
        *,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        error: str,
        app: str,
        behaviour: str,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int,
    ) -> DeadLetter:
        """Build the dead letter of a rejected record, truncating a value over ``max_bytes``."""
        size = -1 if value is None else len(value)
        truncated = value is not None and len(value) > max_bytes
        return cls(
            key=key,
            value=value[:max_bytes] if truncated and value is not None else value,
            reason=reason,
            error=error[:4000],
            app=app,
            behaviour=behaviour,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            timestamp_ms=int(time.time() * 1000),
            original_size=size,
            truncated=truncated,
        )

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers that carry the reason and the origin."""
        values = (
            self.reason,
            self.error,
            self.app,
            self.behaviour,
            self.source_topic,
            str(self.source_partition),
            str(self.source_offset),
            str(self.timestamp_ms),
            str(self.original_size),
            "true" if self.truncated else "false",
        )
        return [(HEADER_PREFIX + name, v.encode()) for name, v in zip(_FIELDS, values, strict=True)]

    @classmethod
    def from_record(
        cls,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, str | bytes | None]] | None,
    ) -> DeadLetter:
        """Read a dead letter back from a record of the dead-letter topic.

        Raises:
            ValueError: The record lacks the ``stream_app.dlq.*`` headers.
        """
        found = {
            name.removeprefix(HEADER_PREFIX): raw.decode("utf-8", "replace")
            if isinstance(raw, bytes)
            else (raw or "")
            for name, raw in (headers or [])
            if name.startswith(HEADER_PREFIX)
        }
        missing = [f for f in _FIELDS if f not in found]
        if missing:
            raise ValueError(f"not a stream_app dead letter: missing headers {missing}")
        return cls(
            key=key,
            value=value,
            reason=found["reason"],
            error=found["error"],
            app=found["app"],
            behaviour=found["behaviour"],
            source_topic=found["source-topic"],
            source_partition=int(found["source-partition"]),
            source_offset=int(found["source-offset"]),
            timestamp_ms=int(found["timestamp-ms"]),
            original_size=int(found["original-size"]),
            truncated=found["truncated"] == "true",
        )
