"""Dry-run diffs report exactly what a draft would change."""

from __future__ import annotations

import datetime as dt
import random

from engine import evaluate, load_policies
from engine.compiler import CompiledPolicies
from engine.diff import PolicyDiff
from engine.snapshot import snapshot_from_rows
from tests.engine.snapshot_factory import random_snapshot
from tests.engine.test_compiler import default_files

AS_OF = dt.date(2026, 12, 4)


def draft() -> CompiledPolicies:
    files = default_files()
    files["rules.yaml"] = files["rules.yaml"].replace(
        b"params: {horizon_days: 90, high_within_days: 30", b"params: {horizon_days: 120, high_within_days: 45"
    )
    files["chi.yaml"] = files["chi.yaml"].replace(b"    weight: 50\n", b"    weight: 40\n", 1)
    return load_policies(files)


def test_diff_counts_match_a_direct_comparison(default_policies: CompiledPolicies) -> None:
    snapshot, _ = snapshot_from_rows(AS_OF, random_snapshot(random.Random(3), AS_OF, 300))
    before = evaluate(default_policies, snapshot)
    after = evaluate(draft(), snapshot)
    diff = PolicyDiff(examples=3)
    for old, new in zip(before, after, strict=True):
        diff.add(old, new)
    report = diff.report()

    old_tasks = {(r.account_id, t.rule, t.key): t.severity for r in before for t in r.tasks}
    new_tasks = {(r.account_id, t.rule, t.key): t.severity for r in after for t in r.tasks}
    appear = new_tasks.keys() - old_tasks.keys()
    disappear = old_tasks.keys() - new_tasks.keys()
    severity = {k for k in old_tasks.keys() & new_tasks.keys() if old_tasks[k] != new_tasks[k]}
    assert (report.appear, report.disappear, report.severity_changed) == (len(appear), len(disappear), len(severity))
    assert report.appear > 0  # the longer horizon opens renewal tasks
    assert report.tasks_before == len(old_tasks)
    assert report.tasks_after == len(new_tasks)
    moved = sum(1 for o, n in zip(before, after, strict=True) if o.band != n.band)
    assert sum(report.band_moves.values()) == moved
    changed = sum(1 for o, n in zip(before, after, strict=True) if o.chi != n.chi)
    assert report.chi_changed == changed
    assert sum(report.chi_histogram.values()) == report.customers == 300
    renewal = next(s for s in report.rules if s.rule == "renewal-upcoming")
    assert renewal.appear == sum(1 for k in appear if k[1] == "renewal-upcoming")
    assert all(len(s.examples) <= 3 for s in report.rules)
    assert report.biggest_movers
    assert abs(report.biggest_movers[0].chi_after - report.biggest_movers[0].chi_before) == max(
        abs(n.chi - o.chi) for o, n in zip(before, after, strict=True)
    )


def test_identical_policies_change_nothing(default_policies: CompiledPolicies) -> None:
    snapshot, _ = snapshot_from_rows(AS_OF, random_snapshot(random.Random(4), AS_OF, 100))
    diff = PolicyDiff()
    for old, new in zip(evaluate(default_policies, snapshot), evaluate(default_policies, snapshot), strict=True):
        diff.add(old, new)
    report = diff.report()
    assert (report.chi_changed, report.appear, report.disappear, report.severity_changed) == (0, 0, 0, 0)
    assert report.band_moves == {}
    assert report.chi_histogram["0"] == 100
