"""``stream-app atomic store|query|listen|scope|scopes``: an atomic log from the shell.

``store``, ``query`` and ``listen`` are :class:`~stream_app.clients.atomic.AtomicClient` calls:
they need the log's definition (its event model and scope function), found by name in the app
module the workers run (``--app``), so an event is checked and routed exactly as the Python
client does it. ``scope`` and ``scopes`` ask a worker's atomic views (any worker: it routes a
scope to its owner and gathers the scopes from every worker).

Importing the app module builds its runtime, which refuses an atomic log unless the app is
``exactly_once``: run the commands with the workers' ``STREAM_APP_*`` settings.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from stream_app.cli.common import (
    current_settings,
    expect_ok,
    import_app,
    json_object,
    json_output_option,
    quote,
    timeout_option,
    url_option,
    worker_get,
)
from stream_app.errors import ReplyTimeoutError, RequestRejectedError, StreamAppError

if TYPE_CHECKING:
    from stream_app.api.atomic import AtomicLog
    from stream_app.clients.atomic import AtomicClient
    from stream_app.core.atomic import AtomicEventRecord, AtomicResult

__all__ = ["atomic", "find_atomic_logs", "format_record", "format_result"]

#: ``--app MODULE``: where the log is declared.
_app_option = click.option(
    "--app",
    "module",
    metavar="MODULE",
    required=True,
    help="The app module the workers run (faust -A MODULE, e.g. stream_app.examples.auction), "
    "which declares the log.",
)


def find_atomic_logs(module_name: str) -> dict[str, AtomicLog[Any, Any]]:
    """The atomic logs of the app module ``module_name``, by name: its
    :class:`~stream_app.api.atomic.AtomicLog` values and those registered on its runtime.

    Raises:
        click.ClickException: The module cannot be imported or loaded (e.g. its runtime
            refuses an atomic log because the settings are not ``exactly_once``).
    """
    from stream_app.api.atomic import AtomicLog
    from stream_app.runtime import Runtime

    try:
        module = import_app(module_name)
    except StreamAppError as exc:
        raise click.ClickException(f"cannot load {module_name}: {exc}") from None
    found: dict[str, AtomicLog[Any, Any]] = {}
    for value in vars(module).values():
        candidates = (
            [engine.behaviour for engine in value.engines.values()]
            if isinstance(value, Runtime)
            else [value]
        )
        for candidate in candidates:
            if isinstance(candidate, AtomicLog):
                found.setdefault(candidate.name, candidate)
    return found


def _log(module_name: str, name: str) -> AtomicLog[Any, Any]:
    logs = find_atomic_logs(module_name)
    if name not in logs:
        raise click.ClickException(
            f"{module_name} declares no atomic log {name!r} (it declares {sorted(logs)})"
        )
    return logs[name]


def _client(module_name: str, name: str, timeout: float) -> AtomicClient:
    from stream_app.clients.atomic import AtomicClient

    return AtomicClient(_log(module_name, name), current_settings(), timeout=timeout)


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def format_result(result: AtomicResult) -> str:
    """One line for a ``store_if_valid`` result: ``accepted #<seq> <event>`` or
    ``rejected <reason>`` (``timed out`` for a validation timeout), then its ``meta``."""
    if result.was_accepted:
        line = f"accepted #{result.seq} {_compact(result.stored_event)}"
    else:
        what = "timed out" if result.timed_out else "rejected"
        line = f"{what} {_compact(result.reason)}"
    if result.meta is not None:
        line += f"  meta={_compact(result.meta)}"
    return line


def format_record(record: AtomicEventRecord) -> str:
    """One line for an accepted event: ``#<seq> <event>  request=<id>  [meta=...]``."""
    line = f"#{record.seq} {_compact(record.event)}  request={record.request_id}"
    if record.meta is not None:
        line += f"  meta={_compact(record.meta)}"
    return line


@click.group()
def atomic() -> None:
    """Store events in atomic logs, read and follow a scope's log, inspect scopes.

    store, query and listen talk to Kafka (STREAM_APP_* settings) with the log found in the app
    module (--app); scope and scopes ask a worker's web views (--url).
    """


