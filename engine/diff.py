"""Dry-run diffs: what a draft policy set would change, customer by customer.

Evaluate the published and the draft policies over the same snapshot, feed each customer's
two results to `PolicyDiff.add`, and read `report()`: CHI deltas (histogram, biggest movers),
band moves, and tasks that would appear, disappear or change severity, by rule and by
customer, each with examples. Results are added one customer at a time, so a whole book can
be diffed without holding it in memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec

from engine.results import AccountResult, Firing

DELTA_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("-20 or less", float("-inf"), -20),
    ("-19 to -10", -19, -10),
    ("-9 to -5", -9, -5),
    ("-4 to -1", -4, -1),
    ("0", 0, 0),
    ("+1 to +4", 1, 4),
    ("+5 to +9", 5, 9),
    ("+10 to +19", 10, 19),
    ("+20 or more", 20, float("inf")),
)


class TaskChange(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    rule: str
    key: str
    change: str  # appear | disappear | severity
    severity_before: str | None
    severity_after: str | None
    title: str


class ScoreChange(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    chi_before: int | None
    chi_after: int | None
    band_before: str | None
    band_after: str | None


class RuleSummary(msgspec.Struct, kw_only=True):
    rule: str
    before: int = 0
    after: int = 0
    appear: int = 0
    disappear: int = 0
    severity: int = 0
    examples: list[TaskChange] = msgspec.field(default_factory=list)


class DiffReport(msgspec.Struct, kw_only=True):
    customers: int
    chi_changed: int
    chi_mean_delta: float
    chi_histogram: dict[str, int]
    band_moves: dict[str, int]  # "At-Risk -> Critical": n
    band_examples: dict[str, list[ScoreChange]]
    biggest_movers: list[ScoreChange]
    tasks_before: int
    tasks_after: int
    appear: int
    disappear: int
    severity_changed: int
    rules: list[RuleSummary]
    customers_most_changed: list[tuple[str, int]]
    errors_after: int
    error_examples: list[str]


@dataclass
class PolicyDiff:
    """Accumulates the differences between two evaluations of the same customers."""

    examples: int = 5
    customers: int = 0
    chi_changed: int = 0
    delta_sum: float = 0.0
    histogram: Counter[str] = field(default_factory=Counter)
    band_moves: Counter[str] = field(default_factory=Counter)
    band_examples: dict[str, list[ScoreChange]] = field(default_factory=dict)
    movers: list[tuple[int, ScoreChange]] = field(default_factory=list)
    rules: dict[str, RuleSummary] = field(default_factory=dict)
    per_customer: Counter[str] = field(default_factory=Counter)
    errors_after: int = 0
    error_examples: list[str] = field(default_factory=list)

    def add(self, before: AccountResult, after: AccountResult) -> None:
        if before.account_id != after.account_id:
            raise ValueError(f"comparing {before.account_id} with {after.account_id}")
        self.customers += 1
        self._scores(before, after)
        self._tasks(before, after)
        if after.errors:
            self.errors_after += 1
            if len(self.error_examples) < self.examples:
                issue = after.errors[0]
                self.error_examples.append(f"{after.account_id}: {issue.where}: {issue.message}")

    def _scores(self, before: AccountResult, after: AccountResult) -> None:
        change = ScoreChange(
            account_id=after.account_id,
            chi_before=before.chi,
            chi_after=after.chi,
            band_before=before.band,
            band_after=after.band,
        )
        if before.chi is not None and after.chi is not None:
            delta = after.chi - before.chi
            self.delta_sum += delta
            for label, low, high in DELTA_BUCKETS:
                if low <= delta <= high:
                    self.histogram[label] += 1
                    break
            if delta:
                self.chi_changed += 1
                self.movers.append((abs(delta), change))
                if len(self.movers) > 4 * self.examples:
                    self.movers.sort(key=lambda item: (-item[0], item[1].account_id))
                    del self.movers[self.examples :]
        elif before.chi != after.chi:
            self.chi_changed += 1
        if before.band != after.band:
            move = f"{before.band} -> {after.band}"
            self.band_moves[move] += 1
            examples = self.band_examples.setdefault(move, [])
            if len(examples) < self.examples:
                examples.append(change)

    def _summary(self, rule: str) -> RuleSummary:
        if rule not in self.rules:
            self.rules[rule] = RuleSummary(rule=rule)
        return self.rules[rule]

    def _tasks(self, before: AccountResult, after: AccountResult) -> None:
        old: dict[tuple[str, str], Firing] = {(task.rule, task.key): task for task in before.tasks}
        new: dict[tuple[str, str], Firing] = {(task.rule, task.key): task for task in after.tasks}
        for task in before.tasks:
            self._summary(task.rule).before += 1
        for task in after.tasks:
            self._summary(task.rule).after += 1
        for identity in old.keys() | new.keys():
            was, now = old.get(identity), new.get(identity)
            if was is not None and now is not None and was.severity == now.severity:
                continue
            kind = "appear" if was is None else "disappear" if now is None else "severity"
            shown = now or was
            assert shown is not None
            summary = self._summary(identity[0])
            setattr(summary, kind, getattr(summary, kind) + 1)
            self.per_customer[after.account_id] += 1
            if len(summary.examples) < self.examples:
                summary.examples.append(
                    TaskChange(
                        account_id=after.account_id,
                        rule=identity[0],
                        key=identity[1],
                        change=kind,
                        severity_before=was.severity if was else None,
                        severity_after=now.severity if now else None,
                        title=shown.title,
                    )
                )

    def report(self) -> DiffReport:
        movers = sorted(self.movers, key=lambda item: (-item[0], item[1].account_id))[: self.examples]
        rules = sorted(self.rules.values(), key=lambda s: (-(s.appear + s.disappear + s.severity), s.rule))
        compared = sum(self.histogram.values())
        return DiffReport(
            customers=self.customers,
            chi_changed=self.chi_changed,
            chi_mean_delta=self.delta_sum / compared if compared else 0.0,
            chi_histogram={label: self.histogram.get(label, 0) for label, _, _ in DELTA_BUCKETS},
            band_moves=dict(self.band_moves.most_common()),
            band_examples=self.band_examples,
            biggest_movers=[change for _, change in movers],
            tasks_before=sum(s.before for s in self.rules.values()),
            tasks_after=sum(s.after for s in self.rules.values()),
            appear=sum(s.appear for s in self.rules.values()),
            disappear=sum(s.disappear for s in self.rules.values()),
            severity_changed=sum(s.severity for s in self.rules.values()),
            rules=rules,
            customers_most_changed=self.per_customer.most_common(self.examples),
            errors_after=self.errors_after,
            error_examples=self.error_examples,
        )
