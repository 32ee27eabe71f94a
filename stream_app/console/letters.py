"""Parked cells and dead letters: list them, open one, release a cell, redrive letters.

``/console/parked`` lists every parked cell of every behaviour (the ``/stream-app/parked/<b>/``
view gathers them from every worker), filtered by behaviour and by reason (the type of the
error that parked the cell); ``/console/parked/cell?behaviour=..&id=..`` opens one, with each
waiting item's original bytes as text and hex and its source record, and releases it (a
control record through :meth:`~stream_app.clients.cells.CellClient.release`, optionally
dead-lettering the first items); the page then polls until the cell is no longer parked.

``/console/dead-letters`` reads the dead-letter topic with :mod:`stream_app.ops.redrive`
(newest first, at most :data:`LIST_LIMIT` rows), filtered by reason and source topic;
``/console/dead-letters/<p>:<o>`` opens one. The selected letters are redriven with
:func:`~stream_app.ops.redrive.plan_redrive` and :func:`~stream_app.ops.redrive.redrive`,
which refuse what cannot go back (truncated, no source record...) and say why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from stream_app.clients.cells import CellClient
from stream_app.console.pagekit import MAX_TEXT, Invalid
from stream_app.console.server import Console
from stream_app.console.when import at_ms
from stream_app.core.origin import RecordOrigin
from stream_app.core.origin import parse as parse_origin
from stream_app.errors import StreamAppError
from stream_app.ops.redrive import (
    Listed,
    RedrivePlan,
    existing_topics,
    key_text,
    parse_position,
    plan_redrive,
    read_dead_letters,
    redrive,
    redrive_refusal,
    value_preview,
)
from stream_app.settings import Settings

__all__ = [
    "HEX_LIMIT",
    "LIST_LIMIT",
    "MAX_SELECTED",
    "MAX_SKIP",
    "HexLine",
    "error_reason",
    "filter_letters",
    "hex_dump",
    "install",
    "parse_selection",
    "parse_skip",
    "release_summary",
    "source_of",
    "spans_of",
    "text_of",
    "valid_text",
]

#: Dead letters listed at most (the newest).
LIST_LIMIT = 200

#: The dead letters the pages read: the last this many offsets of each partition of the
#: dead-letter topic (a page must not read a topic of millions of records; the CLI reads all).
READ_TAIL = 10_000

#: Bytes of a value shown in a hex dump at most.
HEX_LIMIT = 64 * 1024

#: Dead letters one redrive may select at most.
MAX_SELECTED = 500

#: Largest ``skip`` a release accepts.
MAX_SKIP = 100_000

_T = TypeVar("_T")

#: Seconds the Kafka reads and writes of a page or action may take.
KAFKA_TIMEOUT = 15.0


_CONTROL_PICTURES = {
    **{code: 0x2400 + code for code in range(0x20) if chr(code) not in "\t\n"},
    0x7F: 0x2421,
}


@dataclass(frozen=True)
class HexLine:
    """One line of a hex dump.

    Attributes:
        offset: The offset of its first byte, as 8 hex digits.
        hex: The bytes in hex, two digits each, separated by spaces.
        text: The bytes as ASCII, ``.`` for each byte that is not printable.
    """

    offset: str
    hex: str
    text: str


def hex_dump(data: bytes, *, width: int = 16, limit: int = HEX_LIMIT) -> list[HexLine]:
    """The first ``limit`` bytes of ``data`` as hex dump lines of ``width`` bytes."""
    lines = []
    for start in range(0, min(len(data), limit), width):
        chunk = data[start : min(start + width, limit)]
        lines.append(
            HexLine(
                offset=f"{start:08x}",
                hex=" ".join(f"{b:02x}" for b in chunk),
                text="".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk),
            )
        )
    return lines


def text_of(data: bytes | None) -> str:
    """Bytes as text: UTF-8, each undecodable byte shown as U+FFFD and each control character
    but tab and newline as its Unicode picture (NUL as U+2400); ``<no value>`` for None."""
    if data is None:
        return "<no value>"
    return data.decode("utf-8", "replace").translate(_CONTROL_PICTURES)


def error_reason(error: str) -> str:
    """The reason a parked cell shows: the error's type, the text before its first ``:``."""
    head, sep, _ = error.partition(":")
    head = head.strip()
    return head if sep and head and " " not in head else "error"


