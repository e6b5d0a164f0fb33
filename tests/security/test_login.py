"""Signing in and out, sessions and their timeouts, attempt limits: over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from server.db.models import SessionRecord
from server.web.limits import LOGIN_ACCOUNT
from tests.security.helpers import (
    PASSWORD,
    Browser,
    MovedClock,
    audit_events,
    database,
    location,
    running,
    seed_users,
    user_row,
)


async def test_sign_in_and_out(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        page = await browser.get("/login")
        assert page.status_code == 200 and 'name="_csrf_token"' in page.text
        assert browser.session is None  # an anonymous visit makes no session
        response = await browser.login("CSM@Example.com ", next="/settings/security")
        assert response.status_code == 303 and location(response) == "/settings/security"
        settings = await browser.get("/settings/security")
        assert settings.status_code == 200 and "csm@example.com" in settings.text
        response = await browser.post("/logout")
        assert response.status_code == 303 and location(response) == "/login?ok=signed-out"
        assert browser.session is None
        assert (await browser.get("/settings/security")).status_code == 302
    actions = [event.action for event in await audit_events(database_url)]
    assert actions[-2:] == ["auth.login", "auth.logout"]
    assert (await user_row(database_url, "csm@example.com")).last_login_at is not None


async def test_session_cookie_attributes(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url, CSM_BASE_URL="https://csm.example.com") as client:
        browser = Browser(client)
        await browser.csrf()
        response = await browser.post("/login", {"email": "csm@example.com", "password": PASSWORD})
        cookie = next(raw for raw in response.headers.get_list("set-cookie") if raw.startswith("csm_session="))
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "secure", "path"} <= attributes and "domain" not in attributes
        assert "samesite=lax" in cookie.lower()
        assert re.fullmatch(r"[0-9a-f]{64}", browser.session or "")  # 256 random bits
        csrf_cookie = (await Browser(client).get("/login")).headers["set-cookie"]
        assert "Secure" in csrf_cookie and "HttpOnly" in csrf_cookie and "SameSite=lax" in csrf_cookie
    async with running(database_url) as client:  # plain http (development): no Secure flag, or no cookie at all
        browser = Browser(client)
        await browser.csrf()
        response = await browser.post("/login", {"email": "csm@example.com", "password": PASSWORD})
        cookie = next(raw for raw in response.headers.get_list("set-cookie") if raw.startswith("csm_session="))
        assert "secure" not in cookie.lower() and "httponly" in cookie.lower()


async def test_unknown_email_and_wrong_password_get_the_same_answer(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"), ("gone@example.com", "csm"))
    async with database(database_url) as session:
        from server.db.models import User

        gone = await session.scalar(select(User).where(User.email == "gone@example.com"))
        assert gone is not None
        gone.active = False
    async with running(database_url) as client:
        answers = []
        for email, password in (
            ("csm@example.com", "wrong password here"),
            ("nobody@example.com", "wrong password here"),
            ("gone@example.com", PASSWORD),
        ):
            browser = Browser(client)
            response = await browser.post("/login", {"email": email, "password": password})
            body = response.text.replace(email, "EMAIL")
            body = re.sub(r'value="[0-9a-f]{128}"', "", body)
            body = re.sub(r'content="[0-9a-f]{128}"', "", body)
            answers.append((response.status_code, body, browser.session))
        assert len({answer[:2] for answer in answers}) == 1
        assert answers[0][0] == 401 and answers[0][2] is None
        assert "The email or the password is not right." in answers[0][1]
        empty = await Browser(client).post("/login", {"email": "", "password": ""})
        assert empty.status_code == 401
    failures = await audit_events(database_url, "auth.login_failed")
    assert [event.detail["reason"] for event in failures] == [
        "wrong password",
        "unknown email",
        "inactive",
        "unknown email",
    ]


@pytest.mark.real_hashing
async def test_unknown_email_takes_as_long_as_a_wrong_password(sqlite_url: str) -> None:
    """Timing: both spend one Argon2id verification (a dummy hash for unknown emails)."""
    import time

    await seed_users(sqlite_url, ("csm@example.com", "csm"))
    async with running(sqlite_url) as client:
        browser = Browser(client)
        await browser.csrf()

        async def timed(email: str) -> float:
            started = time.perf_counter()
            await browser.post("/login", {"email": email, "password": "not the password at all"})
            return time.perf_counter() - started

        known = sorted([await timed("csm@example.com") for _ in range(3)])[1]
        unknown = sorted([await timed(f"nobody{i}@example.com") for i in range(3)])[1]
        assert unknown > known * 0.5 and known > unknown * 0.5, (known, unknown)
        assert unknown > 0.03  # a real Argon2id verification happened


async def test_logout_ends_every_session_of_the_user(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        laptop, phone = Browser(client), Browser(client)
        await laptop.login("csm@example.com")
        await phone.login("csm@example.com")
        assert (await phone.get("/settings/security")).status_code == 200
        stolen = laptop.session
        await laptop.post("/logout")
        assert (await phone.get("/settings/security")).status_code == 302
        replay = Browser(client, cookies={"csm_session": stolen or ""})
        assert (await replay.get("/settings/security")).status_code == 302


async def test_idle_and_absolute_timeouts(database_url: str, moved_clock: MovedClock) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        idle = Browser(client)
        await idle.login("csm@example.com")
        moved_clock.seconds = 29 * 60
        assert (await idle.get("/settings/security")).status_code == 200  # activity renews the idle timer
        moved_clock.seconds = 29 * 60 + 29 * 60
        assert (await idle.get("/settings/security")).status_code == 200
        moved_clock.seconds = 29 * 60 + 29 * 60 + 31 * 60
        response = await idle.get("/settings/security")
        assert response.status_code == 302 and location(response).startswith("/login")

        moved_clock.seconds = 0
        busy = Browser(client)
        await busy.login("csm@example.com")
        for minutes in range(20, 12 * 60, 20):  # active every 20 minutes for 12 hours
            moved_clock.seconds = minutes * 60
            assert (await busy.get("/settings/security")).status_code == 200, minutes
        moved_clock.seconds = 12 * 3600 + 60
        assert (await busy.get("/settings/security")).status_code == 302


async def test_deactivated_users_live_session_dies(database_url: str) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"), ("csm@example.com", "csm"))
    ids = {"csm": (await user_row(database_url, "csm@example.com")).id}
    async with running(database_url) as client:
        admin, csm = Browser(client), Browser(client)
        await admin.login("admin@example.com")
        await csm.login("csm@example.com")
        assert (await csm.get("/settings/security")).status_code == 200
        response = await admin.post(f"/admin/users/{ids['csm']}/deactivate")
        assert response.status_code == 303, response.text
        assert (await csm.get("/settings/security")).status_code == 302
        again = await Browser(client).login("csm@example.com")
        assert again.status_code == 401


async def test_session_ids_never_come_from_the_client(database_url: str) -> None:
    """Fixation: an id chosen by an attacker is never stored, at sign-in or ever."""
    await seed_users(database_url, ("csm@example.com", "csm"))
    planted = "a" * 64
    async with running(database_url) as client:
        victim = Browser(client, cookies={"csm_session": planted})
        await victim.get("/login")
        await victim.login("csm@example.com")
        assert victim.session and victim.session != planted
        attacker = Browser(client, cookies={"csm_session": planted})
        assert (await attacker.get("/settings/security")).status_code == 302
    async with database(database_url) as session:
        keys = (await session.scalars(select(SessionRecord.key))).all()
    assert not any(planted in key for key in keys)
    assert all(key.startswith(("sessions:", "limits:")) for key in keys)


async def test_password_attempts_are_limited_per_account(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        for attempt in range(LOGIN_ACCOUNT.attempts):
            browser = Browser(client)
            response = await browser.post("/login", {"email": "csm@example.com", "password": f"guess {attempt}"})
            assert response.status_code == 401
        blocked = await Browser(client).post("/login", {"email": "csm@example.com", "password": PASSWORD})
        assert blocked.status_code == 429
        wait = int(blocked.headers["retry-after"])
        assert 0 < wait <= LOGIN_ACCOUNT.window
        assert re.search(r"Try again in \d+ s\.", blocked.text)
        assert blocked.cookies.get("csm_session") is None
        api = await Browser(client).post(
            "/login", {"email": "csm@example.com", "password": PASSWORD}, headers={"accept": "application/json"}
        )
        assert api.status_code == 429 and api.json()["retry_after"] > 0
    async with running(database_url) as client:  # a restart does not forget
        assert (await Browser(client).login("csm@example.com")).status_code == 429
    lockouts = await audit_events(database_url, "auth.lockout")
    assert len(lockouts) == 1 and lockouts[0].detail["limit"] == "login-account"
    assert lockouts[0].object_id == "csm@example.com"


async def test_attempt_limits_expire(sqlite_url: str, moved_clock: MovedClock) -> None:
    await seed_users(sqlite_url, ("csm@example.com", "csm"))
    async with running(sqlite_url) as client:
        for _ in range(LOGIN_ACCOUNT.attempts):
            await Browser(client).post("/login", {"email": "csm@example.com", "password": "wrong wrong wrong"})
        assert (await Browser(client).login("csm@example.com")).status_code == 429
        moved_clock.seconds = LOGIN_ACCOUNT.window + 1
        assert (await Browser(client).login("csm@example.com")).status_code == 303


async def test_password_attempts_are_limited_per_address(database_url: str) -> None:
    """Spraying many accounts from one address; X-Forwarded-For does not buy a fresh bucket."""
    from server.web.limits import LOGIN_ADDRESS

    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        for attempt in range(LOGIN_ADDRESS.attempts):
            response = await Browser(client).post(
                "/login",
                {"email": f"user{attempt}@example.com", "password": "Summer2026!!"},
                headers={"x-forwarded-for": f"203.0.113.{attempt}"},
            )
            assert response.status_code == 401
        response = await Browser(client).login("csm@example.com")
        assert response.status_code == 429
    lockouts = await audit_events(database_url, "auth.lockout")
    assert [event.detail["limit"] for event in lockouts] == ["login-address"]
