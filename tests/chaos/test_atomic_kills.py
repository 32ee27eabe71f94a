"""Atomic logs under SIGKILL, on a real broker, against the reference model of
:mod:`tests.atomic_support`.

The first test kills the worker while two validations are in progress, a remote one (the
scripted validator stays silent at the first attempt) and an in-worker one (held until a gate
file exists): after the restart each request is asked again with the same id, decided once,
and the requests queued behind them follow. The second is the model-based random test: a
seeded plan interleaves stores on several scopes, validations that pass, are normalised, fail
or time out, late answers, worker kills and queries, and every result, every validation
request, every scope's log and cell is checked against the model.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_app.clients.atomic import AtomicClient
from stream_app.clients.entities import EntityClient
from stream_app.core.atomic import StoreRequest, ValidationRequest, ValidationResponse
from stream_app.testing import WorkerProcess, settings_from_env, wait_for
from tests.apps.atomic_logs import HOLDER, Bid, bids, scripted
from tests.atomic_support import (
    AtomicModel,
    ScriptedValidator,
    Verdict,
    cell,
    replies_per_request,
    result_of,
    store_futures,
)
from tests.chaos.test_entities_exactly_once import wait_group_empty

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
MODULE = "tests.apps.atomic_probe"
EOS = {"STREAM_APP_PROCESSING_GUARANTEE": "exactly_once"}


def kill_and_restart(
    worker: WorkerProcess, start_worker: StartWorker, env: dict[str, str], name: str
) -> WorkerProcess:
    """SIGKILL ``worker``; start another once the group has dropped it (so that the new one
    takes every partition at once)."""
    worker.kill()
    wait_group_empty(env["STREAM_APP_BOOTSTRAP_SERVERS"], env["STREAM_APP_APP_ID"], "no member")
    restarted: WorkerProcess = start_worker(MODULE, env, name=name)
    return restarted


def noted(path: Path, scope: str) -> list[dict[str, Any]]:
    """The in-worker validator's notes on ``scope``'s requests (see ``ATOMIC_PROBE_SEEN``)."""
    if not path.exists():
        return []
    return [n for n in map(json.loads, path.read_text().splitlines()) if n["scope"] == scope]


def test_validations_in_progress_when_the_worker_is_killed_are_asked_again_with_their_ids(
    start_worker: StartWorker, cells_env: dict[str, str], tmp_path: Path
) -> None:
    seen, gate = tmp_path / "seen.jsonl", tmp_path / "gate"
    env = {
        **cells_env,
        **EOS,
        "ATOMIC_PROBE_SEEN": str(seen),
        "ATOMIC_PROBE_GATE": str(gate),
        "ATOMIC_PROBE_TIMEOUT_S": "60",
    }
    settings = settings_from_env(env)
    worker = start_worker(MODULE, env)

    def plan(request: ValidationRequest) -> Verdict:
        first = request.prospective_event["n"] == 1 and request.attempt == 1
        return "silent" if first else "pass"

    validator = ScriptedValidator(settings, "scripted", plan)
    validator.start()
    model = AtomicModel("scripted")
    entries = [{"scope": "k1", "n": 1}, {"scope": "k1", "n": 2}]
    held = Bid(lot="lot-k", bidder=HOLDER, amount=10)
    behind = Bid(lot="lot-k", bidder="bob", amount=5)
    try:
        with EntityClient(settings, timeout=120) as client:
            sent = store_futures(client, "scripted", entries)
            for (request_id, _), entry in zip(sent, entries, strict=True):
                model.store(request_id, entry, "pass")
            bidding = [
                client.request_future(("bids", "lot-k"), "store", StoreRequest(event=bid))
                for bid in (held.model_dump(), behind.model_dump())
            ]
            # Both validations in progress: the remote one unanswered, the in-worker one held.
            wait_for(lambda: validator.asked("k1"), bool, timeout=60, what="the remote request")
            wait_for(lambda: noted(seen, "lot-k"), bool, timeout=60, what="the held request")
            worker = kill_and_restart(worker, start_worker, env, "restarted")
            gate.touch()
            results = {request_id: result_of(future) for request_id, future in sent}
            held_result, behind_result = (result_of(future) for future in bidding)
        held_id = held_result.request_id

        # The remote validator: the first request asked again (attempt 2, same id), then the
        # one queued behind it; each decided once, against the log as it stood.
        model.check_asks(validator.asked())
        model.check_results(results)
        assert all(r.was_accepted for r in results.values()), results
        assert model.reasked == [sent[0][0]]
        assert [(r.request_id, r.attempt) for r in validator.asked("k1")] == [
            (sent[0][0], 1),
            (sent[0][0], 2),
            (sent[1][0], 1),
        ]
        model.wait_cells(worker, validator.sent, "k1 decided, nothing late")

        # The in-worker validator: the held bid asked again after the restart with its id, and
        # the bid behind it only once it was decided, against the log holding it.
        notes = noted(seen, "lot-k")
        ids = [n["request_id"] for n in notes]
        assert ids[-1] == behind_result.request_id and set(ids[:-1]) == {held_id}, notes
        assert max(n["attempt"] for n in notes[:-1]) == 2, notes
        assert (notes[-1]["seq"], notes[-1]["past"]) == (1, [10])
        assert held_result.was_accepted and held_result.seq == 1
        assert not behind_result.was_accepted and behind_result.meta == {"highest": 10}
        with AtomicClient(bids, settings) as atomic:
            records = atomic.records("lot-k")
        assert [(r.seq, r.request_id, r.event) for r in records] == [
            (1, held_id, held.model_dump())
        ]
        # Every answer but the one applied is late: the held request's answers after the
        # restart (its first attempt replayed, and the second); never a second acceptance.
        answered = len(notes) - 2  # the one held when killed was never answered
        wait_for(
            lambda: cell(worker, "bids", "lot-k"),
            lambda data: (data["accepted"], data["rejected"], data["late"]) == (1, 1, answered - 1),
            timeout=30,
            what="lot-k's counts",
        )
        with AtomicClient(scripted, settings) as atomic:
            model.check_log("k1", atomic.records("k1"))
        replies = replies_per_request(settings)
        every = [*results, held_id, behind_result.request_id]
        assert {rid: replies[rid] for rid in every} == {rid: 1 for rid in every}
    finally:
        validator.halt()
    assert not validator.errors


#: The model-based test's size: rounds of stores, and stores per round over the scopes.
ROUNDS = 5
STORES = 10
SCOPES = ("s0", "s1", "s2", "s3")
VERDICTS: tuple[Verdict, ...] = ("pass", "normalise", "fail", "silent")
WEIGHTS = (45, 15, 25, 15)


def test_random_stores_validations_timeouts_kills_and_queries_match_the_model(
    start_worker: StartWorker, cells_env: dict[str, str]
) -> None:
    seed = int(os.environ.get("ATOMIC_SEED", random.randrange(1_000_000)))
    print(f"\natomic model seed {seed} (rerun with ATOMIC_SEED={seed})")
    rng = random.Random(seed)
    env = {**cells_env, **EOS, "ATOMIC_PROBE_TIMEOUT_S": "2"}
    settings = settings_from_env(env)
    worker = start_worker(MODULE, env)
    model = AtomicModel("scripted")
    validator = ScriptedValidator(
        settings, "scripted", lambda r: model.verdicts[int(r.prospective_event["n"])]
    )
    validator.start()
    kill_rounds = set(rng.sample(range(ROUNDS), 2))
    counter, read, kills = 0, 0, []
    try:
        with EntityClient(settings, timeout=120) as client:
            for round_ in range(ROUNDS):
                entries = []
                for _ in range(STORES):
                    counter += 1
                    entry = {"scope": rng.choice(SCOPES), "n": counter}
                    model.verdicts[counter] = rng.choices(VERDICTS, WEIGHTS)[0]
                    entries.append(entry)
                sent = store_futures(client, "scripted", entries)
                for (request_id, _), entry in zip(sent, entries, strict=True):
                    model.store(request_id, entry, model.verdicts[entry["n"]])
                if round_ in kill_rounds:
                    asks = read + rng.randint(1, 6)
                    wait_for(
                        lambda: len(validator.asked()),
                        lambda n, asks=asks: n >= asks,
                        timeout=60,
                        what=f"round {round_}: {asks} validations asked",
                    )
                    kills.append(f"round {round_} after {len(validator.asked()) - read} asks")
                    worker = kill_and_restart(worker, start_worker, env, f"worker-{round_}")
                results = {request_id: result_of(future) for request_id, future in sent}
                ids = set(results)
                wait_for(
                    lambda: {r.request_id for r in validator.asked()},
                    lambda asked, ids=ids: ids <= asked,
                    timeout=30,
                    what="every request's validation read",
                )
                everything = validator.asked()
                model.check_asks(everything[read:])
                read = len(everything)
                model.check_results(results)

                # Late answers to some timed-out requests: ignored, counted.
                timed_out = [r for r in results.values() if r.timed_out]
                for late in rng.sample(timed_out, min(2, len(timed_out))):
                    validator.answer(
                        ValidationResponse(
                            request_id=late.request_id, scope=late.scope, validation_did_pass=True
                        )
                    )
                model.wait_cells(worker, validator.sent, f"round {round_}: the scopes")
                with AtomicClient(scripted, settings) as atomic:
                    for scope in model.scopes:
                        model.check_log(scope, atomic.records(scope))
        replies = replies_per_request(settings)
        assert all(replies[rid] == 1 for s in model.scopes.values() for rid, _ in s.arrivals)
    finally:
        validator.halt()
    assert not validator.errors
    print(
        f"kills: {kills}; asked again: {len(model.reasked)}; "
        f"timeouts the plan did not ask for: {len(model.unplanned_timeouts)}"
    )
    # A request asked again after a restart has its whole validation_timeout again (not what
    # was left of it when the worker died): the plan's answer decides it.
    assert not set(model.reasked) & set(model.unplanned_timeouts)
