"""Send messages to cells from any process, through Kafka (persistent).

:class:`CellClient` produces envelopes to ``<app_id>.<behaviour>.in`` keyed by the cell id, with
the murmur2 partitioner so every producer puts a cell's records on the same partition as the
workers expect, idempotence on, and ``acks=all``::

    with CellClient(settings) as client:
        client.send("counter", "cell-1", "increment", {"by": 2})
    # leaving the block flushes: every message is acknowledged by the broker

Producers in other languages need no library; the contract is:

- topic ``<app_id>.<behaviour>.in``;
- key: the cell id, UTF-8;
- value: ``{"type": "<message type>", "body": {...}, "id": "<optional id>"}`` (UTF-8 JSON,
  see the exported JSON Schemas);
- partitioner: murmur2 (the Java client's default; librdkafka: ``partitioner=murmur2_random``).
  A record on another partition is forwarded by the worker, at the cost of a hop and of
  ordering with the cell's other records.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

from pydantic import BaseModel

from stream_app.clients.flushing import flush
from stream_app.core.envelope import envelope_bytes
from stream_app.errors import StreamAppError
from stream_app.settings import Settings, get_settings

__all__ = ["CellClient"]


class CellClient:
    """A confluent-kafka producer of cell messages.

    Args:
        settings: Where the broker is and the app id; default: from the environment.
        config: Extra librdkafka producer settings, applied last.
    """

    def __init__(self, settings: Settings | None = None, *, config: dict[str, Any] | None = None):
        from confluent_kafka import Producer

        self.settings = settings or get_settings()
        self._errors: list[str] = []
        self._producer = Producer(
            {
                **self.settings.kafka_client_config(),
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                **(config or {}),
            }
        )

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()} key={msg.key()!r}: {err}")

    def send(
        self,
        behaviour: str,
        cell_id: str,
        type: str,
        body: dict[str, Any] | BaseModel | None = None,
        *,
        id: str | None = None,
        config: Any = None,
    ) -> None:
        """Queue a message for cell ``cell_id`` of ``behaviour`` (sent in the background).

        ``config`` is handed to the effect handlers of the effects the message causes.
        """
        self.produce_raw(
            self.settings.input_topic(behaviour),
            cell_id,
            envelope_bytes(type, body, id=id, config=config),
        )

    def release(self, behaviour: str, cell_id: str, *, skip: int = 0) -> None:
        """Ask the worker owning a parked cell to release it: its waiting work runs again, in
        order (the first ``skip`` items go to the dead-letter topic instead)."""
        self.produce_raw(
            self.settings.input_topic(behaviour),
            cell_id,
            json.dumps({"skip": skip}).encode(),
            headers=[("stream_app.control", b"release")],
        )

    def produce_raw(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        *,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """Queue one record as given, keyed (and partitioned) by ``key``."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    key=key.encode() if isinstance(key, str) else key,  # None: no key
                    value=value,
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued message is acknowledged.

        Raises:
            StreamAppError: Some were not delivered (the errors are listed), or time ran out.
        """
        left = flush(self._producer, timeout)
        if self._errors or left:
            errors, self._errors = self._errors, []
            detail = f": {'; '.join(errors[:5])}" if errors else ""
            raise StreamAppError(
                f"{len(errors)} message(s) failed, {left} still queued after {timeout:.0f}s"
                + detail
            )

    def __enter__(self) -> CellClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.flush()
