"""Every faust-streaming (and aiokafka) internal stream_app patches or relies on still exists.

stream_app replaces or calls about twenty private attributes of Faust's consumer, producer
buffer, recovery and RocksDB store (``stream_app/kafka/faust_patches.py`` holds the patches,
``docs/internals.md`` lists them and why). An upgrade that renames one would otherwise fail
silently: a patch set on an attribute nobody calls any more just stops applying. Each row
names the attribute and the stream_app code that depends on it.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

#: (module, class, attribute, where stream_app patches or uses it)
INTERNALS = [
    ("mode.utils.queues", "FlowControlEvent", "resume", "faust_patches.KeepingFlowControl"),
    ("mode.utils.queues", "FlowControlEvent", "is_active", "faust_patches.KeepingFlowControl"),
    ("faust.app.base", "App", "flow_control", "faust_patches.PatchedApp.flow_control"),
    ("faust.app.base", "App", "_new_consumer", "faust_patches.PatchedApp._new_consumer"),
    ("faust.app.base", "App", "_new_producer", "faust_patches.PatchedApp._new_producer"),
    (
        "faust.tables.manager",
        "TableManager",
        "on_start",
        "faust_patches.TableManagerStartingAtOnce",
    ),
    (
        "faust.tables.manager",
        "TableManager",
        "_update_channels",
        "faust_patches.TableManagerStartingAtOnce",
    ),
    ("faust.app.base", "App", "in_worker", "app.StreamApp.on_stop (stop deadline)"),
    ("faust.app.base", "App", "tables", "faust_patches.judge_recovery_from_its_start"),
    (
        "faust.tables.manager",
        "TableManager",
        "recovery",
        "faust_patches.judge_recovery_from_its_start",
    ),
    ("faust.transport.drivers.aiokafka", "Consumer", "_getmany", "faust_patches.hand_topics_to"),
    ("faust.transport.drivers.aiokafka", "Consumer", "wait_empty", "faust_patches.hand_topics_to"),
    (
        "faust.transport.consumer",
        "Consumer",
        "pause_partitions",
        "faust_patches.hand_topics_to",
    ),
    (
        "faust.transport.consumer",
        "Consumer",
        "resume_partitions",
        "faust_patches.hand_topics_to",
    ),
    (
        "faust.transport.consumer",
        "Consumer",
        "_get_active_partitions",
        "faust_patches.hand_topics_to",
    ),
    (
        "faust.transport.drivers.aiokafka",
        "Consumer",
        "verify_event_path",
        "faust_patches.hand_topics_to (stream watchdog)",
    ),
    (
        "faust.transport.drivers.aiokafka",
        "Consumer",
        "verify_recovery_event_path",
        "faust_patches.judge_recovery_from_its_start",
    ),
    ("faust.transport.drivers.aiokafka", "Consumer", "_commit", "faust_patches.commit_offsets"),
    (
        "faust.transport.drivers.aiokafka",
        "Consumer",
        "flow_active",
        "faust_patches.streams_flowing",
    ),
    (
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "_create_worker_consumer",
        "faust_patches.read_committed",
    ),
    (
        "faust.transport.consumer",
        "Consumer",
        "highwaters",
        "faust_patches.list_offsets_in_one_request",
    ),
    (
        "faust.transport.consumer",
        "Consumer",
        "earliest_offsets",
        "faust_patches.list_offsets_in_one_request",
    ),
    ("faust.types.settings.settings", "Settings", "Topic", "faust_patches.DeclaredOnceTopic"),
    ("faust.topics", "Topic", "maybe_declare", "faust_patches.DeclaredOnceTopic"),
    (
        "faust.transport.drivers.aiokafka",
        "Producer",
        "_ensure_producer",
        "faust_patches.DeclaredOnceTopic._track",
    ),
    ("aiokafka.client", "AIOKafkaClient", "add_topic", "faust_patches.DeclaredOnceTopic._track"),
    ("faust.transport.producer", "ProducerBuffer", "put", "faust_patches.send_buffer_that_drains"),
    (
        "faust.transport.producer",
        "ProducerBuffer",
        "_send_pending",
        "faust_patches.send_buffer_that_drains",
    ),
    (
        "faust.transport.producer",
        "ProducerBuffer",
        "flush",
        "faust_patches.send_buffer_that_drains",
    ),
    ("faust.transport.producer", "ProducerBuffer", "state", "faust_patches.drain_send_buffer"),
    ("faust.stores.rocksdb", "Store", "_db_for_partition", "faust_patches.partition_db"),
    ("faust.stores.rocksdb", "Store", "set_persisted_offset", "faust_patches.set_persisted_offset"),
    ("faust.app.base", "App", "on_start", "faust_patches.PatchedApp.on_start (fast restore)"),
    (
        "faust.tables.recovery",
        "Recovery",
        "_seek_offsets",
        "faust_patches.restore_changelogs_fast",
    ),
    ("faust.tables.recovery", "Recovery", "_wait", "faust_patches.restore_changelogs_fast"),
    ("faust.stores.rocksdb", "Store", "apply_changelog_batch", "kafka.restore (same bytes)"),
    (
        "faust.stores.rocksdb",
        "RocksDBOptions",
        "as_options",
        "faust_patches.share_rocksdb_memory",
    ),
    ("faust.tables.base", "Collection", "_new_store", "faust_patches.share_rocksdb_memory"),
    (
        "faust.assignor.partition_assignor",
        "PartitionAssignor",
        "on_assignment",
        "faust_patches.refuse_assignments_for_another_address",
    ),
    (
        "faust.assignor.partition_assignor",
        "PartitionAssignor",
        "_decompress",
        "faust_patches.refuse_assignments_for_another_address",
    ),
    (
        "faust.assignor.partition_assignor",
        "PartitionAssignor",
        "_url",
        "faust_patches.refuse_assignments_for_another_address",
    ),
    ("faust.app.base", "App", "assignor", "faust_patches.refuse_assignments_for_another_address"),
]

#: Attributes set on instances in ``__init__`` (not visible on the class): module, class, name.
INSTANCE_ATTRIBUTES = [
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_isolation_level"),
    ("faust.transport.consumer", "ThreadDelegateConsumer", "_thread"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "tp_fetch_request_timeout_secs"),
    ("faust.transport.producer", "ProducerBuffer", "message_sent"),
    ("faust.tables.recovery", "Recovery", "_recovery_started_at"),
    ("faust.tables.recovery", "Recovery", "tp_to_table"),
    ("faust.stores.rocksdb", "Store", "_dbs"),
    ("faust.stores.rocksdb", "Store", "rocksdb_options"),
    ("faust.tables.base", "Collection", "_on_changelog_event"),
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

    from stream_app.kafka.faust_patches import FAUST_OFFSET_KEY

    assert Store.offset_key == FAUST_OFFSET_KEY


def test_every_attribute_faust_patches_replaces_is_checked_above() -> None:
    """A new patch in faust_patches.py must come with its row in INTERNALS (or
    INSTANCE_ATTRIBUTES), so that an upgrade removing its attribute fails here."""
    import faust

    from stream_app.kafka import faust_patches

    source = inspect.getsource(faust_patches)
    patched = r"^\s+(?:consumer|thread|buffer|recovery|options|assignor|table)\.(\w+) = "
    set_on_instances = set(re.findall(patched, source, re.M))
    overridden = {
        name
        for name, member in vars(faust_patches.PatchedApp).items()
        if hasattr(faust.App, name) and hasattr(member, "__get__") and not name.startswith("__")
    }
    checked = {row[2] for row in INTERNALS} | {row[2] for row in INSTANCE_ATTRIBUTES}
    assert {"_getmany", "highwaters", "_isolation_level", "_seek_offsets"} <= set_on_instances
    assert {"_new_consumer", "_new_producer", "flow_control"} <= overridden
    unchecked = (set_on_instances | overridden) - checked
    assert not unchecked, f"faust_patches replaces {sorted(unchecked)} without a row above"
