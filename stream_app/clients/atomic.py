"""Clients of atomic logs: ``store_if_valid``, ``query_events``, ``subscribe``, and a remote
validator loop.

::

    with AtomicClient(bids, settings) as client:             # bids: the AtomicLog
        result = client.store_if_valid(Bid(lot="lot-1", bidder="ann", amount=120))
        if not result.was_accepted:
            print(result.reason, result.meta)
        events = client.query_events("lot-1")                 # every accepted event, in order
        for record in client.subscribe("lot-1"):              # accepted events as they come
            print(record.seq, record.event)

- :meth:`AtomicClient.store_if_valid` sends a ``store`` message to the scope's cell with a
  request id (the message id: give your own to make a retry idempotent while the first is
  pending) and a reply address, and waits for the :class:`~stream_app.core.atomic.
  AtomicResult` (a rejection is a result like an acceptance). It rides on the request/reply
  machinery of :class:`~stream_app.clients.entities.EntityClient`: the result is the reply's
  ``state``, written in the transaction that decides the request.
- :meth:`AtomicClient.query_events` reads the scope's partition of ``<app_id>.<log>.events``
  from its beginning to its end (``read_committed``): the full log, whether or not the log
  declares a fold, and without a worker.
- :meth:`AtomicClient.subscribe` yields the scope's accepted events from a sequence number on
  (the whole log by default), then each new one as it is committed.
- :func:`serve_validator` is a remote validator in a few lines: it reads the validation topic
  and produces each answer to the log's input.

The client needs the log's definition (its name, event model and scope function) to derive the
scope from the event, as Atomic Store's ``StoreIfValid(event)`` did; anything with those three
(:class:`AtomicLogDefinition`) will do, e.g. the worker module's ``AtomicLog``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Protocol

from pydantic import BaseModel

from stream_app.clients.entities import EntityClient
from stream_app.core.atomic import (
    AtomicEventRecord,
    AtomicResult,
    StoreRequest,
    ValidationRequest,
    ValidationResponse,
    response_envelope,
)
from stream_app.core.partitioner import partition_for
from stream_app.errors import ReplyTimeoutError, StreamAppError
from stream_app.settings import Settings, get_settings

__all__ = [
    "AsyncAtomicClient",
    "AtomicClient",
    "AtomicLogDefinition",
    "serve_validator",
]


class AtomicLogDefinition(Protocol):
    """What a client reads of an atomic log (a :class:`~stream_app.api.atomic.AtomicLog`)."""

    @property
    def name(self) -> str:
        """The log's name."""
        ...

    @property
    def event_model(self) -> type[BaseModel]:
        """The pydantic model of its events."""
        ...

    def scope_of(self, event: Any) -> str:
        """The scope of ``event``."""
        ...


