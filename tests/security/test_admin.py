"""Admin pages: invitations with one-time set-password links, roles, deactivation, re-authentication."""

from __future__ import annotations

import logging
import re
import time

import pytest
from itsdangerous import URLSafeTimedSerializer

from server.app import create_app
from server.db.models import User
from server.errors import Conflict
from server.services.audit import CLI
from server.services.users import SET_PASSWORD_SALT, change_role, set_active
from tests.security.helpers import (
    PASSWORD,
    SECRET_KEY,
    Browser,
    MovedClock,
    audit_events,
    database,
    enable_totp,
    location,
    running,
    seed_users,
    settings_for,
    user_row,
)

LINK = re.compile(r'value="https?://[^/]+(/login/invite/[^"]+)"')


async def test_invite_and_set_password_once(database_url: str) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"))
    async with running(database_url) as client:
        admin = Browser(client)
        await admin.login("admin@example.com")
        page = await admin.get("/admin/users")
        assert page.status_code == 200 and "Invite a user" in page.text
        response = await admin.post("/admin/users/invite", {"email": "new@example.com", "name": "New", "role": "csm"})
        assert response.status_code == 200, response.text
        link = LINK.search(response.text)
        assert link
        path = link[1]
        assert (await Browser(client).login("new@example.com")).status_code == 401  # no password yet

        newcomer = Browser(client)
        form = await newcomer.get(path)
        assert form.status_code == 200 and "new@example.com" in form.text
        weak = await newcomer.post(path, {"password": "password1234", "confirm": "password1234"})
        assert weak.status_code == 400 and "common" in weak.text
        differ = await newcomer.post(path, {"password": PASSWORD, "confirm": PASSWORD + "x"})
        assert differ.status_code == 400
        done = await newcomer.post(path, {"password": PASSWORD, "confirm": PASSWORD})
        assert done.status_code == 303 and location(done) == "/login?ok=password-set"
        assert newcomer.session is None  # a link never signs anyone in
        again = await newcomer.post(path, {"password": PASSWORD + "2", "confirm": PASSWORD + "2"})
        assert again.status_code == 404  # used up
        assert (await Browser(client).login("new@example.com")).status_code == 303
    user = await user_row(database_url, "new@example.com")
    assert user.role == "csm" and user.password_hash and user.password_hash.startswith("$argon2id$")
    actions = [event.action for event in await audit_events(database_url)]
    assert "user.invited" in actions and "user.password_set" in actions


async def test_set_password_links_expire_and_cannot_be_forged(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"), ("csm@example.com", "csm"))
    csm_id = (await user_row(database_url, "csm@example.com")).id
    async with running(database_url) as client:
        admin = Browser(client)
        await admin.login("admin@example.com")
        first = LINK.search((await admin.post(f"/admin/users/{csm_id}/password-link")).text)
        second = LINK.search((await admin.post(f"/admin/users/{csm_id}/password-link")).text)
        assert first and second
        assert (await Browser(client).get(first[1])).status_code == 404  # replaced by the newer one
        assert (await Browser(client).get(second[1])).status_code == 200
        forged = URLSafeTimedSerializer("not-the-secret", salt=SET_PASSWORD_SALT).dumps({"u": csm_id, "f": "x"})
        assert (await Browser(client).get(f"/login/invite/{forged}")).status_code == 404
        tampered = second[1][:-3] + ("AAA" if not second[1].endswith("AAA") else "BBB")
        assert (await Browser(client).get(tampered)).status_code == 404
        other_salt = URLSafeTimedSerializer(SECRET_KEY, salt="digest-link").dumps({"u": csm_id})
        assert (await Browser(client).get(f"/login/invite/{other_salt}")).status_code == 404
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 73 * 3600)
        assert (await Browser(client).get(second[1])).status_code == 404  # expired after 72 hours