def valid_text(value: str | None, what: str, *, required: bool) -> str | None:
    """A text input, stripped: ``None`` when empty and not ``required``.

    Raises:
        Invalid: Empty but required, or longer than :data:`MAX_TEXT` characters.
    """
    text = (value or "").strip()
    if not text:
        if required:
            raise Invalid(400, f"{what} is required")
        return None
    if len(text) > MAX_TEXT:
        raise Invalid(400, f"{what} is longer than {MAX_TEXT} characters")
    return text


def _required(value: str | None, what: str) -> str:
    text = valid_text(value, what, required=True)
    assert text is not None
    return text


def parse_skip(value: str | None) -> int:
    """The ``skip`` of a release: an integer from 0 to :data:`MAX_SKIP` (empty: 0).

    Raises:
        Invalid: Not such an integer.
    """
    text = (value or "").strip() or "0"
    if not text.isdigit() or int(text) > MAX_SKIP:
        raise Invalid(400, f"skip must be a whole number from 0 to {MAX_SKIP}, got {text[:40]!r}")
    return int(text)


def parse_selection(form: Mapping[str, str]) -> list[tuple[int, int]]:
    """The positions (``<partition>:<offset>``) a redrive form selected: the values of its
    ``position`` and ``position-*`` fields (a ``position`` field may hold several, separated
    by commas or spaces), in order, without repeats.

    Raises:
        Invalid: None selected, more than :data:`MAX_SELECTED`, one is not a position, or those
            of a partition lie more than :data:`READ_TAIL` offsets apart (what is read to
            redrive them).
    """
    texts = [
        part
        for name, value in form.items()
        if name == "position" or name.startswith("position-")
        for part in value.replace(",", " ").split()
    ]
    if not texts:
        raise Invalid(400, "select at least one dead letter to redrive")
    if len(texts) > MAX_SELECTED:
        raise Invalid(400, f"select at most {MAX_SELECTED} dead letters at once")
    try:
        positions = list(dict.fromkeys(parse_position(text[:40]) for text in texts))
    except ValueError as exc:
        raise Invalid(400, str(exc)) from None
    for partition, (first, end) in spans_of(positions).items():
        if end - first > READ_TAIL:
            raise Invalid(
                400,
                f"the selected dead letters of partition {partition} lie {end - first} offsets "
                f"apart; select ones at most {READ_TAIL} apart at once",
            )
    return positions


def filter_letters(
    listed: Sequence[Listed], *, reason: str | None, source_topic: str | None
) -> list[Listed]:
    """The records with ``reason`` and from ``source_topic`` (either ``None``: any), newest
    first. A record that is not a dead letter has neither and is kept only when no filter is
    set."""

    def keep(item: Listed) -> bool:
        letter = item.letter
        if letter is None:
            return reason is None and source_topic is None
        return (reason is None or letter.reason == reason) and (
            source_topic is None or letter.source_topic == source_topic
        )

    return [item for item in reversed(listed) if keep(item)]


def release_summary(behaviour: str, cell_id: str, waiting: int, skip: int) -> str:
    """What a release sent says: how many waiting items run again, how many are discarded."""
    discarded = min(skip, waiting)
    text = f"release of {behaviour}/{cell_id} sent: {waiting - discarded} waiting item(s) run again"
    if discarded:
        text += f", the first {discarded} go to the dead-letter topic (reason discarded)"
    return text


def source_of(origin: str) -> dict[str, Any]:
    """Where a parked item came from: ``{"topic", "partition", "offset"}`` for a record, else
    ``{"work": <origin>}``."""
    try:
        parsed = parse_origin(origin)
    except ValueError:
        return {"work": origin}
    if isinstance(parsed, RecordOrigin):
        return {"topic": parsed.topic, "partition": parsed.partition, "offset": parsed.offset}
    return {"work": origin}


def _counts(values: Iterable[str]) -> list[tuple[str, int]]:
    counted: dict[str, int] = {}
    for value in values:
        counted[value] = counted.get(value, 0) + 1
    return sorted(counted.items())


