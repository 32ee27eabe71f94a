"""Workers, clients and the CLI against a broker that only speaks SASL/SCRAM over TLS.

One :class:`~stream_app.testing.secured_broker.SecuredBroker` serves the module (its own KRaft
node, certificates made with openssl, SCRAM users written at format time); the session's
plaintext broker is not used. With the right settings a counter worker, a
:class:`~stream_app.clients.cells.CellClient` and ``stream-app`` connect and work; with a wrong
password, or trusting another certificate authority, the worker exits non-zero within a bound
with a log line that names the cause, and the client and the CLI fail at once with
:class:`~stream_app.errors.KafkaAuthError`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from stream_app.cli.main import cli
from stream_app.clients.cells import CellClient
from stream_app.errors import KafkaAuthError
from stream_app.testing import (
    ProbeFailed,
    WorkerProcess,
    read_topic,
    settings_from_env,
    wait_for,
)
from stream_app.testing.secured_broker import MECHANISM, SecuredBroker, TestCertificates

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COUNTER = "stream_app.examples.counter"
USER, PASSWORD = "worker", "worker-secret-7"
#: Longest a worker with refused credentials may run before it exits.
REFUSAL_EXIT_S = 60.0
#: Longest a client may take to report refused credentials.
CLIENT_REFUSAL_S = 15.0


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """The module's SASL_SSL broker, stopped by pid and deleted at the end."""
    certificates = TestCertificates.make(tmp_path_factory.mktemp("certs"))
    broker = SecuredBroker(certificates, {USER: PASSWORD})
    try:
        broker.up(timeout=120)
        yield broker
    finally:
        broker.down(purge=True)


def secured_env(
    broker: SecuredBroker, tmp_path: Path, *, password: str = PASSWORD, ca: Path | None = None
) -> dict[str, str]:
    """``STREAM_APP_*`` settings of a fresh counter app on ``broker``."""
    return {
        "STREAM_APP_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "STREAM_APP_APP_ID": f"sec-{uuid.uuid4().hex[:10]}",
        "STREAM_APP_DATA_DIR": str(tmp_path / "data"),
        "STREAM_APP_PARTITIONS": "2",
        "STREAM_APP_SESSION_TIMEOUT_S": "6",
        "STREAM_APP_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAM_APP_SASL_MECHANISM": MECHANISM,
        "STREAM_APP_SASL_USERNAME": USER,
        "STREAM_APP_SASL_PASSWORD": password,
        "STREAM_APP_SSL_CA_LOCATION": str(ca or broker.certificates.ca),
    }


