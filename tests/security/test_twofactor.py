"""Two-factor sign-in: enrolment with a server-drawn QR code, one-time TOTP codes, recovery codes,
the admin requirement, and the limits on code guessing."""

from __future__ import annotations

import asyncio
import re
import time

import pyotp
import pytest
from sqlalchemy import select

from server.db.models import RecoveryCode, User
from server.db.session import create_engine, session_factory, session_scope
from server.services import twofactor
from server.web.limits import CODE_ACCOUNT, RECOVERY_ACCOUNT
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
    user_row,
)


async def test_enrol_sign_in_and_turn_off(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        page = await browser.get("/settings/security/2fa")
        assert page.status_code == 200
        assert 'src="data:image/svg+xml' in page.text and "<script" not in page.text.split("</head>")[1]
        secret, codes, _step = await enable_totp(browser)
        assert len(set(codes)) == 10
        user = await user_row(database_url, "csm@example.com")
        assert user.totp_enabled and user.totp_last_step is not None
        # The seed is sealed at rest: the column holds neither it nor anything it can be read from.
        assert user.totp_secret and secret not in user.totp_secret and user.totp_secret.startswith("v1.")
        assert twofactor.SeedBox(SECRET_KEY).open(user.totp_secret, user.id) == secret
        async with database(database_url) as session:
            hashes = (
                await session.scalars(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user.id))
            ).all()
        assert len(hashes) == 10 and all(value.startswith("$argon2id$") for value in hashes)
        assert not any(code.replace("-", "") in value for code in codes for value in hashes)

        await browser.post("/logout")
        response = await browser.login("csm@example.com")
        assert location(response) == "/login/2fa"
        assert (await browser.get("/settings/security")).status_code == 302  # nothing before the second factor
        response = await browser.login("csm@example.com", secret=secret, at=time.time() + 30)
        assert response.status_code == 303 and location(response) == "/"
        assert (await browser.get("/settings/security")).status_code == 200

        response = await browser.post("/settings/security/2fa/disable")
        assert response.status_code == 303 and location(response) == "/settings/security?ok=2fa-off"
        assert not (await user_row(database_url, "csm@example.com")).totp_enabled
    actions = [event.action for event in await audit_events(database_url)]
    assert "user.2fa_enabled" in actions and "user.2fa_disabled" in actions and "auth.password_ok" in actions


