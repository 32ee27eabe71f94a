"""Unit tests of stream_app.testing.dev_broker that never start Kafka (nor download anything)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_app.errors import BrokerError, BrokerStartError, PortInUseError, ToolMissingError
from stream_app.testing.dev_broker import (
    SESSION_TAG,
    KafkaJars,
    LocalBroker,
    LocalCluster,
    docker_available,
    find_free_port,
    find_free_ports,
    kafka_version,
    project_root,
    session_name,
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
    pom_hash = hashlib.sha256((ROOT / "tools" / "kafka" / "pom.xml").read_bytes()).hexdigest()
    libs = home / "jars" / pom_hash[:16]
    libs.mkdir(parents=True)
    (libs / ".resolved-from").write_text(pom_hash + "\n")
    broker = LocalBroker(find_free_port(), home=home)
    assert broker.libs == libs
    assert broker.jars_ready() is True
    assert broker.fetch() is False  # no mvn on PATH, and none needed

    (libs / ".resolved-from").write_text("0" * 64 + "\n")  # resolved from another pom
    assert broker.jars_ready() is False
    with pytest.raises(ToolMissingError, match="mvn"):
        broker.fetch()


FAKE_MVN = """#!{python}
# Stands in for Maven: "resolves" one jar named after the pom into -DoutputDirectory.
import pathlib, sys
args = dict(a.split("=", 1) for a in sys.argv if a.startswith("-D"))
pom = pathlib.Path(sys.argv[sys.argv.index("-f") + 1])
if "FAIL" in pom.read_text():
    sys.exit("[ERROR] Could not resolve dependencies")
out = pathlib.Path(args["-DoutputDirectory"])
(out / (pom.stem + ".jar")).write_text(pom.read_text())
"""


@pytest.fixture
def fake_mvn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PATH with only a stand-in ``mvn`` that writes one jar and never reaches the network."""
    bin_dir = tmp_path / "mvn-bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN.format(python=sys.executable))
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return mvn


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_changed_pom_resolves_beside_jars_in_use(fake_mvn: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    pom = tmp_path / "pom.xml"
    pom.write_text("<project>first</project>")
    jars = KafkaJars(home, pom)
    assert jars.fetch() is True
    first = jars.dir
    assert (first / "pom.jar").read_text() == "<project>first</project>"
    jars.use(os.getpid())  # a live process (this one) runs from the first set

    pom.write_text("<project>second</project>")
    assert jars.ready() is False
    assert jars.fetch() is True
    assert jars.dir != first
    assert (jars.dir / "pom.jar").read_text() == "<project>second</project>"
    assert (first / "pom.jar").is_file(), "a set in use is never deleted"

    (first / ".users" / str(os.getpid())).unlink()
    (first / ".users" / "x").write_text(f"{dead_pid()}\n")  # only a dead user left
    assert jars.in_use(first) is False
    assert jars.fetch() is False, "the second set is there: nothing to download"
    assert not first.exists(), "a set of another pom that nobody uses is deleted"
    assert sorted(p.name for p in jars.root.iterdir()) == [".lock", jars.dir.name]


def test_use_forgets_dead_users(fake_mvn: Path, tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    jars = KafkaJars(tmp_path / "home", pom)
    jars.fetch()
    gone = dead_pid()
    jars.use(gone)
    jars.use(os.getpid())
    assert sorted(p.name for p in (jars.dir / ".users").iterdir()) == [str(os.getpid())]
    assert jars.in_use(jars.dir) is True


def test_the_old_libs_folder_stays_while_a_local_broker_lives(
    fake_mvn: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    legacy = home / "libs"
    legacy.mkdir(parents=True)
    (legacy / "kafka_2.13-4.1.0.jar").write_text("in use by a broker started before jars/")
    pidfile = home / "broker-9092" / "broker.pid"
    pidfile.parent.mkdir()
    pidfile.write_text(f"{os.getpid()}\n")
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    jars = KafkaJars(home, pom)

    assert jars.fetch() is True
    assert legacy.is_dir()
    pidfile.write_text(f"{dead_pid()}\n")
    assert jars.fetch() is False
    assert not legacy.exists()


def test_a_failed_resolve_leaves_nothing(fake_mvn: Path, tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project>FAIL</project>")
    jars = KafkaJars(tmp_path / "home", pom)
    with pytest.raises(BrokerStartError, match="Could not resolve dependencies"):
        jars.fetch()
    assert jars.ready() is False
    assert sorted(p.name for p in jars.root.iterdir()) == [".lock"]


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
    assert not (home / "jars").exists()


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

    from stream_app.testing import dev_broker

    # 0xf8... encodes to "-" first in URL-safe base64; the generator must skip such ids.
    dashed = uuid.UUID(bytes=b"\xf8" + b"\x00" * 15)
    plain = uuid.UUID(bytes=b"\x00" * 16)
    drawn = iter([dashed, dashed, plain])
    monkeypatch.setattr(dev_broker.uuid, "uuid4", lambda: next(drawn))
    cluster_id = dev_broker._cluster_id()
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAAA"
    assert len(cluster_id) == 22


def _properties(broker: LocalBroker) -> dict[str, str]:
    broker.instance.mkdir(parents=True, exist_ok=True)
    broker._write_config(broker._controller_port())
    lines = broker.properties.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_a_cluster_of_three_is_one_quorum_of_replicated_nodes(tmp_path: Path) -> None:
    cluster = LocalCluster(21000, count=3, home=tmp_path / "home")
    assert cluster.bootstrap == "127.0.0.1:21000,127.0.0.1:21001,127.0.0.1:21002"
    voters = "1@127.0.0.1:21003,2@127.0.0.1:21004,3@127.0.0.1:21005"
    for number in (1, 2, 3):
        node = cluster.node(number)
        assert node.instance == tmp_path / "home" / "cluster-21000" / f"node-{number}"
        config = _properties(node)
        assert config["node.id"] == str(number)
        assert config["controller.quorum.voters"] == voters
        assert config["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{21000 + number - 1},CONTROLLER://127.0.0.1:{21002 + number}"
        )
        for name in (
            "default.replication.factor",
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
        ):
            assert config[name] == "3", name
        assert config["min.insync.replicas"] == config["transaction.state.log.min.isr"] == "2"
    assert all(not state.running for state in cluster.status())
    assert cluster.down() is False


def test_the_single_broker_keeps_its_own_quorum_and_replication_of_one(tmp_path: Path) -> None:
    broker = LocalBroker(find_free_port(), home=tmp_path / "home")
    config = _properties(broker)
    controller = broker._controller_port()
    assert config["node.id"] == "1"
    assert config["controller.quorum.voters"] == f"1@127.0.0.1:{controller}"
    assert config["offsets.topic.replication.factor"] == "1"
    assert config["transaction.state.log.min.isr"] == config["min.insync.replicas"] == "1"


def test_session_names_carry_the_session_tag() -> None:
    first, second = session_name("t"), session_name("t")
    assert first != second
    assert first.startswith(f"t-{SESSION_TAG}") and len(first) == len(f"t-{SESSION_TAG}") + 6


def test_find_free_ports_are_consecutive_and_bindable() -> None:
    first = find_free_ports(6)
    for port in range(first, first + 6):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
