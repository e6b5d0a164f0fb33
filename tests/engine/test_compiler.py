"""Policies are data: new rules and sections are YAML changes, and mistakes are found at load."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine import PolicyError, evaluate, load_policies
from engine.snapshot import snapshot_from_rows
from tests.conftest import POLICY_DIR

AS_OF = dt.date(2026, 12, 4)


def default_files() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in POLICY_DIR.glob("*.yaml")}


def with_appended(name: str, text: str) -> dict[str, bytes]:
    files = default_files()
    files[name] = files[name] + text.encode()
    return files


def one_customer(**rows: list[dict]) -> list:
    account = {"id": "acc-1", "name": "Acme", "tier": "T1", "csm": "a@example.com", "acv": 1000, "currency": "EUR"}
    full = {"accounts": [account], **{e: [{"account_id": "acc-1", **r} for r in rs] for e, rs in rows.items()}}
    snapshot, bad = snapshot_from_rows(AS_OF, full)
    assert bad == []
    return snapshot


THIRTEENTH_RULE = """
  - id: many-urgent-tickets
    name: Many urgent tickets
    category: Churn Risk
    params: {limit: 2}
    when: "open_high_tickets >= limit"
    severity: High
    title: "{open_high_tickets} urgent tickets open"
    description: "Escalate: {open_high_tickets|count:open high-priority ticket}"
    due_in_days: 2
"""


def test_a_thirteenth_rule_is_a_yaml_change() -> None:
    policies = load_policies(with_appended("rules.yaml", THIRTEENTH_RULE))
    tickets = [{"id": f"t{i}", "opened_at": "2026-12-01T09:00:00Z", "priority": "urgent"} for i in range(3)]
    [result] = evaluate(policies, one_customer(tickets=tickets))
    [task] = [t for t in result.tasks if t.rule == "many-urgent-tickets"]
    assert task.severity == "High"
    assert task.title == "3 urgent tickets open"
    assert task.description == "Escalate: 3 open high-priority tickets"
    assert task.due_on == dt.date(2026, 12, 6)
    assert task.thresholds == {"limit": 2}
    assert task.evidence == {"open_high_tickets": 3}


SEVENTH_SECTION = """
  - id: adoption
    name: Product adoption
    weight: 10
    score: "100 * contracted_products / 3"
    why:
      - text: "{contracted_products} of 3 products contracted"
