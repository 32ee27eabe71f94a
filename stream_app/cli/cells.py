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

import importlib
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from stream_app.errors import InvalidMessageError, StreamAppError
from stream_app.settings import Settings

if TYPE_CHECKING:
    from stream_app.clients.cells import CellClient
    from stream_app.core.envelope import MessageTypes

__all__ = [
    "cells",
    "check_message",
    "find_message_types",
    "format_cells",
    "format_parked",
    "import_app",
    "worker_get",
]

_url = click.option(
    "--url",
    metavar="URL",
    help="A worker's web address (default: http://<STREAM_APP_WEB_HOST>:<STREAM_APP_WEB_PORT>).",
)
_timeout = click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for an answer."
)
_as_json = click.option("--json", "as_json", is_flag=True, help="Print the worker's JSON answer.")
_app = click.option(
    "--app",
    "module",
    metavar="MODULE",
    help="The app module the workers run (faust -A MODULE, e.g. stream_app.examples.counter). "
    "The message is first checked against the behaviour's message types, as a worker of that app "
    "checks it, and refused if invalid. Without --app it is sent unvalidated.",
)


def worker_get(base_url: str, path: str, *, timeout: float) -> tuple[int, Any]:
    """GET ``path`` from the worker at ``base_url``; return the status and the decoded body.

    An HTTP error status is returned, not raised (its body decoded when it is JSON, else
    ``None``), so callers can tell a dead cell from a missing view.

    Raises:
        click.ClickException: The worker could not be reached (the URL is in the message).
    """
    url = base_url.rstrip("/") + path
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise click.ClickException(
            f"cannot reach the worker at {url}: {reason} "
            "(is a worker running? pass its address with --url)"
        ) from None
    try:
        return status, json.loads(raw)
    except ValueError:
        if 200 <= status < 300:
            raise click.ClickException(
                f"the worker at {url} answered {status} with a body that is not JSON: {raw[:200]!r}"
            ) from None
        return status, None


def _expect_ok(status: int, body: Any, url: str, behaviour: str) -> Any:
    if status == 404:
        raise click.ClickException(
            f"the worker at {url} has no view for behaviour {behaviour!r} (404): "
            "is it a behaviour of that app?"
        )
    if not 200 <= status < 300:
        raise click.ClickException(f"the worker at {url} answered {status}: {body!r}")
    return body


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


def _settings() -> Settings:
    # Read on each call, not cached: one process (a test, a script) may run several apps.
    return Settings()


def _produce(settings: Settings, timeout: float, queue: Callable[[CellClient], None]) -> None:
    """Queue records with a fresh client and wait until Kafka acknowledges them."""
    from stream_app.clients.cells import CellClient

    # Quiet: an unreachable broker is reported once below, not logged by librdkafka every 50 ms.
    client = CellClient(settings, config={"log_level": 0})
    queue(client)
    try:
        client.flush(timeout)
    except StreamAppError as exc:
        raise click.ClickException(
            f"not acknowledged by Kafka at {settings.bootstrap_servers}: {exc}"
        ) from None


