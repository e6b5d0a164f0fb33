"""Daily series kept for the portal: this snapshot's days merged over the stored history."""

from __future__ import annotations

import datetime as dt
import json

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
