"""Hand-checked cases for the reference implementation (tests/engine/reference.py) and its factory."""

from __future__ import annotations

import datetime
import json
import random
from fractions import Fraction
from pathlib import Path

import pytest

from tests.engine.reference import load_snapshot_folder, reference_evaluate, utc_date
from tests.engine.snapshot_factory import random_snapshot

AS_OF = datetime.date(2026, 11, 27)
ACC = "acc-000001"


def ago(days: int) -> str:
    return (AS_OF - datetime.timedelta(days=days)).isoformat()


def snapshot(tier: str = "T2", **entities: list[dict]) -> dict[str, list[dict]]:
    """One customer, `acc-000001`, with the given rows (account_id filled in)."""
    rows = {name: [{"account_id": ACC, **row} for row in entity] for name, entity in entities.items()}
    account = {"id": ACC, "name": "C", "tier": tier, "csm": "c@example.com", "acv": 1000, "currency": "EUR"}
    return {"accounts": [account], **rows}


def active_order(products: list[tuple[str, int]], end_in_days: int = 400) -> dict:
    return {
        "id": "ord-1",
        "status": "active",
        "start_date": ago(100),
        "end_date": ago(-end_in_days),
        "acv": 1000,
        "products": [{"product": code, "capacity": capacity} for code, capacity in products],
    }


def usage(product: str, days_ago: int, used: int, scans: int = 0, failed: int = 0) -> dict:
    return {"product": product, "date": ago(days_ago), "used": used, "scans": scans, "failed_scans": failed}


def evaluate(snap: dict[str, list[dict]]) -> dict:
    return reference_evaluate(snap, AS_OF)[ACC]


def test_a_customer_with_nothing_at_all() -> None:
    # engagement 0 (no login, no product, S == 0), 1:1 0, support 100, sentiment 50, feedback 50,
    # commercial 100 - 50 (no active order) = 50 -> (0 + 0 + 1000 + 500 + 500 + 500) / 100 = 25
    result = evaluate(snapshot())
    assert result["sections"] == {
        "engagement": 0,
        "one_to_one": 0,
        "support": 100,
        "sentiment": 50,
        "feedback": 50,
        "commercial": 50,
    }
    assert result["chi"] == 25
    assert result["band"] == "Critical"
    assert result["tasks"] == {
        ("meeting-follow-up-gap", ""): "High",
        ("no-active-order", ""): "High",
        ("chi-status-review", ""): "High",
    }


def test_a_small_customer_computed_by_hand() -> None:
    # T2, VM capacity 10; last login 8 days ago; one VM row today: used 10, 10 scans, 1 failed.
    # login = 100*52/53; u = 10/30/10 = 1/30 -> 100*u/0.6 = 50/9; scanning = 100*(1 - 5/10) = 50
    # engagement = 0.4*5200/53 + 0.4*50/9 + 0.2*50 = 24550/477
    # CHI = (50*24550/477 + 0 + 1000 + 500 + 500 + 1000) / 100 = 55.73... -> 56
    snap = snapshot(
        orders=[active_order([("VM", 10)])],
        activity=[{"date": ago(8), "logins": 3, "active_users": 1}],
        usage=[usage("VM", 0, used=10, scans=10, failed=1)],
    )
    result = evaluate(snap)
    assert result["sections"]["engagement"] == Fraction(24550, 477)
    assert result["chi"] == 56
    assert result["band"] == "At-Risk"
    assert result["tasks"] == {
        ("high-license-usage", "VM"): "High",
        ("failed-scans", "VM"): "Low",
        ("low-utilisation", "VM"): "Low",
        ("meeting-follow-up-gap", ""): "High",
    }


