"""``stream-app dead-letters list|replay``: read the dead-letter topic, replay after a fix.

A dead letter keeps the original key and value byte for byte, with ``stream_app.dlq.*`` headers
that say why and where from (:class:`~stream_app.core.dead_letters.DeadLetter`). Replaying
produces that key and value again to the source topic, so a record rejected by old code is
handled by the fixed code as if it had just arrived; if it is rejected again it comes back as a
new dead letter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from stream_app.core.dead_letters import DeadLetter
from stream_app.settings import Settings
from stream_app.testing import Record

__all__ = [
    "REPLAYED_FROM_HEADER",
    "Listed",
    "ReplayPlan",
    "dead_letters",
    "decode_records",
    "format_listed",
    "listed_json",
    "parse_offset",
    "plan_replay",
    "replay_refusal",
    "value_preview",
]

#: Header on a replayed record naming the dead letter it came from (``<topic>/<p>/<o>``).
REPLAYED_FROM_HEADER = "stream_app.replayed-from"

# Origins of parked work that did not come from a topic (see stream_app.engine.cells).
_PSEUDO_TOPICS = {"boot": "an on_boot call", "timer": "a timer", "inject": "an injected message"}


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
    # Newlines and other control characters would break the one-line listing.
    shown = head if head.isprintable() else repr(head)
    return shown + "..." if len(text) > width else shown


def _key_text(key: bytes | None) -> str:
    if key is None:
        return "<none>"
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return repr(key)
    return text if text.isprintable() else repr(text)


def format_listed(item: Listed) -> list[str]:
    """The lines ``dead-letters list`` prints for one record."""
    record, letter = item.record, item.letter
    if letter is None:
        return [
            f"{item.position}  not a dead letter ({item.problem})  key={_key_text(record.key)}",
            f"    value: {value_preview(record.value)}",
        ]
    size = (
        f" (truncated: {len(letter.value or b'')} of {letter.original_size} bytes kept)"
        if letter.truncated
        else ""
    )
    return [
        f"{item.position}  reason={letter.reason}  behaviour={letter.behaviour}  "
        f"source={letter.source_topic}/{letter.source_partition}/{letter.source_offset}  "
        f"key={_key_text(letter.key)}",
        f"    error: {letter.error}",
        f"    value{size}: {value_preview(letter.value)}",
    ]


def listed_json(item: Listed) -> dict[str, Any]:
    """One record as ``dead-letters list --json`` prints it."""
    record, letter = item.record, item.letter
    row: dict[str, Any] = {
        "partition": record.partition,
        "offset": record.offset,
        "key": _key_text(record.key),
        "value_preview": value_preview(record.value),
        "dead_letter": letter is not None,
    }
    if letter is None:
        row["problem"] = item.problem
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


def parse_offset(text: str) -> tuple[int, int]:
    """Parse ``<partition>:<offset>`` (both non-negative integers).

    Raises:
        ValueError: The text is not of that form.
    """
    partition, sep, offset = text.strip().partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"expected PARTITION:OFFSET (e.g. 0:42), got {text!r}")
    return int(partition), int(offset)


def replay_refusal(letter: DeadLetter, topics: set[str]) -> str | None:
    """Why ``letter`` cannot be replayed (``None`` when it can).

    Args:
        letter: The dead letter.
        topics: The topics that exist in the cluster (a replay never creates one).
    """
    if letter.truncated:
        return (
            f"truncated: only the first {len(letter.value or b'')} of {letter.original_size} "
            "bytes were kept, replaying them would send a different record"
        )
    pseudo = _PSEUDO_TOPICS.get(letter.source_topic)
    if pseudo is not None or letter.source_partition < 0 or letter.source_offset < 0:
        what = pseudo or f"origin {letter.source_topic!r}"
        return f"no source record: it is parked work from {what}, not a record of a topic"
    if letter.source_topic not in topics:
        return f"source topic {letter.source_topic!r} does not exist"
    if letter.key is None:
        return "the original record had no key, so it has no partition to go back to"
    return None


@dataclass
class ReplayPlan:
    """What ``dead-letters replay`` will do.

    Attributes:
        replay: The dead letters to produce again, in the order to produce them.
        refused: ``(position, why)`` of selected records that will not be replayed.
        missing: Requested positions with no record in the dead-letter topic.
    """

    replay: list[Listed] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def plan_replay(
    listed: Sequence[Listed],
    *,
    offsets: Sequence[tuple[int, int]] | None,
    reason: str | None,
    topics: set[str],
) -> ReplayPlan:
    """Select the dead letters to replay: those at ``offsets`` (or all, for ``None``) with
    ``reason`` (any, for ``None``), and say why each other selected record is refused."""
    plan = ReplayPlan()
    by_position = {(i.record.partition, i.record.offset): i for i in listed}
    if offsets is None:
        selected = list(listed)
    else:
        selected = []
        for position in dict.fromkeys(offsets):
            if position in by_position:
                selected.append(by_position[position])
            else:
                plan.missing.append(f"{position[0]}:{position[1]}")
    for item in selected:
        letter = item.letter
        if letter is None:
            # A record that is not a dead letter has no reason: --reason leaves it out.
            if offsets is not None or reason is None:
                plan.refused.append((item.position, f"not a dead letter ({item.problem})"))
            continue
        if reason is not None and letter.reason != reason:
            if offsets is not None:
                plan.refused.append((item.position, f"reason is {letter.reason}, not {reason}"))
            continue
        why = replay_refusal(letter, topics)
        if why is None:
            plan.replay.append(item)
        else:
            plan.refused.append((item.position, why))
    return plan


def _settings() -> Settings:
    # Read on each call, not cached: one process (a test, a script) may run several apps.
    return Settings()


def _existing_topics(settings: Settings, timeout: float) -> set[str]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # Quiet: an unreachable broker is reported once below, not logged by librdkafka every 50 ms.
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, "log_level": 0})
    try:
        # All topics: asking for one by name may create it where auto-creation is on.
        return set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        text = error.str() if hasattr(error, "str") else str(error)
        raise click.ClickException(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {text}"
        ) from None


def _read_dead_letters(settings: Settings, topics: set[str], timeout: float) -> list[Listed]:
    from stream_app.testing import read_topic

    topic = settings.dead_letter_topic
    if topic not in topics:
        raise click.ClickException(
            f"topic {topic} does not exist on {settings.bootstrap_servers} "
            f"(no worker of app {settings.app_id!r} has run; is STREAM_APP_APP_ID right?)"
        )
    return decode_records(read_topic(settings.bootstrap_servers, topic, timeout=timeout))


def _offsets(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    try:
        return [parse_offset(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_timeout = click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for Kafka."
)


@click.group(name="dead-letters")
def dead_letters() -> None:
    """List and replay dead letters.

    Dead letters are the records that could not be processed, kept on <app>.dead-letters.
    """


@dead_letters.command(name="list")
@click.option("--limit", type=click.IntRange(min=1), help="Show only the newest N.")
@click.option("--reason", help="Only dead letters with this reason (e.g. malformed-json).")
@click.option("--behaviour", help="Only dead letters of this behaviour.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@_timeout
def list_letters(
    limit: int | None, reason: str | None, behaviour: str | None, as_json: bool, timeout: float
) -> None:
    """List the dead letters, oldest first.

    Each shows its position, reason, behaviour, source, error and value. The position
    (PARTITION:OFFSET in the dead-letter topic) is what ``replay --offset`` takes. Records of the
    topic that are not dead letters are listed as such.
    """
    settings = _settings()
    listed = _read_dead_letters(settings, _existing_topics(settings, timeout), timeout)
    total = len(listed)
    if reason is not None or behaviour is not None:
        listed = [
            i
            for i in listed
            if i.letter is not None
            and (reason is None or i.letter.reason == reason)
            and (behaviour is None or i.letter.behaviour == behaviour)
        ]
    matching = len(listed)
    if limit is not None:
        listed = listed[-limit:]
    if as_json:
        click.echo(json.dumps([listed_json(i) for i in listed], indent=2))
        return
    for item in listed:
        for line in format_listed(item):
            click.echo(line)
    click.echo(
        f"{len(listed)} shown, {matching} matching, {total} record(s) in "
        f"{settings.dead_letter_topic}"
    )


@dead_letters.command()
@click.option(
    "--offset",
    "offsets",
    multiple=True,
    callback=_offsets,
    metavar="PARTITION:OFFSET",
    help="A dead letter to replay, by its position in the dead-letter topic (repeatable).",
)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter (see --reason).")
@click.option("--reason", help="Only dead letters with this reason.")
@click.option("--dry-run", is_flag=True, help="Print what would be replayed; produce nothing.")
@_timeout
def replay(
    offsets: list[tuple[int, int]],
    replay_all: bool,
    reason: str | None,
    dry_run: bool,
    timeout: float,
) -> None:
    """Replay dead letters to their source topic, after a fix.

    Produces each selected dead letter's original key and value again. Use it once the code that
    rejected them is fixed (or the data they needed exists). Each replayed record carries the header
    stream_app.replayed-from = <dead-letter topic>/<p>/<o>; if it fails again it becomes a new dead
    letter. Truncated dead letters and parked work with no source record are refused. A record from
    a reactor topic reaches every handler of the topic again. Exits with status 1 when a requested
    --offset is missing or refused.
    """
    if bool(offsets) == replay_all:
        raise click.UsageError("give either --offset PARTITION:OFFSET (one or more) or --all")
    settings = _settings()
    topics = _existing_topics(settings, timeout)
    listed = _read_dead_letters(settings, topics, timeout)
    plan = plan_replay(
        listed, offsets=None if replay_all else offsets, reason=reason, topics=topics
    )
    dlq = settings.dead_letter_topic
    verb = "would replay" if dry_run else "replayed"
    done = "would be replayed" if dry_run else "replayed"
    if plan.replay and not dry_run:
        from stream_app.clients.cells import CellClient

        client = CellClient(settings)
        for item in plan.replay:
            letter = item.letter
            assert letter is not None and letter.key is not None, "refused by plan_replay"
            origin = f"{dlq}/{item.record.partition}/{item.record.offset}"
            client.produce_raw(
                letter.source_topic,
                letter.key,
                letter.value,
                headers=[(REPLAYED_FROM_HEADER, origin.encode())],
            )
        client.flush(timeout)
    for item in plan.replay:
        letter = item.letter
        assert letter is not None
        click.echo(
            f"{verb} {item.position} ({letter.reason}, from {letter.source_topic}/"
            f"{letter.source_partition}/{letter.source_offset}) to {letter.source_topic} "
            f"key={_key_text(letter.key)}"
        )
    for position, why in plan.refused:
        click.echo(f"refused {position}: {why}")
    for position in plan.missing:
        click.echo(f"missing {position}: no record at that position in {dlq}")
    summary = f"{len(plan.replay)} dead letter(s) {done}"
    if plan.refused:
        summary += f", {len(plan.refused)} refused"
    if plan.missing:
        summary += f", {len(plan.missing)} missing"
    click.echo(summary + (" (dry run)" if dry_run else ""))
    if not replay_all and (plan.refused or plan.missing):
        raise SystemExit(1)
