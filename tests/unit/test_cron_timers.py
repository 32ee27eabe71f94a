"""Cron timers with a time zone: occurrences across daylight-saving changes, firing plans with
each misfire policy, the bound on the work, and what ``set_timer`` refuses.

Dates are those of 2027: Europe/Amsterdam springs forward on March 28 (02:00 -> 03:00) and falls
back on October 31 (03:00 -> 02:00); America/New_York on March 14 and November 7 (02:00 -> 01:00).
The expected behaviour is Debian cron's, as cronsim implements it.
"""

from __future__ import annotations

import random
from datetime import datetime
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from stream_app.core.cell import CellState
from stream_app.core.timers import (
    CRON_COUNT_LIMIT,
    CronSchedule,
    FirePlan,
    Misfire,
    TimerEntry,
    plan_firing,
)

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NEW_YORK = ZoneInfo("America/New_York")
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def local(at_ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(at_ms / 1000, zone).isoformat(timespec="minutes")


def upcoming(expression: str, zone: ZoneInfo, start: datetime, count: int) -> list[str]:
    schedule = CronSchedule(expression, str(zone))
    return [local(at, zone) for at in islice(schedule.after(ms(start)), count)]


def state(now_ms: int) -> CellState[Any]:
    return CellState(
        app_id="app",
        behaviour="b",
        cell_id="c",
        data=None,
        trigger="message",
        now_ms=now_ms,
        origin="test",
        timers={},
    )


# -- occurrences across daylight-saving changes ------------------------------------------------


def test_a_time_skipped_by_spring_forward_occurs_once_at_the_change() -> None:
    assert upcoming("30 2 * * *", AMSTERDAM, datetime(2027, 3, 27, 3, tzinfo=AMSTERDAM), 3) == [
        "2027-03-28T03:00+02:00",
        "2027-03-29T02:30+02:00",
        "2027-03-30T02:30+02:00",
    ]
    assert upcoming("30 2 * * *", NEW_YORK, datetime(2027, 3, 13, 3, tzinfo=NEW_YORK), 3) == [
        "2027-03-14T03:00-04:00",
        "2027-03-15T02:30-04:00",
        "2027-03-16T02:30-04:00",
    ]


def test_a_fixed_time_in_the_repeated_hour_occurs_once_the_first_time() -> None:
    assert upcoming("30 1 * * *", NEW_YORK, datetime(2027, 11, 6, 3, tzinfo=NEW_YORK), 3) == [
        "2027-11-07T01:30-04:00",
        "2027-11-08T01:30-05:00",
        "2027-11-09T01:30-05:00",
    ]
    assert upcoming("30 2 * * *", AMSTERDAM, datetime(2027, 10, 30, 3, tzinfo=AMSTERDAM), 3) == [
        "2027-10-31T02:30+02:00",
        "2027-11-01T02:30+01:00",
        "2027-11-02T02:30+01:00",
    ]


def test_a_job_with_a_wildcard_hour_occurs_in_both_passes_of_the_repeated_hour() -> None:
    start = datetime(2027, 10, 31, 1, 45, tzinfo=AMSTERDAM)
    assert upcoming("*/30 * * * *", AMSTERDAM, start, 5) == [
        "2027-10-31T02:00+02:00",
        "2027-10-31T02:30+02:00",
        "2027-10-31T02:00+01:00",
        "2027-10-31T02:30+01:00",
        "2027-10-31T03:00+01:00",
    ]


def test_occurrences_from_inside_the_second_pass_of_the_repeated_hour() -> None:
    # 02:10 the second time (fold=1): the 02:30 of the first pass is already behind.
    inside = ms(datetime(2027, 10, 31, 2, 10, tzinfo=AMSTERDAM, fold=1))
    daily = CronSchedule("30 2 * * *", "Europe/Amsterdam")
    assert local(daily.next_after(inside), AMSTERDAM) == "2027-11-01T02:30+01:00"
    assert local(next(daily.before(inside)), AMSTERDAM) == "2027-10-31T02:30+02:00"
    half_hourly = CronSchedule("*/30 * * * *", "Europe/Amsterdam")
    assert local(half_hourly.next_after(inside), AMSTERDAM) == "2027-10-31T02:30+01:00"


def test_after_and_before_agree_with_one_forward_walk_around_every_change() -> None:
    rng = random.Random(13)
    for zone, day in [
        (AMSTERDAM, datetime(2027, 3, 28)),
        (AMSTERDAM, datetime(2027, 10, 31)),
        (NEW_YORK, datetime(2027, 3, 14)),
        (NEW_YORK, datetime(2027, 11, 7)),
    ]:
        middle = ms(day.replace(tzinfo=zone))
        for expression in ("30 2 * * *", "30 1 * * *", "*/20 * * * *", "15 1-3 * * *"):
            schedule = CronSchedule(expression, str(zone))
            walk = list(islice(schedule.after(middle - 3 * DAY), 700))
            for at in (rng.randrange(middle - DAY, middle + DAY) for _ in range(60)):
                assert list(islice(schedule.after(at), 2)) == [o for o in walk if o > at][:2]
                assert list(islice(schedule.before(at), 2)) == [o for o in walk if o < at][::-1][:2]


# -- set_timer(cron=...) -----------------------------------------------------------------------


def test_set_timer_cron_is_due_at_the_first_occurrence_strictly_after_now() -> None:
    on_the_dot = ms(datetime(2027, 1, 4, 9, tzinfo=AMSTERDAM))  # a Monday, 09:00
    cell = state(on_the_dot)
    due = cell.set_timer("r", cron="0 9 * * MON-FRI", tz="Europe/Amsterdam", payload={"k": 1})
    assert local(due, AMSTERDAM) == "2027-01-05T09:00+01:00"
    entry = cell._outputs.timers["r"]
    assert entry is not None
    assert (entry.cron, entry.tz, entry.every, entry.payload) == (
        "0 9 * * MON-FRI",
        "Europe/Amsterdam",
        None,
        {"k": 1},
    )
    assert entry.recurring and cell.timers == {"r": due}


def test_set_timer_cron_defaults_to_utc() -> None:
    due = state(0).set_timer(cron="0 12 * * *")
    assert due == 12 * HOUR


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "bad cron expression '61 * * * *'"),
        ({"cron": "0 0 31 2 *"}, "bad cron expression '0 0 31 2 *'"),
        ({"cron": "0 0 * * * *"}, "cron expression '0 0 * * * *': expected 5 fields"),
        ({"cron": "@daily"}, "cron expression '@daily': expected 5 fields"),
        ({"cron": "0 9 * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"cron": "0 9 * * *", "tz": "../etc/passwd"}, "unknown time zone '../etc/passwd'"),
        ({"cron": "0 9 * * *", "after": 5}, "give no after=, at= or every="),
        ({"cron": "0 9 * * *", "every": 5}, "give no after=, at= or every="),
        ({"cron": "0 9 * * *", "at": 5}, "give no after=, at= or every="),
        ({"after": 5, "tz": "UTC"}, "tz= is the time zone of a cron= schedule"),
    ],
)
def test_set_timer_refuses_with_a_message_naming_the_problem(
    kwargs: dict[str, Any], message: str
) -> None:
    cell = state(0)
    with pytest.raises(ValueError, match="set_timer: ") as raised:
        cell.set_timer("r", **kwargs)
    assert message in str(raised.value)
    assert cell.timers == {}


