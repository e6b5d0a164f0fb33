"""The hand-written default policies of the engine benchmark stay equal to the compiled ones.

`bench/engine.py` compares the speed of the compiled policies with `bench/handwritten.py`; that
comparison only means something while both compute the same thing. This checks it on every
customer of a small demo snapshot and of boundary-rich generated snapshots (no timing).
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from typing import Any

import msgspec
import pytest

from bench.engine import AS_OF, build_facts, check_equivalence, demo_rows, differences, load_snapshot
from bench.handwritten import decide_by_hand
from engine.compiler import CompiledPolicies
from engine.snapshot import snapshot_from_rows
from tests.engine.snapshot_factory import random_snapshot


def facts_of(policies: CompiledPolicies, rows: dict[str, list[dict[str, Any]]], as_of: dt.date) -> list[dict]:
    snapshot, bad = snapshot_from_rows(as_of, rows)
    assert bad == []
    return build_facts(policies, snapshot, as_of).records


@pytest.fixture(scope="module")
def demo_facts(default_policies: CompiledPolicies) -> list[dict[str, Any]]:
    snapshot = load_snapshot(demo_rows(300, 7, AS_OF), AS_OF)
    return build_facts(default_policies, snapshot, AS_OF).records


def test_demo_customers_equal(default_policies: CompiledPolicies, demo_facts: list[dict[str, Any]]) -> None:
    bound = default_policies.bind(AS_OF)
    result = check_equivalence(bound.decide, demo_facts, AS_OF, default_policies.content_hash)
    assert result.checked == 300
    assert result.mismatches == 0, result.first_mismatch


@pytest.mark.parametrize("seed", range(3))
def test_boundary_customers_equal(default_policies: CompiledPolicies, seed: int) -> None:
    rng = random.Random(seed)
    as_of = AS_OF + dt.timedelta(days=rng.randrange(-400, 400))
    records = facts_of(default_policies, random_snapshot(rng, as_of, 300), as_of)
    bound = default_policies.bind(as_of)
    result = check_equivalence(bound.decide, records, as_of, default_policies.content_hash)
    assert result.checked == 300
    assert result.mismatches == 0, result.first_mismatch


def test_the_check_is_not_vacuous(default_policies: CompiledPolicies, demo_facts: list[dict[str, Any]]) -> None:
    """The data exercises every rule, band and kind of reason, and a changed result is caught."""
    records = demo_facts + facts_of(default_policies, random_snapshot(random.Random(0), AS_OF, 300), AS_OF)
    results = [decide_by_hand(facts, AS_OF, "hash") for facts in records]
    rules = Counter(task.rule for result in results for task in result.tasks)
    assert set(rules) == {rule.id for rule in default_policies.rules}
    assert {result.band for result in results} == {"Happy", "At-Risk", "Critical"}
    assert len({(reason.section, reason.part) for result in results for reason in result.reasons}) == 8

    bound = default_policies.bind(AS_OF)

    def altered(facts: dict[str, Any]) -> Any:
        result = bound.decide(facts)
        if result.reasons:
            result.reasons[-1] = msgspec.structs.replace(result.reasons[-1], text="changed")
        return result

    check = check_equivalence(altered, records, AS_OF, default_policies.content_hash)
    assert check.mismatches == sum(1 for result in results if result.reasons)
    assert check.first_mismatch is not None
    assert check.first_mismatch["differences"][0]["path"].endswith(".text")


def test_float_tolerance() -> None:
    found: list[tuple[str, Any, Any]] = []
    floats: list[float] = []
    differences({"a": 0.1 + 0.2, "b": [True, 3]}, {"a": 0.3, "b": [True, 3]}, "r", found, floats)
    assert found == []
    assert floats
    differences({"a": 0.3, "b": True, "c": 2}, {"a": 0.3001, "b": 1, "c": 2.0}, "r", found, floats)
    assert [path for path, _, _ in found] == ["r.a", "r.b"]
