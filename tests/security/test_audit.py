"""The audit log: what is recorded, searching it, exporting it, and what never gets into it."""

from __future__ import annotations

import ast
import csv
import io
import json
import logging

import pyotp
import pytest
from sqlalchemy import text

from server.services.audit import ACTIONS, record
from tests.conftest import ROOT
from tests.security.helpers import (
    PASSWORD,
    Browser,
    audit_events,
    database,
    enable_totp,
    running,
    seed_users,
    user_row,
)


async def test_search_the_audit_log(database_url: str) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"), ("csm@example.com", "csm"))
    async with database(database_url) as session:
        for index in range(60):
            await record(
                session,
                "task.state_changed",
                actor="csm@example.com",
                object_type="task",
                object_id=f"task-{index}",
                before={"state": "not_started"},
                after={"state": "started"},
            )
        await record(session, "policy.published", actor="ops@example.com", object_type="policy", object_id="v7")
    async with running(database_url) as client:
        admin = Browser(client)
        await admin.login("admin@example.com")
        await Browser(client).post("/login", {"email": "csm@example.com", "password": "wrong wrong wrong"})

        async def table(url: str) -> str:
            response = await admin.get(url)
            assert response.status_code == 200, response.text
            return response.text.split("<tbody>")[1]

        page = await admin.get("/admin/audit")
        assert page.status_code == 200 and page.text.count("<tr>") == 51  # header + a page of 50
        assert "Older events" in page.text
        older = await admin.get("/admin/audit?before=10")
        assert older.status_code == 200
        by_actor = await table("/admin/audit?actor=ops@")
        assert "policy.published" in by_actor and "task.state_changed" not in by_actor
        by_area = await table("/admin/audit?action=auth.")
        assert "auth.login_failed" in by_area and "task.state_changed" not in by_area
        by_object = await table("/admin/audit?object=task-42")
        assert "task-42" in by_object and "task-41" not in by_object
        by_outcome = await table("/admin/audit?outcome=failed")
        assert "auth.login_failed" in by_outcome and "auth.login<" not in by_outcome
        future = await table("/admin/audit?since=2999-01-01")
        assert "Nothing matches." in future
        today = await table("/admin/audit?until=2999-01-01&since=2000-01-01&action=policy.published")
        assert "v7" in today
        bad = await admin.get("/admin/audit?since=yesterday")
        assert bad.status_code == 400
        escaped = await table("/admin/audit?actor=%25")
        assert "Nothing matches." in escaped  # % is a character, not a wildcard


async def test_export_csv_and_json_lines(database_url: str) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"))
    async with database(database_url) as session:
        await record(
            session,
            "tag.created",
            actor='=HYPERLINK("http://evil")',
            object_type="tag",
            object_id="+1",
            after={"name": "@risk"},
        )
    async with running(database_url) as client:
        admin = Browser(client)
        await admin.login("admin@example.com")
        response = await admin.get("/admin/audit/export?format=csv&action=tag.created")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"].startswith('attachment; filename="audit-')
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert len(rows) == 1
        assert rows[0]["actor"].startswith("'=")  # no formula for the spreadsheet
        assert rows[0]["object_id"] == "'+1"
        assert json.loads(rows[0]["after"]) == {"name": "@risk"}
        lines = await admin.get("/admin/audit/export?format=jsonl&actor=admin@example.com")
        assert lines.status_code == 200
        events = [json.loads(line) for line in lines.text.splitlines()]
        assert {event["action"] for event in events} >= {"auth.login"}
        assert all(event["at"].endswith("+00:00") for event in events)
        empty = await admin.get("/admin/audit/export?format=csv&since=2999-01-01")
        assert (
            empty.text.strip() == "id,at,actor,action,object_type,object_id,outcome,ip,user_agent,before,after,detail"
        )
        assert (await admin.get("/admin/audit/export?format=xml")).status_code == 400
    exports = await audit_events(database_url, "audit.exported")
    assert [event.detail["format"] for event in exports] == ["csv", "jsonl", "csv"]
    assert exports[0].detail["filters"] == {"action": "tag.created"}


