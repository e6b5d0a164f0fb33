"""The hostile-request suite: what an attacker (or a curious colleague) sends, and what must come back.

Run against the app on SQLite and on PostgreSQL through a real HTTP client. The object-level cases
walk the route table: every route that names a customer, a task or another user's object in its
path is tried with another CSM's ids, so routes added later are attacked without editing this file
(a path parameter this suite does not know makes it fail, so that someone teaches it).
"""

from __future__ import annotations

import re
import time
from typing import Any

import pyotp
import pytest
from sqlalchemy import func, select

from server.db.models import Account, SavedFilter, SentimentEntry, TaskState, User
from server.web import clock
from server.web.access import Role
from tests.security.helpers import (
    PASSWORD,
    Browser,
    audit_events,
    database,
    enable_totp,
    location,
    running,
    seed_customers,
    seed_users,
    user_row,
)
from tests.security.routes import STATE_CHANGING, RouteCase, concrete, route_cases

# ── session fixation ────────────────────────────────────────────────────────────────────


async def test_fixation_new_id_after_password_and_again_after_the_code(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        setup = Browser(client)
        await setup.login("csm@example.com")
        secret, _codes, _ = await enable_totp(setup)
        await setup.post("/logout")

        planted = "f" * 64
        victim = Browser(client, cookies={"csm_session": planted})
        await victim.get("/login")
        response = await victim.post("/login", {"email": "csm@example.com", "password": PASSWORD})
        assert location(response) == "/login/2fa"
        after_password = victim.session
        assert after_password and after_password != planted
        response = await victim.post("/login/2fa", {"code": pyotp.TOTP(secret).at(time.time() + 30)})
        assert response.status_code == 303
        after_code = victim.session
        assert after_code and after_code not in (planted, after_password)
        assert (await victim.get("/settings/security")).status_code == 200
        for old in (planted, after_password):
            attacker = Browser(client, cookies={"csm_session": old})
            assert (await attacker.get("/settings/security")).status_code == 302
            assert (await attacker.get("/login/2fa")).status_code == 303  # not even a pending sign-in


@pytest.mark.parametrize("planted", ["sessions:x", "user-1", "limits:login-account:abc", "../../etc", "null", "A" * 64])
async def test_fixation_a_cookie_cannot_name_a_store_key(database_url: str, planted: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        victim = Browser(client, cookies={"csm_session": planted})
        await victim.login("csm@example.com")
        assert victim.session != planted
        assert (await Browser(client, cookies={"csm_session": planted}).get("/settings/security")).status_code == 302


# ── one-time codes ──────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("variant", ["same", "full-width", "spaced", "older"])
async def test_a_used_totp_code_is_refused(database_url: str, variant: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        secret, _codes, _ = await enable_totp(browser)
        await browser.post("/logout")
        now = time.time() + 30
        code = pyotp.TOTP(secret).at(now)
        await browser.login("csm@example.com")
        assert (await browser.post("/login/2fa", {"code": code})).status_code == 303
        await browser.post("/logout")
        replay = {
            "same": code,
            "full-width": code.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
            "spaced": f"{code[:3]} {code[3:]}",
            "older": pyotp.TOTP(secret).at(now - 30),
        }[variant]
        attacker = Browser(client)
        await attacker.login("csm@example.com")
        response = await attacker.post("/login/2fa", {"code": replay})
        assert response.status_code == 401
        assert (await attacker.get("/settings/security")).status_code == 302
    replays = await audit_events(database_url, "auth.totp_replay")
    assert len(replays) == 1 and replays[0].outcome == "refused"


async def test_a_recovery_code_works_once(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        _secret, codes, _ = await enable_totp(browser)
        await browser.post("/logout")
        first = Browser(client)
        await first.login("csm@example.com")
        assert (await first.post("/login/recovery", {"code": codes[5]})).status_code == 200
        second = Browser(client)
        await second.login("csm@example.com")
        assert (await second.post("/login/recovery", {"code": codes[5].upper()})).status_code == 401
        assert (await second.get("/settings/security")).status_code == 302


# ── roles ───────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("role", [Role.OPS, Role.MANAGER, Role.CSM, Role.VIEWER])
async def test_wrong_role_on_every_admin_route(database_url: str, role: Role) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"), (f"{role.value}@example.com", role.value))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login(f"{role.value}@example.com")
        admin_routes = [case for case in route_cases(client.app) if case.path.startswith("/admin")]
        assert len(admin_routes) >= 10
        for case in admin_routes:
            url = concrete(case, {"user_id": 1})
            if case.method in STATE_CHANGING:
                response = await browser.send(
                    case.method, url, {"role": "admin", "roles": "viewer", "email": "x@example.com"}
                )
            else:
                response = await browser.get(url)
            assert response.status_code == 403, case.id
            assert "admin@example.com" not in response.text
    assert (await user_row(database_url, f"{role.value}@example.com")).role == role.value
    assert len(await audit_events(database_url, "access.denied")) >= 10


# ── objects: another CSM's customer, task, saved filter, session ────────────────────────

# What each path parameter names, and which value of CSM B's to use for it.
OBJECT_PARAMS = {"account_id": "account", "task_id": "task", "filter_id": "filter", "meeting_id": "meeting"}
# Parameters that name no per-user object (shared by every user of the roles allowed in; roles are
# checked for every route in test_route_table), or that are checked by a test of their own.
OTHER_PARAMS = {
    "tab": "a customer tab name",
    "tag_id": "tags are shared",
    "user_id": "admin only",
    "token": "signed set-password and digest links (test_digests: forged, altered, old)",
    "handle": "own sessions (test_another_users_session_cannot_be_ended)",
    "file_path": "static files",
    "path": "OpenAPI document",
    "draft_id": "console, ops-wide",
    "version_id": "console, ops-wide",
    "run_id": "console, ops-wide",
    "job_id": "console, ops-wide",
    "digest_id": "console, ops-wide",
}


async def _two_books(url: str) -> dict[str, Any]:
    await seed_users(url, ("a@example.com", "csm"), ("b@example.com", "csm"))
    tasks = await seed_customers(url, {"ACC-A": "a@example.com", "ACC-B": "b@example.com"})
    async with database(url) as session:
        saved = SavedFilter(name="mine", page="overview", query="tier=gold", owner="b@example.com", shared=False)
        session.add(saved)
        await session.flush()
        filter_id = saved.id
    try:
        from server.services.preferences import DETAIL_TABS

        tab = DETAIL_TABS[0]
    except ImportError:
        tab = "tasks"
    return {
        "a": {"account_id": "ACC-A", "task_id": tasks["ACC-A"], "filter_id": 999999, "meeting_id": "m-a", "tab": tab},
        "b": {
            "account_id": "ACC-B",
            "task_id": tasks["ACC-B"],
            "filter_id": filter_id,
            "meeting_id": "m-b",
            "tab": tab,
        },
    }


async def _b_state(url: str) -> tuple[Any, ...]:
    async with database(url) as session:
        account = await session.get(Account, "ACC-B")
        state = await session.scalar(select(TaskState).where(TaskState.task_id == "tACC-B"))
        sentiments = await session.scalar(select(func.count()).select_from(SentimentEntry))
        filters = await session.scalar(select(func.count()).select_from(SavedFilter))
        assert account is not None and state is not None
        return (
            account.csm,
            account.name,
            state.state,
            state.comment,
            state.assignee,
            state.version,
            sentiments,
            filters,
        )


# Write routes that act only on the caller's own data and answer the same for any id, so they
# need not refuse (e.g. closing a customer's tab in one's own tab strip): they must still leak
# nothing and change nothing of the other CSM's.
SELF_SCOPED = ("/customers/{account_id:str}/close", "/api/preferences/tabs/{account_id:str}")


def _object_routes(cases: list[RouteCase]) -> list[RouteCase]:
    unknown = sorted({name for case in cases for name, _ in case.params} - set(OBJECT_PARAMS) - set(OTHER_PARAMS))
    assert not unknown, f"teach the hostile suite what these path parameters name: {unknown}"
    return [case for case in cases if any(name in OBJECT_PARAMS for name, _ in case.params)]


async def test_another_csms_objects_by_id_in_every_read_route(database_url: str) -> None:
    ids = await _two_books(database_url)
    async with running(database_url) as client:
        a, b = Browser(client), Browser(client)
        await a.login("a@example.com")
        await b.login("b@example.com")
        routes = [case for case in _object_routes(route_cases(client.app)) if case.method == "GET"]
        for case in routes:
            own = await b.get(concrete(case, ids["b"]))
            assert own.status_code in (200, 302, 303), f"{case.id}: the owner cannot open it ({own.status_code})"
            response = await a.get(concrete(case, ids["b"]))
            assert response.status_code in (403, 404), f"{case.id}: another CSM got {response.status_code}"
            assert "Customer ACC-B Secret Name" not in response.text, case.id
            assert "tier=gold" not in response.headers.get("location", ""), case.id
        denied = {event.detail["path"] for event in await audit_events(database_url, "access.denied")}
        for case in routes:
            assert concrete(case, ids["b"]) in denied, f"{case.id}: the refusal was not logged"


async def test_another_csms_objects_by_id_in_every_write_route(database_url: str) -> None:
    ids = await _two_books(database_url)
    before = await _b_state(database_url)
    async with running(database_url) as client:
        a = Browser(client)
        await a.login("a@example.com")
        routes = [case for case in _object_routes(route_cases(client.app)) if case.method in STATE_CHANGING]
        assert routes or not any(case.path.startswith("/customers/") for case in route_cases(client.app))
        body = {
            "state": "finished",
            "comment": "pwned",
            "assignee": "a@example.com",
            "value": "negative",
            "note": "pwned",
            "outcome": "pwned",
            "tags": "1",
            "tag": "1",
            "name": "pwned",
            "task_ids": "tACC-B",
            "ids": "tACC-B",
            "account_ids": "ACC-B",
            "csm": "a@example.com",
        }
        for case in routes:
            response = await a.send(case.method, concrete(case, ids["b"]), body)
            refused = response.status_code in (400, 403, 404, 409, 422)
            assert refused or case.path in SELF_SCOPED, f"{case.id}: another CSM got {response.status_code}"
            assert "Customer ACC-B Secret Name" not in response.text, case.id
    assert await _b_state(database_url) == before


async def test_bulk_task_actions_cannot_reach_another_csms_tasks(database_url: str) -> None:
    await _two_books(database_url)
    before = await _b_state(database_url)
    async with running(database_url) as client:
        a = Browser(client)
        await a.login("a@example.com")
        bulk = [case for case in route_cases(client.app) if case.method in STATE_CHANGING and "bulk" in case.path]
        for case in bulk:
            response = await a.send(
                case.method,
                case.path,
                {
                    "task_ids": ["tACC-B", "tACC-A"],
                    "ids": ["tACC-B"],
                    "state": "finished",
                    "action": "state",
                    "value": "finished",
                },
            )
            assert response.status_code < 500, case.id
    assert await _b_state(database_url) == before


async def test_another_users_session_cannot_be_ended(database_url: str) -> None:
    await seed_users(database_url, ("a@example.com", "csm"), ("b@example.com", "csm"))
    async with running(database_url) as client:
        a, b = Browser(client), Browser(client)
        await a.login("a@example.com")
        await b.login("b@example.com")
        await Browser(client).login("b@example.com")
        handles = re.findall(r"/sessions/([0-9a-f]{16})/end", (await b.get("/settings/security")).text)
        assert handles
        response = await a.post(f"/settings/security/sessions/{handles[0]}/end")
        assert response.status_code == 400
        assert (await b.get("/settings/security")).status_code == 200


# ── CSRF (every route: see test_route_table) and cross-site tricks ──────────────────────


async def test_csrf_token_of_another_site_session_or_method_override(database_url: str) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"), ("csm@example.com", "csm"))
    csm_id = (await user_row(database_url, "csm@example.com")).id
    async with running(database_url) as client:
        admin = Browser(client)
        await admin.login("admin@example.com")
        token = await admin.csrf()
        forged = await admin.request(
            "GET", f"/admin/users/{csm_id}/deactivate", headers={"x-http-method-override": "POST"}
        )
        assert forged.status_code in (404, 405)
        evil = await admin.request(
            "POST",
            f"/admin/users/{csm_id}/deactivate",
            data={"_csrf_token": token[:-2] + ("11" if token.endswith("00") else "00")},  # always altered
            headers={"origin": "https://evil.example"},
        )
        assert evil.status_code == 403
        json_post = await admin.request("POST", f"/admin/users/{csm_id}/deactivate", json={"_csrf_token": token})
        assert json_post.status_code == 403
    assert (await user_row(database_url, "csm@example.com")).active


# ── bodies and headers ──────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("path", ["/login", "/settings/security/password"])
async def test_oversize_bodies_are_refused(database_url: str, path: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        response = await browser.post(path, {"password": "x" * (3 * 1024 * 1024), "current_password": "y"})
        assert response.status_code == 413


async def test_a_megabyte_password_is_answered_quickly(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        started = time.perf_counter()
        response = await Browser(client).post("/login", {"email": "csm@example.com", "password": "p" * 1_000_000})
        assert response.status_code == 401 and time.perf_counter() - started < 2


@pytest.mark.parametrize(
    "next_value",
    ["/x\r\nSet-Cookie: evil=1", "/x%0d%0aSet-Cookie:%20evil=1", "/x\nLocation: https://evil.example", "/é\u2028x"],
)
async def test_header_injection_through_next(database_url: str, next_value: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        response = await browser.login("csm@example.com", next=next_value)
        assert response.status_code == 303
        assert "evil" not in str(response.headers.raw).lower()
        assert "\n" not in location(response) and "\r" not in location(response)
        page = await Browser(client).get("/login", params={"next": next_value})
        assert page.status_code == 200 and "evil=1" not in str(page.headers.raw)


async def test_header_injection_through_the_path(database_url: str) -> None:
    async with running(database_url) as client:
        response = await Browser(client).get("/settings/%0d%0aSet-Cookie:%20evil=1")
        assert response.status_code in (302, 404)
        assert "evil" not in str(response.headers.get_list("set-cookie"))
        assert "\r" not in location(response) and "\n" not in location(response)


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "%2F%2Fevil.example",
        "/%2F%2Fevil.example",
        "///evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "http:evil.example",
        "javascript:alert(1)",
        " //evil.example",
        "/%5Cevil.example",
    ],
)
async def test_open_redirect_in_next(database_url: str, target: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        page = await browser.get("/login", params={"next": target})
        assert 'value="//' not in page.text and "evil.example" not in page.text.split('name="next"')[1][:80]
        response = await browser.login("csm@example.com", next=target)
        assert response.status_code == 303
        assert location(response) == "/"
        reauth = await browser.post("/reauth", {"password": PASSWORD, "next": target})
        assert location(reauth) == "/"


# ── mass assignment ─────────────────────────────────────────────────────────────────────


async def test_mass_assignment_of_role_and_owner_is_refused_and_logged(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"), ("admin@example.com", "admin"))
    async with running(database_url) as client:
        csm = Browser(client)
        await csm.login("csm@example.com")
        response = await csm.post(
            "/settings/security/password",
            {
                "current_password": PASSWORD,
                "new_password": "a fresh long passphrase",
                "confirm": "a fresh long passphrase",
                "role": "admin",
                "csm": "csm@example.com",
            },
        )
        assert response.status_code == 403
        admin = Browser(client)
        await admin.login("admin@example.com")
        invite = await admin.post(
            "/admin/users/invite", {"email": "n@example.com", "role": "viewer", "active": "0", "totp_enabled": "true"}
        )
        assert invite.status_code == 403
    assert (await user_row(database_url, "csm@example.com")).role == "csm"
    kinds = [event.detail.get("kind") for event in await audit_events(database_url, "access.denied")]
    assert kinds.count("mass-assignment") == 2


async def test_no_route_lets_a_csm_change_roles_or_ownership(database_url: str) -> None:
    """Every state-changing route, fed role/csm/owner fields with the CSM's own ids: nothing moves."""
    ids = await _two_books(database_url)
    async with running(database_url) as client:
        a = Browser(client)
        await a.login("a@example.com")
        for case in route_cases(client.app):
            if case.method not in STATE_CHANGING or case.path in ("/logout",):
                continue
            response = await a.send(
                case.method,
                concrete(case, {**ids["a"], "user_id": 1}),
                {
                    "role": "admin",
                    "csm": "a@example.com",
                    "owner": "a@example.com",
                    "email": "root@example.com",
                    "active": "1",
                    "session_epoch": "0",
                },
            )
            assert response.status_code < 500, case.id
            if response.status_code == 303 and location(response).startswith("/login"):
                await a.login("a@example.com")
    assert (await user_row(database_url, "a@example.com")).role == "csm"
    async with database(database_url) as session:
        owners = dict((await session.execute(select(Account.id, Account.csm))).all())
        emails = set((await session.scalars(select(User.email))).all())
    assert owners == {"ACC-A": "a@example.com", "ACC-B": "b@example.com"}
    assert "root@example.com" not in emails


# ── sessions that must be dead ──────────────────────────────────────────────────────────


async def test_a_deactivated_users_live_session(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        csm = Browser(client)
        await csm.login("csm@example.com")
        async with database(database_url) as session:
            user = await session.scalar(select(User).where(User.email == "csm@example.com"))
            assert user is not None
            user.active = False  # even without the epoch moving on
        assert (await csm.get("/settings/security")).status_code == 302
        assert (await csm.post("/settings/security/sessions/end-others")).status_code in (302, 303, 401)


async def test_an_idle_session_expires(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    real = clock.now
    monkeypatch.setattr(clock, "now", real)
    async with running(database_url) as client:
        csm = Browser(client)
        await csm.login("csm@example.com")
        monkeypatch.setattr(clock, "now", lambda: real() + 31 * 60)
        response = await csm.get("/settings/security", headers={"hx-request": "true"})
        assert response.status_code == 401 and response.headers["hx-redirect"].startswith("/login?next=")
        monkeypatch.setattr(clock, "now", real)
        assert (await csm.get("/settings/security")).status_code == 302  # and it stays dead


async def test_a_pending_sign_in_expires(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        setup = Browser(client)
        await setup.login("csm@example.com")
        secret, _codes, _ = await enable_totp(setup)
        pending = Browser(client)
        await pending.login("csm@example.com")
        real = clock.now
        monkeypatch.setattr(clock, "now", lambda: real() + 11 * 60)
        response = await pending.post("/login/2fa", {"code": pyotp.TOTP(secret).at(real() + 11 * 60)})
        assert response.status_code == 303 and location(response) == "/login?ok=expired"


async def test_anonymous_api_requests_get_json_401(database_url: str) -> None:
    async with running(database_url) as client:
        response = await Browser(client).get("/api/schema/openapi.json")
        assert response.status_code == 401 and response.json()["status"] == 401
        head = await Browser(client).request("HEAD", "/admin/users")
        assert head.status_code in (302, 401, 405) and not head.content


async def test_invite_links_ignore_the_host_header(database_url: str) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"))
    async with running(database_url, CSM_BASE_URL="https://csm.example.com") as client:
        admin = Browser(client)
        await admin.login("admin@example.com")
        response = await admin.post(
            "/admin/users/invite",
            {"email": "n@example.com", "role": "viewer"},
            headers={"host": "evil.example", "x-forwarded-host": "evil.example"},
        )
        assert response.status_code in (200, 400)
        assert "evil.example" not in response.text
        if response.status_code == 200:
            assert "https://csm.example.com/login/invite/" in response.text


async def test_log_injection_through_the_email_field(database_url: str) -> None:
    async with running(database_url) as client:
        await Browser(client).post("/login", {"email": "x@example.com\r\nauth.login ok admin", "password": "p" * 12})
    for event in await audit_events(database_url):
        for value in (event.actor, event.object_id, event.user_agent, event.ip):
            assert value is None or ("\n" not in value and "\r" not in value)


async def test_audit_search_input_is_data_not_sql(database_url: str) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"))
    async with running(database_url) as client:
        admin = Browser(client)
        await admin.login("admin@example.com")
        for value in ("' OR 1=1 --", "%", "_", "\\", "admin@example.com'; DROP TABLE audit_event; --"):
            response = await admin.get("/admin/audit", params={"actor": value, "object": value, "action": value})
            assert response.status_code == 200
            assert "Nothing matches." in response.text.split("<tbody>")[1]
        assert (await admin.get("/admin/audit?before=notanumber")).status_code == 400
