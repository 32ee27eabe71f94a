"""Timers under a driven clock (``STREAM_APP_CLOCK=driven``), with real workers and Kafka.

One worker of ``tests.apps.clocked`` on a fresh app id: the test sets the time through the
app's clock topic (:class:`~stream_app.testing.DrivenClock`) before starting it, then moves
the clock in steps and counts the firings the cells record: a daily cron timer in
Europe/Amsterdam across both daylight-saving changes of 2027, a one-shot and an ``every``
timer, and cron timers with each misfire policy across a SIGKILL and a restart while the
clock moved on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from stream_app.clients.cells import CellClient
from stream_app.testing import (
    DrivenClock,
    WorkerProcess,
    committed_to_end,
    settings_from_env,
    wait_for,
)

MODULE = "tests.apps.clocked"
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
HOUR = 3_600_000


def local(ms: int) -> str:
    """``ms`` as Amsterdam local time with its offset, e.g. ``2027-03-28T03:00+02:00``."""
    return datetime.fromtimestamp(ms / 1000, AMSTERDAM).isoformat(timespec="minutes")


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


#: When ``30 2 * * *`` in Amsterdam comes due around the spring-forward night of 2027.
SPRING_DUES = [
    ms(datetime(2027, 3, 27, 2, 30, tzinfo=AMSTERDAM)),
    ms(datetime(2027, 3, 28, 3, 0, tzinfo=AMSTERDAM)),  # 02:30 is skipped that night
    ms(datetime(2027, 3, 29, 2, 30, tzinfo=AMSTERDAM)),
    ms(datetime(2027, 3, 30, 2, 30, tzinfo=AMSTERDAM)),
]


#: ... and around the fall-back night (02:00-03:00 is passed twice on 2027-10-31).
FALL_DUES = [
    ms(datetime(2027, 10, 30, 2, 30, tzinfo=AMSTERDAM)),
    ms(datetime(2027, 10, 31, 2, 30, tzinfo=AMSTERDAM)),  # the first pass only (fold=0)
]


def send(env: dict[str, str], *messages: tuple[str, str, dict[str, Any]]) -> None:
    with CellClient(settings_from_env(env)) as client:
        for cell_id, type_, body in messages:
            client.send("clocked", cell_id, type_, body)


def fired(worker: WorkerProcess, cell_id: str) -> list[list[Any]]:
    """``[due_ms, now_ms, name, missed]`` of each firing the cell recorded."""
    described = worker.get_json(f"/stream-app/cells/clocked/{cell_id}/")
    data = described.get("data") or {}
    result: list[list[Any]] = data.get("fired", [])
    return result


def timers(worker: WorkerProcess, cell_id: str) -> list[dict[str, Any]]:
    """The cell's pending timers as its view lists them."""
    result: list[dict[str, Any]] = worker.get_json(f"/stream-app/cells/clocked/{cell_id}/")[
        "timers"
    ]
    return result


def step(
    clock: DrivenClock,
    worker: WorkerProcess,
    to: int,
    expected: dict[str, int],
    lags: list[float],
) -> None:
    """Set the clock to ``to`` and wait until each cell has fired ``expected`` times."""
    clock.set(to)
    moved = time.monotonic()
    wait_for(
        lambda: {cell_id: len(fired(worker, cell_id)) for cell_id in expected},
        lambda counts: counts == expected,
        timeout=30,
        what=f"firings {expected} at {local(clock.now_ms)}",
    )
    lags.append(time.monotonic() - moved)


