"""What evaluating a policy set produces for each customer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec


class Reason(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One "Why not 100" line: the section (and part) it explains, its text, the CHI points lost there."""

    section: str
    part: str | None
    text: str
    points: float
    evidence: dict[str, Any]


class Firing(msgspec.Struct, frozen=True, kw_only=True):
    """A task rule that fired for a customer (and key), with what made it fire."""

    task_id: str
    rule: str
    account_id: str
    key: str
    category: str
    severity: str
    title: str
    description: str
    due_on: dt.date
    evidence: dict[str, Any]  # the facts the rule read, with their values
    thresholds: dict[str, Any]  # the rule's params
    condition: str  # the `when` that held
    severity_case: str | None  # the severity case that matched (None: a fixed level or the default case)


class Issue(msgspec.Struct, frozen=True, kw_only=True):
    """A part of the policy that could not be evaluated for one customer (the run goes on)."""

    where: str
    message: str


class AccountResult(msgspec.Struct, kw_only=True):
    account_id: str
    chi: int | None
    band: str | None
    sections: dict[str, float | None]
    points_lost: dict[str, float]
    coverage: dict[str, bool]
    reasons: list[Reason]
    tasks: list[Firing]
    segments: list[str]
    errors: list[Issue]
    # Rules that could not be evaluated for this customer: their open tasks must not be resolved.
    failed_rules: list[str]
    policy_hash: str
