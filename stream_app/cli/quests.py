"""``stream-app quests send|call|add|remove|tail|list|instances``: Ruby-Quest's console.

The write commands produce the quest protocol's envelopes (:mod:`stream_app.core.quests`) to the
quest behaviour's input topic with :class:`~stream_app.clients.quests.QuestClient`, so they
reach the context's owner through Kafka, in order with its other events. ``list`` and
``instances`` ask a worker's quest views (any worker: it routes a context to its owner and
gathers the instances from every worker). ``tail`` follows the input topic (incoming events
and the events actions emit to contexts alike), and any extra topics given, from their end.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from stream_app.cli.common import (
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
    from stream_app.clients.quests import QuestClient

__all__ = ["describe_record", "format_context", "quests"]


def _iso_ms(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def format_context(described: dict[str, Any]) -> list[str]:
    """A context's quests as lines: one per active quest (instance, start, deadline, open
    windows, variables), then its pending timers and the events it ignored."""
    lines = []
    for name, instance in sorted(described.get("quests", {}).items()):
        windows = {w: _iso_ms(ms) for w, ms in instance.get("windows", {}).items()}
        lines.append(
            f"{name}  instance={instance['instance']}  started={_iso_ms(instance['started_ms'])}"
            f"  deadline={_iso_ms(instance.get('deadline_ms'))}  windows={_compact(windows)}"
            f"  variables={_compact(instance.get('variables', {}))}"
        )
    for timer in described.get("timers", []):
        lines.append(f"  timer {timer['name']}  due={_iso_ms(timer['due_ms'])}")
    lines.append(f"ignored={described.get('ignored', 0)}")
    return lines


def describe_record(
    context: str, value: bytes | None, *, want_context: str | None, want_event: str | None
) -> str | None:
    """One line for a record of a quest behaviour's input topic, or ``None`` when the filters
    leave it out: ``<context>  <type>  [<event_name>  <form>]  <body>``."""
    if want_context is not None and context != want_context:
        return None
    try:
        envelope = json.loads(value or b"")
        kind, body = envelope["type"], envelope.get("body") or {}
    except (ValueError, KeyError, TypeError):
        return None if want_event else f"{context}  <not an envelope>  {value!r:.200}"
    if kind != "event" or not isinstance(body, dict):
        return None if want_event else f"{context}  {kind}  {_compact(body)}"
    name = body.get("event_name")
    if want_event is not None and name != want_event:
        return None
    form = (
        "instance"
        if "quest_instance" in body
        else "selector"
        if "event_selector" in body
        else "multicast"
    )
    return f"{context}  event  {name}  {form}  {_compact(body)}"


def _produce(
    settings: Settings, behaviour: str, timeout: float, queue: Callable[..., None]
) -> None:
    """Queue records with a fresh client and wait until Kafka acknowledges them."""
    from stream_app.clients.quests import QuestClient

    client: QuestClient = QuestClient(behaviour, settings, config={"log_level": 0})
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
def quests() -> None:
    """Send quest events, call actions, follow events, list quests and instances.

    send, call, add and remove produce to the quest behaviour's input topic (STREAM_APP_*
    settings); list and instances ask a worker's web views (--url); tail follows the topic.
    """


@quests.command()
@click.argument("behaviour")
@click.argument("context")
@click.argument("event_name")
@click.option("--data", callback=json_object, metavar="JSON", help="The event data (an object).")
@click.option("--selector", help="QUEST.ACTION: a selector event (one action call).")
@click.option("--instance", help="With --selector: an instance event for this instance only.")
@timeout_option
def send(
    behaviour: str,
    context: str,
    event_name: str,
    data: dict[str, Any] | None,
    selector: str | None,
    instance: str | None,
    timeout: float,
) -> None:
    """Send EVENT_NAME to CONTEXT of the quest BEHAVIOUR.

    Without --selector it is a multicast (every active quest listening to EVENT_NAME); with
    --selector a selector event; with --instance too an instance event.
    """
    from pydantic import ValidationError

    settings = current_settings()
    try:
        _produce(
            settings,
            behaviour,
            timeout,
            lambda c: c.send_event(
                context, event_name, data, selector=selector, instance=instance, id=uuid.uuid4().hex
            ),
        )
    except ValidationError as exc:
        raise click.ClickException(f"refused, nothing sent: {exc}") from None
    form = "instance" if instance else "selector" if selector else "multicast"
    click.echo(f"sent {form} event {event_name} to {behaviour}/{context}")


@quests.command()
@click.argument("behaviour")
@click.argument("quest")
@click.argument("action")
@click.argument("context")
@click.option("--event", callback=json_object, metavar="JSON", help="The event data.")
@timeout_option
def call(
    behaviour: str,
    quest: str,
    action: str,
    context: str,
    event: dict[str, Any] | None,
    timeout: float,
) -> None:
    """Call ACTION of QUEST in CONTEXT directly (Ruby-Quest's call_quest)."""
    settings = current_settings()
    _produce(settings, behaviour, timeout, lambda c: c.call_quest(quest, action, context, event))
    click.echo(f"called {quest}.{action} in {behaviour}/{context}")


@quests.command()
@click.argument("behaviour")
@click.argument("context")
@click.argument("quest")
@click.option("--params", callback=json_object, metavar="JSON", help="Given to the quest's init.")
@timeout_option
def add(
    behaviour: str, context: str, quest: str, params: dict[str, Any] | None, timeout: float
) -> None:
    """Add QUEST to CONTEXT: a new instance, ending the active one if any."""
    settings = current_settings()
    _produce(settings, behaviour, timeout, lambda c: c.add_quest(context, quest, params))
    click.echo(f"asked to add {quest} to {behaviour}/{context}")


@quests.command()
@click.argument("behaviour")
@click.argument("context")
@click.argument("quest")
@click.option("--instance", help="Remove only this instance (a newer one stays).")
@timeout_option
def remove(behaviour: str, context: str, quest: str, instance: str | None, timeout: float) -> None:
    """Remove QUEST from CONTEXT: its instance, variables and timers end."""
    settings = current_settings()
    _produce(
        settings, behaviour, timeout, lambda c: c.remove_quest(context, quest, instance=instance)
    )
    click.echo(f"asked to remove {quest} from {behaviour}/{context}")


@quests.command(name="list")
@click.argument("behaviour")
@click.argument("context")
@url_option
@timeout_option
@json_output_option
def list_quests(
    behaviour: str, context: str, url: str | None, timeout: float, as_json: bool
) -> None:
    """List the active quests of CONTEXT: instance ids, variables, windows, pending timers.

    Exits with status 1 when the context has no active quest.
    """
    base = url or current_settings().web_url
    path = f"/stream-app/quests/{quote(behaviour)}/{quote(context)}/"
    status, body = worker_get(base, path, timeout=timeout)
    if status == 404 and isinstance(body, dict) and "quests" in body:
        raise click.ClickException(f"context {behaviour}/{context} has no active quest ({base})")
    described: dict[str, Any] = expect_ok(status, body, base + path, behaviour)
    if as_json:
        click.echo(json.dumps(described, indent=2, sort_keys=True))
        return
    for line in format_context(described):
        click.echo(line)


@quests.command()
@click.argument("behaviour")
@url_option
@timeout_option
@json_output_option
def instances(behaviour: str, url: str | None, timeout: float, as_json: bool) -> None:
    """List every active quest instance of BEHAVIOUR, gathered from every worker."""
    base = url or current_settings().web_url
    path = f"/stream-app/quests/{quote(behaviour)}/"
    status, body = worker_get(base, path, timeout=timeout)
    found: dict[str, Any] = expect_ok(status, body, base + path, behaviour)
    if as_json:
        click.echo(json.dumps(found, indent=2, sort_keys=True))
        return
    if not found:
        click.echo(f"no active quest instance in {behaviour}")
    for ident, entry in sorted(found.items(), key=lambda kv: (kv[1]["context"], kv[1]["quest"])):
        click.echo(
            f"{entry['context']}  {entry['quest']}  {ident}  started={_iso_ms(entry['started_ms'])}"
        )


@quests.command()
@click.argument("behaviour")
@click.option("--context", help="Only records of this context.")
@click.option("--event", "event_name", help="Only events of this name.")
@click.option("--topic", "extra", multiple=True, help="Follow this topic too (published events).")
@click.option("--from-beginning", is_flag=True, help="Start at the topics' beginning.")
@click.option("--max", "limit", type=click.IntRange(min=1), help="Stop after N lines.")
@click.option("--idle", type=float, help="Stop after this many seconds without a matching record.")
def tail(
    behaviour: str,
    context: str | None,
    event_name: str | None,
    extra: tuple[str, ...],
    from_beginning: bool,
    limit: int | None,
    idle: float | None,
) -> None:
    """Follow the events of BEHAVIOUR's contexts as they flow (Ruby-Quest's dump_events).

    Reads the behaviour's input topic from its end (or beginning) without joining a consumer
    group, one line per record: ``<time>  <context>  <type>  [<event>  <form>]  <body>``.
    """
    from confluent_kafka import Consumer

    from stream_app.logs import rdkafka_logger

    settings = current_settings()
    topics = [settings.input_topic(behaviour), *extra]
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"stream-app-quests-tail-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "logger": rdkafka_logger(),
        }
    )
    printed, last = 0, time.monotonic()
    try:
        consumer.subscribe(topics)
        while limit is None or printed < limit:
            if idle is not None and time.monotonic() - last > idle:
                break
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            key = (message.key() or b"").decode("utf-8", "replace")
            line = describe_record(
                key, message.value(), want_context=context, want_event=event_name
            )
            if line is None:
                continue
            _, stamp = message.timestamp()
            click.echo(f"{_iso_ms(stamp)}  {line}")
            printed, last = printed + 1, time.monotonic()
    finally:
        consumer.close()
