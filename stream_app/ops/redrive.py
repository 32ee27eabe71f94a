"""Redrive dead letters: produce them again to their source topic, after a fix.

A dead letter keeps the original key and value byte for byte, with ``stream_app.dlq.*`` headers
that say why and where from (:class:`~stream_app.core.dead_letters.DeadLetter`). Redriving
produces that key and value again to the source topic, so a record rejected by old code is
handled by the fixed code as if it had just arrived; if it is rejected again it comes back as a
new dead letter. Each redriven record carries :data:`REDRIVEN_FROM_HEADER`, naming the dead
letter it came from.

The steps, each usable on its own (``stream-app dead-letters list|redrive`` is a thin CLI over
them):

1. :func:`existing_topics` and :func:`read_dead_letters` read the dead-letter topic, decoding
   every record into a :class:`Listed` (a dead letter, or a record that is not one and why);
2. :func:`plan_redrive` selects what to redrive and says why each other selected record is
   refused (:func:`redrive_refusal`);
3. :func:`redrive` produces the plan's dead letters and waits for Kafka to acknowledge them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_app.clients.cells import CellClient
from stream_app.core.dead_letters import DeadLetter
from stream_app.core.origin import BootOrigin, InjectOrigin, TimerOrigin
from stream_app.core.origin import parse as parse_origin
from stream_app.kafka.reading import Record, read_records
from stream_app.kafka.security import check_credentials
from stream_app.settings import Settings

__all__ = [
    "REDRIVEN_FROM_HEADER",
    "Listed",
    "RedrivePlan",
    "decode_records",
    "existing_topics",
    "key_text",
    "parse_position",
    "plan_redrive",
    "read_dead_letters",
    "redrive",
    "redrive_refusal",
    "value_preview",
]

#: Header on a redriven record naming the dead letter it came from (``<topic>/<p>/<o>``).
REDRIVEN_FROM_HEADER = "stream_app.redriven-from"

# Origins of parked work that did not come from a topic (see stream_app.engine.cells).


@dataclass(frozen=True, slots=True)
class Listed:
    """One record of the dead-letter topic, decoded if it is a dead letter.

    Attributes:
        record: The record as read.
        letter: The dead letter, or ``None`` when the record lacks the headers of one.
        problem: Why the record is not a dead letter (``None`` when it is one).
    """

    record: Record
    letter: DeadLetter | None
    problem: str | None

    @property
    def position(self) -> str:
        """``<partition>:<offset>`` of the record in the dead-letter topic."""
        return f"{self.record.partition}:{self.record.offset}"

    def as_json(self) -> dict[str, Any]:
        """The record as a JSON object: its position, a preview, and the dead letter's fields
        (or the problem, for a record that is not a dead letter)."""
        record, letter = self.record, self.letter
        row: dict[str, Any] = {
            "partition": record.partition,
            "offset": record.offset,
            "key": key_text(record.key),
            "value_preview": value_preview(record.value),
            "dead_letter": letter is not None,
        }
        if letter is None:
            row["problem"] = self.problem
            return row
        row.update(
            reason=letter.reason,
            behaviour=letter.behaviour,
            app=letter.app,
            error=letter.error,
            source_topic=letter.source_topic,
            source_partition=letter.source_partition,
            source_offset=letter.source_offset,
            timestamp_ms=letter.timestamp_ms,
            original_size=letter.original_size,
            truncated=letter.truncated,
        )
        return row


def decode_records(records: Iterable[Record]) -> list[Listed]:
    """Decode dead-letter-topic records, oldest dead letter first.

    Records that are not dead letters are kept (with the reason) and come first, by position.
    """
    listed = []
    for record in records:
        try:
            letter = DeadLetter.from_record(record.key, record.value, record.headers)
        except ValueError as exc:
            listed.append(Listed(record, None, str(exc)))
        else:
            listed.append(Listed(record, letter, None))
    return sorted(
        listed,
        key=lambda i: (
            i.letter.timestamp_ms if i.letter else -1,
            i.record.partition,
            i.record.offset,
        ),
    )


def value_preview(value: bytes | None, *, width: int = 80) -> str:
    """The first ``width`` characters of a value: text as is, other bytes as a Python repr."""
    if value is None:
        return "<no value>"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        shown = repr(value[:width])
        return shown + "..." if len(value) > width else shown
    head = text[:width]
    # Newlines and other control characters would break a one-line listing.
    shown = head if head.isprintable() else repr(head)
    return shown + "..." if len(text) > width else shown


def key_text(key: bytes | None) -> str:
    """A record key for one line of text: printable UTF-8 as is, anything else as a repr."""
    if key is None:
        return "<none>"
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return repr(key)
    return text if text.isprintable() else repr(text)


def parse_position(text: str) -> tuple[int, int]:
    """Parse a position in a topic, ``<partition>:<offset>`` (both non-negative integers).

    Raises:
        ValueError: The text is not of that form.
    """
    partition, sep, offset = text.strip().partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"expected PARTITION:OFFSET (e.g. 0:42), got {text!r}")
    return int(partition), int(offset)


def redrive_refusal(letter: DeadLetter, topics: set[str]) -> str | None:
    """Why ``letter`` cannot be redriven (``None`` when it can).

    Args:
        letter: The dead letter.
        topics: The topics that exist in the cluster (a redrive never creates one).
    """
    if letter.truncated:
        return (
            f"truncated: only the first {len(letter.value or b'')} of {letter.original_size} "
            "bytes were kept, redriving them would send a different record"
        )
    if letter.source_partition < 0 or letter.source_offset < 0:
        return (
            f"no source record: it is parked work from {_work_from(letter.source_topic)}, "
            "not a record of a topic"
        )
    if letter.source_topic not in topics:
        return f"source topic {letter.source_topic!r} does not exist"
    if letter.key is None:
        return "the original record had no key, so it has no partition to go back to"
    return None


@dataclass
class RedrivePlan:
    """What a redrive will do.

    Attributes:
        chosen: The dead letters to produce again, in the order to produce them.
        refused: ``(position, why)`` of selected records that will not be redriven.
        missing: Requested positions with no record in the dead-letter topic.
    """

    chosen: list[Listed] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def plan_redrive(
    listed: Sequence[Listed],
    *,
    positions: Sequence[tuple[int, int]] | None,
    reason: str | None,
    topics: set[str],
) -> RedrivePlan:
    """Select the dead letters to redrive: those at ``positions`` (or all, for ``None``) with
    ``reason`` (any, for ``None``), and say why each other selected record is refused."""
    plan = RedrivePlan()
    by_position = {(i.record.partition, i.record.offset): i for i in listed}
    if positions is None:
        selected = list(listed)
    else:
        selected = []
        for position in dict.fromkeys(positions):
            if position in by_position:
                selected.append(by_position[position])
            else:
                plan.missing.append(f"{position[0]}:{position[1]}")
    for item in selected:
        letter = item.letter
        if letter is None:
            # A record that is not a dead letter has no reason: a reason filter leaves it out.
            if positions is not None or reason is None:
                plan.refused.append((item.position, f"not a dead letter ({item.problem})"))
            continue
        if reason is not None and letter.reason != reason:
            if positions is not None:
                plan.refused.append((item.position, f"reason is {letter.reason}, not {reason}"))
            continue
        why = redrive_refusal(letter, topics)
        if why is None:
            plan.chosen.append(item)
        else:
            plan.refused.append((item.position, why))
    return plan


def existing_topics(settings: Settings, *, timeout: float) -> set[str]:
    """The names of all topics in the cluster of ``settings``.

    All topics, not one by name: asking for one by name may create it where auto-creation is on.

    Raises:
        ConnectionError: Kafka did not answer within ``timeout`` seconds (the message names the
            bootstrap servers).
        KafkaAuthError: Kafka refused the credentials or the TLS handshake.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    check_credentials(settings)
    # Quiet: an unreachable broker is reported once, not logged by librdkafka every 50 ms.
    admin = AdminClient({**settings.kafka_client_config(), "log_level": 0})
    try:
        return set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        text = error.str() if hasattr(error, "str") else str(error)
        raise ConnectionError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {text}"
        ) from None


