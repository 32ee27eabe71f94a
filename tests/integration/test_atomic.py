"""Atomic logs on a real broker, in a real exactly-once ``faust worker`` (``tests.apps.
atomic_probe``): a scripted remote validator's answers, refusals, timeouts and late answers;
concurrent bidders in three processes against a remote and an in-worker validator; the log
and the scopes after a restart.

One worker serves the whole file (each test uses scopes of its own); the second test restarts
it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stream_app.clients.atomic import AtomicClient, serve_validator
from stream_app.clients.entities import EntityClient
from stream_app.core.atomic import AtomicResult, ValidationRequest, ValidationResponse
from stream_app.core.dead_letters import DeadLetter
from stream_app.settings import Settings
from stream_app.testing import (
    WorkerProcess,
    keyed_producer,
    read_topic,
    settings_from_env,
    wait_for,
)
from stream_app.testing.counts import produce_acked
from stream_app.testing.dev_broker import find_free_port, session_name
from tests.apps.atomic_logs import TIMEOUT, Bid, bids, lots, outbids, scripted
from tests.atomic_support import (
    AtomicModel,
    ScriptedValidator,
    Verdict,
    cell,
    replies_per_request,
    result_of,
    store_futures,
)

pytestmark = pytest.mark.integration

MODULE = "tests.apps.atomic_probe"
ROOT = Path(__file__).resolve().parents[2]
BIDDERS = 3
BIDS_EACH = 8


@dataclass
class Probe:
    """The file's worker and what it was started with."""

    env: dict[str, str]
    settings: Settings
    worker: WorkerProcess
    folder: Path

    def restart(self) -> None:
        """Stop the worker (SIGTERM) and start it again on the same data directory."""
        assert self.worker.stop() == 0, self.worker.log_text()[-3000:]
        self.worker = WorkerProcess(
            MODULE, env=self.env, log_path=self.folder / "worker-2.log", web_port=find_free_port()
        )
        self.worker.start()
        self.worker.wait_ready()


