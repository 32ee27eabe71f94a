"""The cell engine: what each input record, timer and release does to a behaviour's cells.

For a behaviour called ``B`` in app ``A`` the engine works on:

- the records of the input topic ``A.B.in`` (key = cell id, value = JSON envelope), handed to
  :meth:`CellEngine.on_input` one by one by the batched input, each with the unit of work of
  its partition (:class:`~stream_app.engine.ports.Outputs`);
- the table ``B`` (cell id -> ``{"v": version, "data": {...}, "timers": {name: due_ms}}``);
- the table ``B-timers`` (due-ordered key -> :class:`~stream_app.core.timers.TimerEntry`);
- the table ``B-parked`` (cell id -> :class:`~stream_app.core.parking.ParkedCell`).

All of them have the same partition count and are keyed (or partitioned) by cell id, so one
worker owns a cell's messages, state, timers and parked work, and a record read on partition
``p`` reads and writes partition ``p`` of the tables only. Everything a record causes (table
writes, messages to cells, effects, events, replies, dead letters) goes into the unit of work
of that partition, which commits with the record's offset.

The engine knows no Kafka client, Faust or RocksDB: it talks through the ports of
:mod:`stream_app.engine.ports`, which :class:`~stream_app.runtime.Runtime` fills with the
Kafka-side adapters (:mod:`stream_app.kafka.cell_store`, :mod:`stream_app.kafka.batch_input`).

Runtime control records travel on the input topic too, recognised by the ``stream_app.control``
header: ``wake`` (fire due timers, boot, deliver injected messages on that partition) and
``release`` (run a parked cell's work again). A control record is never a cell message.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import struct
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model
from pydantic_core import from_json

from stream_app.api.behaviour import Behaviour
from stream_app.core.cell import CellState, FiredTimer, Trigger
from stream_app.core.envelope import CellMessage, envelope_bytes
from stream_app.core.origin import (
    BootOrigin,
    InjectOrigin,
    Origin,
    RecordOrigin,
    TimerOrigin,
)
from stream_app.core.origin import (
    parse as parse_origin,
)
from stream_app.core.parking import ParkedCell, ParkedItem
from stream_app.core.partitioner import partition_for
from stream_app.core.records import Headers, InputRecord
from stream_app.core.replies import Reply, parse_reply_to
from stream_app.core.retry import CELL_RETRY, Exhausted, RetryPolicy
from stream_app.core.timers import TimerEntry, decode_due_key, plan_firing
from stream_app.engine.ports import (
    Clock,
    DeadLetters,
    Outputs,
    RuntimeMetrics,
    SystemClock,
    TableStore,
    WakeSender,
)
from stream_app.errors import InvalidMessageError, RejectMessage, SchemaViolationError

__all__ = ["CONTROL_HEADER", "CellEngine", "CellRecord", "EngineSettings", "encode_record"]

logger = logging.getLogger(__name__)

#: Header naming a runtime control record on an input topic (``wake`` or ``release``).
CONTROL_HEADER = "stream_app.control"
WAKE_KEY = b"\x00stream_app.wake"
#: Timers fired per wake record; more due ones wait for the next wake (sent at once).
FIRE_BATCH = 256
#: A wake not seen back within this many seconds is sent again (lost in a rebalance).
WAKE_RESEND_S = 2.0

#: A fired timer being retired: the occurrence that fired and its successor, if recurring.
Retire = tuple[TimerEntry, TimerEntry | None]
#: Why work could not be done: the last exception and the attempts made.
Failure = tuple[BaseException, int]


async def _settled(retrying: Awaitable[Failure | None] | None) -> Failure | None:
    """The outcome of :meth:`CellEngine._invoke_now`: ``None`` if its first try was enough, else
    what the tries after it end in."""
    return None if retrying is None else await retrying


@dataclass(slots=True)
class _Call:
    """One callback to run on one cell (:meth:`CellEngine._invoke_now`), as each try sees it."""

    work: Outputs
    key: bytes
    trigger: Trigger
    now: int
    origin: Origin
    message: CellMessage[Any] | None
    timer: FiredTimer | None
    retire: Retire | None
    rejected_value: bytes | None


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The few settings values an engine needs.

    Attributes:
        app_id: The application id (seeds effect ids).
        partitions: Partition count of the input topics and tables.
        max_message_bytes: Largest record value accepted; larger ones are dead letters.
        effects_topic: Where cells' effects go.
        replies_topic: The only topic replies may go to.
        input_topic: The input topic of a behaviour, by behaviour name.
        cell_retry: The retry policy of a behaviour that names none.
    """

    app_id: str
    partitions: int
    max_message_bytes: int
    effects_topic: str
    replies_topic: str
    input_topic: Callable[[str], str]
    cell_retry: RetryPolicy = CELL_RETRY


@dataclass(slots=True)
class CellRecord:
    """A live cell as stored in its behaviour's table.

    Attributes:
        version: The behaviour version that wrote :attr:`data`.
        data: The cell's data as JSON.
        timers: Pending timers, ``name -> due_ms``.
    """

    version: int
    data: dict[str, Any]
    timers: dict[str, int] = field(default_factory=dict)

    @classmethod
    def decode(cls, raw: bytes) -> CellRecord:
        """Read a stored record."""
        doc = from_json(raw)
        return cls(version=int(doc["v"]), data=doc["data"], timers=dict(doc.get("timers") or {}))

    def encode(self) -> bytes:
        """The stored form (compact JSON)."""
        return encode_record(
            self.version,
            json.dumps(self.data, separators=(",", ":"), sort_keys=True).encode(),
            self.timers,
        )


