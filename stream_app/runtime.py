"""The runtime: behaviours, effect handlers and reactor handlers on one Faust app.

A worker module makes one :class:`Runtime` and registers what it runs::

    runtime = Runtime()                        # settings from STREAM_APP_* variables
    app = runtime.app                          # what `faust -A module worker` finds

    runtime.behaviour(counter)                 # cells: topic, tables, agent, timers
    runtime.workflows(jobs)                    # workflow runs as cells, their tasks on every worker
    runtime.atomic(bids)                       # atomic logs: one validated event at a time
    @runtime.effect_handler("email")           # effects emitted by cells
    async def send_email(effect): ...
    @runtime.handler("orders")                 # every record of a topic
    def audit(record): ...

At start, before the consumer joins the group, the runtime creates the topics it needs that do
not exist (inputs, effects, dead letters, handler topics) and refuses to start if an input topic
has another partition count than the settings (cells would not be co-partitioned). A periodic
sweep (every :data:`SWEEP_INTERVAL_S`, an app task) sends wake records to partitions whose timers
are due.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka.admin import AdminClient
from faust.types.enums import ProcessingGuarantee
from pydantic import BaseModel

from stream_app.api.atomic import AtomicLog
from stream_app.api.behaviour import Behaviour
from stream_app.api.entities import Entity
from stream_app.api.quests import QuestBehaviour
from stream_app.console import BehaviourInfo, Console, install_console
from stream_app.console.server import BehaviourKind
from stream_app.core.envelope import envelope_bytes
from stream_app.core.partitioner import partition_for
from stream_app.core.retry import RetryPolicy
from stream_app.engine.atomic_validation import ValidatorRunner
from stream_app.engine.cells import CellEngine, EngineSettings
from stream_app.engine.effects import EffectDispatcher, EffectHandler
from stream_app.engine.ports import Clock, RuntimeMetrics, SystemClock
from stream_app.engine.reactor import Reactor, ReactorHandler
from stream_app.engine.workflow_runs import TaskRunner, WorkflowBehaviour
from stream_app.errors import ConfigError
from stream_app.kafka.agents import feed_effects, feed_reactor
from stream_app.kafka.app import StreamApp, create_app
from stream_app.kafka.batch_input import BatchInput
from stream_app.kafka.cell_store import CellDeadLetters, CellTables, FaustWakes
from stream_app.kafka.clock import ClockFeed, clock_topic_definition
from stream_app.kafka.dead_letters import DeadLetterSink
from stream_app.kafka.topics import TopicChange, TopicDefinition, apply_changes
from stream_app.logs import rdkafka_logger
from stream_app.settings import Guarantee, Settings, get_settings, resolve_guarantee
from stream_app.web.health import install_health_views
from stream_app.web.prometheus import (
    BehaviourSample,
    InputCounters,
    MetricsSource,
    install_metrics,
)
from stream_app.web.views import (
    CellInspection,
    install_atomic_views,
    install_behaviour_views,
    install_entity_views,
    install_quest_views,
    install_views,
    install_workflow_views,
)

__all__ = ["Runtime"]

logger = logging.getLogger(__name__)

B = TypeVar("B", bound=Behaviour[Any])
F = TypeVar("F", bound=Callable[..., Any])
E = TypeVar("E", bound=Entity[Any])
Q = TypeVar("Q", bound=QuestBehaviour)
W = TypeVar("W", bound=WorkflowBehaviour)
L = TypeVar("L", bound=AtomicLog[Any, Any])

#: How often the sweep looks for due timers (seconds).
SWEEP_INTERVAL_S = 0.02


class Runtime:
    """Runs behaviours, effect handlers and reactor handlers in one Faust app.

    Args:
        settings: The settings; default: read from the environment.
        app: The Faust app; default: :func:`~stream_app.kafka.app.create_app` of the settings.
            One given must be made by ``create_app(settings)`` (possibly with Faust options):
            the runtime drives its consumer (:meth:`StreamApp.take_input_topics`).

    Attributes:
        app: The Faust app (``faust -A module worker`` finds it as ``module.app``).
        settings: The settings in use.
        dead_letters: The dead-letter sink (with counts by reason).
        metrics: This process's counters.
        batch_input: Reads the cell input topics in batches and runs their commits (and, under
            ``exactly_once``, their transactions).
        clock: Where the engines read the time: the wall clock, or under
            ``STREAM_APP_CLOCK=driven`` (tests only) the clock moved by ``<app_id>.clock``.
        clock_feed: What moves a driven clock (``None`` under the system clock).

    Raises:
        ConfigError: ``app`` is not a :class:`StreamApp` made by ``create_app(settings)``.
    """

    def __init__(self, settings: Settings | None = None, *, app: StreamApp | None = None) -> None:
        self.settings = settings or get_settings()
        self.app = _drivable(app, self.settings) if app is not None else create_app(self.settings)
        self.dead_letters = DeadLetterSink(self.app, self.settings)
        self.metrics = RuntimeMetrics()
        self.batch_input = BatchInput(self.settings, self.app)
        self._cell_dead_letters = CellDeadLetters(self.settings, self.dead_letters.counts)
        self._wakes = FaustWakes(self.app)
        self.clock_feed = ClockFeed(self.settings) if self.settings.clock == "driven" else None
        self.clock: Clock = self.clock_feed.clock if self.clock_feed else SystemClock()
        self._engine_settings = EngineSettings(
            app_id=self.settings.app_id,
            partitions=self.settings.partitions,
            max_message_bytes=self.settings.max_message_bytes,
            effects_topic=self.settings.effects_topic,
            replies_topic=self.settings.replies_topic,
            input_topic=self.settings.input_topic,
            cell_retry=self.settings.cell_retry,
        )
        self.engines: dict[str, CellEngine] = {}
        #: The Faust side of each behaviour's cells (topic, tables), by behaviour name.
        self.cell_tables: dict[str, CellTables] = {}
        self.entities: dict[str, Entity[Any]] = {}
        #: What each behaviour is (``cells``, ``entity``, ``quests``...), for the console.
        self.kinds: dict[str, BehaviourKind] = {}
        self.effects = EffectDispatcher(self.dead_letters, self.metrics)
        self.reactor = Reactor(self.dead_letters)
        #: Raw-bytes Faust topics the runtime sends to, by topic name.
        self._topics: dict[str, Any] = {}
        #: Topics the layers publish to (``CellState.publish``), created with the others.
        self.published_topics: dict[str, dict[str, str]] = {}
        self.app.before_start(self._ensure_topics)
        if self.clock_feed is not None:
            # After the topics exist, before the group is joined: see stream_app.kafka.clock.
            self.app.before_start(self.clock_feed.catch_up)
            self.app.task(self.clock_feed.follow)
        self.app.task(self._sweeping)
        install_views(self.app, _WorkerStatus(self))
        install_health_views(self.app)
        install_metrics(self.app, _WorkerMetrics(self))
        #: The operator console (``None`` when ``STREAM_APP_CONSOLE=false``).
        self.console: Console | None = None
        if self.settings.console:
            self.console = install_console(self.app, _ConsoleSource(self), self.settings)

    # -- registration ----------------------------------------------------------------------

    def behaviour(self, behaviour: B) -> B:
        """Run ``behaviour``'s cells on this app; returns it (usable as a decorator)."""
        if behaviour.name in self.engines:
            raise ValueError(f"behaviour {behaviour.name!r} is already registered")
        tables = CellTables(self.app, self.settings, behaviour.name, self.batch_input)
        engine = CellEngine(
            behaviour,
            self._engine_settings,
            cells=tables.cells,
            timers=tables.timers,
            parked=tables.parked,
            dead_letters=self._cell_dead_letters,
            wakes=self._wakes,
            metrics=self.metrics,
            clock=self.clock,
        )
        tables.follow_assignment(engine.assign)
        self.batch_input.register(engine.topic_name, engine.take)
        self.engines[behaviour.name] = engine
        self.cell_tables[behaviour.name] = tables
        self._topics[engine.topic_name] = tables.input
        self.kinds[behaviour.name] = "cells"
        install_behaviour_views(self.app, engine, tables.cells.table)
        return behaviour

    def entity(self, entity: E) -> E:
        """Run the event-sourced ``entity`` type on this app; returns it.

        Its messages, cached state and parking are those of the behaviour ``entity.name``; its
        events go to ``<app_id>.<name>.events`` (created with the app's other topics, retained
        and not compacted). See :mod:`stream_app.api.entities`.

        An entity needs fencing (:meth:`require_fencing`) unless it says
        ``Entity(..., fencing=False)``: under the default ``processing_guarantee=auto`` the
        runtime then runs ``exactly_once``.

        Raises:
            ConfigError: The entity needs fencing and the settings say ``at_least_once``.
        """
        if entity.fencing:
            self.require_fencing(
                f"entity {entity.name!r}",
                opt_out="declare Entity(..., fencing=False) to accept that a zombie may append",
            )
        entity.events_topic = self.settings.events_topic(entity.name)
        self.published_topics[entity.events_topic] = {
            "cleanup.policy": "delete",
            "retention.ms": "-1",
        }
        self.behaviour(entity.behaviour)
        self.entities[entity.name] = entity
        self.kinds[entity.name] = "entity"
        install_entity_views(
            self.app, entity, self.engines[entity.name], self.cell_tables[entity.name].cells.table
        )
        return entity

    @property
    def guarantee(self) -> Guarantee:
        """The guarantee this runtime's worker runs under (see :meth:`require_fencing`)."""
        return "exactly_once" if self.app.exactly_once else "at_least_once"

    def require_fencing(self, who: str, *, opt_out: str = "") -> None:
        """Run ``exactly_once``, because ``who`` needs fencing: a worker that lost a partition
        (a zombie, frozen past its session timeout) must not write for it once another owns it.

        Kafka transactions fence: the new owner of a partition initialises its transactional
        id, which aborts the zombie's transaction and makes its next commit fail. Called at
        registration (entities; any layer that keeps a log with one writer per key), before the
        app starts; under ``processing_guarantee=auto`` it switches the app to ``exactly_once``
        (:func:`~stream_app.settings.resolve_guarantee`).

        Args:
            who: What needs it, for the error message (``"entity 'counter'"``).
            opt_out: How ``who`` could do without, if it can, for the error message.

        Raises:
            ConfigError: The settings say ``at_least_once`` explicitly.
        """
        requested = self.settings.processing_guarantee
        if requested == "at_least_once":
            raise ConfigError(
                f"{who} needs fencing, which STREAM_APP_PROCESSING_GUARANTEE=at_least_once does "
                "not give (a worker that lost its partitions could still write): use "
                "exactly_once or auto (the default)" + (f", or {opt_out}" if opt_out else "")
            )
        self.app.exactly_once = resolve_guarantee(requested, fencing=True) == "exactly_once"

    def quests(self, behaviour: Q) -> Q:
        """Run the contexts of the quest behaviour ``behaviour``; returns it.

        Its contexts are its cells; the topics its actions publish to are created with the
        app's other topics (and partition count), and the quest views are installed
        (``/stream-app/quests/<name>/...``). See :mod:`stream_app.api.quests`.
        """
        for topic in behaviour.topics:
            self.published_topics[topic] = {"cleanup.policy": "delete"}
        self.behaviour(behaviour)
        self.kinds[behaviour.name] = "quests"
        install_quest_views(
            self.app, self.engines[behaviour.name], self.cell_tables[behaviour.name].cells.table
        )
        return behaviour

    def workflows(self, behaviour: W) -> W:
        """Run the workflow runs of ``behaviour`` and their tasks; returns it.

        Its runs are its cells. Its work topic ``<app_id>.<name>.tasks`` and the topic of
        ended runs ``<app_id>.<name>.done`` are created with the app's other topics; every
        worker runs its share of the tasks (a reactor handler of the work topic) and sends
        each result back to its run before the task's offset is committed; the run views are
        installed (``/stream-app/workflows/<name>/...``). See
        :mod:`stream_app.engine.workflow_runs`.
        """
        name = behaviour.name
        behaviour.bind(
            tasks_topic=self.settings.tasks_topic(name),
            done_topic=self.settings.done_topic(name),
        )
        self.published_topics[behaviour.done_topic] = {
            "cleanup.policy": "delete",
            "retention.ms": "604800000",
        }
        self.behaviour(behaviour)
        runner = TaskRunner(
            behaviour,
            self._cell_sender(self.settings.input_topic(name)),
            max_result_bytes=self.settings.max_message_bytes,
        )
        self.handler(behaviour.tasks_topic, name=f"workflow-tasks:{name}")(runner)
        self.kinds[name] = "workflows"
        install_workflow_views(self.app, self.engines[name], self.cell_tables[name].cells.table)
        return behaviour

    def atomic(self, log: L) -> L:
        """Run the scopes of the atomic log ``log`` (and its in-worker validator); returns it.

        Its scopes are its cells. Its validation topic ``<app_id>.<name>.validation`` and its
        event topic ``<app_id>.<name>.events`` (retained, not compacted) are created with the
        app's other topics; with an in-worker validator (:meth:`AtomicLog.validator
        <stream_app.api.atomic.AtomicLog.validator>`) every worker validates its share of the
        requests (a reactor handler) and sends each answer to its scope before the request's
        offset is committed; the scope views are installed (``/stream-app/atomic/<name>/...``).
        See :mod:`stream_app.api.atomic`.

        Raises:
            ConfigError: The settings say ``at_least_once``: an atomic log's strict consistency
                needs the transactions and fencing of ``exactly_once`` (which the default,
                ``auto``, turns on; see :meth:`require_fencing`).
        """
        self.require_fencing(f"atomic log {log.name!r}")
        name = log.name
        log.bind(
            input_topic=self.settings.input_topic(name),
            validation_topic=self.settings.validation_topic(name),
            events_topic=self.settings.events_topic(name),
        )
        self.published_topics[log.events_topic] = {"cleanup.policy": "delete", "retention.ms": "-1"}
        self.published_topics[log.validation_topic] = {
            "cleanup.policy": "delete",
            "retention.ms": "604800000",
        }
        self.behaviour(log)
        if log.validate_fn is not None and not log.inline:
            runner = ValidatorRunner(log, self._cell_sender(log.input_topic), self.dead_letters)
            self.handler(log.validation_topic, name=f"atomic-validator:{name}")(runner)
        self.kinds[name] = "atomic"
        install_atomic_views(self.app, self.engines[name], self.cell_tables[name].cells.table)
        return log

    def _cell_sender(self, input_topic: str) -> Callable[[str, bytes], Awaitable[None]]:
        """A function that sends an envelope to a cell of ``input_topic`` from a reactor
        handler: ``send(cell_id, envelope)``, keyed and partitioned as every producer does.

        It is not awaited to the broker's acknowledgement: the handled record's offset is
        committed after the producer is flushed (as for every reactor handler's output), and
        the worker takes its next record meanwhile.
        """

        async def send(cell_id: str, envelope: bytes) -> None:
            key = cell_id.encode()
            await self.produce(
                input_topic, key, envelope, partition_for(key, self.settings.partitions)
            )

        return send

    def effect_handler(self, kind: str, *, retry: RetryPolicy | None = None) -> Callable[[F], F]:
        """Decorator: handle effects of ``kind`` (see :mod:`stream_app.engine.effects`).

        Args:
            kind: The effect kind the function handles.
            retry: How a failing call is tried again before the effect is dead-lettered (its
                ``on_exhausted``, if given, must be ``dead_letter``). Default: the settings'
                ``handler_retry`` (5 tries, pauses from 0.2 s doubling up to 5 s, with jitter).
        """

        def register(fn: F) -> F:
            handler: EffectHandler = fn
            first = not self.effects.handlers
            self.effects.register(kind, handler, retry=retry or self.settings.handler_retry)
            if first:
                feed_effects(self.app, self.settings.effects_topic, self.effects.dispatch)
            return fn

        return register

    def handler(
        self, topic: str, *, name: str | None = None, retry: RetryPolicy | None = None
    ) -> Callable[[F], F]:
        """Decorator: call the function for every record of ``topic`` (a reactor handler).

        Args:
            topic: The topic whose records the function handles.
            name: The handler's name in logs and dead letters (default: its qualified name).
            retry: How a failing call is tried again before the record is dead-lettered for
                this handler (its ``on_exhausted``, if given, must be ``dead_letter``).
                Default: the settings' ``handler_retry``.
        """

        def register(fn: F) -> F:
            handler: ReactorHandler = fn
            first = topic not in self.reactor.handlers
            self.reactor.register(
                topic, handler, name=name, retry=retry or self.settings.handler_retry
            )
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
        """Send a message to a cell through Kafka, from inside the worker (persistent): from an
        effect or reactor handler, a web view, an ``app.timer``. It is a plain send (see
        :meth:`produce`); a cell sends with ``state.send``, which goes out with its commit.
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
        """Produce a record with Faust's producer, from Faust's agents (effect and reactor
        handlers, flushed before their input offset is committed) or outside any record.

        With ``acknowledged`` it returns only once the broker has acknowledged the record.
        (What a cell causes goes out with its commit instead, in the unit of work of its
        input partition: see :mod:`stream_app.engine.cells`.)
        """
        pending = await self.output_topic(topic).send(
            key=key, value=value, partition=partition, headers=headers
        )
        if acknowledged:
            await pending

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

    async def _sweeping(self) -> None:
        """Sweep every :data:`SWEEP_INTERVAL_S` until the app stops.

        A plain sleep rather than Faust's ``app.timer``: a timer's tick sleeps through
        ``Service.sleep`` (a task and a time-out per tick, and a cancellation at each wake) and
        measures its drift, several times the sweep's own cost at 50 ticks a second, idle or
        not. The app cancels the task when it stops, as it does its timers.
        """
        while not self.app.should_stop:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            await self._sweep()

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
        # A topic may be both read and written by the app (an atomic log's validation topic,
        # read by its in-worker validator): declared once, with the last (published) settings.
        definitions = [
            TopicDefinition(
                name=name,
                partitions=s.partitions,
                replication_factor=s.replication_factor,
                config={**s.durability_config, **config},
                source=Path("<runtime>"),
            )
            for name, config in dict(wanted).items()
        ]
        if self.clock_feed is not None:
            clock = clock_topic_definition(s.clock_topic, s.replication_factor)
            config = {**clock.config, **s.durability_config}
            definitions.append(dataclasses.replace(clock, config=config))
        return definitions

    async def _ensure_topics(self) -> None:
        await asyncio.to_thread(self.ensure_topics)

    def ensure_topics(self) -> None:
        """Create the missing topics of :meth:`topic_definitions`; check input partitions.

        Existing topics are not altered (``stream-app topics apply`` does that on purpose).

        Raises:
            ConfigError: An input topic exists with another partition count than the settings.
        """
        config: dict[str, Any] = {**self.settings.kafka_connection(), "logger": rdkafka_logger()}
        admin = AdminClient(config)
        definitions = self.topic_definitions()
        metadata = admin.list_topics(timeout=30)
        missing = [d for d in definitions if d.name not in metadata.topics]
        if missing:
            logger.info("creating topics: %s", ", ".join(d.name for d in missing))
            # Other workers of a new app may be creating the same topics right now.
            apply_changes(admin, [TopicChange(d, "create") for d in missing], exists_ok=True)
            metadata = admin.list_topics(timeout=30)
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
        # Faust need not declare these again (DeclaredOnceTopic).
        self.app.existing_topics.update(metadata.topics)
        self.app.existing_topics.update(d.name for d in missing)


def _drivable(app: StreamApp, settings: Settings) -> StreamApp:
    """``app`` if the runtime can drive it: a :class:`StreamApp` made by ``create_app(settings)``
    (the batched input takes its cell input topics off its consumer, and its guarantee and
    reading isolation are those of the settings).

    Raises:
        ConfigError: It is not.
    """
    if not isinstance(app, StreamApp):
        raise ConfigError(
            f"give the Runtime the app of stream_app.create_app(settings), not a "
            f"{type(app).__name__}: the runtime reads the cell input topics itself, through "
            "the StreamApp's consumer"
        )
    guarantee: Any = app.conf.processing_guarantee
    if guarantee != ProcessingGuarantee.AT_LEAST_ONCE:
        raise ConfigError(
            "give the Runtime an app made with processing_guarantee=at_least_once: stream_app "
            "makes exactly_once itself (Settings.processing_guarantee), not with Faust's "
            "transactions"
        )
    exactly_once = resolve_guarantee(settings.processing_guarantee, fencing=False) == (
        "exactly_once"
    )
    if app.exactly_once != exactly_once or app.conf.id != settings.app_id:
        raise ConfigError(
            f"the Runtime's app was not made by create_app(settings) for these settings (app "
            f"id {app.conf.id!r}, exactly_once={app.exactly_once}; the settings say "
            f"{settings.app_id!r}, {settings.processing_guarantee})"
        )
    return app


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
            "effect_retries": m.effect_retries,
            "parked": m.parked,
            "released": m.released,
            "booted": m.booted,
            "misrouted": m.misrouted,
            **({"clock": feed.describe()} if (feed := self._runtime.clock_feed) else {}),
        }

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters published by this process, by reason."""
        return dict(self._runtime.dead_letters.counts)

    def batch_input_stats(self) -> dict[str, Any]:
        """The batched input's counters (records, batches, commits, partitions read)."""
        return self._runtime.batch_input.stats()


