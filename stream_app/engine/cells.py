"""The cell engine: one Faust agent per behaviour, with its tables, timers and parking.

For a behaviour called ``B`` in app ``A`` the engine owns:

- the input topic ``A.B.in`` (key = cell id, value = JSON envelope), consumed by one agent;
- the table ``B`` (cell id -> ``{"v": version, "data": {...}, "timers": {name: due_ms}}``);
- the table ``B-timers`` (due-ordered key -> :class:`~stream_app.core.timers.TimerEntry`);
  its changelog ``A-B-timers-changelog`` is the durable timers topic;
- the table ``B-parked`` (cell id -> :class:`~stream_app.core.parking.ParkedCell`).

All of them have the same partition count and are keyed (or partitioned) by cell id, so one
worker owns a cell's messages, state, timers and parked work, and writes them from one agent.

Runtime control records travel on the input topic too, recognised by the ``stream_app.control``
header: ``wake`` (fire due timers, boot, deliver injected messages on that partition) and
``release`` (replay a parked cell). A control record is never a cell message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faust import current_event
from faust.types import TP
from pydantic_core import from_json

from stream_app.api.behaviour import Behaviour
from stream_app.core.cell import CellState, FiredTimer, Trigger
from stream_app.core.envelope import CellMessage
from stream_app.core.parking import ParkedCell, ParkedItem
from stream_app.core.partitioner import partition_for
from stream_app.core.replies import Reply
from stream_app.core.timers import TimerEntry, decode_due_key, plan_firing
from stream_app.errors import InvalidMessageError, RejectMessage
from stream_app.kafka.batch_input import batch_partition

if TYPE_CHECKING:
    from stream_app.runtime import Runtime

__all__ = ["CONTROL_HEADER", "CellEngine", "CellRecord"]

logger = logging.getLogger(__name__)

#: Header naming a runtime control record on an input topic (``wake`` or ``release``).
CONTROL_HEADER = "stream_app.control"
WAKE_KEY = b"\x00stream_app.wake"
#: Faust keeps the changelog offset of a partition in the partition's own database.
_FAUST_OFFSET_KEY = b"__faust\0offset__"
#: Timers fired per wake record; more due ones wait for the next wake (sent at once).
FIRE_BATCH = 256
#: A wake not seen back within this many seconds is sent again (lost in a rebalance).
WAKE_RESEND_S = 2.0


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
    #: Ids of the partition's parked cells, loaded at boot: every record asks, and a RocksDB
    #: lookup per record would cost about as much as reading the cell.
    parked: set[bytes] = field(default_factory=set)
    wake_sent: float | None = None
    injected: deque[tuple[bytes, bytes]] = field(default_factory=deque)


def _header(headers: Any, name: str) -> bytes | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == name:
            return value if isinstance(value, bytes) else str(value).encode()
    return None


def _event_partition() -> int | None:
    """The partition of the input record being processed in this task, if any."""
    partition = batch_partition()
    if partition is not None:
        return partition
    event = current_event()
    return event.message.partition if event is not None else None


def _now_ms() -> int:
    return int(time.time() * 1000)


class CellEngine:
    """Runs one behaviour's cells inside a Faust worker. Made by :meth:`Runtime.behaviour`."""

    def __init__(self, runtime: Runtime, behaviour: Behaviour[Any]) -> None:
        self.runtime = runtime
        self.behaviour = behaviour
        self.name = behaviour.name
        app, settings = runtime.app, runtime.settings
        self.partitions = settings.partitions
        self.topic_name = settings.input_topic(self.name)
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        self.input = app.topic(self.topic_name, partitions=settings.partitions, **raw)
        table: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
        self.cells = app.Table(
            self.name, partitions=settings.partitions, help=f"{self.name} cells", **table
        )
        self.timers = app.Table(
            f"{self.name}-timers",
            partitions=settings.partitions,
            help=f"{self.name} pending timers, ordered by due time",
            **table,
        )
        self.parked = app.Table(
            f"{self.name}-parked",
            partitions=settings.partitions,
            help=f"{self.name} parked cells and their waiting work",
            **table,
        )
        self._owned: dict[int, _Partition] = {}
        #: Changelog topic name of each table, by table name.
        self._changelogs: dict[str, str] = {}
        app.agent(self.input, name=f"stream_app.cells.{self.name}")(self._agent)
        if runtime.batch_input is not None:
            runtime.batch_input.register(self.topic_name, self._on_event)
        receiver: Any = self._on_assigned
        app.on_partitions_assigned.connect(receiver, weak=False)

    # -- partition bookkeeping -------------------------------------------------------------

    async def _on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == self.topic_name}
        now = _now_ms()
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

    async def sweep(self) -> None:
        """Send a wake record to each owned partition that has work waiting.

        Work waits when the partition has not booted yet, when its earliest timer is due, or
        when messages were injected for it. At most one wake is in flight per partition.
        """
        now, mono = _now_ms(), time.monotonic()
        for p, part in list(self._owned.items()):
            if part.wake_sent is not None and mono - part.wake_sent < WAKE_RESEND_S:
                continue
            due = part.next_due is not None and part.next_due <= now
            if part.needs_boot or due or part.injected:
                part.wake_sent = mono
                # The plain producer: a wake is a hint from the sweep, not an output of a
                # record, and never waits for a transaction.
                await self.runtime.app.producer.send(
                    self.topic_name, WAKE_KEY, b"", p, None, [(CONTROL_HEADER, b"wake")]
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

    # -- the agent -------------------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        """Faust's path for the input topic (``at_least_once`` with batched input off).

        When recovery completes, Faust resumes the input partitions before it seeks them to
        their committed offsets, so records fetched in between reach the agent twice. Within
        one consumer generation a record at or below the highest offset already handled on
        its partition is such a repeat: its writes are in the tables and its outputs sent, so
        it is acknowledged and not handled again.
        """
        app = self.runtime.app
        handled: dict[int, int] = {}
        generation: int | None = None
        async for event in stream.events():
            message = event.message
            if app.consumer_generation_id != generation:
                generation = app.consumer_generation_id
                handled.clear()
            last = handled.get(message.partition)
            if last is not None and message.offset <= last:
                continue
            await self._on_event(message)
            handled[message.partition] = message.offset

    async def _on_event(self, record: Any) -> None:
        partition = record.partition
        part = self._owned.get(partition)
        now = int(record.timestamp * 1000) if record.timestamp else _now_ms()
        if part is not None and part.needs_boot:
            await self._boot(partition, part, now)
        control = _header(record.headers, CONTROL_HEADER)
        if (
            control is None
            and part is not None
            and part.next_due is not None
            and part.next_due <= _now_ms()
        ):
            # Timers due on a busy partition fire with its traffic, without waiting for a wake.
            await self._fire_due(partition, part)
        if control is None:
            await self._on_record(record, now)
        elif control == b"wake":
            await self._on_wake(partition, part)
        elif control == b"release":
            await self._on_release(record)
        else:
            logger.warning("%s: ignoring unknown control record %r", self.name, control)

    async def _on_record(self, record: Any, now: int) -> None:
        """Deliver one input record to its cell (or to dead letters, or to the parked queue)."""
        runtime = self.runtime
        try:
            message = self.behaviour.message_types.decode(
                record.key, record.value, max_bytes=runtime.settings.max_message_bytes
            )
            if message.reply_to is not None:
                runtime.reply_target(message.reply_to)  # a reply address this app may use
        except InvalidMessageError as exc:
            logger.warning(
                "dead letter from %s[%s]@%s: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            await runtime.dead_letters.publish(record, exc, behaviour=self.name)
            return
        key: bytes = record.key
        home = partition_for(key, self.partitions)
        if home != record.partition:
            # Produced with another partitioner: this worker may not own the cell. Forward it to
            # the partition every other record of the cell goes to.
            runtime.metrics.misrouted += 1
            logger.warning(
                "%s: cell %r arrived on partition %s, belongs on %s; forwarding",
                self.name,
                message.cell_id,
                record.partition,
                home,
            )
            await self.runtime.produce(self.topic_name, key, record.value, home)
            return
        origin = f"{record.topic}/{record.partition}/{record.offset}"
        if self._is_parked(key):
            item = ParkedItem(
                kind="message", origin=origin, value=record.value.decode(), timestamp_ms=now
            )
            await self._park(key, item, None)
            return
        failure = await self._invoke(
            key, "message", now, origin, message=message, rejected_value=record.value
        )
        if failure is not None:
            item = ParkedItem(
                kind="message", origin=origin, value=record.value.decode(), timestamp_ms=now
            )
            await self._park(key, item, failure)

    # -- invocations -----------------------------------------------------------------------

    async def _invoke(
        self,
        key: bytes,
        trigger: Trigger,
        now: int,
        origin: str,
        *,
        message: CellMessage[Any] | None = None,
        timer: FiredTimer | None = None,
        retire: tuple[TimerEntry, TimerEntry | None] | None = None,
        rejected_value: bytes | None = None,
    ) -> tuple[BaseException, int] | None:
        """Run one callback on one cell and commit what it did.

        1. Read the cell's record; a fired timer (``retire``) is taken out of its pending
           timers, and its next occurrence put in, before the callback sees them.
        2. Call the callback with a fresh :class:`CellState`; on an exception, wait and try
           again from the same record, up to the behaviour's ``max_attempts``.
        3. :class:`RejectMessage` sends the message to dead letters and changes nothing.
        4. On success, write data, timers, outgoing messages and effects (:meth:`_commit`).

        Returns ``None`` when done (or rejected), else the last exception and the attempts, for
        the caller to park the work.
        """
        behaviour = self.behaviour
        raw = self._read(self.cells, key)
        record = CellRecord.decode(raw) if raw is not None else None
        timers = dict(record.timers) if record is not None else {}
        if retire is not None:
            timers = _retired(timers, retire)
        callback = {
            "message": behaviour.handle_message,
            "timeout": behaviour.on_timeout,
            "boot": behaviour.on_boot,
        }[trigger]
        cell_id = key.decode()
        attempts = behaviour.max_attempts
        last: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(behaviour.retry_backoff_s * 2 ** (attempt - 1))
            try:
                data = behaviour.load(record.version, record.data) if record is not None else None
                state: CellState[Any] = CellState(
                    app_id=self.runtime.settings.app_id,
                    behaviour=self.name,
                    cell_id=cell_id,
                    data=data,
                    trigger=trigger,
                    now_ms=now,
                    origin=origin,
                    timers=timers,
                    message=message,
                    timer=timer,
                )
                callback(state)
                encoded = self._encode(state)
            except RejectMessage as exc:
                logger.warning("%s/%s rejected %s: %s", self.name, cell_id, origin, exc)
                await self._dead_letter(
                    key, rejected_value, origin, reason=exc.reason, error=str(exc)
                )
                if message is not None and message.reply_to is not None and message.id:
                    await self.reply(
                        key,
                        message,
                        Reply(
                            correlation_id=message.id,
                            behaviour=self.name,
                            cell_id=cell_id,
                            ok=False,
                            reason=exc.reason,
                            error=str(exc),
                        ),
                    )
                if retire is not None:
                    await self._retire_only(key, retire)
                return None
            except Exception as exc:
                last = exc
                logger.warning(
                    "%s/%s: %s failed (attempt %d of %d): %r",
                    self.name,
                    cell_id,
                    trigger,
                    attempt + 1,
                    attempts,
                    exc,
                )
                continue
            await self._commit(key, raw, timers, state, encoded, retire)
            return None
        assert last is not None
        logger.error("%s/%s: parking after %d attempts: %r", self.name, cell_id, attempts, last)
        return last, attempts

    def _encode(self, state: CellState[Any]) -> bytes | None:
        """The new data as JSON; raises (inside the retry loop) if it is not the data model."""
        if state.data is None:
            return None
        if not isinstance(state.data, self.behaviour.data_model):
            raise TypeError(
                f"{self.name}: state.data must be a {self.behaviour.data_model.__name__} or "
                f"None, got {type(state.data).__name__}"
            )
        dumped: bytes = state.data.model_dump_json().encode()
        return dumped

    async def _commit(
        self,
        key: bytes,
        raw: bytes | None,
        timers: dict[str, int],
        state: CellState[Any],
        data: bytes | None,
        retire: tuple[TimerEntry, TimerEntry | None] | None,
    ) -> None:
        """Write what one successful callback did, as one unit of the partition's commit.

        1. The fired timer (if any) leaves the timers table; its next occurrence enters it
           unless the callback set or cancelled that name itself.
        2. A dead cell (``data is None``) loses its record (a tombstone) and all its timers.
        3. A live cell's timers are replaced or cancelled by name, then its record is written
           if it changed.
        4. Messages to other cells and effects are produced; Faust flushes them, with the
           changelog records of steps 1-3, before the input offset is committed.
        """
        cell_id = state.cell_id
        outputs = state._outputs
        if retire is not None:
            fired, successor = retire
            await self._write(self.timers, fired.key(), None)
            if successor is not None and successor.name not in outputs.timers:
                await self._put_timer(successor)
        if data is None:
            for name, due in timers.items():
                await self._write(
                    self.timers, TimerEntry(cell=cell_id, name=name, due=due).key(), None
                )
            if raw is not None:
                await self._write(self.cells, key, None)
        else:
            for name, entry in outputs.timers.items():
                old = timers.pop(name, None)
                if old is not None:
                    await self._write(
                        self.timers, TimerEntry(cell=cell_id, name=name, due=old).key(), None
                    )
                if entry is not None:
                    await self._put_timer(entry)
                    timers[name] = entry.due
            new = encode_record(self.behaviour.version, data, timers)
            if new != raw:
                await self._write(self.cells, key, new)
        for topic, value, partition in outputs.records:
            await self.runtime.produce(
                topic,
                key,
                value,
                partition_for(key, self.partitions) if partition is None else partition,
            )
        for outgoing in outputs.messages:
            await self.runtime.send(
                outgoing.behaviour, outgoing.cell_id, outgoing.type, outgoing.body, id=outgoing.id
            )
        for effect in outputs.effects:
            await self.runtime.produce(
                self.runtime.settings.effects_topic,
                key,
                effect.model_dump_json().encode(),
                partition_for(key, self.partitions),
            )
        self.runtime.metrics.effects_emitted += len(outputs.effects)

    async def reply(self, key: bytes, message: CellMessage[Any], reply: Reply) -> None:
        """Produce ``reply`` to the ``reply_to`` address of ``message`` (already validated),
        inside the partition's transaction under ``exactly_once``."""
        assert message.reply_to is not None
        topic, partition = self.runtime.reply_target(message.reply_to)
        await self.runtime.produce(topic, key, reply.model_dump_json().encode(), partition)

    async def _put_timer(self, entry: TimerEntry) -> None:
        await self._write(self.timers, entry.key(), entry.model_dump_json().encode())
        partition = _event_partition()
        part = self._owned.get(partition) if partition is not None else None
        if part is not None:
            if part.next_due is None or entry.due < part.next_due:
                part.next_due = entry.due
            part.low_due = min(part.low_due, entry.due)

    async def _retire_only(self, key: bytes, retire: tuple[TimerEntry, TimerEntry | None]) -> None:
        """Take a fired timer out without running a callback (skipped, rejected, parked, failed
        or dead cell): the timers table and the cell's record lose it, its successor enters."""
        fired, successor = retire
        await self._write(self.timers, fired.key(), None)
        raw = self._read(self.cells, key)
        if raw is None:
            return
        record = CellRecord.decode(raw)
        timers = _retired(record.timers, retire)
        if successor is not None:
            await self._put_timer(successor)
        if timers != record.timers:
            record.timers = timers
            await self._write(self.cells, key, record.encode())

    async def _dead_letter(
        self, key: bytes, value: bytes | None, origin: str, *, reason: str, error: str
    ) -> None:
        """Dead-letter work of this behaviour, its source taken from the work's origin."""
        topic, partition, offset = _split_origin(origin)
        await self.runtime.dead_letters.publish_record(
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

    def _is_parked(self, key: bytes) -> bool:
        part = self._owned.get(partition_for(key, self.partitions))
        if part is None or part.needs_boot:
            return self._read(self.parked, key) is not None
        return key in part.parked

    def _mark_parked(self, key: bytes, parked: bool) -> None:
        part = self._owned.get(partition_for(key, self.partitions))
        if part is not None:
            if parked:
                part.parked.add(key)
            else:
                part.parked.discard(key)

    async def _park(
        self, key: bytes, item: ParkedItem, failure: tuple[BaseException, int] | None
    ) -> None:
        raw = self._read(self.parked, key)
        if raw is not None:
            parked = ParkedCell.model_validate_json(raw)
            if any(held.origin == item.origin for held in parked.items):
                return  # the same record again (replayed after a crash): it already waits
            parked.items.append(item)
        else:
            assert failure is not None, "a cell is parked by a failure"
            exc, attempts = failure
            parked = ParkedCell(
                cell_id=key.decode(),
                error=f"{type(exc).__name__}: {exc}",
                attempts=attempts,
                since_ms=_now_ms(),
                items=[item],
            )
            self.runtime.metrics.parked += 1
        await self._write(self.parked, key, parked.model_dump_json().encode())
        self._mark_parked(key, True)

    async def _on_release(self, record: Any) -> None:
        """Replay a parked cell's work in order; park it again from the first item that fails.

        The control record's value may be ``{"skip": n}``: the first ``n`` items go to the
        dead-letter topic (reason ``discarded``) instead of being replayed.
        """
        key: bytes = record.key
        raw = self._read(self.parked, key)
        if raw is None:
            logger.info("%s: release of %r: not parked", self.name, key)
            return
        parked = ParkedCell.model_validate_json(raw)
        try:
            skip = int(json.loads(record.value or b"{}").get("skip", 0))
        except (ValueError, AttributeError, TypeError):
            skip = 0
        await self._write(self.parked, key, None)
        self._mark_parked(key, False)
        for item in parked.items[:skip]:
            await self._dead_letter(
                key,
                (item.value or json.dumps(item.model_dump(mode="json"))).encode(),
                item.origin,
                reason="discarded",
                error=f"discarded from parked cell (parked for: {parked.error})",
            )
        items = parked.items[skip:]
        logger.info("%s: releasing %r: replaying %d item(s)", self.name, key, len(items))
        for index, item in enumerate(items):
            failure = await self._replay(key, item)
            if failure is not None:
                exc, attempts = failure
                again = ParkedCell(
                    cell_id=parked.cell_id,
                    error=f"{type(exc).__name__}: {exc}",
                    attempts=attempts,
                    since_ms=_now_ms(),
                    items=items[index:],
                )
                await self._write(self.parked, key, again.model_dump_json().encode())
                self._mark_parked(key, True)
                return
        self.runtime.metrics.released += 1

    async def _replay(self, key: bytes, item: ParkedItem) -> tuple[BaseException, int] | None:
        if item.kind == "message":
            value = (item.value or "").encode()
            try:
                message = self.behaviour.message_types.decode(
                    key, value, max_bytes=self.runtime.settings.max_message_bytes
                )
            except InvalidMessageError as exc:
                await self._dead_letter(key, value, item.origin, reason=exc.reason, error=str(exc))
                return None
            return await self._invoke(
                key,
                "message",
                item.timestamp_ms,
                item.origin,
                message=message,
                rejected_value=value,
            )
        if item.kind == "timeout":
            timer = FiredTimer(**(item.timer or {}))
            return await self._invoke(key, "timeout", item.timestamp_ms, item.origin, timer=timer)
        return await self._invoke(key, "boot", item.timestamp_ms, item.origin)

    # -- boot, timers, injected messages ---------------------------------------------------

    def _db(self, table: Any, partition: int) -> Any:
        return table.data._db_for_partition(partition)

    async def _write(self, table: Any, key: bytes, value: bytes | None) -> None:
        """``table[key] = value`` (or delete, for ``None``) inside the agent, with less overhead.

        1. Write the event partition's RocksDB database directly (what Faust's store does).
        2. Produce the changelog record: with batched input, to its producer, which records
           the offsets in the databases when it commits; otherwise with Faust's producer,
           skipping Faust's per-record ``FutureMessage`` and send buffer (Faust's pre-commit
           flush waits for the producer, so the record is acknowledged before the input offset
           is committed).
        3. Without batched input, persist the record's offset in the database when it is
           acknowledged (as Faust does), so recovery replays the changelog only from there.

        With batched input under ``exactly_once`` the changelog record joins the transaction
        of the input partition. Outside an event it goes through the Faust table.
        """
        partition = batch_partition()
        batched = partition is not None
        app = self.runtime.app
        if partition is None:
            partition = _event_partition()
            if partition is None:
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
                return
        db = self._db(table, partition)
        if value is None:
            if db.get(key) is None:
                return
            db.delete(key)
        else:
            db.put(key, value)
        topic = self._changelogs.get(table.name)
        if topic is None:
            topic = self._changelogs[table.name] = table.changelog_topic.get_topic_name()
        if batched:
            assert self.runtime.batch_input is not None
            self.runtime.batch_input.changelog(table.data, topic, partition, key, value)
            return
        pending: Any = await app.producer.send(topic, key, value, partition, None, None)
        store = table.data

        def persisted(done: Any) -> None:
            if not done.cancelled() and done.exception() is None:
                store.set_persisted_offset(TP(topic, partition), done.result().offset)

        pending.add_done_callback(persisted)

    def _read(self, table: Any, key: bytes) -> bytes | None:
        """``table.get(key)`` inside the agent, straight from the event partition's database.

        Every key the agent reads lives on the partition of the event being processed (cells,
        their timers and parked work are co-partitioned, and misrouted records are forwarded
        first). Faust's ``Table.get`` asks RocksDB twice (contains, then get) through several
        layers; this is one lookup. Faust writes straight to RocksDB, so nothing newer is cached
        above it.
        """
        partition = _event_partition()
        if partition is None:
            value: bytes | None = table.get(key)
            return value
        found: bytes | None = self._db(table, partition).get(key)
        return found

    def _keys(self, table: Any, partition: int) -> Iterator[bytes]:
        """Keys of one partition of ``table``, from its RocksDB database, in key order."""
        # A RocksDB database (rocksdict), not a dict: keys() iterates it in key order.
        for key in self._db(table, partition).keys():  # noqa: SIM118
            if key != _FAUST_OFFSET_KEY:
                yield key

    async def _boot(self, partition: int, part: _Partition, now: int) -> None:
        """Call ``on_boot`` once for every live cell of a newly assigned partition.

        Runs inside the first event the agent takes from the partition after the assignment
        (Faust delivers none before the partition's tables are recovered), so every cell is
        booted before its next message. Parked cells are not booted.
        """
        part.needs_boot = False
        part.parked = set(self._keys(self.parked, partition))
        origin = f"boot/{partition}/{part.generation}"
        booted = 0
        for key in list(self._keys(self.cells, partition)):
            if key in part.parked:
                continue
            failure = await self._invoke(key, "boot", now, origin)
            booted += 1
            if failure is not None:
                await self._park(
                    key, ParkedItem(kind="boot", origin=origin, timestamp_ms=now), failure
                )
        part.next_due = self._scan(partition, part, 0, 0)[1]
        self.runtime.metrics.booted += booted
        logger.info("%s: partition %s booted %d live cell(s)", self.name, partition, booted)

    def _scan(
        self, partition: int, part: _Partition, now: int, limit: int
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        """Up to ``limit`` timers due at or before ``now``, oldest first, and the due time of
        the first one left (``None`` if none). Seeks to the partition's ``low_due``."""
        due: list[tuple[bytes, bytes]] = []
        it = self._db(self.timers, partition).iter()
        it.seek(struct.pack(">Q", part.low_due))
        while it.valid():
            key = it.key()
            decoded = decode_due_key(key)
            if decoded is None:
                return due, None
            if decoded[0] > now or len(due) >= limit:
                return due, decoded[0]
            due.append((key, it.value()))
            part.low_due = decoded[0]
            it.next()
        return due, None

    async def _fire_due(self, partition: int, part: _Partition) -> None:
        """Fire the partition's due timers, oldest first, at most :data:`FIRE_BATCH` of them.

        1. Scan from ``low_due`` to the first timer not due; note its due time as the next.
        2. Fire each (writes made while firing, such as recurring timers re-armed, lower the
           next due time and ``low_due`` through :meth:`_put_timer`).
        3. If the batch was full the next due time is in the past, so the sweep sends another
           wake at once and the rest fire then, with other records in between.
        """
        now = _now_ms()
        batch, next_due = self._scan(partition, part, now, FIRE_BATCH)
        part.next_due = next_due
        for key, raw in batch:
            await self._fire(partition, part, key, TimerEntry.model_validate_json(raw), now)

    async def _on_wake(self, partition: int, part: _Partition | None) -> None:
        """Fire the partition's due timers (oldest first), then its injected messages."""
        if part is None:
            return  # a wake for a partition this worker no longer owns
        part.wake_sent = None
        await self._fire_due(partition, part)
        now = _now_ms()
        while part.injected:
            cell_key, value = part.injected.popleft()
            await self._on_injected(cell_key, value, now)

    async def _fire(
        self, partition: int, part: _Partition, key: bytes, entry: TimerEntry, now: int
    ) -> None:
        plan = plan_firing(entry, now_ms=now, owned_since_ms=part.owned_since_ms)
        successor = (
            entry.model_copy(update={"due": plan.next_due}) if plan.next_due is not None else None
        )
        cell_key = entry.cell.encode()
        metrics = self.runtime.metrics
        if not plan.fire:
            metrics.timers_skipped += 1
            await self._retire_only(cell_key, (entry, successor))
            return
        for index, due in enumerate(plan.fire):
            timer = FiredTimer(
                name=entry.name,
                due_ms=due,
                payload=entry.payload,
                missed=plan.missed if index == len(plan.fire) - 1 else 0,
                recurring=successor is not None,
            )
            if index and not self._still_pending(cell_key, entry.name, successor):
                break  # the callback cancelled or replaced the timer it was catching up on
            origin = f"timer/{entry.name}/{due}"
            if due >= part.owned_since_ms:
                metrics.record_lag(now - due)
            metrics.timers_fired += 1
            retire = (entry, successor) if index == 0 else None
            parked = self._is_parked(cell_key)
            if parked or self._read(self.cells, cell_key) is None:
                if retire is not None:
                    await self._retire_only(cell_key, retire)
                if parked:
                    await self._park(cell_key, self._timeout_item(timer, origin, now), None)
                continue
            failure = await self._invoke(
                cell_key, "timeout", now, origin, timer=timer, retire=retire
            )
            if failure is not None:
                if retire is not None:
                    await self._retire_only(cell_key, retire)
                await self._park(cell_key, self._timeout_item(timer, origin, now), failure)

    def _still_pending(self, cell_key: bytes, name: str, successor: TimerEntry | None) -> bool:
        raw = self._read(self.cells, cell_key)
        if raw is None or successor is None:
            return False
        return CellRecord.decode(raw).timers.get(name) == successor.due

    @staticmethod
    def _timeout_item(timer: FiredTimer, origin: str, now: int) -> ParkedItem:
        return ParkedItem(
            kind="timeout",
            origin=origin,
            timer={
                "name": timer.name,
                "due_ms": timer.due_ms,
                "payload": timer.payload,
                "missed": timer.missed,
                "recurring": timer.recurring,
            },
            timestamp_ms=now,
        )

    async def _on_injected(self, key: bytes, value: bytes, now: int) -> None:
        try:
            message = self.behaviour.message_types.decode(
                key, value, max_bytes=self.runtime.settings.max_message_bytes
            )
        except InvalidMessageError as exc:
            logger.warning("%s: dropping injected message for %r: %s", self.name, key, exc)
            return
        origin = f"inject/{uuid.uuid4().hex}"
        if self._is_parked(key):
            item = ParkedItem(kind="message", origin=origin, value=value.decode(), timestamp_ms=now)
            await self._park(key, item, None)
            return
        failure = await self._invoke(
            key, "message", now, origin, message=message, rejected_value=value
        )
        if failure is not None:
            item = ParkedItem(kind="message", origin=origin, value=value.decode(), timestamp_ms=now)
            await self._park(key, item, failure)

    # -- inspection ------------------------------------------------------------------------

    def describe(self, cell_id: str) -> dict[str, Any]:
        """A cell as this worker holds it: data, version, pending timers and parked work."""
        key = cell_id.encode()
        raw = self.cells.get(key)
        record = CellRecord.decode(raw) if raw is not None else None
        timers = []
        for name, due in sorted((record.timers if record else {}).items(), key=lambda t: t[1]):
            stored = self.timers.get(TimerEntry(cell=cell_id, name=name, due=due).key())
            entry = TimerEntry.model_validate_json(stored) if stored is not None else None
            timers.append(
                {
                    "name": name,
                    "due_ms": due,
                    "every_ms": entry.every if entry else None,
                    "misfire": entry.misfire.value if entry else None,
                    "payload": entry.payload if entry else None,
                }
            )
        parked_raw = self.parked.get(key)
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
        return {
            key.decode(): CellRecord.decode(raw).data
            for key, raw in self.cells.items()
            if key != _FAUST_OFFSET_KEY
        }

    def local_parked(self) -> dict[str, Any]:
        """Every parked cell on this worker: ``cell_id -> {error, since_ms, waiting}``."""
        result: dict[str, Any] = {}
        for key, raw in self.parked.items():
            if key == _FAUST_OFFSET_KEY:
                continue
            parked = ParkedCell.model_validate_json(raw)
            result[key.decode()] = {
                "error": parked.error,
                "attempts": parked.attempts,
                "since_ms": parked.since_ms,
                "waiting": len(parked.items),
            }
        return result


def _retired(
    timers: dict[str, int], retire: tuple[TimerEntry, TimerEntry | None]
) -> dict[str, int]:
    """A cell's pending timers once a fired timer is retired: it leaves the map (unless the name
    was set again meanwhile), and its next occurrence, if any, enters it."""
    fired, successor = retire
    remaining = dict(timers)
    if remaining.get(fired.name) == fired.due:
        del remaining[fired.name]
    if successor is not None:
        remaining[successor.name] = successor.due
    return remaining


def _split_origin(origin: str) -> tuple[str, int, int]:
    """``(topic, partition, offset)`` of a record origin; ``(origin, -1, -1)`` for other work."""
    if origin.startswith(("boot/", "timer/", "inject/")):
        return origin, -1, -1
    topic, _, rest = origin.partition("/")
    partition, _, offset = rest.partition("/")
    if partition.lstrip("-").isdigit() and offset.lstrip("-").isdigit():
        return topic, int(partition), int(offset)
    return origin, -1, -1
