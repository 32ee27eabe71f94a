"""A single-node Kafka broker that only speaks SASL/SCRAM over TLS, for the security tests.

:class:`SecuredBroker` is a :class:`~stream_app.testing.dev_broker.LocalBroker` (the same
Maven-resolved jars, the same KRaft node, the same start and stop by pid) whose client listener
is ``SASL_SSL`` with ``SCRAM-SHA-512`` and whose certificates are made on the spot. Start
protocol, on top of the development broker's:

1. :class:`TestCertificates` makes, with ``openssl``, a certificate authority, the broker's key
   and certificate signed by it for ``127.0.0.1`` and ``localhost`` (in a PKCS#12 keystore), and
   a second authority that signed nothing (for "an untrusted CA" tests).
2. The broker's properties are the development broker's with the client listener swapped for
   ``SASL_SSL`` (also the inter-broker listener: the broker writes transaction markers to
   itself through it, as its own SCRAM user) and the TLS and SASL settings added. The
   controller listener stays plaintext on 127.0.0.1.
3. The SCRAM users (the broker's own and the ones asked for) are written into the metadata
   log when it is formatted (``StorageTool format --add-scram``), so they exist before the
   broker first answers.
4. The broker counts as up when an AdminClient authenticated as the broker's user sees it.

The broker has no authorizer: every authenticated user may do everything, which is what the
tests need (authentication and encryption, not ACLs).
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stream_app.errors import BrokerStartError, ToolMissingError
from stream_app.testing.dev_broker import LocalBroker, broker_answers, find_free_port

__all__ = ["MECHANISM", "SecuredBroker", "TestCertificates"]

#: The SASL mechanism of the secured broker's client listener.
MECHANISM = "SCRAM-SHA-512"
_BROKER_USER = "broker"
#: Elliptic-curve keys: made in milliseconds, where RSA keys take a second each.
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _openssl(*args: str, cwd: Path) -> None:
    try:
        done = subprocess.run(
            ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
        )
    except FileNotFoundError as exc:
        raise ToolMissingError("openssl is needed to make the test certificates") from exc
    if done.returncode != 0:
        raise BrokerStartError(f"openssl {args[0]} failed:\n{done.stderr[-2000:]}")


@dataclass(frozen=True)
class TestCertificates:
    """The files of a test certificate authority and of a broker certificate it signed.

    Attributes:
        ca: PEM certificate of the authority that signed the broker's certificate (what clients
            trust: ``STREAM_APP_SSL_CA_LOCATION``).
        other_ca: PEM certificate of an authority that signed nothing here.
        keystore: PKCS#12 keystore of the broker: its key, its certificate, the CA's.
        keystore_password: The keystore's password.
    """

    __test__ = False  # not a pytest test class, whatever its name

    ca: Path
    other_ca: Path
    keystore: Path
    keystore_password: str

    @classmethod
    def make(cls, folder: Path) -> TestCertificates:
        """Make the authorities and the broker's keystore in ``folder`` (valid for two days)."""
        folder.mkdir(parents=True, exist_ok=True)
        password = secrets.token_hex(12)
        for name in ("ca", "other-ca"):
            _openssl(
                "req", "-x509", *_EC_KEY, "-nodes", "-days", "2",
                "-keyout", f"{name}.key", "-out", f"{name}.pem",
                "-subj", f"/CN=stream-app test {name}",
                cwd=folder,
            )  # fmt: skip
        _openssl(
            "req", *_EC_KEY, "-nodes", "-keyout", "broker.key",
            "-out", "broker.csr", "-subj", "/CN=localhost",
            cwd=folder,
        )  # fmt: skip
        (folder / "broker.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl(
            "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "broker.ext", "-out", "broker.pem",
            cwd=folder,
        )  # fmt: skip
        _openssl(
            "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
            "-certfile", "ca.pem", "-name", "broker", "-out", "broker.p12",
            "-passout", f"pass:{password}",
            cwd=folder,
        )  # fmt: skip
        return cls(
            ca=folder / "ca.pem",
            other_ca=folder / "other-ca.pem",
            keystore=folder / "broker.p12",
            keystore_password=password,
        )


class SecuredBroker(LocalBroker):
    """A KRaft broker on 127.0.0.1 whose only client listener is SASL_SSL (SCRAM-SHA-512).

    Args:
        certificates: The CA and the broker keystore (:meth:`TestCertificates.make`).
        users: SCRAM users to create, name to password.
        port: The client port; a free one by default.
        home: The ``.kafka`` folder (where the jars are); this broker lives in
            ``home/broker-<port>`` and :meth:`down` with ``purge=True`` deletes it.
    """

    def __init__(
        self,
        certificates: TestCertificates,
        users: dict[str, str],
        *,
        port: int | None = None,
        home: Path | None = None,
    ) -> None:
        super().__init__(port or find_free_port(), home=home)
        self.certificates = certificates
        self.users = dict(users)
        self.broker_password = secrets.token_hex(12)

    def client_security(self, user: str, password: str | None = None) -> dict[str, str]:
        """librdkafka properties of a client of this broker logging in as ``user`` (with its
        own password unless another is given)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": user,
            "sasl.password": self.users[user] if password is None else password,
            "ssl.ca.location": str(self.certificates.ca),
        }

    def answers(self, *, timeout: float = 2.0) -> bool:
        """Whether the broker answers a client authenticated as the broker's own user."""
        security = {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": _BROKER_USER,
            "sasl.password": self.broker_password,
            "ssl.ca.location": str(self.certificates.ca),
        }
        return broker_answers(self.bootstrap, timeout=timeout, security=security)

    def format_arguments(self) -> list[str]:
        """``--add-scram`` for the broker's user and each of :attr:`users`."""
        users = {_BROKER_USER: self.broker_password, **self.users}
        arguments = []
        for name, password in users.items():
            arguments += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return arguments

    def _write_config(self, controller: int) -> None:
        """The development broker's properties, with the listeners and security replaced."""
        super()._write_config(controller)
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{_BROKER_USER}" password="{self.broker_password}";'
        )
        replaced = {
            "listeners": f"SASL_SSL://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.certificates.keystore),
            "ssl.keystore.password": self.certificates.keystore_password,
            "ssl.key.password": self.certificates.keystore_password,
            # The broker is a client of its own listener (transaction markers).
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.certificates.ca),
        }
        kept = [
            line
            for line in self.properties.read_text().splitlines()
            if line.partition("=")[0] not in replaced
        ]
        added = [f"{key}={value}" for key, value in replaced.items()]
        self.properties.write_text("\n".join([*kept, *added, ""]))
