"""Event-sourced entities (stream_app.examples.ledger) run as a real worker on a real broker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_app import CellClient, DeadLetter, EventRecord
from stream_app.clients.entities import AsyncEntityClient, EntityClient
from stream_app.errors import ReplyTimeoutError, RequestRejectedError
from stream_app.examples.ledger import account, counter
from stream_app.testing import WorkerProcess, read_topic, settings_from_env, wait_for

pytestmark = pytest.mark.integration

MODULE = "stream_app.examples.ledger"
ROOT = Path(__file__).resolve().parents[2]


def cached(worker: WorkerProcess, entity: str, entity_id: str) -> dict[str, Any] | None:
    """The entity's cached cell data (``{"seq": n, "state": {...}}``) from the owning worker."""
    data: dict[str, Any] | None = worker.get_json(f"/stream-app/cells/{entity}/{entity_id}/")[
        "data"
    ]
    return data


def events_of(bootstrap: str, topic: str) -> dict[str, list[EventRecord]]:
    """Every event on ``topic``, by entity id, in log order."""
    found: dict[str, list[EventRecord]] = defaultdict(list)
    for record in read_topic(bootstrap, topic):
        event = EventRecord.model_validate_json(record.value or b"")
        assert record.key == event.id.encode(), "keyed by the entity id"
        found[event.id].append(event)
    return found


def test_counter_events_state_and_the_effect_at_ten(
    start_worker: Callable[..., WorkerProcess],
    cells_env: dict[str, str],
    bootstrap: str,
    tmp_path: Path,
) -> None:
    effects = tmp_path / "effects.log"
    env = {**cells_env, "LEDGER_EFFECT_LOG": str(effects)}
    worker = start_worker(MODULE, env)
    with CellClient(settings_from_env(env)) as client:
        for n in range(12):
            # The tenth carries a config value for the effect it causes.
            config = {"notify": "ops@example.com"} if n == 9 else None
            client.send("counter", "c1", "increment", {"by": 1}, config=config)
        client.send("counter", "c2", "increment", {"by": 3})
    wait_for(
        lambda: cached(worker, "counter", "c1"),
        lambda data: data is not None and data["seq"] == 12,
        timeout=60,
        what="counter c1 at sequence 12",
    )
    assert cached(worker, "counter", "c1") == {"seq": 12, "state": {"value": 12}}
    assert cached(worker, "counter", "c2") == {"seq": 1, "state": {"value": 3}}

    topic = f"{env['STREAM_APP_APP_ID']}.counter.events"
    # The cached state is readable as soon as it is written; its events are acknowledged by
    # the next commit at the latest.
    log = wait_for(
        lambda: events_of(bootstrap, topic),
        lambda found: len(found["c1"]) >= 12 and len(found["c2"]) >= 1,
        timeout=60,
        what="the events of c1 and c2 in the log",
    )
    assert [e.seq for e in log["c1"]] == list(range(1, 13)), "one event per message, no gaps"
    assert {e.type for e in log["c1"]} == {"increased"}
    folded = counter.init()
    for event in log["c1"]:
        folded = counter.update(counter.event_types[event.type].model_validate(event.body), folded)
    assert folded.value == 12, "the cached state is the fold of the event log"

    lines = wait_for(
        lambda: effects.read_text().splitlines() if effects.exists() else [],
        lambda seen: len(seen) >= 1,
        timeout=60,
        what="the effect of reaching ten dispatched",
    )
    assert len(lines) == 1, lines
    _, entity_id, payload, config = lines[0].split(" ", 3)
    assert entity_id == "c1" and json.loads(payload) == {"value": 10}
    assert json.loads(config) == {"notify": "ops@example.com"}, "the sender's config value"


def test_bank_account_rejects_an_overdraft_and_logs_only_what_it_accepted(
    start_worker: Callable[..., WorkerProcess], cells_env: dict[str, str], bootstrap: str
) -> None:
    worker = start_worker(MODULE, cells_env)
    with CellClient(settings_from_env(cells_env)) as client:
        client.send("account", "acc-1", "open", {"owner": "alice"})
        client.send("account", "acc-1", "deposit", {"amount": 500})
        client.send("account", "acc-1", "withdraw", {"amount": 800})  # overdraft
        client.send("account", "acc-1", "withdraw", {"amount": 200})
        client.send("account", "acc-2", "deposit", {"amount": 100})  # not open
    wait_for(
        lambda: cached(worker, "account", "acc-1"),
        lambda data: data is not None and data["seq"] == 3,
        timeout=60,
        what="acc-1 at sequence 3",
    )
    assert cached(worker, "account", "acc-1") == {
        "seq": 3,
        "state": {"owner": "alice", "balance": 300},
    }
    assert cached(worker, "account", "acc-2") is None, "no event, nothing cached"

    app_id = cells_env["STREAM_APP_APP_ID"]
    letters = wait_for(
        lambda: [
            DeadLetter.from_record(r.key, r.value, r.headers)
            for r in read_topic(bootstrap, f"{app_id}.dead-letters")
        ],
        lambda seen: len(seen) >= 2,
        timeout=60,
        what="two rejected messages dead-lettered",
    )
    reasons = sorted((letter.reason, letter.error) for letter in letters)
    assert reasons[0][0] == reasons[1][0] == "rejected"
    assert any("overdraft: balance 500, withdrawal 800" in error for _, error in reasons)
    assert any("not open" in error for _, error in reasons)

    log = wait_for(
        lambda: events_of(bootstrap, f"{app_id}.account.events"),
        lambda found: len(found["acc-1"]) >= 3,
        timeout=60,
        what="the three events of acc-1 in the log",
    )
    assert [(e.seq, e.type, e.body) for e in log["acc-1"]] == [
        (1, "opened", {"owner": "alice"}),
        (2, "deposited", {"amount": 500}),
        (3, "withdrawn", {"amount": 200}),
    ]
    assert "acc-2" not in log
    assert account.name == "account"


