"""A CSM's morning in Chromium: sort and filter the overview, open customers as tabs, walk the
sub-tabs, work a task, bulk-tag, read why a score is not 100. No console errors anywhere."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Session

pytestmark = pytest.mark.browser

TABS = [
    ("tasks", "Tasks"),
    ("chi", "CHI breakdown"),
    ("commercial", "Commercial"),
    ("usage", "Product usage"),
    ("activity", "Activity"),
    ("retention", "Retention signals"),
]


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_sort_and_filter_the_overview_and_the_url_follows(csm_session: Session) -> None:
    page = csm_session.page
    csm_session.go("/")
    expect(page.locator("h1")).to_have_text("Customers")
    csm_session.screenshot("overview")

    # Sort by ACV: the first click sorts descending (largest first), the second ascending.
    page.locator("th.col-acv a.sort").click()
    page.wait_for_url(re.compile(r"sort=acv"))
    assert query_of(page.url)["dir"] == ["desc"]
    expect(page.locator("th.col-acv")).to_have_attribute("aria-sort", "descending")
    page.locator("th.col-acv a.sort").click()
    page.wait_for_url(re.compile(r"dir=asc"))
    expect(page.locator("th.col-acv")).to_have_attribute("aria-sort", "ascending")

    # Filter by band (a checkbox in the Band dropdown): the URL keeps the sort and adds the band.
    page.locator("details.dropdown summary", has_text="Band").click()
    page.get_by_label("Critical", exact=True).check()
    page.wait_for_url(re.compile(r"band=Critical"))
    params = query_of(page.url)
    assert params["band"] == ["Critical"]
    assert params["sort"] == ["acv"]
    expect(page.locator("tbody tr[data-account]").first).to_be_visible()
    bands = page.locator("tbody .dial-band").all_inner_texts()
    assert bands and set(bands) == {"Critical"}

    # The deep link works on its own: reload shows the same filtered, sorted list.
    rows_before = page.locator("tbody tr[data-account]").evaluate_all("rows => rows.map(r => r.dataset.account)")
    page.reload()
    rows_after = page.locator("tbody tr[data-account]").evaluate_all("rows => rows.map(r => r.dataset.account)")
    assert rows_after == rows_before

    # Free text narrows it further, still in the URL.
    first_name = page.locator("tbody .customer-link").first.inner_text()
    page.fill("#q", first_name)
    page.wait_for_url(re.compile(r"q="))
    expect(page.locator("tbody .customer-link").first).to_have_text(first_name)


def test_open_two_customers_as_tabs_and_they_survive_a_reload(csm_session: Session) -> None:
    page = csm_session.page
    csm_session.go("/?sort=name")
    links = page.locator("tbody .customer-link")
    first, second = links.nth(0).inner_text(), links.nth(1).inner_text()
    links.nth(0).click()
    expect(page.locator("#customer-name")).to_have_text(first)
    page.go_back()
    page.locator("tbody .customer-link").nth(1).click()
    expect(page.locator("#customer-name")).to_have_text(second)
    strip = page.locator("#tabstrip .ctab-name")
    expect(strip).to_have_text([first, second])
    expect(page.locator("#tabstrip .ctab.active .ctab-name")).to_have_text(second)

    page.reload()
    expect(page.locator("#tabstrip .ctab-name")).to_have_text([first, second])
    # the strip switches customers, and is there on the other pages too
    page.locator("#tabstrip .ctab a", has_text=first).click()
    expect(page.locator("#customer-name")).to_have_text(first)
    csm_session.go("/dashboard")
    expect(page.locator("#tabstrip .ctab-name")).to_have_text([first, second])
    # closing a tab removes it for good
    page.locator(f"#tabstrip button[aria-label='Close the tab of {second}']").click()
    expect(page.locator("#tabstrip .ctab-name")).to_have_text([first])
    page.reload()
    expect(page.locator("#tabstrip .ctab-name")).to_have_text([first])


def test_walk_all_six_sub_tabs(csm_session: Session) -> None:
    page = csm_session.page
    csm_session.go("/?sort=chi")
    page.locator("tbody .customer-link").first.click()
    page.wait_for_url(re.compile(r"/customers/[^/]+/tasks$"))
    account = urlsplit(page.url).path.split("/")[2]
    for key, label in TABS:
        page.locator("nav.subtabs a", has_text=label).click()
        page.wait_for_url(re.compile(rf"/customers/{account}/{key}$"))
        expect(page.locator("nav.subtabs a[aria-current='page']")).to_contain_text(label)
        expect(page.locator("#tab-panel h2").first).to_be_visible()
        if key in ("chi", "usage", "activity"):
            page.wait_for_selector("#tab-panel .chart .uplot, #tab-panel p.muted")
        csm_session.screenshot(f"customer-{key}", full_page=key in ("chi", "tasks"))
    # each sub-tab is a plain URL that loads on its own
    for key, label in TABS:
        csm_session.go(f"/customers/{account}/{key}")
        expect(page.locator("nav.subtabs a[aria-current='page']")).to_contain_text(label)
    # the usage range lives in the URL too
    csm_session.go(f"/customers/{account}/usage")
    page.locator(".segmented a", has_text="30 days").click()
    page.wait_for_url(re.compile(r"days=30"))
    expect(page.locator(".segmented a.active")).to_have_text("30 days")


def test_change_a_tasks_state_and_it_is_still_there_after_a_reload(csm_session: Session) -> None:
    page = csm_session.page
    csm_session.go("/dashboard")
    csm_session.screenshot("dashboard")
    task = page.locator("article.task[data-state='not_started']").first
    task_id = task.get_attribute("data-task")
    assert task_id
    card = page.locator(f"#task-{task_id}")
    card.locator("button[data-action='started']").click()
    expect(card.locator(".task-state .state")).to_have_text("Started")
    expect(page.locator("#flash")).to_contain_text("is now started")
    card.locator("button[data-action='in_progress']").click()
    expect(card.locator(".task-state .state")).to_have_text("In progress")

    page.reload()
    card = page.locator(f"#task-{task_id}")
    expect(card.locator(".task-state .state")).to_have_text("In progress")
    # and the history says who did it
    card.locator("details.task-history summary").click()
    expect(card.locator(".history li").first).to_contain_text("in progress")
    expect(card.locator(".history li").first).to_contain_text(csm_session.server.csm(0))

    # comment in place
    card.locator("details.comment summary").click()
    card.locator("textarea[name=text]").fill("Spoke to the admin; fix planned for Friday.")
    card.locator("details.comment button[type=submit]").click()
    expect(page.locator(f"#task-{task_id} .task-comment")).to_contain_text("fix planned for Friday")


def test_bulk_tag_from_the_overview_selection(csm_session: Session) -> None:
    page = csm_session.page
    csm_session.go("/tags")
    page.fill("#new-tag", "QBR this quarter")
    page.select_option("#new-tag-colour", "purple")
    page.click("text=Create tag")
    expect(page.locator("table.grid")).to_contain_text("QBR this quarter")

    csm_session.go("/?sort=name")
    rows = page.locator("tbody tr[data-account]")
    chosen = [rows.nth(index).get_attribute("data-account") for index in range(3)]
    for account in chosen:
        page.locator(f"tr[data-account='{account}'] input[data-select-row]").check()
    expect(page.locator("[data-bulk-count]")).to_have_text("3 selected")
    page.select_option("#bulk-tag", label="QBR this quarter")
    page.locator("button[data-bulk-action][value=assign]").click()
    expect(page.locator("#flash")).to_contain_text("Tagged 3 customers")
    for account in chosen:
        expect(page.locator(f"tr[data-account='{account}'] .col-tags")).to_contain_text("QBR this quarter")
    page.reload()
    for account in chosen:
        expect(page.locator(f"tr[data-account='{account}'] .col-tags")).to_contain_text("QBR this quarter")
    # filter by the tag
    page.locator("details.dropdown summary", has_text="Tags").click()
    page.get_by_label("QBR this quarter", exact=True).check()
    page.wait_for_url(re.compile(r"tag=\d+"))
    expect(page.locator("tbody tr[data-account]")).to_have_count(3)


def test_hover_or_focus_a_dial_to_read_why_not_100(csm_session: Session) -> None:
    page = csm_session.page
    csm_session.go("/?sort=chi")
    dial = page.locator("tbody .dial-wrap").first
    tooltip = dial.locator(".why")
    expect(tooltip).to_be_hidden()
    dial.hover()
    expect(tooltip).to_be_visible()
    expect(tooltip).to_contain_text("Why not 100")
    reasons = tooltip.locator(".why-list li").all_inner_texts()
    assert reasons and all(re.match(r"−\d", text) for text in reasons)
    page.mouse.move(0, 0)
    expect(tooltip).to_be_hidden()
    # keyboard users get it on focus
    dial.focus()
    expect(tooltip).to_be_visible()
    csm_session.screenshot("overview-why-not-100")


def test_a_manager_sees_every_portfolio_and_can_scope_the_dashboard(manager_session: Session) -> None:
    page = manager_session.page
    manager_session.go("/dashboard")
    total = int(page.locator(".counter-total .counter-value").inner_text())
    csm = manager_session.server.csm(0)
    page.select_option("#scope", csm)
    page.wait_for_url(re.compile(r"csm="))
    scoped = int(page.locator(".counter-total .counter-value").inner_text())
    assert 0 < scoped < total
    manager_session.go("/settings")
    expect(page.locator("h1")).to_have_text("Settings")
    page.locator("button[aria-label='Move Trend up']").click()
    expect(page.locator("ol.column-list li").first).to_have_attribute("data-column", "trend")
    manager_session.screenshot("settings")
