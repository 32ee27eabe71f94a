"""docker-compose.yml: valid for the Compose Specification's own loader, able to run N workers
(``docker compose up --scale worker=N``), and consistent with the rest of the repo.

The loader is ``tools/compose-check`` (compose-go, what ``docker compose`` parses files with),
built by ``scripts/deploy_tools.sh`` into ``.tools/bin``; these tests fail (they never skip) when
it is not there.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from stream_app.testing.dev_broker import kafka_version

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CHECK = ROOT / ".tools" / "bin" / "compose-check"


def load() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_kafka_image_matches_the_pinned_version() -> None:
    image = load()["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{kafka_version()}"


def test_services_depend_on_services_that_exist_and_run_the_counter() -> None:
    services = load()["services"]
    assert {"kafka", "topics", "worker"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    worker = services["worker"]
    assert worker["command"][:3] == ["faust", "-A", "stream_app.examples.counter"]
    assert worker["environment"]["STREAM_APP_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert services["topics"]["command"][:3] == ["stream-app", "topics", "apply"]


def compose_check(path: Path) -> subprocess.CompletedProcess[str]:
    """Load ``path`` with compose-check: the resolved project as JSON, or the loader's error."""
    assert COMPOSE_CHECK.is_file(), (
        f"{COMPOSE_CHECK} is missing: scripts/deploy_tools.sh builds it (go install)"
    )
    return subprocess.run(
        [str(COMPOSE_CHECK), str(path)], capture_output=True, text=True, timeout=60
    )


@cache
def resolved() -> dict[str, Any]:
    """docker-compose.yml as the Compose loader resolves it (defaults and short forms filled)."""
    result = compose_check(COMPOSE)
    assert result.returncode == 0, result.stderr
    project: dict[str, Any] = json.loads(result.stdout)
    return project


def test_the_compose_loader_accepts_the_file_and_rejects_a_broken_one(tmp_path: Path) -> None:
    assert set(resolved()["services"]) == set(load()["services"])
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("service_healthy", "service_bogus"))
    bad = compose_check(broken)
    assert bad.returncode != 0
    assert "services.topics.depends_on.kafka.condition value must be one of" in bad.stderr


def test_the_worker_scales_to_several_containers() -> None:
    worker = resolved()["services"]["worker"]
    # A fixed name or host port would make a second replica fail to start.
    assert "container_name" not in worker and "hostname" not in worker
    for port in worker["ports"]:
        assert "published" not in port, port
        assert port["host_ip"] == "127.0.0.1"  # the views are not exposed beyond the host
    # Each replica has its own state: no named volume (shared by every replica) at the data dir.
    data = [v for v in worker["volumes"] if v["target"] == "/data"]
    assert data and all("source" not in v for v in data)
    # Static membership needs a stable name per member, which scaled replicas do not have.
    assert "STREAM_APP_GROUP_INSTANCE_ID" not in worker["environment"]


def test_the_worker_is_healthy_when_ready_and_stops_within_its_grace() -> None:
    from stream_app.settings import Settings
    from stream_app.web.health import READY_PATH

    worker = resolved()["services"]["worker"]
    assert f"127.0.0.1:6066{READY_PATH}" in " ".join(worker["healthcheck"]["test"])
    assert worker["ports"][0]["target"] == Settings().web_port == 6066
    grace = worker["stop_grace_period"]  # compose-go writes durations as Go does: 1m15s
    minutes, seconds = grace.removesuffix("s").split("m")
    assert int(minutes) * 60 + int(seconds) > Settings().shutdown_timeout_s


def test_the_image_runs_what_compose_runs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY stream_app ./stream_app" in dockerfile and "COPY topics ./topics" in dockerfile
    assert "STREAM_APP_WEB_HOST=0.0.0.0" in dockerfile and "STREAM_APP_DATA_DIR=/data" in dockerfile
    services = resolved()["services"]
    assert importlib.util.find_spec(services["worker"]["command"][2]) is not None
    assert services["topics"]["command"][-1] == "/app/topics"
    assert (ROOT / "topics").is_dir()


def test_compose_kafka_and_the_cli_container_share_their_kraft_settings() -> None:
    from stream_app.testing.dev_broker import kraft_container_env

    compose = load()["services"]["kafka"]["environment"]
    cli = kraft_container_env(9092)
    for name in (
        "KAFKA_PROCESS_ROLES",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
    ):
        assert compose[name] == cli[name], name
    assert cli["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:9092"


def test_the_compose_counter_runs_under_exactly_once() -> None:
    # The README's tour promises that no message is applied twice, which holds under exactly_once.
    worker = load()["services"]["worker"]
    assert worker["environment"]["STREAM_APP_PROCESSING_GUARANTEE"] == "exactly_once"