def test_round_half_up_and_usage_of_an_uncontracted_product() -> None:
    # T3, no order. Uncontracted WAS today: 100 scans, 19 failed -> scanning = 100*(1 - 0.95) = 5,
    # engagement = 0.2*5 = 1. Sentiment negative 20. (50 + 0 + 1000 + 200 + 500 + 500) / 100 = 22.5 -> 23
    snap = snapshot(
        tier="T3",
        usage=[usage("WAS", 0, used=0, scans=100, failed=19)],
        sentiment=[{"recorded_on": ago(3), "value": "negative"}],
    )
    result = evaluate(snap)
    assert result["sections"]["engagement"] == 1
    assert result["chi"] == 23
    assert result["tasks"] == {
        ("failed-scans", "WAS"): "Low",
        ("meeting-follow-up-gap", ""): "High",
        ("no-active-order", ""): "High",
        ("chi-status-review", ""): "High",
    }


@pytest.mark.parametrize(
    ("days", "login"),
    [(0, 100), (7, 100), (8, Fraction(5200, 53)), (59, Fraction(100, 53)), (60, 0), (None, 0)],
)
def test_login_part(days: int | None, login: Fraction) -> None:
    activity = [{"date": ago(3), "logins": 0, "active_users": 0}]
    if days is not None:
        activity.append({"date": ago(days), "logins": 1, "active_users": 1})
    result = evaluate(snapshot(activity=activity))
    assert result["sections"]["engagement"] == Fraction("0.4") * login


@pytest.mark.parametrize(
    ("days", "severity"),
    [(0, "High"), (30, "High"), (31, "Medium"), (60, "Medium"), (61, "Low"), (90, "Low"), (91, None)],
)
def test_renewal_upcoming(days: int, severity: str | None) -> None:
    result = evaluate(snapshot(orders=[active_order([("VM", 10)], end_in_days=days)]))
    assert result["tasks"].get(("renewal-upcoming", "")) == severity


def test_capacity_zero_is_skipped_by_rules_3_and_8_but_not_7() -> None:
    snap = snapshot(
        tier="T3",
        orders=[active_order([("PC", 0), ("VM", 0)])],
        usage=[usage("PC", 1, used=50), usage("VM", 90, used=5)],
    )
    tasks = evaluate(snap)["tasks"]
    assert ("high-license-usage", "PC") not in tasks
    assert ("low-utilisation", "PC") not in tasks
    assert ("inactive-product", "PC") not in tasks  # PC has use in the last 90 days
    assert tasks[("inactive-product", "VM")] == "Medium"  # 90 days ago is outside the window


def test_high_license_usage_reads_the_most_recent_row_in_the_window() -> None:
    snap = snapshot(
        orders=[active_order([("VM", 10), ("PC", 20), ("WAS", 10)])],
        usage=[
            usage("VM", 5, used=20),
            usage("VM", 2, used=8),  # most recent: 8 < 9 -> no task
            usage("PC", 29, used=18),  # exactly 0.9 * 20, at the window edge -> Medium
            usage("WAS", 30, used=10),  # outside the 30-day window -> no task
        ],
    )
    tasks = evaluate(snap)["tasks"]
    assert ("high-license-usage", "VM") not in tasks
    assert tasks[("high-license-usage", "PC")] == "Medium"
    assert ("high-license-usage", "WAS") not in tasks


def test_utilisation_exactly_030_is_not_low() -> None:
    rows = [usage("VM", d, used=3) for d in range(30)]  # 90 / 30 / 10 = 0.30
    rows += [usage("PC", d, used=3) for d in range(29)]  # 87 / 30 / 10 = 0.29
    tasks = evaluate(snapshot(orders=[active_order([("VM", 10), ("PC", 10)])], usage=rows))["tasks"]
    assert ("low-utilisation", "VM") not in tasks
    assert tasks[("low-utilisation", "PC")] == "Low"


@pytest.mark.parametrize(
    ("scans", "failed", "severity"),
    [(100, 9, None), (10, 1, "Low"), (100, 24, "Low"), (4, 1, "Medium"), (100, 49, "Medium"), (2, 1, "High")],
)
def test_failed_scans_ratio(scans: int, failed: int, severity: str | None) -> None:
    rows = [usage("VM", 6, used=1, scans=scans, failed=failed), usage("VM", 7, used=1, scans=50, failed=50)]
    tasks = evaluate(snapshot(usage=rows))["tasks"]
    assert tasks.get(("failed-scans", "VM")) == severity


