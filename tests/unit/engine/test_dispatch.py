"""The engine's dispatch: which records reach a cell, which go to dead letters, which move."""

from __future__ import annotations

from stream_app.core.partitioner import partition_for
from tests.unit.engine.fakes import PARTITIONS, Harness
from tests.unit.engine.probe import probe


def test_a_valid_message_reaches_its_cell() -> None:
    harness = Harness(probe())
    harness.feed(harness.record("a", "add", {"by": 2}), harness.record("a", "add", {"by": 3}))
    assert harness.data("a") == {"count": 5, "boots": 0, "fired": []}
    assert harness.dead_letters.letters == []


def test_an_invalid_message_is_dead_lettered_with_its_reason_and_source() -> None:
    harness = Harness(probe())
    bad = harness.record("a", "add", value=b"{not json")
    unknown = harness.record("a", "dance")
    wrong = harness.record("a", "add", {"by": "many"})
    harness.feed(bad, unknown, wrong)
    letters = harness.dead_letters.letters
    assert [letter["reason"] for letter in letters] == ["malformed-json", "unknown-type", "schema"]
    assert [(x["topic"], x["partition"], x["offset"]) for x in letters] == [
        (r.topic, r.partition, r.offset) for r in (bad, unknown, wrong)
    ]
    assert all(letter["unit"] == bad.partition for letter in letters)
    assert harness.data("a") is None


def test_a_reply_address_the_app_may_not_use_is_dead_lettered() -> None:
    harness = Harness(probe())
    harness.feed(harness.record("a", "add", reply_to="elsewhere.replies:0"))
    [letter] = harness.dead_letters.letters
    assert letter["reason"] == "schema" and "reply_to" in letter["error"]
    assert harness.data("a") is None


def test_a_misrouted_record_is_forwarded_to_its_home_partition() -> None:
    harness = Harness(probe())
    home = partition_for(b"a", PARTITIONS)
    stray = (home + 1) % PARTITIONS
    record = harness.record("a", "add", {"by": 1}, partition=stray)
    harness.feed(record)
    [forwarded] = harness.outputs(harness.topic)
    assert (forwarded.partition, forwarded.key, forwarded.value) == (home, b"a", record.value)
    assert forwarded.unit == stray, "forwarded with the stray record's unit of work"
    assert harness.metrics.misrouted == 1
    assert harness.data("a") is None, "not applied on the partition it strayed to"


def test_an_unknown_control_record_changes_nothing() -> None:
    harness = Harness(probe())
    harness.feed(harness.control(0, b"dance", b"a"))
    assert harness.produced == [] and harness.dead_letters.letters == []


def test_an_injected_message_reaches_its_cell_with_the_next_wake_of_its_partition() -> None:
    harness = Harness(probe())
    harness.feed(harness.record("a", "add", {"by": 1}))
    assert harness.engine.inject("a", b'{"type": "add", "body": {"by": 4}}')
    assert harness.data("a") == {"count": 1, "boots": 0, "fired": []}, "not before the wake"
    harness.wake("a")
    assert harness.data("a") == {"count": 5, "boots": 0, "fired": []}
    assert harness.engine.inject("a", b"{broken") and not harness.dead_letters.letters
    harness.wake("a")
    assert harness.data("a") == {"count": 5, "boots": 0, "fired": []}, "dropped, not applied"
    assert harness.dead_letters.letters == [], "an invalid injected message is only logged"
