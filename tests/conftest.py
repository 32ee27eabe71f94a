"""Shared fixtures: a real Kafka broker for the session, isolated apps, worker processes."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream_app.kafka.topics import apply_changes, load_definitions, plan_changes
from stream_app.testing import WorkerProcess, settings_from_env
from stream_app.testing.dev_broker import (
    ProvidedBroker,
    delete_session_topics,
    find_free_port,
    kafka_broker,
    session_name,
    user_topics,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka() -> Iterator[ProvidedBroker]:
    """A real broker: KAFKA_BOOTSTRAP_SERVERS, else testcontainers, else the Maven-jar broker.

    Never skips: if no broker can be provided the error says why and every test using it fails.
    On a provided broker (KAFKA_BOOTSTRAP_SERVERS), which outlives the session, the topics of
    the apps the session named with ``session_name`` are deleted at its end, so test runs do
    not fill the shared broker; one it started goes away whole.
    """
    with kafka_broker() as broker:
        print(f"\nkafka for tests: {broker.source} {broker.bootstrap} ({broker.started_s:.1f}s)")
        before = user_topics(broker.bootstrap) if broker.source == "env" else set()
        yield broker
        # Kafka clients left in reference cycles by tests are destroyed now, while their broker
        # answers, rather than at exit, where they printed connection errors after pytest's
        # summary line.
        gc.collect()
        if broker.source == "env":
            try:
                deleted = delete_session_topics(broker.bootstrap, before)
            except Exception as exc:  # a cleanup: the session's outcome stands without it
                print(f"\nkafka for tests: the session's topics were not deleted: {exc}")
            else:
                print(f"\nkafka for tests: deleted the session's {len(deleted)} topic(s)")


@pytest.fixture(scope="session")
def bootstrap(kafka: ProvidedBroker) -> str:
    """The session broker's bootstrap servers."""
    return kafka.bootstrap


@pytest.fixture
def app_env(bootstrap: str, tmp_path: Path) -> dict[str, str]:
    """Settings (as STREAM_APP_* variables) of a fresh counter app, its topics applied from
    ``topics/counter.toml``."""
    env = {
        "STREAM_APP_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_APP_ID": session_name("t"),
        "STREAM_APP_DATA_DIR": str(tmp_path / "data"),
        "STREAM_APP_PARTITIONS": "4",
        "STREAM_APP_SESSION_TIMEOUT_S": "6",
    }
    settings = settings_from_env(env)
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    definitions = load_definitions([ROOT / "topics" / "counter.toml"], settings)
    apply_changes(admin, plan_changes(admin, definitions))
    return env


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start counter workers (``stream_app.examples.counter``), each waited for until ready;
    every one started is killed (by pid) at teardown."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], *, name: str = "worker") -> WorkerProcess:
        worker = WorkerProcess(
            "stream_app.examples.counter",
            env=env,
            log_path=tmp_path / f"{name}.log",
            web_port=find_free_port(),
        )
        started.append(worker)
        worker.start()
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def cells_env(bootstrap: str, tmp_path: Path) -> dict[str, str]:
    """Settings (as STREAM_APP_* variables) of a fresh app id; the runtime creates its topics."""
    return {
        "STREAM_APP_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_APP_ID": session_name("t"),
        "STREAM_APP_DATA_DIR": str(tmp_path / "data"),
        "STREAM_APP_PARTITIONS": "4",
        "STREAM_APP_SESSION_TIMEOUT_S": "6",
    }


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``faust -A <module> worker`` processes; every one is killed (by pid) at teardown.

    ``start_worker(module, env, name="worker", ready=True)`` returns the started worker, waiting
    until Faust reports it ready unless ``ready=False``.
    """
    started: list[WorkerProcess] = []

    def start(
        module: str, env: dict[str, str], *, name: str = "worker", ready: bool = True
    ) -> WorkerProcess:
        worker = WorkerProcess(
            module, env=env, log_path=tmp_path / f"{name}.log", web_port=find_free_port()
        )
        started.append(worker)
        worker.start()
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.kill()


#: Fixtures that bring the session broker (directly or through it).
BROKER_FIXTURES = frozenset(
    {"kafka", "bootstrap", "app_env", "cells_env", "workers", "start_worker"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs a broker ``integration`` (every test under ``tests/integration`` and
    ``tests/chaos``, and any test using a broker fixture) and what is under ``tests/chaos``
    ``chaos``, so ``-m "not integration"`` runs the unit tests alone, without a broker."""
    for item in items:
        path = Path(str(item.path)).resolve()
        chaos = ROOT / "tests" / "chaos" in path.parents
        needs_broker = (
            chaos
            or ROOT / "tests" / "integration" in path.parents
            or bool(BROKER_FIXTURES & set(getattr(item, "fixturenames", ())))
        )
        if needs_broker:
            item.add_marker(pytest.mark.integration)
        if chaos:
            item.add_marker(pytest.mark.chaos)
