"""Reconciliation: what a customer's firings mean for its stored tasks. Pure; the shell applies it.

For one customer, given this run's firings and the tasks already stored:

* a firing with no task yet is **inserted** (opened);
* a firing of an active task **updates** only the engine fields that changed (title, evidence,
  severity...); its due date may move earlier, never later, so a task does not slide forward
  every morning it keeps firing;
* a firing of a resolved task **reactivates** it (same id, a new `reopened_at`);
* an active task that no longer fires is **resolved** — but only if the customer's data arrived
  complete and its rule could be evaluated: absence of evidence is not evidence of absence;
* everything else is left alone, so a re-run over the same snapshot and policies plans nothing.

CSM-owned fields (state, snooze, comment, assignee) are not part of the plan at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from engine.results import Firing


class StoredTask(msgspec.Struct, frozen=True, kw_only=True):
    """The engine-owned part of a stored task, as reconciliation needs it (JSON-shaped values)."""

    task_id: str
    rule: str
    active: bool
    due_on: dt.date
    category: str
    severity: str
    title: str
    description: str
    evidence: dict[str, Any]
    thresholds: dict[str, Any]
    condition: str
    severity_case: str | None
    policy_hash: str


class TaskChange(msgspec.Struct, frozen=True, kw_only=True):
    """An existing task and the engine fields to set on it."""

    task_id: str
    values: dict[str, Any]
    severity_before: str | None = None


class Plan(msgspec.Struct, kw_only=True):
    insert: list[Firing] = msgspec.field(default_factory=list)
    update: list[TaskChange] = msgspec.field(default_factory=list)
    reactivate: list[TaskChange] = msgspec.field(default_factory=list)
    resolve: list[str] = msgspec.field(default_factory=list)
    withheld: int = 0  # tasks that stopped firing but were kept open (incomplete data or rule errors)


def engine_values(firing: Firing, policy_hash: str) -> dict[str, Any]:
    """A firing's engine-owned fields as they are stored (JSON builtins: dates as ISO text); a later
    firing may change any of them (and `due_on`, handled apart)."""
    return {
        "category": firing.category,
        "severity": firing.severity,
        "title": firing.title,
        "description": firing.description,
        "evidence": msgspec.to_builtins(firing.evidence),
        "thresholds": msgspec.to_builtins(firing.thresholds),
        "condition": firing.condition,
        "severity_case": firing.severity_case,
        "policy_hash": policy_hash,
    }


def plan_reconciliation(
    firings: Iterable[Firing],
    stored: Mapping[str, StoredTask],
    *,
    policy_hash: str,
    complete: bool,
    failed_rules: Iterable[str] = (),
) -> Plan:
    """The plan for one customer: `stored` are all its tasks (active or not), by task id."""
    plan = Plan()
    fired: set[str] = set()
    for firing in firings:
        fired.add(firing.task_id)
        task = stored.get(firing.task_id)
        if task is None:
            plan.insert.append(firing)
            continue
        values = engine_values(firing, policy_hash)
        changed = {name: value for name, value in values.items() if getattr(task, name) != value}
        if not task.active:
            plan.reactivate.append(
                TaskChange(
                    task_id=task.task_id, values={**changed, "due_on": firing.due_on}, severity_before=task.severity
                )
            )
            continue
        if firing.due_on < task.due_on:
            changed["due_on"] = firing.due_on
        if changed:
            plan.update.append(TaskChange(task_id=task.task_id, values=changed, severity_before=task.severity))
    failed = set(failed_rules)
    for task in stored.values():
        if not task.active or task.task_id in fired:
            continue
        if complete and task.rule not in failed:
            plan.resolve.append(task.task_id)
        else:
            plan.withheld += 1
    return plan