@atomic.command()
@click.argument("log")
@click.argument("event", metavar="EVENT_JSON", callback=json_object)
@_app_option
@click.option(
    "--request-id",
    help="The request's id (default: a fresh one). Storing again with the id of a request "
    "still pending does not store twice.",
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the result.",
)
@json_output_option
def store(
    log: str,
    event: dict[str, Any],
    module: str,
    request_id: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Ask LOG to store EVENT_JSON in its scope's log if its validator accepts it.

    Prints the result; exits with status 1 when the event is rejected (by the validator, a
    validation timeout, or a full queue).
    """
    from pydantic import ValidationError

    from stream_app.clients.atomic import AtomicClient

    definition = _log(module, log)
    try:
        typed = definition.event_model.model_validate(event)
    except ValidationError as exc:
        raise click.ClickException(f"refused, nothing sent: {exc}") from None
    with AtomicClient(definition, current_settings(), timeout=timeout) as client:
        try:
            result = client.store_if_valid(typed, request_id=request_id, timeout=timeout)
        except ReplyTimeoutError as exc:
            raise click.ClickException(
                f"{exc}: the request is durable and will still be decided; query the scope, "
                "or store again with the same --request-id while it is pending"
            ) from None
        except RequestRejectedError as exc:
            raise click.ClickException(f"the worker refused it (a dead letter): {exc}") from None
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        click.echo(f"{result.scope}  {format_result(result)}")
    if not result.was_accepted:
        raise SystemExit(1)


@atomic.command()
@click.argument("log")
@click.argument("scope")
@_app_option
@timeout_option
@json_output_option
def query(log: str, scope: str, module: str, timeout: float, as_json: bool) -> None:
    """Print every event of SCOPE's log in LOG, oldest first (read from its event topic)."""
    with _client(module, log, timeout) as client:
        try:
            found = client.records(scope, timeout=timeout)
        except StreamAppError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        dumped = [record.model_dump(mode="json") for record in found]
        click.echo(json.dumps(dumped, indent=2, sort_keys=True))
        return
    if not found:
        click.echo(f"no event in {log}/{scope}")
    for record in found:
        click.echo(format_record(record))


@atomic.command()
@click.argument("log")
@click.argument("scope")
@_app_option
@click.option(
    "--from-seq",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="The first sequence number to print.",
)
@click.option("--max", "limit", type=click.IntRange(min=1), help="Stop after N events.")
@click.option("--idle", type=float, help="Stop after this many seconds without an event.")
@click.option("--json", "as_json", is_flag=True, help="Print each event record as JSON.")
def listen(
    log: str,
    scope: str,
    module: str,
    from_seq: int,
    limit: int | None,
    idle: float | None,
    as_json: bool,
) -> None:
    """Print SCOPE's accepted events in LOG from --from-seq on, then each new one as it is
    committed, until interrupted (or --max, --idle)."""
    printed = 0

    def enough() -> bool:
        return limit is not None and printed >= limit

    with _client(module, log, 30.0) as client:
        for record in client.subscribe(scope, from_seq=from_seq, idle_timeout=idle, stop=enough):
            if as_json:
                click.echo(json.dumps(record.model_dump(mode="json"), sort_keys=True))
            else:
                click.echo(format_record(record))
            printed += 1


@atomic.command()
@click.argument("log")
@click.argument("scope")
@url_option
@timeout_option
@json_output_option
def scope(log: str, scope: str, url: str | None, timeout: float, as_json: bool) -> None:
    """Show SCOPE of LOG as its owner holds it: its sequence number, summary, recent events,
    the validation in flight, the requests queued behind it and its counters.

    Exits with status 1 when the scope has never had a request.
    """
    base = url or current_settings().web_url
    path = f"/stream-app/atomic/{quote(log)}/{quote(scope)}/"
    status, body = worker_get(base, path, timeout=timeout)
    if status == 404 and isinstance(body, dict) and "seq" in body:
        raise click.ClickException(f"scope {log}/{scope} has had no request ({base})")
    described: dict[str, Any] = expect_ok(status, body, base + path, log)
    if as_json:
        click.echo(json.dumps(described, indent=2, sort_keys=True))
        return
    flight = described["in_flight"]
    asked = (
        f"{flight['request_id']} (attempt {flight['attempt']}, "
        f"deadline {_iso_ms(flight['deadline_ms'])})"
        if flight
        else "-"
    )
    click.echo(f"{log}/{scope}  seq={described['seq']}")
    click.echo(f"in flight: {asked}  queued={described['queued']}")
    click.echo(
        "accepted={accepted}  rejected={rejected}  timed_out={timed_out}  late={late}".format(
            **described
        )
    )
    if described["summary"] is not None:
        click.echo(f"summary: {_compact(described['summary'])}")
    for event in described["recent"]:
        click.echo(f"  {_compact(event)}")


@atomic.command()
@click.argument("log")
@url_option
@timeout_option
@json_output_option
def scopes(log: str, url: str | None, timeout: float, as_json: bool) -> None:
    """List every scope of LOG, gathered from every worker: its sequence number, the request
    in flight, how many wait, and its counters."""
    base = url or current_settings().web_url
    path = f"/stream-app/atomic/{quote(log)}/"
    status, body = worker_get(base, path, timeout=timeout)
    found: dict[str, Any] = expect_ok(status, body, base + path, log)
    if as_json:
        click.echo(json.dumps(found, indent=2, sort_keys=True))
        return
    if not found:
        click.echo(f"no scope in {log}")
    for name, entry in sorted(found.items()):
        click.echo(
            f"{name}  seq={entry['seq']}  in_flight={entry['in_flight'] or '-'}  "
            f"queued={entry['queued']}  accepted={entry['accepted']}  "
            f"rejected={entry['rejected']}  timed_out={entry['timed_out']}  late={entry['late']}"
        )


def _iso_ms(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
