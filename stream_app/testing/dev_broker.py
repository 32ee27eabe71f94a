"""A real Apache Kafka broker for development, demos and tests, with one call.

:func:`kafka_broker` yields bootstrap servers from the first source that applies:

1. ``KAFKA_BOOTSTRAP_SERVERS`` is set: that cluster is used as it is, and left running.
2. A Docker engine answers: a testcontainers Kafka (KRaft) container, removed afterwards.
3. Otherwise: :class:`LocalBroker`, a single-node KRaft broker run from the Apache Kafka jars that
   Maven resolves from Maven Central (``tools/kafka/pom.xml``) into the ignored ``.kafka/``
   folder. Java 17+ runs it; Maven is needed only for the first download.

Start protocol of :class:`LocalBroker` (``stream-app kafka up``):

1. Check ``java`` (17+) is installed and the broker and controller ports are free.
2. Fetch the jars unless ``.kafka/jars/<pom hash>/`` already holds the set resolved from this
   exact pom (:class:`KafkaJars`: a second start downloads nothing, and a changed pom resolves
   into a new folder beside the one a running broker uses).
3. Write ``server.properties`` (KRaft, broker+controller, 127.0.0.1, auto topic creation off,
   replication factors of internal topics 1) and a log4j2 config that logs to a file.
4. Format the log directory with ``kafka.tools.StorageTool`` once.
5. Start ``kafka.Kafka`` in its own session, its soft limit of open files raised to the hard
   limit (every partition keeps files open: a broker that test runs filled with topics died at
   its soft limit), write its pid, and wait until the AdminClient sees the broker; if the
   process exits or the deadline passes, stop it and raise with the tail of its log.

A broker shared by many test runs still fills with the topics they create: :func:`user_topics`
and :func:`delete_topics` list and delete them (``stream-app kafka prune``), and
:func:`session_name` gives a test session's apps names that let the session delete exactly its
own topics when it ends (:func:`delete_session_topics`), never another run's.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_app.errors import BrokerStartError, PortInUseError, ToolMissingError

__all__ = [
    "DEFAULT_CLUSTER_PORT",
    "DEFAULT_PORT",
    "SESSION_TAG",
    "BrokerStatus",
    "DockerBroker",
    "KafkaJars",
    "KraftNode",
    "LocalBroker",
    "LocalCluster",
    "delete_session_topics",
    "delete_topics",
    "docker_available",
    "find_free_port",
    "find_free_ports",
    "find_java",
    "kafka_broker",
    "kafka_home",
    "kafka_version",
    "kraft_container_env",
    "open_files",
    "project_root",
    "session_name",
    "user_topics",
]

DEFAULT_PORT = 9092
_STAMP = ".resolved-from"
_USERS = ".users"

#: Marks the names this process's test session gives its apps (and so their topics).
SESSION_TAG = uuid.uuid4().hex[:6]
_DELETE_BATCH = 200


def project_root() -> Path:
    """The stream_app checkout: where ``tools/kafka/pom.xml`` and ``.kafka/`` live."""
    here = Path(__file__).resolve().parents[2]
    for candidate in (here, Path.cwd()):
        if (candidate / "tools" / "kafka" / "pom.xml").is_file():
            return candidate
    raise ToolMissingError(
        "cannot find tools/kafka/pom.xml: run stream-app from a stream_app checkout, "
        "or set KAFKA_BOOTSTRAP_SERVERS to use an existing broker"
    )


def kafka_home() -> Path:
    """Where the jars and local brokers live: ``$STREAM_APP_KAFKA_HOME``, else ``.kafka/``."""
    return Path(os.environ.get("STREAM_APP_KAFKA_HOME", project_root() / ".kafka"))


def kafka_version(pom: Path | None = None) -> str:
    """The Apache Kafka version pinned in ``tools/kafka/pom.xml``."""
    text = (pom or project_root() / "tools" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", text)
    if match is None:
        raise ToolMissingError("tools/kafka/pom.xml has no <kafka.version> property")
    return match.group(1)


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_free_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports on 127.0.0.1 that nothing listens on (below
    Linux's ephemeral range, so that clients' own ports do not take them meanwhile)."""
    for _ in range(200):
        first = random.randrange(20_000, 32_000 - count)
        if all(_port_free(port) for port in range(first, first + count)):
            return first
    raise PortInUseError(f"found no {count} consecutive free ports in 20000-32000")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        with contextlib.suppress(OSError, IndexError):
            return stat.read_text().split()[2] != "Z"
    return True


