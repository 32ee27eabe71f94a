"""Unit tests of CellRecord, a live cell as stored in its behaviour's table."""

from __future__ import annotations

import json

import pytest

from stream_app.engine.cells import CellRecord


@pytest.mark.parametrize(
    "record",
    [
        CellRecord(version=1, data={}),
        CellRecord(version=3, data={"count": 2, "label": "ünï ✓", "nested": {"a": [1, None]}}),
        CellRecord(version=2, data={"x": 1.5}, timers={"remind": 1_700_000_000_000, "t": 0}),
    ],
)
def test_encode_decode_round_trip(record: CellRecord) -> None:
    assert CellRecord.decode(record.encode()) == record


def test_encoding_is_compact_and_sorted() -> None:
    record = CellRecord(version=2, data={"b": 1, "a": {"z": 1, "y": 2}}, timers={"t2": 5, "t1": 6})
    raw = record.encode()
    assert raw == b'{"data":{"a":{"y":2,"z":1},"b":1},"timers":{"t1":6,"t2":5},"v":2}'
    assert b" " not in raw


def test_equal_records_encode_to_equal_bytes() -> None:
    # The engine skips the write when the encoding did not change: it must not depend on order.
    first = CellRecord(version=1, data={"a": 1, "b": 2}, timers={"x": 1, "y": 2})
    second = CellRecord(version=1, data={"b": 2, "a": 1}, timers={"y": 2, "x": 1})
    assert first.encode() == second.encode()


def test_no_timers_are_left_out_of_the_stored_form() -> None:
    raw = CellRecord(version=1, data={"n": 1}).encode()
    assert json.loads(raw) == {"v": 1, "data": {"n": 1}}
    assert CellRecord.decode(raw).timers == {}


def test_decode_reads_a_record_without_timers_or_with_null_timers() -> None:
    assert CellRecord.decode(b'{"v":4,"data":{"k":"v"}}') == CellRecord(version=4, data={"k": "v"})
    assert CellRecord.decode(b'{"v":4,"data":{},"timers":null}').timers == {}


def test_the_decoded_timers_are_a_new_dict() -> None:
    raw = CellRecord(version=1, data={}, timers={"t": 1}).encode()
    first, second = CellRecord.decode(raw), CellRecord.decode(raw)
    first.timers["u"] = 2
    assert second.timers == {"t": 1}
