"""The runtime: behaviours, effect handlers and reactor handlers on one Faust app.

A worker module makes one :class:`Runtime` and registers what it runs::

    runtime = Runtime()                        # settings from STREAM_APP_* variables
    app = runtime.app                          # what `faust -A module worker` finds

    runtime.behaviour(counter)                 # cells: topic, tables, agent, timers
    @runtime.effect_handler("email")           # effects emitted by cells
    async def send_email(effect): ...
    @runtime.handler("orders")                 # every record of a topic
    def audit(record): ...

At start, before the consumer joins the group, the runtime creates the topics it needs that do
not exist (inputs, effects, dead letters, handler topics) and refuses to start if an input topic
has another partition count than the settings (cells would not be co-partitioned). A periodic
sweep (``app.timer``) sends wake records to partitions whose timers are due.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka.admin import AdminClient
from faust.types.enums import ProcessingGuarantee
from pydantic import BaseModel

from stream_app.api.behaviour import Behaviour
from stream_app.api.entities import Entity
from stream_app.core.envelope import envelope_bytes
from stream_app.core.partitioner import partition_for
from stream_app.core.replies import parse_reply_to
from stream_app.core.retry import RetryPolicy
from stream_app.engine.cells import CellEngine
from stream_app.engine.effects import EffectDispatcher, EffectHandler
from stream_app.engine.reactor import Reactor, ReactorHandler
from stream_app.engine.retrying import HANDLER_RETRY
from stream_app.errors import ConfigError, SchemaViolationError
from stream_app.kafka.agents import feed_effects, feed_reactor
from stream_app.kafka.app import StreamApp, create_app
from stream_app.kafka.batch_input import BatchInput, batch_partition
from stream_app.kafka.dead_letters import DeadLetterSink
from stream_app.kafka.topics import TopicChange, TopicDefinition, apply_changes
from stream_app.settings import Settings, get_settings
from stream_app.web.views import (
    CellInspection,
    install_behaviour_views,
    install_entity_views,
    install_views,
)

__all__ = ["Runtime", "RuntimeMetrics"]

logger = logging.getLogger(__name__)

B = TypeVar("B", bound=Behaviour[Any])
F = TypeVar("F", bound=Callable[..., Any])
E = TypeVar("E", bound=Entity[Any])

#: How often the sweep looks for due timers (seconds).
SWEEP_INTERVAL_S = 0.02
_LAG_SAMPLES = 200_000


@dataclass
class RuntimeMetrics:
    """Counters of one worker process, served at ``/stream-app/metrics/``.

    Attributes:
        timers_fired: Timer occurrences delivered to ``on_timeout``.
        timers_skipped: Due timers retired without firing (misfire policy ``skip``).
        effects_emitted: Effects produced by cells.
        effects_done: Effects whose handler succeeded.
        effect_failures: Failed effect handler attempts.
        parked: Cells parked by this worker.
        released: Parked cells released and fully replayed.
        booted: ``on_boot`` calls.
        misrouted: Records forwarded because they arrived on another partition than murmur2's.
        lags_ms: Recent timer firing lags (ms after the due time), for percentiles.
    """

    timers_fired: int = 0
    timers_skipped: int = 0
    effects_emitted: int = 0
    effects_done: int = 0
    effect_failures: int = 0
    parked: int = 0
    released: int = 0
    booted: int = 0
    misrouted: int = 0
    lags_ms: deque[int] = field(default_factory=lambda: deque(maxlen=_LAG_SAMPLES))

    def record_lag(self, lag_ms: int) -> None:
        """Note how late a timer fired."""
        self.lags_ms.append(max(0, lag_ms))

    def lag_percentiles(self) -> dict[str, float | None]:
        """p50, p99 and max of the recorded firing lags (``None`` when there are none)."""
        if not self.lags_ms:
            return {"p50": None, "p99": None, "max": None, "count": 0}
        ordered = sorted(self.lags_ms)

        def pick(q: float) -> float:
            return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])

        return {
            "p50": pick(0.5),
            "p99": pick(0.99),
            "max": float(ordered[-1]),
            "count": len(ordered),
        }


class Runtime:
    """Runs behaviours, effect handlers and reactor handlers in one Faust app.

    Args:
        settings: The settings; default: read from the environment.
        app: The Faust app; default: :func:`~stream_app.kafka.app.create_app` of the settings.

    Attributes:
        app: The Faust app (``faust -A module worker`` finds it as ``module.app``).
        settings: The settings in use.
        dead_letters: The dead-letter sink (with counts by reason).
        metrics: This process's counters.
    """

    def __init__(self, settings: Settings | None = None, *, app: StreamApp | None = None) -> None:
        self.settings = settings or get_settings()
        self.app = app or create_app(self.settings)
        self.dead_letters = DeadLetterSink(self.app, self.settings)
        self.metrics = RuntimeMetrics()
        guarantee: Any = self.app.conf.processing_guarantee
        if guarantee != ProcessingGuarantee.AT_LEAST_ONCE:
            raise ConfigError(
                "give the Runtime an app made with processing_guarantee=at_least_once: stream_app "
                "makes exactly_once itself (Settings.processing_guarantee), not with Faust's "
                "transactions"
            )
        exactly_once = self.settings.processing_guarantee == "exactly_once"
        #: Reads the cell input topics in batches: always under ``exactly_once`` (whose
        #: transactions it runs), under ``at_least_once`` when ``batch_input`` is on.
        #: (Settings refuse exactly_once with batch_input off.)
        self.batch_input: BatchInput | None = None
        made_for_settings = (
            isinstance(self.app, StreamApp) and self.app.exactly_once == exactly_once
        )
        if exactly_once and not made_for_settings:
            raise ConfigError(
                "exactly_once needs the app of create_app(settings) (a StreamApp that "
                "reads read_committed and rebuilds tables after an unclean stop)"
            )
        if self.settings.batch_input and made_for_settings:
            self.batch_input = BatchInput(self)
            self.dead_letters.alongside = self._dead_letter_alongside
        self.engines: dict[str, CellEngine] = {}
        self.entities: dict[str, Entity[Any]] = {}
        self.effects = EffectDispatcher(self.dead_letters, self.metrics)
        self.reactor = Reactor(self.dead_letters)
        #: Raw-bytes Faust topics the runtime sends to, by topic name.
        self._topics: dict[str, Any] = {}
        #: Topics the layers publish to (``CellState.publish``), created with the others.
        self.published_topics: dict[str, dict[str, str]] = {}
        self.app.before_start(self._ensure_topics)
        self.app.timer(SWEEP_INTERVAL_S, name="stream_app.sweep")(self._sweep)
        install_views(self.app, _WorkerStatus(self))

    # -- registration ----------------------------------------------------------------------

    def behaviour(self, behaviour: B) -> B:
        """Run ``behaviour``'s cells on this app; returns it (usable as a decorator)."""
        if behaviour.name in self.engines:
            raise ValueError(f"behaviour {behaviour.name!r} is already registered")
        engine = CellEngine(self, behaviour)
        self.engines[behaviour.name] = engine
        self._topics[engine.topic_name] = engine.input
        install_behaviour_views(self.app, engine)
        return behaviour

    def entity(self, entity: E) -> E:
        """Run the event-sourced ``entity`` type on this app; returns it.

        Its messages, cached state and parking are those of the behaviour ``entity.name``; its
        events go to ``<app_id>.<name>.events`` (created with the app's other topics, retained
        and not compacted). See :mod:`stream_app.api.entities`.
        """
        entity.events_topic = self.settings.events_topic(entity.name)
        self.published_topics[entity.events_topic] = {
            "cleanup.policy": "delete",
            "retention.ms": "-1",
        }
        self.behaviour(entity.behaviour)
        self.entities[entity.name] = entity
        install_entity_views(self.app, entity, self.engines[entity.name])
        return entity

    def effect_handler(self, kind: str, *, retry: RetryPolicy = HANDLER_RETRY) -> Callable[[F], F]:
        """Decorator: handle effects of ``kind`` (see :mod:`stream_app.engine.effects`).

        Args:
            kind: The effect kind the function handles.
            retry: How a failing call is tried again; it must end in a dead letter
                (``on_exhausted=Exhausted.DEAD_LETTER``). Default
                :data:`~stream_app.engine.retrying.HANDLER_RETRY`: 5 tries, pauses from
                0.2 s doubling up to 5 s, with jitter.
        """

        def register(fn: F) -> F:
            handler: EffectHandler = fn
            first = not self.effects.handlers
            self.effects.register(kind, handler, retry=retry)
            if first:
                feed_effects(self.app, self.settings.effects_topic, self.effects.dispatch)
            return fn

        return register

    def handler(
        self, topic: str, *, name: str | None = None, retry: RetryPolicy = HANDLER_RETRY
    ) -> Callable[[F], F]:
        """Decorator: call the function for every record of ``topic`` (a reactor handler).

        Args:
            topic: The topic whose records the function handles.
            name: The handler's name in logs and dead letters (default: its qualified name).
            retry: How a failing call is tried again; it must end in a dead letter
                (``on_exhausted=Exhausted.DEAD_LETTER``). Default
                :data:`~stream_app.engine.retrying.HANDLER_RETRY`.
        """

        def register(fn: F) -> F:
            handler: ReactorHandler = fn
            first = topic not in self.reactor.handlers
            self.reactor.register(topic, handler, name=name, retry=retry)
            if first:
                feed_reactor(self.app, topic, self.reactor.deliver)
            return fn

        return register

    # -- sending ---------------------------------------------------------------------------

    def output_topic(self, name: str) -> Any:
        """The Faust topic (raw bytes) named ``name``, for sending from the worker: a cell
        input (``Runtime.send``) or a topic a cell publishes to (``CellState.publish``)."""
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = self.app.topic(
                name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
            )
        return topic

    async def send(
        self,
        behaviour: str,
        cell_id: str,
        type: str,
        body: dict[str, Any] | BaseModel | None = None,
        *,
        id: str | None = None,
    ) -> None:
        """Send a message to a cell through Kafka, from inside the worker (persistent).

        While a record is processed the message is one of its outputs (see :meth:`produce`):
        under ``exactly_once`` it joins the transaction of the processed record's partition,
        whichever partition the target cell is on, and the target sees it only once that
        transaction commits. Elsewhere (an effect handler, a web view) it is a plain send.
        """
        key = cell_id.encode()
        await self.produce(
            self.settings.input_topic(behaviour),
            key,
            envelope_bytes(type, body, id=id),
            partition_for(key, self.settings.partitions),
        )

    async def produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        partition: int,
        *,
        headers: list[tuple[str, bytes]] | None = None,
        acknowledged: bool = False,
    ) -> None:
        """Produce one output of the record being handled (an event, a reply, an effect, a
        message to a cell), or, outside one, a plain send.

        While the batched input processes a record it goes out with that record's changelog
        records: under ``exactly_once`` in the transaction of the record's partition, the one
        that commits its offset; under ``at_least_once`` acknowledged before the offset is
        committed. On Faust's path (``batch_input`` off, and in Faust's agents: effect and
        reactor handlers) it is a plain send, flushed before the input offset is committed;
        with ``acknowledged``, a plain send returns only once the broker has acknowledged it.
        """
        if self.batch_input is not None and batch_partition() is not None:
            self.batch_input.produce(
                topic, key, value, partition, list(headers) if headers else None
            )
            return
        pending = await self.output_topic(topic).send(
            key=key, value=value, partition=partition, headers=headers
        )
        if acknowledged:
            await pending

    def _dead_letter_alongside(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> bool:
        """Produce a dead letter with the outputs of the record being processed (in its
        transaction under ``exactly_once``); ``False`` when no record is being processed."""
        partition = batch_partition()
        if self.batch_input is None or partition is None:
            return False
        self.batch_input.produce(topic, key, value, partition, list(headers))
        return True

    def reply_target(self, reply_to: str) -> tuple[str, int]:
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
        if topic != self.settings.replies_topic or partition >= self.settings.partitions:
            raise SchemaViolationError(
                f"reply_to {reply_to!r} is not a partition of {self.settings.replies_topic} "
                f"(0..{self.settings.partitions - 1})"
            )
        return topic, partition

    def inject(
        self, behaviour: str, cell_id: str, type: str, body: dict[str, Any] | None = None
    ) -> bool:
        """Hand a message to a cell of this worker without going through Kafka.

        **No delivery guarantee**: the message lives only in this process's memory until the
        cell's partition next wakes (within one sweep interval and a round trip). It is lost
        if the worker stops first, and dropped (returning ``False``) when this worker does not
        own the cell's partition. It is validated like any message; an invalid one is logged
        and dropped, not dead-lettered. Use :meth:`send` when the message must arrive, and
        :meth:`inject_record` to give a record to reactor handlers (through Kafka).
        """
        engine = self.engines.get(behaviour)
        if engine is None:
            raise ValueError(f"no behaviour {behaviour!r} on this runtime")
        return engine.inject(cell_id, envelope_bytes(type, body))

    async def inject_record(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Give a record to the reactor handlers of ``topic``, through Kafka, from inside the
        worker (a reactor or effect handler, an ``app.timer``, a web view).

        The record is produced to ``topic``, to the partition its ``key`` hashes to (murmur2
        over ``STREAM_APP_PARTITIONS``, as :func:`~stream_app.testing.keyed_producer` places
        it), and reaches the handlers like any record of the topic, on whichever worker owns
        that partition: at least once, resumed after a crash from the last committed offset.
        The call returns once the broker has acknowledged the record, so it survives a crash
        that follows; called from a handler, it is in Kafka before that handler's own record
        can be committed. (From a cell callback, use ``state.publish(topic, value)``: it goes
        out with the cell's new data.)

        Raises:
            ValueError: No reactor handler of this runtime reads ``topic``.
        """
        if topic not in self.reactor.handlers:
            raise ValueError(f"no reactor handler reads {topic!r} on this runtime")
        partition = partition_for(key, self.settings.partitions)
        await self.produce(topic, key, value, partition, headers=headers, acknowledged=True)

    # -- lifecycle -------------------------------------------------------------------------

    async def _sweep(self) -> None:
        for engine in self.engines.values():
            await engine.sweep()

    def topic_definitions(self) -> list[TopicDefinition]:
        """The topics this runtime needs, as ``topics apply`` would declare them.

        The tables' changelog topics are among them: created before the consumer joins, they
        are part of the first partition assignment (Faust would create them during start-up,
        and a first rebalance that misses one leaves its table unable to write).
        """
        s = self.settings
        week = {"cleanup.policy": "delete", "retention.ms": "604800000"}
        compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
        wanted: list[tuple[str, dict[str, str]]] = []
        for name in sorted(self.engines):
            wanted.append((s.input_topic(name), week))
            wanted.extend(
                (s.changelog_topic(table), compacted)
                for table in (name, f"{name}-timers", f"{name}-parked")
            )
        wanted.append((s.effects_topic, week))
        # Replies to request/reply clients matter only while a client waits for them.
        wanted.append((s.replies_topic, {"cleanup.policy": "delete", "retention.ms": "3600000"}))
        wanted.append(
            (
                s.dead_letter_topic,
                {
                    "cleanup.policy": "delete",
                    "retention.ms": "2592000000",
                    "max.message.bytes": str(s.dead_letter_max_bytes + 1_048_576),
                },
            )
        )
        wanted.extend((topic, {"cleanup.policy": "delete"}) for topic in self.reactor.topics)
        wanted.extend(sorted(self.published_topics.items()))
        return [
            TopicDefinition(
                name=name,
                partitions=s.partitions,
                replication_factor=s.replication_factor,
                config=dict(config),
                source=Path("<runtime>"),
            )
            for name, config in wanted
        ]

    async def _ensure_topics(self) -> None:
        await asyncio.to_thread(self.ensure_topics)

    def ensure_topics(self) -> None:
        """Create the missing topics of :meth:`topic_definitions`; check input partitions.

        Existing topics are not altered (``stream-app topics apply`` does that on purpose).

        Raises:
            ConfigError: An input topic exists with another partition count than the settings.
        """
        admin = AdminClient({"bootstrap.servers": self.settings.bootstrap_servers})
        definitions = self.topic_definitions()
        metadata = admin.list_topics(timeout=30)
        missing = [d for d in definitions if d.name not in metadata.topics]
        inputs = {self.settings.input_topic(name) for name in self.engines} | {
            self.settings.changelog_topic(table)
            for name in self.engines
            for table in (name, f"{name}-timers", f"{name}-parked")
        }
        wrong = [
            f"{d.name} has {len(metadata.topics[d.name].partitions)} partitions, settings say "
            f"{d.partitions}"
            for d in definitions
            if d.name in inputs and d.name in metadata.topics
            if len(metadata.topics[d.name].partitions) != d.partitions
        ]
        if wrong:
            raise ConfigError(
                "input and changelog topics must have STREAM_APP_PARTITIONS partitions so that "
                "cells, their tables and timers are co-partitioned: " + "; ".join(wrong)
            )
        if missing:
            logger.info("creating topics: %s", ", ".join(d.name for d in missing))
            apply_changes(admin, [TopicChange(d, "create") for d in missing])


class _WorkerStatus:
    """What the web views read of a runtime (:class:`~stream_app.web.views.WorkerStatus`)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def engines(self) -> Mapping[str, CellInspection]:
        """The cells engines, by behaviour name."""
        return self._runtime.engines

    def counters(self) -> dict[str, Any]:
        """This process's counters, in the order the metrics view has always listed them."""
        m = self._runtime.metrics
        return {
            "timers_fired": m.timers_fired,
            "timers_skipped": m.timers_skipped,
            "timer_lag_ms": m.lag_percentiles(),
            "effects_emitted": m.effects_emitted,
            "effects_done": m.effects_done,
            "effect_failures": m.effect_failures,
            "parked": m.parked,
            "released": m.released,
            "booted": m.booted,
            "misrouted": m.misrouted,
        }

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters published by this process, by reason."""
        return dict(self._runtime.dead_letters.counts)

    def batch_input_stats(self) -> dict[str, Any] | None:
        """The batched input's counters, ``None`` without it."""
        batch_input = self._runtime.batch_input
        return batch_input.stats() if batch_input is not None else None
