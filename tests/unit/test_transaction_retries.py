"""How a transaction call is tried again after a retriable error (``_retrying``)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream_app.kafka import batch_input
from stream_app.kafka.batch_input import _retrying


def failure(code: int, *, retriable: bool) -> KafkaException:
    return KafkaException(KafkaError(code, "from the test", retriable=retriable))


class Calls:
    """A transaction call that fails with ``errors`` in turn, then succeeds."""

    def __init__(self, *errors: KafkaException) -> None:
        self.errors = list(errors)
        self.timeouts: list[float] = []

    def __call__(self, timeout: float) -> None:
        self.timeouts.append(timeout)
        if self.errors:
            raise self.errors.pop(0)


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_input, "TXN_RETRY_PAUSE_S", 0.01)
    monkeypatch.setattr(batch_input, "TXN_RETRY_PAUSE_MAX_S", 0.04)


def test_a_coordinator_that_keeps_loading_is_waited_for_within_the_timeout() -> None:
    loading = failure(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=True)
    call = Calls(*[loading] * 6)
    _retrying(call, 5.0)
    assert len(call.timeouts) == 7, "six failures, then the try that succeeds"
    assert call.timeouts == sorted(call.timeouts, reverse=True), "each try gets what is left"
    assert call.timeouts[0] == pytest.approx(5.0, abs=0.05)


def test_the_pauses_double_up_to_their_cap() -> None:
    loading = failure(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=True)
    call = Calls(*[loading] * 5)
    began = time.monotonic()
    _retrying(call, 5.0)
    # 0.01 + 0.02 + 0.04 + 0.04 + 0.04 seconds of pauses.
    assert 0.15 <= time.monotonic() - began < 1.0
    gaps = [a - b for a, b in zip(call.timeouts, call.timeouts[1:], strict=False)]
    assert gaps[1] > gaps[0] and gaps[2] > gaps[1]


def test_a_retriable_error_that_outlasts_the_timeout_is_raised() -> None:
    loading = failure(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=True)
    call = Calls(*[loading] * 1000)
    with pytest.raises(KafkaException) as raised:
        _retrying(call, 0.3)
    assert raised.value.args[0].code() == KafkaError.COORDINATOR_LOAD_IN_PROGRESS
    assert 3 <= len(call.timeouts) < 1000


@pytest.mark.parametrize(
    "error",
    [
        failure(KafkaError._TIMED_OUT, retriable=True),
        failure(KafkaError._PREV_IN_PROGRESS, retriable=True),
        failure(KafkaError._FENCED, retriable=False),
    ],
    ids=["timed-out", "earlier-call-running", "not-retriable"],
)
def test_a_time_out_a_call_refused_for_a_running_one_or_a_fatal_error_is_raised_at_once(
    error: KafkaException,
) -> None:
    call = Calls(error)
    with pytest.raises(KafkaException):
        _retrying(call, 5.0)
    assert len(call.timeouts) == 1
