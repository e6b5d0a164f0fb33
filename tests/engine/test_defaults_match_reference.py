"""The default policies give exactly the scores, bands and tasks of DEFAULT_POLICIES.md.

The compiled, policy-driven engine is compared with `reference.py`, an independent and
deliberately plain implementation of DEFAULT_POLICIES.md in exact rational arithmetic, on
generated snapshots that put many customers right on the boundaries (exactly 7, 30, 60, 90
days; ratios exactly 0.10, 0.25, 0.5; CHI exactly on a half).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import pytest

from engine import evaluate
from engine.compiler import CompiledPolicies
from engine.snapshot import snapshot_from_rows
from tests.engine.reference import load_snapshot_folder, reference_evaluate
from tests.engine.snapshot_factory import random_snapshot


def compare(policies: CompiledPolicies, rows: dict[str, list[dict]], as_of: dt.date) -> list[str]:
    snapshot, _bad = snapshot_from_rows(as_of, rows)
    expected = reference_evaluate(rows, as_of)
    mismatches = []
    for result in evaluate(policies, snapshot, as_of):
        want = expected[result.account_id]
        got_tasks = {(task.rule, task.key): task.severity for task in result.tasks}
        if result.errors:
            mismatches.append(f"{result.account_id}: evaluation errors {result.errors}")
        if (result.chi, result.band) != (want["chi"], want["band"]):
            mismatches.append(
                f"{result.account_id}: CHI {result.chi} {result.band}, reference {want['chi']} {want['band']}"
            )
        for section, score in want["sections"].items():
            if abs(result.sections[section] - float(score)) > 1e-9:
                mismatches.append(f"{result.account_id}: {section} {result.sections[section]} != {float(score)}")
        if got_tasks != want["tasks"]:
            missing = {k: v for k, v in want["tasks"].items() if got_tasks.get(k) != v}
            extra = {k: v for k, v in got_tasks.items() if want["tasks"].get(k) != v}
            mismatches.append(f"{result.account_id}: tasks differ; reference only {missing}, engine only {extra}")
    assert len(expected) == len(snapshot.accounts)
    return mismatches


@pytest.mark.parametrize("seed", range(6))
def test_generated_boundary_snapshots(default_policies: CompiledPolicies, seed: int) -> None:
    rng = random.Random(seed)
    as_of = dt.date(2026, 12, 4) + dt.timedelta(days=rng.randrange(-400, 400))
    rows = random_snapshot(rng, as_of, 400)
    assert compare(default_policies, rows, as_of) == []


def test_example_snapshot(default_policies: CompiledPolicies, example_snapshot: Path) -> None:
    rows, as_of = load_snapshot_folder(str(example_snapshot))
    assert compare(default_policies, rows, as_of) == []
    manifest = json.loads((example_snapshot / "manifest.json").read_text())
    assert as_of.isoformat() == manifest["as_of"]
