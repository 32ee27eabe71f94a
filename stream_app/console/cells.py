"""The cells and entities pages of the console: find a cell, read it, send it a message.

- ``/console/cells``: the search form (behaviour and id, which leads to the cell's page); with
  ``?behaviour=<b>`` alone, the behaviour's live cells gathered from every worker (the first
  :data:`LIST_LIMIT` ids in order).
- ``/console/cells/<behaviour>/<id>``: one cell, read from the worker that owns it through the
  JSON view ``/stream-app/cells/<b>/<id>/``: its data, version, pending timers and parked work.
  An entity also shows its cached state and sequence number and its recent events, read from
  the tail of its partition of the events topic. ``?part=panel`` answers the data panel alone
  and ``?part=events`` the events alone (htmx refreshes them after a send).
- ``POST /console/cells/send``: validates a message against the behaviour's envelope schema
  (as the worker will) and produces it to the behaviour's input topic keyed by the cell id.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from confluent_kafka import KafkaException

from stream_app.api.entities import EventRecord
from stream_app.clients.cells import CellClient
from stream_app.console.pagekit import MAX_TEXT, Invalid
from stream_app.console.server import PREFIX, BehaviourInfo, Console
from stream_app.console.when import at_ms, from_now
from stream_app.core.partitioner import partition_for
from stream_app.errors import InvalidMessageError, StreamAppError
from stream_app.kafka.reading import read_to_end
from stream_app.settings import Settings

__all__ = [
    "EVENTS_RETRIES",
    "EVENTS_SHOWN",
    "EVENTS_TAIL",
    "LIST_LIMIT",
    "MAX_ID_LENGTH",
    "as_json",
    "cell_path",
    "check_cell_id",
    "due_text",
    "envelope_for",
    "event_rows",
    "events_behind",
    "first_cells",
    "install",
    "read_entity_events",
    "retry_count",
]

#: Most cells the list of a behaviour's cells shows.
LIST_LIMIT = 200

#: Offsets read back from the end of an entity's partition of its events topic.
EVENTS_TAIL = 500

#: Most events of one entity shown (the latest).
EVENTS_SHOWN = 100

#: Longest cell id the console accepts.
MAX_ID_LENGTH = MAX_TEXT

#: Longest the console waits for a JSON view, a read of the events or a send.
TIMEOUT_S = 10.0

#: How many times (a second apart) the events are read again while the entity's state is
#: ahead of its committed events.
EVENTS_RETRIES = 10


#: The template of each part of a cell's page (``?part=``).
_PARTS = {"": "cell.html", "panel": "cell_panel.html", "events": "cell_events.html"}


def check_cell_id(value: str | None) -> str:
    """``value`` as a cell id: not empty, at most :data:`MAX_ID_LENGTH` characters.

    Raises:
        Invalid: It is missing, empty or too long.
    """
    if not value:
        raise Invalid(400, "give a cell id")
    if len(value) > MAX_ID_LENGTH:
        raise Invalid(400, f"a cell id has at most {MAX_ID_LENGTH} characters")
    return value


def envelope_for(info: BehaviourInfo, message_type: str, body: str, *, max_bytes: int) -> bytes:
    """The envelope of a message of ``message_type`` with the JSON ``body``, validated as the
    behaviour's workers validate it.

    Raises:
        Invalid: The type is not one of the behaviour's, the body is not a JSON object,
            or the envelope breaks the schema (the reason says where).
    """
    if message_type not in info.message_types.types:
        known = ", ".join(sorted(info.message_types.types))
        raise Invalid(400, f"{info.name} has no message type {message_type!r} (known: {known})")
    try:
        parsed = json.loads(body) if body.strip() else {}
    except ValueError as exc:
        raise Invalid(400, f"the body is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise Invalid(400, "the body must be a JSON object")
    envelope = json.dumps({"type": message_type, "body": parsed}, separators=(",", ":")).encode()
    try:
        info.message_types.decode(b"console", envelope, max_bytes=max_bytes)
    except InvalidMessageError as exc:
        raise Invalid(400, str(exc)) from None
    return envelope


def due_text(due_ms: int, now_ms: int) -> str:
    """A due time for people, as every console page writes times: UTC to the millisecond, and
    how far from ``now_ms`` it is (:func:`~stream_app.console.when.at_ms`,
    :func:`~stream_app.console.when.from_now`)."""
    return f"{at_ms(due_ms)} ({from_now(due_ms, now_ms)})"


def as_json(value: Any) -> str:
    """``value`` as one line of JSON (non-ASCII kept, keys sorted)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def first_cells(cells: Mapping[str, Any], limit: int = LIST_LIMIT) -> list[tuple[str, str]]:
    """The first ``limit`` cells of ``cells`` (id -> data), in id order, each with its data
    as one line of JSON."""
    return [(cell_id, as_json(cells[cell_id])) for cell_id in sorted(cells)[:limit]]


