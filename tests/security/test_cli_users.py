"""`csm users ...` and `csm demo`: the demo still starts with one command, prints its users'
credentials, and those users can sign in (without two-factor unless an admin requires it)."""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from server.cli import DEMO_PASSWORD, main
from tests.conftest import POLICY_DIR
from tests.security.helpers import Browser, audit_events, enable_totp, location, running, seed_users, user_row
from tests.smtp import smtp_server


@pytest.fixture
def cli_env(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    env = {
        "CSM_DATABASE_URL": sqlite_url,
        "CSM_POLICY_DIR": str(POLICY_DIR),
        "CSM_SECRET_KEY": "test-secret-key-for-the-security-suite-0123456789",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables on one line
    return env


def invoke(*args: str) -> Result:
    """`csm ARGS` in a thread of its own: the commands call asyncio.run, which refuses to run in a
    thread where an event loop is already running (Playwright's sync API leaves one in this one)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(CliRunner().invoke, main, list(args)).result()


def run(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


async def test_demo_prints_credentials_that_work(
    cli_env: dict[str, str], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server() as mailbox:  # an SMTP server configured: the demo CSMs get today's digest
        for name, value in mailbox.env().items():
            monkeypatch.setenv(name, value)
        output = run("demo", "--accounts", "25", "--no-serve")
    assert DEMO_PASSWORD in output
    recipients = sorted(message["To"] for message in mailbox.messages)
    assert recipients and all(email.endswith("@demo.csm") for email in recipients)
    assert f"digests: done (sent {len(recipients)})" in output
    for email in ("admin@demo.csm", "ops@demo.csm", "manager@demo.csm", "viewer@demo.csm"):
        assert email in output
    csm_email = re.search(r"([a-z]+\.[a-z]+@demo\.csm)", output)
    assert csm_email
    again = run("demo", "--accounts", "25", "--no-serve")  # a second run keeps the users
    assert DEMO_PASSWORD in again

    async with running(sqlite_url) as client:
        for email in ("admin@demo.csm", csm_email[1]):
            browser = Browser(client)
            response = await browser.post("/login", {"email": email, "password": DEMO_PASSWORD})
            assert response.status_code == 303 and location(response) == "/", email
            assert (await browser.get("/settings/security")).status_code == 200


async def test_users_commands(cli_env: dict[str, str], sqlite_url: str) -> None:
    run("users", "create", "root@example.com", "--role", "admin", "--password", "a long admin passphrase")
    refused = invoke("users", "create", "x@example.com", "--role", "csm", "--password", "password1234")
    assert refused.exit_code == 1 and "common" in refused.output
    output = run("users", "invite", "new@example.com", "--role", "viewer", "--name", "New Person")
    link = re.search(r"(http://\S+/login/invite/\S+)", output)
    assert link
    run("users", "set-role", "new@example.com", "manager")
    listing = run("users", "list")
    assert "new@example.com" in listing and "manager" in listing and "invited" in listing
    run("users", "require-2fa", "--role", "admin")
    assert "required, not set up" in run("users", "list")
    run("users", "reset-2fa", "root@example.com")
    run("users", "deactivate", "new@example.com")
    assert "deactivated" in run("users", "list")
    run("users", "activate", "new@example.com")
    run("users", "require-2fa", "--none")
    missing = invoke("users", "set-role", "ghost@example.com", "csm")
    assert missing.exit_code == 1 and "no user" in missing.output

    user = await user_row(sqlite_url, "new@example.com")
    assert user.role == "manager" and user.active
    actions = [event.action for event in await audit_events(sqlite_url) if event.actor == "cli"]
    assert actions == [
        "user.created",
        "user.invited",
        "user.role_changed",
        "settings.2fa_requirement_changed",
        "user.2fa_reset",
        "user.deactivated",
        "user.activated",
        "settings.2fa_requirement_changed",
    ]
    assert os.environ["CSM_DATABASE_URL"] == sqlite_url


async def test_reseal_2fa_keeps_two_factor_working_across_a_key_change(
    cli_env: dict[str, str], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_key = "the-next-secret-key-for-the-security-suite-987654321"
    await seed_users(sqlite_url, ("ann@example.com", "csm"), ("bob@example.com", "csm"))
    seeds = {}
    async with running(sqlite_url) as client:  # the current key: cli_env's CSM_SECRET_KEY
        for email in ("ann@example.com", "bob@example.com"):
            browser = Browser(client)
            assert (await browser.login(email)).status_code == 303
            seeds[email], _, _ = await enable_totp(browser)
    monkeypatch.setenv("CSM_SECRET_KEY", new_key)

    refused = invoke("users", "reseal-2fa")  # the previous key is required
    assert refused.exit_code == 1 and "CSM_PREVIOUS_SECRET_KEY" in refused.output
    monkeypatch.setenv("CSM_PREVIOUS_SECRET_KEY", "not-the-key-they-were-sealed-with-at-all-0000")
    wrong = invoke("users", "reseal-2fa")
    assert wrong.exit_code == 1
    assert "2 two-factor seeds open under neither key (ann@example.com, bob@example.com)" in wrong.output
    assert "nothing was changed" in wrong.output
    before = (await user_row(sqlite_url, "ann@example.com")).totp_secret

    monkeypatch.setenv("CSM_PREVIOUS_SECRET_KEY", cli_env["CSM_SECRET_KEY"])
    assert "2 two-factor seeds sealed under the new key (0 already were)" in run("users", "reseal-2fa")
    assert "0 two-factor seeds sealed under the new key (2 already were)" in run("users", "reseal-2fa")
    assert (await user_row(sqlite_url, "ann@example.com")).totp_secret != before
    events = await audit_events(sqlite_url, "settings.2fa_seeds_resealed")
    assert [event.detail for event in events] == [{"resealed": 2, "already": 0}, {"resealed": 0, "already": 2}]

    async with running(sqlite_url, CSM_SECRET_KEY=new_key) as client:  # the server under the new key
        for email, secret in seeds.items():
            browser = Browser(client)
            signed_in = await browser.login(email, secret=secret, at=time.time() + 30)  # a step not used yet
            assert (signed_in.status_code, location(signed_in)) == (303, "/"), email