def broker_answers(
    bootstrap: str, *, timeout: float = 2.0, security: Mapping[str, str] | None = None
) -> bool:
    """Whether a Kafka broker at ``bootstrap`` answers a metadata request (connecting with the
    librdkafka ``security`` properties, if given)."""
    try:
        _quiet_admin(bootstrap, security).list_topics(timeout=timeout)
    except Exception:
        return False
    return True


def _quiet_admin(bootstrap: str, security: Mapping[str, str] | None = None) -> Any:
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("stream_app.kafka.probe")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    config: dict[str, Any] = {**(security or {}), "bootstrap.servers": bootstrap, "logger": quiet}
    return AdminClient(config)


def user_topics(bootstrap: str, *, timeout: float = 10.0) -> set[str]:
    """The topics at ``bootstrap`` but Kafka's internal ones (``__consumer_offsets``...)."""
    metadata = _quiet_admin(bootstrap).list_topics(timeout=timeout)
    return {name for name in metadata.topics if not name.startswith("__")}


def delete_topics(bootstrap: str, topics: Iterable[str], *, timeout: float = 60.0) -> list[str]:
    """Delete ``topics`` at ``bootstrap``; returns the names of those it deleted.

    A topic that is already gone (another process deleted it meanwhile) is not an error and not
    in the result. Deleted in batches, each awaited, so a broker with thousands of topics is not
    sent one request it cannot answer within ``timeout``.
    """
    from confluent_kafka import KafkaError, KafkaException

    names = sorted(topics)
    admin = _quiet_admin(bootstrap)
    deleted = []
    for start in range(0, len(names), _DELETE_BATCH):
        batch = names[start : start + _DELETE_BATCH]
        futures = admin.delete_topics(batch, operation_timeout=timeout, request_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
            else:
                deleted.append(name)
    return sorted(deleted)


def session_name(prefix: str) -> str:
    """A fresh app id (or topic name) for a test: ``<prefix>-<SESSION_TAG><6 random hex>``.

    Every topic of an app named so carries :data:`SESSION_TAG`, which is how
    :func:`delete_session_topics` tells this session's topics from those of other runs sharing
    the broker.
    """
    return f"{prefix}-{SESSION_TAG}{uuid.uuid4().hex[:6]}"


def delete_session_topics(bootstrap: str, before: set[str]) -> list[str]:
    """Delete the topics this test session made: absent from ``before`` (the topics at its
    start) and named by :func:`session_name`. Returns their names.

    Other runs sharing the broker (helpers' tests, benchmarks, demos) create topics meanwhile
    too; the tag leaves theirs alone.
    """
    made = {t for t in user_topics(bootstrap) - before if f"-{SESSION_TAG}" in t}
    return delete_topics(bootstrap, made)


def open_files(pid: int) -> tuple[int, int] | None:
    """How many files process ``pid`` has open, and its soft limit; ``None`` if unreadable."""
    try:
        count = len(os.listdir(f"/proc/{pid}/fd"))
        limits = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None
    match = re.search(r"^Max open files\s+(\d+)", limits, re.MULTILINE)
    return (count, int(match.group(1))) if match else None


def _open_files_limit() -> tuple[int, int]:
    """The limit of open files for the broker: the soft limit raised to the hard one.

    HotSpot raises it too on Linux (``-XX:+MaxFDLimit``), but only when that flag stays on;
    doing it here holds whichever JVM runs. An unlimited hard limit is capped to the kernel's
    ``fs.nr_open``, the most a process can set.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        try:
            return int(Path("/proc/sys/fs/nr_open").read_text()), hard
        except (OSError, ValueError):
            return 1 << 20, hard
    return hard, hard


def find_java(purpose: str = "Apache Kafka") -> str:
    """The ``java`` on PATH, checked to be version 17 or newer (what Kafka 4 needs).

    Raises:
        ToolMissingError: No java, or an older one; ``purpose`` says what needed it.
    """
    java = shutil.which("java")
    if java is None:
        raise ToolMissingError(
            f"java not found: {purpose} needs Java 17 or newer "
            "(e.g. apt-get install openjdk-17-jre-headless), or set KAFKA_BOOTSTRAP_SERVERS"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):
            major = int(match.group(2))
        if major < 17:
            raise ToolMissingError(
                f"java at {java} is version {major}; {purpose} needs Java 17 or newer"
            )
    return java


class KafkaJars:
    """The Apache Kafka jars Maven resolves from ``tools/kafka/pom.xml``: one folder per pom.

    The jars of a pom go to ``home/jars/<first 16 hex digits of the pom's sha256>/``, written
    under a temporary name and renamed when complete, then never changed. A changed pom
    therefore resolves into a new folder beside the old one, and a broker or tool that runs
    keeps the jars it was started with (a JVM opens a classpath jar only when it first looks
    a class up in it, so deleting the jars under a running one breaks it later).

    Every java process started from a folder leaves its pid in the folder's ``.users/``;
    :meth:`fetch` deletes a folder of another pom only when none of those pids is alive.
    ``home/libs`` (the single folder of earlier versions) goes the same way once no local
    broker whose pid file is under ``home`` is alive.

    Fetching and deleting happen under an exclusive lock on ``home/jars/.lock``, so two
    processes never resolve into or delete the same folder at once.

    Args:
        home: The ``.kafka`` folder.
        pom: The pom to resolve; ``tools/kafka/pom.xml`` of the checkout by default.
    """

    def __init__(self, home: Path, pom: Path | None = None) -> None:
        self.home = home
        self.pom = pom or project_root() / "tools" / "kafka" / "pom.xml"
        self.root = home / "jars"

    @property
    def dir(self) -> Path:
        """The folder of the jars resolved from the pom as it is now."""
        return self.root / self._pom_hash()[:16]

    @property
    def classpath(self) -> str:
        """The ``-cp`` argument for java: every jar of :attr:`dir`."""
        return f"{self.dir}/*"

    def ready(self) -> bool:
        """Whether :attr:`dir` is complete (its stamp holds the pom's full hash)."""
        stamp = self.dir / _STAMP
        return stamp.is_file() and stamp.read_text().strip() == self._pom_hash()

    def _pom_hash(self) -> str:
        return hashlib.sha256(self.pom.read_bytes()).hexdigest()

    def fetch(self) -> bool:
        """Resolve the jars with Maven unless already there, then delete unused old folders.

        Returns whether it downloaded.

        Raises:
            ToolMissingError: The jars are not there and ``mvn`` is not installed.
            BrokerStartError: Maven failed (its output's tail is in the message).
        """
        if self.ready():
            if self._stale():
                with self._lock():
                    self._prune()
            return False
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ToolMissingError(
                "Maven (mvn) is needed once to download the Apache Kafka jars from Maven "
                "Central; install it (e.g. apt-get install maven) or set "
                "KAFKA_BOOTSTRAP_SERVERS to use an existing broker"
            )
        with self._lock():
            downloaded = not self.ready()  # another process may have resolved it meanwhile
            if downloaded:
                self._resolve(mvn)
            self._prune()
        return downloaded

    def use(self, pid: int) -> None:
        """Record that process ``pid`` runs from :attr:`dir`, so no fetch deletes it meanwhile."""
        users = self.dir / _USERS
        users.mkdir(exist_ok=True)
        for mark in users.iterdir():
            if not any(_pid_alive(alive) for alive in _pids([mark])):
                mark.unlink(missing_ok=True)
        (users / str(pid)).write_text(f"{pid}\n")

    def in_use(self, folder: Path) -> bool:
        """Whether a process recorded by :meth:`use` in ``folder`` is alive."""
        users = folder / _USERS
        return users.is_dir() and any(_pid_alive(pid) for pid in _pids(users.iterdir()))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _resolve(self, mvn: str) -> None:
        staging = self.dir.with_name(self.dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(self.pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = (done.stdout + done.stderr)[-3000:]
            raise BrokerStartError(f"mvn could not resolve the Kafka jars:\n{tail}")
        (staging / _STAMP).write_text(self._pom_hash() + "\n")
        shutil.rmtree(self.dir, ignore_errors=True)  # an incomplete one (no stamp)
        staging.rename(self.dir)

    def _stale(self) -> list[Path]:
        """Folders of other poms (and leftovers) that no live process uses."""
        stale = []
        if self.root.is_dir():
            for folder in self.root.iterdir():
                if folder.is_dir() and folder != self.dir and not self.in_use(folder):
                    stale.append(folder)
        legacy = self.home / "libs"
        if legacy.is_dir() and not any(
            _pid_alive(pid) for pid in _pids(self.home.glob("broker-*/broker.pid"))
        ):
            stale.append(legacy)
        return stale

    def _prune(self) -> None:
        for folder in self._stale():
            shutil.rmtree(folder, ignore_errors=True)


def _pids(pidfiles: Iterable[Path]) -> list[int]:
    """The pids written in ``pidfiles``; unreadable ones are skipped."""
    pids = []
    for pidfile in pidfiles:
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(pidfile.read_text().strip()))
    return pids


@dataclass(frozen=True)
class BrokerStatus:
    """What ``stream-app kafka status`` reports about a local broker."""

    running: bool
    pid: int | None
    bootstrap: str
    log: Path
    version: str
    #: Files the broker process has open and its limit, when it runs (``/proc`` tells).
    open_files: tuple[int, int] | None = None


@dataclass(frozen=True)
class KraftNode:
    """A broker's place in its KRaft quorum (what :class:`LocalCluster` gives each node).

    Attributes:
        node_id: Its ``node.id``.
        voters: ``controller.quorum.voters`` (``id@host:port,...``); ``None`` for a quorum of
            this node alone.
        controller_port: Its controller listener's port; ``None`` to choose one at first start.
        replication: Replication factor of Kafka's internal topics and of topics created without
            one; their ``min.insync.replicas`` is 2 when it is above 2, else 1.
        cluster_id_file: Where the cluster id shared by the nodes is kept; ``None`` for a
            single node's own.
        jvm_options: More options for its ``java`` command.
    """

    node_id: int = 1
    voters: str | None = None
    controller_port: int | None = None
    replication: int = 1
    cluster_id_file: Path | None = None
    jvm_options: tuple[str, ...] = ()

    @property
    def min_insync_replicas(self) -> int:
        """2 when replicated on more than 2 nodes (one may be lost), else 1."""
        return 2 if self.replication > 2 else 1


class LocalBroker:
    """A KRaft broker (and controller) run from Maven-resolved Apache Kafka jars.

    Alone by default: the development broker. :class:`LocalCluster` runs several, each with
    its ``node`` and ``instance`` folder.

    Args:
        port: The client port on 127.0.0.1 (the controller listens on ``port + 1``... or, when
            that is taken, on any free port chosen at first start and kept in the instance).
        home: The ``.kafka`` folder; jars in ``home/jars``, this broker in ``home/broker-<port>``.
        node: Its place in a quorum; a single node by default.
        instance: Its folder (data, config, log, pid) instead of ``home/broker-<port>``.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        *,
        home: Path | None = None,
        node: KraftNode | None = None,
        instance: Path | None = None,
    ) -> None:
        self.root = project_root()
        self.home = home or kafka_home()
        self.port = port
        self.node = node or KraftNode()
        self.pom = self.root / "tools" / "kafka" / "pom.xml"
        self.jars = KafkaJars(self.home, self.pom)
        self.instance = instance or self.home / f"broker-{port}"
        self.data = self.instance / "data"
        self.properties = self.instance / "server.properties"
        self.log4j = self.instance / "log4j2.properties"
        self.log = self.instance / "broker.log"
        self.pidfile = self.instance / "broker.pid"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    # -- jars --------------------------------------------------------------------------------

    @property
    def libs(self) -> Path:
        """The folder of the jars this broker starts from (:attr:`KafkaJars.dir`)."""
        return self.jars.dir

    def jars_ready(self) -> bool:
        """Whether the jars resolved from the current pom are there."""
        return self.jars.ready()

    def fetch(self) -> bool:
        """Resolve the Kafka jars with Maven unless already there. Returns whether it downloaded."""
        return self.jars.fetch()

    # -- lifecycle ---------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of this instance's broker if it is running."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> BrokerStatus:
        """Whether this instance runs, and where."""
        pid = self.pid()
        return BrokerStatus(
            running=pid is not None and self.answers(),
            pid=pid,
            bootstrap=self.bootstrap,
            log=self.log,
            version=kafka_version(self.pom),
            open_files=open_files(pid) if pid is not None else None,
        )

    def up(self, *, timeout: float = 120.0) -> str:
        """Start the broker (steps 1-5 of the module docstring); returns the bootstrap servers.

        Idempotent: if this instance already runs and answers, it is left as it is.
        """
        if self.pid() is not None and self.answers():
            return self.bootstrap
        process = self.start()
        self.wait_ready(process, timeout=timeout)
        return self.bootstrap

    def start(self) -> subprocess.Popen[bytes]:
        """Start the broker process (steps 1-4 and the start of 5), without waiting for it.

        Raises:
            PortInUseError: Its client or controller port is taken.
        """
        java = find_java("the development Kafka broker")
        controller = self._controller_port()
        for port, role in ((self.port, "broker"), (controller, "controller")):
            if not _port_free(port):
                raise PortInUseError(
                    f"port {port} on 127.0.0.1 ({role} listener) is already in use by another "
                    f"process; stop it, or choose another port (stream-app kafka up --port N)"
                )
        self.fetch()
        self.instance.mkdir(parents=True, exist_ok=True)
        self._write_config(controller)
        classpath = self.jars.classpath
        if not (self.data / "meta.properties").is_file():
            self._format(java, classpath, self._cluster_id())
        limit = _open_files_limit()
        with self.log.open("ab") as log:
            log.write(f"\n=== stream-app kafka up {time.strftime('%FT%T')} ===\n".encode())
            log.flush()
            process = subprocess.Popen(
                [
                    java,
                    "-Xms256m",
                    "-Xmx1g",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    *self.node.jvm_options,
                    f"-Dlog4j2.configurationFile={self.log4j}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(self.properties),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=functools.partial(resource.setrlimit, resource.RLIMIT_NOFILE, limit),
            )
        # Kept so this process can reap the broker it started (see down()).
        self._process = process
        self.jars.use(process.pid)
        self.pidfile.write_text(f"{process.pid}\n")
        return process

    def wait_ready(self, process: subprocess.Popen[bytes], *, timeout: float = 120.0) -> None:
        """Wait until the started broker answers; stop it and raise if it exits or times out.

        Raises:
            BrokerStartError: With the tail of its log.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pidfile.unlink(missing_ok=True)
                raise BrokerStartError(
                    f"the Kafka broker exited with code {process.returncode} during start; "
                    f"last lines of {self.log}:\n{self.log_tail()}"
                )
            if self.answers(timeout=1.0):
                return
            time.sleep(0.25)
        self.down()
        raise BrokerStartError(
            f"the Kafka broker did not answer on {self.bootstrap} within {timeout:.0f}s; "
            f"last lines of {self.log}:\n{self.log_tail()}"
        )

    def down(self, *, timeout: float = 30.0, purge: bool = False) -> bool:
        """Stop the broker by pid (SIGTERM, then SIGKILL after ``timeout``).

        Args:
            purge: Also delete this instance's data (topics, offsets, log).

        Returns whether a running broker was stopped.
        """
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.1)
            _sigkill(pid)
        self._forget_process()
        if purge:
            shutil.rmtree(self.instance, ignore_errors=True)
        return pid is not None

    def answers(self, *, timeout: float = 2.0) -> bool:
        """Whether this broker answers a metadata request on :attr:`bootstrap`."""
        return broker_answers(self.bootstrap, timeout=timeout)

    def kill(self) -> bool:
        """SIGKILL the broker (a crash: nothing flushed, no controlled shutdown) and reap it.

        Returns whether it was running. Its data stays; :meth:`up` starts it again from there.
        """
        pid = self.pid()
        if pid is None:
            return False
        _sigkill(pid)
        self._forget_process()
        return True

    def _forget_process(self) -> None:
        """Wait for the broker process this instance started, if any, and drop its pid file."""
        if self._process is not None:
            self._process.wait()
            self._process = None
        self.pidfile.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the broker log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    # -- internals ---------------------------------------------------------------------------

    def _controller_port(self) -> int:
        if self.node.controller_port is not None:
            return self.node.controller_port
        saved = self.instance / "controller.port"
        if saved.is_file():
            return int(saved.read_text())
        port = self.port + 1 if _port_free(self.port + 1) else find_free_port()
        self.instance.mkdir(parents=True, exist_ok=True)
        saved.write_text(str(port))
        return port

    def _write_config(self, controller: int) -> None:
        rf, isr = self.node.replication, self.node.min_insync_replicas
        self.properties.write_text(
            "\n".join(
                [
                    "# Generated by stream-app kafka up; edits are overwritten.",
                    "process.roles=broker,controller",
                    f"node.id={self.node.node_id}",
                    "controller.quorum.voters="
                    + (self.node.voters or f"{self.node.node_id}@127.0.0.1:{controller}"),
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.data}",
                    # Topics are declared (stream-app topics apply), never created by accident.
                    "auto.create.topics.enable=false",
                    "num.partitions=1",
                    f"default.replication.factor={rf}",
                    f"min.insync.replicas={isr}",
                    f"offsets.topic.replication.factor={rf}",
                    "offsets.topic.num.partitions=10",
                    f"transaction.state.log.replication.factor={rf}",
                    f"transaction.state.log.min.isr={isr}",
                    "transaction.state.log.num.partitions=10",
                    f"share.coordinator.state.topic.replication.factor={rf}",
                    f"share.coordinator.state.topic.min.isr={isr}",
                    "group.initial.rebalance.delay.ms=0",
                    "group.min.session.timeout.ms=1000",
                    "log.cleaner.backoff.ms=1000",
                    "",
                ]
            )
        )
        self.log4j.write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.file.type = File",
                    "appender.file.name = file",
                    f"appender.file.fileName = {self.instance / 'server.log'}",
                    "appender.file.layout.type = PatternLayout",
                    "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                    "appender.out.type = Console",
                    "appender.out.name = out",
                    "appender.out.layout.type = PatternLayout",
                    "appender.out.layout.pattern = [%d] %p %m (%c)%n",
                    "appender.out.filter.threshold.type = ThresholdFilter",
                    "appender.out.filter.threshold.level = warn",
                    "rootLogger.level = info",
                    "rootLogger.appenderRef.file.ref = file",
                    "rootLogger.appenderRef.out.ref = out",
                    "logger.kafka.name = kafka",
                    "logger.kafka.level = info",
                    "logger.apache.name = org.apache.kafka",
                    "logger.apache.level = info",
                    "",
                ]
            )
        )

    def format_arguments(self) -> list[str]:
        """Further arguments of ``StorageTool format`` (a secured broker adds its users)."""
        return []

    def _cluster_id(self) -> str:
        """The shared id in :attr:`KraftNode.cluster_id_file` (made by the first node to start),
        else a new one."""
        shared = self.node.cluster_id_file
        if shared is None:
            return _cluster_id()
        if not shared.is_file():
            shared.parent.mkdir(parents=True, exist_ok=True)
            shared.write_text(_cluster_id())
        return shared.read_text().strip()

    def _format(self, java: str, classpath: str, cluster_id: str) -> None:
        done = subprocess.run(
            [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.properties),
                "--ignore-formatted",
                *self.format_arguments(),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise BrokerStartError(
                f"kafka.tools.StorageTool could not format {self.data}:\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )


DEFAULT_CLUSTER_PORT = 19092
#: The JIT's first tier only: a node of a local cluster is restarted under load (tests kill
#: and start them) on a machine its two peers and the workers share, where the optimising
#: compiler's work at start took it from about 10 s to over 20 s; its peak throughput matters
#: less there.
_CLUSTER_JVM_OPTIONS = ("-XX:TieredStopAtLevel=1",)


class LocalCluster:
    """Several combined broker+controller KRaft nodes on 127.0.0.1: a replicated cluster.

    Node ``i`` (1-based) takes client port ``port + i - 1`` and controller port
    ``port + count + i - 1``; its folder is ``home/cluster-<port>/node-<i>``. The controllers
    form one static quorum of ``count`` voters (a majority must be up). Kafka's internal
    topics, and topics created without a replication factor, are replicated on 3 nodes (fewer
    when there are fewer) with ``min.insync.replicas`` 2.

    Args:
        port: The first node's client port.
        count: How many nodes (3 tolerates the loss of any one, broker or active controller).
        home: The ``.kafka`` folder.
    """

    def __init__(
        self, port: int = DEFAULT_CLUSTER_PORT, *, count: int = 3, home: Path | None = None
    ) -> None:
        self.home = home or kafka_home()
        self.port = port
        self.folder = self.home / f"cluster-{port}"
        controllers = [port + count + i for i in range(count)]
        self.controllers = ",".join(f"127.0.0.1:{c}" for c in controllers)
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, c in enumerate(controllers))
        self.nodes = [
            LocalBroker(
                port + i,
                home=self.home,
                instance=self.folder / f"node-{i + 1}",
                node=KraftNode(
                    node_id=i + 1,
                    voters=voters,
                    controller_port=controllers[i],
                    replication=min(count, 3),
                    cluster_id_file=self.folder / "cluster.id",
                    jvm_options=_CLUSTER_JVM_OPTIONS,
                ),
            )
            for i in range(count)
        ]

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalBroker:
        """The node whose ``node.id`` is ``node_id`` (1-based)."""
        return self.nodes[node_id - 1]

    def up(self, *, timeout: float = 180.0) -> str:
        """Start the nodes that do not run, all at once (a quorum needs a majority), and wait
        until every node answers and sees all the others. Returns the bootstrap servers."""
        started = [(node, node.start()) for node in self.nodes if node.pid() is None]
        try:
            for node, process in started:
                node.wait_ready(process, timeout=timeout)
            self._wait_brokers(len(self.nodes), timeout)
        except BaseException:
            self.down()
            raise
        return self.bootstrap

    def down(self, *, purge: bool = False) -> bool:
        """Stop every node by pid; ``purge`` also deletes the cluster's folder. Returns whether
        one ran.

        Without ``purge`` each node shuts down cleanly (SIGTERM: leadership handed over, logs
        flushed), one after the other; with it they are SIGKILLed, since their data goes anyway.
        """
        stopped = [node.kill() if purge else node.down() for node in self.nodes]
        if purge:
            shutil.rmtree(self.folder, ignore_errors=True)
        return any(stopped)

    def status(self) -> list[BrokerStatus]:
        """Each node's status, in node id order."""
        return [node.status() for node in self.nodes]

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (its broker and its controller)."""
        self.node(node_id).kill()

    def start(self, node_id: int, *, timeout: float = 120.0) -> None:
        """Start node ``node_id`` again and wait until it answers."""
        self.node(node_id).up(timeout=timeout)

    def active_controller(self, *, timeout: float = 60.0) -> int:
        """The node id of the quorum's leader: the active controller.

        Asked with Kafka's own ``kafka-metadata-quorum describe --status`` of the controllers.

        Raises:
            BrokerStartError: No leader was reported within ``timeout``.
        """
        from stream_app.testing.console_tools import tool_command

        args = ["--bootstrap-controller", self.controllers, "describe", "--status"]
        command = tool_command("kafka-metadata-quorum", args, self.nodes[0].jars)
        deadline = time.monotonic() + timeout
        output = ""
        while time.monotonic() < deadline:
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=timeout
            )
            output = done.stdout + done.stderr
            match = re.search(r"^LeaderId:\s+(\d+)", done.stdout, re.MULTILINE)
            if done.returncode == 0 and match and int(match.group(1)) >= 0:
                return int(match.group(1))
            time.sleep(0.5)
        raise BrokerStartError(f"no active controller reported within {timeout:.0f}s:\n{output}")

    def under_replicated(self) -> list[str]:
        """``topic[partition]`` of every partition whose in-sync replicas are fewer than its
        replicas (a node is down, or catching up since it came back)."""
        metadata = _quiet_admin(self.bootstrap).list_topics(timeout=10.0)
        return [
            f"{name}[{number}]"
            for name, topic in metadata.topics.items()
            for number, partition in topic.partitions.items()
            if len(partition.isrs) < len(partition.replicas)
        ]

    def wait_in_sync(self, *, timeout: float = 120.0) -> None:
        """Wait until no partition is under-replicated.

        Raises:
            BrokerStartError: Some still are at the deadline (named in the message).
        """
        deadline = time.monotonic() + timeout
        lagging = ["<never asked>"]
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                lagging = self.under_replicated()
                if not lagging:
                    return
            time.sleep(0.25)
        raise BrokerStartError(
            f"{len(lagging)} partitions still under-replicated after {timeout:.0f}s: {lagging[:10]}"
        )

    def _wait_brokers(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if len(_quiet_admin(self.bootstrap).list_topics(timeout=2.0).brokers) >= count:
                    return
            time.sleep(0.25)
        raise BrokerStartError(f"the cluster on {self.bootstrap} did not show {count} brokers")


def _cluster_id() -> str:
    """16 random bytes in URL-safe base64 without padding, as Kafka's ``Uuid.randomUuid``.

    Like Kafka, never one that starts with ``-``: the command line would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _sigkill(pid: int) -> None:
    """SIGKILL ``pid`` (if it still runs) and reap it once it is gone."""
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while _pid_alive(pid):
        _reap(pid)
        time.sleep(0.05)
    _reap(pid)


def _reap(pid: int) -> None:
    # The broker is our child when this process started it; collect it so it is not a zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def docker_available(*, timeout: float = 3.0) -> bool:
    """Whether a Docker engine answers (not just the ``docker`` client being installed).

    Asks the engine's ``/_ping`` endpoint on ``DOCKER_HOST`` (``unix://`` or ``tcp://``), or on
    ``/var/run/docker.sock`` when it is unset.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            path = host.removeprefix("unix://")
            if not Path(path).exists():
                return False
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = path
        elif host.startswith("tcp://"):
            hostname, _, port = host.removeprefix("tcp://").rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (hostname, int(port))
        else:
            return False
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = sock.recv(64).split(b"\r\n", 1)[0]
            return status_line.startswith(b"HTTP/1.") and b" 200" in status_line
    except (OSError, ValueError):
        return False


def kraft_container_env(port: int) -> dict[str, str]:
    """Environment of a single-node KRaft ``apache/kafka`` container advertised on ``port``."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }


class DockerBroker:
    """``stream-app kafka up`` where a Docker engine answers: an ``apache/kafka`` container.

    The container outlives the command (it is not tied to a testcontainers reaper); its id is
    kept in ``.kafka/docker-<port>.id`` so ``down`` and ``status`` find it. The image is the
    Kafka version pinned in ``tools/kafka/pom.xml``.
    """

    def __init__(self, port: int = DEFAULT_PORT, *, home: Path | None = None) -> None:
        root = project_root()
        self.home = home or kafka_home()
        self.port = port
        self.image = f"apache/kafka:{kafka_version(root / 'tools' / 'kafka' / 'pom.xml')}"
        self.idfile = self.home / f"docker-{port}.id"

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def _container(self) -> Any:
        import docker

        if not self.idfile.is_file():
            return None
        client = docker.from_env()
        try:
            return client.containers.get(self.idfile.read_text().strip())
        except docker.errors.NotFound:
            self.idfile.unlink(missing_ok=True)
            return None
        finally:
            client.close()

    def running(self) -> bool:
        """Whether this port's container exists and runs."""
        container = self._container()
        return container is not None and container.status == "running"

    def up(self, *, timeout: float = 120.0) -> str:
        """Start (or reuse) the container and wait until the broker answers."""
        import docker

        if self.running() and broker_answers(self.bootstrap):
            return self.bootstrap
        if not _port_free(self.port):
            raise PortInUseError(
                f"port {self.port} on 127.0.0.1 is already in use by another process; "
                "choose another port (stream-app kafka up --port N)"
            )
        client = docker.from_env()
        try:
            container = client.containers.run(
                self.image,
                detach=True,
                name=f"stream-app-kafka-{self.port}",
                ports={"9092/tcp": ("127.0.0.1", self.port)},
                environment=kraft_container_env(self.port),
            )
        finally:
            client.close()
        self.home.mkdir(parents=True, exist_ok=True)
        self.idfile.write_text(container.id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            container.reload()
            if container.status == "exited":
                break
            if broker_answers(self.bootstrap, timeout=1.0):
                return self.bootstrap
            time.sleep(0.5)
        logs = container.logs(tail=40).decode(errors="replace")
        self.down()
        raise BrokerStartError(
            f"the Kafka container ({self.image}) did not answer on {self.bootstrap}; "
            f"last lines of its log:\n{logs}"
        )

    def down(self) -> bool:
        """Remove the container; returns whether there was one."""
        container = self._container()
        if container is None:
            return False
        container.remove(force=True)
        self.idfile.unlink(missing_ok=True)
        return True


@dataclass(frozen=True)
class ProvidedBroker:
    """A broker handed out by :func:`kafka_broker`.

    Attributes:
        bootstrap: ``host:port`` list to connect to.
        source: ``env``, ``docker`` or ``local``.
        started_s: Seconds it took to provide (0 for ``env``).
    """

    bootstrap: str
    source: str
    started_s: float


@contextlib.contextmanager
def kafka_broker(*, port: int | None = None, home: Path | None = None) -> Iterator[ProvidedBroker]:
    """Provide a Kafka broker for the duration of the ``with`` block.

    Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a testcontainers Kafka if Docker answers, else a
    :class:`LocalBroker` on ``port`` (a free port when ``None``), which is stopped by pid and
    purged afterwards. Whatever it started, it stops.
    """
    started = time.monotonic()
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        yield ProvidedBroker(external, "env", 0.0)
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield ProvidedBroker(
                container.get_bootstrap_server(), "docker", time.monotonic() - started
            )
        return
    broker = LocalBroker(port or find_free_port(), home=home)
    try:
        bootstrap = broker.up()
        yield ProvidedBroker(bootstrap, "local", time.monotonic() - started)
    finally:
        broker.down(purge=True)