def test_stored_entries_without_cron_still_load_and_cron_excludes_every() -> None:
    old = TimerEntry.model_validate_json('{"cell": "c", "name": "t", "due": 5, "every": 10}')
    assert (old.cron, old.tz, old.recurring) == (None, None, True)
    with pytest.raises(ValidationError, match="not both"):
        TimerEntry(cell="c", name="t", due=5, every=10, cron="* * * * *")
    with pytest.raises(ValidationError, match="give cron too"):
        TimerEntry(cell="c", name="t", due=5, tz="UTC")


# -- plan_firing for cron timers ---------------------------------------------------------------


def daily(due: datetime, **overrides: Any) -> TimerEntry:
    fields: dict[str, Any] = {
        "cell": "c",
        "name": "t",
        "due": ms(due),
        "cron": "30 2 * * *",
        "tz": "Europe/Amsterdam",
    }
    fields.update(overrides)
    return TimerEntry(**fields)


#: 02:30 in Amsterdam, March 26 to April 1 2027 (03:00 on the 28th: 02:30 did not exist).
SPRING = [ms(datetime(2027, 3, d, 2, 30, tzinfo=AMSTERDAM)) for d in (26, 27, 29, 30, 31)]
SPRING.insert(2, ms(datetime(2027, 3, 28, 3, tzinfo=AMSTERDAM)))
SPRING.append(ms(datetime(2027, 4, 1, 2, 30, tzinfo=AMSTERDAM)))


