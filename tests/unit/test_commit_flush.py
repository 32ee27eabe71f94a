"""The flush before an offset commit drains Faust's send buffer for real."""

from __future__ import annotations

import asyncio

import pytest

from stream_app.errors import FlushTimeoutError
from stream_app.kafka.app import StreamApp, create_app
from stream_app.kafka.faust_patches import SendCounts, drain_send_buffer
from stream_app.settings import Settings


class SlowBuffer:
    """A send buffer whose sender hands one message to the client every ``interval`` seconds."""

    def __init__(self, size: int, interval: float) -> None:
        self.size, self.interval = size, interval
        self.state = "running"
        self.message_sent = asyncio.Event()
        self.counts = SendCounts(queued=size)

    def put(self) -> None:
        self.size += 1
        self.counts.queued += 1

    async def sender(self) -> None:
        while self.size:
            await asyncio.sleep(self.interval)
            self.size -= 1
            self.counts.sent += 1
            self.message_sent.set()


def test_drain_waits_through_gaps_longer_than_faust_gives_up_after() -> None:
    async def scenario() -> int:
        buffer = SlowBuffer(size=3, interval=0.25)  # slower than Faust's 100 ms give-up
        sender = asyncio.create_task(buffer.sender())
        await drain_send_buffer(buffer, buffer.counts, timeout=10)
        await sender
        return buffer.size

    assert asyncio.run(scenario()) == 0


def test_drain_waits_only_for_what_was_queued_before_it() -> None:
    """Records of later events keep arriving while the commit flushes; they must not hold it."""

    async def scenario() -> tuple[int, int]:
        buffer = SlowBuffer(size=3, interval=0.05)
        sender = asyncio.create_task(buffer.sender())

        async def busy_agent() -> None:
            for _ in range(200):
                buffer.put()
                await asyncio.sleep(0.01)

        agent = asyncio.create_task(busy_agent())
        await drain_send_buffer(buffer, buffer.counts, timeout=5)
        sent_at_return = buffer.counts.sent
        agent.cancel()
        sender.cancel()
        return sent_at_return, buffer.counts.queued

    sent, queued = asyncio.run(scenario())
    assert sent >= 3, "everything queued before the flush has left"
    assert queued > sent, "the flush returned while later records were still queued"


def test_faust_flush_returns_with_messages_still_queued() -> None:
    """Why stream_app replaces the flush: Faust's gives up after 100 ms without progress."""
    from faust.transport.producer import ProducerBuffer

    async def scenario() -> int:
        buffer = SlowBuffer(size=3, interval=0.25)
        sender = asyncio.create_task(buffer.sender())
        await ProducerBuffer.flush_atmost(buffer, None)  # type: ignore[arg-type]
        left = buffer.size
        await sender
        return left

    assert asyncio.run(scenario()) > 0


def test_drain_refuses_when_the_deadline_passes() -> None:
    async def scenario() -> None:
        buffer = SlowBuffer(size=2, interval=60)
        await drain_send_buffer(buffer, buffer.counts, timeout=0.3)

    with pytest.raises(FlushTimeoutError, match="2 message"):
        asyncio.run(scenario())


def test_drain_refuses_when_the_buffer_stopped_with_messages() -> None:
    buffer = SlowBuffer(size=1, interval=60)
    buffer.state = "stopping"
    with pytest.raises(FlushTimeoutError, match="'stopping' with 1"):
        asyncio.run(drain_send_buffer(buffer, buffer.counts, timeout=5))


def test_apps_flush_with_the_draining_flush() -> None:
    app = create_app(Settings(app_id="flush-check", bootstrap_servers="127.0.0.1:9"))
    assert isinstance(app, StreamApp)
    flush = app.producer.buffer.flush
    assert flush.__qualname__.startswith("send_buffer_that_drains.")
