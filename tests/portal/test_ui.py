"""The server-rendered charts and the formatting people read (no database needed)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from server.portal import ui
from server.services.customer_tabs import identifiers, weekly


@dataclass
class Point:
    as_of: dt.date
    chi: int
    policy_hash: str


def test_the_sparkline_marks_where_the_policy_version_changed() -> None:
    day = dt.date(2026, 1, 5)
    points = [
        Point(day + dt.timedelta(days=7 * i), chi, "a" if i < 3 else "b") for i, chi in enumerate([40, 45, 50, 70, 72])
    ]
    spark = ui.spark(points, width=100, height=20)
    assert spark.count == 5
    assert len(spark.markers) == 1
    x, when = spark.markers[0]
    first_x = float(spark.line.split()[2].split(",")[0])
    second_x = float(spark.line.split()[3].split(",")[0])
    assert first_x < x < second_x  # between the last point of the old version and the first of the new
    assert when == "26 Jan 2026"
    ys = [float(pair.split(",")[1]) for pair in spark.line.split()]
    assert ys == sorted(ys, reverse=True)  # higher CHI is drawn higher (smaller y)
    assert ui.spark([]).empty


def test_the_dial_fills_in_proportion_to_the_score() -> None:
    full = ui.dial(100, "#000").dash.split()
    half = ui.dial(50, "#000").dash.split()
    assert float(full[0]) == float(full[1])
    assert abs(float(half[0]) - float(half[1]) / 2) < 0.01
    assert ui.dial(None, "#000").dash.startswith("0 ")


def test_numbers_money_and_dates_for_people() -> None:
    assert ui.money(181700, "EUR") == "€181,700"
    assert ui.money(2_450_000, "USD", compact=True) == "$2.5M"
    assert ui.money(45_000, "CHF", compact=True) == "45k CHF"
    assert ui.pct(0.1312) == "13%"
    assert ui.points(15.63) == "−15.6"
    assert ui.relative(dt.date(2026, 3, 5), dt.date(2026, 3, 2)) == "in 3 days"
    assert ui.relative(dt.date(2026, 3, 1), dt.date(2026, 3, 2)) == "yesterday"
    assert ui.signal_value("failure_ratio_7", 0.034) == "3.4%"
    assert ui.signal_value("inactive_scanners", 2) == "2"


def test_a_rules_condition_names_its_signals() -> None:
    assert identifiers("failed_7 > 0 and failure_ratio_7 >= min_ratio") == ["failed_7", "failure_ratio_7", "min_ratio"]
    assert identifiers("band == 'Critical' or tier in at_risk_review_tiers") == ["band", "tier", "at_risk_review_tiers"]
    assert identifiers("days_since(last_login_on) > 7") == ["last_login_on"]


def test_weekly_buckets_end_on_the_last_day() -> None:
    end = dt.date(2026, 3, 1)
    days = [end - dt.timedelta(days=offset) for offset in range(13, -1, -1)]
    values: list[float | None] = [1.0] * 14
    values[-1] = None
    assert weekly(days, values, end, 3) == [(dt.date(2026, 2, 15), None), (dt.date(2026, 2, 22), 7.0), (end, 6.0)]
