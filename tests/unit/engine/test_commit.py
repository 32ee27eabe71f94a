"""What one successful callback commits, and into which unit of work it goes."""

from __future__ import annotations

import json

from stream_app.core.partitioner import partition_for
from stream_app.core.replies import Reply
from stream_app.core.timers import TimerEntry
from tests.unit.engine.fakes import APP, PARTITIONS, Harness, now_ms
from tests.unit.engine.probe import probe


def test_data_and_its_changelog_go_into_the_records_unit() -> None:
    harness = Harness(probe())
    record = harness.record("a", "add", {"by": 4})
    harness.feed(record)
    [change] = harness.outputs(harness.cells.changelog_topic)
    assert (change.unit, change.partition, change.key) == (record.partition, record.partition, b"a")
    assert json.loads(change.value or b"") == {
        "data": {"boots": 0, "count": 4, "fired": []},
        "v": 1,
    }


def test_an_unchanged_cell_is_not_written_again() -> None:
    harness = Harness(probe())
    harness.feed(harness.record("a", "set", {"value": 1}), harness.record("a", "set", {"value": 1}))
    assert len(harness.outputs(harness.cells.changelog_topic)) == 1


def test_timers_are_stored_with_the_cell_and_in_the_timers_table() -> None:
    harness = Harness(probe())
    at = now_ms() + 60_000
    record = harness.record("a", "arm", {"name": "t", "at_ms": at})
    harness.feed(record)
    entry = TimerEntry(cell="a", name="t", due=at)
    assert harness.timers.get(record.partition, entry.key()) is not None
    stored = json.loads(harness.cells.get(record.partition, b"a") or b"")
    assert stored["timers"] == {"t": at}
    harness.feed(harness.record("a", "disarm"))
    assert harness.timers.get(record.partition, entry.key()) is None
    assert all(p.unit == record.partition for p in harness.produced)


def test_messages_to_other_cells_go_to_their_partition_in_the_senders_unit() -> None:
    harness = Harness(probe())
    record = harness.record("a", "tell", {"to": "b"})
    harness.feed(record)
    [sent] = harness.outputs(harness.topic)
    assert sent.unit == record.partition
    assert (sent.key, sent.partition) == (b"b", partition_for(b"b", PARTITIONS))
    envelope = json.loads(sent.value or b"")
    assert (envelope["type"], envelope["body"]) == ("add", {"by": 1})
    harness.feed(harness.record("a", "tell", {"to": "b"}))
    again = json.loads(harness.outputs(harness.topic)[1].value or b"")
    assert again["id"] != envelope["id"], "each invocation's messages have their own ids"


def test_effects_and_published_records_go_into_the_records_unit() -> None:
    harness = Harness(probe())
    record = harness.record("a", "emit", {"kind": "mail", "topic": "unit.log"})
    harness.feed(record)
    [effect] = harness.outputs(f"{APP}.effects")
    [published] = harness.outputs("unit.log")
    assert effect.unit == published.unit == record.partition
    assert effect.partition == published.partition == record.partition
    body = json.loads(effect.value or b"")
    assert body["kind"] == "mail"
    assert body["origin"] == f"{record.topic}/{record.partition}/{record.offset}"
    assert published.value == b"published"
    assert harness.metrics.effects_emitted == 1


def test_a_record_published_with_its_own_key_goes_to_that_keys_partition() -> None:
    harness = Harness(probe())
    record = harness.record("a", "emit", {"topic": "unit.work", "key": "node-7"})
    harness.feed(record)
    [published] = harness.outputs("unit.work")
    assert published.unit == record.partition, "it goes out with the cell's commit"
    assert (published.key, published.partition) == (
        b"node-7",
        partition_for(b"node-7", PARTITIONS),
    )


def test_a_rejected_message_is_dead_lettered_and_answered() -> None:
    harness = Harness(probe())
    harness.feed(harness.record("a", "set", {"value": 3}))
    record = harness.record("a", "reject", reply_to=f"{APP}.replies:2", id="ask-1")
    harness.feed(record)
    [letter] = harness.dead_letters.letters
    assert (letter["reason"], letter["offset"], letter["unit"]) == (
        "rejected",
        record.offset,
        record.partition,
    )
    [answer] = harness.outputs(f"{APP}.replies")
    assert (answer.partition, answer.unit) == (2, record.partition)
    reply = Reply.model_validate_json(answer.value or b"")
    assert (reply.correlation_id, reply.ok, reply.reason) == ("ask-1", False, "rejected")
    assert harness.data("a") == {"count": 3, "boots": 0, "fired": []}, "nothing changed"


def test_a_cleared_cell_loses_its_record_and_timers() -> None:
    harness = Harness(probe())
    record = harness.record("a", "arm", {"at_ms": now_ms() + 60_000})
    harness.feed(record, harness.record("a", "stop"))
    assert harness.data("a") is None
    assert list(harness.timers.keys(record.partition)) == []