def cell_path(behaviour: str, cell_id: str) -> str:
    """The console page of a cell (its id quoted whole, ``/`` included)."""
    return f"{PREFIX}/cells/{quote(behaviour, safe='')}/{quote(cell_id, safe='')}"


def event_rows(
    records: Iterable[tuple[bytes | None, bytes | None]], entity_id: str, *, limit: int
) -> list[EventRecord]:
    """The events of ``entity_id`` among ``records`` (key, value), by sequence number, the
    latest ``limit`` of them; records that are not events are skipped."""
    key = entity_id.encode()
    found: list[EventRecord] = []
    for record_key, value in records:
        if record_key != key or value is None:
            continue
        try:
            found.append(EventRecord.model_validate_json(value))
        except ValueError:
            continue
    found.sort(key=lambda event: event.seq)
    return found[-limit:]


def events_behind(events: list[EventRecord], seq: int | None) -> int:
    """How many events the entity's state (at sequence number ``seq``) is ahead of the latest
    of ``events`` (read ``read_committed``: the state may be ahead until its transaction
    commits); 0 when the seq is unknown."""
    if seq is None:
        return 0
    return max(0, seq - (events[-1].seq if events else 0))


def retry_count(value: str | None) -> int:
    """The ``retry`` query parameter: an integer from 0 to :data:`EVENTS_RETRIES` (0 when it is
    missing or not one)."""
    try:
        count = int(value or 0)
    except ValueError:
        return 0
    return min(max(count, 0), EVENTS_RETRIES)


def read_entity_events(
    settings: Settings, topic: str, entity_id: str, *, tail: int = EVENTS_TAIL
) -> list[EventRecord]:
    """The latest events of ``entity_id`` on ``topic``: the last ``tail`` offsets of the one
    partition its id hashes to, filtered by key (blocking; run it in a thread).

    Raises:
        LookupError: The topic does not exist.
        TimeoutError: The tail was not read within :data:`TIMEOUT_S`.
    """
    partition = partition_for(entity_id.encode(), settings.partitions)
    messages = read_to_end(
        settings.kafka_client_config(),
        topic,
        partitions=[partition],
        tail=max(1, tail),
        timeout=TIMEOUT_S,
    )
    return event_rows(((m.key(), m.value()) for m in messages), entity_id, limit=EVENTS_SHOWN)


