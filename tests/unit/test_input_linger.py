"""``input_linger_ms``: how long the broker may hold a fetch of the cell input topics.

No broker: the batched input's consumer configuration is read, not used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from pydantic import ValidationError

from stream_app.kafka.batch_input import LINGER_FETCH_BYTES, BatchInput
from stream_app.settings import Settings
from tests.unit.offline_input import offline_batch_input

MakeReader = Callable[..., BatchInput]


@pytest.fixture
def make_reader() -> Iterator[MakeReader]:
    with ExitStack() as stack:

        def make(**options: Any) -> BatchInput:
            settings = Settings(app_id="linger", bootstrap_servers="127.0.0.1:9", **options)
            return stack.enter_context(offline_batch_input(settings))

        yield make


def test_without_a_linger_a_fetch_returns_with_the_first_record(make_reader: MakeReader) -> None:
    config = make_reader()._consumer_config()
    assert config["fetch.min.bytes"] == 1
    assert config["fetch.wait.max.ms"] == 100


def test_a_linger_lets_the_broker_hold_a_fetch_for_that_long(make_reader: MakeReader) -> None:
    config = make_reader(input_linger_ms=5)._consumer_config()
    assert config["fetch.wait.max.ms"] == 5
    assert config["fetch.min.bytes"] == LINGER_FETCH_BYTES


@pytest.mark.parametrize("bad", [-1, 1001])
def test_a_linger_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValidationError, match="input_linger_ms"):
        Settings(input_linger_ms=bad)
