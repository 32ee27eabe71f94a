"""Drive the clock of an app's workers from a test: :class:`DrivenClock`.

Workers started with ``STREAM_APP_CLOCK=driven`` take their time from the app's clock topic
(``<app_id>.clock``; see :mod:`stream_app.kafka.clock`). A test writes the times there::

    clock = DrivenClock(bootstrap, app_id)
    clock.set(datetime(2027, 3, 27, 12, tzinfo=UTC))    # before starting the worker
    worker = start_worker("my_module", {**env, "STREAM_APP_CLOCK": "driven"})
    ...
    clock.advance(timedelta(days=2))                    # two days pass at once
    clock.wait_seen(worker)                             # the worker is there too

Each time is acknowledged by the broker before :meth:`DrivenClock.set` returns; a worker sees it
within a poll (0.1 s) and fires what it made due within a sweep (20 ms) after that.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from stream_app.kafka.clock import CLOCK_KEY, clock_topic_definition, clock_value, parse_clock_value
from stream_app.kafka.reading import read_to_end
from stream_app.kafka.topics import apply_changes, plan_changes

if TYPE_CHECKING:
    from stream_app.testing import WorkerProcess

__all__ = ["DrivenClock"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class DrivenClock:
    """Sets the time of the workers of app ``app_id`` that run ``STREAM_APP_CLOCK=driven``.

    For tests only. It creates the clock topic if it is missing (one partition, compacted, as
    the runtime declares it) and starts at the latest time the topic holds, or at the wall
    clock if it holds none, as a worker starting now would.

    Args:
        bootstrap: The broker's bootstrap servers.
        app_id: The app id of the workers (``STREAM_APP_APP_ID``).
        timeout: Longest a call waits for the broker (seconds).

    Attributes:
        topic: The clock topic, ``<app_id>.clock``.
        now_ms: The time last set (milliseconds since the epoch).
    """

    def __init__(self, bootstrap: str, app_id: str, *, timeout: float = 30.0) -> None:
        self.topic = f"{app_id}.clock"
        self._timeout = timeout
        admin = AdminClient({"bootstrap.servers": bootstrap})
        definition = clock_topic_definition(self.topic, replication_factor=1)
        apply_changes(admin, [c for c in plan_changes(admin, [definition]) if c.action == "create"])
        # A topic just created may not be in the broker's metadata yet for the reader below.
        from stream_app.testing import wait_for  # the package imports this module

        wait_for(
            lambda: _in_metadata(admin, self.topic),
            lambda found: found,
            timeout=timeout,
            what=f"the clock topic {self.topic} in the cluster's metadata",
        )
        times = [
            t
            for message in read_to_end(bootstrap, self.topic, timeout=timeout)
            if (t := parse_clock_value(message.value())) is not None
        ]
        self.now_ms = max(times, default=int(time.time() * 1000))
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True}
        )

    @property
    def now(self) -> datetime:
        """:attr:`now_ms` as an aware UTC datetime."""
        return _EPOCH + self.now_ms * _ONE_MS

    def set(self, now: int | datetime) -> int:
        """Set the workers' time to ``now`` (ms since the epoch, or an aware datetime); return
        it in ms once the broker has acknowledged it.

        Raises:
            ValueError: ``now`` is before :attr:`now_ms` (the clock never goes back), or a
                naive datetime.
            KafkaException: The broker did not acknowledge it.
        """
        now_ms = now if isinstance(now, int) else _datetime_ms(now)
        if now_ms < self.now_ms:
            raise ValueError(
                f"the driven clock never goes back: {now_ms} is before its time {self.now_ms}"
            )
        errors: list[Any] = []
        self._producer.produce(
            self.topic,
            key=CLOCK_KEY,
            value=clock_value(now_ms),
            on_delivery=lambda error, _message: errors.append(error),
        )
        if self._producer.flush(self._timeout) or errors != [None]:
            raise KafkaException(errors[0] if errors else "clock record not acknowledged")
        self.now_ms = now_ms
        return now_ms

    def advance(self, by: float | timedelta) -> int:
        """Move the workers' time forward by ``by`` (seconds, or a timedelta); return it in ms."""
        seconds = by.total_seconds() if isinstance(by, timedelta) else float(by)
        return self.set(self.now_ms + round(seconds * 1000))

    def wait_seen(self, worker: WorkerProcess, *, timeout: float = 30.0) -> None:
        """Wait until ``worker``'s clock (its metrics view) is at :attr:`now_ms` or later.

        Raises:
            ConditionTimeout: It did not get there within ``timeout`` seconds.
        """
        from stream_app.testing import wait_for  # the package imports this module

        wait_for(
            lambda: worker.get_json("/stream-app/metrics/").get("clock", {}).get("now_ms", -1),
            lambda seen: seen >= self.now_ms,
            timeout=timeout,
            what=f"worker {worker.pid} at driven time {self.now_ms}",
        )


def _in_metadata(admin: AdminClient, topic: str) -> bool:
    found = admin.list_topics(topic, timeout=10).topics.get(topic)
    return found is not None and found.error is None and bool(found.partitions)


def _datetime_ms(at: datetime) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at!r} is naive; give an aware datetime (e.g. UTC)")
    return (at - _EPOCH) // _ONE_MS