def read_dead_letters(
    settings: Settings,
    topics: set[str],
    *,
    timeout: float,
    tail: int | None = None,
    spans: Mapping[int, tuple[int, int]] | None = None,
) -> list[Listed]:
    """Every record of the app's dead-letter topic, decoded (see :func:`decode_records`).

    Args:
        settings: The app's settings (broker, app id).
        topics: The topics that exist (from :func:`existing_topics`).
        timeout: Seconds to read the topic to its end.
        tail: Read only the last ``tail`` offsets of each partition (``None``: all of it).
        spans: Read only these offsets, ``partition -> (first, end)`` (end excluded).

    Raises:
        LookupError: The dead-letter topic does not exist (no worker of the app has run).
        TimeoutError: The end of the topic was not reached within ``timeout`` seconds.
    """
    topic = settings.dead_letter_topic
    if topic not in topics:
        raise LookupError(
            f"topic {topic} does not exist on {settings.bootstrap_servers} "
            f"(no worker of app {settings.app_id!r} has run; is STREAM_APP_APP_ID right?)"
        )
    return decode_records(
        read_records(settings.kafka_client_config(), topic, tail=tail, spans=spans, timeout=timeout)
    )


def redrive(plan: RedrivePlan, settings: Settings, *, timeout: float) -> None:
    """Produce each of ``plan.chosen`` again (key, value, and :data:`REDRIVEN_FROM_HEADER`) to
    its source topic, in order, and wait until Kafka acknowledges them all.

    Raises:
        StreamAppError: Some records were not delivered, or not acknowledged within ``timeout``
            seconds (the errors are listed).
    """
    if not plan.chosen:
        return
    dead_letter_topic = settings.dead_letter_topic
    client = CellClient(settings)
    for item in plan.chosen:
        letter = item.letter
        assert letter is not None and letter.key is not None, "refused by plan_redrive"
        origin = f"{dead_letter_topic}/{item.record.partition}/{item.record.offset}"
        client.produce_raw(
            letter.source_topic,
            letter.key,
            letter.value,
            headers=[(REDRIVEN_FROM_HEADER, origin.encode())],
        )
    client.flush(timeout)


def _work_from(origin_text: str) -> str:
    """What made the work a dead letter without a source record came from (its origin, which
    the engine names in place of the topic)."""
    try:
        origin = parse_origin(origin_text)
    except ValueError:
        return f"origin {origin_text!r}"
    if isinstance(origin, BootOrigin):
        return "an on_boot call"
    if isinstance(origin, TimerOrigin):
        return f"the timer {origin.name!r}"
    if isinstance(origin, InjectOrigin):
        return "an injected message"
    return f"origin {origin_text!r}"
