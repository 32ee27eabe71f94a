"""`stream-app kafka up|status|prune|down`: the Maven-jar KRaft broker, started and stopped for
real, and the deletion of the topics test runs leave on a shared broker."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from stream_app.testing.dev_broker import (
    LocalBroker,
    _pid_alive,
    broker_answers,
    delete_session_topics,
    find_free_port,
    open_files,
    session_name,
    user_topics,
)

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str], answer: str = "") -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("stream-app")
    return subprocess.run(
        [str(exe), *args], env=env, input=answer, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def local_env() -> dict[str, str]:
    """The environment without KAFKA_BOOTSTRAP_SERVERS, so `kafka up` starts a local broker."""
    return {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}


def test_second_fetch_downloads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = LocalBroker(find_free_port())
    broker.fetch()  # downloads only if no earlier start did
    assert broker.jars_ready()
    # Without mvn on PATH a download would fail: a second fetch must not need it.
    java_only = tmp_path / "bin"
    java_only.mkdir()
    monkeypatch.setenv("PATH", str(java_only))
    assert broker.fetch() is False


def test_up_status_down_by_pid(local_env: dict[str, str]) -> None:
    port = find_free_port()
    broker = LocalBroker(port)
    try:
        started = time.monotonic()
        up = cli("kafka", "up", "--port", str(port), env=local_env)
        elapsed = time.monotonic() - started
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"kafka up on 127.0.0.1:{port}" in up.stdout
        print(f"\nbroker start via CLI: {elapsed:.1f}s")
        pid = broker.pid()
        assert pid is not None and _pid_alive(pid)
        assert broker_answers(f"127.0.0.1:{port}")

        status = cli("kafka", "status", "--port", str(port), env=local_env)
        assert status.returncode == 0 and f"pid {pid}" in status.stdout
        files = open_files(pid)
        assert files is not None
        assert files[1] == resource.getrlimit(resource.RLIMIT_NOFILE)[1], "soft limit is the hard"
        assert f"{files[1]} files open" in status.stdout

        create_topics(broker.bootstrap, ["keep-a", "drop-a", "drop-b"])
        prune = ("kafka", "prune", "--port", str(port), "--match", "drop-*")
        asked = cli(*prune, env=local_env, answer="n\n")
        assert asked.returncode == 130 and "delete 2 topic(s)" in asked.stdout, "not confirmed"
        assert user_topics(broker.bootstrap) == {"keep-a", "drop-a", "drop-b"}
        pruned = cli(*prune, "--yes", env=local_env)
        assert pruned.returncode == 0 and "deleted 2 topic(s)" in pruned.stdout, pruned.stderr
        assert user_topics(broker.bootstrap) == {"keep-a"}
        everything = cli("kafka", "prune", "--port", str(port), "--yes", env=local_env)
        assert everything.returncode == 0 and "deleted 1 topic(s)" in everything.stdout
        assert user_topics(broker.bootstrap) == set()

        again = cli("kafka", "up", "--port", str(port), env=local_env)
        assert again.returncode == 0
        assert broker.pid() == pid, "a second `up` reuses the running broker"

        down = cli("kafka", "down", "--port", str(port), "--purge", env=local_env)
        assert down.returncode == 0 and "kafka stopped" in down.stdout
        assert not _pid_alive(pid)
        stopped = cli("kafka", "status", "--port", str(port), env=local_env)
        assert stopped.returncode == 1 and "down" in stopped.stdout
    finally:
        broker.down(purge=True)


def test_port_in_use_is_a_clear_error(local_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("kafka", "up", "--port", str(port), env=local_env)
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "already in use" in result.stderr
    LocalBroker(port).down(purge=True)


def test_broker_that_cannot_start_reports_its_log(local_env: dict[str, str]) -> None:
    port = find_free_port()
    broker = LocalBroker(port)
    try:
        broker.instance.mkdir(parents=True, exist_ok=True)
        # A data dir formatted for another node id makes the broker exit during start.
        broker.data.mkdir(parents=True, exist_ok=True)
        (broker.data / "meta.properties").write_text(
            "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=7\n"
            "directory.id=AAAAAAAAAAAAAAAAAAAAAA\n"
        )
        result = cli("kafka", "up", "--port", str(port), "--timeout", "90", env=local_env)
        assert result.returncode == 2, result.stdout
        assert "last lines of" in result.stderr
        assert "Stored node id 7" in result.stderr, "the tail of the broker's own log is shown"
        assert broker.pid() is None
    finally:
        broker.down(purge=True)


def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        future.result(timeout=30)


def test_session_deletes_only_its_own_new_topics(bootstrap: str) -> None:
    before = user_topics(bootstrap)
    ours, others = session_name("janitor"), f"janitor-other-{os.getpid()}-{time.time_ns()}"
    create_topics(bootstrap, [ours, others])
    try:
        deleted = delete_session_topics(bootstrap, before)
        assert ours in deleted and others not in deleted
        left = user_topics(bootstrap)
        assert ours not in left and others in left
    finally:
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics([others])
