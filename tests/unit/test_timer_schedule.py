"""Unit tests of stream_app.core.timers: firing plans, misfire policies and due-ordered keys."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from pydantic import ValidationError

from stream_app.core.timers import (
    MAX_DUE_MS,
    FirePlan,
    Misfire,
    TimerEntry,
    decode_due_key,
    due_key,
    plan_firing,
)

#: The key Faust keeps its changelog offset under, in the same RocksDB database as the timers.
FAUST_OFFSET_KEY = b"__faust\0offset__"


def entry(**overrides: Any) -> TimerEntry:
    fields: dict[str, Any] = {"cell": "c-1", "name": "t", "due": 1000}
    fields.update(overrides)
    return TimerEntry(**fields)


def reference_plan(timer: TimerEntry, now_ms: int, owned_since_ms: int) -> FirePlan:
    """The plan by brute force: materialise every occurrence, then apply the documented rules."""
    if timer.due > now_ms:
        return FirePlan(fire=(), missed=0, next_due=timer.due)
    if timer.every is None:
        occurrences = [timer.due]
        next_due = None
    else:
        occurrences = list(range(timer.due, now_ms + 1, timer.every))
        next_due = occurrences[-1] + timer.every
    unowned = [o for o in occurrences if o < owned_since_ms]
    owned = [o for o in occurrences if o >= owned_since_ms]
    fire: list[int] = []
    if unowned and timer.misfire is Misfire.FIRE_ONCE:
        fire.append(unowned[-1])
    elif unowned and timer.misfire is Misfire.CATCH_UP:
        fire.extend(unowned[-timer.max_catch_up :])
    if owned:
        fire.append(owned[-1])
    return FirePlan(fire=tuple(fire), missed=len(occurrences) - len(fire), next_due=next_due)


# -- plan_firing: one-shot timers ------------------------------------------------------------


def test_one_shot_not_due_fires_nothing_and_stays_pending() -> None:
    plan = plan_firing(entry(due=1000), now_ms=999, owned_since_ms=0)
    assert plan == FirePlan(fire=(), missed=0, next_due=1000)


def test_one_shot_due_exactly_now_fires_once_and_finishes() -> None:
    plan = plan_firing(entry(due=1000), now_ms=1000, owned_since_ms=0)
    assert plan == FirePlan(fire=(1000,), missed=0, next_due=None)


def test_one_shot_owned_fires_late_without_missing_anything() -> None:
    plan = plan_firing(entry(due=1000), now_ms=60_000, owned_since_ms=500)
    assert plan == FirePlan(fire=(1000,), missed=0, next_due=None)


def test_one_shot_due_at_the_moment_of_ownership_counts_as_owned() -> None:
    plan = plan_firing(entry(due=1000, misfire=Misfire.SKIP), now_ms=1000, owned_since_ms=1000)
    assert plan.fire == (1000,)


@pytest.mark.parametrize(
    ("misfire", "fire", "missed"),
    [
        (Misfire.FIRE_ONCE, (1000,), 0),
        (Misfire.CATCH_UP, (1000,), 0),
        (Misfire.SKIP, (), 1),
    ],
)
def test_one_shot_that_came_due_while_unowned_follows_its_policy(
    misfire: Misfire, fire: tuple[int, ...], missed: int
) -> None:
    plan = plan_firing(entry(due=1000, misfire=misfire), now_ms=5000, owned_since_ms=4000)
    assert plan == FirePlan(fire=fire, missed=missed, next_due=None)


# -- plan_firing: recurring timers -----------------------------------------------------------


def test_recurring_not_due_keeps_its_due_time() -> None:
    plan = plan_firing(entry(due=1000, every=100), now_ms=10, owned_since_ms=0)
    assert plan == FirePlan(fire=(), missed=0, next_due=1000)


def test_recurring_rearms_at_the_first_occurrence_strictly_after_now() -> None:
    # now falls exactly on the occurrence at 1300: it fires, and the next one is 1400.
    plan = plan_firing(entry(due=1000, every=100), now_ms=1300, owned_since_ms=0)
    assert plan.next_due == 1400
    assert plan.fire == (1300,)


def test_worker_that_fell_behind_coalesces_owned_occurrences_into_one_firing() -> None:
    # Owned all along; 1000..1500 came due (6 occurrences) before the worker got to them.
    plan = plan_firing(entry(due=1000, every=100), now_ms=1550, owned_since_ms=0)
    assert plan == FirePlan(fire=(1500,), missed=5, next_due=1600)


@pytest.mark.parametrize("misfire", list(Misfire))
def test_coalescing_of_owned_occurrences_ignores_the_misfire_policy(misfire: Misfire) -> None:
    timer = entry(due=1000, every=100, misfire=misfire, max_catch_up=50)
    plan = plan_firing(timer, now_ms=1999, owned_since_ms=1000)
    assert plan == FirePlan(fire=(1900,), missed=9, next_due=2000)


def test_recurring_fire_once_fires_the_latest_missed_occurrence_once() -> None:
    # 1000..1400 all came due before ownership at 1450.
    plan = plan_firing(entry(due=1000, every=100), now_ms=1450, owned_since_ms=1450)
    assert plan == FirePlan(fire=(1400,), missed=4, next_due=1500)


@pytest.mark.parametrize(
    ("max_catch_up", "fire", "missed"),
    [
        (1, (1400,), 4),
        (3, (1200, 1300, 1400), 2),
        (5, (1000, 1100, 1200, 1300, 1400), 0),
        (10, (1000, 1100, 1200, 1300, 1400), 0),
    ],
)
def test_recurring_catch_up_fires_at_most_max_of_the_latest_missed_in_order(
    max_catch_up: int, fire: tuple[int, ...], missed: int
) -> None:
    timer = entry(due=1000, every=100, misfire=Misfire.CATCH_UP, max_catch_up=max_catch_up)
    plan = plan_firing(timer, now_ms=1450, owned_since_ms=1450)
    assert plan == FirePlan(fire=fire, missed=missed, next_due=1500)


def test_recurring_skip_fires_none_of_the_missed_and_waits_for_the_next() -> None:
    timer = entry(due=1000, every=100, misfire=Misfire.SKIP)
    plan = plan_firing(timer, now_ms=1450, owned_since_ms=1450)
    assert plan == FirePlan(fire=(), missed=5, next_due=1500)


@pytest.mark.parametrize(
    ("misfire", "fire", "missed"),
    [
        # Unowned: 1000, 1100, 1200 (before 1250). Owned: 1300..1700, coalesced into 1700.
        (Misfire.FIRE_ONCE, (1200, 1700), 6),
        (Misfire.CATCH_UP, (1100, 1200, 1700), 5),
        (Misfire.SKIP, (1700,), 7),
    ],
)
def test_missed_and_owned_occurrences_are_planned_separately(
    misfire: Misfire, fire: tuple[int, ...], missed: int
) -> None:
    timer = entry(due=1000, every=100, misfire=misfire, max_catch_up=2)
    plan = plan_firing(timer, now_ms=1720, owned_since_ms=1250)
    assert plan == FirePlan(fire=fire, missed=missed, next_due=1800)


def test_fired_plus_missed_accounts_for_every_occurrence() -> None:
    timer = entry(due=0, every=7, misfire=Misfire.CATCH_UP, max_catch_up=3)
    plan = plan_firing(timer, now_ms=700, owned_since_ms=350)
    occurrences = 700 // 7 + 1
    assert len(plan.fire) + plan.missed == occurrences
    assert list(plan.fire) == sorted(plan.fire)


def test_plan_matches_a_brute_force_reference_over_random_timers() -> None:
    rng = random.Random(20240603)
    for _ in range(3000):
        due = rng.randrange(0, 5000)
        every = rng.choice([None, 1, 3, 10, 97, 1000])
        timer = entry(
            due=due,
            every=every,
            misfire=rng.choice(list(Misfire)),
            max_catch_up=rng.randrange(1, 20),
        )
        now = rng.randrange(0, 10_000)
        owned_since = rng.randrange(0, now + 1)
        expected = reference_plan(timer, now, owned_since)
        got = plan_firing(timer, now_ms=now, owned_since_ms=owned_since)
        assert got == expected, (timer, now, owned_since)


def test_huge_backlog_is_planned_without_materialising_occurrences() -> None:
    now = 1_700_000_000_000
    ten_days_ms = 10 * 24 * 3600 * 1000
    started = time.perf_counter()
    once = plan_firing(entry(due=now - ten_days_ms, every=1), now_ms=now, owned_since_ms=now)
    catch_up = plan_firing(
        entry(due=now - ten_days_ms, every=1, misfire=Misfire.CATCH_UP, max_catch_up=100_000),
        now_ms=now,
        owned_since_ms=now,
    )
    skip = plan_firing(
        entry(due=now - ten_days_ms, every=1, misfire=Misfire.SKIP), now_ms=now, owned_since_ms=now
    )
    elapsed = time.perf_counter() - started
    occurrences = ten_days_ms + 1
    # The last occurrence (due exactly at ``now``) came due while owned: it fires after the
    # misfire policy's share of the 864 million missed ones.
    assert once == FirePlan(fire=(now - 1, now), missed=occurrences - 2, next_due=now + 1)
    assert len(catch_up.fire) == 100_001
    assert catch_up.fire[0] == now - 100_000
    assert catch_up.fire[-2:] == (now - 1, now)
    assert catch_up.missed == occurrences - 100_001
    assert skip == FirePlan(fire=(now,), missed=occurrences - 1, next_due=now + 1)
    # Materialising 864 million occurrences takes minutes; the arithmetic takes milliseconds.
    assert elapsed < 2.0


# -- TimerEntry ------------------------------------------------------------------------------


def test_timer_entry_round_trips_as_json() -> None:
    timer = entry(every=250, payload={"n": [1, "two"]}, misfire=Misfire.CATCH_UP, max_catch_up=9)
    assert TimerEntry.model_validate_json(timer.model_dump_json()) == timer


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": ""},
        {"name": "x" * 257},
        {"due": -1},
        {"due": MAX_DUE_MS + 1},
        {"every": 0},
        {"max_catch_up": 0},
        {"misfire": "later"},
        {"surprise": 1},
    ],
)
def test_timer_entry_rejects_invalid_fields(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        entry(**overrides)


def test_timer_entry_key_is_its_due_key() -> None:
    timer = entry(cell="cell-9", name="remind", due=123_456)
    assert timer.key() == due_key(123_456, "cell-9", "remind")
    assert decode_due_key(timer.key()) == (123_456, "cell-9", "remind")


# -- due_key / decode_due_key ----------------------------------------------------------------

ODD_CELL_IDS = [
    "",
    "a",
    "user-42",
    "ünïcødé ✓",
    "emoji-🎉-🚀",
    "汉字/かな",
    "with\0nul\0bytes",
    "slash/and space\tand\nnewline",
    "x" * 0xFFFF,
]


@pytest.mark.parametrize("cell_id", ODD_CELL_IDS, ids=range(len(ODD_CELL_IDS)))
@pytest.mark.parametrize("name", ["timeout", "nämé ✓", "t\0x", "🎉"])
def test_due_key_round_trips(cell_id: str, name: str) -> None:
    for due in (0, 1, 1_700_000_000_123, MAX_DUE_MS):
        assert decode_due_key(due_key(due, cell_id, name)) == (due, cell_id, name)


def test_due_key_refuses_a_cell_id_too_long_for_its_length_field() -> None:
    with pytest.raises(ValueError, match="too long"):
        due_key(1, "é" * 0x8000, "t")  # 2 bytes per character: 65536 bytes


def test_key_order_is_due_order_over_random_values() -> None:
    rng = random.Random(7)
    alphabet = "ab-_/é✓🎉\0zZ09"
    timers = [
        (
            rng.choice(
                [rng.randrange(0, 2**16), rng.randrange(0, 2**40), rng.randrange(MAX_DUE_MS)]
            ),
            "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))),
            "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 6))),
        )
        for _ in range(5000)
    ]
    by_key = sorted(timers, key=lambda t: due_key(*t))
    assert [t[0] for t in by_key] == sorted(t[0] for t in timers)


def test_keys_of_the_same_due_time_do_not_collide() -> None:
    # The length prefix keeps ("ab", "c") and ("a", "bc") apart.
    assert due_key(5, "ab", "c") != due_key(5, "a", "bc")
    assert decode_due_key(due_key(5, "a", "bc")) == (5, "a", "bc")


@pytest.mark.parametrize(
    "key",
    [
        FAUST_OFFSET_KEY,
        b"",
        b"\x00" * 9,  # shorter than the 10-byte header
        due_key(5, "cell", "t")[:-1],  # header and cell id but no name
        b"\x00" * 8 + b"\x00\x09abc",  # cell id length longer than the key
        b"\x00" * 8 + b"\x00\x01\xff\xfe",  # not UTF-8
    ],
)
def test_non_timer_keys_decode_to_none(key: bytes) -> None:
    assert decode_due_key(key) is None


def test_faust_bookkeeping_keys_sort_after_every_timer_key() -> None:
    latest = due_key(MAX_DUE_MS, "\U0010ffff" * 0x3FFF, "\U0010ffff")
    rng = random.Random(11)
    assert all(
        due_key(rng.randrange(MAX_DUE_MS + 1), f"c{i}", "t") < FAUST_OFFSET_KEY for i in range(500)
    )
    assert latest < FAUST_OFFSET_KEY