def test_a_cron_timer_not_due_keeps_its_due_time() -> None:
    plan = plan_firing(
        daily(datetime(2027, 3, 26, 2, 30, tzinfo=AMSTERDAM)), now_ms=0, owned_since_ms=0
    )
    assert plan == FirePlan(fire=(), missed=0, next_due=SPRING[0])


def test_an_owned_cron_timer_fires_once_and_re_arms_at_the_next_occurrence() -> None:
    entry = daily(datetime(2027, 3, 26, 2, 30, tzinfo=AMSTERDAM))
    plan = plan_firing(entry, now_ms=SPRING[0] + 5 * MINUTE, owned_since_ms=0)
    assert plan == FirePlan(fire=(SPRING[0],), missed=0, next_due=SPRING[1])


def test_a_worker_that_fell_behind_coalesces_cron_occurrences() -> None:
    entry = daily(datetime(2027, 3, 26, 2, 30, tzinfo=AMSTERDAM))
    plan = plan_firing(entry, now_ms=SPRING[3] + HOUR, owned_since_ms=0)
    assert plan == FirePlan(fire=(SPRING[3],), missed=3, next_due=SPRING[4])


@pytest.mark.parametrize(
    ("misfire", "fire", "missed"),
    [
        # SPRING[0..3] came due while unowned, SPRING[4] while owned.
        (Misfire.FIRE_ONCE, (SPRING[3], SPRING[4]), 3),
        (Misfire.CATCH_UP, (SPRING[2], SPRING[3], SPRING[4]), 2),
        (Misfire.SKIP, (SPRING[4],), 4),
    ],
)
def test_cron_occurrences_due_while_unowned_follow_the_misfire_policy(
    misfire: Misfire, fire: tuple[int, ...], missed: int
) -> None:
    entry = daily(datetime(2027, 3, 26, 2, 30, tzinfo=AMSTERDAM), misfire=misfire, max_catch_up=2)
    plan = plan_firing(entry, now_ms=SPRING[4] + HOUR, owned_since_ms=SPRING[3] + HOUR)
    assert plan == FirePlan(fire=fire, missed=missed, next_due=SPRING[5])


def test_cron_plans_match_the_rules_applied_to_every_occurrence() -> None:
    rng = random.Random(7)
    schedule = CronSchedule("*/20 1-3 * * *", "America/New_York")
    start = ms(datetime(2027, 11, 5, tzinfo=NEW_YORK))
    walk = list(islice(schedule.after(start), 40))
    for _ in range(300):
        entry = TimerEntry(
            cell="c",
            name="t",
            due=walk[0],
            cron="*/20 1-3 * * *",
            tz="America/New_York",
            misfire=rng.choice(list(Misfire)),
            max_catch_up=rng.randint(1, 4),
        )
        now = rng.randrange(walk[0], walk[30])
        owned_since = rng.randrange(walk[0] - HOUR, walk[32])
        due = [o for o in walk if o <= now]
        unowned = [o for o in due if o < owned_since]
        owned = [o for o in due if o >= owned_since]
        fire: list[int] = []
        if unowned and entry.misfire is Misfire.FIRE_ONCE:
            fire.append(unowned[-1])
        elif unowned and entry.misfire is Misfire.CATCH_UP:
            fire.extend(unowned[-entry.max_catch_up :])
        fire.extend(owned[-1:])
        expected = FirePlan(
            fire=tuple(fire), missed=len(due) - len(fire), next_due=min(o for o in walk if o > now)
        )
        assert plan_firing(entry, now_ms=now, owned_since_ms=owned_since) == expected


def test_a_cron_timer_missed_for_years_counts_up_to_the_limit_and_fires_the_latest() -> None:
    every_minute = TimerEntry(
        cell="c", name="t", due=0, cron="* * * * *", misfire=Misfire.CATCH_UP, max_catch_up=3
    )
    now = ms(datetime(2027, 6, 1, 12, 0, 30, tzinfo=AMSTERDAM))  # 30 million minutes later
    owned_since = now - 10 * MINUTE
    plan = plan_firing(every_minute, now_ms=now, owned_since_ms=owned_since)
    last_unowned = owned_since - 30_000  # the minute before ownership began
    assert plan.fire == (
        last_unowned - 2 * MINUTE,
        last_unowned - MINUTE,
        last_unowned,
        now - 30_000,
    )
    # CRON_COUNT_LIMIT counted before ownership (3 fired), 10 owned ones (1 fired).
    assert plan.missed == CRON_COUNT_LIMIT - 3 + 9
    assert plan.next_due == now + 30_000
