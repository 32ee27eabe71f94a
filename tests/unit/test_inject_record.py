"""Unit tests of Runtime.inject_record: which partition, the broker's acknowledgement awaited.

The runtime is a real one (its Faust app is never started); only the topic it sends to is a
stand-in that records the send and hands back an acknowledgement the test controls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from stream_app import ReactorRecord, Runtime
from stream_app.core.partitioner import partition_for
from stream_app.settings import Settings

TOPIC = "unit.work"


@dataclass
class StandInTopic:
    """Records each send; its acknowledgement resolves only when the test says so."""

    sends: list[dict[str, Any]] = field(default_factory=list)
    ack: asyncio.Future[None] | None = None

    async def send(self, **kwargs: Any) -> asyncio.Future[None]:
        self.sends.append(kwargs)
        self.ack = asyncio.get_running_loop().create_future()
        return self.ack


def runtime_with_handler() -> tuple[Runtime, StandInTopic]:
    runtime = Runtime(Settings(app_id="unit", partitions=4))

    @runtime.handler(TOPIC)
    def handle(record: ReactorRecord) -> None:
        """A reactor handler of TOPIC (never called here)."""

    topic = StandInTopic()
    runtime.output_topic = lambda name: topic  # type: ignore[method-assign]
    return runtime, topic


def test_a_record_goes_to_its_keys_partition_and_returns_once_acknowledged() -> None:
    runtime, topic = runtime_with_handler()

    async def scenario() -> None:
        injecting = asyncio.ensure_future(
            runtime.inject_record(TOPIC, b"order-7", b"v", headers=[("h", b"1")])
        )
        while topic.ack is None:
            await asyncio.sleep(0)
        for _ in range(20):  # let it run as far as it can without the acknowledgement
            await asyncio.sleep(0)
        assert not injecting.done(), "returned before the broker acknowledged the record"
        topic.ack.set_result(None)
        await asyncio.wait_for(injecting, timeout=5)

    asyncio.run(scenario())
    assert topic.sends == [
        {
            "key": b"order-7",
            "value": b"v",
            "partition": partition_for(b"order-7", 4),
            "headers": [("h", b"1")],
        }
    ]


def test_a_topic_no_handler_reads_is_refused() -> None:
    runtime, topic = runtime_with_handler()
    with pytest.raises(ValueError, match=r"no reactor handler reads 'unit\.other'"):
        asyncio.run(runtime.inject_record("unit.other", b"k", b"v"))
    assert topic.sends == []
