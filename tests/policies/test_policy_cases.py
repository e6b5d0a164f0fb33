"""Every policy test case beside the policies, one pytest item each."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.compiler import CompiledPolicies
from engine.policytests import PolicyTestCase, check_case, read_test_file

TEST_DIR = Path(__file__).resolve().parents[2] / "policies" / "tests"


def _cases() -> list[PolicyTestCase]:
    cases = []
    for path in sorted(TEST_DIR.glob("*.yaml")):
        cases.extend(read_test_file(path.name, path.read_bytes()))
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{case.file}:{case.line}:{case.name}" for case in CASES])
def test_policy_case(default_policies: CompiledPolicies, case: PolicyTestCase) -> None:
    outcome = check_case(default_policies, case)
    if not outcome.passed:
        pytest.fail("\n".join(outcome.failures), pytrace=False)