async def test_the_enrolment_code_cannot_sign_in_again(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        secret, _codes, step = await enable_totp(browser)
        await browser.post("/logout")
        await browser.login("csm@example.com")
        response = await browser.post("/login/2fa", {"code": pyotp.TOTP(secret).generate_otp(step)})
        assert response.status_code == 401 and "already used" in response.text


async def test_a_wrong_enrolment_code_does_not_turn_it_on(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        await browser.get("/settings/security/2fa")
        response = await browser.post("/settings/security/2fa", {"code": "000000"})
        assert response.status_code == 400
        assert not (await user_row(database_url, "csm@example.com")).totp_enabled


async def test_recovery_codes_work_once_and_regenerating_replaces_them(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        _secret, codes, _step = await enable_totp(browser)
        await browser.post("/logout")

        await browser.login("csm@example.com")
        response = await browser.post("/login/recovery", {"code": codes[0].upper().replace("-", " ")})
        assert response.status_code == 200 and "<strong>9</strong>" in response.text
        assert (await browser.get("/settings/security")).status_code == 200
        await browser.post("/logout")

        await browser.login("csm@example.com")
        reused = await browser.post("/login/recovery", {"code": codes[0]})
        assert reused.status_code == 401

        new = await _sign_in_with(browser, codes[1])
        assert new.status_code == 200
        regenerated = await browser.post("/settings/security/recovery-codes")
        assert regenerated.status_code == 200
        fresh = re.findall(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>", regenerated.text)
        assert len(fresh) == 10 and not set(fresh) & set(codes)
        await browser.post("/logout")
        await browser.login("csm@example.com")
        assert (await browser.post("/login/recovery", {"code": codes[2]})).status_code == 401
        assert (await browser.post("/login/recovery", {"code": fresh[0]})).status_code == 200
    used = await audit_events(database_url, "auth.recovery_code_used")
    assert [event.detail["remaining"] for event in used] == [9, 8, 9]
    assert len(await audit_events(database_url, "auth.recovery_code_failed")) == 2


async def _sign_in_with(browser: Browser, recovery_code: str) -> object:
    await browser.login("csm@example.com")
    return await browser.post("/login/recovery", {"code": recovery_code})


async def test_admins_can_require_two_factor_per_role(database_url: str) -> None:
    await seed_users(
        database_url, ("admin@example.com", "admin"), ("ops@example.com", "ops"), ("viewer@example.com", "viewer")
    )
    async with running(database_url) as client:
        admin, ops = Browser(client), Browser(client)
        await admin.login("admin@example.com")
        await ops.login("ops@example.com")
        refused = await admin.post("/admin/security/2fa", {"roles": ["ops", "admin"]})
        assert refused.status_code == 409  # the admin has no two-factor yet: enrol first
        response = await admin.post("/admin/security/2fa", {"roles": "ops"})
        assert response.status_code == 303
        assert (await ops.get("/settings/security")).status_code == 302  # signed out: must enrol
        assert (await admin.get("/admin/users")).status_code == 200

        response = await ops.login("ops@example.com")
        assert location(response) == "/login/enrol"
        assert (await ops.get("/")).status_code in (302, 303)  # nothing else before enrolling
        await ops.login("ops@example.com")
        page = await ops.get("/login/enrol")
        assert page.status_code == 200
        secret = re.search(r'aria-label="Set-up key">([A-Z2-7 ]+)<', page.text)
        assert secret
        key = secret[1].replace(" ", "")
        response = await ops.post("/login/enrol", {"code": pyotp.TOTP(key).now()})
        assert response.status_code == 200 and "recovery codes" in response.text
        assert (await ops.get("/settings/security")).status_code == 200
        cannot = await ops.post("/settings/security/2fa/disable")
        assert cannot.status_code == 409
        viewer = await Browser(client).login("viewer@example.com")
        assert location(viewer) == "/"  # not required for viewers
    requirement = await audit_events(database_url, "settings.2fa_requirement_changed")
    assert requirement[-1].after == {"all": False, "roles": ["ops"]} and requirement[-1].detail == {"signed_out": 1}


async def test_admin_resets_a_lost_second_factor(database_url: str) -> None:
    await seed_users(database_url, ("admin@example.com", "admin"), ("csm@example.com", "csm"))
    csm_id = (await user_row(database_url, "csm@example.com")).id
    async with running(database_url) as client:
        csm, admin = Browser(client), Browser(client)
        await csm.login("csm@example.com")
        await enable_totp(csm)
        await admin.login("admin@example.com")
        response = await admin.post(f"/admin/users/{csm_id}/reset-2fa")
        assert response.status_code == 303
        assert (await csm.get("/settings/security")).status_code == 302
        assert location(await Browser(client).login("csm@example.com")) == "/"
    user = await user_row(database_url, "csm@example.com")
    assert not user.totp_enabled and user.totp_secret is None
    async with database(database_url) as session:
        assert not (await session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == csm_id))).all()


async def test_code_guessing_is_limited(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        secret, codes, _ = await enable_totp(browser)
        await browser.post("/logout")
        await browser.login("csm@example.com")
        for _ in range(CODE_ACCOUNT.attempts):
            assert (await browser.post("/login/2fa", {"code": "123456"})).status_code in (401,)
        right = await browser.post("/login/2fa", {"code": pyotp.TOTP(secret).now()})
        assert right.status_code == 429 and "Try again in" in right.text

        recovery = Browser(client)
        await recovery.login("csm@example.com")
        for _ in range(RECOVERY_ACCOUNT.attempts):
            assert (await recovery.post("/login/recovery", {"code": "aaaaa-aaaaa"})).status_code == 401
        assert (await recovery.post("/login/recovery", {"code": codes[0]})).status_code == 429
    limits = sorted(event.detail["limit"] for event in await audit_events(database_url, "auth.lockout"))
    assert limits == ["code-account", "recovery-account"]


async def test_a_code_accepted_once_even_when_two_requests_race(database_url: str) -> None:
    """The accepted time step is claimed with a compare-and-set: of two simultaneous uses, one wins."""
    await seed_users(database_url, ("csm@example.com", "csm"))
    engine = create_engine(database_url)
    try:
        factory = session_factory(engine)
        secret, box = twofactor.new_secret(), twofactor.SeedBox(SECRET_KEY)
        async with session_scope(factory) as session:
            user = await session.scalar(select(User).where(User.email == "csm@example.com"))
            assert user is not None
            user.totp_secret, user.totp_enabled, user_id = box.seal(secret, user.id), True, user.id
        now = time.time()
        code = pyotp.TOTP(secret).at(now)

        async def use() -> twofactor.CodeCheck:
            async with session_scope(factory) as session:
                user = await session.get(User, user_id)
                assert user is not None
                return await twofactor.check_code(session, box, user, code, now)

        if database_url.startswith("sqlite"):
            results = [await use(), await use()]  # SQLite has one writer: the two run one after the other
        else:
            results = list(await asyncio.gather(use(), use()))
        assert sorted(result.value for result in results) == ["ok", "replayed"]
        async with session_scope(factory) as session:
            user = await session.get(User, user_id)
            assert user is not None
            older = pyotp.TOTP(secret).at(now - 30)
            assert await twofactor.check_code(session, box, user, older, now) is twofactor.CodeCheck.REPLAYED
            assert await twofactor.check_code(session, box, user, "１２３４５", now) is twofactor.CodeCheck.WRONG
    finally:
        await engine.dispose()


def test_a_sealed_seed_opens_only_for_its_user_under_its_key() -> None:
    box, seed = twofactor.SeedBox(SECRET_KEY), twofactor.new_secret()
    sealed = box.seal(seed, 7)
    assert box.open(sealed, 7) == seed
    assert sealed != box.seal(seed, 7)  # a fresh nonce every time
    assert box.open(sealed, 8) is None  # copied onto another user
    assert twofactor.SeedBox("another-secret-key-0123456789abcdef").open(sealed, 7) is None
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    for stored in (tampered, seed, "v1.", "v1.!!!", "v2." + sealed[3:], ""):
        assert box.open(stored, 7) is None, stored


def test_code_normalisation() -> None:
    assert twofactor.normalise_code("１２３ ４５６") == "123456"
    assert twofactor.normalise_code("123-456") == "123456"
    assert twofactor.normalise_code("12345") is None
    assert twofactor.normalise_code("12345a") is None
    assert twofactor.normalise_code("٣٣٣٣٣٣") is None  # other scripts' digits are not codes
    assert twofactor.normalise_code("1" * 100) is None
    assert twofactor.normalise_recovery_code(" ABCDE fghjk ") == "abcdefghjk"
    assert twofactor.normalise_recovery_code("abcde-fghj0") is None


def test_secrets_and_drift_window() -> None:
    secret = twofactor.new_secret()
    assert len(secret) == 32  # 160 bits
    now = 1_700_000_015.0
    totp = pyotp.TOTP(secret)
    assert twofactor.matching_step(secret, totp.at(now), now) == int(now) // 30
    assert twofactor.matching_step(secret, totp.at(now - 30), now) == int(now) // 30 - 1
    assert twofactor.matching_step(secret, totp.at(now + 30), now) == int(now) // 30 + 1
    assert twofactor.matching_step(secret, totp.at(now - 60), now) is None
    assert twofactor.matching_step(secret, totp.at(now + 60), now) is None


async def test_reauth_before_turning_two_factor_on(database_url: str, moved_clock: MovedClock) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        moved_clock.seconds = 6 * 60
        response = await browser.get("/settings/security/2fa")
        assert response.status_code == 303
        assert location(response) == "/reauth?next=%2Fsettings%2Fsecurity%2F2fa"
        wrong = await browser.post("/reauth", {"password": "not my password", "next": "/settings/security/2fa"})
        assert wrong.status_code == 401
        before = browser.session
        right = await browser.post("/reauth", {"password": PASSWORD, "next": "/settings/security/2fa"})
        assert right.status_code == 303 and location(right) == "/settings/security/2fa"
        assert browser.session != before  # a new session id after re-authentication
        assert (await browser.get("/settings/security/2fa")).status_code == 200
