"""What the atomic-log tests share: a scriptable remote validator, a reference model of an
atomic log, and the checks that compare a run with it.

:class:`ScriptedValidator` is a remote validator in the test process: it reads the log's
validation topic (every partition, assigned, ``read_committed``: what any Kafka client of the
log would see), notes every request, and answers each as its plan says, or stays silent so
that the validation times out. :class:`AtomicModel` is the semantics of
:class:`~stream_app.api.atomic.AtomicLog` in plain Python (per scope: a FIFO of requests, the
head in flight, accepted events numbered 1, 2, ...); the tests feed it what they sent, then
check every :class:`~stream_app.core.atomic.AtomicResult`, every validation request and every
scope's log against it.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from stream_app.clients.entities import EntityClient
from stream_app.core.atomic import (
    AtomicEventRecord,
    AtomicResult,
    StoreRequest,
    ValidationRequest,
    ValidationResponse,
    response_envelope,
)
from stream_app.core.partitioner import partition_for
from stream_app.core.replies import Reply
from stream_app.settings import Settings
from stream_app.testing import keyed_producer, read_topic, wait_for
from tests.apps.atomic_logs import TIMEOUT

#: What the scripted validator does with a request: accept it, accept it normalised (its
#: ``n`` times 1000), refuse it, or say nothing (it times out).
Verdict = Literal["pass", "normalise", "fail", "silent"]

#: A plan: the verdict on a request (by its request, so it may depend on the attempt).
Plan = Callable[[ValidationRequest], Verdict]


def refusal(n: int) -> dict[str, Any]:
    """The reason the scripted validator gives when it refuses the entry ``n``."""
    return {"code": "refused", "detail": f"n={n}"}


def scripted_answer(request: ValidationRequest, verdict: Verdict) -> ValidationResponse | None:
    """The scripted validator's answer to ``request`` (``None`` for ``silent``); ``meta`` is
    ``{"n": n}`` on both outcomes."""
    n = int(request.prospective_event["n"])
    if verdict == "silent":
        return None
    base = {"request_id": request.request_id, "scope": request.scope, "meta": {"n": n}}
    if verdict == "fail":
        return ValidationResponse(**base, validation_did_pass=False, reason=refusal(n))
    event = {**request.prospective_event, "n": n * 1000} if verdict == "normalise" else None
    return ValidationResponse(**base, validation_did_pass=True, event=event)


class ScriptedValidator(threading.Thread):
    """A remote validator of the log ``log`` that answers as ``plan`` says.

    Attributes:
        seen: Every request read, in the order read (per scope, the topic's order).
        sent: Answers produced, per scope (the scripted ones and :meth:`answer`'s).
        errors: What went wrong in the thread (the tests assert it stays empty).
    """

    def __init__(self, settings: Settings, log: str, plan: Plan) -> None:
        super().__init__(name=f"validator:{log}", daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.settings, self.log, self.plan = settings, log, plan
        self.seen: list[ValidationRequest] = []
        self.sent: Counter[str] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._producer = keyed_producer(settings.bootstrap_servers)
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": f"{settings.app_id}.{log}.scripted",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 20,
            }
        )
        topic = settings.validation_topic(log)
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.partitions)]
        )

    def run(self) -> None:
        """Read, note and answer requests until :meth:`halt`."""
        try:
            while not self._halt.is_set():
                for message in self._consumer.consume(num_messages=100, timeout=0.05):
                    if message.error() is not None:
                        continue
                    request = ValidationRequest.model_validate_json(message.value() or b"")
                    with self._lock:
                        self.seen.append(request)
                    response = scripted_answer(request, self.plan(request))
                    if response is not None:
                        self.answer(response)
        except Exception as exc:  # reported by the test, which asserts there is none
            self.errors.append(repr(exc))
        finally:
            self._consumer.close()

    def answer(self, response: ValidationResponse) -> None:
        """Produce ``response`` to the log's input (and wait until the broker has it)."""
        key = response.scope.encode()
        self._producer.produce(
            self.settings.input_topic(self.log),
            key=key,
            value=response_envelope(response),
            partition=partition_for(key, self.settings.partitions),
        )
        self._producer.flush(30)
        with self._lock:
            self.sent[response.scope] += 1

    def asked(self, scope: str | None = None) -> list[ValidationRequest]:
        """The requests read so far (of ``scope``, or all)."""
        with self._lock:
            return [r for r in self.seen if scope is None or r.scope == scope]

    def halt(self) -> None:
        """Stop reading, and wait until the thread is done."""
        self._halt.set()
        self.join(timeout=30)


def store_futures(
    client: EntityClient, log: str, events: list[dict[str, Any]]
) -> list[tuple[str, Future[Reply]]]:
    """Send ``store`` requests for the entries ``events`` (their scope is ``event["scope"]``)
    in this order, from one producer: each scope's requests reach its partition in this order.
    Returns ``(request_id, future of the reply)`` for each."""
    sent = []
    for event in events:
        future = client.request_future(
            (log, str(event["scope"])), "store", StoreRequest(event=event)
        )
        sent.append((future.correlation_id, future))  # type: ignore[attr-defined]
    return sent


def result_of(future: Future[Reply], timeout: float = 120.0) -> AtomicResult:
    """The :class:`AtomicResult` a reply carries (a rejection too: never a failed reply)."""
    reply = future.result(timeout)
    assert reply.ok, f"the worker refused a store: {reply}"
    return AtomicResult.model_validate(reply.state)


def replies_per_request(settings: Settings) -> Counter[str]:
    """How many committed replies the app's reply topic holds per request id."""
    return Counter(
        json.loads(r.value or b"{}")["correlation_id"]
        for r in read_topic(settings.bootstrap_servers, settings.replies_topic)
    )


def cell(worker: Any, log: str, scope: str) -> dict[str, Any]:
    """A scope's cell data as its owner shows it (``GET /stream-app/cells/<log>/<scope>/``)."""
    data: dict[str, Any] = worker.get_json(f"/stream-app/cells/{log}/{scope}/")["data"]
    return data


@dataclass
class ScopeModel:
    """One scope of the reference model.

    Attributes:
        events: The accepted events, with the request that stored each (seq = index + 1).
        arrivals: Every request sent to the scope, in order.
        decided: How many of them are decided (the next one is in flight).
        asked: The validation requests read, grouped by request in the order read.
        counts: ``accepted``, ``rejected``, ``timed_out`` (as :class:`AtomicScope` counts).
        applied: Validator answers that decided a request.
    """

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    arrivals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    decided: int = 0
    asked: list[tuple[str, list[ValidationRequest]]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    applied: int = 0

    @property
    def stored(self) -> list[dict[str, Any]]:
        """The scope's events."""
        return [event for _, event in self.events]


class AtomicModel:
    """An atomic log's semantics in plain Python, checking a run against them.

    Per scope: requests are decided one at a time in arrival order; the one in flight is asked
    (attempt 1, then 2, 3... after restarts of the worker, never interleaved with another
    request of the scope) with the scope's events so far; a ``pass`` appends the (maybe
    normalised) event as the next seq, a ``fail`` changes nothing, and a request whose answer
    does not come in time is rejected with the timeout reason. Any request may time out (an
    answer may come late on a busy machine); a ``silent`` one must.

    Attributes:
        unplanned_timeouts: Requests the plan answered that timed out anyway (reported).
        reasked: Requests asked more than once (after a worker restart).
    """

    def __init__(self, log: str) -> None:
        self.log = log
        self.scopes: defaultdict[str, ScopeModel] = defaultdict(ScopeModel)
        self.verdicts: dict[int, Verdict] = {}
        self.unplanned_timeouts: list[str] = []
        self.reasked: list[str] = []

    def store(self, request_id: str, event: dict[str, Any], verdict: Verdict) -> None:
        """A store request sent for ``event``, which the validator will judge ``verdict``."""
        self.verdicts[int(event["n"])] = verdict
        self.scopes[str(event["scope"])].arrivals.append((request_id, event))

    def check_asks(self, requests: list[ValidationRequest]) -> None:
        """Take the validation requests read since the last call, checking their order: per
        scope, the requests in arrival order, each asked at attempts 1, 2, 3... and never
        again once the next one is asked (one in flight per scope)."""
        for request in requests:
            scope = self.scopes[request.scope]
            if scope.asked and scope.asked[-1][0] == request.request_id:
                asks = scope.asked[-1][1]
                assert request.attempt == asks[-1].attempt + 1, (request, asks)
                asks.append(request)
                continue
            index = len(scope.asked)
            assert request.attempt == 1, request
            assert index < len(scope.arrivals), f"a request nobody sent: {request}"
            request_id, event = scope.arrivals[index]
            assert request.request_id == request_id, (
                f"{request.scope}: asked {request.request_id} (attempt {request.attempt}) "
                f"where the {index + 1}th request, {request_id}, was due (asked so far: "
                f"{[rid for rid, _ in scope.asked]})"
            )
            assert request.prospective_event == event and request.log == self.log, request
            scope.asked.append((request_id, [request]))

    def check_results(self, results: dict[str, AtomicResult]) -> None:
        """Decide every undecided request, scope by scope in arrival order, checking its
        result and what its validator was asked; all must have a result and have been asked."""
        for name, scope in self.scopes.items():
            while scope.decided < len(scope.arrivals):
                request_id, event = scope.arrivals[scope.decided]
                assert request_id in results, f"{name}: no result for {request_id}"
                assert scope.decided < len(scope.asked), f"{name}: {request_id} never asked"
                _, asks = scope.asked[scope.decided]
                for ask in asks:
                    assert ask.seq == len(scope.events), ask
                    assert ask.past_events == scope.stored, ask
                if len(asks) > 1:
                    self.reasked.append(request_id)
                self._decide(name, scope, request_id, event, results[request_id])
                scope.decided += 1

    def _decide(
        self,
        name: str,
        scope: ScopeModel,
        request_id: str,
        event: dict[str, Any],
        result: AtomicResult,
    ) -> None:
        assert result.request_id == request_id and result.scope == name, result
        assert result.log == self.log and result.prospective_event == event, result
        n = int(event["n"])
        verdict = self.verdicts[n]
        if result.timed_out or verdict == "silent":
            assert result.timed_out, f"{name}: a silent validation did not time out: {result}"
            assert not result.was_accepted and result.reason == TIMEOUT.model_dump(mode="json")
            assert result.meta is None and result.stored_event is None, result
            if verdict != "silent":
                self.unplanned_timeouts.append(request_id)
            scope.counts["rejected"] += 1
            scope.counts["timed_out"] += 1
        elif verdict == "fail":
            assert not result.was_accepted and result.stored_event is None, result
            assert result.reason == refusal(n) and result.meta == {"n": n}, result
            scope.counts["rejected"] += 1
            scope.applied += 1
        else:
            stored = {**event, "n": n * 1000} if verdict == "normalise" else event
            assert result.was_accepted and result.stored_event == stored, result
            assert result.reason is None and result.meta == {"n": n}, result
            scope.events.append((request_id, stored))
            scope.counts["accepted"] += 1
            scope.applied += 1
        assert result.seq == len(scope.events), (result, len(scope.events))
        assert result.stored_event_list == scope.stored, result

    def check_log(self, name: str, records: list[AtomicEventRecord]) -> None:
        """The scope's committed event log is the model's: each accepted event once, at its
        seq, with the request that stored it."""
        scope = self.scopes[name]
        got = [(r.seq, r.request_id, r.event, r.scope, r.log) for r in records]
        want = [
            (i + 1, request_id, event, name, self.log)
            for i, (request_id, event) in enumerate(scope.events)
        ]
        assert got == want

    def check_cell(self, name: str, data: dict[str, Any], answers_sent: int) -> bool:
        """Whether the scope's cell data is the model's: its seq, events, counts, nothing
        pending, and ``late`` = the answers sent that decided nothing."""
        scope = self.scopes[name]
        return (
            data["seq"] == len(scope.events)
            and data["recent"] == scope.stored
            and data["in_flight"] is None
            and data["queue"] == []
            and data["accepted"] == scope.counts["accepted"]
            and data["rejected"] == scope.counts["rejected"]
            and data["timed_out"] == scope.counts["timed_out"]
            and data["late"] == answers_sent - scope.applied
        )

    def wait_cells(self, worker: Any, sent: Counter[str], what: str) -> None:
        """Wait until every scope's cell is :meth:`check_cell`'s (late answers are counted
        when the worker reads them)."""
        wait_for(
            lambda: {name: cell(worker, self.log, name) for name in self.scopes},
            lambda cells: all(
                self.check_cell(name, data, sent[name]) for name, data in cells.items()
            ),
            timeout=60,
            what=what,
        )
