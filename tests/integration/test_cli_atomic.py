"""``stream-app atomic`` and the atomic views against a real broker and one exactly-once worker
(``tests.apps.atomic_cli_probe``: an in-worker validator accepting bids over the highest).

The CLI runs in-process (click's CliRunner) with the worker's ``STREAM_APP_*`` environment, as
an operator would run it next to a deployment; one worker serves every assertion.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from stream_app.cli.main import cli
from stream_app.settings import get_settings
from stream_app.testing import WorkerProcess

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
MODULE = "tests.apps.atomic_cli_probe"


@pytest.fixture
def env(cells_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A fresh exactly-once app; the probe module is imported anew under it (its runtime
    reads the process-wide settings, cached by whichever test read them first)."""
    settings = {**cells_env, "STREAM_APP_PROCESSING_GUARANTEE": "exactly_once"}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield settings
    get_settings.cache_clear()


def test_store_query_listen_and_the_scope_views(
    start_worker: StartWorker, env: dict[str, str]
) -> None:
    worker = start_worker(MODULE, env)
    url = f"http://127.0.0.1:{worker.web_port}"

    def run(*args: str, code: int | None = 0) -> Result:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, (
                f"stream-app {' '.join(args)} exited {result.exit_code}:\n{result.output}\n"
                f"--- worker log tail ---\n{worker.log_text()[-3000:]}"
            )
        return result

    def store(amount: int, *extra: str, lot: str = "lot-1", code: int = 0) -> Result:
        event = json.dumps({"lot": lot, "bidder": f"b{amount}", "amount": amount})
        return run("atomic", "store", "bids", event, "--app", MODULE, *extra, code=code)

    # Accepted, rejected with the validator's reason and meta, accepted with a chosen id.
    assert store(100).output == (
        'lot-1  accepted #1 {"amount":100,"bidder":"b100","lot":"lot-1"}  meta={"previous":0}\n'
    )
    assert store(90, code=1).output == (
        'lot-1  rejected {"code":"too-low"}  meta={"highest":100}\n'
    )
    result = json.loads(store(150, "--request-id", "bid-150", "--json").output)
    assert (result["request_id"], result["was_accepted"], result["seq"]) == ("bid-150", True, 2)
    assert [e["amount"] for e in result["stored_event_list"]] == [100, 150]

    # The full log, from the event topic.
    records = json.loads(run("atomic", "query", "bids", "lot-1", "--app", MODULE, "--json").output)
    assert [(r["seq"], r["event"]["amount"], r["meta"]) for r in records] == [
        (1, 100, {"previous": 0}),
        (2, 150, {"previous": 100}),
    ]
    assert records[1]["request_id"] == "bid-150"
    lines = run("atomic", "query", "bids", "lot-1", "--app", MODULE).output.splitlines()
    assert [line.split()[0] for line in lines] == ["#1", "#2"]
    assert "request=bid-150" in lines[1]
    empty = run("atomic", "query", "bids", "lot-9", "--app", MODULE).output
    assert empty == "no event in bids/lot-9\n"

    # Listening from a sequence number: the rest of the log, then what comes.
    tail = run(
        "atomic", "listen", "bids", "lot-1", "--app", MODULE, "--from-seq", "2", "--max", "1"
    )
    assert tail.output.startswith('#2 {"amount":150,')
    followed = run(
        "atomic", "listen", "bids", "lot-1", "--app", MODULE, "--json", "--idle", "3"
    ).output.splitlines()
    assert [json.loads(line)["seq"] for line in followed] == [1, 2]

    # The scope as its owner holds it, and the list of scopes.
    described = json.loads(run("atomic", "scope", "bids", "lot-1", "--url", url, "--json").output)
    assert {k: described[k] for k in ("seq", "summary", "in_flight", "queued", "queue")} == {
        "seq": 2,
        "summary": {"amount": 150, "bids": 2},
        "in_flight": None,
        "queued": 0,
        "queue": [],
    }
    assert [e["amount"] for e in described["recent"]] == [100, 150]
    assert (described["accepted"], described["rejected"], described["late"]) == (2, 1, 0)
    assert described["timers"] == [] and described["parked"] is None
    shown = run("atomic", "scope", "bids", "lot-1", "--url", url).output.splitlines()
    assert shown[:3] == [
        "bids/lot-1  seq=2",
        "in flight: -  queued=0",
        "accepted=2  rejected=1  timed_out=0  late=0",
    ]
    store(10, lot="lot-2")
    listed: dict[str, Any] = json.loads(
        run("atomic", "scopes", "bids", "--url", url, "--json").output
    )
    assert sorted(listed) == ["lot-1", "lot-2"]
    assert listed["lot-1"] == {
        "seq": 2,
        "in_flight": None,
        "queued": 0,
        "accepted": 2,
        "rejected": 1,
        "timed_out": 0,
        "late": 0,
    }
    missing = run("atomic", "scope", "bids", "lot-9", "--url", url, code=1)
    assert "scope bids/lot-9 has had no request" in missing.output
