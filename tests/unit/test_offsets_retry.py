"""Recovery's offset requests ask again while a partition's leader is moving (a topic just
created, a broker restarting) instead of stopping the worker."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from faust.types import TP

from stream_app.kafka import faust_patches

#: Not an error: the first answers give offset -1 (a leader that does not know it yet).
UNKNOWN = -12345


class FlakyAdmin:
    """An admin client whose first ``answers`` list_offsets calls fail with ``error``."""

    def __init__(self, config: dict[str, Any], *, failures: int, error: int) -> None:
        self.calls = 0
        self.failures = failures
        self.error = error
        self.timeouts: list[float] = []
        #: Clients made (one per try after an unknown offset or a leader moving).
        self.clients = 0

    def list_offsets(
        self, request: dict[Any, Any], *, request_timeout: float, **_: Any
    ) -> dict[Any, Future[Any]]:
        self.calls += 1
        self.timeouts.append(request_timeout)
        answers: dict[Any, Future[Any]] = {}
        for asked in request:
            future: Future[Any] = Future()
            if self.calls <= self.failures and self.error == UNKNOWN:
                future.set_result(SimpleNamespace(offset=-1))
            elif self.calls <= self.failures:
                future.set_exception(KafkaException(KafkaError(self.error)))
            else:
                future.set_result(SimpleNamespace(offset=7))
            answers[asked] = future
        return answers


def patched_consumer(
    monkeypatch: pytest.MonkeyPatch, admin: FlakyAdmin, *, request_timeout: float = 1.0
) -> Any:
    def made(config: dict[str, Any]) -> FlakyAdmin:
        admin.clients += 1
        return admin

    monkeypatch.setattr(faust_patches, "AdminClient", made)
    monkeypatch.setattr(faust_patches, "LEADER_WAIT_S", 5.0)
    app: Any = SimpleNamespace(
        kafka_config={"bootstrap.servers": "127.0.0.1:1"},
        conf=SimpleNamespace(broker_request_timeout=request_timeout),
        exactly_once=False,
    )
    consumer = SimpleNamespace()
    faust_patches.list_offsets_in_one_request(consumer, app)
    return consumer


def test_offsets_are_asked_again_while_the_leader_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FlakyAdmin({}, failures=2, error=KafkaError.NOT_LEADER_FOR_PARTITION)
    consumer = patched_consumer(monkeypatch, admin)
    found = asyncio.run(consumer.earliest_offsets(TP("t", 0)))
    assert found == {TP("t", 0): 7}
    assert admin.calls == 3


def test_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FlakyAdmin({}, failures=1, error=KafkaError.TOPIC_AUTHORIZATION_FAILED)
    consumer = patched_consumer(monkeypatch, admin)
    with pytest.raises(KafkaException):
        asyncio.run(consumer.highwaters(TP("t", 0)))
    assert admin.calls == 1


def test_a_try_that_times_out_is_asked_again_each_try_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A leader that died without the client knowing yet: the request waits for its time-out.
    # Faust's broker_request_timeout (90 s) is not what one try waits.
    admin = FlakyAdmin({}, failures=2, error=KafkaError._TIMED_OUT)
    consumer = patched_consumer(monkeypatch, admin, request_timeout=90.0)
    found = asyncio.run(consumer.highwaters(TP("t", 0)))
    assert found == {TP("t", 0): 7}
    assert admin.calls == 3
    assert set(admin.timeouts) == {faust_patches.LIST_OFFSETS_TRY_S}


def test_an_offset_the_leader_does_not_know_yet_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # -1 for a partition that holds records became a high watermark of -1, and recovery
    # stopped the worker with a ConsistencyError (the tables' persisted offset was higher).
    admin = FlakyAdmin({}, failures=2, error=UNKNOWN)
    consumer = patched_consumer(monkeypatch, admin)
    assert asyncio.run(consumer.highwaters(TP("t", 0))) == {TP("t", 0): 7}
    assert admin.calls == 3
    # librdkafka answers -1 when the request to a leader timed out, and its metadata may still
    # name a leader that died: each try after one is made with a new client.
    assert admin.clients == 3


def test_an_offset_still_unknown_at_the_deadline_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = FlakyAdmin({}, failures=10_000, error=UNKNOWN)
    consumer = patched_consumer(monkeypatch, admin)
    monkeypatch.setattr(faust_patches, "LEADER_WAIT_S", 0.5)
    with pytest.raises(KafkaException, match="no offset known"):
        asyncio.run(consumer.earliest_offsets(TP("t", 0)))
