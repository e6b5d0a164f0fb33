"""Security emails: users are told of what happens to their account, and get the set-password
links they ask for, through a real SMTP server (aiosmtpd), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from server.db.models import KnownDevice, SecurityEmail, User
from server.db.session import create_engine, session_factory, session_scope
from server.services import security_emails
from server.services.audit import CLI, record_as
from server.services.devices import remember_device
from server.services.security_emails import send_security_emails
from tests.security.helpers import (
    PASSWORD,
    Browser,
    audit_events,
    database,
    enable_totp,
    location,
    running,
    seed_users,
    settings_for,
)
from tests.smtp import Mailbox, smtp_server

NEW_PASSWORD = "a brand new passphrase 42"
HOSTILE_AGENT = "<img src=x onerror=alert(1)> Mozilla"
SET_PASSWORD_PATH = re.compile(r"https?://[^/\s]+(/login/invite/[^\s\"<]+)")


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    monkeypatch.setattr(security_emails, "SEND_EVERY", 0.1)  # the web server's sender, without the wait
    with smtp_server() as box:
        yield box


async def delivered(mailbox: Mailbox, address: str, count: int, seconds: float = 20) -> list[EmailMessage]:
    """The messages to `address` once there are `count` of them (the web server sends them)."""
    for _ in range(int(seconds / 0.05)):  # the SMTP server fills the mailbox from its own thread
        if len(mailbox.to(address)) >= count:
            break
        await asyncio.sleep(0.05)
    return mailbox.to(address)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return part.get_content()  # type: ignore[no-any-return]


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return part.get_content()  # type: ignore[no-any-return]


async def test_a_reused_code_and_a_recovery_code_are_told_to_the_account_holder(
    database_url: str, mailbox: Mailbox
) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url, **mailbox.env()) as client:
        browser = Browser(client)
        await browser.login("csm@example.com")
        secret, codes, step = await enable_totp(browser)
        await browser.post("/logout")

        # The enrolment's own code, entered again after the password: refused as used.
        replayed = await browser.login("csm@example.com", secret=secret, at=step * 30 + 1)
        assert replayed.status_code == 401 and "already used" in replayed.text
        assert (await browser.post("/login/recovery", {"code": codes[0]})).status_code == 200

        messages = await delivered(mailbox, "csm@example.com", 2)
    subjects = sorted(message["Subject"] for message in messages)
    assert subjects == ["A recovery code was used to sign in", "A used sign-in code was tried on your account"]
    recovery = next(message for message in messages if message["Subject"].startswith("A recovery"))
    assert "9 recovery codes left" in text_of(recovery)
    assert re.search(r"\nWhen: \d{4}-\d\d-\d\d \d\d:\d\d UTC\r?\nFrom: \S+", text_of(recovery))
    assert "<b>9</b> recovery codes left" in html_of(recovery)
    replay = next(message for message in messages if message["Subject"].startswith("A used"))
    assert "your password is known to someone else" in text_of(replay)
    assert replay["Message-ID"].startswith("<security.") and replay["Auto-Submitted"] == "auto-generated"

    # Once: the sender going over the log again sends nothing more.
    engine = create_engine(database_url)
    try:
        again = await send_security_emails(session_factory(engine), settings_for(database_url, **mailbox.env()))
    finally:
        await engine.dispose()
    assert again["sent"] == 0 and len(mailbox.to("csm@example.com")) == 2
    async with database(database_url) as session:
        rows = list(await session.scalars(select(SecurityEmail).where(SecurityEmail.state == "sent")))
    assert {row.action for row in rows} == {"auth.totp_replay", "auth.recovery_code_used"}


async def test_a_sign_in_from_a_new_browser_is_told_but_not_the_first_nor_a_known_one(
    database_url: str, mailbox: Mailbox
) -> None:
    ids = await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url, **mailbox.env()) as client:
        laptop = Browser(client)
        assert location(await laptop.login("csm@example.com")) == "/"  # the first browser ever: not told
        device = laptop.cookies["csm_device"]
        await laptop.post("/logout")
        assert location(await laptop.login("csm@example.com")) == "/"  # known
        assert laptop.cookies["csm_device"] == device

        forged = Browser(client, cookies={"csm_device": "<script>"})
        signed_in = await forged.post(
            "/login", {"email": "csm@example.com", "password": PASSWORD}, headers={"user-agent": HOSTILE_AGENT}
        )
        assert location(signed_in) == "/"
        assert forged.cookies["csm_device"] not in ("<script>", device)  # a malformed one is replaced
        told = await delivered(mailbox, "csm@example.com", 1)
        await asyncio.sleep(0.5)  # and nothing else comes
    assert [message["Subject"] for message in mailbox.to("csm@example.com")] == ["New sign-in to your account"]
    assert HOSTILE_AGENT in text_of(told[0]) and "&lt;img src=x onerror=alert(1)&gt;" in html_of(told[0])
    async with database(database_url) as session:
        hashes = set(
            await session.scalars(select(KnownDevice.device_hash).where(KnownDevice.user_id == ids["csm@example.com"]))
        )
    assert len(hashes) == 2 and device not in hashes  # stored hashed
    assert [event.object_id for event in await audit_events(database_url, "auth.new_device")] == ["csm@example.com"]


async def test_a_forgotten_password_gets_a_link_by_email_which_does_not_bypass_two_factor(
    database_url: str, mailbox: Mailbox
) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url, **mailbox.env()) as client:
        owner = Browser(client)
        await owner.login("csm@example.com")
        secret, _codes, _step = await enable_totp(owner)
        login_page = await Browser(client).get("/login")
        assert 'href="/login/reset"' in login_page.text

        stranger = Browser(client)
        assert (await stranger.get("/login/reset")).status_code == 200
        known = await stranger.post("/login/reset", {"email": "csm@example.com"}, headers={"user-agent": HOSTILE_AGENT})
        unknown = await stranger.post("/login/reset", {"email": "nobody@example.com"})
        # The same answer whether the address has an account or not.
        assert known.status_code == unknown.status_code == 200
        assert known.text.replace("csm@example.com", "X") == unknown.text.replace("nobody@example.com", "X")
        assert (
            owner.session is not None and (await owner.get("/settings/security")).status_code == 200
        )  # not signed out

        link_email = (await delivered(mailbox, "csm@example.com", 1))[0]
        assert link_email["Subject"] == "Choose a new password"
        assert HOSTILE_AGENT not in html_of(link_email) and "&lt;img src=x" in html_of(link_email)
        link = SET_PASSWORD_PATH.search(text_of(link_email))
        assert link is not None
        done = await stranger.post(link[1], {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
        assert done.status_code == 303 and location(done) == "/login?ok=password-set"
        assert stranger.session is None  # the link signs nobody in

        # The new password leads to the second factor, not into the portal.
        after = await stranger.login("csm@example.com", NEW_PASSWORD)
        assert location(after) == "/login/2fa"
        assert (await stranger.get("/")).status_code in (302, 303, 401)
        # (the next time step's code: the enrolment used this one)
        signed_in = await stranger.login("csm@example.com", NEW_PASSWORD, secret=secret, at=time.time() + 30)
        assert location(signed_in) == "/"
        assert (await owner.get("/settings/security")).status_code in (302, 303, 401)  # the old session ended

        notices = await delivered(mailbox, "csm@example.com", 2)
        assert [message["Subject"] for message in notices][1] == "Your password was set"
        assert (await stranger.post(link[1], {"password": PASSWORD, "confirm": PASSWORD})).status_code == 404
    assert mailbox.to("nobody@example.com") == []
    async with database(database_url) as session:
        not_sent = await session.scalar(select(SecurityEmail).where(SecurityEmail.recipient == "nobody@example.com"))
    assert not_sent is not None and (not_sent.state, not_sent.error) == ("skipped", "not emailed: unknown")
    requests = await audit_events(database_url, "auth.password_reset_requested")
    assert [(event.object_id, event.outcome) for event in requests] == [
        ("csm@example.com", "ok"),
        ("nobody@example.com", "unknown"),
    ]


async def test_asking_for_links_is_limited_per_address(database_url: str, mailbox: Mailbox) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with running(database_url, **mailbox.env()) as client:
        browser = Browser(client)
        answers = [(await browser.post("/login/reset", {"email": "csm@example.com"})).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        for hostile in ("not an address", "csm@example.com\r\nBcc: evil@example.com", "x" * 400 + "@example.com"):
            assert (await browser.post("/login/reset", {"email": hostile})).status_code == 400
        assert len(await delivered(mailbox, "csm@example.com", 3)) == 3
        await asyncio.sleep(0.5)
    assert len(mailbox.to("csm@example.com")) == 3
    assert [message["To"] for message in mailbox.messages] == ["csm@example.com"] * 3  # no Bcc smuggled in


async def test_without_smtp_the_sign_in_page_says_to_ask_an_admin(database_url: str) -> None:
    async with running(database_url) as client:
        browser = Browser(client)
        assert "Ask an admin" in (await browser.get("/login")).text
        refused = await browser.post("/login/reset", {"email": "csm@example.com"})
        assert refused.status_code == 409 and "does not send email" in refused.text
    assert await audit_events(database_url, "auth.password_reset_requested") == []


async def test_an_admin_emails_an_invitation_or_a_reset_link_or_shows_it(database_url: str, mailbox: Mailbox) -> None:
    ids = await seed_users(database_url, ("admin@example.com", "admin"), ("csm@example.com", "csm"))
    async with running(database_url, **mailbox.env()) as client:
        admin = Browser(client)
        await admin.login("admin@example.com")
        users = await admin.get("/admin/users")
        assert "Email the link to them" in users.text and "Email a password link" in users.text

        invited = await admin.post(
            "/admin/users/invite", {"email": "new@example.com", "name": "New", "role": "csm", "send_email": "yes"}
        )
        assert invited.status_code == 200 and "on its way to new@example.com" in invited.text
        assert "/login/invite/" not in invited.text  # emailed, so not shown
        invitation = (await delivered(mailbox, "new@example.com", 1))[0]
        assert invitation["Subject"] == "You are invited to CSM Portal"
        link = SET_PASSWORD_PATH.search(text_of(invitation))
        assert link is not None and (await Browser(client).get(link[1])).status_code == 200

        shown = await admin.post(f"/admin/users/{ids['csm@example.com']}/password-link")
        assert "/login/invite/" in shown.text  # handed over by the admin: not emailed
        emailed = await admin.post(f"/admin/users/{ids['csm@example.com']}/password-link", {"send_email": "yes"})
        assert "on its way to csm@example.com" in emailed.text
        reset = await delivered(mailbox, "csm@example.com", 1)
        assert [message["Subject"] for message in reset] == ["Choose a new password"]
        assert "admin@example.com" in text_of(reset[0])  # who did it

        listed = await admin.get("/admin/users")
        assert "Security emails" in listed.text and listed.text.count('<span class="sec-pill ok">sent</span>') == 2
    async with database(database_url) as session:
        skipped = await session.scalar(
            select(SecurityEmail.error).where(
                SecurityEmail.action == "user.password_link_issued", SecurityEmail.state == "skipped"
            )
        )
    assert skipped == "not emailed (an admin handed the link over)"
    assert len(mailbox.to("csm@example.com")) == 1


async def _event(url: str, action: str, email: str) -> None:
    async with database(url) as session:
        await record_as(session, CLI, action, object_type="user", object_id=email)


async def test_refusals_are_tried_again_later_three_times(database_url: str) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    now = dt.datetime.now(dt.UTC)
    await _event(database_url, "user.password_changed", "csm@example.com")
    await _event(database_url, "user.password_changed", "nobody@example.com")
    engine = create_engine(database_url)
    factory = session_factory(engine)
    try:
        with smtp_server() as mailbox:
            settings = settings_for(database_url, **mailbox.env())
            mailbox.refused.add("csm@example.com")
            first = await send_security_emails(factory, settings, now=now)
            assert first == {"failed": 1, "skipped": 1}  # refused; no such user
            assert await send_security_emails(factory, settings, now=now) == {}  # waits before trying again
            later = [now + dt.timedelta(minutes=minutes) for minutes in (3, 8, 20)]
            assert await send_security_emails(factory, settings, now=later[0]) == {"failed": 1}
            assert await send_security_emails(factory, settings, now=later[1]) == {"failed": 1}
            assert await send_security_emails(factory, settings, now=later[2]) == {}  # three attempts made
            mailbox.refused.clear()
            assert await send_security_emails(factory, settings, now=later[2]) == {}
            assert mailbox.messages == []
        async with session_scope(factory) as session:
            row = await session.scalar(select(SecurityEmail).where(SecurityEmail.recipient == "csm@example.com"))
        assert row is not None and row.state == "failed" and row.attempts == 3 and "550" in (row.error or "")
    finally:
        await engine.dispose()


async def test_events_older_than_a_day_are_not_emailed(database_url: str) -> None:
    """Say SMTP is configured for the first time: yesterday's events stay in the audit log only."""
    await seed_users(database_url, ("csm@example.com", "csm"))
    await _event(database_url, "user.2fa_disabled", "csm@example.com")
    engine = create_engine(database_url)
    try:
        with smtp_server() as mailbox:
            settings = settings_for(database_url, **mailbox.env())
            tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(hours=24, minutes=1)
            assert await send_security_emails(session_factory(engine), settings, now=tomorrow) == {}
            assert mailbox.messages == []
            assert await send_security_emails(session_factory(engine), settings) == {"sent": 1}
    finally:
        await engine.dispose()


