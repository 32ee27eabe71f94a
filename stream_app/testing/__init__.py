"""A harness for running stream_app workers against a real broker: tests, demos, benchmarks.

:class:`WorkerProcess` runs ``faust -A <module> worker`` as a subprocess with its own settings
(app id, data dir, web port), waits for it to be ready, and stops it by pid (SIGTERM, or SIGKILL
to simulate a crash). :class:`DrivenClock` sets the time of workers run with a driven clock
(``STREAM_APP_CLOCK=driven``). :func:`wait_for` polls a condition with a deadline and reports
what it saw last when the deadline passes. :func:`read_topic` reads a topic from the beginning to
its current end with a confluent-kafka consumer; :func:`committed_to_end` tells whether a
consumer group has committed all of a topic.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from stream_app.kafka.reading import Record, read_records
from stream_app.settings import KafkaConnection, Settings, client_config
from stream_app.testing.clock import DrivenClock

__all__ = [
    "ConditionTimeout",
    "DrivenClock",
    "ProbeFailed",
    "SteadyLoad",
    "WorkerProcess",
    "committed_to_end",
    "keyed_producer",
    "read_topic",
    "settings_from_env",
    "wait_for",
]

T = TypeVar("T")

READY_MARKER = "[^Worker]: Ready"
_ERROR_LINE = re.compile(r"\[(ERROR|CRITICAL)\]|^%[0-3]\|")


def keyed_producer(kafka: KafkaConnection) -> Any:
    """A confluent-kafka producer as a careful client of a stream_app app would make one:
    ``acks=all``, idempotent, and keys partitioned with murmur2 like the runtime (and Java).

    ``kafka`` is the bootstrap servers, or a client configuration with security."""
    from confluent_kafka import Producer

    return Producer(
        {
            **client_config(kafka),
            "acks": "all",
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
        }
    )


class SteadyLoad(threading.Thread):
    """Sends ``{"type": message, "body": {"by": 1}}`` to ``cells`` cells (``cell-0``...) at a
    steady pace until :attr:`halt` is set, then flushes; counts what the broker acknowledged.

    Each round produces ``per_round`` records and then serves delivery reports for ``pause``
    seconds, so at most ``per_round / pause`` records a second are offered. A full client
    queue (a broker away) skips the record rather than block.

    Attributes:
        acked: Records the broker acknowledged, per cell id.
        failed: Records whose delivery failed.
        halt: Set it to stop sending; :meth:`join` then waits for the final flush.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        message: str,
        *,
        cells: int,
        per_round: int = 20,
        pause: float = 0.02,
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.cells = bootstrap, topic, cells
        self.per_round, self.pause = per_round, pause
        self.value = json.dumps({"type": message, "body": {"by": 1}}).encode()
        self.acked: Counter[str] = Counter()
        self.failed = 0
        self.halt = threading.Event()
        self._lock = threading.Lock()

    def _ack(self, error: object, cell: str) -> None:
        with self._lock:
            if error is None:
                self.acked[cell] += 1
            else:
                self.failed += 1

    def run(self) -> None:
        """Send until halted, then flush (acknowledged or failed, nothing left in between)."""
        producer = keyed_producer(self.bootstrap)
        i = 0
        while not self.halt.is_set():
            for _ in range(self.per_round):
                cell = f"cell-{i % self.cells}"
                i += 1
                with contextlib.suppress(BufferError):
                    producer.produce(
                        self.topic,
                        key=cell.encode(),
                        value=self.value,
                        on_delivery=lambda err, _m, cell=cell: self._ack(err, cell),
                    )
            # poll returns as soon as it served a delivery report: poll until the round ends.
            round_end = time.monotonic() + self.pause
            while (left := round_end - time.monotonic()) > 0:
                producer.poll(left)
        producer.flush(120)

    def total(self) -> int:
        """Records acknowledged so far."""
        with self._lock:
            return sum(self.acked.values())


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The :class:`Settings` a worker reads when started with the ``STREAM_APP_*`` in ``env``.

    Other variables are ignored; unset settings take their defaults, not the caller's environment.
    """
    prefix = "STREAM_APP_"
    return Settings.model_validate(
        {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    )


class ConditionTimeout(AssertionError):
    """A condition awaited by :func:`wait_for` did not hold before the deadline."""


class ProbeFailed(AssertionError):
    """Raised by a probe when waiting longer cannot help (e.g. the worker died)."""


def wait_for(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Call ``probe`` until ``done(result)`` holds; return that result.

    Raises:
        ConditionTimeout: After ``timeout`` seconds, with the last value seen (or the last
            exception the probe raised).
    """
    deadline = time.monotonic() + timeout
    last: Any = "<never probed>"
    while True:
        try:
            value = probe()
        except ProbeFailed:
            raise
        except Exception as exc:
            last = f"probe raised {exc!r}"
        else:
            if done(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            shown = repr(last)
            if len(shown) > 2000:
                shown = shown[:2000] + "..."
            raise ConditionTimeout(f"{what} not reached within {timeout:.0f}s; last seen: {shown}")
        time.sleep(interval)


class WorkerProcess:
    """A ``faust worker`` subprocess for one app module.

    Args:
        module: The app module, e.g. ``stream_app.examples.counter``.
        env: Extra environment (``STREAM_APP_*`` settings); the rest is inherited.
        log_path: File that receives the worker's stdout and stderr.
        web_port: The worker's HTTP port (also set as ``STREAM_APP_WEB_PORT``).
    """

    def __init__(
        self, module: str, *, env: Mapping[str, str], log_path: Path, web_port: int
    ) -> None:
        self.module = module
        self.env = {**os.environ, **env, "STREAM_APP_WEB_PORT": str(web_port)}
        self.log_path = log_path
        self.web_port = web_port
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int:
        """The worker's pid (it must be started)."""
        assert self.process is not None, "worker not started"
        return self.process.pid

    def start(self) -> WorkerProcess:
        """Start the worker process (does not wait; see :meth:`wait_ready`)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        faust = Path(sys.executable).with_name("faust")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(faust),
                    "-A",
                    self.module,
                    "worker",
                    "-l",
                    "info",
                    "--web-port",
                    str(self.web_port),
                    "--web-host",
                    "127.0.0.1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        return self

    def log_text(self, *, since_start: bool = True) -> str:
        """The worker's log (by default only what this start wrote)."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset if since_start else 0)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def error_lines(self) -> list[str]:
        """The ERROR lines of this start's log: Python's ``[ERROR]`` and ``[CRITICAL]`` records,
        and librdkafka's own error lines (``%0|`` to ``%3|``) should a client log to stderr."""
        return [line for line in self.log_text().splitlines() if _ERROR_LINE.search(line)]

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, *, timeout: float = 120.0) -> None:
        """Wait until Faust reports the worker ready (partitions assigned, tables recovered)."""

        def probe() -> str:
            if not self.alive():
                raise ProbeFailed(
                    f"worker exited with {self.process.returncode if self.process else None}:\n"
                    + self.log_text()[-4000:]
                )
            return self.log_text()

        try:
            wait_for(probe, lambda log: READY_MARKER in log, timeout=timeout, what="worker ready")
        except ConditionTimeout as exc:
            tail = self.log_text()[-4000:]
            raise ConditionTimeout(f"{exc}\n--- worker log tail ---\n{tail}") from None

    def get_json(self, path: str, *, timeout: float = 5.0) -> Any:
        """GET ``path`` from the worker's web server and decode the JSON body."""
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            with contextlib.suppress(ValueError):
                return json.loads(body)
            raise

    def kill(self) -> None:
        """SIGKILL the worker (a crash: nothing is flushed or committed) and reap it."""
        if self.alive():
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, *, timeout: float = 30.0) -> int | None:
        """Stop the worker gracefully (SIGTERM), SIGKILL after ``timeout``; return exit code."""
        if self.process is None:
            return None
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def read_topic(kafka: KafkaConnection, topic: str, *, timeout: float = 30.0) -> list[Record]:
    """Every record of ``topic`` from the beginning to its end as of the call
    (:func:`stream_app.kafka.reading.read_records`, failing as a wait does).

    Raises:
        ConditionTimeout: The end was not reached within ``timeout`` seconds.
    """
    try:
        return read_records(kafka, topic, timeout=timeout)
    except TimeoutError as exc:
        raise ConditionTimeout(str(exc)) from None


def committed_to_end(kafka: KafkaConnection, group: str, topic: str) -> bool:
    """Whether consumer group ``group`` has committed offsets up to the end of every partition
    of ``topic`` that holds records (asked without joining the group).

    Raises:
        LookupError: ``topic`` does not exist.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**client_config(kafka), "group.id": group, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise LookupError(f"topic {topic} does not exist")
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        for tp in consumer.committed(partitions, timeout=10):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=10
            )
            # An empty partition has nothing to commit; another needs an offset at its end.
            if high > low and tp.offset < high:
                return False
        return True
    finally:
        consumer.close()
