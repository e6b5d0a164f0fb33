"""The route table: every route declares who may call it, and the declaration holds on the wire.

These tests enumerate `app.routes`, so a route added tomorrow is checked without editing them.
"""

from __future__ import annotations

import re

import pytest
from litestar import get, post

from server.app import create_app
from server.web.access import CAPABILITIES, PUBLIC, PUBLIC_ROUTES, SIGNED_IN, Capability, Role, requires
from tests.security.helpers import Browser, build_app, enable_totp, location, running, seed_users, settings_for
from tests.security.routes import STATE_CHANGING, concrete, route_cases, rule_violations


def _roles_lacking(capabilities: frozenset[Capability]) -> list[Role]:
    return [role for role in Role if not capabilities <= CAPABILITIES[role]]


def test_every_route_declares_its_access(sqlite_url: str) -> None:
    app = build_app(sqlite_url)
    assert rule_violations(app) == []
    cases = route_cases(app)
    assert {case.path for case in cases if case.access == "public"} <= PUBLIC_ROUTES
    assert any(case.access == "capability" for case in cases)


def test_a_route_without_a_rule_fails_the_check(sqlite_url: str) -> None:
    @get("/new-report")
    async def new_report() -> str:
        return "everyone's numbers"

    @get("/sneaky", opt=PUBLIC)
    async def sneaky() -> str:
        return "public without review"

    @post("/settings/thing", opt=SIGNED_IN, exclude_from_auth=True)
    async def confused() -> str:
        return "signed-in but excluded from sign-in"

    @get("/fine", guards=[requires(Capability.READ_CUSTOMERS)])
    async def fine() -> str:
        return "ok"

    app = create_app(settings_for(sqlite_url), route_handlers=[new_report, sneaky, confused, fine])
    problems = "\n".join(rule_violations(app))
    assert "GET /new-report: no access rule" in problems
    assert "GET /sneaky: public but not in" in problems
    assert "POST /settings/thing: needs a signed-in user but is excluded" in problems
    assert "/fine" not in problems


async def test_anonymous_requests_to_protected_routes_are_sent_to_sign_in(database_url: str) -> None:
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.csrf()
        checked = 0
        for case in route_cases(client.app):
            if case.access not in ("signed-in", "capability", "openapi"):
                continue
            url = concrete(case, {})
            if case.method in STATE_CHANGING:
                response = await browser.request(case.method, url, data={"_csrf_token": await browser.csrf()})
            else:
                response = await browser.request(case.method, url)
            if url.startswith("/api/"):
                assert response.status_code == 401, case.id
            else:
                assert response.status_code in (302, 303, 401), case.id
                if response.status_code != 401:
                    assert location(response).startswith("/login?next="), case.id
            checked += 1
        assert checked >= 20


async def test_every_guarded_route_refuses_every_role_without_its_capability(database_url: str) -> None:
    """Wrong role for every admin (and other guarded) route: 403, with a valid CSRF token and a fresh re-auth."""
    roles = list(Role)
    await seed_users(database_url, *((f"{role.value}@example.com", role.value) for role in roles))
    async with running(database_url) as client:
        browsers = {}
        for role in roles:
            browsers[role] = Browser(client)
            response = await browsers[role].login(f"{role.value}@example.com")
            assert response.status_code == 303, response.text
        refused = 0
        for case in route_cases(client.app):
            if case.access != "capability":
                continue
            url = concrete(case, {})
            for role in _roles_lacking(case.capabilities):
                browser = browsers[role]
                if case.method in STATE_CHANGING:
                    response = await browser.send(case.method, url, {"role": "admin"})
                else:
                    response = await browser.request(case.method, url)
                assert response.status_code == 403, f"{case.id} as {role}: {response.status_code}"
                refused += 1
        assert refused >= 20


async def test_every_state_changing_route_needs_the_csrf_token(database_url: str) -> None:
    """Missing, wrong, or another browser's token: 403 on every POST/PUT/PATCH/DELETE of the table."""
    await seed_users(database_url, ("admin@example.com", "admin"))
    async with running(database_url) as client:
        admin = Browser(client)
        assert (await admin.login("admin@example.com")).status_code == 303
        stranger = Browser(client)
        foreign_token = await stranger.csrf()
        checked = 0
        for case in route_cases(client.app):
            if case.method not in STATE_CHANGING:
                continue
            url = concrete(case, {})
            missing = await admin.request(case.method, url, data={"x": "1"})
            assert missing.status_code == 403, f"{case.id} without a token: {missing.status_code}"
            wrong = await admin.request(case.method, url, data={"_csrf_token": "0" * 128})
            assert wrong.status_code == 403, f"{case.id} with a forged token: {wrong.status_code}"
            other = await admin.request(case.method, url, data={"_csrf_token": foreign_token})
            assert other.status_code == 403, f"{case.id} with another browser's token: {other.status_code}"
            htmx = await admin.request(case.method, url, headers={"hx-request": "true"})
            assert htmx.status_code == 403, f"{case.id} htmx without the header: {htmx.status_code}"
            checked += 1
        assert checked >= 15
        # and the token works (a state change the admin may make)
        ok = await admin.post("/settings/security/sessions/end-others")
        assert ok.status_code == 303


async def test_a_half_signed_in_session_reaches_no_protected_route(database_url: str) -> None:
    """2FA pending (password step done): every protected route answers like to a stranger."""
    await seed_users(database_url, ("admin@example.com", "admin"))
    async with running(database_url) as client:
        admin = Browser(client)
        assert (await admin.login("admin@example.com")).status_code == 303
        await enable_totp(admin)
        await admin.post("/logout")
        for case in route_cases(client.app):
            if case.access not in ("signed-in", "capability", "openapi"):
                continue
            pending = Browser(client)
            response = await pending.login("admin@example.com")
            assert location(response) == "/login/2fa"
            url = concrete(case, {})
            if case.method in STATE_CHANGING:
                response = await pending.send(case.method, url, {"role": "admin"})
            else:
                response = await pending.request(case.method, url)
            assert response.status_code in (302, 303, 401), case.id
            assert "/login" in location(response) or response.status_code == 401, case.id


async def test_security_headers_on_pages_and_errors(database_url: str) -> None:
    await seed_users(database_url, ("viewer@example.com", "viewer"))
    async with running(database_url, CSM_BASE_URL="https://csm.example.com") as client:
        browser = Browser(client)
        for url in ("/login", "/settings/security", "/admin/users", "/nowhere"):
            response = await browser.get(url)
            headers = response.headers
            csp = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
            assert re.search(r"script-src 'self'(;|$)", csp) and "unsafe-inline" not in csp
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "same-origin"
            assert headers["x-frame-options"] == "DENY"
            assert headers["cache-control"] == "no-store"
            assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
        static = await browser.get("/static/app.css")
        assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")


@pytest.mark.parametrize("path", sorted(PUBLIC_ROUTES))
def test_public_routes_are_few_and_reviewed(path: str) -> None:
    # /go/: a digest's deep link, which only checks its signature and redirects (no data, no sign-in).
    assert path.startswith(("/login", "/logout", "/healthz", "/go/")), path
