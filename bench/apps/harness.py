"""The worker side of the benchmark harness: progress, options and profiling, set by environment.

- ``BENCH_EXPECTED``: the record count that ends a :class:`Progress` measurement.
- ``BENCH_FAUST_OPTIONS``: a JSON object of extra :class:`faust.App` options (e.g.
  ``{"producer_linger": 0.005}``), applied the same way to every subject that runs on Faust, to
  try a tuning on all of them at once.
- ``BENCH_PROFILE``: a file to write a cProfile of the worker's event-loop thread to, at exit.
"""

from __future__ import annotations

import atexit
import cProfile
import json
import os
import resource
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Progress", "faust_options", "start_profile_if_requested"]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Progress:
    """Counts applied records and times the span from the first to the ``expected``-th.

    A subject calls :meth:`note` once per record it applied. The first call notes the wall time
    and the process's CPU time (user + system, every thread); the call that reaches
    ``expected`` notes them again. The harness reads :meth:`snapshot` over HTTP: polling costs
    the worker one small JSON answer, and the figures do not depend on when the harness looks.

    Attributes:
        expected: The record count that ends the measurement (0: never ends).
        count: Records applied so far.
        first_wall: ``time.time()`` at the first record.
        done_wall: ``time.time()`` at the ``expected``-th record.
        first_cpu: Process CPU seconds at the first record.
        done_cpu: Process CPU seconds at the ``expected``-th record.
    """

    expected: int
    count: int = 0
    first_wall: float | None = None
    done_wall: float | None = None
    first_cpu: float | None = None
    done_cpu: float | None = None

    @classmethod
    def from_env(cls) -> Progress:
        """A tracker expecting ``BENCH_EXPECTED`` records (0 when unset)."""
        return cls(expected=int(os.environ.get("BENCH_EXPECTED", "0")))

    def note(self) -> None:
        """One more record applied."""
        if self.count == 0:
            self.first_wall, self.first_cpu = time.time(), _cpu_seconds()
        self.count += 1
        if self.count == self.expected:
            self.done_wall, self.done_cpu = time.time(), _cpu_seconds()

    def snapshot(self) -> dict[str, Any]:
        """The figures so far, as JSON."""
        return {
            "expected": self.expected,
            "count": self.count,
            "first_wall": self.first_wall,
            "done_wall": self.done_wall,
            "first_cpu": self.first_cpu,
            "done_cpu": self.done_cpu,
        }


def faust_options() -> dict[str, Any]:
    """Extra :class:`faust.App` options from ``BENCH_FAUST_OPTIONS`` (a JSON object)."""
    raw = os.environ.get("BENCH_FAUST_OPTIONS", "").strip()
    options = json.loads(raw) if raw else {}
    if not isinstance(options, dict):
        raise ValueError(f"BENCH_FAUST_OPTIONS must be a JSON object, got {raw!r}")
    return options


def start_profile_if_requested() -> cProfile.Profile | None:
    """Profile the calling thread from now on if ``BENCH_PROFILE`` names a file.

    Call it when the worker module is imported: that is the thread that runs the worker's event
    loop. The stats are written when the process exits (``faust worker`` exits normally on
    SIGTERM). A profiled run is slower; use it for where the time goes, not for how fast.
    """
    path = os.environ.get("BENCH_PROFILE")
    if not path:
        return None
    profiler = cProfile.Profile()
    atexit.register(profiler.dump_stats, path)
    profiler.enable()
    return profiler