def _letter_row(item: Listed, topics: set[str]) -> dict[str, Any]:
    """One row of the dead-letter list (``topics``: those that exist, to say why a letter
    cannot be redriven)."""
    letter = item.letter
    row: dict[str, Any] = {
        "position": item.position,
        "key": key_text(item.record.key),
        "preview": value_preview(item.record.value, width=60),
        "letter": letter is not None,
        "problem": item.problem,
    }
    if letter is not None:
        row.update(
            reason=letter.reason,
            behaviour=letter.behaviour,
            error=letter.error,
            source=f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}",
            time=at_ms(letter.timestamp_ms),
            refusal=redrive_refusal(letter, topics),
        )
    return row


def _letter_detail(item: Listed, topics: set[str]) -> dict[str, Any]:
    """Everything the page of one dead letter shows."""
    record, letter = item.record, item.letter
    value = record.value or b""
    return {
        **_letter_row(item, topics),
        "letter_fields": letter,
        "value_text": text_of(record.value),
        "value_size": len(value),
        "hex": hex_dump(value),
        "hex_cut": len(value) > HEX_LIMIT,
        "key_hex": hex_dump(record.key or b""),
        "headers": [(name, text_of(_as_bytes(raw))) for name, raw in record.headers],
    }


def _as_bytes(raw: str | bytes | None) -> bytes | None:
    return raw.encode() if isinstance(raw, str) else raw


def _item_detail(item: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the page of a parked cell shows of one waiting item."""
    value = item.get("value")
    raw = value.encode() if isinstance(value, str) else None
    return {
        "kind": item.get("kind"),
        "origin": item.get("origin", ""),
        "source": source_of(str(item.get("origin", ""))),
        "time": at_ms(item.get("timestamp_ms")),
        "value_text": text_of(raw) if raw is not None else None,
        "hex": hex_dump(raw or b""),
        "hex_cut": raw is not None and len(raw) > HEX_LIMIT,
        "timer": item.get("timer"),
    }


def _read_letters(
    settings: Settings, positions: Sequence[tuple[int, int]] | None = None
) -> tuple[set[str], list[Listed]]:
    """The cluster's topics and the decoded dead-letter topic (``[]`` when it does not exist
    yet): its last :data:`READ_TAIL` records of each partition, or with ``positions`` the
    offsets that span them (a letter older than the tail can still be opened and redriven)."""
    topics = existing_topics(settings, timeout=KAFKA_TIMEOUT)
    if settings.dead_letter_topic not in topics:
        return topics, []
    if positions is None:
        return topics, read_dead_letters(settings, topics, timeout=KAFKA_TIMEOUT, tail=READ_TAIL)
    return topics, read_dead_letters(
        settings, topics, timeout=KAFKA_TIMEOUT, spans=spans_of(positions)
    )


def spans_of(positions: Sequence[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """The offsets to read for ``positions`` (``(partition, offset)``): per partition, from the
    first to one past the last."""
    spans: dict[int, tuple[int, int]] = {}
    for partition, offset in positions:
        first, end = spans.get(partition, (offset, offset + 1))
        spans[partition] = (min(first, offset), max(end, offset + 1))
    return spans


def _redrive_selected(settings: Settings, positions: Sequence[tuple[int, int]]) -> RedrivePlan:
    """Plan the redrive of ``positions`` against the topic as it is now, and produce what the
    plan chose."""
    topics, listed = _read_letters(settings, positions)
    plan = plan_redrive(listed, positions=positions, reason=None, topics=topics)
    redrive(plan, settings, timeout=KAFKA_TIMEOUT)
    return plan


def _release(settings: Settings, behaviour: str, cell_id: str, skip: int) -> None:
    """Produce the release control record of a cell and wait until Kafka has it."""
    with CellClient(settings) as client:
        client.release(behaviour, cell_id, skip=skip)


async def _kafka(console: Console, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in a thread; Kafka's failures as :class:`Invalid` (503)."""
    try:
        result: _T = await console.in_thread(fn, *args)
    except (ConnectionError, LookupError, TimeoutError, StreamAppError) as exc:
        raise Invalid(503, f"Kafka did not answer as expected: {exc}") from None
    return result


def _quote(text: str) -> str:
    return quote(text, safe="")


#: Reads the context of a page (or of an action's answer) from its request.
_Read = Callable[[Any], Awaitable[dict[str, Any]]]