def test_send_waits_for_the_new_state_a_projection_or_the_rejection(
    start_worker: Callable[..., WorkerProcess], cells_env: dict[str, str]
) -> None:
    worker = start_worker(MODULE, cells_env)
    settings = settings_from_env(cells_env)
    ref = ("account", "acc-rr")
    with EntityClient(
        settings, web_url=f"http://127.0.0.1:{worker.web_port}", timeout=60
    ) as client:
        assert client.query(ref) == {
            "entity": "account",
            "id": "acc-rr",
            "seq": 0,
            "state": {"owner": "", "balance": 0},
            "parked": False,
        }, "an entity without events is its init() state"
        assert client.send(ref, "open", {"owner": "bob"}) == {"owner": "bob", "balance": 0}
        reply = client.request(ref, "deposit", {"amount": 250})
        assert (reply.ok, reply.seq, reply.events) == (True, 2, 1)
        assert client.send(ref, "deposit", {"amount": 50}, project="balance") == 300

        with pytest.raises(RequestRejectedError, match="overdraft: balance 300, withdrawal 900"):
            client.send(ref, "withdraw", {"amount": 900})
        with pytest.raises(RequestRejectedError, match="no projection 'colour'"):
            client.send(ref, "deposit", {"amount": 1}, project="colour")
        with pytest.raises(ReplyTimeoutError):
            client.send(ref, "deposit", {"amount": 1}, timeout=0)

        # tell returns once the message is durable; the state follows.
        message_id = client.tell(ref, "withdraw", {"amount": 100})
        assert message_id
        current = wait_for(
            lambda: client.query(ref),
            lambda seen: seen["seq"] == 5,
            timeout=60,
            what="the told withdrawal and the timed-out deposit applied",
        )
        assert current["state"] == {"owner": "bob", "balance": 201}

    async def concurrently() -> list[Any]:
        async with AsyncEntityClient(settings, timeout=60) as client:
            return list(
                await asyncio.gather(
                    *(client.request(ref, "deposit", {"amount": n}) for n in range(1, 21))
                )
            )

    replies = asyncio.run(concurrently())
    assert sorted(r.seq for r in replies) == list(range(6, 26)), "one event each, in some order"
    last = max(replies, key=lambda r: r.seq)
    assert last.state["balance"] == 201 + sum(range(1, 21))


def test_request_reply_from_several_client_processes(
    start_worker: Callable[..., WorkerProcess], cells_env: dict[str, str]
) -> None:
    worker = start_worker(MODULE, cells_env)
    settings = settings_from_env(cells_env)
    accounts = ["shared-1", "shared-2"]
    with EntityClient(settings, timeout=60) as client:
        for account_id in accounts:
            client.send(("account", account_id), "open", {"owner": account_id})
    env = {**os.environ, **cells_env, "STREAM_APP_WEB_PORT": str(worker.web_port)}
    count = 40
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.apps.entity_sender",
                f"p{i}",
                str(count),
                *accounts,
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"client process failed: {err[-3000:]}"
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    by_account: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for output in outputs:
        mine: dict[str, int] = {}
        for account_id, amount, seq, balance in output["replies"]:
            assert seq > mine.get(account_id, 0), "a client sees its account's log move forward"
            mine[account_id] = seq
            by_account[account_id].append((seq, amount, balance))
    with EntityClient(settings, web_url=f"http://127.0.0.1:{worker.web_port}") as client:
        for account_id, seen in by_account.items():
            seqs = sorted(seq for seq, _, _ in seen)
            assert seqs == list(range(2, 2 + len(seen))), "every deposit got its own seq, no gaps"
            # Walk the replies in seq order: each balance is the previous one plus its amount.
            balance = 0
            for _seq, amount, after in sorted(seen):
                balance += amount
                assert after == balance, (account_id, _seq, amount, after, balance)
            final = client.query(("account", account_id))
            assert final["seq"] == 1 + len(seen) and final["state"]["balance"] == balance


