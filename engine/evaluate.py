"""Evaluating a compiled policy set over a snapshot.

`evaluate` scores a snapshot held in memory. `Evaluator` is the streaming form the file
connector uses: rows are folded into per-customer accumulators as they are decoded, so memory
holds the aggregates the policies need, not the rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from engine.compiler import CompiledPolicies
from engine.errors import SnapshotError
from engine.results import AccountResult
from engine.snapshot import Account, Snapshot


class Evaluator:
    """Feed accounts and rows (in file order), then take the results."""

    def __init__(self, policies: CompiledPolicies, as_of: dt.date) -> None:
        self.bound = policies.bind(as_of)
        self._folds = self.bound.folds
        self.states: dict[str, list[Any]] = {}
        self._accounts: dict[str, Account] = {}

    def add_account(self, account: Account) -> None:
        self._accounts[account.id] = account
        self.states[account.id] = self.bound.new_state()

    def knows(self, account_id: str) -> bool:
        return account_id in self.states

    def add_row(self, entity: str, row: Any) -> None:
        """Fold one row into its customer's accumulators. The customer must have been added."""
        fold = self._folds.get(entity)
        if fold is not None:
            fold(self.states[row.account_id], row)

    def add_rows(self, entity: str, rows: Iterable[Any]) -> None:
        """Fold a block of rows of one entity (the customers must have been added)."""
        fold = self._folds.get(entity)
        if fold is not None:
            states = self.states
            # Rows come grouped by customer: a state looked up once serves the customer's run of rows.
            account_id: str | None = None
            state: list[Any] = []
            for row in rows:
                if row.account_id != account_id:
                    account_id = row.account_id
                    state = states[account_id]
                fold(state, row)

    def evaluate(self, account_id: str) -> tuple[dict[str, Any] | None, AccountResult]:
        """The customer's facts (None if they could not be derived) and its result."""
        return self.bound.evaluate_account(self.states[account_id], self._accounts[account_id])

    def result(self, account_id: str) -> AccountResult:
        return self.evaluate(account_id)[1]

    def results(self) -> Iterator[AccountResult]:
        for account_id in self._accounts:
            yield self.result(account_id)

    def facts(self, account_id: str) -> dict[str, Any]:
        return self.bound.finalize(self.states[account_id], self._accounts[account_id])


def evaluate(policies: CompiledPolicies, snapshot: Snapshot, as_of: dt.date | None = None) -> list[AccountResult]:
    """Score every customer of `snapshot` as of `as_of` (default: the snapshot's own date)."""
    evaluator = Evaluator(policies, as_of or snapshot.as_of)
    for account in snapshot.accounts:
        evaluator.add_account(account)
    for entity, rows in snapshot.rows.items():
        fold = evaluator.bound.folds.get(entity)
        if fold is None:
            continue
        states = evaluator.states
        for row in rows:
            state = states.get(row.account_id)
            if state is None:
                raise SnapshotError(f"{entity} row for unknown account {row.account_id!r}")
            fold(state, row)
    return list(evaluator.results())
