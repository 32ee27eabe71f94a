"""An atomic log's validation in flight, asked again when its partition boots after a restart:
its new deadline counts from the boot, not from the (old) record the boot came with; and a
store read long after it was produced counts its deadline from when it is read."""

from __future__ import annotations

from pydantic import BaseModel

from stream_app.api.atomic import AtomicLog
from stream_app.core.atomic import StoreRequest, ValidationRequest
from tests.unit.engine.fakes import APP, Harness, now_ms

TIMEOUT_S = 5


class Entry(BaseModel):
    scope: str
    n: int


class Why(BaseModel):
    code: str


def entries() -> AtomicLog[Entry, Why]:
    log: AtomicLog[Entry, Why] = AtomicLog(
        "entries",
        event=Entry,
        reason=Why,
        scope=lambda entry: entry.scope,
        timeout_reason=Why(code="timeout"),
        validation_timeout=TIMEOUT_S,
    )
    log.bind(
        input_topic=f"{APP}.entries.in",
        validation_topic=f"{APP}.entries.validation",
        events_topic=f"{APP}.entries.events",
    )
    return log


def test_a_boot_on_an_old_record_gives_the_request_in_flight_a_full_timeout() -> None:
    log = entries()
    harness = Harness(log)
    hour_ago = now_ms() - 3_600_000
    first_read = now_ms()
    store = StoreRequest(event={"scope": "s", "n": 1}).model_dump()
    harness.feed(harness.record("s", "store", store, id="r1", timestamp_ms=hour_ago))
    harness.restart()
    # The first record read after the restart is an old one (read again, or long queued).
    booted_at = now_ms()
    second = StoreRequest(event={"scope": "s", "n": 2}).model_dump()
    harness.feed(harness.record("s", "store", second, id="r2", timestamp_ms=hour_ago))
    asked = [
        ValidationRequest.model_validate_json(p.value or b"")
        for p in harness.outputs(f"{APP}.entries.validation")
    ]
    assert [(a.request_id, a.attempt) for a in asked] == [("r1", 1), ("r1", 2)]
    # A store read long after it was produced gets its whole timeout too.
    assert first_read + TIMEOUT_S * 1000 <= asked[0].deadline_ms <= booted_at + TIMEOUT_S * 1000
    assert asked[1].deadline_ms >= booted_at + TIMEOUT_S * 1000
    assert asked[1].deadline_ms <= now_ms() + TIMEOUT_S * 1000
    assert harness.data("s")["queue"][0]["request_id"] == "r2"  # type: ignore[index]
