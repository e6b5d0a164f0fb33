"""A forgotten password in Chromium: the sign-in page's link, the email with its set-password
link (through the demo server's SMTP server), a new password, and signing in with it."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Browser, expect

from server.db.session import create_engine, session_factory, session_scope
from server.services.audit import CLI
from server.services.users import create_user
from tests.browser.conftest import SCREENSHOTS, DemoServer, Problems

pytestmark = pytest.mark.browser

EMAIL = "forgetful@demo.csm"  # a user of its own: the other browser tests keep their passwords
NEW_PASSWORD = "remembered at last, 2026"
SET_PASSWORD_LINK = re.compile(r"https?://\S+/login/invite/\S+")


async def _create_viewer(url: str) -> None:
    engine = create_engine(url)
    try:
        async with session_scope(session_factory(engine)) as session:
            await create_user(session, EMAIL, "viewer", "a password long forgotten 1", "Forgetful", who=CLI)
    finally:
        await engine.dispose()


def test_a_forgotten_password_is_replaced_through_the_emailed_link(chromium: Browser, demo_server: DemoServer) -> None:
    # In a thread of its own: Playwright's sync API runs an event loop in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _create_viewer(demo_server.database_url)).result()
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    try:
        page = context.new_page()
        problems = Problems()
        problems.watch(page)
        page.goto(demo_server.url + "/login")
        page.click("text=Forgot your password?")
        page.wait_for_url(demo_server.url + "/login/reset")
        page.fill("#email", EMAIL)
        page.click("button[type=submit]")
        expect(page.locator("p.flash.ok")).to_contain_text(f"If {EMAIL} has an account, a link")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "forgot-password-sent.png"))

        deadline = time.monotonic() + 20  # the server's sender looks every 5 seconds
        while not demo_server.mailbox.to(EMAIL) and time.monotonic() < deadline:
            time.sleep(0.2)
        (email,) = demo_server.mailbox.to(EMAIL)
        assert email["Subject"] == "Choose a new password"
        body = email.get_body(("plain",))
        assert body is not None
        link = SET_PASSWORD_LINK.search(body.get_content())
        assert link is not None

        page.goto(link[0])
        expect(page.locator("h1")).to_be_visible()
        page.fill("#password", NEW_PASSWORD)
        page.fill("#confirm", NEW_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/login\?ok=password-set"))
        page.fill("#email", EMAIL)
        page.fill("#password", NEW_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(demo_server.url + "/")
        expect(page.locator("h1").first).to_be_visible()
        page.goto(demo_server.url + "/settings/security")
        browsers = page.locator("section[aria-labelledby=browsers-title]")
        expect(browsers.get_by_text("this browser")).to_be_visible()
        page.screenshot(path=str(SCREENSHOTS / "settings-security.png"), full_page=True)
        assert problems.seen == [], "\n".join(problems.seen)
    finally:
        context.close()
