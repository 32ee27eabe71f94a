"""A worker's secured connection to Kafka: Faust's credentials, and a check of them at start.

The settings (``STREAM_APP_SECURITY_PROTOCOL``, ``STREAM_APP_SASL_*``, ``STREAM_APP_SSL_*``) are
read in one place, :class:`~stream_app.settings.Settings`: its
:meth:`~stream_app.settings.Settings.kafka_connection` gives the confluent-kafka clients their
properties, and :func:`broker_credentials` turns the same settings into Faust's
``broker_credentials`` for its aiokafka consumer, producer and admin client.

Neither kind of client gives up on refused credentials by itself: librdkafka reconnects with
back-off for ever, and Faust's consumer and producer retry their bootstrap. A worker with a
wrong password would run without processing anything and log a failure every few seconds.
:func:`check_credentials` therefore connects once before the worker starts anything else and
raises :class:`~stream_app.errors.KafkaAuthError` (the user, the mechanism and librdkafka's
reason) at the first refusal; the worker stops with it and a non-zero exit status.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from stream_app.errors import KafkaAuthError
from stream_app.logs import rdkafka_logger
from stream_app.settings import Settings

__all__ = ["CHECK_TIMEOUT_S", "broker_credentials", "check_credentials"]

logger = logging.getLogger(__name__)

#: Longest :func:`check_credentials` waits for the cluster to answer or refuse. A cluster that
#: does neither in this time is unreachable, not refusing: the worker starts and rides it out
#: as it does without security.
CHECK_TIMEOUT_S = 15.0


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's ``broker_credentials`` for ``settings``: ``None`` for ``PLAINTEXT``, TLS
    (:class:`faust.SSLCredentials`) for ``SSL``, SASL (:class:`faust.SASLCredentials`, over TLS
    for ``SASL_SSL``) otherwise. The TLS context trusts :attr:`Settings.ssl_ca_location` (or the
    system's authorities) and presents the client certificate when one is set."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        key_password = settings.ssl_key_password
        context = create_ssl_context(
            cafile=settings.ssl_ca_location,
            certfile=settings.ssl_certificate_location,
            keyfile=settings.ssl_key_location,
            password=key_password.get_secret_value() if key_password else None,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.sasl_password
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=password.get_secret_value() if password else None,
        ssl_context=context,
        mechanism=settings.sasl_mechanism,
    )


def check_credentials(settings: Settings, *, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Connect to the cluster once with the settings' security and fail at a refusal.

    1. Nothing to check under ``PLAINTEXT``: the cluster accepts or does not answer.
    2. An AdminClient asks for the cluster's metadata, a second at a time, serving its error
       callback after each try (:func:`_first_refusal`).
    3. The metadata comes back: the credentials are good.
    4. The callback saw an authentication or TLS failure: raise
       :meth:`Settings.refusal` of it, once the AdminClient is destroyed.
    5. Neither within ``timeout``: return (an unreachable cluster is waited for as usual).

    Raises:
        KafkaAuthError: The cluster refused the credentials or the TLS handshake.
    """
    if settings.security_protocol == "PLAINTEXT":
        return
    refused = _first_refusal(settings, timeout)
    if refused is not None:
        raise refused


def _first_refusal(settings: Settings, timeout: float) -> KafkaAuthError | None:
    """Steps 2-5 of :func:`check_credentials`. Returns the refusal rather than raising it, so
    that the AdminClient is destroyed with this frame: a traceback would keep it (and its
    threads, reconnecting to a cluster that refuses them) alive until the interpreter exits,
    where those threads can crash the process."""
    seen: list[KafkaError] = []
    config: dict[str, Any] = {
        **settings.kafka_client_config(),
        "error_cb": seen.append,
        "logger": rdkafka_logger(),
    }
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
        except KafkaException:
            admin.poll(0)
            for error in seen:
                refused = settings.refusal(error.name(), error.str())
                if refused is not None:
                    return refused
            continue
        return None
    logger.warning(
        "Kafka at %s did not answer within %.0fs; starting anyway",
        settings.bootstrap_servers,
        timeout,
    )
    return None
