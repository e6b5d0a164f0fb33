"""`csm run` as an operator uses it: the run, then what goes out after it (digests, CRM)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connectors.demo import write_demo_snapshot
from server.cli import main
from tests.conftest import POLICY_DIR
from tests.hubspot_fake import FakeHubSpot, serving
from tests.security.helpers import seed_users
from tests.smtp import smtp_server


def invoke(*args: str) -> Result:
    with ThreadPoolExecutor(max_workers=1) as pool:  # the command calls asyncio.run
        return pool.submit(CliRunner().invoke, main, list(args)).result()


def test_a_run_sends_the_digests_and_the_crm_scores_once_and_says_so(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "snapshot"
    write_demo_snapshot(snapshot, accounts=30, seed=3, as_of=dt.date(2026, 12, 4))
    accounts = [json.loads(line) for line in (snapshot / "accounts.jsonl").read_text().splitlines()]
    csms = sorted({account["csm"] for account in accounts})
    asyncio.run(seed_users(sqlite_url, *((email, "csm") for email in csms)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    with smtp_server() as mailbox, serving(FakeHubSpot()) as hubspot:
        hubspot.companies = {account["crm_id"] for account in accounts if account.get("crm_id")}
        for name, value in {
            "CSM_DATABASE_URL": sqlite_url,
            "CSM_POLICY_DIR": str(POLICY_DIR),
            "CSM_SECRET_KEY": "test-secret-key-for-the-cli-run-0123456789",
            "CSM_CRM_URL": hubspot.url,
            "CSM_CRM_TOKEN": hubspot.token,
            **mailbox.env(),
        }.items():
            monkeypatch.setenv(name, value)
        first = invoke("run", "--snapshot", str(snapshot))
        assert first.exit_code == 0, first.output
        assert f"digests: done (sent {len(csms)})" in first.output
        crm_line = next(line for line in first.output.splitlines() if line.startswith("CRM write-back:"))
        assert crm_line.startswith("CRM write-back: done (") and f"pushed {len(hubspot.companies)}," in crm_line
        again = invoke("run", "--snapshot", str(snapshot), "--force")
        assert again.exit_code == 0, again.output
        assert f"digests: done (skipped {len(csms)})" in again.output  # one per CSM per day
        assert f"unchanged {len(hubspot.companies)}" in again.output and "pushed 0," in again.output
    assert sorted(message["To"] for message in mailbox.messages) == csms
    assert len(hubspot.updates) == len(hubspot.companies)


def test_a_run_without_smtp_or_crm_says_what_to_configure(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "snapshot"
    write_demo_snapshot(snapshot, accounts=10, seed=3, as_of=dt.date(2026, 12, 4))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CSM_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CSM_POLICY_DIR", str(POLICY_DIR))
    result = invoke("run", "--snapshot", str(snapshot))
    assert result.exit_code == 0, result.output
    assert "digests: off, no SMTP server configured (CSM_SMTP_HOST)" in result.output
    assert "CRM write-back: off, no CRM configured (CSM_CRM_URL)" in result.output


def test_deliver_sends_what_a_run_could_not_once_smtp_is_configured(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "snapshot"
    write_demo_snapshot(snapshot, accounts=12, seed=4, as_of=dt.date(2026, 12, 4))
    csms = sorted({json.loads(line)["csm"] for line in (snapshot / "accounts.jsonl").read_text().splitlines()})
    asyncio.run(seed_users(sqlite_url, *((email, "csm") for email in csms)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CSM_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CSM_POLICY_DIR", str(POLICY_DIR))
    assert "digests: off" in invoke("run", "--snapshot", str(snapshot)).output  # no SMTP yet
    missing = invoke("deliver", "--run", "99")
    assert missing.exit_code == 1 and "no succeeded run 99" in missing.output
    with smtp_server() as mailbox:
        for name, value in mailbox.env().items():
            monkeypatch.setenv(name, value)
        delivered = invoke("deliver")
        assert delivered.exit_code == 0, delivered.output
        assert delivered.output.startswith("run 1\n") and f"digests: done (sent {len(csms)})" in delivered.output
        assert "digests: done (skipped" in invoke("deliver", "--run", "1").output  # once a day
    assert sorted(message["To"] for message in mailbox.messages) == csms
