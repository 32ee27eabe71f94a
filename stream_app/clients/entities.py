"""Clients of event-sourced entities: ``tell``, request/reply ``send``, and ``query``.

A reference is ``(type, id)``: the entity type (its behaviour) and the entity id, a string
(UUIDs are recommended, not required)::

    with EntityClient(settings) as client:
        client.tell(("account", "alice"), "open")            # returns once the message is durable
        state = client.send(("account", "alice"), "deposit", {"amount": 50})   # the new state
        balance = client.send(("account", "alice"), "deposit", {"amount": 5}, project="balance")
        current = client.query(("account", "alice"))         # {"seq": ..., "state": ...}

    async with AsyncEntityClient(settings) as client:
        state = await client.send(("account", "alice"), "withdraw", {"amount": 20})

How ``send`` gets its answer: the client reads one partition of ``<app_id>.replies`` (chosen at
random unless given), from its end at the time the client starts, with ``read_committed``. Each
message carries ``reply_to = "<app_id>.replies:<partition>"`` and a fresh ``id``; the worker
that handles it produces a :class:`~stream_app.core.replies.Reply` there with that id as the
correlation id, together with the message's events (in the same transaction under
``exactly_once``). Replies for other clients sharing the partition, and second replies to a
message replayed after a crash, are ignored. No reply within the timeout raises
:class:`~stream_app.errors.ReplyTimeoutError`; a rejected message raises
:class:`~stream_app.errors.RequestRejectedError`.

``query`` asks a worker's HTTP view (``GET /stream-app/entities/<type>/<id>/``); any worker
answers, routing the question to the one that owns the entity.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from pydantic import BaseModel

from stream_app.clients.flushing import flush
from stream_app.core.envelope import envelope_bytes
from stream_app.core.replies import Reply, reply_address
from stream_app.errors import ReplyTimeoutError, RequestRejectedError, StreamAppError
from stream_app.settings import Settings, get_settings

__all__ = ["AsyncEntityClient", "EntityClient", "Ref"]

#: An entity reference: ``(type, id)``.
Ref = tuple[str, str]

Body = dict[str, Any] | BaseModel | None


class EntityClient:
    """A blocking client of the app's entities; safe to share between threads.

    Args:
        settings: Where the broker is and the app id; default: from the environment.
        web_url: A worker's web address, for :meth:`query` (default: the settings' web host
            and port).
        reply_partition: The partition of ``<app_id>.replies`` this client reads (default:
            one at random, so clients spread over the partitions).
        timeout: Default seconds :meth:`send` waits for its reply.
        config: Extra librdkafka producer settings, applied last.

    Call :meth:`close` (or use ``with``) to stop its background thread.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        web_url: str | None = None,
        reply_partition: int | None = None,
        timeout: float = 30.0,
        config: dict[str, Any] | None = None,
    ) -> None:
        from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

        self.settings = settings or get_settings()
        self.timeout = timeout
        self.web_url = web_url
        s = self.settings
        self.reply_partition = (
            random.randrange(s.partitions) if reply_partition is None else reply_partition
        )
        self.reply_to = reply_address(s.replies_topic, self.reply_partition)
        self._producer = Producer(
            {
                **s.kafka_client_config(),
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                **(config or {}),
            }
        )
        self._consumer = Consumer(
            {
                **s.kafka_client_config(),
                # Required by librdkafka; the consumer is assigned, never joins, never commits.
                "group.id": f"{s.app_id}.reply-client",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        tp = TopicPartition(s.replies_topic, self.reply_partition)
        try:
            # From the end as it is now: every reply to a message sent after this is read.
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=30, cached=False)
        except Exception as exc:  # KafkaException: no such topic yet, broker unreachable
            try:
                # Serves the error callback: a refused connection raises KafkaAuthError.
                self._consumer.poll(0)
            finally:
                self._consumer.close()
            raise StreamAppError(
                f"cannot read {s.replies_topic} partition {self.reply_partition}: {exc} "
                "(is a worker of this app running? it creates the topic)"
            ) from exc
        self._consumer.assign(
            [TopicPartition(tp.topic, tp.partition, high if high >= 0 else OFFSET_END)]
        )
        self._lock = threading.Lock()
        self._waiting: dict[str, Future[Reply]] = {}
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream_app.replies", daemon=True)
        self._thread.start()

    # -- sending ---------------------------------------------------------------------------

    def tell(
        self,
        ref: Ref,
        type: str,
        body: Body = None,
        *,
        id: str | None = None,
        config: Any = None,
        timeout: float | None = None,
    ) -> str:
        """Send a message and return its id once the broker has acknowledged it (durable).

        Raises:
            StreamAppError: The broker refused it or did not acknowledge it in time.
        """
        future = self.tell_future(ref, type, body, id=id, config=config)
        try:
            return future.result(timeout if timeout is not None else self.timeout)
        except TimeoutError:
            raise StreamAppError(f"{ref}: no acknowledgement in time") from None

    def tell_future(
        self, ref: Ref, type: str, body: Body = None, *, id: str | None = None, config: Any = None
    ) -> Future[str]:
        """Send a message; the future gives its id when the broker has acknowledged it."""
        ident = id or uuid.uuid4().hex
        return self._produce(ref, envelope_bytes(type, body, id=ident, config=config), ident)

    def send(
        self,
        ref: Ref,
        type: str,
        body: Body = None,
        *,
        project: str | None = None,
        config: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a message, wait until it is handled, and return the entity's new state (JSON),
        or the projection named by ``project``.

        Raises:
            ReplyTimeoutError: No reply within ``timeout`` seconds.
            RequestRejectedError: The entity rejected the message (it is dead-lettered).
        """
        return self.request(ref, type, body, project=project, config=config, timeout=timeout).state

    def request(
        self,
        ref: Ref,
        type: str,
        body: Body = None,
        *,
        project: str | None = None,
        config: Any = None,
        timeout: float | None = None,
        message_id: str | None = None,
    ) -> Reply:
        """Like :meth:`send`, returning the whole :class:`Reply` (state, ``seq``, ``events``);
        ``message_id`` as for :meth:`request_future`."""
        wait = timeout if timeout is not None else self.timeout
        future = self.request_future(
            ref, type, body, project=project, config=config, message_id=message_id
        )
        try:
            reply = future.result(wait)
        except TimeoutError:
            raise self._gave_up(future, ref, type, wait) from None
        return _checked(reply, ref, type)

    def _gave_up(
        self, future: Future[Reply], ref: Ref, type: str, wait: float
    ) -> ReplyTimeoutError:
        """Stop waiting for ``future``'s reply; the error to raise for it."""
        self.forget(future.correlation_id)  # type: ignore[attr-defined]
        return ReplyTimeoutError(
            f"no reply from {ref[0]}/{ref[1]} to {type!r} within {wait:g}s "
            f"(reading {self.reply_to})"
        )

    def request_future(
        self,
        ref: Ref,
        type: str,
        body: Body = None,
        *,
        project: str | None = None,
        config: Any = None,
        message_id: str | None = None,
    ) -> Future[Reply]:
        """Send a message; the future gives its :class:`Reply` (unchecked: ``ok`` may be false).

        ``message_id`` is the message's id and the reply's correlation id (default: a fresh
        UUID); a caller that gives one must not have two requests with it in flight.
        A caller that stops waiting should :meth:`forget` the future's correlation id,
        available as ``future.correlation_id``.
        """
        ident = message_id or uuid.uuid4().hex
        replied: Future[Reply] = Future()
        replied.correlation_id = ident  # type: ignore[attr-defined]
        with self._lock:
            self._waiting[ident] = replied
        value = envelope_bytes(
            type, body, id=ident, reply_to=self.reply_to, project=project, config=config
        )
        delivered = self._produce(ref, value, ident)

        def on_delivered(done: Future[str]) -> None:
            error = done.exception()
            if error is not None:
                self.forget(ident)
                if not replied.done():
                    replied.set_exception(error)

        delivered.add_done_callback(on_delivered)
        return replied

    def forget(self, correlation_id: str) -> None:
        """Stop waiting for the reply to ``correlation_id`` (a late reply is then ignored)."""
        with self._lock:
            self._waiting.pop(correlation_id, None)

    def _produce(self, ref: Ref, value: bytes, ident: str) -> Future[str]:
        kind, entity_id = ref
        delivered: Future[str] = Future()

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                delivered.set_exception(StreamAppError(f"{kind}/{entity_id}: not delivered: {err}"))
            else:
                delivered.set_result(ident)

        topic = self.settings.input_topic(kind)
        while True:
            try:
                self._producer.produce(
                    topic, key=entity_id.encode(), value=value, on_delivery=on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        return delivered

    # -- queries ---------------------------------------------------------------------------

    def query(self, ref: Ref, *, timeout: float = 10.0) -> dict[str, Any]:
        """The entity's current state, from the worker that owns it.

        Returns ``{"entity", "id", "seq", "state", "parked"}``: ``seq`` is the sequence number
        of its last event (0 and the ``init()`` state when it has none).

        Raises:
            StreamAppError: No worker answered, or it answered with an error.
        """
        kind, entity_id = ref
        base = self.web_url or self.settings.web_url
        path = (
            f"/stream-app/entities/{urllib.parse.quote(kind, safe='')}/"
            f"{urllib.parse.quote(entity_id, safe='')}/"
        )
        url = base.rstrip("/") + path
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            raise StreamAppError(
                f"{url}: the worker answered {exc.code}: {exc.read()[:300]!r}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StreamAppError(f"cannot query {url}: {getattr(exc, 'reason', exc)}") from None

    # -- the reply reader ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0)
            # Wait for one reply, then take the others already fetched: ``consume`` with a
            # time-out would hold the first reply until 500 came or the time-out passed.
            first = self._consumer.poll(0.02)
            if first is None:
                continue
            for record in [first, *self._consumer.consume(num_messages=499, timeout=0)]:
                value = record.value()
                if record.error() is not None or value is None:
                    continue
                try:
                    reply = Reply.model_validate_json(value)
                except ValueError:
                    continue  # not a reply: nothing of ours
                with self._lock:
                    waiting = self._waiting.pop(reply.correlation_id, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(reply)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every message sent so far is acknowledged.

        Raises:
            StreamAppError: Some are still unacknowledged after ``timeout`` seconds.
        """
        left = flush(self._producer, timeout)
        if left:
            raise StreamAppError(f"{left} message(s) still unacknowledged after {timeout:g}s")

    def close(self) -> None:
        """Flush, stop the reply reader and close the Kafka clients."""
        if self._closed.is_set():
            return
        try:
            self.flush()
        finally:
            self._closed.set()
            self._thread.join(timeout=10)
            self._consumer.close()
            with self._lock:
                waiting, self._waiting = self._waiting, {}
            for future in waiting.values():
                if not future.done():
                    future.set_exception(StreamAppError("client closed"))

    def __enter__(self) -> EntityClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncEntityClient:
    """The asyncio twin of :class:`EntityClient` (same arguments); its calls are coroutines.

    Many ``send`` and ``tell`` calls may be awaited concurrently; they share one producer and
    one reply reader.
    """

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self._client = EntityClient(settings, **options)
        self.settings = self._client.settings

    async def tell(
        self, ref: Ref, type: str, body: Body = None, *, id: str | None = None, config: Any = None
    ) -> str:
        """Send a message; return its id once the broker has acknowledged it (durable)."""
        return await asyncio.wrap_future(
            self._client.tell_future(ref, type, body, id=id, config=config)
        )

    async def send(
        self,
        ref: Ref,
        type: str,
        body: Body = None,
        *,
        project: str | None = None,
        config: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a message and return the new state or projection (see :meth:`EntityClient.send`)."""
        reply = await self.request(ref, type, body, project=project, config=config, timeout=timeout)
        return reply.state

    async def request(
        self,
        ref: Ref,
        type: str,
        body: Body = None,
        *,
        project: str | None = None,
        config: Any = None,
        timeout: float | None = None,
    ) -> Reply:
        """Send a message and return its whole :class:`Reply`.

        Raises:
            ReplyTimeoutError: No reply within ``timeout`` seconds.
            RequestRejectedError: The entity rejected the message.
        """
        wait = timeout if timeout is not None else self._client.timeout
        future = self._client.request_future(ref, type, body, project=project, config=config)
        try:
            reply = await asyncio.wait_for(asyncio.wrap_future(future), wait)
        except TimeoutError:
            raise self._client._gave_up(future, ref, type, wait) from None
        return _checked(reply, ref, type)

    async def query(self, ref: Ref, *, timeout: float = 10.0) -> dict[str, Any]:
        """The entity's current state (see :meth:`EntityClient.query`)."""
        return await asyncio.to_thread(self._client.query, ref, timeout=timeout)

    async def close(self) -> None:
        """Flush and close (see :meth:`EntityClient.close`)."""
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncEntityClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _checked(reply: Reply, ref: Ref, type: str) -> Reply:
    if not reply.ok:
        raise RequestRejectedError(
            f"{ref[0]}/{ref[1]} rejected {type!r}: {reply.error}", reason=reply.reason or "rejected"
        )
    return reply