def test_a_timestamp_counts_on_its_utc_date() -> None:
    assert utc_date("2026-11-27T00:30:00+02:00") == datetime.date(2026, 11, 26)
    assert utc_date("2026-11-26T21:30:00-05:00") == datetime.date(2026, 11, 27)
    scanners = [
        {"id": "s1", "name": "a", "last_seen_at": f"{ago(7)}T00:30:00+02:00"},  # UTC: 8 days ago
        {"id": "s2", "name": "b", "last_seen_at": f"{ago(8)}T21:30:00-05:00"},  # UTC: 7 days ago
        {"id": "s3", "name": "c", "last_seen_at": f"{ago(7)}T23:59:00Z"},
    ]
    result = evaluate(snapshot(scanners=scanners))
    assert result["tasks"][("inactive-scanners", "")] == "Medium"  # 1 of 3
    # scanning: S == 0 -> base 0 anyway; one inactive scanner keeps it at 0
    assert result["sections"]["engagement"] == 0


def test_schedule_lapsed_after_twice_the_interval() -> None:
    schedules = [
        {
            "id": "a",
            "product": "VM",
            "enabled": True,
            "interval_days": 7,
            "last_run_at": f"{ago(14)}T10:00:00Z",
        },
        {
            "id": "b",
            "product": "VM",
            "enabled": True,
            "interval_days": 7,
            "last_run_at": f"{ago(15)}T10:00:00Z",
        },
        {"id": "c", "product": "VM", "enabled": True, "interval_days": 7, "last_run_at": None},
        {"id": "d", "product": "VM", "enabled": False, "interval_days": 7, "last_run_at": None},
    ]
    tasks = evaluate(snapshot(tier="T1", schedules=schedules))["tasks"]
    assert {key for (rule, key) in tasks if rule == "schedule-lapsed"} == {"b", "c"}
    assert tasks[("schedule-lapsed", "b")] == "High"


@pytest.mark.parametrize(
    ("m", "score", "gap"),
    [(0, 100, None), (60, 100, None), (61, Fraction(100 * 119, 120), "Medium"), (120, 50, "Medium"),
     (121, Fraction(100 * 59, 120), "High"), (180, 0, "High")],
)  # fmt: skip
def test_one_to_one_and_follow_up_gap(m: int, score: Fraction, gap: str | None) -> None:
    meetings = [
        {"id": "m1", "held_on": ago(m), "outcome": "ok"},
        {"id": "m2", "held_on": ago(-3), "outcome": None},  # in the future: not held yet
    ]
    result = evaluate(snapshot(tier="T2", meetings=meetings))
    assert result["sections"]["one_to_one"] == score
    assert result["tasks"].get(("meeting-follow-up-gap", "")) == gap


def test_meeting_outcome_missing() -> None:
    meetings = [
        {"id": "d1", "held_on": ago(1), "outcome": None},
        {"id": "d2", "held_on": ago(2), "outcome": "   "},
        {"id": "d14", "held_on": ago(14), "outcome": ""},
        {"id": "d15", "held_on": ago(15)},
        {"id": "d29", "held_on": ago(29), "outcome": "\t"},
        {"id": "d30", "held_on": ago(30), "outcome": None},
        {"id": "ok", "held_on": ago(20), "outcome": "Agreed next steps"},
    ]
    tasks = evaluate(snapshot(meetings=meetings))["tasks"]
    missing = {key: severity for (rule, key), severity in tasks.items() if rule == "meeting-outcome-missing"}
    assert missing == {"d2": "Low", "d14": "Low", "d15": "Medium", "d29": "Medium"}


def test_latest_sentiment_ties_go_to_the_last_row_in_file_order() -> None:
    sentiment = [
        {"recorded_on": ago(2), "value": "positive"},
        {"recorded_on": ago(2), "value": "neutral"},
        {"recorded_on": ago(9), "value": "negative"},
    ]
    assert evaluate(snapshot(sentiment=sentiment))["sections"]["sentiment"] == 60


