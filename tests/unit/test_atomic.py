"""An atomic log's scope, driven through its callbacks as a worker calls them (no broker).

A :class:`Scope` plays the engine for one scope: it builds each invocation's ``CellState``,
keeps the data and the pending timers between invocations, and decodes what the invocation
published (validation requests, event records, replies). The property test at the end checks
random interleavings of stores, answers, timeouts and reboots against a reference model.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from stream_app.api.atomic import (
    MAX_SCOPE_BYTES,
    VALIDATION_TIMER,
    Accept,
    AtomicFold,
    AtomicLog,
    Reject,
    Validation,
)
from stream_app.core.atomic import (
    VALIDATION_RESPONSE,
    AtomicEventRecord,
    AtomicResult,
    AtomicScope,
    ValidationRequest,
    ValidationResponse,
    response_envelope,
)
from stream_app.core.cell import CellState, FiredTimer
from stream_app.core.envelope import envelope_bytes
from stream_app.core.replies import Reply
from stream_app.errors import (
    AtomicMessageError,
    ConfigError,
    SchemaViolationError,
    UnknownMessageTypeError,
)
from stream_app.testing.cells import cell_state

LOT = "lot-1"
REPLIES = "app.replies"
TIMEOUT_MS = 5_000


class Bid(BaseModel):
    lot: str
    bidder: str
    amount: int = Field(gt=0)


class Refusal(BaseModel):
    code: str


class Highest(BaseModel):
    amount: int = 0
    bids: int = 0


def raise_highest(bid: Bid, summary: Highest) -> Highest:
    return Highest(amount=max(summary.amount, bid.amount), bids=summary.bids + 1)


def make_log(
    *,
    fold: AtomicFold[Any] | None = None,
    max_pending: int = 1000,
    overflow_reason: Refusal | None = None,
    max_scope_bytes: int = MAX_SCOPE_BYTES,
) -> AtomicLog[Bid, Refusal]:
    log: AtomicLog[Bid, Refusal] = AtomicLog(
        "bids",
        event=Bid,
        reason=Refusal,
        scope=lambda bid: bid.lot,
        timeout_reason=Refusal(code="timeout"),
        validation_timeout=TIMEOUT_MS / 1000,
        fold=fold,
        max_pending=max_pending,
        overflow_reason=overflow_reason,
        max_scope_bytes=max_scope_bytes,
    )
    log.bind(
        input_topic="app.bids.in",
        validation_topic="app.bids.validation",
        events_topic="app.bids.events",
    )
    return log


def bid(amount: int, bidder: str = "ann", lot: str = LOT) -> dict[str, Any]:
    return {"lot": lot, "bidder": bidder, "amount": amount}


@dataclass
class Scope:
    """One scope of ``log`` driven as the engine drives it."""

    log: AtomicLog[Bid, Refusal]
    cell_id: str = LOT
    data: AtomicScope | None = None
    timers: dict[str, int] = field(default_factory=dict)
    payloads: dict[str, Any] = field(default_factory=dict)
    offset: int = 0
    last: CellState[Any] | None = None

    def store(
        self,
        event: dict[str, Any],
        request_id: str,
        *,
        reply_to: str | None = f"{REPLIES}:3",
        now_ms: int = 1_000,
    ) -> CellState[Any]:
        value = envelope_bytes("store", {"event": event}, id=request_id, reply_to=reply_to)
        return self._message(value, now_ms)

    def answer(self, response: ValidationResponse, *, now_ms: int = 2_000) -> CellState[Any]:
        return self._message(response_envelope(response), now_ms)

    def accept(self, request_id: str, *, now_ms: int = 2_000, **fields: Any) -> CellState[Any]:
        return self.answer(
            ValidationResponse(
                request_id=request_id, scope=self.cell_id, validation_did_pass=True, **fields
            ),
            now_ms=now_ms,
        )

    def reject(self, request_id: str, *, now_ms: int = 2_000, **fields: Any) -> CellState[Any]:
        return self.answer(
            ValidationResponse(
                request_id=request_id, scope=self.cell_id, validation_did_pass=False, **fields
            ),
            now_ms=now_ms,
        )

    def fire(
        self, name: str = VALIDATION_TIMER, *, payload: Any = None, now_ms: int | None = None
    ) -> CellState[Any]:
        """Fire the timer ``name`` as the engine does: retired, then ``on_timeout``."""
        due = self.timers.pop(name, 0)
        fired_payload = payload if payload is not None else self.payloads.get(name)
        state = cell_state(
            self.log,
            data=self._fresh(),
            timer=FiredTimer(name=name, due_ms=due, payload=fired_payload),
            cell_id=self.cell_id,
            now_ms=now_ms if now_ms is not None else due,
            origin=f"timer/{name}/{due}",
            timers=self.timers,
        )
        self.log.on_timeout(state)
        return self._keep(state)

    def boot(self, *, now_ms: int = 50_000) -> CellState[Any]:
        state = cell_state(
            self.log,
            data=self._fresh(),
            trigger="boot",
            cell_id=self.cell_id,
            now_ms=now_ms,
            origin="boot",
            timers=self.timers,
        )
        self.log.on_boot(state)
        return self._keep(state)

    def _message(self, value: bytes, now_ms: int) -> CellState[Any]:
        self.offset += 1
        message = self.log.message_types.decode(self.cell_id.encode(), value, max_bytes=1 << 20)
        state = cell_state(
            self.log,
            data=self._fresh(),
            message=message,
            cell_id=self.cell_id,
            now_ms=now_ms,
            origin=f"app.bids.in/0/{self.offset}",
            timers=self.timers,
        )
        self.log.handle_message(state)
        return self._keep(state)

    def _fresh(self) -> AtomicScope | None:
        """The data as the engine gives it to each invocation: decoded from the stored JSON."""
        if self.data is None:
            return None
        return AtomicScope.model_validate_json(self.data.model_dump_json())

    def _keep(self, state: CellState[Any]) -> CellState[Any]:
        self.data = state.data
        self.timers = state.timers
        for name, entry in state._outputs.timers.items():
            self.payloads[name] = entry.payload if entry is not None else None
        self.last = state
        return state


def published(state: CellState[Any], topic: str) -> list[tuple[int | None, dict[str, Any]]]:
    """``(partition, decoded value)`` of each record ``state`` published to ``topic``."""
    return [
        (partition, json.loads(value))
        for name, value, partition, _key in state._outputs.records
        if name == topic
    ]


def requests(state: CellState[Any]) -> list[ValidationRequest]:
    return [ValidationRequest.model_validate(v) for _, v in published(state, "app.bids.validation")]


def records(state: CellState[Any]) -> list[AtomicEventRecord]:
    return [AtomicEventRecord.model_validate(v) for _, v in published(state, "app.bids.events")]


def results(state: CellState[Any]) -> list[AtomicResult]:
    replies = [Reply.model_validate(v) for _, v in published(state, REPLIES)]
    return [AtomicResult.model_validate(reply.state) for reply in replies]


def scope_data(scope: Scope) -> AtomicScope:
    assert scope.data is not None
    return scope.data


# -- asking --------------------------------------------------------------------------------------


def test_a_store_on_an_empty_scope_asks_for_validation_and_arms_the_timer() -> None:
    scope = Scope(make_log())
    state = scope.store(bid(100), "r1", now_ms=1_000)

    [request] = requests(state)
    assert request == ValidationRequest(
        request_id="r1",
        log="bids",
        scope=LOT,
        attempt=1,
        seq=0,
        prospective_event=bid(100),
        past_events=[],
        summary=None,
        reply_topic="app.bids.in",
        deadline_ms=1_000 + TIMEOUT_MS,
    )
    [(partition, _)] = published(state, "app.bids.validation")
    assert partition is None, "keyed by the scope: the partition numbered like the cell's"
    assert scope.timers == {VALIDATION_TIMER: 1_000 + TIMEOUT_MS}
    assert scope.payloads[VALIDATION_TIMER] == {"request_id": "r1", "attempt": 1}
    data = scope_data(scope)
    assert data.in_flight is not None
    assert (data.in_flight.request_id, data.in_flight.reply_to) == ("r1", f"{REPLIES}:3")
    assert data.queue == [] and data.seq == 0
    assert published(state, REPLIES) == [] and records(state) == []


def test_a_second_store_waits_in_the_queue_without_asking() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1")
    state = scope.store(bid(120, "bob"), "r2", reply_to=None)

    assert state._outputs.records == [] and state._outputs.timers == {}
    data = scope_data(scope)
    assert data.in_flight is not None and data.in_flight.request_id == "r1"
    assert [(p.request_id, p.event, p.reply_to) for p in data.queue] == [
        ("r2", bid(120, "bob"), None)
    ]


def test_a_store_repeating_a_pending_request_id_is_ignored() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1")
    scope.store(bid(110), "r2")
    before = scope_data(scope)

    for again in ("r1", "r2"):
        state = scope.store(bid(999), again)
        assert state._outputs.records == [] and state._outputs.timers == {}
        assert scope.data == before, f"a repeated {again} changes nothing"


# -- deciding ------------------------------------------------------------------------------------


def test_an_accepting_answer_appends_publishes_replies_and_asks_the_next() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1", now_ms=1_000)
    scope.store(bid(120, "bob"), "r2", reply_to=f"{REPLIES}:0", now_ms=1_500)
    state = scope.accept("r1", meta={"highest": 100}, now_ms=2_000)

    data = scope_data(scope)
    assert (data.seq, data.recent, data.accepted, data.rejected) == (1, [bid(100)], 1, 0)
    assert records(state) == [
        AtomicEventRecord(
            log="bids",
            scope=LOT,
            seq=1,
            event=bid(100),
            request_id="r1",
            meta={"highest": 100},
            at_ms=2_000,
        )
    ]
    [(partition, raw)] = published(state, REPLIES)
    reply = Reply.model_validate(raw)
    assert partition == 3, "the reply goes to the partition the caller named"
    assert (reply.correlation_id, reply.behaviour, reply.cell_id, reply.ok) == (
        "r1",
        "bids",
        LOT,
        True,
    )
    assert (reply.seq, reply.events) == (1, 1)
    assert AtomicResult.model_validate(reply.state) == AtomicResult(
        request_id="r1",
        log="bids",
        scope=LOT,
        was_accepted=True,
        prospective_event=bid(100),
        stored_event=bid(100),
        seq=1,
        stored_event_list=[bid(100)],
        meta={"highest": 100},
    )
    # The next request is asked at once, with the new log, and its own timer.
    [following] = requests(state)
    assert (following.request_id, following.seq, following.attempt) == ("r2", 1, 1)
    assert following.past_events == [bid(100)]
    assert following.deadline_ms == 2_000 + TIMEOUT_MS
    assert scope.timers == {VALIDATION_TIMER: 2_000 + TIMEOUT_MS}
    assert scope.payloads[VALIDATION_TIMER]["request_id"] == "r2"
    assert data.in_flight is not None and data.in_flight.request_id == "r2"
    assert data.queue == []


def test_the_validator_may_store_a_normalised_event() -> None:
    scope = Scope(make_log())
    scope.store(bid(100, "Ann "), "r1")
    state = scope.accept("r1", event=bid(100, "ann"))

    [result] = results(state)
    assert result.prospective_event == bid(100, "Ann ")
    assert result.stored_event == bid(100, "ann")
    assert scope_data(scope).recent == [bid(100, "ann")]
    assert [r.event for r in records(state)] == [bid(100, "ann")]


def test_a_rejecting_answer_replies_with_the_reason_and_meta_and_stores_nothing() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1")
    state = scope.reject("r1", reason={"code": "too-low"}, meta={"highest": 150})

    [result] = results(state)
    assert (result.was_accepted, result.reason, result.meta) == (
        False,
        {"code": "too-low"},
        {"highest": 150},
    )
    assert (result.stored_event, result.seq, result.timed_out) == (None, 0, False)
    assert records(state) == []
    data = scope_data(scope)
    assert (data.seq, data.accepted, data.rejected, data.in_flight) == (0, 0, 1, None)
    assert scope.timers == {}, "the validation timer is cancelled"
    assert state._outputs.timers == {VALIDATION_TIMER: None}


def test_a_rejection_without_a_reason_is_a_result_too() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1")
    [result] = results(scope.reject("r1"))
    assert not result.was_accepted and result.reason is None


def test_an_answer_for_no_request_in_flight_is_ignored_and_counted() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1")
    scope.store(bid(120), "r2")
    before = scope_data(scope)

    state = scope.accept("r2")  # queued, not in flight
    state_late = scope.reject("r0")  # never known here
    assert state._outputs.records == [] and state_late._outputs.records == []
    data = scope_data(scope)
    assert data.late == 2
    assert data.model_copy(update={"late": 0}) == before

    # Once r1 is decided, its repeated answer is late as well.
    scope.accept("r1")
    state = scope.accept("r1")
    assert state._outputs.records == []
    assert (scope_data(scope).seq, scope_data(scope).late) == (1, 3)


def test_an_answer_to_a_scope_without_data_leaves_it_dead() -> None:
    scope = Scope(make_log())
    state = scope.accept("r1")
    assert scope.data is None and state._outputs.records == []


# -- timeouts ------------------------------------------------------------------------------------


def test_a_validation_that_times_out_is_rejected_and_the_next_proceeds() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1", now_ms=1_000)
    scope.store(bid(120), "r2", reply_to=None, now_ms=1_200)
    state = scope.fire(now_ms=1_000 + TIMEOUT_MS)

    [result] = results(state)
    assert result.request_id == "r1"
    assert (result.was_accepted, result.timed_out, result.reason, result.meta) == (
        False,
        True,
        {"code": "timeout"},
        None,
    )
    data = scope_data(scope)
    assert (data.rejected, data.timed_out, data.seq) == (1, 1, 0)
    [following] = requests(state)
    assert following.request_id == "r2"
    assert scope.timers == {VALIDATION_TIMER: 1_000 + 2 * TIMEOUT_MS}

    # The late answer to r1 is counted, not applied.
    scope.accept("r1")
    assert (scope_data(scope).late, scope_data(scope).seq) == (1, 0)


def test_a_stale_or_foreign_timer_is_ignored() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1")
    before = scope_data(scope)

    stale = scope.fire(payload={"request_id": "r0", "attempt": 1})
    assert stale._outputs.records == [] and scope.data == before
    foreign = scope.fire("something-else", payload={"request_id": "r1"})
    assert foreign._outputs.records == [] and scope.data == before


def test_a_timer_after_the_answer_is_ignored() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1")
    payload = scope.payloads[VALIDATION_TIMER]
    scope.accept("r1")
    state = scope.fire(payload=payload)
    assert state._outputs.records == []
    assert (scope_data(scope).seq, scope_data(scope).timed_out) == (1, 0)


# -- restarts ------------------------------------------------------------------------------------


def test_boot_asks_the_request_in_flight_again_with_the_same_id() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1", now_ms=1_000)
    scope.store(bid(120), "r2")
    state = scope.boot(now_ms=50_000)

    [again] = requests(state)
    assert (again.request_id, again.attempt, again.deadline_ms) == ("r1", 2, 50_000 + TIMEOUT_MS)
    assert again.prospective_event == bid(100)
    data = scope_data(scope)
    assert data.in_flight is not None and data.in_flight.attempt == 2
    assert data.in_flight.reply_to == f"{REPLIES}:3", "the caller still gets the result"
    assert [p.request_id for p in data.queue] == ["r2"]
    assert scope.payloads[VALIDATION_TIMER] == {"request_id": "r1", "attempt": 2}

    assert requests(scope.boot())[0].attempt == 3
    [result] = results(scope.accept("r1"))
    assert result.was_accepted and result.request_id == "r1"


def test_boot_without_a_validation_in_flight_does_nothing() -> None:
    idle = Scope(make_log())
    assert idle.boot()._outputs.records == [] and idle.data is None
    idle.store(bid(100), "r1")
    idle.accept("r1")
    before = idle.data
    assert idle.boot()._outputs.records == [] and idle.data == before


# -- limits --------------------------------------------------------------------------------------


def test_a_store_beyond_max_pending_is_refused_with_the_overflow_reason() -> None:
    scope = Scope(make_log(max_pending=1, overflow_reason=Refusal(code="busy")))
    scope.store(bid(100), "r1")
    scope.store(bid(110), "r2")
    state = scope.store(bid(120), "r3", reply_to=f"{REPLIES}:1")

    [(partition, _)] = published(state, REPLIES)
    [result] = results(state)
    assert partition == 1
    assert (result.request_id, result.was_accepted, result.reason) == (
        "r3",
        False,
        {"code": "busy"},
    )
    data = scope_data(scope)
    assert [p.request_id for p in data.queue] == ["r2"] and data.rejected == 1
    assert requests(state) == []


def test_without_an_overflow_reason_the_timeout_reason_is_given() -> None:
    scope = Scope(make_log(max_pending=0))
    scope.store(bid(100), "r1")
    [result] = results(scope.store(bid(120), "r2"))
    assert result.reason == {"code": "timeout"} and not result.timed_out


def test_an_accepted_event_that_would_outgrow_the_scope_record_is_refused() -> None:
    def one_event_and_one_in_flight(scope: Scope) -> Scope:
        scope.store(bid(100), "r1")
        scope.accept("r1")
        scope.store(bid(200), "r2")
        return scope

    # The record as it is with one event: room for it, not for a second one.
    size = len(scope_data(one_event_and_one_in_flight(Scope(make_log()))).model_dump_json())
    log = make_log(max_scope_bytes=size + 10, overflow_reason=Refusal(code="full"))
    scope = one_event_and_one_in_flight(Scope(log))
    assert scope_data(scope).seq == 1
    state = scope.accept("r2", meta={"m": 1})

    [result] = results(state)
    assert (result.was_accepted, result.reason, result.meta) == (False, {"code": "full"}, {"m": 1})
    assert records(state) == []
    data = scope_data(scope)
    assert (data.seq, data.recent, data.accepted, data.rejected) == (1, [bid(100)], 1, 1)


# -- a fold --------------------------------------------------------------------------------------


def test_a_fold_summarises_every_event_and_keeps_the_last_ones() -> None:
    fold = AtomicFold(state=Highest, init=Highest, update=raise_highest, keep_last=2)
    scope = Scope(make_log(fold=fold))
    assert requests(scope.store(bid(100), "r0"))[0].summary == {"amount": 0, "bids": 0}
    scope.accept("r0")
    for n, amount in enumerate((300, 200), start=1):
        scope.store(bid(amount), f"r{n}")
        scope.accept(f"r{n}")

    data = scope_data(scope)
    assert data.seq == 3
    assert data.summary == {"amount": 300, "bids": 3}
    assert data.recent == [bid(300), bid(200)]
    request = requests(scope.store(bid(400), "r3"))[0]
    assert (request.seq, request.summary, request.past_events) == (
        3,
        {"amount": 300, "bids": 3},
        [bid(300), bid(200)],
    )
    [result] = results(scope.accept("r3"))
    assert result.stored_event_list == [bid(200), bid(400)]


def test_a_fold_keeping_no_events_sends_only_the_summary() -> None:
    fold = AtomicFold(state=Highest, init=Highest, update=raise_highest, keep_last=0)
    scope = Scope(make_log(fold=fold))
    scope.store(bid(100), "r1")
    scope.accept("r1")
    assert scope_data(scope).recent == []
    request = requests(scope.store(bid(200), "r2"))[0]
    assert request.past_events == [] and request.summary == {"amount": 100, "bids": 1}


# -- malformed messages --------------------------------------------------------------------------


def test_a_store_sent_to_another_scope_is_an_atomic_message_error() -> None:
    scope = Scope(make_log())
    with pytest.raises(AtomicMessageError, match=r"scope is 'lot-2', but it was sent to scope"):
        scope.store(bid(100, lot="lot-2"), "r1")
    assert scope.data is None
    assert AtomicMessageError.reason == "atomic"


def test_an_event_failing_the_model_is_an_atomic_message_error() -> None:
    scope = Scope(make_log())
    with pytest.raises(AtomicMessageError, match="the prospective event is not a valid event"):
        scope.store({"lot": LOT, "bidder": "ann", "amount": -5}, "r1")


def test_malformed_answers_are_atomic_message_errors_and_change_nothing() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1")
    before = scope_data(scope)
    wrong_scope = ValidationResponse(request_id="r1", scope="lot-2", validation_did_pass=True)
    with pytest.raises(AtomicMessageError, match="an answer for scope 'lot-2' reached"):
        scope.answer(wrong_scope)
    with pytest.raises(AtomicMessageError, match="the validator's event is not a valid event"):
        scope.accept("r1", event={"lot": LOT})
    with pytest.raises(AtomicMessageError, match="belongs to scope 'lot-2'"):
        scope.accept("r1", event=bid(100, lot="lot-2"))
    with pytest.raises(AtomicMessageError, match="the validator's reason is not a valid reason"):
        scope.reject("r1", reason={"why": "no code"})
    assert scope.data == before


def test_the_input_takes_stores_and_answers_only() -> None:
    log = make_log()
    message = log.message_types.decode(
        LOT.encode(),
        response_envelope(ValidationResponse(request_id="r", scope=LOT, validation_did_pass=True)),
        max_bytes=1 << 20,
    )
    assert message.type == VALIDATION_RESPONSE and message.id == "response:r"
    with pytest.raises(UnknownMessageTypeError):
        log.message_types.decode(LOT.encode(), envelope_bytes("append", {}), max_bytes=1 << 20)
    with pytest.raises(SchemaViolationError):
        log.message_types.decode(
            LOT.encode(), envelope_bytes("store", {"event": {}, "x": 1}), max_bytes=1 << 20
        )


# -- declaration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"validation_timeout": 0}, "validation_timeout must be positive"),
        ({"max_pending": -1}, "max_pending must be >= 0"),
        (
            {"fold": AtomicFold(state=Highest, init=Highest, update=raise_highest, keep_last=-1)},
            "keep_last must be >= 0",
        ),
    ],
)
def test_a_bad_declaration_is_refused(options: dict[str, Any], problem: str) -> None:
    arguments: dict[str, Any] = {
        "event": Bid,
        "reason": Refusal,
        "scope": lambda b: b.lot,
        "timeout_reason": Refusal(code="timeout"),
        "validation_timeout": 1,
        **options,
    }
    with pytest.raises(ValueError, match=problem):
        AtomicLog("bids", **arguments)


def test_an_unregistered_log_has_no_topics() -> None:
    log: AtomicLog[Bid, Refusal] = AtomicLog(
        "bids",
        event=Bid,
        reason=Refusal,
        scope=lambda b: b.lot,
        timeout_reason=Refusal(code="t"),
        validation_timeout=1,
    )
    with pytest.raises(ConfigError, match=r"register it with runtime\.atomic"):
        _ = log.validation_topic
    assert "full history" in repr(log)


# -- validators ----------------------------------------------------------------------------------


def a_request(**fields: Any) -> ValidationRequest:
    values: dict[str, Any] = {
        "request_id": "r1",
        "log": "bids",
        "scope": LOT,
        "seq": 1,
        "prospective_event": bid(150),
        "past_events": [bid(100)],
        "reply_topic": "app.bids.in",
        "deadline_ms": 9_000,
        **fields,
    }
    return ValidationRequest(**values)


def test_accept_and_reject_become_validation_responses() -> None:
    log = make_log()
    request = a_request()
    assert log.response(request, Accept()) == ValidationResponse(
        request_id="r1", scope=LOT, validation_did_pass=True
    )
    assert log.response(
        request, Accept(Bid(lot=LOT, bidder="ann", amount=150), meta=[1])
    ) == ValidationResponse(
        request_id="r1", scope=LOT, validation_did_pass=True, event=bid(150), meta=[1]
    )
    assert log.response(request, Reject(Refusal(code="low"), meta={"h": 1})) == (
        ValidationResponse(
            request_id="r1",
            scope=LOT,
            validation_did_pass=False,
            reason={"code": "low"},
            meta={"h": 1},
        )
    )
    with pytest.raises(TypeError, match="not Accept"):
        log.response(request, True)  # type: ignore[arg-type]


def test_run_validator_runs_sync_and_async_validators_on_typed_events() -> None:
    fold = AtomicFold(state=Highest, init=Highest, update=raise_highest, keep_last=1)
    log = make_log(fold=fold)
    seen: list[Validation[Bid, Any]] = []

    @log.validator
    def beats(v: Validation[Bid, Any]) -> Accept[Bid] | Reject[Refusal]:
        seen.append(v)
        if v.prospective_event.amount > v.summary.amount:
            return Accept(meta={"over": v.summary.amount})
        return Reject(Refusal(code="too-low"))

    request = a_request(summary={"amount": 120, "bids": 2})
    response = asyncio.run(log.run_validator(request))
    assert (response.validation_did_pass, response.meta) == (True, {"over": 120})
    [validation] = seen
    assert validation.request == request
    assert validation.prospective_event == Bid(lot=LOT, bidder="ann", amount=150)
    assert validation.past_events == [Bid(lot=LOT, bidder="ann", amount=100)]
    assert validation.summary == Highest(amount=120, bids=2)

    @log.validator
    async def never(v: Validation[Bid, Any]) -> Reject[Refusal]:
        return Reject(Refusal(code=f"no-{v.request.attempt}"))

    response = asyncio.run(log.run_validator(a_request(attempt=2)))
    assert (response.validation_did_pass, response.reason) == (False, {"code": "no-2"})


def test_run_validator_without_a_validator_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="has no in-worker validator"):
        asyncio.run(make_log().run_validator(a_request()))


# -- random flows against a reference model ------------------------------------------------------

#: One step: ("store", n) a new request bidding n; ("again", k) the k-th request stored again;
#: ("pass" | "fail", 0) answer the request in flight; ("late", k) answer the k-th request
#: whatever its state; ("timeout", 0) the timer fires; ("boot", 0) a restart.
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("store"), st.integers(1, 50)),
        st.tuples(st.sampled_from(["again", "late"]), st.integers(0, 20)),
        st.tuples(st.sampled_from(["pass", "fail", "timeout", "boot"]), st.just(0)),
    ),
    max_size=40,
)


@dataclass
class Model:
    """The reference: a FIFO of pending ids, the one in flight, the log, the results."""

    capacity: int
    pending: list[str] = field(default_factory=list)
    flight: str | None = None
    started: list[str] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[tuple[str, bool, bool]] = field(default_factory=list)
    replies: list[tuple[str, bool, bool]] = field(default_factory=list)
    accepted_ids: list[str] = field(default_factory=list)
    late: int = 0

    def store(self, request_id: str) -> None:
        if request_id in self.accepted_ids[-8:]:
            self.replies.append((request_id, True, False))  # the first result, again
            return
        if request_id == self.flight or request_id in self.pending:
            return
        if self.flight is None:
            self._start(request_id)
        elif len(self.pending) >= self.capacity:
            self.results.append((request_id, False, False))
            self.replies.append((request_id, False, False))
        else:
            self.pending.append(request_id)

    def decide(self, accepted: bool, timed_out: bool = False) -> None:
        assert self.flight is not None
        if accepted:
            self.log.append(self.events[self.flight])
            self.accepted_ids.append(self.flight)
        self.results.append((self.flight, accepted, timed_out))
        self.replies.append((self.flight, accepted, timed_out))
        self.flight = None
        if self.pending:
            self._start(self.pending.pop(0))

    def _start(self, request_id: str) -> None:
        self.flight = request_id
        self.started.append(request_id)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_random_flows_match_the_reference_model(steps: list[tuple[str, int]]) -> None:
    scope = Scope(make_log(max_pending=3))
    model = Model(capacity=3)
    ids: list[str] = []
    asked: list[str] = []
    replied: list[tuple[str, bool, bool]] = []
    now = 1_000
    for kind, n in steps:
        now += 10
        if kind == "store":
            request_id = f"r{len(ids)}"
            ids.append(request_id)
            model.events[request_id] = bid(n, f"b{len(ids)}")
        elif kind == "again" and ids:
            # Stored again: ignored while pending, answered with the first result once
            # accepted (the scope remembers the latest accepted ids), a new request once
            # rejected.
            request_id = ids[n % len(ids)]
        if kind in ("store", "again") and ids:
            state = scope.store(model.events[request_id], request_id, now_ms=now)
            model.store(request_id)
        elif kind in ("pass", "fail") and model.flight is not None:
            state = (scope.accept if kind == "pass" else scope.reject)(model.flight, now_ms=now)
            model.decide(kind == "pass")
        elif kind == "late" and ids:
            request_id = ids[n % len(ids)]
            state = scope.accept(request_id, now_ms=now)
            if request_id == model.flight:
                model.decide(True)
            else:
                model.late += 1
        elif kind == "timeout" and model.flight is not None:
            state = scope.fire(now_ms=now)
            model.decide(False, timed_out=True)
        elif kind == "boot":
            state = scope.boot(now_ms=now)
        else:
            continue
        asked += [r.request_id for r in requests(state) if r.attempt == 1]
        replied += [(r.request_id, r.was_accepted, r.timed_out) for r in results(state)]
        for record in records(state):
            assert record.seq == len(model.log) and record.event == model.log[-1]
        if not ids:
            assert scope.data is None
            continue
        data = scope_data(scope)
        assert (data.in_flight.request_id if data.in_flight else None) == model.flight
        assert [p.request_id for p in data.queue] == model.pending, "the queue is FIFO"
        assert data.seq == len(model.log) == data.accepted
        assert data.recent == model.log
        assert data.rejected == len(model.results) - len(model.log)
        assert data.late == model.late
        assert (VALIDATION_TIMER in scope.timers) == (model.flight is not None)
    assert replied == model.replies, "every result, in the order decided"
    assert asked == model.started, "each request is asked once, in arrival order"


def test_a_store_read_from_a_backlog_gets_its_whole_validation_timeout() -> None:
    log = make_log()
    state = cell_state(
        log,
        cell_id=LOT,
        message=("store", {"event": {"lot": LOT, "bidder": "ann", "amount": 100}}),
        now_ms=1_000,
        clock_ms=60_000,
    )
    log.handle_message(state)
    assert state.data is not None and state.data.in_flight is not None
    assert state.data.in_flight.deadline_ms == 60_000 + log.timeout_ms
    assert state.timers == {VALIDATION_TIMER: 60_000 + log.timeout_ms}


def test_a_store_repeating_an_accepted_request_gets_its_first_result_back() -> None:
    scope = Scope(make_log())
    scope.store(bid(100), "r1")
    scope.accept("r1")
    scope.store(bid(120), "r2")
    scope.accept("r2")
    before = scope_data(scope)
    assert before.accepted_ids == ["1:r1", "2:r2"]

    again = scope.store(bid(100), "r1")  # a caller retrying after a lost reply
    [result] = results(again)
    assert (result.was_accepted, result.duplicate, result.seq) == (True, True, 1)
    [(_, reply)] = published(again, REPLIES)
    assert Reply.model_validate(reply).events == 0, "the repeat appended nothing"
    assert result.stored_event == bid(100)
    assert [r[0] for r in again._outputs.records] == [REPLIES]  # no request, no event
    assert scope_data(scope) == before


def test_a_scope_remembers_only_the_latest_accepted_ids() -> None:
    log = make_log()
    log.remember_accepted = 2
    scope = Scope(log)
    for n, request_id in enumerate(("r1", "r2", "r3"), start=1):
        scope.store(bid(100 * n), request_id)
        scope.accept(request_id)
    assert scope_data(scope).accepted_ids == ["2:r2", "3:r3"]
    scope.store(bid(500), "r1")  # forgotten: validated again
    assert scope_data(scope).in_flight is not None
    assert scope_data(scope).in_flight.request_id == "r1"  # type: ignore[union-attr]