def import_app(module_name: str) -> ModuleType:
    """Import the app module ``module_name`` (what ``faust -A`` is given).

    Raises:
        click.ClickException: The module cannot be imported.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise click.ClickException(f"cannot import {module_name}: {exc}") from None


def find_message_types(module_name: str, behaviour: str) -> MessageTypes:
    """The message types of ``behaviour`` as the app module ``module_name`` declares them.

    Looks at the module's Behaviours, cultures and Entities, at those registered on its
    Runtime, and at its MessageTypes (an app that decodes records itself, like the counter).

    Raises:
        click.ClickException: The module cannot be imported or declares no such behaviour.
    """
    declared: dict[str, MessageTypes] = {}
    for value in vars(import_app(module_name)).values():
        for types in _message_types_in(value):
            declared.setdefault(types.behaviour, types)
    if behaviour not in declared:
        raise click.ClickException(
            f"{module_name} declares no behaviour {behaviour!r} (it declares {sorted(declared)})"
        )
    return declared[behaviour]


def _message_types_in(value: Any) -> list[MessageTypes]:
    from stream_app.api.behaviour import Behaviour
    from stream_app.api.entities import Entity
    from stream_app.core.envelope import MessageTypes
    from stream_app.runtime import Runtime

    if isinstance(value, Runtime):
        return [engine.behaviour.message_types for engine in value.engines.values()]
    if isinstance(value, Entity):
        value = value.behaviour
    if isinstance(value, Behaviour):
        value = value.message_types
    return [value] if isinstance(value, MessageTypes) else []


def check_message(
    module: str | None, behaviour: str, cell_id: str, value: bytes, settings: Settings
) -> str:
    """Check the record ``cell_id`` -> ``value`` as a worker of the app ``module`` decodes it.

    Returns:
        How it was checked, for the output: ``validated against <module>``, or ``unvalidated``
        and why when ``module`` is ``None``.

    Raises:
        click.ClickException: A worker would dead-letter it; the message names the field and
            the problem (the dead letter's error) and its reason.
    """
    if module is None:
        return "unvalidated: pass --app MODULE to check it against the behaviour's messages first"
    types = find_message_types(module, behaviour)
    try:
        types.decode(cell_id.encode(), value, max_bytes=settings.max_message_bytes)
    except InvalidMessageError as exc:
        raise click.ClickException(
            f"refused, nothing sent: {exc} (a worker of {module} would dead-letter it with "
            f"reason {exc.reason!r})"
        ) from None
    return f"validated against {module}"


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


@click.group()
def cells() -> None:
    """Inspect, message and release cells.

    get, list and parked ask a worker's web views (--url); send and release produce to the
    behaviour's input topic (STREAM_APP_* settings).
    """


@cells.command()
@click.argument("behaviour")
@click.argument("cell_id", metavar="ID")
@_url
@_timeout
def get(behaviour: str, cell_id: str, url: str | None, timeout: float) -> None:
    """Print a cell: data, version, pending timers, parked work.

    Prints cell ID of BEHAVIOUR as JSON. Any worker answers: it asks the worker that owns the cell's
    partition. Exits with status 1 when the cell is dead and not parked, or when the worker cannot
    be reached.
    """
    base = url or _settings().web_url
    path = f"/stream-app/cells/{_quote(behaviour)}/{_quote(cell_id)}/"
    status, body = worker_get(base, path, timeout=timeout)
    if status == 404 and isinstance(body, dict) and "alive" in body:
        raise click.ClickException(
            f"cell {behaviour}/{cell_id} is dead (no data) and not parked ({base})"
        )
    described = _expect_ok(status, body, base + path, behaviour)
    click.echo(json.dumps(described, indent=2, sort_keys=True))


@cells.command(name="list")
@click.argument("behaviour")
@_url
@_timeout
@_as_json
def list_cells(behaviour: str, url: str | None, timeout: float, as_json: bool) -> None:
    """List the live cells of BEHAVIOUR.

    Gathered from every worker; one ``id  data`` line per cell, or JSON with --json.
    """
    _print_listing("cells", "live", format_cells, behaviour, url, timeout, as_json)


@cells.command()
@click.argument("behaviour")
@_url
@_timeout
@_as_json
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
    base = url or _settings().web_url
    path = f"/stream-app/{view}/{_quote(behaviour)}/"
    status, body = worker_get(base, path, timeout=timeout)
    found: dict[str, Any] = _expect_ok(status, body, base + path, behaviour)
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
    help="Dead-letter the first N waiting items (reason 'discarded') instead of replaying them.",
)
@_timeout
def release(behaviour: str, cell_id: str, skip: int, timeout: float) -> None:
    """Replay a parked cell's waiting work, after a fix.

    Releases cell ID of BEHAVIOUR: its waiting work is replayed in order. The request travels
    through the input topic to the worker that owns the cell. If an item fails again, the cell is
    parked again from that item on. A cell that is not parked ignores the request.
    """
    settings = _settings()
    _produce(settings, timeout, lambda client: client.release(behaviour, cell_id, skip=skip))
    skipped = f", dead-lettering the first {skip} item(s)" if skip else ""
    click.echo(
        f"asked to release {behaviour}/{cell_id}{skipped} "
        f"(sent on {settings.input_topic(behaviour)})"
    )


def _json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        body = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc}): {value!r}") from None
    if not isinstance(body, dict):
        raise click.BadParameter(
            f"expected a JSON object like '{{\"by\": 2}}', got a {type(body).__name__}: {value!r}"
        )
    return body


@cells.command()
@click.argument("behaviour")
@click.argument("cell_id", metavar="ID")
@click.argument("message_type", metavar="TYPE")
@click.option(
    "--body", callback=_json_object, metavar="JSON", help="The message body, a JSON object."
)
@click.option("--id", "message_id", help="The message id (default: a random one).")
@_app
@_timeout
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

    settings = _settings()
    value = envelope_bytes(message_type, body, id=message_id or uuid.uuid4().hex)
    checked = check_message(module, behaviour, cell_id, value, settings)
    topic = settings.input_topic(behaviour)
    # The bytes checked are the bytes sent.
    _produce(settings, timeout, lambda client: client.produce_raw(topic, cell_id, value))
    click.echo(
        f"sent {message_type} {json.dumps(body or {}, sort_keys=True)} to {behaviour}/{cell_id} "
        f"(on {topic}), {checked}"
    )
