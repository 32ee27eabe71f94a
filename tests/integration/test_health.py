"""The health views on real workers: live at once; ready (503 -> 200) only once the worker holds
its partitions and has recovered their tables, with a 503's body saying which step it is in.

A worker cannot be ready before its group has given it partitions. To see that without racing
the few hundred milliseconds a lone worker takes to join, the test keeps the group from
completing a rebalance: the first worker is stopped (SIGSTOP) when the second joins, so the
second stays unready until the group gives up on the first (its session timeout) and hands the
second every partition.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from stream_app.testing import WorkerProcess, wait_for
from stream_app.testing.dev_broker import find_free_port
from stream_app.web.health import LIVE_PATH, READY_PATH

pytestmark = pytest.mark.integration

#: The first worker's session timeout: how long its stop holds the second worker's join.
SESSION_TIMEOUT_S = 10


def probe(worker: WorkerProcess, path: str) -> tuple[int, dict[str, Any]]:
    """GET ``path`` from ``worker``: the status code and the JSON body."""
    url = f"http://127.0.0.1:{worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def first_answer(worker: WorkerProcess, path: str) -> tuple[int, dict[str, Any]]:
    """The first answer of ``worker``'s web server to ``path`` (polled from its start)."""
    return wait_for(
        lambda: probe(worker, path),
        lambda answer: True,
        timeout=60,
        interval=0.05,
        what=f"an answer to {path}",
    )


def ready(worker: WorkerProcess) -> dict[str, Any]:
    """Wait until ``worker`` is ready; the readiness view's body."""
    _, body = wait_for(
        lambda: probe(worker, READY_PATH),
        lambda answer: answer[0] == 200,
        timeout=90,
        what="the worker ready",
    )
    return body


@pytest.fixture
def start(
    app_env: dict[str, str], bootstrap: str, tmp_path: Path
) -> Iterator[Callable[[str], WorkerProcess]]:
    """Start a counter worker of the test's app (not waited for); at teardown every one is
    killed (by pid) and the app's topics are deleted."""
    started: list[WorkerProcess] = []

    def start_worker(name: str) -> WorkerProcess:
        worker = WorkerProcess(
            "stream_app.examples.counter",
            env={
                **app_env,
                "STREAM_APP_DATA_DIR": str(tmp_path / name),
                "STREAM_APP_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
            },
            log_path=tmp_path / f"{name}.log",
            web_port=find_free_port(),
        )
        started.append(worker)
        return worker.start()

    yield start_worker
    for worker in started:
        worker.kill()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    app_id = app_env["STREAM_APP_APP_ID"]
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(app_id)]
    for future in admin.delete_topics(topics).values():
        future.result()


def test_ready_only_once_partitions_are_assigned_and_tables_recovered(
    start: Callable[[str], WorkerProcess],
) -> None:
    first = start("first")
    status, body = first_answer(first, READY_PATH)
    assert status in (200, 503), body
    assert probe(first, LIVE_PATH) == (200, {"live": True})
    body = ready(first)
    assert body["ready"] is True and body["rebalances"] >= 1
    # Faust agrees: it has logged that the worker is ready (partitions assigned, tables
    # recovered).
    first.wait_ready(timeout=30)

    os.killpg(first.pid, signal.SIGSTOP)
    second = start("second")
    status, body = first_answer(second, READY_PATH)
    assert status == 503, body
    assert body["ready"] is False and body["reason"] in {"joining", "rebalancing"}
    assert body["detail"]
    # Alive all the while: liveness never waits for readiness.
    assert probe(second, LIVE_PATH) == (200, {"live": True})

    assert ready(second)["ready"] is True
    owned = second.get_json("/stream-app/metrics/")["behaviours"]["counter"]["partitions"]
    assert owned == [0, 1, 2, 3]
    second.wait_ready(timeout=30)
    assert probe(second, LIVE_PATH) == (200, {"live": True})
