"""Policy test cases: small snapshots (or facts) in, expected CHI and tasks out, written as YAML.

A test file (`kind: tests`, usually in `policies/tests/`) holds cases like

    - name: renewal exactly 90 days away fires Low
      orders:
        - {status: active, start_date: -300, end_date: 90, acv: 50000, products: [{product: VM, capacity: 10}]}
      expect:
        tasks: [{rule: renewal-upcoming, severity: Low}]

Rows follow DATA.md, with conveniences: `account_id` and ids may be left out, a date or
timestamp may be a whole number of days relative to `as_of` (-7 is a week before), and
`usage_daily` / `activity_daily` expand to one row per day. `facts` overrides derived account
facts after they are computed, to test a section or rule from its facts alone.

`run_policy_tests` runs every case against a compiled policy set and says, per case, what
differed. The pytest suite, `csm policy test` and the console's publish check all use it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.compiler import CompiledPolicies
from engine.errors import PolicyError, Problem
from engine.evaluate import Evaluator
from engine.loader import schema_problems
from engine.results import AccountResult
from engine.snapshot import ENTITIES, FILE_ENTITIES, snapshot_from_rows
from engine.types import Kind
from engine.yamlsafe import YamlProblem, read_yaml

DEFAULT_AS_OF = "2026-12-04"
DEFAULT_ACCOUNT: dict[str, Any] = {
    "id": "acc-test",
    "name": "Test Customer",
    "tier": "T2",
    "csm": "csm@example.com",
    "acv": 100000,
    "currency": "EUR",
}
ROW_ENTITIES = tuple(entity for entity in FILE_ENTITIES if entity != "accounts")
DAILY = {"usage_daily": "usage", "activity_daily": "activity"}
SCORE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PolicyTestCase:
    file: str
    line: int | None
    name: str
    as_of: dt.date
    account: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]]
    facts: dict[str, Any]
    expect: dict[str, Any]


@dataclass
class CaseOutcome:
    case: PolicyTestCase
    failures: list[str] = field(default_factory=list)
    result: AccountResult | None = None

    @property
    def passed(self) -> bool:
        return not self.failures


def _resolve_dates(entity: str, row: dict[str, Any], as_of: dt.date) -> dict[str, Any]:
    """Relative day numbers -> ISO dates (timestamps at noon UTC)."""
    spec = ENTITIES.get(entity)
    resolved = dict(row)
    if spec is None:
        return resolved
    for name, value in row.items():
        if isinstance(value, int) and not isinstance(value, bool) and name in spec.fields:
            if spec.fields[name].kind != Kind.DATE:
                continue
            day = as_of + dt.timedelta(days=value)
            resolved[name] = f"{day.isoformat()}T12:00:00Z" if name in spec.timestamps else day.isoformat()
    return resolved


def _expand_daily(spec: dict[str, Any], as_of: dt.date) -> list[dict[str, Any]]:
    first, last = spec["from"], spec["to"]
    values = {key: value for key, value in spec.items() if key not in ("from", "to")}
    return [{**values, "date": (as_of + dt.timedelta(days=offset)).isoformat()} for offset in range(first, last + 1)]


def _case_rows(sources: list[dict[str, Any]], as_of: dt.date, account_id: str) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {entity: [] for entity in ROW_ENTITIES}
    for source in sources:
        for key, entity in DAILY.items():
            for spec in source.get(key, ()):
                rows[entity].extend(_expand_daily(spec, as_of))
        for entity in ROW_ENTITIES:
            rows[entity].extend(source.get(entity, ()))
    for entity, entity_rows in rows.items():
        id_field = ENTITIES[entity].id_field
        for index, row in enumerate(entity_rows):
            filled = {"account_id": account_id, **_resolve_dates(entity, row, as_of)}
            if id_field is not None and id_field not in filled:
                filled[id_field] = f"{entity}-{index + 1}"
            if entity == "orders":
                filled.setdefault("acv", 0)
                filled.setdefault("products", [])
            entity_rows[index] = filled
    return rows


def read_test_file(name: str, raw: bytes) -> list[PolicyTestCase]:
    """Parse and validate one test file; raise `PolicyError` with every problem."""
    try:
        doc = read_yaml(name, raw)
    except YamlProblem as exc:
        raise PolicyError([exc.problem]) from None
    if not isinstance(doc.data, dict) or doc.data.get("kind") != "tests":
        raise PolicyError([doc.problem(("kind",), "a test file needs 'kind: tests'")])
    problems = schema_problems("tests", doc)
    if problems:
        raise PolicyError(problems)
    data = doc.data
    file_account = {**DEFAULT_ACCOUNT, **data.get("account", {})}
    base = data.get("base", {})
    cases = []
    for index, case in enumerate(data["cases"]):
        line, _ = doc.position(("cases", index))
        try:
            as_of = dt.date.fromisoformat(case.get("as_of", data.get("as_of", DEFAULT_AS_OF)))
        except ValueError as exc:
            raise PolicyError([doc.problem(("cases", index, "as_of"), str(exc))]) from None
        account = {**file_account, **case.get("account", {})}
        sources = ([base] if case.get("base", True) else []) + [case]
        rows = _case_rows(sources, as_of, str(account["id"]))
        cases.append(
            PolicyTestCase(name, line, case["name"], as_of, account, rows, case.get("facts", {}), case["expect"])
        )
    return cases


def _fact_value(policies: CompiledPolicies, name: str, value: Any) -> Any:
    fact_type = policies.account_fact_types.get(name)
    if fact_type is not None and fact_type.kind == Kind.DATE and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value


def evaluate_case(policies: CompiledPolicies, case: PolicyTestCase) -> tuple[AccountResult, dict[str, Any], list[str]]:
    """Evaluate one case; returns the result, the facts and any problems with the case itself."""
    snapshot, bad_rows = snapshot_from_rows(case.as_of, {"accounts": [case.account], **case.rows})
    problems = [f"the case's own data has a bad row: {bad}" for bad in bad_rows]
    if not snapshot.accounts:
        raise ValueError("; ".join(problems) or "the case has no valid account")
    evaluator = Evaluator(policies, case.as_of)
    account = snapshot.accounts[0]
    evaluator.add_account(account)
    for entity, row in snapshot.entity_rows():
        evaluator.add_row(entity, row)
    facts = evaluator.facts(account.id)
    for name, value in case.facts.items():
        if name not in policies.account_fact_types:
            problems.append(f"facts: unknown fact '{name}'")
            continue
        facts[name] = _fact_value(policies, name, value)
    return evaluator.bound.decide(facts), facts, problems


def check_case(policies: CompiledPolicies, case: PolicyTestCase) -> CaseOutcome:
    outcome = CaseOutcome(case)
    try:
        result, facts, problems = evaluate_case(policies, case)
    except ValueError as exc:
        outcome.failures.append(str(exc))
        return outcome
    outcome.result = result
    outcome.failures.extend(problems)
    outcome.failures.extend(_compare(policies, case.expect, result, facts))
    return outcome


def _compare(
    policies: CompiledPolicies, expect: Mapping[str, Any], result: AccountResult, facts: Mapping[str, Any]
) -> list[str]:
    failures = [f"evaluation error in {issue.where}: {issue.message}" for issue in result.errors]
    if "chi" in expect and result.chi != expect["chi"]:
        failures.append(f"chi: expected {expect['chi']}, got {result.chi} (sections {_rounded(result.sections)})")
    if "band" in expect and result.band != expect["band"]:
        failures.append(f"band: expected {expect['band']}, got {result.band} (chi {result.chi})")
    for section, want in expect.get("sections", {}).items():
        got = result.sections.get(section, "missing")
        if not isinstance(got, int | float) or abs(got - want) > SCORE_TOLERANCE:
            failures.append(f"sections.{section}: expected {want}, got {got}")
    for section, want in expect.get("coverage", {}).items():
        if result.coverage.get(section) != want:
            failures.append(f"coverage.{section}: expected {want}, got {result.coverage.get(section)}")
    failures.extend(_compare_reasons(expect.get("reasons", []), [reason.text for reason in result.reasons]))
    if "segments" in expect and sorted(expect["segments"]) != sorted(result.segments):
        failures.append(f"segments: expected {sorted(expect['segments'])}, got {sorted(result.segments)}")
    for name, want in expect.get("facts", {}).items():
        got = facts.get(name, "missing")
        want = _fact_value(policies, name, want)
        if isinstance(want, float) and isinstance(got, int | float) and abs(got - want) <= SCORE_TOLERANCE:
            continue
        if got != want:
            failures.append(f"facts.{name}: expected {want!r}, got {got!r}")
    failures.extend(_compare_tasks(expect, result))
    return failures


def _compare_reasons(wanted: list[str], texts: list[str]) -> list[str]:
    position = 0
    for text in wanted:
        try:
            position = texts.index(text, position) + 1
        except ValueError:
            where = "after the earlier expected reasons" if text in texts else "at all"
            return [f"reasons: {text!r} not found {where}; reasons were {texts}"]
    return []


def _compare_tasks(expect: Mapping[str, Any], result: AccountResult) -> list[str]:
    failures = []
    fired = result.tasks
    summary = [f"{task.rule}{':' + task.key if task.key else ''} {task.severity}" for task in fired]
    matched: set[int] = set()
    for want in expect.get("tasks", []):
        candidates = [
            index
            for index, task in enumerate(fired)
            if task.rule == want["rule"] and ("key" not in want or task.key == want["key"])
        ]
        if not candidates:
            failures.append(f"tasks: expected {want['rule']} {want.get('key', '')} to fire; fired: {summary}")
            continue
        task = fired[candidates[0]]
        matched.update(candidates)
        for name in ("severity", "title", "description"):
            if name in want and getattr(task, name) != want[name]:
                failures.append(f"tasks.{want['rule']}.{name}: expected {want[name]!r}, got {getattr(task, name)!r}")
        if "due_on" in want and task.due_on.isoformat() != want["due_on"]:
            failures.append(f"tasks.{want['rule']}.due_on: expected {want['due_on']}, got {task.due_on}")
    for unwanted in expect.get("no_tasks", []):
        rule, _, key = unwanted.partition(":")
        hits = [task for task in fired if task.rule == rule and (not key or task.key == key)]
        if hits:
            failures.append(f"tasks: {unwanted} must not fire, but fired ({hits[0].severity}: {hits[0].title})")
    if expect.get("only_listed_tasks"):
        extra = [summary[index] for index in range(len(fired)) if index not in matched]
        if extra:
            failures.append(f"tasks: only the listed tasks may fire; also fired: {extra}")
    return failures


def _rounded(sections: Mapping[str, float | None]) -> dict[str, float | None]:
    return {name: None if score is None else round(score, 3) for name, score in sections.items()}


def run_policy_tests(policies: CompiledPolicies, files: Mapping[str, bytes]) -> list[CaseOutcome]:
    """Run every case of every test file. Unreadable test files raise `PolicyError`."""
    outcomes: list[CaseOutcome] = []
    problems: list[Problem] = []
    for name in sorted(files):
        try:
            cases = read_test_file(name, files[name])
        except PolicyError as exc:
            problems.extend(exc.problems)
            continue
        outcomes.extend(check_case(policies, case) for case in cases)
    if problems:
        raise PolicyError(problems)
    return outcomes