async def test_refusals_are_audited(database_url: str) -> None:
    await seed_users(database_url, ("viewer@example.com", "viewer"))
    async with running(database_url) as client:
        viewer = Browser(client)
        await viewer.login("viewer@example.com")
        assert (await viewer.get("/admin/users")).status_code == 403
        assert (await viewer.request("POST", "/settings/security/sessions/end-others", data={})).status_code == 403
        assert (await Browser(client).get("/admin/users")).status_code == 302  # anonymous: not audited
    denied = await audit_events(database_url, "access.denied")
    assert [(event.actor, event.detail["path"], event.outcome) for event in denied] == [
        ("viewer@example.com", "/admin/users", "denied"),
        ("viewer@example.com", "/settings/security/sessions/end-others", "denied"),
    ]
    assert "CSRF" in denied[1].detail["reason"]


async def test_no_secrets_reach_the_database_logs_or_audit(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Passwords, TOTP secrets and codes, recovery codes, session ids and CSRF tokens stay out."""
    caplog.set_level(logging.DEBUG)
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        secret, codes, _ = await enable_totp(browser)
        await browser.post("/logout")
        await browser.post("/login", {"email": "csm@example.com", "password": "my wrong password 1"})
        await browser.login("csm@example.com")
        totp_code = pyotp.TOTP(secret).now()
        await browser.post("/login/2fa", {"code": "000000"})
        await browser.post("/login/recovery", {"code": codes[3]})
        session_id, csrf = browser.session, browser.cookies["csm_csrf"]
        await browser.post(
            "/settings/security/password",
            {"current_password": PASSWORD, "new_password": "another long passphrase", "confirm": "x"},
        )
    async with database(database_url) as session:
        dump = []
        for table in ("audit_event", "app_user", "setting"):
            rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()
            dump.extend(str(row) for row in rows)
    everything = "\n".join(dump) + "\n" + caplog.text
    secret_row = (await user_row(database_url, "csm@example.com")).totp_secret
    for value in (PASSWORD, "my wrong password 1", "another long passphrase", codes[3], session_id, csrf, totp_code):
        assert value and value not in everything.replace(secret_row or "", ""), value
    audit_text = "\n".join(str(vars(event)) for event in await audit_events(database_url))
    assert secret not in audit_text and "argon2" not in audit_text


async def test_audit_records_refuse_secret_fields() -> None:
    class Session:
        def add(self, _event: object) -> None: ...

        async def flush(self) -> None: ...

    for field in ("password", "new_password", "totp_secret", "recovery_code", "session_id", "csrf_token"):
        with pytest.raises(ValueError, match="may not carry"):
            await record(Session(), "user.test", actor="x", detail={field: "1"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"area\.event"):
        await record(Session(), "Bad Action", actor="x")  # type: ignore[arg-type]
    assert all("." in name for name in ACTIONS)


def recorded_action_names() -> dict[str, str]:
    """Every action name the code passes to the audit functions, with where it is."""
    auditing = {"record", "record_as", "audit_now"}
    found: dict[str, str] = {}
    for path in [*(ROOT / "server").rglob("*.py"), *(ROOT / "console").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in auditing:
                continue
            for argument in node.args[:3]:
                for name in literal_strings(argument):
                    if "." in name:
                        found[name] = f"{path.relative_to(ROOT)}:{node.lineno}"
    return found


def literal_strings(node: ast.expr) -> list[str]:
    """The string literals an argument can be (`"a.b" if x else "a.c"`); f-strings are left out."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return literal_strings(node.body) + literal_strings(node.orelse)
    return []


def test_every_action_the_code_records_is_documented() -> None:
    recorded = recorded_action_names()
    assert len(recorded) >= 30  # the scan finds the calls
    undocumented = {name: where for name, where in recorded.items() if name not in ACTIONS}
    assert not undocumented, f"add these to ACTIONS and docs/security.md: {undocumented}"
    security = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert [name for name in ACTIONS if f"`{name}`" not in security] == []
