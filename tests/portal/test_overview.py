"""The Customer Overview and its JSON twin: filters, sort and paging in the URL, totals, htmx fragments."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from server.db.models import Account
from tests.portal.conftest import AS_OF, Portal, db_rows

ADMIN = "admin@test.csm"


async def all_accounts(portal: Portal) -> list[Account]:
    return [row[0] for row in await db_rows(portal.db.url, select(Account).order_by(Account.id))]


async def test_the_api_lists_every_customer_with_paging(portal: Portal) -> None:
    admin = await portal.as_user(ADMIN)
    accounts = await all_accounts(portal)
    first = (await admin.get("/api/customers?per_page=25")).json()
    second = (await admin.get("/api/customers?per_page=25&page=2")).json()
    third = (await admin.get("/api/customers?per_page=25&page=3")).json()
    assert first["total"] == len(accounts) == 60
    assert (first["page"], first["pages"], first["per_page"]) == (1, 3, 25)
    ids = [item["id"] for page in (first, second, third) for item in page["items"]]
    assert sorted(ids) == sorted(account.id for account in accounts)  # every customer once, no overlap
    # The default sort is CHI ascending (worst first), unscored last.
    chis = [item["chi"] for item in first["items"] + second["items"] + third["items"] if item["chi"] is not None]
    assert chis == sorted(chis)


@pytest.mark.parametrize(
    ("query", "check"),
    [
        ("tier=T1&tier=T2", lambda a: a.tier in ("T1", "T2")),
        ("band=Critical", lambda a: a.band == "Critical"),
        ("segment=renewal-watch", lambda a: "renewal-watch" in a.policy_segments),
        ("product=WAS", lambda a: "WAS" in a.products),
        ("product=VM&product=PC&product_mode=all", lambda a: {"VM", "PC"} <= set(a.products)),
        ("product=VM&product=WAS", lambda a: bool({"VM", "WAS"} & set(a.products))),
        ("status=no_order", lambda a: not a.has_active_order),
        ("status=overdue", lambda a: a.has_active_order and a.facts.get("overdue_invoices", 0) > 0),
        ("renewal=90", lambda a: a.renewal_date is not None and 0 <= (a.renewal_date - AS_OF).days <= 90),
    ],
)
async def test_each_filter_selects_exactly_the_matching_customers(portal: Portal, query: str, check: object) -> None:
    admin = await portal.as_user(ADMIN)
    expected = sorted(a.id for a in await all_accounts(portal) if check(a))  # type: ignore[operator]
    assert expected, f"the demo data has customers for {query}"
    body = (await admin.get(f"/api/customers?{query}&per_page=200")).json()
    assert sorted(item["id"] for item in body["items"]) == expected
    assert body["total"] == len(expected)
    page = await admin.get(f"/?{query}&per_page=200")
    assert page.status_code == 200
    assert all(f'data-account="{account_id}"' in page.text for account_id in expected)
    assert page.text.count('data-account="') == len(expected)


async def test_free_text_and_csm_filters(portal: Portal) -> None:
    admin = await portal.as_user(ADMIN)
    accounts = await all_accounts(portal)
    target = accounts[5]
    word = target.name.split()[0]
    body = (await admin.get("/api/customers", params={"q": word.lower(), "per_page": 200})).json()
    assert target.id in [item["id"] for item in body["items"]]
    assert all(word.lower() in item["name"].lower() or word.lower() in item["id"] for item in body["items"])
    csm = portal.portfolio.csms[1]
    body = (await admin.get("/api/customers", params={"csm": csm, "per_page": 200})).json()
    assert sorted(item["id"] for item in body["items"]) == sorted(portal.portfolio.of(csm))
    # LIKE wildcards in the text are literal.
    assert (await admin.get("/api/customers", params={"q": "%"})).json()["total"] == 0


async def test_sort_by_acv_descending_and_by_name(portal: Portal) -> None:
    admin = await portal.as_user(ADMIN)
    body = (await admin.get("/api/customers?sort=acv&dir=desc&per_page=200")).json()
    acvs = [item["acv"] for item in body["items"]]
    assert acvs == sorted(acvs, reverse=True)
    assert (body["sort"], body["dir"]) == ("acv", "desc")
    body = (await admin.get("/api/customers?sort=name&per_page=200")).json()
    names = [item["name"].lower() for item in body["items"]]
    assert names == sorted(names)


async def test_invalid_parameters_are_400_naming_the_field(portal: Portal) -> None:
    admin = await portal.as_user(ADMIN)
    for query, field in [
        ("tier=T9", "tier"),
        ("band=Happyish", "band"),
        ("sort=colour", "sort"),
        ("dir=up", "dir"),
        ("renewal=-3", "renewal"),
        ("segment=nope", "segment"),
        ("tag=abc", "tag"),
        ("product_mode=some", "product_mode"),
    ]:
        response = await admin.get(f"/api/customers?{query}")
        assert response.status_code == 400, query
        body = response.json()
        named = body.get("field") or " ".join(error.get("key", "") for error in body.get("errors", []))
        assert field in named, (query, body)
    page = await admin.get("/?tier=T9")
    assert page.status_code == 400
    assert "unknown tier" in page.text


async def test_totals_add_up_over_the_filter(portal: Portal) -> None:
    admin = await portal.as_user(ADMIN)
    accounts = await all_accounts(portal)
    totals = (await admin.get("/api/customers/totals")).json()
    assert totals["customers"] == len(accounts)
    for currency in {a.currency for a in accounts}:
        assert totals["acv"][currency] == pytest.approx(sum(a.acv for a in accounts if a.currency == currency))
    bands = {band["name"]: band["count"] for band in totals["bands"]}
    assert sum(bands.values()) == len(accounts)
    for name, count in bands.items():
        assert count == sum(1 for a in accounts if (a.band or "Not scored") == name)
    renewing = [a for a in accounts if a.renewal_date and 0 <= (a.renewal_date - AS_OF).days <= 90]
    assert totals["renewals"] == len(renewing)
    filtered = (await admin.get("/api/customers/totals?tier=T1")).json()
    assert filtered["customers"] == sum(1 for a in accounts if a.tier == "T1")
    tasks = (await admin.get("/api/tasks/counters")).json()
    assert totals["open_high"] == tasks["high"]
    assert totals["open_tasks"] == tasks["total"]


async def test_the_page_keeps_filter_sort_and_page_in_its_links(portal: Portal) -> None:
    admin = await portal.as_user(ADMIN)
    page = await admin.get("/?tier=T3&tier=T4&sort=acv&dir=desc&per_page=10")
    assert page.status_code == 200
    assert 'aria-sort="descending"' in page.text
    # the "next page" link keeps the filter, the sort and the page size
    match = re.search(r'<a href="([^"]+)"[^>]*rel="next"', page.text)
    assert match, "a link to page 2"
    params = parse_qs(urlsplit(html.unescape(match[1])).query)
    assert params["tier"] == ["T3", "T4"]
    assert params["sort"] == ["acv"]
    assert params["dir"] == ["desc"]
    assert params["per_page"] == ["10"]
    assert params["page"] == ["2"]


async def test_htmx_gets_the_results_fragment_with_a_canonical_url(portal: Portal) -> None:
    admin = await portal.as_user(ADMIN)
    response = await admin.htmx("GET", "/?q=&tier=T2&renewal=&product_mode=any&tag_mode=any", "results")
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="results"')
    assert "<html" not in response.text
    assert response.headers["HX-Push-Url"] == "/?tier=T2"
    assert "HX-Request" in response.headers.get("vary", "")


async def test_the_dial_explains_why_not_100(portal: Portal, snapshot: object) -> None:
    """The reasons tooltip is text people read: its rendering is kept as a snapshot."""
    admin = await portal.as_user(ADMIN)
    accounts = await all_accounts(portal)
    account = next(a for a in accounts if a.chi is not None and a.chi < 100 and len(a.reasons) >= 3)
    page = await admin.get(f"/customers/{account.id}/chi")
    assert page.status_code == 200
    start = page.text.index(f'id="why-head-{account.id}"')
    tooltip = page.text[start : page.text.index("</span>\n</span>", start)]
    for reason in account.reasons[:3]:
        assert reason["text"] in tooltip.replace("&#39;", "'")
    assert "Why not 100" in tooltip
    assert tooltip == snapshot