async def test_two_senders_send_each_email_once_and_a_send_cut_short_is_not_repeated(database_url: str) -> None:
    await seed_users(database_url, *((f"user{number}@example.com", "viewer") for number in range(6)))
    for number in range(6):
        await _event(database_url, "user.recovery_codes_regenerated", f"user{number}@example.com")
    engine = create_engine(database_url)
    factory = session_factory(engine)
    try:
        with smtp_server() as mailbox:
            settings = settings_for(database_url, **mailbox.env())
            mailbox.hang_up.add("user0@example.com")
            results = await asyncio.gather(*(send_security_emails(factory, settings) for _ in range(3)))
            assert sum(result["sent"] for result in results) == 5
            assert sum(result["unconfirmed"] for result in results) == 1
            mailbox.hang_up.clear()
            assert await send_security_emails(factory, settings) == {}  # left to a person, not sent again
            assert sorted(message["To"] for message in mailbox.messages) == [
                f"user{number}@example.com" for number in range(6)
            ]
    finally:
        await engine.dispose()


async def test_a_browser_unseen_for_longer_than_its_cookie_lives_is_forgotten(database_url: str) -> None:
    ids = await seed_users(database_url, ("csm@example.com", "csm"))
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=401)
    async with database(database_url) as session:
        session.add(
            KnownDevice(
                user_id=ids["csm@example.com"], device_hash="0" * 64, first_seen_at=long_ago, last_seen_at=long_ago
            )
        )
    async with database(database_url) as session:
        user = await session.get(User, ids["csm@example.com"])
        assert user is not None
        token, new = await remember_device(session, user, None, "Firefox")
    assert new  # the user had a browser before: this one is news
    async with database(database_url) as session:
        rows = list(await session.scalars(select(KnownDevice)))
    assert [(row.device_hash, row.user_agent) for row in rows] == [
        (hashlib.sha256(token.encode()).hexdigest(), "Firefox")
    ]


