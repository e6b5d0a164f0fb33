"""The morning digest in Chromium: CSM ops preview a CSM's email as it would be sent (its inline
styles allowed, nothing else), and its button takes a signed-out CSM through sign-in to the
customer's Tasks tab."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from server.services.demo_history import DEMO_PASSWORD
from tests.browser.conftest import DemoServer, Problems, Session

pytestmark = pytest.mark.browser


def test_ops_preview_a_csms_digest_and_its_button_leads_the_csm_to_the_customer(
    ops_session: Session, chromium: Browser, demo_server: DemoServer
) -> None:
    page = ops_session.page
    csm = demo_server.csm(-1)  # not the CSM of the other browser tests: the tabs it opens are its own
    ops_session.go("/console/connectors")
    page.select_option("#csm", csm)
    page.click("form.inline-form button[type=submit]")
    page.wait_for_url(re.compile(r"csm="))
    expect(page.get_by_text("Your tasks for")).to_be_visible()
    with page.context.expect_page() as opened:
        page.click("text=Open the email as sent")
    email = opened.value
    ops_session.problems.watch(email)  # a style refused by the page's policy would be a console error
    email.wait_for_load_state()
    expect(email.locator("h1")).to_contain_text("Good morning")
    button = email.locator("a.button").first
    expect(button).to_be_visible()
    # The inline styles apply: the button is the accent blue, as in a mail client.
    assert button.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(36, 86, 201)"
    console_shot = ops_session.screenshot("digest-preview-console", full_page=False)
    email.screenshot(path=str(console_shot.with_name("digest-email.png")), full_page=True)
    link = button.get_attribute("href")
    assert link is not None and link.startswith(demo_server.url + "/go/")
    email.close()

    # The CSM, signed out, follows the button: sign-in first, then the customer's Tasks tab.
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, locale="en-GB")
    try:
        visitor = context.new_page()
        problems = Problems()
        problems.watch(visitor)
        visitor.goto(link)
        visitor.wait_for_url(re.compile(r"/login\?next="))
        visitor.fill("#email", csm)
        visitor.fill("#password", DEMO_PASSWORD)
        visitor.click("button[type=submit]")
        visitor.wait_for_url(re.compile(r"/customers/[^/]+/tasks"))
        expect(visitor.locator("article.task").first).to_be_visible()
        # Leave the CSM's tab strip as it was (it is kept per user, across sessions).
        visitor.locator("#tabstrip button[aria-label^='Close the tab of']").click()
        expect(visitor.locator("#tabstrip .ctab-name")).to_have_count(0)
        assert problems.seen == [], "\n".join(problems.seen)
    finally:
        context.close()
