"""What a behaviour sees and asks for on behalf of one cell: :class:`CellState`.

A callback (``handle_message``, ``on_boot``, ``on_timeout``) gets one :class:`CellState`. It reads
the cell's id, data and the message or timer that woke it, changes :attr:`CellState.data`, and
asks for outputs: timers, messages to other cells, effects. Nothing leaves the cell while the
callback runs; the engine commits the new data and every output together when it returns, and
discards them all if it raises (so a retried callback starts from the same state).

Time and ids come from the state, never from the wall clock: :attr:`CellState.now_ms` is the
timestamp of the Kafka record being processed, and effect ids are derived from where the
invocation came from, so a replayed invocation makes the same decisions and the same ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError, to_json

from stream_app.core.envelope import CellMessage, body_payload
from stream_app.core.timers import MAX_DUE_MS, CronSchedule, Misfire, TimerEntry

__all__ = [
    "CellState",
    "Effect",
    "FiredTimer",
    "OutgoingMessage",
    "Trigger",
    "effect_id",
]

DataT = TypeVar("DataT", bound=BaseModel)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

#: What woke the cell: a message, a timer, or the boot of its partition. Work replayed from a
#: parked cell keeps the trigger it had when it was parked.
Trigger = Literal["message", "timeout", "boot"]


@dataclass(frozen=True, slots=True)
class FiredTimer:
    """The timer that woke a cell, as given to ``on_timeout``.

    Attributes:
        name: The timer's name.
        due_ms: When this occurrence was due (milliseconds since the epoch).
        payload: The payload given to :meth:`CellState.set_timer`.
        missed: Occurrences that came due and are not delivered (by the misfire policy, or
            coalesced because the worker fell behind).
        recurring: Whether the timer re-arms itself after this firing.
    """

    name: str
    due_ms: int
    payload: Any
    missed: int = 0
    recurring: bool = False


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message for another cell, sent through Kafka when the invocation commits."""

    behaviour: str
    cell_id: str
    type: str
    body: dict[str, Any]
    id: str