async def test_a_user_sees_their_browsers_and_forgets_the_others_so_a_sign_in_from_one_is_news_again(
    database_url: str, mailbox: Mailbox
) -> None:
    await seed_users(database_url, ("csm@example.com", "csm"))
    credentials = {"email": "csm@example.com", "password": PASSWORD}
    async with running(database_url, **mailbox.env()) as client:
        laptop, phone = Browser(client), Browser(client)
        await laptop.post("/login", credentials, headers={"user-agent": "Laptop"})
        await phone.post("/login", credentials, headers={"user-agent": "Phone"})
        assert len(await delivered(mailbox, "csm@example.com", 1)) == 1  # the phone was news

        async def browsers() -> str:
            page = (await laptop.get("/settings/security")).text
            return page[page.index("Browsers you signed in from") :].split("</section>")[0]

        listed = await browsers()
        assert "Laptop" in listed and "Phone" in listed
        assert listed.count("this browser") == 1 and "Forget the other browsers" in listed

        forgot = await laptop.post("/settings/security/browsers/forget-others")
        assert location(forgot) == "/settings/security?ok=browsers-forgotten"
        listed = await browsers()
        assert "Laptop" in listed and "Phone" not in listed and "Forget the other browsers" not in listed
        await phone.post("/logout")
        await phone.post("/login", credentials, headers={"user-agent": "Phone"})
        told = await delivered(mailbox, "csm@example.com", 2)
    assert [message["Subject"] for message in told] == ["New sign-in to your account"] * 2
    (event,) = await audit_events(database_url, "user.browsers_forgotten")
    assert event.detail == {"forgotten": 1}
