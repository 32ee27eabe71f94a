"""The cells pages' helpers without a worker: ids, envelopes, due times, lists and events."""

from __future__ import annotations

import json

import pytest

from stream_app.api.entities import EventRecord
from stream_app.console.cells import (
    MAX_ID_LENGTH,
    as_json,
    cell_path,
    check_cell_id,
    due_text,
    envelope_for,
    event_rows,
    events_behind,
    first_cells,
    retry_count,
)
from stream_app.console.pagekit import Invalid
from stream_app.console.server import BehaviourInfo
from stream_app.examples.counter import counter
from stream_app.examples.ledger import account

COUNTER = BehaviourInfo("counter", "cells", "app.counter.in", counter.message_types)
ACCOUNT = BehaviourInfo(
    "account", "entity", "app.account.in", account.behaviour.message_types, "app.account.events"
)


def test_a_cell_id_is_not_empty_and_not_too_long() -> None:
    assert check_cell_id("<script>alert(1)</script>") == "<script>alert(1)</script>"
    assert check_cell_id("x" * MAX_ID_LENGTH) == "x" * MAX_ID_LENGTH
    for bad in (None, "", "x" * (MAX_ID_LENGTH + 1)):
        with pytest.raises(Invalid):
            check_cell_id(bad)


def test_an_envelope_is_validated_as_the_workers_validate_it() -> None:
    envelope = envelope_for(COUNTER, "increment", '{"by": 3}', max_bytes=1000)
    assert json.loads(envelope) == {"type": "increment", "body": {"by": 3}}
    assert json.loads(envelope_for(COUNTER, "reset", "  ", max_bytes=1000))["body"] == {}
    assert json.loads(envelope_for(ACCOUNT, "open", '{"owner": "ann"}', max_bytes=1000))


@pytest.mark.parametrize(
    ("info", "type_", "body", "reason"),
    [
        (COUNTER, "increment", '{"by": 0}', "by: Input should be greater than or equal to 1"),
        (COUNTER, "increment", '{"by": "2"}', "by: Input should be a valid integer"),
        (COUNTER, "increment", '{"by": 2.0}', "by: Input should be a valid integer"),
        (COUNTER, "increment", '{"by": 1, "extra": 1}', "extra: Extra inputs are not permitted"),
        (COUNTER, "increment", "[1]", "the body must be a JSON object"),
        (COUNTER, "increment", "{by: 1}", "the body is not JSON"),
        (
            COUNTER,
            "explode",
            "{}",
            "counter has no message type 'explode' (known: increment, reset)",
        ),
        (ACCOUNT, "open", "{}", "owner: Field required"),
        (ACCOUNT, "deposit", '{"amount": 0}', "amount: Input should be greater than 0"),
    ],
)
def test_a_bad_message_is_refused_with_the_reason(
    info: BehaviourInfo, type_: str, body: str, reason: str
) -> None:
    with pytest.raises(Invalid) as refused:
        envelope_for(info, type_, body, max_bytes=1000)
    assert reason in str(refused.value)


def test_an_oversized_message_is_refused() -> None:
    with pytest.raises(Invalid, match="bytes"):
        envelope_for(ACCOUNT, "open", json.dumps({"owner": "a" * 200}), max_bytes=100)


def test_a_due_time_is_utc_and_relative() -> None:
    due = 1_764_582_600_000  # 2025-12-01 09:50:00 UTC
    assert due_text(due, due - 30_000) == "2025-12-01 09:50:00.000 UTC (in 30.0 s)"
    assert due_text(due + 7, due + 60_000) == "2025-12-01 09:50:00.007 UTC (59 s ago)"
    assert due_text(due, due - 90_000) == "2025-12-01 09:50:00.000 UTC (in 1 min 30 s)"


def test_the_list_is_capped_in_id_order_with_data_as_one_line() -> None:
    cells = {f"c{i:03}": {"count": i, "name": "é"} for i in range(300)}
    listed = first_cells(cells, 200)
    assert len(listed) == 200
    assert listed[0] == ("c000", '{"count": 0, "name": "é"}')
    assert listed[-1][0] == "c199"
    assert as_json({"b": 1, "a": [None]}) == '{"a": [null], "b": 1}'


def test_a_cell_path_quotes_the_whole_id() -> None:
    assert cell_path("counter", "a/b c") == "/console/cells/counter/a%2Fb%20c"
    assert cell_path("counter", "<script>") == "/console/cells/counter/%3Cscript%3E"


def _event(entity_id: str, seq: int) -> bytes:
    return (
        EventRecord(
            entity="account",
            id=entity_id,
            seq=seq,
            type="deposited",
            body={"amount": seq},
            message_id=f"m{seq}",
            origin=f"app.account.in/0/{seq}",
            at_ms=seq,
        )
        .model_dump_json()
        .encode()
    )


def test_events_are_the_entitys_own_by_seq_and_the_latest_only() -> None:
    records = [
        (b"acc-1", _event("acc-1", 2)),
        (b"acc-2", _event("acc-2", 1)),
        (b"acc-1", _event("acc-1", 1)),
        (b"acc-1", b"not an event"),
        (b"acc-1", None),
        (None, _event("acc-1", 9)),
        (b"acc-1", _event("acc-1", 3)),
    ]
    assert [e.seq for e in event_rows(records, "acc-1", limit=10)] == [1, 2, 3]
    assert [e.seq for e in event_rows(records, "acc-1", limit=2)] == [2, 3]
    assert event_rows(records, "acc-3", limit=10) == []


def test_the_events_behind_the_state_and_the_retries_are_bounded() -> None:
    events = event_rows([(b"a", _event("a", 1)), (b"a", _event("a", 2))], "a", limit=10)
    assert events_behind(events, 4) == 2
    assert events_behind(events, 2) == 0
    assert events_behind([], 3) == 3
    assert events_behind(events, None) == 0
    assert [retry_count(v) for v in (None, "", "3", "-1", "99", "x")] == [0, 0, 3, 0, 10, 0]
