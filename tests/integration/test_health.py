"""The health views on a real worker: live at once, ready (503 -> 200) once it has its partitions
and its tables are recovered, and a 503's body says which step the worker is in."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_app.testing import WorkerProcess, wait_for
from stream_app.testing.dev_broker import find_free_port
from stream_app.web.health import LIVE_PATH, READY_PATH

pytestmark = pytest.mark.integration


def probe(worker: WorkerProcess, path: str) -> tuple[int, dict[str, Any]]:
    """GET ``path`` from ``worker``: the status code and the JSON body."""
    url = f"http://127.0.0.1:{worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def worker(app_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    """A counter worker, started but not waited for; killed (by pid) at teardown."""
    process = WorkerProcess(
        "stream_app.examples.counter",
        env=app_env,
        log_path=tmp_path / "worker.log",
        web_port=find_free_port(),
    )
    process.start()
    yield process
    process.kill()


def test_ready_only_once_partitions_are_assigned_and_tables_recovered(
    worker: WorkerProcess,
) -> None:
    # The web server starts before the consumer joins its group: the first answer is a 503.
    status, body = wait_for(
        lambda: probe(worker, READY_PATH),
        lambda answer: True,
        timeout=60,
        interval=0.05,
        what="the readiness view answers",
    )
    assert status == 503, body
    assert body["ready"] is False
    assert body["reason"] in {"joining", "rebalancing", "recovering"}
    assert body["detail"]
    assert probe(worker, LIVE_PATH) == (200, {"live": True})

    status, body = wait_for(
        lambda: probe(worker, READY_PATH),
        lambda answer: answer[0] == 200,
        timeout=90,
        what="the worker ready",
    )
    assert body["ready"] is True and body["rebalances"] >= 1
    # Faust agrees: it has logged that the worker is ready (partitions assigned, tables
    # recovered).
    worker.wait_ready(timeout=30)
    assert probe(worker, LIVE_PATH) == (200, {"live": True})
