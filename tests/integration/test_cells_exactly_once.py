"""The cells runtime with processing_guarantee=exactly_once (Kafka transactions)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from stream_app.clients.cells import CellClient
from stream_app.core.partitioner import partition_for
from stream_app.testing import WorkerProcess, read_topic, settings_from_env, wait_for


def test_state_effects_and_timers_commit_in_transactions(
    cells_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    bootstrap: str,
    tmp_path: Path,
) -> None:
    env = {
        **cells_env,
        "STREAM_APP_PROCESSING_GUARANTEE": "exactly_once",
        "PROBE_EFFECT_LOG": str(tmp_path / "effects.log"),
        "PROBE_TIMER_LOG": str(tmp_path / "timers.log"),
    }
    worker = start_worker("tests.apps.probe", env)
    settings = settings_from_env(env)
    home = partition_for(b"eos", settings.partitions)
    other = next(
        f"x{i}" for i in range(100) if partition_for(f"x{i}".encode(), settings.partitions) != home
    )
    with CellClient(settings) as client:
        client.send("probe", "eos", "add", {"by": 5})
        client.send("probe", "eos", "emit", {"kind": "flaky", "payload": "x"})
        client.send("probe", "eos", "timer", {"name": "t", "after_ms": 500})
        # A message to a cell on another partition, sent from inside a transaction.
        client.send("probe", "eos", "forward", {"to": other, "by": 3})

    def log(name: str) -> list[str]:
        path = tmp_path / name
        return path.read_text().splitlines() if path.exists() else []

    wait_for(lambda: log("timers.log"), lambda rows: len(rows) == 1, timeout=60, what="timer")
    attempts = wait_for(
        lambda: log("effects.log"), lambda rows: len(rows) >= 3, timeout=60, what="effect"
    )
    assert len({row.split()[1] for row in attempts}) == 1
    described = worker.get_json("/stream-app/cells/probe/eos/")
    assert described["data"]["count"] == 5 and described["data"]["fired"] == 1
    wait_for(
        lambda: worker.get_json(f"/stream-app/cells/probe/{other}/"),
        lambda c: (c["data"] or {}).get("count") == 3,
        timeout=30,
        what="the message sent to a cell on another partition",
    )

    # read_topic reads with isolation.level=read_committed: only committed transactions show.
    effects = read_topic(bootstrap, settings.effects_topic)
    assert [json.loads(r.value or b"")["kind"] for r in effects] == ["flaky"]
    # The last record of the cell's key: the other cell's record (another partition) may come
    # after it, once that partition's transaction has committed too.
    changelog = [
        r for r in read_topic(bootstrap, settings.changelog_topic("probe")) if r.key == b"eos"
    ]
    assert json.loads(changelog[-1].value or b"")["data"]["count"] == 5