def test_bad_input_to_an_entity_is_dead_lettered_and_the_entity_keeps_going(
    start_worker: Callable[..., WorkerProcess], cells_env: dict[str, str], bootstrap: str
) -> None:
    env = {**cells_env, "STREAM_APP_MAX_MESSAGE_BYTES": "65536"}
    worker = start_worker(MODULE, env)
    settings = settings_from_env(env)
    app_id = settings.app_id
    topic = settings.input_topic("account")
    bad = [
        ("malformed-json", b"{not json"),
        ("unknown-type", b'{"type": "embezzle", "body": {}}'),
        ("schema", b'{"type": "deposit", "body": {"amount": -5}}'),
        ("schema", b'{"type": "open", "body": {"owner": "x"}, "reply_to": "elsewhere:0"}'),
        (
            "schema",
            json.dumps(
                {"type": "open", "body": {"owner": "x"}, "reply_to": f"{app_id}.replies:99"}
            ).encode(),
        ),
        ("oversized", b'{"type": "open", "body": {"owner": "' + b"x" * 70_000 + b'"}}'),
    ]
    with CellClient(settings) as client:
        for _, value in bad:
            client.produce_raw(topic, "acc-bad", value)
        client.send("account", "acc-bad", "open", {"owner": "carol"})
    wait_for(
        lambda: cached(worker, "account", "acc-bad"),
        lambda data: data is not None and data["seq"] == 1,
        timeout=60,
        what="the good message after the bad ones handled",
    )
    letters = wait_for(
        lambda: [
            DeadLetter.from_record(r.key, r.value, r.headers)
            for r in read_topic(bootstrap, f"{app_id}.dead-letters")
        ],
        lambda seen: len(seen) >= len(bad),
        timeout=60,
        what=f"{len(bad)} dead letters",
    )
    assert sorted(letter.reason for letter in letters) == sorted(reason for reason, _ in bad)
    assert any("is not a partition of" in letter.error for letter in letters)
    assert cached(worker, "account", "acc-bad") == {
        "seq": 1,
        "state": {"owner": "carol", "balance": 0},
    }
    assert worker.alive()


def test_fold_rebuilds_from_the_log_and_finds_what_differs_from_the_cache(
    start_worker: Callable[..., WorkerProcess], cells_env: dict[str, str]
) -> None:
    from click.testing import CliRunner

    from stream_app.cli.main import cli

    worker = start_worker(MODULE, cells_env)
    settings = settings_from_env(cells_env)
    with EntityClient(settings, timeout=60) as client:
        for n in range(30):
            client.tell(("counter", f"r{n % 6}"), "increment", {"by": n + 1})
        client.send(("counter", "r0"), "increment", {"by": 1})  # the last of r0's, awaited
    wait_for(
        lambda: [cached(worker, "counter", f"r{n}") for n in range(6)],
        lambda data: [d["seq"] if d else None for d in data] == [6, 5, 5, 5, 5, 5],
        timeout=60,
        what="six counters handled",
    )
    env = dict(cells_env)
    wait_for(
        lambda: events_of(settings.bootstrap_servers, settings.events_topic("counter")),
        lambda found: sum(map(len, found.values())) >= 31,
        timeout=60,
        what="the 31 events in the log",
    )
    runner = CliRunner()
    args = ["entities", "fold", "counter", "--app", MODULE, "--json"]
    result = runner.invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["ok"], report["events"], report["entities"]) == (True, 31, 6)

    one = runner.invoke(cli, [*args[:3], "r3", *args[3:]], env=env, catch_exceptions=False)
    assert one.exit_code == 0 and json.loads(one.stdout)["entities"] == 1
    url = f"http://127.0.0.1:{worker.web_port}"
    got = runner.invoke(cli, ["entities", "get", "counter", "r0", "--url", url], env=env)
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["seq"] == 6
    assert json.loads(got.stdout)["state"] == {"value": sum(range(1, 31, 6)) + 1}

    # An event the cache never saw (appended behind the runtime's back), and a duplicate.
    forged = EventRecord(
        entity="counter",
        id="r3",
        seq=6,
        type="increased",
        body={"by": 100},
        message_id="forged",
        origin="test",
        at_ms=0,
    )
    with CellClient(settings) as producer:
        producer.produce_raw(
            settings.events_topic("counter"), "r3", forged.model_dump_json().encode()
        )
        first_r1 = events_of(settings.bootstrap_servers, settings.events_topic("counter"))["r1"][0]
        producer.produce_raw(
            settings.events_topic("counter"), "r1", first_r1.model_dump_json().encode()
        )
    bad = runner.invoke(cli, args, env=env, catch_exceptions=False)
    assert bad.exit_code == 1, bad.output
    found = json.loads(bad.stdout)
    assert found["ok"] is False
    assert list(found["mismatched"]) == ["r3"]
    assert found["mismatched"]["r3"]["folded"][0] == 6
    assert found["duplicates"] == {"r1": [1]}
