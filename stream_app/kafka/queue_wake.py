"""Wake the event loop when a confluent-kafka consumer has records: librdkafka's queue IO event.

The batched input (:mod:`stream_app.kafka.batch_input`) takes its records on the event loop's
thread. Without this module, waiting for the next record means a blocking ``poll`` in a helper
thread: every record that arrives alone (a low input rate) costs a hop to that thread and one
back, three thread wake-ups in all, and an idle input wakes the thread at every poll time-out.
On the small virtual machines the benchmarks run on a wake-up costs some 50-90 µs of CPU, which
made a record at 1,000/s cost ten times its bulk price.

librdkafka can instead write a byte to a file descriptor whenever its consumer queue goes from
empty to non-empty (``rd_kafka_queue_io_event_enable``). :class:`QueueWake` gives that
descriptor (a non-blocking pipe) to the consumer's queue and watches it from the event loop
(``loop.add_reader``): the thread that fetched the records wakes the loop directly, and nothing
runs while no record comes. The reader must take what the queue holds until a ``consume``
returns nothing before it waits again (the byte is written only on the empty -> non-empty
transition).

confluent-kafka does not expose the call, so it is made with :mod:`ctypes` on the librdkafka
the process has loaded, with the consumer's ``rd_kafka_t`` read from confluent-kafka's handle
object (the field after the object header). :func:`QueueWake.attach` checks that the pointer is
the right one (librdkafka's opaque of that handle is the Python object itself, as
confluent-kafka sets it) and returns ``None`` whenever anything is not as expected (another
platform, another build of the client, an object that is not a confluent-kafka consumer): the
caller then waits in a thread as before. ``tests/unit/test_queue_wake.py`` fails if the
installed confluent-kafka no longer fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

__all__ = ["QueueWake"]

logger = logging.getLogger(__name__)

#: ``rd_kafka_type()`` of a consumer handle.
_RD_KAFKA_CONSUMER = 1


def _librdkafka() -> Any | None:
    """The librdkafka the process has loaded (confluent-kafka's), with the few functions used
    here declared; ``None`` if it cannot be found."""
    maps = Path("/proc/self/maps")
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return None
    paths = {line.split()[-1] for line in lines if "librdkafka" in line and "/" in line}
    if len(paths) != 1:
        return None
    try:
        lib = ctypes.CDLL(paths.pop())
        lib.rd_kafka_opaque.restype = ctypes.c_void_p
        lib.rd_kafka_opaque.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_type.restype = ctypes.c_int
        lib.rd_kafka_type.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_queue_get_consumer.restype = ctypes.c_void_p
        lib.rd_kafka_queue_get_consumer.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_queue_io_event_enable.restype = None
        lib.rd_kafka_queue_io_event_enable.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_size_t,
        ]
        lib.rd_kafka_queue_destroy.restype = None
        lib.rd_kafka_queue_destroy.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return lib


def _handle_of(consumer: Consumer, lib: Any) -> int | None:
    """The ``rd_kafka_t *`` of a confluent-kafka consumer, or ``None`` if it cannot be told.

    confluent-kafka's ``Handle`` object starts with the object header, then ``rd_kafka_t *rk``;
    it sets librdkafka's opaque to the object itself, which confirms the pointer read.
    """
    if not isinstance(consumer, Consumer):
        return None
    rk = ctypes.c_void_p.from_address(id(consumer) + object.__basicsize__).value
    if not rk:
        return None
    if lib.rd_kafka_opaque(rk) != id(consumer) or lib.rd_kafka_type(rk) != _RD_KAFKA_CONSUMER:
        return None
    return int(rk)


class QueueWake:
    """Calls ``on_ready()`` on the event loop when the consumer's queue gets something.

    Made by :meth:`attach`; :meth:`detach` before the consumer is closed.
    """

    def __init__(
        self,
        lib: Any,
        consumer: Consumer,
        loop: asyncio.AbstractEventLoop,
        on_ready: Callable[[], None],
    ) -> None:
        self._lib = lib
        self._consumer: Consumer | None = consumer
        self._loop = loop
        self._on_ready = on_ready
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        # librdkafka writes from its own threads: never let a full pipe block them.
        os.set_blocking(self._write_fd, False)
        self._set_event(self._write_fd)
        loop.add_reader(self._read_fd, self._readable)

    @classmethod
    def attach(
        cls, consumer: Any, loop: asyncio.AbstractEventLoop, on_ready: Callable[[], None]
    ) -> QueueWake | None:
        """Watch ``consumer``'s queue; ``None`` where librdkafka's IO event cannot be used (the
        caller waits for records another way)."""
        try:
            lib = _librdkafka()
            if lib is None or _handle_of(consumer, lib) is None:
                return None
            return cls(lib, consumer, loop, on_ready)
        except Exception as exc:
            logger.info("input: librdkafka's queue event not used (%s); polling in a thread", exc)
            return None

    def _set_event(self, fd: int) -> None:
        """Point the consumer queue's IO event at ``fd`` (``-1``: off)."""
        consumer = self._consumer
        assert consumer is not None
        rk = _handle_of(consumer, self._lib)
        if rk is None:
            raise RuntimeError("the consumer's librdkafka handle is gone")
        queue = self._lib.rd_kafka_queue_get_consumer(rk)
        if not queue:
            raise RuntimeError("the consumer has no consumer queue")
        try:
            if fd >= 0:
                self._lib.rd_kafka_queue_io_event_enable(queue, fd, b"1", 1)
            else:
                self._lib.rd_kafka_queue_io_event_enable(queue, -1, None, 0)
        finally:
            self._lib.rd_kafka_queue_destroy(queue)

    def _readable(self) -> None:
        # One read: a byte per empty -> non-empty transition, so a few at most; any left over
        # make the descriptor readable again.
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self._read_fd, 4096)
        self._on_ready()

    def detach(self) -> None:
        """Stop watching: turn the IO event off (before the pipe closes, so librdkafka never
        writes to a descriptor number that may have been reused), then close the pipe. Call it
        before the consumer is closed."""
        if self._consumer is None:
            return
        self._loop.remove_reader(self._read_fd)
        try:
            self._set_event(-1)
        except Exception as exc:
            # librdkafka may still write to the pipe: leave its write end open (one descriptor
            # until the process exits) rather than let it write into a reused number.
            logger.warning("input: could not turn librdkafka's queue event off: %s", exc)
        else:
            os.close(self._write_fd)
        finally:
            self._consumer = None
            os.close(self._read_fd)
