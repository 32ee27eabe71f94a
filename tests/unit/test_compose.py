"""docker-compose.yml: valid for a compose tool, and consistent with the rest of the repo."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stream_app.testing.dev_broker import kafka_version

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


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


def test_a_compose_tool_accepts_the_file_and_rejects_a_broken_one(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        # scripts/test.sh installs docker-compose where apt-get can; the structural tests above
        # still run without it.
        assert COMPOSE.is_file()
        return
    good = subprocess.run(
        [tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("service_healthy", "service_bogus"))
    bad = subprocess.run([tool, "-f", str(broken), "config", "-q"], capture_output=True, text=True)
    assert bad.returncode != 0 and "service_bogus" in bad.stderr


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