def _page(
    console: Console, path: str, template: str, read: _Read, *, title: str | None = None
) -> None:
    """Register the page at ``path``: ``template`` rendered with what ``read`` returns (its
    ``status`` key, if any, as the HTTP status), or the refusal page of the
    :class:`Invalid` it raises."""

    async def show(web: Any, request: Any, **match: str) -> Any:
        try:
            context = await read(request)
        except Invalid as exc:
            return console.render(
                web, request, "letters_error.html", status=exc.status, message=str(exc)
            )
        return console.render(web, request, template, **context)

    show.__name__ = show.__qualname__ = f"letters_{template.removesuffix('.html')}"
    console.page(path, title=title)(show)


def _action(console: Console, path: str, template: str, act: _Read) -> None:
    """Register the action at ``path``: ``template`` rendered with what ``act`` returns (its
    ``status`` key, if any, as the HTTP status), or ``action_result.html`` with the refusal of
    the :class:`Invalid` it raises."""

    async def post(web: Any, request: Any) -> Any:
        try:
            context = await act(request)
        except Invalid as exc:
            return console.render(
                web, request, "action_result.html", status=exc.status, ok=False, message=str(exc)
            )
        return console.render(web, request, template, **context)

    post.__name__ = post.__qualname__ = f"letters_{path.strip('/').replace('/', '_')}"
    console.action(path)(post)


def install(console: Console) -> None:
    """Register ``/console/parked`` (list, one cell, release) and ``/console/dead-letters``
    (list, one letter, redrive)."""
    parked = _ParkedPages(console)
    _page(console, "/parked", "parked.html", parked.listing, title="Parked")
    _page(console, "/parked/rows", "parked_rows.html", parked.listing)
    _page(console, "/parked/cell", "parked_cell.html", parked.cell)
    _page(console, "/parked/cell/status", "parked_status.html", parked.cell)
    _action(console, "/parked/release", "action_result.html", parked.release)
    letters = _LetterPages(console)
    _page(console, "/dead-letters", "letters.html", letters.listing, title="Dead letters")
    _page(console, "/dead-letters/{position}", "letter.html", letters.letter)
    _action(console, "/dead-letters/redrive", "redrive_result.html", letters.redrive)