def encode_record(version: int, data: bytes, timers: dict[str, int]) -> bytes:
    """A stored cell record from its parts: ``data`` is the cell's data as JSON already.

    Compact JSON with the keys in order (``data``, ``timers`` when there are any, ``v``), so
    an unchanged cell encodes to the same bytes and is not written again.
    """
    if timers:
        pending = json.dumps(timers, separators=(",", ":"), sort_keys=True).encode()
        return b'{"data":%s,"timers":%s,"v":%d}' % (data, pending, version)
    return b'{"data":%s,"v":%d}' % (data, version)


@dataclass(slots=True)
class _Partition:
    owned_since_ms: int
    generation: str
    needs_boot: bool = True
    next_due: int | None = None
    #: Every pending timer of the partition is due at or after this: scans seek here instead of
    #: to the first key, which would walk over the deletion markers of every timer fired since
    #: the last compaction (milliseconds per seek after some ten thousand firings).
    low_due: int = 0
    #: Ids of the partition's parked cells, loaded at boot: every record asks, and a table
    #: lookup per record would cost about as much as reading the cell.
    parked: set[bytes] = field(default_factory=set)
    wake_sent: float | None = None
    injected: deque[tuple[bytes, bytes]] = field(default_factory=deque)


def _header(headers: Headers, name: str) -> bytes | None:
    if headers:
        for key, value in headers:
            if key == name:
                return value
    return None


