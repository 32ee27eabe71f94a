"""Typed, frozen settings, read once from the environment (``STREAM_APP_`` prefix).

Sources, in order of precedence: keyword arguments to :class:`Settings`, then environment
variables, then a ``.env`` file in the working directory, then the defaults below. The bootstrap
servers also honour the conventional ``KAFKA_BOOTSTRAP_SERVERS`` when
``STREAM_APP_BOOTSTRAP_SERVERS`` is not set, so one variable points tests, demo and workers at
the same broker.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import AliasChoices, Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream_app.core.retry import CELL_RETRY, HANDLER_RETRY, Exhausted, RetryPolicy
from stream_app.errors import KafkaAuthError

__all__ = [
    "ClockKind",
    "Guarantee",
    "KafkaConnection",
    "ProcessingGuarantee",
    "SaslMechanism",
    "SecurityProtocol",
    "Settings",
    "client_config",
    "get_settings",
    "resolve_guarantee",
]

#: What the settings ask for: ``auto`` lets the runtime choose (see :func:`resolve_guarantee`).
ProcessingGuarantee = Literal["auto", "at_least_once", "exactly_once"]
#: The guarantee a worker runs under.
Guarantee = Literal["at_least_once", "exactly_once"]
#: Values of ``web_host`` that bind every interface (and so name no host to reach).
_EVERY_INTERFACE = frozenset({"0.0.0.0", "::", ""})
#: Where a worker's time comes from: the wall clock, or (tests only) the app's clock topic.
ClockKind = Literal["system", "driven"]
#: How the Kafka clients connect (librdkafka's ``security.protocol``).
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
#: How SASL authenticates a client (librdkafka's ``sasl.mechanism``).
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]
#: What a function that makes a Kafka client is given: the bootstrap servers of an unsecured
#: cluster, or a whole librdkafka configuration (:meth:`Settings.kafka_client_config`).
KafkaConnection = str | Mapping[str, Any]

#: librdkafka error names that mean the cluster refused who the client is or whom it trusts:
#: retrying cannot help, so clients fail at once (:meth:`Settings.kafka_client_config`).
_REFUSALS = frozenset({"_AUTHENTICATION", "_SSL"})


class _LibrdkafkaError(Protocol):
    """What stream_app reads of the ``confluent_kafka.KafkaError`` an ``error_cb`` is given."""

    def name(self) -> str: ...  # pragma: no cover - a protocol

    def str(self) -> str: ...  # pragma: no cover - a protocol


def client_config(kafka: KafkaConnection) -> dict[str, Any]:
    """The librdkafka configuration of a client of ``kafka``: ``bootstrap.servers`` alone for
    a string, a copy of a mapping (to which the caller adds its own properties)."""
    if isinstance(kafka, str):
        return {"bootstrap.servers": kafka}
    return dict(kafka)


class Settings(BaseSettings):
    """Everything a stream_app process needs to know about its environment.

    Attributes:
        app_id: The application id: Kafka consumer group, and the prefix of every topic the app
            owns (``<app_id>.<behaviour>.in``, ``<app_id>.dead-letters``, changelogs).
        bootstrap_servers: Comma-separated ``host:port`` list of Kafka brokers.
        store: Faust table store URL; ``rocksdb://`` keeps state in RocksDB (via rocksdict).
        data_dir: The folder of the workers' local state. Each app id keeps its own in a
            subfolder, :attr:`app_data_dir`, so apps started from one folder never share it.
        partitions: Partition count of every topic the app declares without an explicit count.
            All topics that carry work for a cell must share it (co-partitioning).
        replication_factor: Replication factor of topics declared without an explicit one.
        min_insync_replicas: ``min.insync.replicas`` of every topic the app creates (the
            runtime's and ``stream-app topics apply``'s, unless a topic file sets it): how many
            replicas must have a record before an ``acks=all`` write (every producer of
            stream_app, transactional ones included) is acknowledged. With replication factor
            3, 2 keeps accepting writes with one broker down and loses nothing acknowledged
            when one more fails. ``None`` (default): the broker's own default. It must not
            exceed ``replication_factor``, or no write would ever be acknowledged.
        processing_guarantee: ``auto`` (default), ``at_least_once`` or ``exactly_once`` (a
            Kafka transaction per input partition; see :mod:`stream_app.kafka.batch_input`).
            ``auto`` is ``exactly_once`` for a runtime that runs something needing fencing
            (an entity: a worker that lost its partition must not append to a log) and
            ``at_least_once`` otherwise (:func:`resolve_guarantee`). An explicit
            ``at_least_once`` with such a thing is refused at registration.
        commit_interval_s: How often input offsets are committed (Faust's
            ``broker_commit_interval``; also when the input runs dry, at most every 0.1 s, and
            when a rebalance or a stop takes the partitions).
            A crash replays everything read since the last commit: every record processed in
            up to one commit interval. That is counted in records, not seconds: with a backlog
            it is as many records as the worker processes in that time (thousands; a restart
            with a backlog replayed about 5,000). Under ``at_least_once`` they are handled
            again; under ``exactly_once`` the transaction since the last commit is aborted and
            its records are read again, and the interval is also the transaction length, so how
            long outputs (replies included) wait to become visible.
        input_linger_ms: How long the broker may hold a fetch of the cell input topics for
            more records (the input's counterpart of a producer's ``linger.ms``; a fetch that
            finds a megabyte returns at once). 0 (default): a record is fetched and handled as
            soon as it is there. At low rates each record then comes alone and pays the fixed
            cost of a fetch and a wake of the worker (measured by ``bench.latency``: several
            times the bulk CPU per event at 1,000/s); a few milliseconds here add up to that
            much latency to each record and take several records per fetch instead. An idle
            worker then fetches every ``input_linger_ms``.
        web_host: Interface the worker's HTTP views (health, status, metrics) bind to.
            ``127.0.0.1`` by default: only processes on the same host reach them. ``0.0.0.0``
            exposes them on every interface (a container behind a Service, probes from the
            kubelet); the views have no authentication, so expose them only on a network
            where that is wanted.
        web_port: Port of the worker's HTTP views.
        web_advertised_host: Host name or address the other workers reach this worker's views
            at: Faust advertises it to the group, and a view of a cell asked of a worker that
            does not own it is answered by the owner at this address. Default: ``web_host``, or
            this machine's host name when ``web_host`` binds every interface (``0.0.0.0``,
            ``::``). The Helm chart sets the pod's DNS name under its headless Service.
        max_message_bytes: Largest record value a behaviour accepts; larger ones are dead letters.
        rocksdb_memory_bytes: The memory all of a worker's RocksDB table databases share,
            whatever the number of partitions and tables: one block cache, with the memtables
            charged to it (at most half of it; a full share flushes to disk sooner). Default
            128 MiB. Without it each table partition had a 2 GiB cache and up to 192 MiB of
            memtables of its own, and a worker's memory grew with what a backlog wrote.
        state_cache_bytes: The memory each table may keep of the keys it most recently read or
            wrote, with their values (keys and values counted, plus 100 bytes an entry): a cell
            read again soon after is not looked up in RocksDB, as with Kafka Streams' record
            cache. The changelog and RocksDB still get every write at the end of its batch.
            When full the cache starts again empty; it is dropped whenever the worker's
            partitions change (another worker may have changed a partition read here again
            later). Default 8 MiB a table; 0 turns it off.
        dead_letter_max_bytes: Largest original value a dead letter keeps whole; a longer one is
            truncated (and marked so). Keep it under the dead-letter topic's max.message.bytes
            minus room for the headers.
        session_timeout_s: Consumer group session timeout: how long a dead worker holds its
            partitions before they move to another (or, with :attr:`group_instance_id`, before
            the group gives them to another worker if it does not come back).
        standby_replicas: How many other workers keep a standby copy of each table partition
            (Faust's ``table_standby_replicas``), read from its changelog as it is written. A
            worker that takes a partition it has a standby of only replays the changelog from
            where its copy is, instead of from the beginning, so the takeover after a crash
            does not grow with the state (``bench.failover``). Each standby costs its worker
            the disk of the copy and the reading of the changelog. 1 (default, Faust's); 0:
            none, a worker that takes a partition restores it from the changelog.
        group_instance_id: The worker's static identity in the consumer group
            (``group.instance.id``, Faust's ``consumer_group_instance_id``); unique per worker
            and stable across its restarts, e.g. the pod name of a StatefulSet. ``None``
            (default): dynamic membership. A static member that restarts within
            :attr:`session_timeout_s` gets its partitions back without a rebalance and keeps
            its local state; one that stops does not leave the group, so its partitions move
            to the other workers only when the session times out. It must come back at the
            same :attr:`web_host` and :attr:`web_port`: the assignment the group kept for it
            names its old address, and a worker handed an assignment made for another address
            (or sharing its id with a live worker) stops with a
            :class:`~stream_app.errors.ConfigError`.
        kafka_call_timeout_s: Longest one blocking Kafka call of a commit may take (a flush of
            the outputs before an offset commit; a transaction's init, offsets or commit) before
            the worker gives up and stops with an ERROR and a non-zero exit status, for its
            supervisor to start it again. A broker outage shorter than this is ridden out (under
            ``exactly_once`` commits wait until the broker answers, for at most this long; see
            docs/foundation.md, "Broker outages, stops and the log").
        shutdown_timeout_s: Longest a stopping worker (SIGTERM, or a crash) may take to drain,
            commit and close before it exits anyway, with status 70 and an ERROR saying so: a
            stop that hangs (a broker that does not answer) must not keep a supervisor waiting.
            What it did not commit is read again by the next owner, as after a SIGKILL.
        topics_dir: Folder of declarative topic definitions applied by ``stream-app topics apply``.
        cell_retry: The retry policy of cells whose behaviour names none
            (:class:`~stream_app.core.retry.RetryPolicy`, as JSON in the environment:
            ``STREAM_APP_CELL_RETRY='{"attempts": 5, "backoff_s": 0.5}'``); a cell is parked
            when its tries are exhausted. Default 3 tries, 0.1 s then 0.2 s apart.
        handler_retry: The retry policy of effect and reactor handlers registered without one
            (``STREAM_APP_HANDLER_RETRY``, JSON); the work is dead-lettered when its tries are
            exhausted. Default 5 tries, pauses from 0.2 s doubling up to 5 s.
        clock: ``system`` (default): timers come due by the wall clock and a message is handled
            at its record's timestamp. ``driven``, **for tests only**: the worker's time is the
            latest ``{"now_ms": N}`` record of :attr:`clock_topic`, and every invocation
            (message, timer, boot) runs at that time; a test moves it with
            :class:`stream_app.testing.DrivenClock` to make days pass in a second. The worker
            logs a WARNING at start when it is driven.
        security_protocol: How every Kafka client of the process connects: ``PLAINTEXT``
            (default), ``SSL`` (TLS), ``SASL_PLAINTEXT`` or ``SASL_SSL`` (SASL over TLS).
            Faust's clients and the confluent-kafka ones get the same settings.
        sasl_mechanism: ``SCRAM-SHA-256``, ``SCRAM-SHA-512`` or ``PLAIN``; required with a
            ``SASL_*`` protocol.
        sasl_username: The SASL user; required with a ``SASL_*`` protocol.
        sasl_password: The SASL user's password (never shown in a repr or a log); required
            with a ``SASL_*`` protocol.
        ssl_ca_location: PEM file of the certificate authorities that sign the brokers'
            certificates; the system's trust store when unset. ``SSL`` or ``SASL_SSL`` only.
        ssl_certificate_location: PEM certificate of this client, for brokers that require
            client certificates (mutual TLS); with :attr:`ssl_key_location`.
        ssl_key_location: PEM private key of :attr:`ssl_certificate_location`.
        ssl_key_password: Password of an encrypted :attr:`ssl_key_location`.
        console: Serve the operator console (``/console/``, HTML pages over the same views)
            on the worker's web server. Default ``True``; it binds where the views bind.
        console_actions: Allow the console's actions that change things (send a message,
            release a parked cell, redrive dead letters, cancel a workflow run). ``False``
            makes the console read-only: the actions are not offered and refused with 403.
        console_token: The token an operator gives (``/console/login``, or an
            ``Authorization: Bearer`` header) before an action is accepted. Required for the
            actions when :attr:`web_host` is not a loopback address (the console is exposed):
            without one they are refused. On loopback without a token the actions need no
            login (the browser's pages still carry a per-worker CSRF token).
    """

    model_config = SettingsConfigDict(
        env_prefix="STREAM_APP_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        # bootstrap_servers has env aliases; keyword arguments still use the field name.
        populate_by_name=True,
    )

    app_id: str = Field(default="stream-app", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("STREAM_APP_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        min_length=1,
    )
    store: str = "rocksdb://"
    data_dir: Path = Path("data")
    partitions: int = Field(default=8, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)
    min_insync_replicas: int | None = Field(default=None, ge=1, le=32)
    processing_guarantee: ProcessingGuarantee = "auto"
    commit_interval_s: float = Field(default=2.8, gt=0.0, le=3600.0)
    input_linger_ms: int = Field(default=0, ge=0, le=1000)
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    web_advertised_host: str | None = Field(default=None, min_length=1)
    max_message_bytes: int = Field(default=1_048_576, ge=64)
    rocksdb_memory_bytes: int = Field(default=128 * 1_048_576, ge=8 * 1_048_576)
    state_cache_bytes: int = Field(default=8 * 1_048_576, ge=0)
    dead_letter_max_bytes: int = Field(default=1_048_576, ge=64)
    session_timeout_s: float = Field(default=30.0, ge=6.0, le=300.0)
    standby_replicas: int = Field(default=1, ge=0, le=16)
    group_instance_id: str | None = Field(
        default=None, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$"
    )
    kafka_call_timeout_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    shutdown_timeout_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    topics_dir: Path = Path("topics")
    cell_retry: RetryPolicy = CELL_RETRY
    handler_retry: RetryPolicy = HANDLER_RETRY
    clock: ClockKind = "system"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = Field(default=None, min_length=1)
    sasl_password: SecretStr | None = None
    ssl_ca_location: FilePath | None = None
    ssl_certificate_location: FilePath | None = None
    ssl_key_location: FilePath | None = None
    ssl_key_password: SecretStr | None = None
    console: bool = True
    console_actions: bool = True
    console_token: SecretStr | None = Field(default=None, min_length=16)

    @field_validator("cell_retry")
    @classmethod
    def _cells_park(cls, value: RetryPolicy) -> RetryPolicy:
        return value.ending_in(Exhausted.PARK, "STREAM_APP_CELL_RETRY")

    @field_validator("handler_retry")
    @classmethod
    def _handlers_dead_letter(cls, value: RetryPolicy) -> RetryPolicy:
        return value.ending_in(Exhausted.DEAD_LETTER, "STREAM_APP_HANDLER_RETRY")

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> Settings:
        if self.min_insync_replicas is not None and (
            self.min_insync_replicas > self.replication_factor
        ):
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) exceeds replication_factor "
                f"({self.replication_factor}): no acks=all write would ever be acknowledged"
            )
        return self

    @property
    def durability_config(self) -> dict[str, str]:
        """Topic configs that every topic the app creates gets: ``min.insync.replicas`` when
        :attr:`min_insync_replicas` is set."""
        if self.min_insync_replicas is None:
            return {}
        return {"min.insync.replicas": str(self.min_insync_replicas)}

    @field_validator("bootstrap_servers")
    @classmethod
    def _strip_scheme(cls, value: str) -> str:
        """Accept ``kafka://host:port`` as Faust users write it, and keep plain ``host:port``."""
        servers = [s.strip().removeprefix("kafka://") for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("no bootstrap servers given (expected host:port[,host:port...])")
        for server in servers:
            if ";" in server:
                raise ValueError(
                    f"{server!r}: separate servers with ',' (not the ';' of Faust broker URLs)"
                )
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port, got {server!r}")
        return ",".join(servers)

    @model_validator(mode="after")
    def _security_complete(self) -> Settings:
        """Refuse security settings that cannot connect, naming the variable to set."""
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        if sasl:
            missing = [
                f"STREAM_APP_{name.upper()}"
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"STREAM_APP_SECURITY_PROTOCOL={self.security_protocol} needs "
                    + ", ".join(missing)
                )
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            raise ValueError(
                "STREAM_APP_SASL_* settings are given but STREAM_APP_SECURITY_PROTOCOL is "
                f"{self.security_protocol} (SASL_SSL or SASL_PLAINTEXT uses them)"
            )
        files = ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location")
        if not tls and any(getattr(self, name) is not None for name in files):
            raise ValueError(
                "STREAM_APP_SSL_* settings are given but STREAM_APP_SECURITY_PROTOCOL is "
                f"{self.security_protocol} (SSL or SASL_SSL uses them)"
            )
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError(
                "a client certificate needs both STREAM_APP_SSL_CERTIFICATE_LOCATION and "
                "STREAM_APP_SSL_KEY_LOCATION"
            )
        if self.ssl_key_password is not None and self.ssl_key_location is None:
            raise ValueError(
                "STREAM_APP_SSL_KEY_PASSWORD is given without STREAM_APP_SSL_KEY_LOCATION"
            )
        return self

    def kafka_connection(self) -> dict[str, Any]:
        """The librdkafka properties that say where the cluster is and how to connect to it:
        ``bootstrap.servers``, ``security.protocol`` and whichever of ``sasl.*`` and ``ssl.*``
        are set. Holds the password in clear: hand it to a client, never to a log.

        A worker's own clients start from it; programs that should fail at a refusal start
        from :meth:`kafka_client_config`."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
        }
        for key, value in optional.items():
            if isinstance(value, SecretStr):
                config[key] = value.get_secret_value()
            elif value is not None:
                config[key] = str(value)
        return config

    def kafka_client_config(self) -> dict[str, Any]:
        """The configuration every confluent-kafka client of a program (a client, the CLI, a
        tool) starts from: :meth:`kafka_connection` and an ``error_cb`` that raises
        :class:`~stream_app.errors.KafkaAuthError` from the client's next ``poll``, ``flush`` or
        ``consume`` when the cluster refuses the credentials or the TLS handshake (which
        librdkafka would otherwise retry for ever). A client with an ``error_cb`` of its own
        replaces this one."""
        return {**self.kafka_connection(), "error_cb": self.raise_refusal}

    def refusal(self, name: str, detail: str) -> KafkaAuthError | None:
        """The error to raise for the librdkafka error ``name`` (``detail`` its text) when it
        means the cluster refused the credentials or the TLS handshake; ``None`` otherwise."""
        if name not in _REFUSALS:
            return None
        where = f"Kafka at {self.bootstrap_servers} ({self.security_protocol})"
        if name == "_AUTHENTICATION":
            return KafkaAuthError(
                f"authentication failed for user {self.sasl_username!r} with mechanism "
                f"{self.sasl_mechanism}: {where} refused the credentials "
                "(STREAM_APP_SASL_USERNAME, STREAM_APP_SASL_PASSWORD); librdkafka: " + detail
            )
        trusted = self.ssl_ca_location or "the system's trust store"
        return KafkaAuthError(
            f"TLS handshake with {where} failed: the broker's certificate is not signed by an "
            f"authority in {trusted} (STREAM_APP_SSL_CA_LOCATION), or the broker refused this "
            "client's certificate; librdkafka: " + detail
        )

    def raise_refusal(self, error: _LibrdkafkaError) -> None:
        """An ``error_cb`` for confluent-kafka clients: raise :meth:`refusal` of ``error``
        (the client re-raises it from the call that served the callback); ignore the rest,
        which librdkafka retries by itself."""
        refused = self.refusal(error.name(), error.str())
        if refused is not None:
            raise refused

    @property
    def faust_broker(self) -> str:
        """The bootstrap servers as a Faust broker URL list (``kafka://h1:p1;h2:p2``)."""
        return ";".join(f"kafka://{s}" for s in self.bootstrap_servers.split(","))

    @property
    def app_data_dir(self) -> Path:
        """This app's local state, Faust's ``datadir``: ``<data_dir>/<app_id>``.

        Faust keeps the RocksDB files of the tables in ``v<version>/tables/`` under it, named by
        table and partition only, so two app ids sharing one folder would open each other's
        databases (another app's cells, its applied offsets, its changelog positions).
        """
        return self.data_dir / self.app_id

    @property
    def web_is_loopback(self) -> bool:
        """Whether :attr:`web_host` is a loopback address (only this machine reaches it)."""
        return self.web_host == "localhost" or _is_loopback(self.web_host)

    @property
    def web_url(self) -> str:
        """The address of the HTTP views of the worker these settings describe (a worker bound
        to every interface is reached on the loopback one)."""
        host = "127.0.0.1" if self.web_host in _EVERY_INTERFACE else self.web_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.web_port}"

    @property
    def advertised_web_host(self) -> str:
        """The host the other workers reach this worker's views at (see
        :attr:`web_advertised_host`)."""
        if self.web_advertised_host:
            return self.web_advertised_host
        if self.web_host in _EVERY_INTERFACE:
            return socket.gethostname()
        return self.web_host

    @property
    def dead_letter_topic(self) -> str:
        """Name of the app's dead-letter topic."""
        return f"{self.app_id}.dead-letters"

    @property
    def effects_topic(self) -> str:
        """Name of the app's effects topic."""
        return f"{self.app_id}.effects"

    @property
    def clock_topic(self) -> str:
        """Name of the topic that drives the workers' clock under ``clock=driven``:
        ``<app_id>.clock``."""
        return f"{self.app_id}.clock"

    @property
    def replies_topic(self) -> str:
        """Name of the app's reply topic, read by request/reply clients: ``<app_id>.replies``."""
        return f"{self.app_id}.replies"

    def events_topic(self, entity: str) -> str:
        """Name of the event log of entity type ``entity``: ``<app_id>.<entity>.events``."""
        return f"{self.app_id}.{entity}.events"

    def tasks_topic(self, behaviour: str) -> str:
        """Name of the worker queue of workflow behaviour ``behaviour``:
        ``<app_id>.<behaviour>.tasks``."""
        return f"{self.app_id}.{behaviour}.tasks"

    def done_topic(self, behaviour: str) -> str:
        """Name of the topic where the runs of workflow behaviour ``behaviour`` are announced
        when they end: ``<app_id>.<behaviour>.done``."""
        return f"{self.app_id}.{behaviour}.done"

    def validation_topic(self, log: str) -> str:
        """Name of the validation requests of atomic log ``log``: ``<app_id>.<log>.validation``."""
        return f"{self.app_id}.{log}.validation"

    def input_topic(self, behaviour: str) -> str:
        """Name of the input topic of ``behaviour``: ``<app_id>.<behaviour>.in``."""
        return f"{self.app_id}.{behaviour}.in"

    def changelog_topic(self, table: str) -> str:
        """Name Faust gives the changelog topic of table ``table``."""
        return f"{self.app_id}-{table}-changelog"


def resolve_guarantee(requested: ProcessingGuarantee, *, fencing: bool) -> Guarantee:
    """The guarantee a worker runs under, from what the settings ask for and whether anything
    it runs needs fencing (a zombie must not write: entity logs).

    ``auto`` resolves to ``exactly_once`` when fencing is needed, to ``at_least_once``
    otherwise; an explicit guarantee stays what it is (the runtime refuses an explicit
    ``at_least_once`` with something that needs fencing, with a message saying who).
    """
    if requested == "auto":
        return "exactly_once" if fencing else "at_least_once"
    return requested


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment on first use."""
    return Settings()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