class AtomicClient:
    """A blocking client of one atomic log; safe to share between threads.

    Args:
        log: The log's definition (the ``AtomicLog`` of the worker module).
        settings: Where the broker is and the app id; default: from the environment.
        timeout: Default seconds :meth:`store_if_valid` waits for its result.
        options: Passed to the underlying :class:`~stream_app.clients.entities.EntityClient`
            (``reply_partition``, ``config``).

    Call :meth:`close` (or use ``with``).
    """

    def __init__(
        self,
        log: AtomicLogDefinition,
        settings: Settings | None = None,
        *,
        timeout: float = 30.0,
        **options: Any,
    ) -> None:
        self.log = log
        self.settings = settings or get_settings()
        self.timeout = timeout
        self._requests = EntityClient(self.settings, timeout=timeout, **options)

    @property
    def events_topic(self) -> str:
        """``<app_id>.<log>.events``."""
        return self.settings.events_topic(self.log.name)

    def scope(self, event: BaseModel | dict[str, Any]) -> str:
        """The scope of ``event`` (validated by the log's event model first)."""
        model = self.log.event_model
        typed = event if isinstance(event, model) else model.model_validate(_json(event))
        return self.log.scope_of(typed)

    def store_if_valid(
        self,
        event: BaseModel | dict[str, Any],
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> AtomicResult:
        """Ask for ``event`` to be stored in its scope's log; return the decision.

        Raises:
            pydantic.ValidationError: ``event`` fails the log's event model (nothing is sent).
            RequestRejectedError: The worker refused the message (dead-lettered: e.g. the
                worker's model refused the event).
            ReplyTimeoutError: No result within ``timeout`` seconds. The request is durable
                and will still be decided: query the log, or store again with the same
                ``request_id`` while it is pending.
        """
        body = StoreRequest(event=_json(event))
        reply = self._requests.request(
            (self.log.name, self.scope(event)),
            "store",
            body,
            timeout=timeout,
            message_id=request_id or uuid.uuid4().hex,
        )
        return AtomicResult.model_validate(reply.state)

    def records(self, scope: str, *, timeout: float = 30.0) -> list[AtomicEventRecord]:
        """Every committed event record of ``scope``, in order (``seq`` 1, 2, ...)."""
        return list(self._read(scope, from_seq=1, follow=False, timeout=timeout))

    def query_events(self, scope: str, *, timeout: float = 30.0) -> list[Any]:
        """The events of ``scope``'s log, oldest first, typed by the log's event model."""
        model = self.log.event_model
        return [
            model.model_validate(record.event) for record in self.records(scope, timeout=timeout)
        ]

    def subscribe(
        self,
        scope: str,
        *,
        from_seq: int = 1,
        idle_timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[AtomicEventRecord]:
        """Yield ``scope``'s accepted events from sequence number ``from_seq`` on, as they are
        committed; it ends after ``idle_timeout`` seconds without one (``None``: never), or
        when ``stop()`` is true."""
        return self._read(scope, from_seq=from_seq, follow=True, timeout=idle_timeout, stop=stop)

    def _read(
        self,
        scope: str,
        *,
        from_seq: int,
        follow: bool,
        timeout: float | None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[AtomicEventRecord]:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        key = scope.encode()
        tp = TopicPartition(
            self.events_topic, partition_for(key, self.settings.partitions), OFFSET_BEGINNING
        )
        consumer = Consumer(
            {
                **self.settings.kafka_client_config(),
                "group.id": f"{self.settings.app_id}.atomic-reader",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 50,
            }
        )
        try:
            _low, end = consumer.get_watermark_offsets(tp, timeout=30, cached=False)
            consumer.assign([tp])
            last = time.monotonic()
            while stop is None or not stop():
                if not follow and _position(consumer, tp) >= end:
                    return
                message = consumer.poll(0.1)
                if message is None or message.error() is not None:
                    if timeout is not None and time.monotonic() - last > timeout:
                        if follow:
                            return
                        raise ReplyTimeoutError(
                            f"{self.events_topic}[{tp.partition}]: not read to offset {end} "
                            f"within {timeout:g}s"
                        )
                    continue
                last = time.monotonic()
                if message.key() != key:
                    continue
                record = AtomicEventRecord.model_validate_json(message.value() or b"")
                if record.seq >= from_seq:
                    yield record
        except Exception as exc:
            if isinstance(exc, StreamAppError):
                raise
            if type(exc).__name__ == "KafkaException":
                raise StreamAppError(f"cannot read {self.events_topic}: {exc}") from exc
            raise
        finally:
            consumer.close()

    def close(self) -> None:
        """Stop the reply reader and let the producer go."""
        self._requests.close()

    def __enter__(self) -> AtomicClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncAtomicClient:
    """:class:`AtomicClient` for asyncio: the same calls, as coroutines (run in threads, so
    many ``store_if_valid`` calls may wait at once)."""

    def __init__(
        self, log: AtomicLogDefinition, settings: Settings | None = None, **options: Any
    ) -> None:
        self.client = AtomicClient(log, settings, **options)

    async def store_if_valid(
        self,
        event: BaseModel | dict[str, Any],
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> AtomicResult:
        """See :meth:`AtomicClient.store_if_valid`."""
        return await asyncio.to_thread(
            self.client.store_if_valid, event, request_id=request_id, timeout=timeout
        )

    async def query_events(self, scope: str) -> list[Any]:
        """See :meth:`AtomicClient.query_events`."""
        return await asyncio.to_thread(self.client.query_events, scope)

    async def close(self) -> None:
        """See :meth:`AtomicClient.close`."""
        await asyncio.to_thread(self.client.close)

    async def __aenter__(self) -> AsyncAtomicClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


#: A remote validator's decision function: the request in, the answer out.
Decide = Callable[[ValidationRequest], ValidationResponse]


def serve_validator(
    log: str,
    decide: Decide,
    settings: Settings | None = None,
    *,
    group_id: str | None = None,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Be the remote validator of the atomic log ``log``: read its validation requests and
    produce each answer to the log's input; return how many were answered when ``stop()``.

    The consumer group (``group_id``, default ``<app_id>.<log>.validator``) spreads the
    requests over the processes that serve; offsets are committed after the answers are
    acknowledged, so a crash answers some requests again (the log ignores the repeats).
    """
    from confluent_kafka import Consumer, Producer

    s = settings or get_settings()
    consumer = Consumer(
        {
            **s.kafka_client_config(),
            "group.id": group_id or f"{s.app_id}.{log}.validator",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 20,
        }
    )
    producer = Producer({**s.kafka_client_config(), "enable.idempotence": True, "linger.ms": 2})
    answered = 0
    consumer.subscribe([s.validation_topic(log)])
    try:
        while stop is None or not stop():
            messages = consumer.consume(num_messages=500, timeout=0.1)
            batch = [m for m in messages if m.error() is None]
            for message in batch:
                request = ValidationRequest.model_validate_json(message.value() or b"")
                response = decide(request)
                key = request.scope.encode()
                producer.produce(
                    s.input_topic(log),
                    key=key,
                    value=response_envelope(response),
                    partition=partition_for(key, s.partitions),
                )
                answered += 1
            if batch:
                producer.flush(30)
                consumer.commit(asynchronous=False)
    finally:
        producer.flush(30)
        consumer.close()
    return answered


def _json(event: BaseModel | dict[str, Any]) -> dict[str, Any]:
    if isinstance(event, BaseModel):
        dumped: dict[str, Any] = event.model_dump(mode="json")
        return dumped
    return dict(event)


def _position(consumer: Any, tp: Any) -> int:
    (position,) = consumer.position([tp])
    offset: int = position.offset
    return offset if offset >= 0 else 0