class _Sender:
    """One :class:`CellClient` per console, made on first use and shared by its sends."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: CellClient | None = None
        self._lock = threading.Lock()

    def send(self, topic: str, cell_id: str, envelope: bytes) -> None:
        """Produce ``envelope`` to ``topic`` keyed by ``cell_id`` and wait for the broker's
        acknowledgement (blocking).

        Raises:
            StreamAppError: It was not delivered in time.
        """
        with self._lock:
            if self._client is None:
                self._client = CellClient(self._settings)
            self._client.produce_raw(topic, cell_id, envelope)
            self._client.flush(TIMEOUT_S)


def install(console: Console) -> None:
    """Register ``/console/cells``, the cell pages and the send action."""
    sender = _Sender(console.settings)

    @console.page("/cells", title="Cells")
    async def cells_index(web: Any, request: Any) -> Any:
        """The search form, and one behaviour's live cells."""
        name = request.query.get("behaviour", "")
        wanted = request.query.get("id", "")
        info = console.behaviour(name) if name else None
        if name and info is None:
            return _refuse(web, request, 404, f"no behaviour named {name!r} on this app")
        if info is not None and wanted:
            try:
                cell_id = check_cell_id(wanted)
            except Invalid as exc:
                return _refuse(web, request, 400, str(exc))
            return web.text("", status=303, headers={"Location": cell_path(info.name, cell_id)})
        listed, total, error = None, 0, None
        if info is not None:
            answer = await _read(f"cells/{quote(info.name, safe='')}/?limit={LIST_LIMIT}")
            page = answer.data if answer is not None and answer.ok else None
            if not isinstance(page, dict) or not isinstance(page.get("cells"), dict):
                error = f"the list of {info.name}'s cells could not be read"
            else:
                listed, total = first_cells(page["cells"]), int(page["total"])
        return console.render(
            web,
            request,
            "cells.html",
            selected=info.name if info else "",
            listed=listed,
            total=total,
            limit=LIST_LIMIT,
            error=error,
            cell_path=cell_path,
        )

    @console.page("/cells/{behaviour}/{cell_id}")
    async def one_cell(web: Any, request: Any, **match: str) -> Any:
        """A cell's page (or, with ``?part=``, its data panel or its events)."""
        behaviour, cell_id = match["behaviour"], match["cell_id"]
        info = console.behaviour(behaviour)
        if info is None:
            return _refuse(web, request, 404, f"no behaviour named {behaviour!r} on this app")
        try:
            check_cell_id(cell_id)
        except Invalid as exc:
            return _refuse(web, request, 400, str(exc))
        part = request.query.get("part", "")
        if part not in _PARTS or (part == "events" and info.kind != "entity"):
            return _refuse(web, request, 400, f"no part {part!r} for a cell of {info.name}")
        context: dict[str, Any] = {
            "info": info,
            "cell_id": cell_id,
            "here": cell_path(behaviour, cell_id),
            "now_ms": int(time.time() * 1000),
            "due_text": due_text,
            "as_json": as_json,
            "tail": EVENTS_TAIL,
            "retries": EVENTS_RETRIES,
        }
        if part in ("", "panel"):
            context.update(await _cell_context(info, cell_id))
        if part in ("", "events") and info.kind == "entity":
            context.update(await _events(info, cell_id))
            context["retry"] = retry_count(request.query.get("retry"))
        return console.render(web, request, _PARTS[part], **context)

    @console.action("/cells/send")
    async def send(web: Any, request: Any) -> Any:
        """Validate and send one message to a cell."""
        form = console.form(request)
        info = console.behaviour(form.get("behaviour", ""))
        try:
            if info is None:
                raise Invalid(400, f"no behaviour named {form.get('behaviour', '')!r}")
            cell_id = check_cell_id(form.get("cell_id"))
            envelope = envelope_for(
                info,
                form.get("type", ""),
                form.get("body", ""),
                max_bytes=console.settings.max_message_bytes,
            )
        except Invalid as exc:
            return _result(web, request, 400, False, str(exc))
        try:
            await console.in_thread(sender.send, info.input_topic, cell_id, envelope)
        except (StreamAppError, KafkaException) as exc:
            return _result(web, request, 502, False, f"not sent: {exc}")
        return _result(web, request, 200, True, f"{form.get('type')} sent to {info.name}/{cell_id}")

    async def _read(path: str) -> Any:
        try:
            return await console.view_json(path, timeout=TIMEOUT_S)
        except (OSError, TimeoutError, aiohttp.ClientError):
            return None

    async def _cell_context(info: BehaviourInfo, cell_id: str) -> dict[str, Any]:
        quoted = f"{quote(info.name, safe='')}/{quote(cell_id, safe='')}/"
        answer = await _read(f"cells/{quoted}")
        context: dict[str, Any] = {"cell": None, "entity": None, "read_error": None}
        if answer is None or answer.status not in (200, 404) or not isinstance(answer.data, dict):
            status = "no answer" if answer is None else f"HTTP {answer.status}"
            context["read_error"] = f"the cell could not be read from its worker ({status})"
            return context
        context["cell"] = answer.data
        if info.kind == "entity":
            entity = await _read(f"entities/{quoted}")
            if entity is not None and entity.ok:
                context["entity"] = entity.data
        return context

    async def _events(info: BehaviourInfo, cell_id: str) -> dict[str, Any]:
        assert info.events_topic is not None
        quoted = f"{quote(info.name, safe='')}/{quote(cell_id, safe='')}/"
        try:
            events = await console.in_thread(
                read_entity_events, console.settings, info.events_topic, cell_id
            )
        except (LookupError, TimeoutError, StreamAppError, KafkaException) as exc:
            return {"events": [], "events_error": f"the events could not be read: {exc}"}
        entity = await _read(f"entities/{quoted}")
        seq = entity.data.get("seq") if entity is not None and entity.ok else None
        return {
            "events": events,
            "events_error": None,
            "behind": events_behind(events, seq if isinstance(seq, int) else None),
        }

    def _refuse(web: Any, request: Any, status: int, message: str) -> Any:
        return console.render(web, request, "cells_error.html", status=status, message=message)

    def _result(web: Any, request: Any, status: int, ok: bool, message: str) -> Any:
        return console.render(
            web, request, "action_result.html", status=status, ok=ok, message=message
        )
