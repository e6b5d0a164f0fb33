"""Daily series kept for the portal: this snapshot's days merged over the stored history."""

from __future__ import annotations

import datetime as dt
import json
import random

from engine.snapshot import Activity
from server.services.ingest import HISTORY_DAYS, SERIES_FIELDS, Series, merge_series

AS_OF = dt.date(2026, 12, 4)


def activity(day: dt.date, logins: int, active_users: int = 1) -> Activity:
    return Activity(account_id="acc-1", date=day, logins=logins, active_users=active_users)


def series(*rows: Activity) -> Series:
    return Series("acc-1", "activity", SERIES_FIELDS["activity"], list(rows))


def test_a_first_series_has_one_value_per_day_and_nulls_for_missing_days() -> None:
    first, last, data = merge_series(None, series(activity(AS_OF, 5), activity(AS_OF - dt.timedelta(days=2), 3)), AS_OF)
    assert (first, last) == (AS_OF - dt.timedelta(days=2), AS_OF)
    assert json.loads(data) == {"start": "2026-12-02", "logins": [3, None, 5], "active_users": [1, None, 1]}


def test_the_snapshot_wins_over_stored_days_and_older_stored_days_are_kept() -> None:
    stored = json.dumps({"start": "2026-11-30", "logins": [1, None, 2, 9], "active_users": [1, None, 1, 1]})
    first, last, data = merge_series(stored, series(activity(dt.date(2026, 12, 3), 4, 2), activity(AS_OF, 6)), AS_OF)
    assert (first, last) == (dt.date(2026, 11, 30), AS_OF)
    assert json.loads(data) == {
        "start": "2026-11-30",
        "logins": [1, None, 2, 4, 6],
        "active_users": [1, None, 1, 2, 1],
    }


def test_days_older_than_the_history_window_are_dropped() -> None:
    old_start = AS_OF - dt.timedelta(days=HISTORY_DAYS + 1)
    stored = json.dumps({"start": old_start.isoformat(), "logins": [7, 8, 9], "active_users": [1, 1, 1]})
    first, _, data = merge_series(stored, series(activity(AS_OF, 1)), AS_OF)
    horizon = AS_OF - dt.timedelta(days=HISTORY_DAYS - 1)
    assert first == horizon == old_start + dt.timedelta(days=2)
    decoded = json.loads(data)
    assert decoded["start"] == horizon.isoformat()
    assert decoded["logins"][0] == 9
    assert decoded["logins"][-1] == 1
    assert len(decoded["logins"]) == HISTORY_DAYS


def merged_day_by_day(stored: str | None, rows: list[Activity], as_of: dt.date) -> tuple[dt.date, dt.date, dict]:
    """The merge spelled out one day at a time: what merge_series must equal."""
    days: dict[dt.date, tuple[int, int]] = {row.date: (row.logins, row.active_users) for row in rows}
    if stored:
        old = json.loads(stored)
        start = dt.date.fromisoformat(old["start"])
        for offset, (logins, users) in enumerate(zip(old["logins"], old["active_users"], strict=True)):
            if logins is not None:
                days.setdefault(start + dt.timedelta(days=offset), (logins, users))
    horizon = as_of - dt.timedelta(days=HISTORY_DAYS - 1)
    kept = [day for day in days if day >= horizon] or list(days)
    first, last = min(kept), max(kept)
    span = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    values = [days.get(day, (None, None)) for day in span]
    data = {"start": first.isoformat(), "logins": [v[0] for v in values], "active_users": [v[1] for v in values]}
    return first, last, data


def test_merging_equals_the_day_by_day_merge_on_random_histories() -> None:
    generator = random.Random(20261204)
    for case in range(400):
        stored = None
        as_of = AS_OF - dt.timedelta(days=generator.choice([900, 420, 60, 0]))
        for _ in range(generator.randint(1, 4)):  # successive runs, each over the previous one's result
            as_of += dt.timedelta(days=generator.choice([1, 7, 200, 450]))
            shape = generator.choice(["consecutive", "gaps", "shuffled", "duplicates", "old"])
            length = generator.randint(1, 95)
            end = as_of - dt.timedelta(days=500 if shape == "old" else generator.randint(0, 3))
            days = [end - dt.timedelta(days=n) for n in range(length)][::-1]
            if shape == "gaps":
                days = [day for day in days if generator.random() < 0.7] or days[:1]
            elif shape == "shuffled":
                generator.shuffle(days)
            elif shape == "duplicates":
                days += generator.sample(days, k=min(3, len(days)))
            rows = [activity(day, generator.randint(0, 9), generator.randint(0, 3)) for day in days]
            expected_first, expected_last, expected = merged_day_by_day(stored, rows, as_of)
            first, last, stored = merge_series(stored, series(*rows), as_of)
            assert (first, last, json.loads(stored)) == (expected_first, expected_last, expected), (case, shape)


def test_stored_days_ending_just_before_the_window_are_dropped_whole() -> None:
    horizon = AS_OF - dt.timedelta(days=HISTORY_DAYS - 1)
    old_start = horizon - dt.timedelta(days=5)
    stored = json.dumps({"start": old_start.isoformat(), "logins": [1, 2, 3, 4], "active_users": [1, 1, 1, 1]})
    rows = [activity(horizon + dt.timedelta(days=n), 5) for n in range(10) if n != 5]
    first, last, data = merge_series(stored, series(*rows), AS_OF)
    assert (first, last) == (horizon, horizon + dt.timedelta(days=9))
    decoded = json.loads(data)
    assert decoded == {
        "start": horizon.isoformat(),
        "logins": [5] * 5 + [None] + [5] * 4,
        "active_users": [1] * 5 + [None] + [1] * 4,
    }