@pytest.mark.parametrize(
    ("responses", "score"),
    [([(0, 9)], 100), ([(0, 8), (364, 10)], 100), ([(0, 9), (365, 0)], 100), ([(0, 6), (1, 8)], 70),
     ([(0, 8), (1, 9), (2, 9)], 70), ([(0, 7), (364, 6)], 20)],
)  # fmt: skip
def test_feedback(responses: list[tuple[int, int]], score: int) -> None:
    nps = [{"responded_on": ago(days), "score": value} for days, value in responses]
    assert evaluate(snapshot(nps=nps))["sections"]["feedback"] == score


@pytest.mark.parametrize(
    ("ages", "commercial", "severity"),
    [([0], 100, None), ([30], 70, "Low"), ([31], 70, "Medium"), ([60, 1], 70, "Medium"), ([61], 50, "High")],
)
def test_overdue_invoices(ages: list[int], commercial: int, severity: str | None) -> None:
    invoices = [
        {"id": f"i{n}", "number": "N", "amount": 1, "currency": "EUR", "issued_on": ago(age + 30),
         "due_on": ago(age), "paid_on": None, "status": "open"}
        for n, age in enumerate(ages)
    ]  # fmt: skip
    invoices.append(
        {"id": "paid", "number": "N", "amount": 1, "currency": "EUR", "issued_on": ago(300),
         "due_on": ago(270), "paid_on": ago(1), "status": "paid"}
    )  # fmt: skip
    result = evaluate(snapshot(orders=[active_order([("VM", 10)])], invoices=invoices))
    assert result["sections"]["commercial"] == commercial
    assert result["tasks"].get(("overdue-invoices", "")) == severity


def test_example_snapshot(example_snapshot: Path) -> None:
    snap, as_of = load_snapshot_folder(str(example_snapshot))
    results = reference_evaluate(snap, as_of)
    for account_id, result in results.items():
        sections = ", ".join(f"{name} {float(score):.3f}" for name, score in result["sections"].items())
        print(f"{account_id}: CHI {result['chi']} {result['band']} ({sections})")
        for (rule, key), severity in sorted(result["tasks"].items()):
            print(f"    {rule} [{key}] {severity}")
    assert len(results) == 4
    assert all(0 <= result["chi"] <= 100 for result in results.values())


def test_factory_is_deterministic_and_valid() -> None:
    snap = random_snapshot(random.Random(7), AS_OF, 300)
    assert json.dumps(snap) == json.dumps(random_snapshot(random.Random(7), AS_OF, 300))
    account_ids = [row["id"] for row in snap["accounts"]]
    assert len(set(account_ids)) == len(account_ids) == 300
    for entity, rows in snap.items():
        if entity != "accounts":
            assert all(row["account_id"] in set(account_ids) for row in rows), entity
        if rows and "id" in rows[0]:
            assert len({row["id"] for row in rows}) == len(rows), entity
    usage_keys = [(row["account_id"], row["product"], row["date"]) for row in snap["usage"]]
    assert len(set(usage_keys)) == len(usage_keys)
    for entity, field in [("usage", "date"), ("activity", "date"), ("nps", "responded_on"),
                          ("sentiment", "recorded_on")]:  # fmt: skip
        assert all(datetime.date.fromisoformat(row[field]) <= AS_OF for row in snap[entity])
    for entity, field in [
        ("tickets", "opened_at"),
        ("scanners", "last_seen_at"),
        ("schedules", "last_run_at"),
    ]:
        for row in snap[entity]:
            if row.get(field) is not None:
                assert utc_date(row[field]) <= AS_OF
                assert datetime.date.fromisoformat(row[field][:10]) <= AS_OF
    for ticket in snap["tickets"]:
        if ticket.get("closed_at") is not None:
            opened = datetime.datetime.fromisoformat(ticket["opened_at"])
            assert datetime.datetime.fromisoformat(ticket["closed_at"]) >= opened
    assert all(order["end_date"] >= order["start_date"] for order in snap["orders"])
    assert all(row["failed_scans"] <= row["scans"] for row in snap["usage"])
    results = reference_evaluate(snap, AS_OF)
    assert {result["band"] for result in results.values()} == {"Happy", "At-Risk", "Critical"}
