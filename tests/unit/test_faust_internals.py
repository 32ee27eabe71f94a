"""Every faust-streaming (and aiokafka) internal stream_app patches or relies on still exists.

stream_app replaces or calls about fifteen private attributes of Faust's consumer, producer
buffer, recovery and RocksDB store (``docs/internals.md`` lists them and why). An upgrade that
renames one would otherwise fail silently: a patch set on an attribute nobody calls any more
just stops applying. Each row names the attribute and the stream_app code that depends on it.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

#: (module, class, attribute, where stream_app patches or uses it)
INTERNALS = [
    ("mode.utils.queues", "FlowControlEvent", "resume", "app.KeepingFlowControl"),
    ("faust.app.base", "App", "_new_consumer", "app.StreamApp._new_consumer"),
    ("faust.app.base", "App", "_new_producer", "app.StreamApp._new_producer"),
    ("faust.app.base", "App", "in_worker", "app.StreamApp.on_stop (stop deadline)"),
    ("faust.transport.drivers.aiokafka", "Consumer", "_getmany", "app: take_input_topics"),
    ("faust.transport.drivers.aiokafka", "Consumer", "wait_empty", "app: take_input_topics"),
    ("faust.transport.drivers.aiokafka", "Consumer", "_commit", "batch_input: offset commit"),
    ("faust.transport.drivers.aiokafka", "Consumer", "flow_active", "batch_input: _loop"),
    ("faust.transport.drivers.aiokafka", "Consumer", "verify_event_path", "app: watchdog"),
    (
        "faust.transport.drivers.aiokafka",
        "Consumer",
        "verify_recovery_event_path",
        "app: recovery watchdog",
    ),
    (
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "_create_worker_consumer",
        "app._read_committed",
    ),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_highwaters", "app"),
    ("faust.transport.producer", "ProducerBuffer", "put", "app: counted send buffer"),
    ("faust.transport.producer", "ProducerBuffer", "_send_pending", "app: counted send buffer"),
    ("faust.transport.producer", "ProducerBuffer", "flush", "app.drain_send_buffer"),
    ("faust.stores.rocksdb", "Store", "_db_for_partition", "kafka.cell_store: direct access"),
    ("faust.stores.rocksdb", "Store", "set_persisted_offset", "kafka.cell_store: offsets"),
]

#: Attributes set on instances in ``__init__`` (not visible on the class): module, class, name.
INSTANCE_ATTRIBUTES = [
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_isolation_level"),
    ("faust.transport.consumer", "ThreadDelegateConsumer", "_thread"),
    ("faust.transport.producer", "ProducerBuffer", "message_sent"),
    ("faust.tables.recovery", "Recovery", "_recovery_started_at"),
]


@pytest.mark.parametrize(("module", "cls", "attribute", "user"), INTERNALS)
def test_a_patched_or_used_attribute_exists(
    module: str, cls: str, attribute: str, user: str
) -> None:
    owner = getattr(importlib.import_module(module), cls)
    assert hasattr(owner, attribute), (
        f"the installed {module}.{cls} has no {attribute!r}, which stream_app's {user} patches "
        "or calls: an upgrade of faust-streaming changed it (see docs/internals.md)"
    )


@pytest.mark.parametrize(("module", "cls", "attribute"), INSTANCE_ATTRIBUTES)
def test_an_instance_attribute_is_still_set(module: str, cls: str, attribute: str) -> None:
    source = inspect.getsource(getattr(importlib.import_module(module), cls))
    assert re.search(rf"self\.{attribute}\b\s*(:[^=]*)?=", source), (
        f"{module}.{cls} no longer sets self.{attribute}, which stream_app relies on "
        "(see docs/internals.md)"
    )


def test_the_store_offset_key_is_the_one_cells_skip() -> None:
    from faust.stores.rocksdb import Store

    from stream_app.kafka.cell_store import FAUST_OFFSET_KEY

    assert Store.offset_key == FAUST_OFFSET_KEY
