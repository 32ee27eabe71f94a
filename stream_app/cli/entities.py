"""``stream-app entities get|send|fold``: query, message and rebuild event-sourced entities.

``get`` asks a worker's HTTP view (any worker; it routes to the owner). ``send`` is the
request/reply client: it waits for the new state. ``fold`` needs no worker: it reads the event
log and the table's changelog from Kafka, folds the events with the entity's own ``update``
(imported from the app module named by ``--app``) and checks the fold against the cache
(:func:`stream_app.ops.fold.fold_log`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from stream_app.cli.common import (
    app_option,
    check_message,
    current_settings,
    expect_ok,
    import_app,
    json_object,
    quote,
    timeout_option,
    url_option,
    worker_get,
)

__all__ = ["entities", "find_entity"]


def find_entity(module_name: str, entity_type: str) -> Any:
    """The :class:`~stream_app.api.entities.Entity` named ``entity_type`` in a module.

    Raises:
        click.ClickException: The module cannot be imported or declares no such entity.
    """
    from stream_app.api.entities import Entity

    module = import_app(module_name)
    found = {value.name: value for value in vars(module).values() if isinstance(value, Entity)}
    if entity_type not in found:
        raise click.ClickException(
            f"{module_name} declares no entity {entity_type!r} (it declares {sorted(found)})"
        )
    return found[entity_type]


@click.group()
def entities() -> None:
    """Query, message and rebuild event-sourced entities."""


@entities.command()
@click.argument("entity_type", metavar="TYPE")
@click.argument("entity_id", metavar="ID")
@url_option
@timeout_option
def get(entity_type: str, entity_id: str, url: str | None, timeout: float) -> None:
    """Print the current state of entity ID of TYPE and the seq of its last event (JSON).

    Any worker answers: it asks the worker that owns the entity's partition.
    """
    base = url or current_settings().web_url
    path = f"/stream-app/entities/{quote(entity_type)}/{quote(entity_id)}/"
    status, body = worker_get(base, path, timeout=timeout)
    click.echo(json.dumps(expect_ok(status, body, base + path, entity_type), indent=2))


@entities.command()
@click.argument("entity_type", metavar="TYPE")
@click.argument("entity_id", metavar="ID")
@click.argument("message_type", metavar="MESSAGE")
@click.argument("body", default="{}", callback=json_object)
@click.option("--project", help="Reply with this projection of the state instead of all of it.")
@app_option
@timeout_option
def send(
    entity_type: str,
    entity_id: str,
    message_type: str,
    body: dict[str, Any],
    project: str | None,
    module: str | None,
    timeout: float,
) -> None:
    """Send MESSAGE (with BODY, a JSON object) to entity ID of TYPE and print the reply.

    Exits with status 1 when the entity rejects the message or no reply comes in time. With
    --app, a message a worker would dead-letter is refused first (status 1, nothing sent);
    whether it was validated is said on stderr.
    """
    from stream_app.clients.entities import EntityClient
    from stream_app.core.envelope import envelope_bytes
    from stream_app.errors import ReplyTimeoutError, RequestRejectedError

    settings = current_settings()
    value = envelope_bytes(message_type, body, project=project)
    click.echo(check_message(module, entity_type, entity_id, value, settings), err=True)
    with EntityClient(settings, timeout=timeout) as client:
        try:
            reply = client.request((entity_type, entity_id), message_type, body, project=project)
        except (RequestRejectedError, ReplyTimeoutError) as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(reply.model_dump_json(indent=2))


@entities.command()
@click.argument("entity_type", metavar="TYPE")
@click.argument("entity_id", metavar="[ID]", required=False)
@click.option(
    "--app",
    "module",
    required=True,
    metavar="MODULE",
    help="The app module that declares the entity (e.g. stream_app.examples.ledger).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def fold(entity_type: str, entity_id: str | None, module: str, as_json: bool) -> None:
    """Rebuild entity ID of TYPE (or every one) from its event log and check the cache.

    Reads <app_id>.TYPE.events from the beginning with a progress bar, folds each entity's
    events with the entity's update, and compares the result with the state cached in the
    table's changelog. Also checks that sequence numbers have no gaps and no duplicates.
    Exits with status 1 when anything differs.
    """
    from stream_app.ops.fold import fold_log

    entity = find_entity(module, entity_type)
    settings = current_settings()
    bar: Any = None

    def on_total(total: int) -> None:
        nonlocal bar
        bar = click.progressbar(
            length=total, label=f"folding {settings.events_topic(entity_type)}", file=sys.stderr
        )
        bar.__enter__()

    try:
        report = fold_log(
            entity,
            settings,
            entity_id=entity_id,
            on_total=on_total,
            progress=lambda n: bar.update(n) if bar is not None else None,
        )
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "entity": report.entity,
                    "events": report.events,
                    "entities": report.entities,
                    "ok": report.ok,
                    "duplicates": report.duplicates,
                    "gaps": report.gaps,
                    "mismatched": {
                        i: {"folded": report.folded.get(i), "cached": report.cached.get(i)}
                        for i in report.mismatched
                    },
                },
                indent=2,
            )
        )
    else:
        click.echo(
            f"{report.entity}: {report.events} events, {report.entities} entities rebuilt; "
            f"{len(report.mismatched)} differ from the cache, "
            f"{sum(map(len, report.duplicates.values()))} duplicate and "
            f"{sum(map(len, report.gaps.values()))} missing sequence numbers"
        )
        for ident in report.mismatched[:20]:
            click.echo(
                f"  {ident}: folded {report.folded.get(ident)} != cached {report.cached.get(ident)}"
            )
    if not report.ok:
        sys.exit(1)