@pytest.fixture(scope="module")
def probe(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    """An exactly-once worker of the probe logs (``scripted`` times out after 2 s)."""
    folder = tmp_path_factory.mktemp("atomic")
    env = {
        "STREAM_APP_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_APP_ID": session_name("t"),
        "STREAM_APP_DATA_DIR": str(folder / "data"),
        "STREAM_APP_PARTITIONS": "4",
        "STREAM_APP_SESSION_TIMEOUT_S": "6",
        "STREAM_APP_PROCESSING_GUARANTEE": "exactly_once",
        "ATOMIC_PROBE_SEEN": str(folder / "seen.jsonl"),
        "ATOMIC_PROBE_TIMEOUT_S": "2",
    }
    worker = WorkerProcess(
        MODULE, env=env, log_path=folder / "worker.log", web_port=find_free_port()
    )
    started = Probe(env, settings_from_env(env), worker, folder)
    try:
        worker.start()
        worker.wait_ready()
        yield started
    finally:
        started.worker.kill()


def test_answers_refusals_timeouts_and_late_answers_of_a_remote_validator(probe: Probe) -> None:
    """A scope's requests are decided in order, one at a time: accepted (as given, or as the
    validator normalised it), refused with the validator's reason and meta, or timed out with
    the log's timeout reason, after which the next one proceeds. A late answer, or a second
    one, changes nothing and is counted."""
    settings = probe.settings
    plan: dict[int, Verdict] = {1: "silent", 2: "pass", 3: "fail", 4: "silent", 5: "normalise"}
    validator = ScriptedValidator(
        settings, "scripted", lambda r: plan[int(r.prospective_event["n"])]
    )
    validator.start()
    model = AtomicModel("scripted")
    events = [{"scope": "t1", "n": n} for n in plan] + [{"scope": "t2", "n": 6}]
    plan[6] = "pass"
    try:
        with EntityClient(settings) as client:
            sent = store_futures(client, "scripted", events)
            for (request_id, _), event in zip(sent, events, strict=True):
                model.store(request_id, event, plan[event["n"]])
            results = {request_id: result_of(future) for request_id, future in sent}
        model.check_asks(validator.asked())
        model.check_results(results)
        assert not model.unplanned_timeouts, "the machine was too slow for a 2 s timeout"

        first, second, third, fourth, fifth, other = (results[rid] for rid, _ in sent)
        # A timeout: the log's reason, nothing stored; the request behind it proceeded.
        assert first.timed_out and first.reason == TIMEOUT.model_dump() and first.seq == 0
        assert second.was_accepted and second.seq == 1 and second.meta == {"n": 2}
        # A refusal: the validator's reason and meta, the scope's events unchanged.
        assert not third.was_accepted and not third.timed_out
        assert third.reason == {"code": "refused", "detail": "n=3"} and third.meta == {"n": 3}
        assert third.seq == 1 and third.stored_event_list == [{"scope": "t1", "n": 2}]
        assert fourth.timed_out
        # A normalised event is stored as the validator returned it.
        assert fifth.stored_event == {"scope": "t1", "n": 5000} and fifth.seq == 2
        assert other.was_accepted and other.seq == 1  # t2 was never held up by t1

        # Late answers: to the first timed-out request, and a second answer to the accepted
        # one. Both are ignored (nothing appended) and counted.
        late = ValidationResponse(request_id=first.request_id, scope="t1", validation_did_pass=True)
        validator.answer(late)
        validator.answer(
            ValidationResponse(request_id=second.request_id, scope="t1", validation_did_pass=False)
        )
        model.wait_cells(probe.worker, validator.sent, "the late answers counted")
        assert cell(probe.worker, "scripted", "t1")["late"] == 2
        with AtomicClient(scripted, settings) as atomic:
            for scope in ("t1", "t2"):
                model.check_log(scope, atomic.records(scope))
            assert atomic.query_events("t1") == [
                scripted.event_model(scope="t1", n=2),
                scripted.event_model(scope="t1", n=5000),
            ]
        # Every request got one result, and only one.
        replies = replies_per_request(settings)
        assert {rid: replies[rid] for rid, _ in sent} == {rid: 1 for rid, _ in sent}
    finally:
        validator.halt()
    assert not validator.errors


def run_bidders(settings: Settings, env: dict[str, str], lot: str) -> list[dict[str, Any]]:
    """Run :data:`BIDDERS` bidder processes at once; every result line they printed."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.apps.atomic_bidder", lot, f"b{i}", str(BIDS_EACH)],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        for i in range(BIDDERS)
    ]
    lines: list[dict[str, Any]] = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-3000:]
        lines.extend(json.loads(line) for line in out.decode().splitlines())
    return lines


#: A validation request as a test noted it: request id, seq, the past bids' amounts.
Asked = tuple[str, int, list[int]]


def check_auction(
    log: str, results: list[AtomicResult], records: list[Any], asked: list[Asked]
) -> None:
    """One lot's outcome: accepted bids strictly increase in seq order, each in the log once at
    its result's seq, refusals carry the highest bid; the validator was asked each request
    once, with the lot's log as it stood when the request before it was decided (never two of
    the lot's requests at once)."""
    accepted = sorted((r for r in results if r.was_accepted), key=lambda r: r.seq)
    assert [r.seq for r in accepted] == list(range(1, len(accepted) + 1)), "seq without gaps"
    assert [(rec.seq, rec.request_id, rec.event) for rec in records] == [
        (r.seq, r.request_id, r.stored_event) for r in accepted
    ], f"{log}: the log is not the accepted results"
    amounts = [rec.event["amount"] for rec in records]
    assert amounts == sorted(set(amounts)), f"{log}: accepted bids do not strictly increase"
    for r in results:
        if not r.was_accepted:
            assert r.reason == {"code": "too-low", "detail": ""}, r
            top = max((e["amount"] for e in r.stored_event_list), default=0)
            assert r.meta == {"highest": top} and r.prospective_event["amount"] <= top, r
    assert sorted(rid for rid, _, _ in asked) == sorted(r.request_id for r in results)
    seq_before = {r.request_id: r.seq - int(r.was_accepted) for r in results}
    for request_id, seq, past in asked:
        assert seq == seq_before[request_id] and past == amounts[:seq], (request_id, seq, past)


def test_concurrent_bidders_on_remote_and_in_worker_validators_then_a_restart(
    probe: Probe,
) -> None:
    """Three bidder processes bid on one lot of ``lots`` (validated remotely, by
    serve_validator in this process) and one of ``bids`` (validated in the worker) at once."""
    settings = probe.settings
    seen: list[Asked] = []
    stopping = threading.Event()

    def noting(request: ValidationRequest) -> ValidationResponse:
        seen.append((request.request_id, request.seq, [e["amount"] for e in request.past_events]))
        return outbids(request)

    remote = threading.Thread(
        target=serve_validator,
        args=("lots", noting, settings),
        kwargs={"stop": stopping.is_set},
        daemon=True,
    )
    remote.start()
    try:
        lines = run_bidders(settings, probe.env, "lot-1")
    finally:
        stopping.set()
        remote.join(timeout=60)
    by_log: dict[str, list[AtomicResult]] = {"lots": [], "bids": []}
    for line in lines:
        by_log[line["log"]].append(AtomicResult.model_validate(line))
    in_worker: list[Asked] = [
        (noted["request_id"], noted["seq"], noted["past"])
        for noted in map(json.loads, (probe.folder / "seen.jsonl").read_text().splitlines())
        if noted["scope"] == "lot-1"
    ]
    replies = replies_per_request(settings)
    logs = {"lots": lots, "bids": bids}
    with AtomicClient(lots, settings) as on_lots, AtomicClient(bids, settings) as on_bids:
        clients = {"lots": on_lots, "bids": on_bids}
        for log, results in by_log.items():
            assert len(results) == BIDDERS * BIDS_EACH
            assert all(replies[r.request_id] == 1 for r in results), "one result per request"
            records = clients[log].records("lot-1")
            asked = seen if log == "lots" else in_worker
            check_auction(log, results, records, asked)
            accepted, total = sum(r.was_accepted for r in results), len(results)
            assert 0 < accepted < len(results), "the bidders competed"
            wait_for(
                lambda log=log: cell(probe.worker, log, "lot-1"),
                lambda data, accepted=accepted, total=total: (
                    data["accepted"] == accepted
                    and data["rejected"] == total - accepted
                    and data["late"] == 0
                    and data["in_flight"] is None
                ),
                timeout=30,
                what=f"{log}/lot-1's counts",
            )

        # After a restart: the log reads the same, and the lots continue where they were.
        before = {log: clients[log].query_events("lot-1") for log in logs}
        probe.restart()
        stopping.clear()
        remote = threading.Thread(
            target=serve_validator,
            args=("lots", outbids, settings),
            kwargs={"stop": stopping.is_set},
            daemon=True,
        )
        remote.start()
        try:
            for log, client in clients.items():
                events = client.query_events("lot-1")
                assert events == before[log]
                assert events == [
                    Bid.model_validate(r.stored_event)
                    for r in sorted(by_log[log], key=lambda r: r.seq)
                    if r.was_accepted
                ]
                top = events[-1].amount
                low = client.store_if_valid(Bid(lot="lot-1", bidder="late", amount=top))
                assert not low.was_accepted and low.meta == {"highest": top}
                assert low.seq == len(events)
                high = client.store_if_valid(Bid(lot="lot-1", bidder="late", amount=top + 1))
                assert high.was_accepted and high.seq == len(events) + 1
                assert high.stored_event_list[:-1] == [e.model_dump() for e in events]
        finally:
            stopping.set()
            remote.join(timeout=60)


def test_malformed_stores_answers_and_requests_are_dead_lettered_with_their_reason(
    probe: Probe, bootstrap: str
) -> None:
    """What can never apply to a scope goes to the dead-letter topic with its reason, changes
    nothing, and the worker goes on deciding the next good request."""
    settings = probe.settings
    store = {"type": "store", "id": "dl-store"}
    bad_inputs = [
        # The event's scope is not the record key.
        (b"dl-1", {**store, "body": {"event": {"lot": "elsewhere", "bidder": "x", "amount": 1}}}),
        # The event fails the log's model.
        (b"dl-2", {**store, "body": {"event": {"lot": "dl-2", "bidder": "x"}}}),
        # A validator's answer for another scope.
        (
            b"dl-3",
            {
                "type": "validation-response",
                "id": "dl-answer",
                "body": {"request_id": "r", "scope": "elsewhere", "validation_did_pass": True},
            },
        ),
    ]
    produce_acked(
        keyed_producer(bootstrap),
        settings.input_topic(bids.name),
        [(key, json.dumps(value).encode()) for key, value in bad_inputs],
    )
    # Not a ValidationRequest, on the topic the in-worker validator serves.
    produce_acked(
        keyed_producer(bootstrap), settings.validation_topic(bids.name), [(b"dl-4", b"{}")]
    )
    letters = wait_for(
        lambda: {
            letter.key: letter
            for letter in (
                DeadLetter.from_record(r.key, r.value, r.headers)
                for r in read_topic(bootstrap, settings.dead_letter_topic)
            )
            if letter.key in (b"dl-1", b"dl-2", b"dl-3", b"dl-4")
        },
        lambda found: len(found) == 4,
        timeout=60,
        what="four dead letters",
    )
    assert {key: letter.reason for key, letter in letters.items()} == {
        b"dl-1": "atomic",
        b"dl-2": "atomic",
        b"dl-3": "atomic",
        b"dl-4": "schema",
    }
    assert "the record key must be the scope" in letters[b"dl-1"].error
    assert "not a valid event" in letters[b"dl-2"].error
    assert "not a validation request" in letters[b"dl-4"].error
    assert all(letter.behaviour == bids.name for letter in letters.values())
    with AtomicClient(bids, settings) as client:
        result = client.store_if_valid(Bid(lot="dl-1", bidder="ann", amount=5))
        assert result.was_accepted and result.seq == 1, result
        assert client.query_events("dl-2") == []
