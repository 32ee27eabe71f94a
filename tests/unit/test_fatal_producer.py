"""A fenced transactional producer: the cause of its fatal error reaches the log and the error.

librdkafka fails every call on a producer that hit a fatal error with a bare "Local: Fatal
error"; the cause (a fence by a newer instance, most often) comes once, through the producer's
``error_cb``, when its events are served. No broker: the producer is a stand-in that behaves
as a fenced one does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from faust.types import TP

from stream_app.errors import TransactionError
from stream_app.kafka.batch_input import BatchInput
from stream_app.settings import Settings
from tests.unit.offline_input import offline_batch_input

INPUT = TP("fatal.counter.in", 2)


class FencedProducer:
    """Fails every produce as a fenced producer does; serving its events reports the fence."""

    def __init__(self, error_cb: Callable[[KafkaError], None]) -> None:
        self.error_cb = error_cb
        self.polled = 0

    def begin_transaction(self) -> None:
        """The transaction began before the fence was known."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        raise KafkaException(KafkaError(KafkaError._FATAL))

    def poll(self, timeout: float) -> int:
        self.polled += 1
        self.error_cb(
            KafkaError(
                KafkaError._FENCED,
                "Producer fenced by newer instance: Broker: Producer attempted an operation "
                "with an old epoch",
                fatal=True,
            )
        )
        return 1


@pytest.fixture
def batch_input() -> Iterator[BatchInput]:
    settings = Settings(
        app_id="fatal", bootstrap_servers="127.0.0.1:9", processing_guarantee="exactly_once"
    )
    with offline_batch_input(settings) as reader:
        yield reader


def test_a_produce_on_a_fenced_producer_names_the_fence(
    batch_input: BatchInput, caplog: pytest.LogCaptureFixture
) -> None:
    config = batch_input._transaction_config(INPUT)
    producer = FencedProducer(config["error_cb"])
    batch_input._transactions[INPUT] = producer  # type: ignore[assignment]
    with (
        caplog.at_level(logging.ERROR, logger="stream_app.kafka.batch_input"),
        pytest.raises(TransactionError) as raised,
    ):
        batch_input.send(INPUT, "fatal-counter-changelog", b"k", b"v", 2)
    message = str(raised.value)
    assert "Local: Fatal error" in message
    assert "This instance has been fenced by a newer instance" in message
    assert "old epoch" in message
    assert producer.polled == 1
    [record] = [r for r in caplog.records if "failed fatally" in r.getMessage()]
    assert "fatal.counter.in[2]" in record.getMessage()
    assert "fenced by a newer instance" in record.getMessage()


def test_errors_that_are_not_fatal_are_not_taken_for_a_cause(batch_input: BatchInput) -> None:
    on_error = batch_input._transaction_config(INPUT)["error_cb"]
    on_error(KafkaError(KafkaError._TRANSPORT, "broker down"))
    assert batch_input._fatal == {}
    on_error(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    on_error(KafkaError(KafkaError._FATAL, "later", fatal=True))
    assert batch_input._fatal == {
        INPUT: "Local: This instance has been fenced by a newer instance (fenced)"
    }
