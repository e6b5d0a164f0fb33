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


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_check_batch_refuses_exactly_the_rows_check_refuses(seed: int, grouped: bool) -> None:
    rng = random.Random(seed)
    rows = usage_rows(rng, grouped)
    one_by_one, in_blocks = RowChecker(AS_OF), RowChecker(AS_OF)
    for account in accounts(5):
        assert one_by_one.check("accounts", account) is None
        assert in_blocks.check("accounts", account) is None
    expected = [(index, *problem) for index, row in enumerate(rows) if (problem := one_by_one.check("usage", row))]
    found = []
    offset = 0
    for block in blocks(rng, rows):
        found += [(offset + index, field, message) for index, field, message in in_blocks.check_batch("usage", block)]
        offset += len(block)
    assert found == expected
    reasons = {message.split(" ")[0] for _, _, message in found}
    assert {"unknown", "a"} <= reasons  # unknown customers and second rows for a day were both met


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