def stream_app_cli(env: dict[str, str], *args: str) -> Result:
    """Run ``stream-app ARGS`` in-process with ``env``."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def stream_app_command(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """Start the ``stream-app`` console script with ``env``, as an operator runs it (its exit
    status and error output are the script's, not click's in-process ones)."""
    script = Path(sys.executable).with_name("stream-app")
    return subprocess.Popen(
        [str(script), *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses (hex, as in ``/proc/net/tcp``) with a socket listening on ``port``."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, port_hex = local.partition(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(address)
    return found


def cell(worker: WorkerProcess, cell_id: str) -> Any:
    """The counter cell's data from the worker's view, ``None`` until it exists."""
    answer = worker.get_json(f"/stream-app/cells/counter/{cell_id}/")
    return answer.get("data") if isinstance(answer, dict) else None


def test_worker_client_and_cli_work_over_sasl_ssl(
    secured: SecuredBroker,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # exactly_once: the transactions, their markers (written by the broker to itself over
    # SASL_SSL) and the read_committed reads of recovery all go through the secured listener.
    env = {**secured_env(secured, tmp_path), "STREAM_APP_PROCESSING_GUARANTEE": "exactly_once"}
    settings = settings_from_env(env)

    applied = stream_app_cli(env, "topics", "apply", str(ROOT / "topics" / "counter.toml"))
    assert applied.exit_code == 0, applied.output
    assert f"changed on {secured.bootstrap}" in applied.output

    worker = start_worker(COUNTER, env)
    with CellClient(settings) as client:
        for _ in range(3):
            client.send("counter", "alice", "increment", {"by": 2})
    sent = stream_app_cli(
        env, "cells", "send", "counter", "alice", "increment", "--body", '{"by": 4}'
    )
    assert sent.exit_code == 0, sent.output

    def probe() -> Any:
        if not worker.alive():
            raise ProbeFailed(f"worker exited:\n{worker.log_text()[-3000:]}")
        return cell(worker, "alice")

    wait_for(probe, lambda data: data == {"count": 10}, timeout=60, what="alice's count of 10")
    # The view shows the state as soon as it is written; the changelog record becomes
    # readable (read_committed) when its transaction commits, within a commit interval.
    changelog = wait_for(
        lambda: read_topic(settings.kafka_client_config(), settings.changelog_topic("counter")),
        lambda records: [r.key for r in records][-1:] == [b"alice"],
        timeout=30,
        what="alice's changelog record, committed",
    )
    assert [r.key for r in changelog][-1:] == [b"alice"]
    assert worker.error_lines() == []
    # The views listen on the loopback interface only (STREAM_APP_WEB_HOST's default).
    assert listening_addresses(worker.web_port) == {"0100007F"}


#: The two refusals and what their errors say: a wrong password, and a broker certificate
#: checked against another authority than the one that signed it.
REFUSALS = {
    "password": f"authentication failed for user '{USER}' with mechanism {MECHANISM}",
    "ca": "TLS handshake with Kafka at",
}


def refused_env(broker: SecuredBroker, tmp_path: Path, refusal: str) -> dict[str, str]:
    """Settings that ``broker`` refuses, the ``refusal`` way."""
    if refusal == "password":
        return secured_env(broker, tmp_path / refusal, password="not-the-password")
    return secured_env(broker, tmp_path / refusal, ca=broker.certificates.other_ca)


def test_refused_credentials_fail_clearly_and_at_once(
    secured: SecuredBroker,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """Both refusals side by side (a worker and a command each, all started together): the
    client raises, the CLI prints the cause and exits non-zero, the worker exits non-zero
    saying why."""
    envs = {refusal: refused_env(secured, tmp_path, refusal) for refusal in REFUSALS}
    workers = {
        refusal: start_worker(COUNTER, env, name=refusal, ready=False)
        for refusal, env in envs.items()
    }
    counter_topics = str(ROOT / "topics" / "counter.toml")
    # One command per refusal (each starts a Python process, slow on a busy machine): a send
    # (a producer: exit status 1, "not acknowledged ...") and topics apply (the credentials
    # check: exit status 2, "error: ...").
    commands = {
        ("ca", 1): stream_app_command(envs["ca"], "cells", "send", "counter", "bob", "increment"),
        ("password", 2): stream_app_command(envs["password"], "topics", "apply", counter_topics),
    }

    for refusal, says in REFUSALS.items():
        started = time.monotonic()
        client = CellClient(settings_from_env(envs[refusal]), config={"log_level": 0})
        with pytest.raises(KafkaAuthError, match=says):
            # The refusal surfaces from the first call that serves the client's events.
            client.send("counter", "alice", "increment", {"by": 1})
            client.flush(CLIENT_REFUSAL_S)
        assert time.monotonic() - started < CLIENT_REFUSAL_S
        del client  # its librdkafka threads would go on trying

    for (refusal, expected_status), command in commands.items():
        out, err = command.communicate(timeout=120)
        assert command.returncode == expected_status, out + err
        assert f"{REFUSALS[refusal]}" in err, err

    for refusal, worker in workers.items():
        exited = wait_for(
            lambda w=worker: w.process.poll() if w.process else None,  # type: ignore[misc]
            lambda code: code is not None,
            timeout=REFUSAL_EXIT_S,
            what=f"the worker refused ({refusal}) to exit",
        )
        log = worker.log_text()
        assert exited != 0, log[-3000:]
        assert REFUSALS[refusal] in log, log[-3000:]
        assert "[^Worker]: Ready" not in log
        # Refused before anything else: not even the data folder was made.
        env = envs[refusal]
        assert not (Path(env["STREAM_APP_DATA_DIR"]) / env["STREAM_APP_APP_ID"]).exists()