class Effect(BaseModel):
    """A side effect requested by a cell, as carried on ``<app_id>.effects`` (JSON).

    Attributes:
        id: Deterministic: the same invocation always emits the same ids, so a handler that
            remembers the ids it has done is idempotent across retries and replays.
        kind: Selects the effect handler.
        payload: Any JSON value.
        behaviour: The behaviour of the cell that emitted it.
        cell_id: The cell that emitted it.
        origin: Where the invocation came from (``topic/partition/offset``, ``timer/...``).
        emitted_ms: The invocation's :attr:`CellState.now_ms`.
        config: The ``config`` value of the message whose handling emitted it (``None`` if it
            had none, or the trigger was a timer): a value the sender passes to the handler.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: str = Field(min_length=1)
    payload: Any = None
    behaviour: str
    cell_id: str
    origin: str
    emitted_ms: int
    config: Any = None


def effect_id(app_id: str, behaviour: str, cell_id: str, origin: str, index: int) -> str:
    """The deterministic id of the ``index``-th effect of the invocation at ``origin``."""
    digest = hashlib.sha256(f"{app_id}\0{behaviour}\0{cell_id}\0{origin}\0{index}".encode())
    return digest.hexdigest()[:32]


@dataclass(slots=True)
class _Outputs:
    timers: dict[str, TimerEntry | None] = field(default_factory=dict)
    messages: list[OutgoingMessage] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    records: list[tuple[str, bytes, int | None, bytes | None]] = field(default_factory=list)


class CellState(Generic[DataT]):
    """Everything a behaviour needs on behalf of one cell, for one invocation.

    Why the name: a ``CellState`` is the cell's state as one callback sees and changes it: its
    data, its pending timers, and what the callback emits (messages, effects). It is made for
    the invocation and gone when the callback returns, when the engine commits all of it
    together. :attr:`data` is the part that persists from one invocation to the next (the
    pydantic model the behaviour declares, stored in the behaviour's table); the rest exists
    only for this call. So ``state.data`` is "the cell's data" and ``state`` is "the cell, now".

    Attributes:
        cell_id: The cell's id (the Kafka record key).
        behaviour: The behaviour's name.
        data: The cell's persistent data; ``None`` means the cell is dead. Assign to change it;
            assign ``None`` (or call :meth:`clear`) to delete the cell and cancel its timers.
        message: The message being handled (``handle_message`` only).
        timer: The timer that fired (``on_timeout`` only).
        trigger: What woke the cell: ``message``, ``timeout`` or ``boot``.
        now_ms: The invocation's time (milliseconds since the epoch). For a message, the
            record's timestamp, so a replay sees the same time; for a boot, the worker's clock
            when the partition booted; for a timeout, the worker's clock when it fired (at or
            after :attr:`FiredTimer.due_ms`).
        clock_ms: The worker's clock when the invocation began. For a message read long after
            it was produced (a backlog, a restart) it is later than :attr:`now_ms`: a deadline
            that starts with the invocation (a validation's time-out) starts here.
        origin: Where the invocation came from; the seed of its effect ids.
    """

    def __init__(
        self,
        *,
        app_id: str,
        behaviour: str,
        cell_id: str,
        data: DataT | None,
        trigger: Trigger,
        now_ms: int,
        origin: str,
        timers: dict[str, int],
        message: CellMessage[Any] | None = None,
        timer: FiredTimer | None = None,
        clock_ms: int | None = None,
    ) -> None:
        self.cell_id = cell_id
        self.behaviour = behaviour
        self.data = data
        self.message = message
        self.timer = timer
        self.trigger = trigger
        self.now_ms = now_ms
        self.clock_ms = now_ms if clock_ms is None else clock_ms
        self.origin = origin
        self._app_id = app_id
        self._pending = dict(timers)
        self._outputs = _Outputs()

    @property
    def alive(self) -> bool:
        """Whether the cell has data (is alive)."""
        return self.data is not None

    @property
    def now(self) -> datetime:
        """:attr:`now_ms` as an aware UTC datetime."""
        # Integer arithmetic: ``fromtimestamp(now_ms / 1000)`` goes through a float and is off
        # by microseconds for far-future times.
        return _EPOCH + timedelta(milliseconds=self.now_ms)

    @property
    def timers(self) -> dict[str, int]:
        """Pending timers of the cell, ``name -> due_ms``, including this invocation's changes."""
        return dict(self._pending)

    def clear(self) -> None:
        """Delete the cell: its data is removed (a tombstone) and its timers are cancelled.

        A callback that assigns new data after ``clear()`` starts a new life of the cell: it
        has only the timers set after the ``clear()``.
        """
        self.data = None
        # Cancel by name, not just drop the data: the timers view must show none pending, and
        # a cell revived later in the same callback must not inherit the old life's timers.
        for name in list(self._pending):
            self.cancel_timer(name)

    def set_timer(
        self,
        name: str = "timeout",
        *,
        after: float | timedelta | None = None,
        at: datetime | int | None = None,
        every: float | timedelta | None = None,
        cron: str | None = None,
        tz: str | None = None,
        payload: Any = None,
        misfire: Misfire = Misfire.FIRE_ONCE,
        max_catch_up: int = 1,
    ) -> int:
        """Request ``on_timeout`` for this cell later; return the due time (ms since epoch).

        Args:
            name: Setting a name again replaces that timer; :meth:`cancel_timer` removes it.
            after: Seconds (or a timedelta) from :attr:`now_ms`.
            at: An absolute time: an aware datetime, or milliseconds since the epoch. A naive
                datetime is refused: its meaning would depend on the worker's time zone.
            every: Re-arm with this period after each firing (a recurring timer). With
                neither ``after`` nor ``at``, the first firing is one period from now.
            cron: Recur on this 5-field cron schedule instead (``"0 9 * * MON-FRI"``), in the
                local time of ``tz``; the first firing is its first occurrence strictly after
                :attr:`now_ms`. Not with ``after``, ``at`` or ``every``. Across daylight-saving
                changes it fires as Debian cron does (see
                :class:`~stream_app.core.timers.CronSchedule`): a time the clocks skip fires
                once at the change, a fixed time in the repeated hour fires once.
            tz: The IANA time zone of ``cron`` (``"Europe/Amsterdam"``); default UTC.
            payload: Any JSON value, given back in :attr:`FiredTimer.payload`.
            misfire: What to do when it came due while no worker owned the cell's partition.
            max_catch_up: The most missed occurrences fired under :attr:`Misfire.CATCH_UP`.

        The timer is stored when the invocation commits, and survives restarts and partition
        moves. A cell that is dead when the invocation ends gets no timers.

        Raises:
            ValueError: Both ``after`` and ``at``, none of ``after``/``at``/``every``/``cron``,
                ``cron`` with any of them, ``tz`` without ``cron``, a bad cron expression or an
                unknown zone (the message names it), a period that is not positive, or a naive
                ``at`` datetime.
            TypeError: ``payload`` cannot be serialised as JSON.
        """
        if cron is not None:
            if after is not None or at is not None or every is not None:
                raise ValueError(
                    "set_timer: cron= recurs on its own; give no after=, at= or every="
                )
            try:
                schedule = CronSchedule(cron, tz)
            except ValueError as exc:
                raise ValueError(f"set_timer: {exc}") from exc
            return self._arm(
                TimerEntry(
                    cell=self.cell_id,
                    name=name,
                    due=min(schedule.next_after(self.now_ms), MAX_DUE_MS),
                    cron=schedule.expression,
                    tz=tz,
                    payload=_checked_payload(payload),
                    misfire=misfire,
                    max_catch_up=max_catch_up,
                )
            )
        if tz is not None:
            raise ValueError("set_timer: tz= is the time zone of a cron= schedule; give cron=")
        period = _ms(every) if every is not None else None
        if at is not None and after is not None:
            raise ValueError("set_timer: give either after= or at=, not both")
        if at is not None:
            due = at if isinstance(at, int) else _datetime_ms(at)
        elif after is not None:
            due = self.now_ms + _ms(after)
        elif period is not None:
            due = self.now_ms + period
        else:
            raise ValueError("set_timer: give after=, at= or every=")
        if period is not None and period <= 0:
            raise ValueError(f"set_timer: every must be positive, got {every!r}")
        return self._arm(
            TimerEntry(
                cell=self.cell_id,
                name=name,
                due=max(0, min(due, MAX_DUE_MS)),
                every=period,
                payload=_checked_payload(payload),
                misfire=misfire,
                max_catch_up=max_catch_up,
            )
        )

    def _arm(self, entry: TimerEntry) -> int:
        self._outputs.timers[entry.name] = entry
        self._pending[entry.name] = entry.due
        return entry.due

    def cancel_timer(self, name: str = "timeout") -> bool:
        """Cancel the timer called ``name``; return whether one was pending."""
        pending = self._pending.pop(name, None) is not None
        self._outputs.timers[name] = None
        return pending

    def send(
        self,
        behaviour: str,
        cell_id: str,
        type: str,
        body: dict[str, Any] | BaseModel | None = None,
    ) -> None:
        """Send a message to cell ``cell_id`` of ``behaviour`` through its input topic.

        It is produced when this invocation commits (at least once), keyed by ``cell_id``.

        Raises:
            TypeError: ``body`` cannot be serialised as JSON.
        """
        payload = body_payload(body)
        try:
            # The envelope is encoded with json.dumps at commit time: see _check_payload.
            json.dumps(payload)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"send: body of {type!r} is not JSON-serialisable: {exc}") from exc
        index = len(self._outputs.messages)
        self._outputs.messages.append(
            OutgoingMessage(
                behaviour=behaviour,
                cell_id=cell_id,
                type=type,
                body=payload,
                id=effect_id(self._app_id, self.behaviour, self.cell_id, self.origin, -1 - index),
            )
        )

    def emit_effect(self, kind: str, payload: Any = None) -> str:
        """Emit a side effect, dispatched to the handler of ``kind`` after this commit.

        Returns the effect's deterministic id.

        Raises:
            TypeError: ``payload`` cannot be serialised as JSON.
        """
        _check_payload("emit_effect", payload)
        index = len(self._outputs.effects)
        ident = effect_id(self._app_id, self.behaviour, self.cell_id, self.origin, index)
        self._outputs.effects.append(
            Effect(
                id=ident,
                kind=kind,
                payload=payload,
                behaviour=self.behaviour,
                cell_id=self.cell_id,
                origin=self.origin,
                emitted_ms=self.now_ms,
                config=self.message.config if self.message is not None else None,
            )
        )
        return ident

    def publish(
        self,
        topic: str,
        value: bytes,
        *,
        partition: int | None = None,
        key: str | None = None,
    ) -> None:
        """Produce ``value`` to ``topic``, keyed by this cell's id, when this invocation commits.

        It goes out with the cell's new data (in the same transaction under ``exactly_once``),
        to ``partition``, by default the partition of ``topic`` numbered like the cell's:
        ``topic`` must then be declared with the app's partition count (the layers built on
        cells publish their logs and replies this way). With ``key`` the record is keyed by
        ``key`` instead, and by default goes to the partition that key hashes to (murmur2, as
        every producer of the app places it): how a run spreads its tasks over a work topic.
        """
        self._outputs.records.append(
            (topic, value, partition, key.encode() if key is not None else None)
        )

    def __repr__(self) -> str:
        return (
            f"CellState({self.behaviour}/{self.cell_id}, trigger={self.trigger}, "
            f"alive={self.alive}, origin={self.origin!r})"
        )


def _check_payload(method: str, payload: Any) -> None:
    # Timer entries and effects are serialised when the invocation commits, after the callback
    # returned and outside its retries; a payload that cannot be serialised must fail now,
    # inside the callback, where the failure is retried and then parks the cell.
    try:
        to_json(payload)
    except PydanticSerializationError as exc:
        raise TypeError(f"{method}: payload is not JSON-serialisable: {exc}") from exc


def _checked_payload(payload: Any) -> Any:
    _check_payload("set_timer", payload)
    return payload


def _datetime_ms(at: datetime) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"set_timer: at={at!r} is naive; give an aware datetime (e.g. UTC)")
    # Integer arithmetic: ``int(at.timestamp() * 1000)`` goes through a float and lands one
    # millisecond early for some times.
    return (at - _EPOCH) // _ONE_MS


def _ms(value: float | timedelta) -> int:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return round(seconds * 1000)
