"""`csm policy validate | test | dry-run` as an operator uses them."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import msgspec
from click.testing import CliRunner

from connectors.demo import write_demo_snapshot
from server.cli import main
from tests.conftest import POLICY_DIR


def test_validate_ok() -> None:
    result = CliRunner().invoke(main, ["policy", "validate", str(POLICY_DIR)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    assert "12 rules" in result.output


def test_validate_prints_every_problem_and_fails(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, folder)
    rules = folder / "rules.yaml"
    rules.write_text(
        rules.read_text().replace("level: High}", "level: high}").replace("severity: Low\n", "severity: low\n")
    )
    result = CliRunner().invoke(main, ["policy", "validate", str(folder)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("rules.yaml:")]
    assert len(lines) == 10, result.output
    assert (
        "rules.yaml:30:62: rules[0].severity[0].level: expected one of High, Medium, Low, got 'high'" in result.output
    )
    assert "10 problems found" in result.output


def test_policy_test_runs_the_cases() -> None:
    result = CliRunner().invoke(main, ["policy", "test", str(POLICY_DIR)])
    assert result.exit_code == 0, result.output
    assert "failed  0" in result.output


def test_policy_test_reports_a_failing_case(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, folder)
    rules = folder / "rules.yaml"
    rules.write_text(rules.read_text().replace("horizon_days: 90", "horizon_days: 89"))
    result = CliRunner().invoke(main, ["policy", "test", str(folder)])
    assert result.exit_code == 1
    assert "FAIL" in result.output
    assert "renewal exactly 90 days away fires Low" in result.output


def test_dry_run_reports_changes(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    write_demo_snapshot(snapshot, accounts=150, seed=5, as_of=dt.date(2026, 12, 4))
    draft = tmp_path / "draft"
    shutil.copytree(POLICY_DIR, draft)
    rules = draft / "rules.yaml"
    rules.write_text(rules.read_text().replace("horizon_days: 90", "horizon_days: 150"))
    result = CliRunner().invoke(main, ["policy", "dry-run", str(draft), "--snapshot", str(snapshot), "--json"])
    assert result.exit_code == 0, result.output
    report = msgspec.json.decode(result.output)
    assert report["customers"] == 150
    assert report["appear"] > 0
    assert report["disappear"] == 0
    assert {rule["rule"] for rule in report["rules"] if rule["appear"]} == {"renewal-upcoming"}
    text = CliRunner().invoke(main, ["policy", "dry-run", str(draft), "--snapshot", str(snapshot)])
    assert "renewal-upcoming" in text.output
    assert "customers compared" in text.output
