"""Why the broker-fault harness says a worker stopped (:func:`stop_cause`), and which causes
are the known one (:func:`coordinator_loss`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.testing import WorkerProcess
from stream_app.testing.broker_faults import coordinator_loss, stop_cause

RETRIED = (
    "[2026-12-01 12:25:20,654] [30909] [ERROR] ADDOFFSETS [t-txn#producer-7] [thrd:main]: "
    "TxnCoordinator/3: Failed to add offsets to transaction: Broker: Producer attempted to "
    "update a transaction while another concurrent operation on the same transaction was ongoing"
)
STOPPED = (
    "[2026-12-01 12:25:41,101] [30909] [ERROR] batch input: commit failed: no answer from the "
    "Kafka client within 25s; stopping the worker"
)


def worker_with_log(tmp_path: Path, *lines: str) -> WorkerProcess:
    log = tmp_path / "worker.log"
    log.write_text("".join(f"{line}\n" for line in lines))
    return WorkerProcess("tests.apps.probe", env={}, log_path=log, web_port=0)


def test_the_line_that_says_the_worker_stops_is_the_cause_not_an_earlier_retried_error(
    tmp_path: Path,
) -> None:
    worker = worker_with_log(tmp_path, "[INFO] started", RETRIED, STOPPED)
    assert stop_cause(worker) == STOPPED


def test_without_such_a_line_the_first_error_line_is_the_cause(tmp_path: Path) -> None:
    worker = worker_with_log(tmp_path, "[INFO] started", RETRIED, "[2026] [CRITICAL] boom")
    assert stop_cause(worker) == RETRIED


def test_without_any_error_line_the_exit_status_is_the_cause(tmp_path: Path) -> None:
    worker = worker_with_log(tmp_path, "[INFO] started")
    assert stop_cause(worker) == "exit status None"


@pytest.mark.parametrize(
    "cause",
    [
        STOPPED,
        "[ERROR] batch input: exactly_once: commit failed: t.probe.in[2]: KafkaError{code="
        '_TRANSPORT,val=-195,str="Failed to add offsets to transaction on broker TxnCoordinator'
        '/1: Local: Broker transport failure (after 0ms)"}; t.probe.in[3]: KafkaError{code='
        'COORDINATOR_LOAD_IN_PROGRESS,val=14,str="Failed to commit offsets (after 898ms)"}; '
        "stopping the worker",
        "[ERROR] batch input: exactly_once: commit failed: t.probe.in[0]: KafkaError{code="
        '_TIMED_OUT,val=-185,str="Timed out waiting for operation to finish"}; stopping the worker',
    ],
    ids=["no-answer", "transport-and-loading", "timed-out"],
)
def test_a_commit_the_coordinators_loss_failed_is_the_known_cause(cause: str) -> None:
    assert coordinator_loss(cause)


@pytest.mark.parametrize(
    "cause",
    [
        RETRIED,
        "[ERROR] batch input: exactly_once: commit failed: t.probe.in[0]: KafkaError{code="
        '_FENCED,val=-144,str="fenced"}; stopping the worker',
        "[ERROR] batch input: exactly_once: commit failed: t.probe.in[0]: KafkaError{code="
        '_TIMED_OUT,val=-185,str="x"}; t.probe.in[1]: KafkaError{code=INVALID_PRODUCER_EPOCH,'
        'val=47,str="y"}; stopping the worker',
        "[ERROR] batch input failed; stopping the worker",
        "exit status -9",
    ],
    ids=["retried-line", "fenced", "one-partition-fenced", "other-failure", "exit-status"],
)
def test_any_other_stop_is_not(cause: str) -> None:
    assert not coordinator_loss(cause)
