"""Unit tests of stream_app.kafka.dev_broker that never start Kafka (nor download anything)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_app.errors import BrokerError, PortInUseError, ToolMissingError
from stream_app.kafka.dev_broker import (
    LocalBroker,
    docker_available,
    find_free_port,
    kafka_version,
    project_root,
)

ROOT = Path(__file__).resolve().parents[2]
REAL_JAVA = shutil.which("java")


@pytest.fixture
def empty_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PATH with nothing on it."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


@pytest.fixture
def java_only_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PATH with the real java and nothing else, so nothing can reach Maven Central."""
    assert REAL_JAVA is not None, "these tests need java on PATH (it is on the dev machine)"
    bin_dir = tmp_path / "java-bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(os.path.realpath(REAL_JAVA))
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A socket listening on a free 127.0.0.1 port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_up_without_java(empty_path: Path, tmp_path: Path) -> None:
    broker = LocalBroker(find_free_port(), home=tmp_path / "home")
    with pytest.raises(ToolMissingError, match="java not found") as info:
        broker.up(timeout=5)
    assert "Java 17" in str(info.value)
    assert isinstance(info.value, BrokerError)
    assert info.value.retriable is False
    assert not (tmp_path / "home").exists()


def test_fetch_without_maven(java_only_path: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    broker = LocalBroker(find_free_port(), home=home)
    assert broker.jars_ready() is False
    with pytest.raises(ToolMissingError, match=r"Maven \(mvn\)") as info:
        broker.fetch()
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(info.value)
    assert list(home.iterdir()) == []


def test_fetch_is_a_no_op_when_jars_match_the_pom(java_only_path: Path, tmp_path: Path) -> None:
    import hashlib

    home = tmp_path / "home"
    libs = home / "libs"
    libs.mkdir(parents=True)
    pom_hash = hashlib.sha256((ROOT / "tools" / "kafka" / "pom.xml").read_bytes()).hexdigest()
    (libs / ".resolved-from").write_text(pom_hash + "\n")
    broker = LocalBroker(find_free_port(), home=home)
    assert broker.jars_ready() is True
    assert broker.fetch() is False  # no mvn on PATH, and none needed

    (libs / ".resolved-from").write_text("0" * 64 + "\n")  # resolved from another pom
    assert broker.jars_ready() is False
    with pytest.raises(ToolMissingError, match="mvn"):
        broker.fetch()


def test_up_on_taken_broker_port(
    java_only_path: Path, tmp_path: Path, listening: socket.socket
) -> None:
    port = listening.getsockname()[1]
    home = tmp_path / "home"
    broker = LocalBroker(port, home=home)
    with pytest.raises(PortInUseError) as info:
        broker.up(timeout=5)
    text = str(info.value)
    assert f"port {port} " in text
    assert "broker listener" in text
    assert not broker.pidfile.exists()
    assert not (home / "libs").exists()


def test_up_on_taken_controller_port(
    java_only_path: Path, tmp_path: Path, listening: socket.socket
) -> None:
    controller = listening.getsockname()[1]
    home = tmp_path / "home"
    broker = LocalBroker(find_free_port(), home=home)
    broker.instance.mkdir(parents=True)
    (broker.instance / "controller.port").write_text(str(controller))
    with pytest.raises(PortInUseError) as info:
        broker.up(timeout=5)
    assert f"port {controller} " in str(info.value)
    assert "controller listener" in str(info.value)
    assert not broker.pidfile.exists()


def test_status_of_broker_never_started(tmp_path: Path) -> None:
    broker = LocalBroker(find_free_port(), home=tmp_path / "home")
    status = broker.status()
    assert status.running is False
    assert status.pid is None
    assert status.bootstrap == f"127.0.0.1:{broker.port}"
    assert status.version == kafka_version()


def test_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    broker = LocalBroker(find_free_port(), home=tmp_path / "home")
    broker.instance.mkdir(parents=True)
    broker.pidfile.write_text("not-a-pid\n")
    assert broker.pid() is None
    assert broker.down() is False


def test_kafka_version_matches_pom() -> None:
    pom = ROOT / "tools" / "kafka" / "pom.xml"
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    expected = ET.parse(pom).getroot().findtext("m:properties/m:kafka.version", namespaces=ns)
    assert expected
    assert kafka_version() == expected
    assert kafka_version(pom) == expected
    assert project_root() == ROOT


def test_kafka_version_of_other_pom(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text(
        "<project><properties><kafka.version>9.9.1</kafka.version></properties></project>"
    )
    assert kafka_version(pom) == "9.9.1"
    pom.write_text("<project><properties></properties></project>")
    with pytest.raises(ToolMissingError, match=r"<kafka\.version>"):
        kafka_version(pom)


def test_find_free_port_is_bindable() -> None:
    port = find_free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert sock.getsockname()[1] == port


def test_docker_available_returns_bool() -> None:
    assert isinstance(docker_available(timeout=1.0), bool)


@pytest.mark.parametrize(
    "host", ["unix:///nonexistent", "ssh://user@host", "npipe:////./pipe/docker_engine"]
)
def test_docker_unavailable_hosts(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("DOCKER_HOST", host)
    assert docker_available(timeout=1.0) is False


def test_docker_tcp_host_that_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{find_free_port()}")
    assert docker_available(timeout=1.0) is False


def serve_once(server: socket.socket, reply: bytes, requests: list[bytes]) -> None:
    conn, _ = server.accept()
    with conn:
        requests.append(conn.recv(1024))
        conn.sendall(reply)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", True),
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", False),
        (b"SSH-2.0-OpenSSH_9.2\r\n", False),
    ],
    ids=["ok", "server-error", "not-http"],
)
def test_docker_ping_over_unix_socket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reply: bytes, expected: bool
) -> None:
    path = tmp_path / "docker.sock"
    requests: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        server.settimeout(10)  # a client that never connects fails the test, never hangs it
        thread = threading.Thread(target=serve_once, args=(server, reply, requests), daemon=True)
        thread.start()
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        try:
            assert docker_available(timeout=5.0) is expected
        finally:
            thread.join(timeout=10)
    assert not thread.is_alive()
    assert requests and requests[0].startswith(b"GET /_ping HTTP/1.0\r\n")


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    from stream_app.kafka import dev_broker

    # 0xf8... encodes to "-" first in URL-safe base64; the generator must skip such ids.
    dashed = uuid.UUID(bytes=b"\xf8" + b"\x00" * 15)
    plain = uuid.UUID(bytes=b"\x00" * 16)
    drawn = iter([dashed, dashed, plain])
    monkeypatch.setattr(dev_broker.uuid, "uuid4", lambda: next(drawn))
    cluster_id = dev_broker._cluster_id()
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAAA"
    assert len(cluster_id) == 22