"""


def test_a_seventh_section_is_a_yaml_change() -> None:
    policies = load_policies(with_appended("chi.yaml", SEVENTH_SECTION))
    assert [s.id for s in policies.sections][-1] == "adoption"
    [result] = evaluate(policies, one_customer())
    assert result.sections["adoption"] == 0
    assert "0 of 3 products contracted" in [r.text for r in result.reasons]
    # Now out of 110 points: the new section's weight counts.
    assert result.points_lost["adoption"] == pytest.approx(10 * 100 / 110)


def test_a_new_derived_fact_and_collection_item_fact() -> None:
    files = default_files()
    files["facts.yaml"] = (
        files["facts.yaml"].replace(
            b"      usage_ratio:",
            b"      peak_used_30: {max: usage.used, window: 30}\n      usage_ratio:",
        )
        + b"  logins_30: {sum: activity.logins, window: 30}\n"
    )
    policies = load_policies(files)
    usage = [
        {"product": "VM", "date": f"2026-11-{d:02d}", "used": d, "scans": 0, "failed_scans": 0} for d in range(1, 31)
    ]
    activity = [
        {"date": "2026-11-01", "logins": 5, "active_users": 1},
        {"date": "2026-12-04", "logins": 7, "active_users": 2},
    ]
    snapshot = one_customer(usage=usage, activity=activity)
    from engine import Evaluator

    evaluator = Evaluator(policies, AS_OF)
    evaluator.add_account(snapshot.accounts[0])
    for entity, row in snapshot.entity_rows():
        evaluator.add_row(entity, row)
    facts = evaluator.facts("acc-1")
    assert facts["logins_30"] == 7  # 2026-11-01 is outside the last 30 days
    assert facts["products"][0]["peak_used_30"] == 30


@pytest.mark.parametrize(
    ("file", "old", "new", "fragment", "line"),
    [
        (
            "rules.yaml",
            b'level: High}\n      - {when: "days_to_renewal <= medium',
            b'level: high}\n      - {when: "days_to_renewal <= medium',
            "rules[0].severity[0].level: expected one of High, Medium, Low, got 'high'",
            30,
        ),
        (
            "rules.yaml",
            b'    when: "overdue_invoices > 0"',
            b'    whne: "overdue_invoices > 0"',
            "unknown field 'whne' (did you mean 'when'?)",
            41,
        ),
        (
            "rules.yaml",
            b"category: Commercial\n    params: {high_after_days",
            b"category: Commerce\n    params: {high_after_days",
            "expected one of Commercial, Churn Risk, Product Usage, Company Risk (the file's categories), "
            "got 'Commerce'",
            39,
        ),
        (
            "chi.yaml",
            b"requires: [latest_sentiment]",
            b"requires: [latest_sentimnt]",
            "unknown name 'latest_sentimnt' in requires",
            None,
        ),
        (
            "facts.yaml",
            b'{count: tickets, where: "open and high_priority"}',
            b'{count: ticket, where: "open and high_priority"}',
            "unknown entity or collection 'ticket'",
            None,
        ),
        (
            "facts.yaml",
            b"{sum: usage.used, window: 30}",
            b"{sum: usage.usd, window: 30}",
            "'usage' has no field 'usd'",
            None,
        ),
        ("bands.yaml", b"min: 0", b"min: 10", "the lowest band must start at 0", None),
        (
            "tiers.yaml",
            b"meeting_cadence_days: 180",
            b"meeting_cadence_days: 180\n      qbr_per_year: 1",
            "every tier must define the same properties; T4 differs in qbr_per_year",
            None,
        ),
        (
            "tiers.yaml",
            b"meeting_cadence_days: 180",
            b"meeting_cadnce_days: 180",
            "missing required field 'meeting_cadence_days'",
            None,
        ),
        (
            "rules.yaml",
            b'      - {level: Low}\n    title: "{overdue',
            b'      - {when: "True", level: Low}\n    title: "{overdue',
            "the last severity case must have no 'when': it is the default",
            45,
        ),
        ("rules.yaml", b'when: "overdue_invoices > 0"', b'when: "true"', "unknown name 'true'", None),
        (
            "rules.yaml",
            b'title: "Renewal in {days_to_renewal|count:day}"',
            b'title: "Renewal in {days_to_renewl}"',
            "unknown name 'days_to_renewl' in template (did you mean 'days_to_renewal'?)",
            None,
        ),
        (
            "rules.yaml",
            b'title: "Renewal in {days_to_renewal|count:day}"',
            b'title: "Renewal in {days_to_renewal|evil}"',
            "unknown filter 'evil'",
            None,
        ),
        ("chi.yaml", b"    weight: 50", b"    weight: -50", "must be greater than 0", None),
    ],
)
def test_mistakes_are_located_and_explained(file: str, old: bytes, new: bytes, fragment: str, line: int | None) -> None:
    files = default_files()
    assert old in files[file], old
    files[file] = files[file].replace(old, new, 1)
    with pytest.raises(PolicyError) as caught:
        load_policies(files)
    problems = [p for p in caught.value.problems if fragment in str(p)]
    assert problems, [str(p) for p in caught.value.problems]
    assert problems[0].file == file
    assert problems[0].line is not None
    if line is not None:
        assert problems[0].line == line


def test_every_problem_is_reported() -> None:
    files = default_files()
    files["chi.yaml"] = files["chi.yaml"].replace(b"days_since_meeting <= cadence", b"days_since_meeting <= cadense")
    files["chi.yaml"] = files["chi.yaml"].replace(b"nps_mean >= 9 else", b"nps_mean >= 'nine' else")
    files["segments.yaml"] = files["segments.yaml"].replace(b"tier == 'T1'", b"tier == 1")
    with pytest.raises(PolicyError) as caught:
        load_policies(files)
    messages = [str(p) for p in caught.value.problems]
    assert len(messages) == 3, messages
    assert any("did you mean 'cadence'" in m for m in messages)
    assert any("cannot compare number with text" in m for m in messages)
    assert any(m.startswith("segments.yaml:") and "cannot compare text with number" in m for m in messages)


def test_the_content_hash_ignores_comments_and_formatting() -> None:
    files = default_files()
    reformatted = dict(files)
    reformatted["bands.yaml"] = b"# a comment\n" + files["bands.yaml"].replace(b"min: 75", b"min:   75")
    assert load_policies(files).content_hash == load_policies(reformatted).content_hash
    changed = dict(files)
    changed["bands.yaml"] = files["bands.yaml"].replace(b"min: 75", b"min: 76")
    assert load_policies(files).content_hash != load_policies(changed).content_hash


def test_a_missing_kind_is_reported(tmp_path: Path) -> None:
    files = default_files()
    del files["chi.yaml"]
    with pytest.raises(PolicyError, match="no 'chi' policy file"):
        load_policies(files)


def test_a_disabled_rule_never_fires() -> None:
    files = default_files()
    files["rules.yaml"] = files["rules.yaml"].replace(
        b"  - id: no-active-order\n", b"  - id: no-active-order\n    enabled: false\n"
    )
    policies = load_policies(files)
    [result] = evaluate(policies, one_customer())
    assert "no-active-order" not in {t.rule for t in result.tasks}
    assert {r.id: r.enabled for r in policies.rules}["no-active-order"] is False


def test_runtime_errors_are_contained_per_rule() -> None:
    files = with_appended(
        "rules.yaml",
        """
  - id: ratio-rule
    name: Ratio
    category: Churn Risk
    when: "inactive_scanners / scanners > 0.5"
    severity: Low
    title: "t"
    description: "d"
""",
    )
    policies = load_policies(files)
    [result] = evaluate(policies, one_customer())  # no scanners: 0 / 0
    assert result.failed_rules == ["ratio-rule"]
    assert result.errors[0].where == "rules[12] (ratio-rule)"
    assert "ZeroDivisionError" in result.errors[0].message
    assert result.chi is not None  # everything else still evaluated
    assert {t.rule for t in result.tasks} >= {"no-active-order", "meeting-follow-up-gap"}


def test_unknown_tier_fails_the_customer_not_the_run() -> None:
    files = default_files()
    files["tiers.yaml"] = files["tiers.yaml"].split(b"  - code: T4")[0]
    policies = load_policies(files)
    snapshot = one_customer()
    snapshot.accounts[0].tier = "T4"
    [result] = evaluate(policies, snapshot)
    assert result.chi is None
    assert "KeyError" in result.errors[0].message
    assert set(result.failed_rules) == {rule.id for rule in policies.rules}
