"""Unit tests of the security settings: validation, the librdkafka and Faust configuration
built from them, the errors a refusal raises, and that the password never shows."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import faust
import pytest
from pydantic import ValidationError

from stream_app.errors import ConfigError, KafkaAuthError
from stream_app.kafka.app import create_app
from stream_app.kafka.security import broker_credentials, check_credentials
from stream_app.settings import Settings, client_config
from stream_app.testing.secured_broker import TestCertificates

PASSWORD = "s3cret-Pa55"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No STREAM_APP_* from outside, no .env."""
    for name in list(os.environ):
        if name.upper().startswith("STREAM_APP_") or name.upper() == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(scope="module")
def real_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real CA certificate (made once for the module: key generation takes a moment)."""
    return TestCertificates.make(tmp_path_factory.mktemp("certs")).ca


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    """A CA file (its content is not read by the settings, only its existence)."""
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def scram(ca: Path, **more: object) -> Settings:
    return Settings(
        bootstrap_servers="kafka-1:9093,kafka-2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="worker",
        sasl_password=PASSWORD,
        ssl_ca_location=ca,
        **more,
    )


def test_plaintext_by_default_has_only_the_bootstrap_servers_and_protocol() -> None:
    s = Settings()
    assert s.kafka_connection() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }
    assert broker_credentials(s) is None


def test_sasl_ssl_gives_every_librdkafka_key(ca: Path) -> None:
    assert scram(ca).kafka_connection() == {
        "bootstrap.servers": "kafka-1:9093,kafka-2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "worker",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(ca),
    }


def test_settings_come_from_the_shared_environment_names(
    monkeypatch: pytest.MonkeyPatch, ca: Path, tmp_path: Path
) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("c")
    key.write_text("k")
    for name, value in {
        "STREAM_APP_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAM_APP_SASL_MECHANISM": "SCRAM-SHA-256",
        "STREAM_APP_SASL_USERNAME": "svc",
        "STREAM_APP_SASL_PASSWORD": PASSWORD,
        "STREAM_APP_SSL_CA_LOCATION": str(ca),
        "STREAM_APP_SSL_CERTIFICATE_LOCATION": str(cert),
        "STREAM_APP_SSL_KEY_LOCATION": str(key),
        "STREAM_APP_SSL_KEY_PASSWORD": "key-pw",
    }.items():
        monkeypatch.setenv(name, value)
    config = Settings().kafka_connection()
    assert config["sasl.mechanism"] == "SCRAM-SHA-256"
    assert config["sasl.username"] == "svc"
    assert config["sasl.password"] == PASSWORD
    assert config["ssl.certificate.location"] == str(cert)
    assert config["ssl.key.location"] == str(key)
    assert config["ssl.key.password"] == "key-pw"


def test_the_client_config_adds_an_error_callback_and_client_config_copies(ca: Path) -> None:
    s = scram(ca)
    config = s.kafka_client_config()
    assert config["error_cb"] == s.raise_refusal
    assert {k: v for k, v in config.items() if k != "error_cb"} == s.kafka_connection()
    assert client_config("h:1") == {"bootstrap.servers": "h:1"}
    assert client_config(config) == config and client_config(config) is not config


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs STREAM_APP_SASL_MECHANISM"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
            "STREAM_APP_SASL_USERNAME, STREAM_APP_SASL_PASSWORD",
        ),
        ({"sasl_username": "u"}, r"SASL_\* settings are given but .* is PLAINTEXT"),
        ({"security_protocol": "SSL", "sasl_mechanism": "PLAIN"}, "is SSL"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"ssl_ca_location": "/nowhere/ca.pem"}, "ssl_ca_location"),
    ],
)
def test_incomplete_or_contradictory_security_is_refused(given: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(**given)  # type: ignore[arg-type]


def test_tls_files_need_a_tls_protocol_and_a_certificate_needs_its_key(ca: Path) -> None:
    with pytest.raises(ValidationError, match=r"STREAM_APP_SSL_\* settings .* PLAINTEXT"):
        Settings(ssl_ca_location=ca)
    with pytest.raises(ValidationError, match="both STREAM_APP_SSL_CERTIFICATE_LOCATION"):
        Settings(security_protocol="SSL", ssl_certificate_location=ca)


def test_the_password_is_never_in_a_repr_or_a_log(
    real_ca: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = scram(real_ca)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("settings: %s %r", s, s)
    assert PASSWORD not in repr(s)
    assert PASSWORD not in str(s)
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(broker_credentials(s))


def test_faust_gets_sasl_credentials_over_tls_trusting_the_ca(real_ca: Path) -> None:
    credentials = broker_credentials(scram(real_ca))
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("worker", PASSWORD)
    context = credentials.ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1
    app = create_app(scram(real_ca, app_id="secured"))
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    assert app.kafka_config["sasl.password"] == PASSWORD


def test_tls_alone_gives_faust_ssl_credentials(real_ca: Path) -> None:
    credentials = broker_credentials(Settings(security_protocol="SSL", ssl_ca_location=real_ca))
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL"


def test_a_refusal_names_the_user_the_mechanism_and_what_to_check(ca: Path) -> None:
    s = scram(ca)
    auth = s.refusal("_AUTHENTICATION", "SASL authentication error: invalid credentials")
    assert isinstance(auth, KafkaAuthError) and isinstance(auth, ConfigError)
    assert not auth.retriable
    text = str(auth)
    assert "authentication failed for user 'worker' with mechanism SCRAM-SHA-512" in text
    assert "kafka-1:9093,kafka-2:9093" in text and "invalid credentials" in text
    assert PASSWORD not in text
    tls = s.refusal("_SSL", "certificate verify failed")
    assert tls is not None and "TLS handshake" in str(tls) and str(ca) in str(tls)
    assert s.refusal("_TRANSPORT", "connection refused") is None


class _Error:
    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name

    def str(self) -> str:
        return f"{self._name} happened"


def test_the_error_callback_raises_refusals_only(ca: Path) -> None:
    s = scram(ca)
    s.raise_refusal(_Error("_ALL_BROKERS_DOWN"))
    with pytest.raises(KafkaAuthError, match="user 'worker'"):
        s.raise_refusal(_Error("_AUTHENTICATION"))


def test_plaintext_is_not_checked() -> None:
    # Nothing listens there: a check that connected would wait for its timeout.
    check_credentials(Settings(bootstrap_servers="127.0.0.1:9"), timeout=0.0)


def test_the_views_bind_to_the_loopback_interface_unless_exposed() -> None:
    assert create_app(Settings(app_id="quiet")).conf.web_bind == "127.0.0.1"
    exposed = create_app(Settings(app_id="exposed", web_host="0.0.0.0"))
    assert exposed.conf.web_bind == "0.0.0.0"
