"""``stream-app dead-letters list|redrive``: read the dead-letter topic, redrive after a fix.

The work is done by :mod:`stream_app.ops.redrive`; this module parses the options, prints, and
turns the library's errors into exit statuses.
"""

from __future__ import annotations

import json
from typing import Any

import click

from stream_app.cli.common import current_settings
from stream_app.ops.redrive import (
    Listed,
    existing_topics,
    key_text,
    parse_position,
    plan_redrive,
    read_dead_letters,
    redrive,
    value_preview,
)
from stream_app.settings import Settings

__all__ = ["dead_letters", "format_listed"]


def format_listed(item: Listed) -> list[str]:
    """The lines ``dead-letters list`` prints for one record."""
    record, letter = item.record, item.letter
    if letter is None:
        return [
            f"{item.position}  not a dead letter ({item.problem})  key={key_text(record.key)}",
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
        f"key={key_text(letter.key)}",
        f"    error: {letter.error}",
        f"    value{size}: {value_preview(letter.value)}",
    ]


def _read(settings: Settings, timeout: float) -> tuple[set[str], list[Listed]]:
    """The cluster's topics and the decoded dead-letter topic, Kafka's errors as CLI errors."""
    try:
        topics = existing_topics(settings, timeout=timeout)
        return topics, read_dead_letters(settings, topics, timeout=timeout)
    except (ConnectionError, LookupError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None


def _positions(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    try:
        return [parse_position(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_timeout = click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for Kafka."
)


@click.group(name="dead-letters")
def dead_letters() -> None:
    """List and redrive dead letters.

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
    (PARTITION:OFFSET in the dead-letter topic) is what ``redrive --offset`` takes. Records of the
    topic that are not dead letters are listed as such.
    """
    settings = current_settings()
    _, listed = _read(settings, timeout)
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
        click.echo(json.dumps([i.as_json() for i in listed], indent=2))
        return
    for item in listed:
        for line in format_listed(item):
            click.echo(line)
    click.echo(
        f"{len(listed)} shown, {matching} matching, {total} record(s) in "
        f"{settings.dead_letter_topic}"
    )


@dead_letters.command(name="redrive")
@click.option(
    "--offset",
    "positions",
    multiple=True,
    callback=_positions,
    metavar="PARTITION:OFFSET",
    help="A dead letter to redrive, by its position in the dead-letter topic (repeatable).",
)
@click.option(
    "--all", "redrive_all", is_flag=True, help="Redrive every dead letter (see --reason)."
)
@click.option("--reason", help="Only dead letters with this reason.")
@click.option("--dry-run", is_flag=True, help="Print what would be redriven; produce nothing.")
@_timeout
def redrive_letters(
    positions: list[tuple[int, int]],
    redrive_all: bool,
    reason: str | None,
    dry_run: bool,
    timeout: float,
) -> None:
    """Redrive dead letters to their source topic, after a fix.

    Produces each selected dead letter's original key and value again. Use it once the code that
    rejected them is fixed (or the data they needed exists). Each redriven record carries the
    header stream_app.redriven-from = <dead-letter topic>/<p>/<o>; if it fails again it becomes a
    new dead letter. Truncated dead letters and parked work with no source record are refused. A
    record from a reactor topic reaches every handler of the topic again. Exits with status 1 when
    a requested --offset is missing or refused.
    """
    if bool(positions) == redrive_all:
        raise click.UsageError("give either --offset PARTITION:OFFSET (one or more) or --all")
    settings = current_settings()
    topics, listed = _read(settings, timeout)
    plan = plan_redrive(
        listed, positions=None if redrive_all else positions, reason=reason, topics=topics
    )
    if not dry_run:
        redrive(plan, settings, timeout=timeout)
    verb = "would redrive" if dry_run else "redriven"
    for item in plan.chosen:
        letter = item.letter
        assert letter is not None
        click.echo(
            f"{verb} {item.position} ({letter.reason}, from {letter.source_topic}/"
            f"{letter.source_partition}/{letter.source_offset}) to {letter.source_topic} "
            f"key={key_text(letter.key)}"
        )
    for position, why in plan.refused:
        click.echo(f"refused {position}: {why}")
    for position in plan.missing:
        click.echo(
            f"missing {position}: no record at that position in {settings.dead_letter_topic}"
        )
    done = "would be redriven" if dry_run else "redriven"
    summary = f"{len(plan.chosen)} dead letter(s) {done}"
    if plan.refused:
        summary += f", {len(plan.refused)} refused"
    if plan.missing:
        summary += f", {len(plan.missing)} missing"
    click.echo(summary + (" (dry run)" if dry_run else ""))
    if not redrive_all and (plan.refused or plan.missing):
        raise SystemExit(1)
