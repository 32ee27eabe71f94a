"""``stream-app cells get|list|parked|release|send``: inspect and repair cells.

The read commands ask a worker's HTTP views (``GET /stream-app/...``); any worker will do, it
routes a cell to the worker that owns its partition and gathers listings from every worker. The
write commands produce to the behaviour's input topic with
:class:`~stream_app.clients.cells.CellClient`,
so they reach the owning worker through Kafka, in order with the cell's other messages. ``send``
given the app module (``--app``) first checks the message as a worker of that app decodes it, and
refuses, producing nothing, what the worker would dead-letter.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from stream_app.cli.common import (
    app_option,
    check_message,
    current_settings,
    expect_ok,
    json_object,
    json_output_option,
    quote,
    timeout_option,
    url_option,
    worker_get,
)
from stream_app.errors import StreamAppError
from stream_app.settings import Settings

if TYPE_CHECKING:
    from stream_app.clients.cells import CellClient

__all__ = ["cells", "format_cells", "format_parked"]


def format_cells(cells: dict[str, Any]) -> list[str]:
    """One ``<id>  <data as compact JSON>`` line per cell, sorted by id."""
    return [
        f"{cell_id}  {json.dumps(data, sort_keys=True, separators=(',', ':'))}"
        for cell_id, data in sorted(cells.items())
    ]


def format_parked(parked: dict[str, Any]) -> list[str]:
    """One line per parked cell (id, waiting items, since when, attempts, error), by id."""
    lines = []
    for cell_id, entry in sorted(parked.items()):
        since = _iso_ms(entry.get("since_ms"))
        lines.append(
            f"{cell_id}  waiting={entry.get('waiting')}  since={since}  "
            f"attempts={entry.get('attempts')}  error={entry.get('error')}"
        )
    return lines


def _iso_ms(ms: Any) -> str:
    if not isinstance(ms, int):
        return "?"
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _produce(settings: Settings, timeout: float, queue: Callable[[CellClient], None]) -> None:
    """Queue records with a fresh client and wait until Kafka acknowledges them."""
    from stream_app.clients.cells import CellClient

    # Quiet: an unreachable broker is reported once below, not logged by librdkafka every 50 ms.
    client = CellClient(settings, config={"log_level": 0})
    try:
        queue(client)
        client.flush(timeout)
    except StreamAppError as exc:
        raise click.ClickException(
            f"not acknowledged by Kafka at {settings.bootstrap_servers}: {exc}"
        ) from None
    finally:
        # Destroyed now, not at interpreter exit, where librdkafka's threads (still
        # reconnecting to a broker that refused them) could outlive what they use.
        del client


@click.group()
def cells() -> None:
    """Inspect, message and release cells.

    get, list and parked ask a worker's web views (--url); send and release produce to the
    behaviour's input topic (STREAM_APP_* settings).
    """


@cells.command()
@click.argument("behaviour")
@click.argument("cell_id", metavar="ID")
@url_option
@timeout_option
def get(behaviour: str, cell_id: str, url: str | None, timeout: float) -> None:
    """Print a cell: data, version, pending timers, parked work.

    Prints cell ID of BEHAVIOUR as JSON. Any worker answers: it asks the worker that owns the cell's
    partition. Exits with status 1 when the cell is dead and not parked, or when the worker cannot
    be reached.
    """
    base = url or current_settings().web_url
    path = f"/stream-app/cells/{quote(behaviour)}/{quote(cell_id)}/"
    status, body = worker_get(base, path, timeout=timeout)
    if status == 404 and isinstance(body, dict) and "alive" in body:
        raise click.ClickException(
            f"cell {behaviour}/{cell_id} is dead (no data) and not parked ({base})"
        )
    described = expect_ok(status, body, base + path, behaviour)
    click.echo(json.dumps(described, indent=2, sort_keys=True))


@cells.command(name="list")
@click.argument("behaviour")
@url_option
@timeout_option
@json_output_option
def list_cells(behaviour: str, url: str | None, timeout: float, as_json: bool) -> None:
    """List the live cells of BEHAVIOUR.

    Gathered from every worker; one ``id  data`` line per cell, or JSON with --json.
    """
    _print_listing("cells", "live", format_cells, behaviour, url, timeout, as_json)


@cells.command()
@click.argument("behaviour")
@url_option
@timeout_option
@json_output_option
def parked(behaviour: str, url: str | None, timeout: float, as_json: bool) -> None:
    """List the parked cells of BEHAVIOUR.

    Prints each one's error, how much work waits and since when. A cell is parked when a callback
    kept failing; its later work waits, in order, until ``stream-app cells release``.
    """
    _print_listing("parked", "parked", format_parked, behaviour, url, timeout, as_json)


def _print_listing(
    view: str,
    kind: str,
    format_lines: Callable[[dict[str, Any]], Iterable[str]],
    behaviour: str,
    url: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """GET ``/stream-app/<view>/<behaviour>/`` from a worker and print it, one line per cell."""
    base = url or current_settings().web_url
    path = f"/stream-app/{view}/{quote(behaviour)}/"
    status, body = worker_get(base, path, timeout=timeout)
    found: dict[str, Any] = expect_ok(status, body, base + path, behaviour)
    if as_json:
        click.echo(json.dumps(found, indent=2, sort_keys=True))
    elif not found:
        click.echo(f"no {kind} cells of {behaviour}")
    else:
        for line in format_lines(found):
            click.echo(line)


@cells.command()
@click.argument("behaviour")
@click.argument("cell_id", metavar="ID")
@click.option(
    "--skip",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Dead-letter the first N waiting items (reason 'discarded') instead of running them.",
)
@timeout_option
def release(behaviour: str, cell_id: str, skip: int, timeout: float) -> None:
    """Release a parked cell, after a fix: its waiting work runs again.

    Releases cell ID of BEHAVIOUR: its waiting work runs again, in order. The request travels
    through the input topic to the worker that owns the cell. If an item fails again, the cell is
    parked again from that item on. A cell that is not parked ignores the request.
    """
    settings = current_settings()
    _produce(settings, timeout, lambda client: client.release(behaviour, cell_id, skip=skip))
    skipped = f", dead-lettering the first {skip} item(s)" if skip else ""
    click.echo(
        f"asked to release {behaviour}/{cell_id}{skipped} "
        f"(sent on {settings.input_topic(behaviour)})"
    )


@cells.command()
@click.argument("behaviour")
@click.argument("cell_id", metavar="ID")
@click.argument("message_type", metavar="TYPE")
@click.option(
    "--body", callback=json_object, metavar="JSON", help="The message body, a JSON object."
)
@click.option("--id", "message_id", help="The message id (default: a random one).")
@app_option
@timeout_option
def send(
    behaviour: str,
    cell_id: str,
    message_type: str,
    body: dict[str, Any] | None,
    message_id: str | None,
    module: str | None,
    timeout: float,
) -> None:
    """Send a message to a cell.

    Sends a TYPE message with --body to cell ID of BEHAVIOUR and waits until Kafka has it.
    With --app, a message a worker would dead-letter (unknown type, a body that does not match,
    like "2" for an integer) is refused with exit status 1 and nothing is produced; without it
    the message is sent unvalidated. The output says which.
    """
    from stream_app.core.envelope import envelope_bytes

    settings = current_settings()
    value = envelope_bytes(message_type, body, id=message_id or uuid.uuid4().hex)
    checked = check_message(module, behaviour, cell_id, value, settings)
    topic = settings.input_topic(behaviour)
    # The bytes checked are the bytes sent.
    _produce(settings, timeout, lambda client: client.produce_raw(topic, cell_id, value))
    click.echo(
        f"sent {message_type} {json.dumps(body or {}, sort_keys=True)} to {behaviour}/{cell_id} "
        f"(on {topic}), {checked}"
    )
