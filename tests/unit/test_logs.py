"""Transient Kafka client errors become rate-limited WARNINGs; real errors stay ERRORs."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from stream_app.logs import RDKAFKA_LOGGER, TRANSIENT, TransientErrors, quiet_transient_errors


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, list[logging.LogRecord]]]:
    """A logger of its own with a fresh filter for aiokafka's and librdkafka's transient
    errors (the process-wide one keeps its rate windows across tests), and what it emitted."""
    log = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
    handler = Collect()
    quiet = TransientErrors(TRANSIENT["aiokafka"] | TRANSIENT[RDKAFKA_LOGGER], window=0.3)
    log.addHandler(handler)
    log.addFilter(quiet)
    log.propagate = False
    try:
        yield log, handler.records
    finally:
        log.removeFilter(quiet)
        log.removeHandler(handler)


def test_a_transient_error_is_one_warning_per_window(
    logged: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    log, records = logged
    for _ in range(50):
        log.error("Unable connect to node with id %s: %s", 1, "Connect call failed")
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("WARNING", "Unable connect to node with id 1: Connect call failed")
    ]
    time.sleep(0.35)  # the rate window itself is what is tested
    log.error("Unable connect to node with id %s: %s", 1, "Connect call failed")
    assert [(r.levelno, r.getMessage()) for r in records][1:] == [
        (
            logging.WARNING,
            "Unable connect to node with id 1: Connect call failed (and 49 more like it, "
            "held back)",
        )
    ]


def test_a_transient_warning_is_rate_limited_and_matched_by_its_start() -> None:
    quiet = TransientErrors({"producer buffer full size *"}, window=60)
    log = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
    handler = Collect()
    log.addHandler(handler)
    log.addFilter(quiet)
    log.propagate = False
    for size in range(100, 110):
        log.warning(f"producer buffer full size {size}")
    log.warning("something else")
    assert [r.getMessage() for r in handler.records] == [
        "producer buffer full size 100",
        "something else",
    ]


def test_other_errors_keep_their_level(
    logged: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    log, records = logged
    log.error("Attempt to join group failed due to fatal error: %s", "InvalidGroupId")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        # The words of a transient error, but with a traceback: something else went wrong.
        log.exception("Unable to update metadata from %s", [1])
    log.warning("Unable to update metadata from %s", [1])
    assert [r.levelno for r in records] == [logging.ERROR, logging.ERROR, logging.WARNING]


def test_rdkafka_connection_failures_are_warnings_other_facilities_are_not(
    logged: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    log, records = logged
    rdkafka = logging.getLogger(RDKAFKA_LOGGER)
    # confluent-kafka logs to the logger it is given as ("%s [%s] %s", fac, client, message).
    for facility, message in [
        ("FAIL", "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed"),
        ("SSL", "certificate verify failed"),
        ("ADDOFFSETS", "TxnCoordinator/1: Failed to add offsets: Local: Broker transport failure"),
        ("TXNERR", "Current transaction failed in state BeginCommit: fenced"),
    ]:
        record = rdkafka.makeRecord(
            RDKAFKA_LOGGER,
            logging.ERROR,
            __file__,
            0,
            "%s [%s] %s",
            (facility, "rdkafka#producer-1", message),
            None,
        )
        log.handle(record)
    assert [(r.args[0] if isinstance(r.args, tuple) else None, r.levelname) for r in records] == [
        ("FAIL", "WARNING"),
        ("SSL", "ERROR"),
        ("ADDOFFSETS", "WARNING"),
        ("TXNERR", "ERROR"),
    ]


def test_the_filters_are_installed_on_the_clients_loggers() -> None:
    quiet_transient_errors()
    quiet_transient_errors()  # idempotent
    for name in TRANSIENT:
        filters = [f for f in logging.getLogger(name).filters if isinstance(f, TransientErrors)]
        assert len(filters) == 1, name
        assert filters[0].kinds == TRANSIENT[name]


def test_every_transient_template_is_one_the_client_logs_on_that_logger() -> None:
    """The filter matches logger names and format strings verbatim: check each is still what
    the client's source logs (an upgrade that rewords one, or renames its logger, would
    otherwise bring its ERROR lines back without a failing test)."""
    import importlib
    import inspect

    modules = {"aiokafka": "aiokafka.client"}  # the client module logs as "aiokafka"
    for name, kinds in TRANSIENT.items():
        if name == RDKAFKA_LOGGER:
            continue
        module = modules.get(name, name)
        source = inspect.getsource(importlib.import_module(module))
        assert f'getLogger("{name}")' in source or (
            module == name and re.search(r"get_?[lL]ogger\(__name__\)", source)
        ), f"{module} does not log as {name!r}"
        for template in kinds:
            template = template.removesuffix("*")
            # Adjacent string literals split over lines are one format string.
            assert template in re.sub(r'"\s*\n\s*"', "", source), (
                f"{module} no longer logs {template!r}"
            )


def test_the_stop_deadline_ends_a_hung_process() -> None:
    """exit_after: a process whose stop hangs exits with STOP_OVERRUN_EXIT and says why."""
    code = (
        "import logging, time\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from stream_app.kafka.app import exit_after\n"
        "exit_after(0.5)\n"
        "time.sleep(30)\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False
    )
    from stream_app.kafka.app import STOP_OVERRUN_EXIT

    assert done.returncode == STOP_OVERRUN_EXIT, done.stderr
    assert time.monotonic() - started < 15
    assert "stopping took longer than" in done.stderr
