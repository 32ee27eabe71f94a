"""librdkafka's queue IO event on a confluent-kafka consumer (:mod:`stream_app.kafka.queue_wake`).

No broker: a consumer made for an address nobody answers still has its librdkafka handle and
its consumer queue. These fail if the installed confluent-kafka no longer lets the batched input
be woken by librdkafka (then it would fall back to polling in a thread, slower at low rates).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from confluent_kafka import Consumer

from stream_app.kafka import queue_wake as queue_wake_module
from stream_app.kafka.queue_wake import QueueWake


def _consumer() -> Consumer:
    return Consumer(
        {"bootstrap.servers": "127.0.0.1:9", "group.id": "queue-wake-test", "log_level": 0}
    )


def _closed(fd: int, inode: int) -> bool:
    """Whether descriptor ``fd`` no longer refers to the file ``inode`` (closed, or reused)."""
    try:
        return os.fstat(fd).st_ino != inode
    except OSError:
        return True


def test_the_installed_confluent_kafka_exposes_its_librdkafka_handle() -> None:
    lib = queue_wake_module._librdkafka()
    assert lib is not None
    consumer = _consumer()
    try:
        assert queue_wake_module._handle_of(consumer, lib) is not None
    finally:
        consumer.close()


def test_attach_and_detach_leave_no_descriptor_open() -> None:
    async def scenario() -> None:
        consumer = _consumer()
        wake = QueueWake.attach(consumer, asyncio.get_running_loop(), lambda: None)
        assert wake is not None
        pipe = [(fd, os.fstat(fd).st_ino) for fd in (wake._read_fd, wake._write_fd)]
        wake.detach()
        wake.detach()  # a second detach does nothing
        assert all(_closed(fd, inode) for fd, inode in pipe)
        consumer.close()

    asyncio.run(scenario())


def test_a_byte_on_the_pipe_calls_on_ready_on_the_loop() -> None:
    """What librdkafka writes when the queue gets its first element reaches ``on_ready``."""

    async def scenario() -> int:
        consumer = _consumer()
        calls: list[int] = []
        ready = asyncio.Event()

        def on_ready() -> None:
            calls.append(1)
            ready.set()

        wake = QueueWake.attach(consumer, asyncio.get_running_loop(), on_ready)
        assert wake is not None
        os.write(wake._write_fd, b"1")
        await asyncio.wait_for(ready.wait(), 10)
        wake.detach()
        consumer.close()
        return len(calls)

    assert asyncio.run(scenario()) == 1


def test_anything_but_a_confluent_kafka_consumer_is_not_attached() -> None:
    """A stand-in consumer (the unit tests' fakes) is never read as a librdkafka handle."""

    async def scenario() -> Any:
        return QueueWake.attach(object(), asyncio.get_running_loop(), lambda: None)

    assert asyncio.run(scenario()) is None