async def test_role_changes_are_audited_and_end_sessions(database_url: str) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"), ("csm@example.com", "csm"))
    csm_id = (await user_row(database_url, "csm@example.com")).id
    admin_id = (await user_row(database_url, "admin@example.com")).id
    async with running(database_url) as client:
        admin, csm = Browser(client), Browser(client)
        await admin.login("admin@example.com")
        await csm.login("csm@example.com")
        response = await admin.post(f"/admin/users/{csm_id}/role", {"role": "manager"})
        assert response.status_code == 303 and location(response) == "/admin/users?ok=role"
        assert (await csm.get("/settings/security")).status_code == 302
        assert (await admin.post(f"/admin/users/{admin_id}/role", {"role": "viewer"})).status_code == 403
        assert (await admin.post(f"/admin/users/{admin_id}/deactivate")).status_code == 403
        assert (await admin.post(f"/admin/users/{csm_id}/role", {"role": "superuser"})).status_code == 400
        assert (await admin.post("/admin/users/999999/role", {"role": "csm"})).status_code == 404
    assert (await user_row(database_url, "csm@example.com")).role == "manager"
    changes = await audit_events(database_url, "user.role_changed")
    assert len(changes) == 1
    assert changes[0].before == {"role": "csm"} and changes[0].after == {"role": "manager"}
    assert changes[0].actor == "admin@example.com" and changes[0].object_id == "csm@example.com"
    assert changes[0].ip and changes[0].at.tzinfo is not None


async def test_sensitive_admin_actions_ask_to_confirm_identity(database_url: str, moved_clock: MovedClock) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"), ("csm@example.com", "csm"))
    csm_id = (await user_row(database_url, "csm@example.com")).id
    async with running(database_url) as client:
        admin = Browser(client)
        await admin.login("admin@example.com")
        moved_clock.seconds = 10 * 60
        page = await admin.post(
            f"/admin/users/{csm_id}/role", {"role": "admin"}, headers={"referer": "http://testserver.local/admin/users"}
        )
        assert page.status_code == 303 and location(page) == "/reauth?next=%2Fadmin%2Fusers"
        htmx = await admin.post(f"/admin/users/{csm_id}/role", {"role": "admin"}, headers={"hx-request": "true"})
        assert htmx.status_code == 403 and htmx.headers["hx-redirect"].startswith("/reauth?next=")
        api = await admin.post(f"/admin/users/{csm_id}/role", {"role": "admin"}, headers={"accept": "application/json"})
        assert api.status_code == 403 and api.json()["code"] == "reauth_required"
        export = await admin.get("/admin/audit/export?format=csv")
        assert export.status_code == 303 and location(export).startswith("/reauth?next=%2Fadmin%2Faudit%2Fexport")
        assert (await user_row(database_url, "csm@example.com")).role == "csm"
        prompt = await admin.get(location(page))
        assert prompt.status_code == 200 and 'name="password"' in prompt.text
        response = await admin.post("/reauth", {"password": PASSWORD, "next": "/admin/users"})
        assert response.status_code == 303 and location(response) == "/admin/users"
        done = await admin.post(f"/admin/users/{csm_id}/role", {"role": "viewer"})
        assert done.status_code == 303
    assert (await user_row(database_url, "csm@example.com")).role == "viewer"
    assert len(await audit_events(database_url, "auth.reauth")) == 1


async def test_ending_other_sessions_does_not_renew_the_confirmation(
    database_url: str, moved_clock: MovedClock
) -> None:
    """The session gets a new id, not a new proof of identity: a stale confirmation stays stale."""
    await seed_users(database_url, ("admin@example.com", "admin"), ("csm@example.com", "csm"))
    csm_id = (await user_row(database_url, "csm@example.com")).id
    async with running(database_url) as client:
        admin = Browser(client)
        await admin.login("admin@example.com")
        moved_clock.seconds = 10 * 60
        assert (await admin.post("/settings/security/sessions/end-others")).status_code == 303
        page = await admin.post(f"/admin/users/{csm_id}/role", {"role": "admin"})
        assert page.status_code == 303 and location(page).startswith("/reauth?next=")
    assert (await user_row(database_url, "csm@example.com")).role == "csm"