class _ConsoleSource:
    """What the console reads of a runtime (:class:`~stream_app.console.ConsoleSource`)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def behaviours(self) -> Mapping[str, BehaviourInfo]:
        """Every registered behaviour, by name, in registration order."""
        runtime = self._runtime
        return {
            name: BehaviourInfo(
                name=name,
                kind=runtime.kinds[name],
                input_topic=engine.topic_name,
                message_types=engine.behaviour.message_types,
                events_topic=runtime.settings.events_topic(name)
                if runtime.kinds[name] in ("entity", "atomic")
                else None,
            )
            for name, engine in runtime.engines.items()
        }

    def metrics_source(self, *, count_timers: bool = True) -> MetricsSource:
        """What the Prometheus collector reads of this runtime; without ``count_timers`` the
        pending timers read as 0 (counting them scans the timers tables)."""
        return _WorkerMetrics(self._runtime, count_timers=count_timers)

    def guarantee(self) -> str:
        """The guarantee the worker runs under."""
        return self._runtime.guarantee


class _WorkerMetrics:
    """What the Prometheus view reads of a runtime
    (:class:`~stream_app.web.prometheus.MetricsSource`); without ``count_timers`` the pending
    timers read as 0 (the console's samples, which need only the counters)."""

    def __init__(self, runtime: Runtime, *, count_timers: bool = True) -> None:
        self._runtime = runtime
        self._count_timers = count_timers

    @property
    def metrics(self) -> RuntimeMetrics:
        """The engines' counters."""
        return self._runtime.metrics

    @property
    def batch_input(self) -> InputCounters:
        """The batched input."""
        return self._runtime.batch_input

    def dead_letter_counts(self) -> Mapping[str, int]:
        """Dead letters published by this process, by reason."""
        return self._runtime.dead_letters.counts

    def behaviours(self) -> list[BehaviourSample]:
        """Each behaviour's parked cells, pending timers and earliest due time here."""
        samples = []
        for name, engine in self._runtime.engines.items():
            timers = self._runtime.cell_tables[name].timers
            due = [ms for ms in engine.next_due().values() if ms is not None]
            samples.append(
                BehaviourSample(
                    name=name,
                    topic=engine.topic_name,
                    control_records=engine.control_records,
                    parked_cells=engine.parked_cells(),
                    timers_pending=sum(timers.count(p) for p in engine.owned_partitions)
                    if self._count_timers
                    else 0,
                    next_due_ms=min(due, default=None),
                )
            )
        return samples

    def faust_counts(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        """Records received and sent through Faust, by topic (Faust's monitor)."""
        monitor: Any = self._runtime.app.monitor
        return monitor.messages_received_by_topic, monitor.messages_sent_by_topic

    def restore_progress(self) -> list[tuple[str, int, int, int]]:
        """The changelog partitions restored here that this worker still holds (active or
        standby), with records restored and remaining."""
        assignor: Any = self._runtime.app.assignor
        held = assignor.assigned_actives() | assignor.assigned_standbys()
        return [
            noted
            for noted in self._runtime.app.restore_progress.partitions()
            if (noted[0], noted[1]) in held
        ]

    def now_ms(self) -> int:
        """The engines' clock."""
        return self._runtime.clock.now_ms()
