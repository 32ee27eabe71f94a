"""The batched input's interval commits under ``at_least_once``: the group commit runs while
input keeps flowing, and the next commit, a rebalance or a stop waits for it first.

No broker: the group commit (Faust's consumer) is a stand-in that finishes when the test says,
and the app a stand-in with Faust's producer flush and commit interval. The outputs producer is
not made (no record was produced), so the flush before each commit has nothing to wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from stream_app.kafka import batch_input as batch_input_module
from stream_app.kafka.batch_input import BatchInput
from stream_app.settings import Settings
from tests.unit.offline_input import offline_batch_input

INPUT = TP("bg.counter.in", 1)


class Group:
    """Faust's consumer commit, held until :meth:`release`; notes every commit asked for."""

    def __init__(self, *, fail: bool = False) -> None:
        self.asked: list[dict[TP, int]] = []
        self.released = asyncio.Event()
        self.fail = fail

    async def commit(self, consumer: Any, offsets: dict[TP, int]) -> bool:
        self.asked.append(dict(offsets))
        await self.released.wait()
        if self.fail:
            raise RuntimeError("the group refused the commit")
        return True

    def release(self) -> None:
        self.released.set()


async def _flush() -> None:
    """Faust's producer flush, with nothing to send."""


@pytest.fixture
def reader() -> Iterator[BatchInput]:
    with offline_batch_input(Settings(app_id="bg", bootstrap_servers="127.0.0.1:9")) as reader:
        reader.app = SimpleNamespace(
            producer=SimpleNamespace(flush=_flush),
            consumer=object(),
            conf=reader.app.conf,
            exactly_once=False,
        )
        yield reader


def _use(monkeypatch: pytest.MonkeyPatch, group: Group) -> None:
    monkeypatch.setattr(batch_input_module, "commit_offsets", group.commit)


def test_an_interval_commit_returns_before_the_group_answers(
    reader: BatchInput, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = Group()
    _use(monkeypatch, group)

    async def scenario() -> tuple[bool, dict[TP, int], int, dict[TP, int], int]:
        reader._processed[INPUT] = 5
        await reader._commit(wait=False)  # returns with the group commit in flight
        in_flight = reader._committing is not None and not reader._committing.done()
        pending, commits_before = dict(reader._processed), reader.commits
        group.release()
        await reader._settle()
        return in_flight, pending, commits_before, dict(reader._processed), reader.commits

    in_flight, pending, commits_before, after, commits = asyncio.run(scenario())
    assert in_flight
    # Not committed until the group answered: still pending, not counted.
    assert pending == {INPUT: 5}
    assert commits_before == 0
    assert after == {}
    assert commits == 1
    assert group.asked == [{INPUT: 5}]


def test_the_next_commit_waits_for_the_one_in_flight_and_keeps_newer_offsets(
    reader: BatchInput, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = Group()
    _use(monkeypatch, group)

    async def scenario() -> tuple[list[dict[TP, int]], dict[TP, int], bool]:
        reader._processed[INPUT] = 5
        await reader._commit(wait=False)
        # A record processed while the group commit is in flight.
        reader._processed[INPUT] = 8
        drain = asyncio.ensure_future(reader._commit())  # as a rebalance or a stop does
        for _ in range(5):
            await asyncio.sleep(0)
        asked_while_held = list(group.asked)
        held = not drain.done()
        group.release()
        await drain
        return asked_while_held, dict(reader._processed), held

    asked_while_held, processed, held = asyncio.run(scenario())
    # The second commit did not start before the first was answered ...
    assert asked_while_held == [{INPUT: 5}]
    assert held
    # ... then committed the newer offset, in order, and nothing is left pending.
    assert group.asked == [{INPUT: 5}, {INPUT: 8}]
    assert processed == {}
    assert reader.commits == 2


def test_a_failed_background_commit_fails_the_next_commit(
    reader: BatchInput, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = Group(fail=True)
    _use(monkeypatch, group)

    async def scenario() -> None:
        reader._processed[INPUT] = 5
        await reader._commit(wait=False)
        group.release()
        await reader._commit()

    with pytest.raises(RuntimeError, match="refused"):
        asyncio.run(scenario())
    # Nothing was taken as committed: the offset is committed again (or read again).
    assert reader._processed == {INPUT: 5}
    assert reader.commits == 0