async def test_the_last_admin_stays(database_url: str) -> None:
    ids = await seed_users(database_url, ("admin@example.com", "admin"))
    async with database(database_url) as session:
        user = await session.get(User, ids["admin@example.com"])
        assert user is not None
        with pytest.raises(Conflict):
            await change_role(session, user, "csm", CLI, None)
        with pytest.raises(Conflict):
            await set_active(session, user, False, CLI, None)


async def test_users_can_see_and_end_their_other_sessions(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        laptop, phone = Browser(client), Browser(client)
        await laptop.login("csm@example.com")
        await phone.login("csm@example.com")
        page = await laptop.get("/settings/security")
        handles = re.findall(r"/settings/security/sessions/([0-9a-f]{16})/end", page.text)
        assert len(handles) == 1 and "this session" in page.text
        assert laptop.session and laptop.session not in page.text and phone.session not in page.text
        response = await laptop.post(f"/settings/security/sessions/{handles[0]}/end")
        assert response.status_code == 303
        assert (await phone.get("/settings/security")).status_code == 302
        assert (await laptop.get("/settings/security")).status_code == 200
        stranger = Browser(client)
        await stranger.login("csm@example.com")
        page = await stranger.get("/settings/security")
        assert "/sessions/" in page.text
        assert (await stranger.post("/settings/security/sessions/end-others")).status_code == 303
        assert (await laptop.get("/settings/security")).status_code == 302
        assert (await stranger.get("/settings/security")).status_code == 200


async def test_changing_the_password_signs_out_other_sessions(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        laptop, phone = Browser(client), Browser(client)
        await laptop.login("csm@example.com")
        await phone.login("csm@example.com")
        wrong = await laptop.post(
            "/settings/security/password",
            {
                "current_password": "nope nope nope",
                "new_password": "a brand new passphrase",
                "confirm": "a brand new passphrase",
            },
        )
        assert wrong.status_code == 400
        weak = await laptop.post(
            "/settings/security/password",
            {"current_password": PASSWORD, "new_password": "qwertyuiop123", "confirm": "qwertyuiop123"},
        )
        assert weak.status_code == 400 and "common" in weak.text
        response = await laptop.post(
            "/settings/security/password",
            {
                "current_password": PASSWORD,
                "new_password": "a brand new passphrase",
                "confirm": "a brand new passphrase",
            },
        )
        assert response.status_code == 303
        assert (await laptop.get("/settings/security")).status_code == 200
        assert (await phone.get("/settings/security")).status_code == 302
        assert (await Browser(client).login("csm@example.com")).status_code == 401
        assert (await Browser(client).login("csm@example.com", "a brand new passphrase")).status_code == 303


async def test_the_settings_page_shows_the_security_section(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        page = await browser.get("/settings")
        assert page.status_code == 200
        section = page.text.split('id="security"')[1]
        assert 'href="/settings/security"' in section and "Off" in section
        await enable_totp(browser)
        section = (await browser.get("/settings")).text.split('id="security"')[1]
        assert "10 recovery codes left" in section


@pytest.mark.parametrize("prefix", ["/login/invite/", "/go/"])  # set-password links, digest deep links
def test_link_tokens_stay_out_of_the_access_log(prefix: str) -> None:
    """uvicorn logs `client - "METHOD path HTTP/x" status`: the token in the path is redacted."""
    create_app(settings_for("sqlite+aiosqlite:///:memory:"))
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"{prefix}eyJ1Ijo0fQ.aBc-123_x?next=/", "1.1", 200), None,
    )  # fmt: skip
    assert logging.getLogger("uvicorn.access").filter(record)
    line = record.getMessage()
    assert "eyJ1Ijo0fQ" not in line and f"{prefix}[redacted]?next=/" in line
