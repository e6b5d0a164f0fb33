"""The block fast paths (RowChecker.check_batch, Evaluator.add_rows) against the row-by-row ones.

The fast paths remember the previous row's customer and product; rows grouped by customer, rows
interleaved, unknown customers between known ones and duplicates across blocks must all come out
exactly as the row-by-row check and fold give them.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest

from engine import Evaluator, load_policies
from engine.snapshot import Account, Activity, RowChecker, Usage

AS_OF = dt.date(2026, 12, 4)
POLICIES = Path(__file__).resolve().parents[2] / "policies"


def accounts(count: int) -> list[Account]:
    return [
        Account(id=f"acc-{n}", name=f"Customer {n}", tier="T3", csm="Ann", acv=1000, currency="EUR")
        for n in range(count)
    ]


def usage_rows(rng: random.Random, grouped: bool) -> list[Usage]:
    rows = [
        Usage(
            account_id=f"acc-{rng.randrange(7)}",  # acc-5 and acc-6 are unknown
            product=rng.choice(("VM", "PC")),
            date=AS_OF - dt.timedelta(days=rng.randrange(-1, 6)),  # -1: after as_of
            used=rng.randrange(50),
            scans=rng.randrange(5),
            failed_scans=0,
        )
        for _ in range(400)
    ]
    if grouped:
        rows.sort(key=lambda row: (row.account_id, row.product))
    return rows


def blocks(rng: random.Random, rows: list[Any]) -> list[list[Any]]:
    cuts = sorted(rng.sample(range(1, len(rows)), 6))
    return [rows[start:end] for start, end in zip([0, *cuts], [*cuts, len(rows)], strict=True)]


Refusals = list[tuple[int, str | None, str]]


def refused_both_ways(rng: random.Random, entity: str, rows: list[Any], known: int) -> tuple[Refusals, Refusals]:
    """(index, field, message) of the rows refused by `check` one by one, and by `check_batch`
    in random blocks, with the first `known` customers in accounts."""
    one_by_one, in_blocks = RowChecker(AS_OF), RowChecker(AS_OF)
    for account in accounts(known):
        assert one_by_one.check("accounts", account) is None
        assert in_blocks.check("accounts", account) is None
    expected = [(index, *problem) for index, row in enumerate(rows) if (problem := one_by_one.check(entity, row))]
    found: Refusals = []
    offset = 0
    for block in blocks(rng, rows):
        found += [(offset + index, field, message) for index, field, message in in_blocks.check_batch(entity, block)]
        offset += len(block)
    return expected, found


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_check_batch_refuses_exactly_the_rows_check_refuses(seed: int, grouped: bool) -> None:
    rng = random.Random(seed)
    rows = usage_rows(rng, grouped)
    expected, found = refused_both_ways(rng, "usage", rows, known=5)
    assert found == expected
    reasons = {message.split(" ")[0] for _, _, message in found}
    assert {"unknown", "a"} <= reasons  # unknown customers and second rows for a day were both met


def series_rows(rng: random.Random, entity: str) -> list[Any]:
    """Rows as files usually have them, runs of one series' consecutive days, with the odd bad
    or unusual row: a day after as_of, a day repeated, a gap, days out of order, an unknown
    customer, a series that comes back later in the file."""
    rows: list[Any] = []
    for _ in range(60):
        account_id = f"acc-{rng.randrange(44)}"  # acc-40 to acc-43 are unknown
        product = rng.choice(("VM", "PC"))
        last = rng.choice([0, 0, 0, 3, 10])
        days = list(range(last + rng.randrange(1, 12), last - 1, -1))  # oldest first
        twist = rng.choice(["none", "none", "future", "repeat", "gap", "swap"])
        if twist == "future":
            days[rng.randrange(len(days))] = -1
        elif twist == "repeat":
            days.insert(rng.randrange(len(days)), rng.choice(days))
        elif twist == "gap" and len(days) > 2:
            days.pop(rng.randrange(1, len(days) - 1))
        elif twist == "swap" and len(days) > 1:
            days[0], days[-1] = days[-1], days[0]
        for days_ago in days:
            day = AS_OF - dt.timedelta(days=days_ago)
            if entity == "usage":
                rows.append(Usage(account_id=account_id, product=product, date=day, used=1, scans=1, failed_scans=0))
            else:
                rows.append(Activity(account_id=account_id, date=day, logins=1, active_users=1))
    return rows


@pytest.mark.parametrize("entity", ["usage", "activity"])
@pytest.mark.parametrize("seed", range(10))
def test_check_batch_on_runs_of_days_refuses_exactly_the_rows_check_refuses(seed: int, entity: str) -> None:
    rng = random.Random(seed)
    rows = series_rows(rng, entity)
    expected, found = refused_both_ways(rng, entity, rows, known=40)
    assert found == expected
    assert expected  # bad rows were met
    assert len(expected) < len(rows) / 2  # and most runs were clean


@pytest.mark.parametrize("grouped", [True, False])
def test_add_rows_folds_like_add_row(grouped: bool) -> None:
    rng = random.Random(11)
    policies = load_policies(POLICIES)
    rows = [
        Activity(
            account_id=f"acc-{rng.randrange(5)}",
            date=AS_OF - dt.timedelta(days=rng.randrange(40)),
            logins=rng.randrange(3),
            active_users=1,
        )
        for _ in range(300)
    ]
    if grouped:
        rows.sort(key=lambda row: row.account_id)
    one_by_one, in_blocks = Evaluator(policies, AS_OF), Evaluator(policies, AS_OF)
    for account in accounts(5):
        one_by_one.add_account(account)
        in_blocks.add_account(account)
    for row in rows:
        one_by_one.add_row("activity", row)
    for block in blocks(rng, rows):
        in_blocks.add_rows("activity", block)
    for account in accounts(5):
        assert in_blocks.facts(account.id) == one_by_one.facts(account.id)
        assert in_blocks.result(account.id) == one_by_one.result(account.id)