class CellEngine:
    """Runs one behaviour's cells: messages, boots, timers, parking and release.

    Made by :meth:`Runtime.behaviour <stream_app.runtime.Runtime.behaviour>` from the
    behaviour, the settings values it needs and its ports.

    Args:
        behaviour: The behaviour whose cells this engine runs.
        settings: The settings values the engine needs.
        cells: The table of the cells' records.
        timers: The table of pending timers, ordered by due time.
        parked: The table of parked cells and their waiting work.
        dead_letters: Where invalid, rejected and discarded work goes.
        wakes: Sends the sweep's wake records.
        metrics: The worker's counters.
        clock: The time: when timers are due and the ``now`` of each invocation (default the
            wall clock and the records' timestamps; a test's
            :class:`~stream_app.engine.ports.ManualClock` under ``STREAM_APP_CLOCK=driven``).
    """

    def __init__(
        self,
        behaviour: Behaviour[Any],
        settings: EngineSettings,
        *,
        cells: TableStore,
        timers: TableStore,
        parked: TableStore,
        dead_letters: DeadLetters,
        wakes: WakeSender,
        metrics: RuntimeMetrics,
        clock: Clock | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.name = behaviour.name
        self.settings = settings
        self.partitions = settings.partitions
        self.topic_name = settings.input_topic(self.name)
        self.cells = cells
        self.timers = timers
        self.parked = parked
        self.dead_letters = dead_letters
        self.wakes = wakes
        self.metrics = metrics
        self.clock = clock or SystemClock()
        #: How a raising callback is tried again before the cell is parked: the behaviour's
        #: policy, else the settings'.
        self.retry = (behaviour.retry or settings.cell_retry).ending_in(
            Exhausted.PARK, f"behaviour {self.name!r}"
        )
        self._owned: dict[int, _Partition] = {}
        #: Control records (wakes, releases) read from the input topic: the rest of its
        #: records are cell messages.
        self.control_records = 0
        #: Reads a stored record of this behaviour version in one pass (see :meth:`_read`).
        self._stored = _stored_model(behaviour)

    # -- partition bookkeeping -------------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> None:
        """The partitions of the input topic this worker owns now (after a rebalance).

        A partition newly owned gets a new generation and boots with its first record.
        """
        mine = set(partitions)
        now = self.clock.now_ms()
        for p in list(self._owned):
            if p not in mine:
                del self._owned[p]
        for p in mine:
            if p not in self._owned:
                self._owned[p] = _Partition(owned_since_ms=now, generation=uuid.uuid4().hex[:12])

    @property
    def owned_partitions(self) -> list[int]:
        """Partitions of this behaviour owned by this worker."""
        return sorted(self._owned)

    def parked_cells(self) -> int:
        """Cells parked in the partitions this worker owns and has booted (a partition's
        parked cells are known from its boot on)."""
        return sum(len(part.parked) for part in self._owned.values())

    def next_due(self) -> dict[int, int | None]:
        """When the earliest pending timer of each booted partition owned here is due (ms;
        ``None``: none pending), as the sweep knows it: a timer set earlier lowers it at once,
        one cancelled leaves it until the partition's next wake scans its timers again."""
        return {p: part.next_due for p, part in self._owned.items() if not part.needs_boot}

    async def sweep(self) -> None:
        """Send a wake record to each owned partition that has work waiting.

        Work waits when the partition has not booted yet, when its earliest timer is due, or
        when messages were injected for it. At most one wake is in flight per partition.
        """
        now, mono = self.clock.now_ms(), time.monotonic()
        for p, part in list(self._owned.items()):
            if part.wake_sent is not None and mono - part.wake_sent < WAKE_RESEND_S:
                continue
            due = part.next_due is not None and part.next_due <= now
            if part.needs_boot or due or part.injected:
                part.wake_sent = mono
                # A plain send: a wake is a hint from the sweep, not an output of a record.
                await self.wakes.send(
                    self.topic_name, WAKE_KEY, b"", p, [(CONTROL_HEADER, b"wake")]
                )

    def inject(self, cell_id: str, value: bytes) -> bool:
        """Queue an envelope for a cell owned by this worker, without Kafka; see
        :meth:`Runtime.inject`. Returns ``False`` (and drops it) if the cell is not here."""
        key = cell_id.encode()
        part = self._owned.get(partition_for(key, self.partitions))
        if part is None:
            return False
        part.injected.append((key, value))
        return True

    # -- input -----------------------------------------------------------------------------

    async def on_input(self, record: InputRecord, work: Outputs) -> None:
        """Handle one record of the input topic; ``work`` is the unit of work of its partition
        (:meth:`take`, awaited to the end)."""
        pending = self.take(record, work)
        if pending is not None:
            await pending

    def take(self, record: InputRecord, work: Outputs) -> Awaitable[None] | None:
        """Handle one record of the input topic; ``work`` is the unit of work of its partition.

        What the batched input calls per record. A cell message whose first try succeeds (or
        is rejected, or dead-lettered) is handled here, at once, and ``None`` returned: no
        coroutine is made per record on that path. Work that must wait (a boot, due timers, a
        control record, a callback tried again after a pause) is returned as an awaitable,
        which the caller awaits before the next record.

        The first record of a newly owned partition boots it first. A cell message also fires
        the partition's timers that were due when it was sent (its invocation time) before it:
        a busy partition does not wait for a wake, and a message read from a backlog still
        comes before a timer due after it was sent (the cancel of a timer is not overtaken by
        the timer when the worker is behind). Later timers fire on the wake, behind the
        backlog, or before the first message sent after they came due.
        """
        part = self._owned.get(record.partition)
        if (part is None or not part.needs_boot) and (
            record.headers is None or _header(record.headers, CONTROL_HEADER) is None
        ):
            now = self.clock.invocation_ms(record.timestamp_ms)
            if part is None or part.next_due is None or part.next_due > now:
                return self._on_record(record, work, now)
        return self._take_slowly(record, work, part)

    async def _take_slowly(
        self, record: InputRecord, work: Outputs, part: _Partition | None
    ) -> None:
        """:meth:`take` for a record that may boot the partition, fire timers or control."""
        now = self.clock.invocation_ms(record.timestamp_ms)
        if part is not None and part.needs_boot:
            # At the clock's time, not the record's: the record may be an old one read again
            # after a restart, and what a cell does at boot (re-arm a deadline) starts now.
            await self._boot(work, part, self.clock.now_ms())
        control = _header(record.headers, CONTROL_HEADER)
        if control is None:
            if part is not None and part.next_due is not None:
                until = min(now, self.clock.now_ms())
                if part.next_due <= until:
                    await self._fire_due(work, part, until=until)
            pending = self._on_record(record, work, now)
            if pending is not None:
                await pending
            return
        self.control_records += 1
        if control == b"wake":
            await self._on_wake(work, part)
        elif control == b"release":
            await self._on_release(record, work)
        else:
            logger.warning("%s: ignoring unknown control record %r", self.name, control)

    def _on_record(self, record: InputRecord, work: Outputs, now: int) -> Awaitable[None] | None:
        """Deliver one input record to its cell (or to dead letters, or to the parked queue);
        an awaitable if the delivery must wait (:meth:`_deliver`)."""
        try:
            message = self.behaviour.message_types.decode(
                record.key, record.value, max_bytes=self.settings.max_message_bytes
            )
            if message.reply_to is not None:
                self._reply_target(message.reply_to)  # a reply address this app may use
        except InvalidMessageError as exc:
            logger.warning(
                "dead letter from %s[%s]@%s: %s", record.topic, record.partition, record.offset, exc
            )
            self.dead_letters.publish(
                work,
                key=record.key,
                value=record.value,
                reason=exc.reason,
                error=str(exc),
                behaviour=self.name,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            return None
        key, value = record.key, record.value
        assert key is not None and value is not None, "decode refuses a record without them"
        home = partition_for(key, self.partitions)
        if home != record.partition:
            # Produced with another partitioner: this worker may not own the cell. Forward it to
            # the partition every other record of the cell goes to.
            self.metrics.misrouted += 1
            logger.warning(
                "%s: cell %r arrived on partition %s, belongs on %s; forwarding",
                self.name,
                message.cell_id,
                record.partition,
                home,
            )
            work.produce(self.topic_name, key, value, home)
            return None
        origin = RecordOrigin(record.topic, record.partition, record.offset)
        return self._deliver(work, key, value, message, origin, now)

    def _deliver(
        self,
        work: Outputs,
        key: bytes,
        value: bytes,
        message: CellMessage[Any],
        origin: Origin,
        now: int,
    ) -> Awaitable[None] | None:
        """Hand a decoded message to its cell: behind its parked work if it is parked, else to
        ``handle_message``, parking the cell with the message if every try fails. Returns an
        awaitable if the first try failed (the tries after it wait), else ``None``."""
        if self._is_parked(work, key):
            self._park(work, key, _message_item(origin, value, now), None)
            return None
        retrying = self._invoke_now(
            work, key, "message", now, origin, message=message, rejected_value=value
        )
        if retrying is None:
            return None
        return self._park_if_failed(retrying, work, key, _message_item(origin, value, now))

    async def _park_if_failed(
        self, retrying: Awaitable[Failure | None], work: Outputs, key: bytes, item: ParkedItem
    ) -> None:
        failure = await retrying
        if failure is not None:
            self._park(work, key, item, failure)

    # -- invocations -----------------------------------------------------------------------

    def _invoke_now(
        self,
        work: Outputs,
        key: bytes,
        trigger: Trigger,
        now: int,
        origin: Origin,
        *,
        message: CellMessage[Any] | None = None,
        timer: FiredTimer | None = None,
        retire: Retire | None = None,
        rejected_value: bytes | None = None,
    ) -> Awaitable[Failure | None] | None:
        """Run one callback on one cell and commit what it did; its first try at once.

        1. Read the cell's record; a fired timer (``retire``) is taken out of its pending
           timers, and its next occurrence put in, before the callback sees them.
        2. Call the callback with a fresh :class:`CellState`; on an exception, wait as the
           behaviour's retry policy says and try again from the same record, up to its
           ``attempts``.
        3. :class:`RejectMessage` sends the message to dead letters and changes nothing.
        4. On success, write data, timers, outgoing messages and effects (:meth:`_commit`).

        Returns ``None`` if the first try succeeded (or rejected the message); else the tries
        after it, to await: they end in ``None`` when one succeeds, else the last exception
        and the attempts, for the caller to park the work.
        """
        raw = self.cells.get(work.partition, key)
        timers, load = self._read(raw)
        if retire is not None:
            timers = _retired(timers, retire)
        call = _Call(work, key, trigger, now, origin, message, timer, retire, rejected_value)
        failed = self._try(call, raw, timers, load, 1)
        if failed is None:
            return None
        return self._tries_after(call, raw, timers, load, failed)

    async def _tries_after(
        self,
        call: _Call,
        raw: bytes | None,
        timers: dict[str, int],
        load: Callable[[], Any],
        failed: BaseException,
    ) -> Failure | None:
        """The tries after a failed first one, each after the retry policy's pause."""
        policy = self.retry
        last = failed
        for attempt in range(2, policy.attempts + 1):
            await asyncio.sleep(policy.delay(attempt))
            failed_again = self._try(call, raw, timers, load, attempt)
            if failed_again is None:
                return None
            last = failed_again
        logger.error(
            "%s/%s: parking after %d attempts: %r",
            self.name,
            call.key.decode(),
            policy.attempts,
            last,
        )
        return last, policy.attempts

    def _try(
        self,
        call: _Call,
        raw: bytes | None,
        timers: dict[str, int],
        load: Callable[[], Any],
        attempt: int,
    ) -> BaseException | None:
        """One try of a callback: ``None`` if it succeeded (committed) or rejected the
        message (dead-lettered), else the exception it raised (logged)."""
        trigger = call.trigger
        behaviour = self.behaviour
        if trigger == "message":
            callback = behaviour.handle_message
        elif trigger == "timeout":
            callback = behaviour.on_timeout
        else:
            callback = behaviour.on_boot
        work, key = call.work, call.key
        cell_id = key.decode()
        text = str(call.origin)
        try:
            state: CellState[Any] = CellState(
                app_id=self.settings.app_id,
                behaviour=self.name,
                cell_id=cell_id,
                data=load(),
                trigger=trigger,
                now_ms=call.now,
                origin=text,
                timers=timers,
                message=call.message,
                timer=call.timer,
                clock_ms=self.clock.now_ms(),
            )
            callback(state)
            encoded = self._encode(state)
        except RejectMessage as exc:
            logger.warning("%s/%s rejected %s: %s", self.name, cell_id, text, exc)
            self._rejected(work, key, call.origin, exc, call.message, call.rejected_value)
            if call.retire is not None:
                self._retire_only(work, key, call.retire)
            return None
        except Exception as exc:
            logger.warning(
                "%s/%s: %s failed (attempt %d of %d): %r",
                self.name,
                cell_id,
                trigger,
                attempt,
                self.retry.attempts,
                exc,
            )
            return exc
        self._commit(work, key, raw, timers, state, encoded, call.retire)
        return None

    def _read(self, raw: bytes | None) -> tuple[dict[str, int], Callable[[], Any]]:
        """A stored cell record's pending timers, and a function that returns its data as the
        behaviour's model (a fresh one each call: a callback tried again must not see what the
        failed try did to it; ``None`` for a dead cell).

        Data stored by this version of the behaviour is read in one pydantic pass over the JSON
        (:attr:`_stored`); anything else (older versions to migrate, a behaviour that overrides
        ``load``, data that does not validate) goes through :meth:`CellRecord.decode` and
        :meth:`Behaviour.load`, which raise the errors a callback's try fails with.
        """
        if raw is None:
            return {}, _dead
        stored_type = self._stored
        if stored_type is not None:
            try:
                stored: Any = stored_type.model_validate_json(raw)
            except ValidationError:
                pass
            else:
                first = [stored.data]

                def fresh() -> Any:
                    if first:
                        return first.pop()
                    again: Any = stored_type.model_validate_json(raw)
                    return again.data

                timers: dict[str, int] = stored.timers
                return timers, fresh
        record = CellRecord.decode(raw)
        behaviour = self.behaviour
        return dict(record.timers), lambda: behaviour.load(record.version, record.data)

    def _encode(self, state: CellState[Any]) -> bytes | None:
        """The new data as JSON; raises (inside the retry loop) if it is not the data model."""
        if state.data is None:
            return None
        if not isinstance(state.data, self.behaviour.data_model):
            raise TypeError(
                f"{self.name}: state.data must be a {self.behaviour.data_model.__name__} or "
                f"None, got {type(state.data).__name__}"
            )
        # What model_dump_json() does, without its wrapper and the str round trip.
        dumped: bytes = type(state.data).__pydantic_serializer__.to_json(state.data)
        return dumped

    def _rejected(
        self,
        work: Outputs,
        key: bytes,
        origin: Origin,
        exc: RejectMessage,
        message: CellMessage[Any] | None,
        value: bytes | None,
    ) -> None:
        """Dead-letter rejected work, and answer its sender if it asked for a reply."""
        self._dead_letter(work, key, value, origin, reason=exc.reason, error=str(exc))
        if message is not None and message.reply_to is not None and message.id:
            reply = Reply(
                correlation_id=message.id,
                behaviour=self.name,
                cell_id=key.decode(),
                ok=False,
                reason=exc.reason,
                error=str(exc),
            )
            self._reply(work, key, message, reply)

    def _commit(
        self,
        work: Outputs,
        key: bytes,
        raw: bytes | None,
        timers: dict[str, int],
        state: CellState[Any],
        data: bytes | None,
        retire: Retire | None,
    ) -> None:
        """Write what one successful callback did into the unit of work of its partition.

        1. The fired timer (if any) leaves the timers table; its next occurrence enters it
           unless the callback set or cancelled that name itself.
        2. A dead cell (``data is None``) loses its record (a tombstone) and all its timers.
        3. A live cell's timers are replaced or cancelled by name, then its record is written
           if it changed.
        4. Messages to other cells, effects and published records are produced. (The cell's
           key is on the unit's partition: records for another partition are forwarded before
           they reach a cell, so the unit's partition is the one numbered like the cell's.)
        """
        cell_id = state.cell_id
        outputs = state._outputs
        if retire is not None:
            fired, successor = retire
            self.timers.delete(work, fired.key())
            if successor is not None and successor.name not in outputs.timers:
                self._put_timer(work, successor)
        if data is None:
            for name, due in timers.items():
                self.timers.delete(work, TimerEntry(cell=cell_id, name=name, due=due).key())
            if raw is not None:
                self.cells.delete(work, key)
        else:
            for name, entry in outputs.timers.items():
                old = timers.pop(name, None)
                if old is not None:
                    self.timers.delete(work, TimerEntry(cell=cell_id, name=name, due=old).key())
                if entry is not None:
                    self._put_timer(work, entry)
                    timers[name] = entry.due
            new = encode_record(self.behaviour.version, data, timers)
            if new != raw:
                self.cells.put(work, key, new)
        partition = work.partition
        for topic, value, target, own_key in outputs.records:
            if own_key is None:
                work.produce(topic, key, value, partition if target is None else target)
            else:
                where = partition_for(own_key, self.partitions) if target is None else target
                work.produce(topic, own_key, value, where)
        for outgoing in outputs.messages:
            cell = outgoing.cell_id.encode()
            work.produce(
                self.settings.input_topic(outgoing.behaviour),
                cell,
                envelope_bytes(outgoing.type, outgoing.body, id=outgoing.id),
                partition_for(cell, self.partitions),
            )
        if outputs.effects:
            for effect in outputs.effects:
                work.produce(
                    self.settings.effects_topic, key, effect.model_dump_json().encode(), partition
                )
            self.metrics.effects_emitted += len(outputs.effects)

    def _reply(self, work: Outputs, key: bytes, message: CellMessage[Any], reply: Reply) -> None:
        """Produce ``reply`` to the ``reply_to`` address of ``message`` (already validated)
        into the unit of work ``work``."""
        assert message.reply_to is not None
        topic, partition = self._reply_target(message.reply_to)
        work.produce(topic, key, reply.model_dump_json().encode(), partition)

    def _reply_target(self, reply_to: str) -> tuple[str, int]:
        """The topic and partition a ``reply_to`` address names, if this app may reply there.

        Replies go only to the app's reply topic (``<app_id>.replies``), to one of its
        partitions: a worker never produces to a topic or partition a sender made up.

        Raises:
            SchemaViolationError: The address is malformed or names another topic or partition.
        """
        try:
            topic, partition = parse_reply_to(reply_to)
        except ValueError as exc:
            raise SchemaViolationError(str(exc)) from None
        replies = self.settings.replies_topic
        if topic != replies or partition >= self.partitions:
            raise SchemaViolationError(
                f"reply_to {reply_to!r} is not a partition of {replies} (0..{self.partitions - 1})"
            )
        return topic, partition

    def _put_timer(self, work: Outputs, entry: TimerEntry) -> None:
        self.timers.put(work, entry.key(), entry.model_dump_json().encode())
        part = self._owned.get(work.partition)
        if part is not None:
            if part.next_due is None or entry.due < part.next_due:
                part.next_due = entry.due
            part.low_due = min(part.low_due, entry.due)

    def _retire_only(self, work: Outputs, key: bytes, retire: Retire) -> None:
        """Take a fired timer out without running a callback (skipped, rejected, parked, failed
        or dead cell): the timers table and the cell's record lose it, its successor enters."""
        fired, successor = retire
        self.timers.delete(work, fired.key())
        raw = self.cells.get(work.partition, key)
        if raw is None:
            return
        record = CellRecord.decode(raw)
        timers = _retired(record.timers, retire)
        if successor is not None:
            self._put_timer(work, successor)
        if timers != record.timers:
            record.timers = timers
            self.cells.put(work, key, record.encode())

    def _dead_letter(
        self,
        work: Outputs,
        key: bytes,
        value: bytes | None,
        origin: Origin,
        *,
        reason: str,
        error: str,
    ) -> None:
        """Dead-letter work of this behaviour, its source taken from the work's origin (work
        that came from no record names its origin as the topic, offset ``-1``)."""
        if isinstance(origin, RecordOrigin):
            topic, partition, offset = origin.topic, origin.partition, origin.offset
        else:
            topic, partition, offset = str(origin), -1, -1
        self.dead_letters.publish(
            work,
            key=key,
            value=value,
            reason=reason,
            error=error,
            behaviour=self.name,
            topic=topic,
            partition=partition,
            offset=offset,
        )

    # -- parking ---------------------------------------------------------------------------

    def _is_parked(self, work: Outputs, key: bytes) -> bool:
        part = self._owned.get(work.partition)
        if part is None or part.needs_boot:
            return self.parked.get(work.partition, key) is not None
        return key in part.parked

    def _mark_parked(self, partition: int, key: bytes, parked: bool) -> None:
        part = self._owned.get(partition)
        if part is not None:
            if parked:
                part.parked.add(key)
            else:
                part.parked.discard(key)

    def _park(self, work: Outputs, key: bytes, item: ParkedItem, failure: Failure | None) -> None:
        """Append ``item`` to the cell's parked work; ``failure`` parks a cell not parked yet.

        An item whose origin already waits is not added again: it is the same work done again
        (input read again after a crash, under ``at_least_once``).
        """
        raw = self.parked.get(work.partition, key)
        if raw is not None:
            parked = ParkedCell.model_validate_json(raw)
            if any(held.origin == item.origin for held in parked.items):
                return
            parked.items.append(item)
        else:
            assert failure is not None, "a cell is parked by a failure"
            exc, attempts = failure
            parked = ParkedCell(
                cell_id=key.decode(),
                error=f"{type(exc).__name__}: {exc}",
                attempts=attempts,
                since_ms=self.clock.now_ms(),
                items=[item],
            )
            self.metrics.parked += 1
        self.parked.put(work, key, parked.model_dump_json().encode())
        self._mark_parked(work.partition, key, True)

    async def _on_release(self, record: InputRecord, work: Outputs) -> None:
        """Run a parked cell's work again, in order; park it again from the first item that
        fails.

        The control record's value may be ``{"skip": n}``: the first ``n`` items go to the
        dead-letter topic (reason ``discarded``) instead of being run again.
        """
        key = record.key
        raw = self.parked.get(work.partition, key) if key is not None else None
        if key is None or raw is None:
            logger.info("%s: release of %r: not parked", self.name, key)
            return
        parked = ParkedCell.model_validate_json(raw)
        try:
            skip = int(json.loads(record.value or b"{}").get("skip", 0))
        except (ValueError, AttributeError, TypeError):
            skip = 0
        self.parked.delete(work, key)
        self._mark_parked(work.partition, key, False)
        for item in parked.items[:skip]:
            self._dead_letter(
                work,
                key,
                (item.value or json.dumps(item.model_dump(mode="json"))).encode(),
                parse_origin(item.origin),
                reason="discarded",
                error=f"discarded from parked cell (parked for: {parked.error})",
            )
        items = parked.items[skip:]
        logger.info("%s: releasing %r: running %d item(s) again", self.name, key, len(items))
        for index, item in enumerate(items):
            failure = await self._rerun_parked(work, key, item)
            if failure is not None:
                exc, attempts = failure
                again = ParkedCell(
                    cell_id=parked.cell_id,
                    error=f"{type(exc).__name__}: {exc}",
                    attempts=attempts,
                    since_ms=self.clock.now_ms(),
                    items=items[index:],
                )
                self.parked.put(work, key, again.model_dump_json().encode())
                self._mark_parked(work.partition, key, True)
                return
        self.metrics.released += 1

    async def _rerun_parked(self, work: Outputs, key: bytes, item: ParkedItem) -> Failure | None:
        """Run one released item as it first ran: same trigger, time and origin."""
        origin = parse_origin(item.origin)
        if item.kind == "message":
            value = (item.value or "").encode()
            try:
                message = self.behaviour.message_types.decode(
                    key, value, max_bytes=self.settings.max_message_bytes
                )
            except InvalidMessageError as exc:
                self._dead_letter(work, key, value, origin, reason=exc.reason, error=str(exc))
                return None
            return await _settled(
                self._invoke_now(
                    work,
                    key,
                    "message",
                    item.timestamp_ms,
                    origin,
                    message=message,
                    rejected_value=value,
                )
            )
        if item.kind == "timeout":
            timer = FiredTimer(**(item.timer or {}))
            return await _settled(
                self._invoke_now(work, key, "timeout", item.timestamp_ms, origin, timer=timer)
            )
        return await _settled(self._invoke_now(work, key, "boot", item.timestamp_ms, origin))

    # -- boot, timers, injected messages ---------------------------------------------------

    async def _boot(self, work: Outputs, part: _Partition, now: int) -> None:
        """Call ``on_boot`` once for every live cell of a newly owned partition.

        Runs inside the first record read from the partition after the assignment (none is
        read before the partition's tables are recovered), so every cell is booted before its
        next message. Parked cells are not booted, nor are the cells of a behaviour whose boot
        does nothing (:attr:`Behaviour.boots`): the partition's first record does not wait
        for a pass over all of them.
        """
        partition = work.partition
        part.needs_boot = False
        part.parked = set(self.parked.keys(partition))
        origin = BootOrigin(partition, part.generation)
        booted = 0
        keys = list(self.cells.keys(partition)) if self.behaviour.boots else []
        for key in keys:
            if key in part.parked:
                continue
            failure = await _settled(self._invoke_now(work, key, "boot", now, origin))
            booted += 1
            if failure is not None:
                item = ParkedItem(kind="boot", origin=str(origin), timestamp_ms=now)
                self._park(work, key, item, failure)
        part.next_due = self._scan(partition, part, 0, 0)[1]
        self.metrics.booted += booted
        logger.info("%s: partition %s booted %d live cell(s)", self.name, partition, booted)

    def _scan(
        self, partition: int, part: _Partition, now: int, limit: int
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        """Up to ``limit`` timers due at or before ``now``, oldest first, and the due time of
        the first one left (``None`` if none). Starts at the partition's ``low_due``."""
        due: list[tuple[bytes, bytes]] = []
        for key, value in self.timers.items_from(partition, struct.pack(">Q", part.low_due)):
            decoded = decode_due_key(key)
            if decoded is None:
                return due, None
            if decoded[0] > now or len(due) >= limit:
                return due, decoded[0]
            due.append((key, value))
            part.low_due = decoded[0]
        return due, None

    async def _fire_due(self, work: Outputs, part: _Partition, *, until: int | None = None) -> None:
        """Fire the partition's due timers, oldest first, at most :data:`FIRE_BATCH` of them
        (due by the clock, or by ``until`` if that is earlier).

        1. Scan from ``low_due`` to the first timer not due; note its due time as the next.
        2. Fire each (writes made while firing, such as recurring timers re-armed, lower the
           next due time and ``low_due`` through :meth:`_put_timer`).
        3. If the batch was full the next due time is in the past, so the sweep sends another
           wake at once and the rest fire then, with other records in between.
        """
        now = self.clock.now_ms()
        bound = now if until is None else min(now, until)
        batch, next_due = self._scan(work.partition, part, bound, FIRE_BATCH)
        part.next_due = next_due
        for _, raw in batch:
            await self._fire(work, part, TimerEntry.model_validate_json(raw), now)

    async def _on_wake(self, work: Outputs, part: _Partition | None) -> None:
        """Fire the partition's due timers (oldest first), then its injected messages."""
        if part is None:
            return  # a wake for a partition this worker no longer owns
        part.wake_sent = None
        await self._fire_due(work, part)
        now = self.clock.now_ms()
        while part.injected:
            cell_key, value = part.injected.popleft()
            await self._on_injected(work, cell_key, value, now)

    async def _fire(self, work: Outputs, part: _Partition, entry: TimerEntry, now: int) -> None:
        """Fire one due timer as its misfire policy says (once, skipped, or caught up)."""
        plan = plan_firing(entry, now_ms=now, owned_since_ms=part.owned_since_ms)
        successor = (
            entry.model_copy(update={"due": plan.next_due}) if plan.next_due is not None else None
        )
        cell_key = entry.cell.encode()
        metrics = self.metrics
        if not plan.fire:
            metrics.timers_skipped += 1
            self._retire_only(work, cell_key, (entry, successor))
            return
        for index, due in enumerate(plan.fire):
            timer = FiredTimer(
                name=entry.name,
                due_ms=due,
                payload=entry.payload,
                missed=plan.missed if index == len(plan.fire) - 1 else 0,
                recurring=successor is not None,
            )
            if index and not self._still_pending(work.partition, cell_key, entry.name, successor):
                break  # the callback cancelled or replaced the timer it was catching up on
            origin = TimerOrigin(entry.name, due)
            if due >= part.owned_since_ms:
                metrics.record_lag(now - due)
            metrics.timers_fired += 1
            retire = (entry, successor) if index == 0 else None
            parked = self._is_parked(work, cell_key)
            if parked or self.cells.get(work.partition, cell_key) is None:
                if retire is not None:
                    self._retire_only(work, cell_key, retire)
                if parked:
                    self._park(work, cell_key, _timeout_item(timer, origin, now), None)
                continue
            failure = await _settled(
                self._invoke_now(work, cell_key, "timeout", now, origin, timer=timer, retire=retire)
            )
            if failure is not None:
                if retire is not None:
                    self._retire_only(work, cell_key, retire)
                self._park(work, cell_key, _timeout_item(timer, origin, now), failure)

    def _still_pending(
        self, partition: int, cell_key: bytes, name: str, successor: TimerEntry | None
    ) -> bool:
        raw = self.cells.get(partition, cell_key)
        if raw is None or successor is None:
            return False
        return CellRecord.decode(raw).timers.get(name) == successor.due

    async def _on_injected(self, work: Outputs, key: bytes, value: bytes, now: int) -> None:
        try:
            message = self.behaviour.message_types.decode(
                key, value, max_bytes=self.settings.max_message_bytes
            )
        except InvalidMessageError as exc:
            logger.warning("%s: dropping injected message for %r: %s", self.name, key, exc)
            return
        pending = self._deliver(work, key, value, message, InjectOrigin(uuid.uuid4().hex), now)
        if pending is not None:
            await pending

    # -- inspection ------------------------------------------------------------------------

    def describe(self, cell_id: str) -> dict[str, Any]:
        """A cell as this worker holds it: data, version, pending timers and parked work."""
        key = cell_id.encode()
        raw = self.cells.lookup(key)
        record = CellRecord.decode(raw) if raw is not None else None
        timers = []
        for name, due in sorted((record.timers if record else {}).items(), key=lambda t: t[1]):
            stored = self.timers.lookup(TimerEntry(cell=cell_id, name=name, due=due).key())
            entry = TimerEntry.model_validate_json(stored) if stored is not None else None
            timers.append(
                {
                    "name": name,
                    "due_ms": due,
                    "every_ms": entry.every if entry else None,
                    "cron": entry.cron if entry else None,
                    "tz": entry.tz if entry else None,
                    "misfire": entry.misfire.value if entry else None,
                    "payload": entry.payload if entry else None,
                }
            )
        parked_raw = self.parked.lookup(key)
        parked = ParkedCell.model_validate_json(parked_raw) if parked_raw is not None else None
        return {
            "behaviour": self.name,
            "cell_id": cell_id,
            "alive": record is not None,
            "version": record.version if record else None,
            "data": record.data if record else None,
            "timers": timers,
            "parked": parked.model_dump(mode="json") if parked else None,
        }

    def local_cells(self) -> dict[str, Any]:
        """Every live cell on this worker: ``cell_id -> data``."""
        return {key.decode(): CellRecord.decode(raw).data for key, raw in self.cells.local_items()}

    def local_cells_page(self, limit: int) -> tuple[int, dict[str, Any]]:
        """How many live cells this worker holds, and the first ``limit`` of them in id order
        (``cell_id -> data``): only those are decoded."""
        total = 0
        first: list[tuple[bytes, bytes]] = []
        for item in self.cells.local_items():
            total += 1
            first.append(item)
            if len(first) >= 2 * limit:  # keep the list short: trim it to the smallest ids
                first = heapq.nsmallest(limit, first)
        kept = heapq.nsmallest(limit, first)
        return total, {key.decode(): CellRecord.decode(raw).data for key, raw in kept}

    def local_parked(self) -> dict[str, Any]:
        """Every parked cell on this worker: ``cell_id -> {error, since_ms, waiting}``."""
        result: dict[str, Any] = {}
        for key, raw in self.parked.local_items():
            parked = ParkedCell.model_validate_json(raw)
            result[key.decode()] = {
                "error": parked.error,
                "attempts": parked.attempts,
                "since_ms": parked.since_ms,
                "waiting": len(parked.items),
            }
        return result


def _dead() -> None:
    """The data of a dead cell."""
    return None


def _stored_model(behaviour: Behaviour[Any]) -> type[BaseModel] | None:
    """A model of the stored record (:class:`CellRecord`) of the behaviour's current version,
    its ``data`` validated as the behaviour's data model: one pydantic pass over the stored JSON
    instead of a parse, a copy and a validation of the parsed data. ``None`` when the behaviour
    overrides :meth:`Behaviour.load` (it must see every stored record)."""
    if type(behaviour).load is not Behaviour.load:
        return None
    version: Any = Literal[behaviour.version]  # a Literal of a runtime value
    return create_model(
        f"{behaviour.data_model.__name__}StoredV{behaviour.version}",
        v=(version, ...),
        data=(behaviour.data_model, ...),
        timers=(dict[str, int], Field(default_factory=dict)),
    )


def _message_item(origin: Origin, value: bytes, now: int) -> ParkedItem:
    return ParkedItem(kind="message", origin=str(origin), value=value.decode(), timestamp_ms=now)


def _timeout_item(timer: FiredTimer, origin: TimerOrigin, now: int) -> ParkedItem:
    return ParkedItem(
        kind="timeout",
        origin=str(origin),
        timer={
            "name": timer.name,
            "due_ms": timer.due_ms,
            "payload": timer.payload,
            "missed": timer.missed,
            "recurring": timer.recurring,
        },
        timestamp_ms=now,
    )


def _retired(timers: dict[str, int], retire: Retire) -> dict[str, int]:
    """A cell's pending timers once a fired timer is retired: it leaves the map (unless the name
    was set again meanwhile), and its next occurrence, if any, enters it."""
    fired, successor = retire
    remaining = dict(timers)
    if remaining.get(fired.name) == fired.due:
        del remaining[fired.name]
    if successor is not None:
        remaining[successor.name] = successor.due
    return remaining