def test_timers_follow_the_driven_clock_across_dst_and_a_restart(
    cells_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    bootstrap: str,
) -> None:
    env = {**cells_env, "STREAM_APP_CLOCK": "driven"}
    app_id = env["STREAM_APP_APP_ID"]
    clock = DrivenClock(bootstrap, app_id)
    start = ms(datetime(2027, 3, 26, 12, tzinfo=AMSTERDAM))
    clock.set(start)
    worker = start_worker(MODULE, env)
    assert "clock of this worker is DRIVEN" in worker.log_text()

    send(
        env,
        ("daily", "cron", {"cron": "30 2 * * *", "tz": "Europe/Amsterdam"}),
        ("once", "timer", {"after_s": 3600}),
        ("every", "timer", {"every_s": 6 * 3600}),
        ("note", "note", {}),
    )
    noted = wait_for(
        lambda: worker.get_json("/stream-app/cells/clocked/note/").get("data"),
        lambda data: data is not None,
        timeout=60,
        what="the note cell",
    )
    assert noted["noted_ms"] == [start], "a message is handled at the driven time"
    daily = wait_for(
        lambda: timers(worker, "daily"),
        lambda pending: len(pending) == 1,
        timeout=30,
        what="the daily cron timer",
    )
    assert local(daily[0]["due_ms"]) == "2027-03-27T02:30+01:00"
    assert (daily[0]["cron"], daily[0]["tz"]) == ("30 2 * * *", "Europe/Amsterdam")

    # Spring forward (2027-03-28 02:00 -> 03:00): four days in steps of six hours.
    lags: list[float] = []
    for n in range(1, 17):
        now = start + n * 6 * HOUR
        days = sum(due <= now for due in SPRING_DUES)
        step(clock, worker, now, {"daily": days, "once": 1, "every": n}, lags)
    daily_fired = fired(worker, "daily")
    assert [local(due) for due, *_ in daily_fired] == [
        "2027-03-27T02:30+01:00",
        "2027-03-28T03:00+02:00",  # 02:30 does not exist that night: at the change, once
        "2027-03-29T02:30+02:00",
        "2027-03-30T02:30+02:00",
    ]
    assert all(missed == 0 for *_, missed in daily_fired)
    [(once_due, once_now, _, _)] = fired(worker, "once")
    assert (once_due, once_now) == (start + HOUR, start + 6 * HOUR), "fires at the driven time"
    every = fired(worker, "every")
    assert [due for due, *_ in every] == [start + n * 6 * HOUR for n in range(1, 17)]
    assert all(now == due for due, now, *_ in every), "each fired when the clock reached it"

    # Seven months later, at once: the daily timer fires once for all it missed (the worker
    # owned it all along, so it coalesces). Then hour by hour through the fall-back night.
    jump = ms(datetime(2027, 10, 30, 12, tzinfo=AMSTERDAM))
    step(clock, worker, jump, {"daily": 5}, lags)
    for n in range(1, 25):
        now = jump + n * HOUR
        step(clock, worker, now, {"daily": 4 + sum(due <= now for due in FALL_DUES)}, lags)
    daily_fired = fired(worker, "daily")[4:]
    assert [local(due) for due, *_ in daily_fired] == [
        "2027-10-30T02:30+02:00",
        "2027-10-31T02:30+02:00",  # not again at 02:30+01:00
    ]
    assert daily_fired[0][3] == (date(2027, 10, 30) - date(2027, 3, 31)).days, "coalesced"

    # Cron timers with each misfire policy; the worker is killed, the clock moves on 16.5 h
    # (sixteen hourly occurrences and one daily one come due while no worker runs), and a new
    # worker takes over with the time back from the clock topic.
    send(
        env,
        ("catch", "cron", {"cron": "0 * * * *", "misfire": "catch_up", "max_catch_up": 3}),
        ("skip", "cron", {"cron": "0 * * * *", "misfire": "skip"}),
    )
    input_topic = f"{app_id}.clocked.in"
    wait_for(
        lambda: (len(timers(worker, "skip")), committed_to_end(bootstrap, app_id, input_topic)),
        lambda seen: seen == (1, True),
        timeout=60,
        what="the cron timers armed and committed",
    )
    killed_at = clock.now_ms
    worker.kill()
    back = clock.set(killed_at + 16 * HOUR + 30 * 60_000)
    worker = start_worker(MODULE, env, name="restarted")
    clock.wait_seen(worker)
    hourly = [killed_at + n * HOUR for n in range(1, 17)]
    catch = wait_for(
        lambda: fired(worker, "catch"),
        lambda rows: len(rows) == 3,
        timeout=60,
        what="catch-up firings after the restart",
    )
    assert [row[0] for row in catch] == hourly[-3:], "the latest three occurrences"
    assert [row[3] for row in catch] == [0, 0, 13] and {row[1] for row in catch} == {back}
    late = wait_for(
        lambda: fired(worker, "daily")[6:],
        lambda rows: len(rows) == 1,
        timeout=30,
        what="the daily timer missed while down, fired once",
    )
    assert [(local(due), now, missed) for due, now, _, missed in late] == [
        ("2027-11-01T02:30+01:00", back, 0)
    ]
    assert fired(worker, "skip") == [], "skip: what came due while unowned does not fire"
    assert [t["due_ms"] for t in timers(worker, "skip")] == [hourly[-1] + HOUR]
    step(clock, worker, hourly[-1] + HOUR, {"skip": 1, "catch": 4}, lags)
    print(f"clock record -> firings seen: max {max(lags):.3f}s, mean {sum(lags) / len(lags):.3f}s")