@dataclass
class _ParkedPages:
    """The reads and the action of the parked pages."""

    console: Console

    async def listing(self, request: Any) -> dict[str, Any]:
        """Every parked cell, filtered by ``behaviour`` and ``reason``."""
        behaviour = self._behaviour(request.query.get("behaviour"), required=False)
        reason = valid_text(request.query.get("reason"), "reason", required=False)
        rows, failed = await self._rows()
        shown = [
            row
            for row in rows
            if (behaviour is None or row["behaviour"] == behaviour)
            and (reason is None or row["reason"] == reason)
        ]
        return {
            "rows": shown,
            "total": len(rows),
            "failed": failed,
            "reasons": _counts(row["reason"] for row in rows),
            "behaviour_filter": behaviour or "",
            "reason_filter": reason or "",
        }

    async def cell(self, request: Any) -> dict[str, Any]:
        """One cell (``behaviour``, ``id``): parked or not, its waiting work, its data."""
        name = self._behaviour(request.query.get("behaviour"), required=True)
        cell_id = _required(request.query.get("id"), "cell id")
        assert name is not None
        data = await self._described(name, cell_id)
        parked = data.get("parked")
        return {
            "behaviour": name,
            "cell_id": cell_id,
            "alive": bool(data.get("alive")),
            "data": data.get("data"),
            "parked": parked,
            "reason": error_reason(str(parked["error"])) if parked else None,
            "since": at_ms(parked["since_ms"]) if parked else None,
            "items": [_item_detail(item) for item in parked["items"]] if parked else [],
        }

    async def release(self, request: Any) -> dict[str, Any]:
        """Release the parked cell ``behaviour``/``cell_id`` of the form, skipping ``skip``."""
        form = self.console.form(request)
        name = self._behaviour(form.get("behaviour"), required=True)
        cell_id = _required(form.get("cell_id"), "cell id")
        skip = parse_skip(form.get("skip"))
        assert name is not None
        parked = (await self._described(name, cell_id)).get("parked")
        if not parked:
            raise Invalid(409, f"{name}/{cell_id} is not parked")
        await _kafka(self.console, _release, self.console.settings, name, cell_id, skip)
        summary = release_summary(name, cell_id, len(parked["items"]), skip)
        return {"ok": True, "message": summary}

    def _behaviour(self, value: str | None, *, required: bool) -> str | None:
        name = valid_text(value, "behaviour", required=required)
        if name is not None and self.console.behaviour(name) is None:
            raise Invalid(404, f"no behaviour named {name!r} runs here")
        return name

    async def _described(self, name: str, cell_id: str) -> dict[str, Any]:
        answer = await self.console.view_json(f"cells/{_quote(name)}/{_quote(cell_id)}/")
        if not answer.ok and answer.status != 404:
            raise Invalid(502, f"the worker owning the cell answered {answer.status}")
        return answer.data if isinstance(answer.data, dict) else {}

    async def _rows(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Every parked cell of every behaviour, and the behaviours whose list failed."""
        names = list(self.console.source.behaviours())
        answers = await asyncio.gather(
            *(self.console.view_json(f"parked/{_quote(name)}/") for name in names),
            return_exceptions=True,
        )
        rows: list[dict[str, Any]] = []
        failed: list[str] = []
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, BaseException):
                failed.append(name)
            elif answer.ok and isinstance(answer.data, dict):
                rows.extend(_parked_row(name, cell_id, p) for cell_id, p in answer.data.items())
            elif answer.status != 404:
                failed.append(name)
        return sorted(rows, key=lambda row: (row["behaviour"], row["cell_id"])), failed


def _parked_row(behaviour: str, cell_id: str, parked: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the parked list."""
    error = str(parked.get("error", ""))
    return {
        "behaviour": behaviour,
        "cell_id": cell_id,
        "error": error,
        "reason": error_reason(error),
        "attempts": parked.get("attempts"),
        "waiting": parked.get("waiting"),
        "since": at_ms(parked.get("since_ms")),
    }


@dataclass
class _LetterPages:
    """The reads and the action of the dead-letter pages."""

    console: Console

    async def listing(self, request: Any) -> dict[str, Any]:
        """The newest dead letters, filtered by ``reason`` and ``source`` (topic)."""
        reason = valid_text(request.query.get("reason"), "reason", required=False)
        topic = valid_text(request.query.get("source"), "source topic", required=False)
        topics, listed = await _kafka(self.console, _read_letters, self.console.settings)
        matching = filter_letters(listed, reason=reason, source_topic=topic)
        letters = [item.letter for item in listed if item.letter is not None]
        return {
            "topic": self.console.settings.dead_letter_topic,
            "rows": [_letter_row(item, topics) for item in matching[:LIST_LIMIT]],
            "matching": len(matching),
            "total": len(listed),
            "limit": LIST_LIMIT,
            "tail": READ_TAIL,
            "reasons": _counts(letter.reason for letter in letters),
            "sources": _counts(letter.source_topic for letter in letters),
            "reason_filter": reason or "",
            "source_filter": topic or "",
        }

    async def letter(self, request: Any) -> dict[str, Any]:
        """The record at ``<p>:<o>`` of the dead-letter topic, whole."""
        try:
            at = parse_position(request.match_info.get("position", "")[:40])
        except ValueError as exc:
            raise Invalid(400, str(exc)) from None
        topics, listed = await _kafka(self.console, _read_letters, self.console.settings, [at])
        found = [i for i in listed if (i.record.partition, i.record.offset) == at]
        if not found:
            raise Invalid(404, f"no record at {at[0]}:{at[1]} in the dead-letter topic")
        return {
            "topic": self.console.settings.dead_letter_topic,
            "item": _letter_detail(found[0], topics),
        }

    async def redrive(self, request: Any) -> dict[str, Any]:
        """Redrive the positions the form selected; what was redriven, refused and missing (a
        selection nothing of which could be redriven is answered 200 too: the request was
        valid, the fragment says why)."""
        positions = parse_selection(self.console.form(request))
        plan = await _kafka(self.console, _redrive_selected, self.console.settings, positions)
        return {
            "ok": bool(plan.chosen) and not plan.refused and not plan.missing,
            "redriven": [item.position for item in plan.chosen],
            "refused": plan.refused,
            "missing": plan.missing,
        }
