"""Customer Detail: the six tabs (pages and JSON), date ranges, sentiment and meeting outcomes that
show at once and are read by the next engine run, and exports."""

from __future__ import annotations

import csv
import io
import json

import msgspec
from sqlalchemy import select

from server.db.models import Account, AccountRecord, AuditEvent, MeetingOutcome, SentimentEntry, Task
from server.db.session import create_engine, session_factory
from server.services.runs import RunRequest, run_in_process
from tests.conftest import POLICY_DIR
from tests.portal.conftest import AS_OF, Portal, db_rows

TABS = ("tasks", "chi", "commercial", "usage", "activity", "retention")


async def account_of(portal: Portal, account_id: str) -> Account:
    return (await db_rows(portal.db.url, select(Account).where(Account.id == account_id)))[0][0]


async def test_every_tab_has_its_url_and_its_json_twin(portal: Portal) -> None:
    me = portal.portfolio.csms[0]
    account_id = portal.portfolio.of(me)[0]
    account = await account_of(portal, account_id)
    csm = await portal.as_user(me)
    for tab in TABS:
        page = await csm.get(f"/customers/{account_id}/{tab}")
        assert page.status_code == 200, tab
        assert 'aria-current="page" class="active"' in page.text
        assert f'href="/customers/{account_id}/{tab}"' in page.text
        assert account.name in page.text
        fragment = await csm.htmx("GET", f"/customers/{account_id}/{tab}", "customer-body")
        assert fragment.status_code == 200
        assert "<html" not in fragment.text
        assert 'class="subtabs"' in fragment.text
        api = await csm.get(f"/api/customers/{account_id}/{tab}")
        assert api.status_code == 200, (tab, api.text[:300])
    assert (await csm.get(f"/customers/{account_id}/nope")).status_code == 404
    detail = (await csm.get(f"/api/customers/{account_id}")).json()
    assert detail["customer"]["id"] == account_id
    assert set(detail["tabs"]) == set(TABS)


async def test_the_tabs_show_the_customers_data(portal: Portal) -> None:
    me = portal.portfolio.csms[0]
    csm = await portal.as_user(me)
    accounts = [await account_of(portal, a) for a in portal.portfolio.of(me)]
    account = max(accounts, key=lambda a: len(a.reasons))

    chi = (await csm.get(f"/api/customers/{account.id}/chi")).json()
    assert chi["chi"] == account.chi
    assert [s["id"] for s in chi["sections"]] == [
        "engagement",
        "one_to_one",
        "support",
        "sentiment",
        "feedback",
        "commercial",
    ]
    assert sum(s["weight"] for s in chi["sections"]) == 100
    lost = {s["id"]: s["points_lost"] for s in chi["sections"]}
    assert lost == account.points_lost
    assert sorted(r["text"] for s in chi["sections"] for r in s["reasons"]) == sorted(
        r["text"] for r in account.reasons
    )
    assert len(chi["history"]) == 1
    assert chi["policy_version_id"] == 1

    commercial = (await csm.get(f"/api/customers/{account.id}/commercial")).json()
    assert commercial["acv"] == account.acv
    assert commercial["renewal_date"] == (account.renewal_date.isoformat() if account.renewal_date else None)
    invoices = msgspec.json.decode(
        (
            await db_rows(
                portal.db.url,
                select(AccountRecord.rows).where(
                    AccountRecord.account_id == account.id, AccountRecord.entity == "invoices"
                ),
            )
        )[0][0]
    )
    assert len(commercial["invoices"]) == len(invoices)
    overdue = [i for i in invoices if i["status"] == "open" and i["due_on"] < AS_OF.isoformat()]
    assert commercial["overdue_count"] == len(overdue)

    usage = (await csm.get(f"/api/customers/{account.id}/usage?days=30")).json()
    assert usage["range"]["preset"] == 30
    assert all(len(p["days"]) <= 30 for p in usage["products"])
    contracted = {p["use"]["code"] for p in usage["products"] if p["use"]["contracted"]}
    assert contracted == set(account.products)
    ranged = (await csm.get(f"/api/customers/{account.id}/usage?from=2026-02-01&to=2026-02-10")).json()
    assert ranged["range"]["start"] == "2026-02-01"
    assert all(p["days"][0] == "2026-02-01" and len(p["days"]) == 10 for p in ranged["products"] if p["days"])
    bad = await csm.get(f"/api/customers/{account.id}/usage?from=2026-02-10&to=2026-02-01")
    assert (bad.status_code, bad.json()["field"]) == (400, "from")
    assert (await csm.get(f"/customers/{account.id}/usage?days=abc")).status_code == 400

    activity = (await csm.get(f"/api/customers/{account.id}/activity")).json()
    assert activity["days_since_login"] == account.facts.get("days_since_login")
    retention = (await csm.get(f"/api/customers/{account.id}/retention")).json()
    assert {s["rule"] for s in retention["signals"]} == {"inactive-scanners", "failed-scans", "schedule-lapsed"}
    firing = {s["task_id"] for s in retention["signals"] if s["firing"]}
    active = {
        row[0]
        for row in await db_rows(
            portal.db.url,
            select(Task.id).where(Task.account_id == account.id, Task.active.is_(True), Task.category == "Churn Risk"),
        )
    }
    assert firing == active
    assert any(t["label"] == "Logins per week" for t in retention["trends"])

    tasks = (await csm.get(f"/api/customers/{account.id}/tasks")).json()
    assert {t["id"] for t in tasks["active"]} == {
        row[0]
        for row in await db_rows(
            portal.db.url, select(Task.id).where(Task.account_id == account.id, Task.active.is_(True))
        )
    }
    assert all(t["evidence"] is not None and t["policy_version_id"] == 1 for t in tasks["active"])
    page = await csm.get(f"/customers/{account.id}/tasks")
    assert "Values that fired it" in page.text
    assert "Thresholds" in page.text


async def test_sentiment_shows_at_once_and_the_next_run_uses_it(portal: Portal) -> None:
    me = portal.portfolio.csms[0]
    csm = await portal.as_user(me)
    accounts = [await account_of(portal, a) for a in portal.portfolio.of(me)]
    account = next(a for a in accounts if a.facts.get("latest_sentiment") != "positive")
    chi_before = account.chi
    recorded = await csm.htmx(
        "POST",
        f"/customers/{account.id}/sentiment",
        "activity-entries",
        data={"value": "positive", "note": "New champion, very engaged"},
    )
    assert recorded.status_code == 200
    assert 'id="activity-entries"' in recorded.text
    assert "New champion, very engaged" in recorded.text
    assert "waiting for the next run" in recorded.text
    # The tab's sentiment card, outside the swapped entries, is redrawn out of band.
    card = recorded.text.split('id="sentiment-card"', 1)[1].split("</div>", 1)[0]
    assert 'hx-swap-oob="true"' in card
    assert "Positive" in card
    api = await csm.post_json(f"/api/customers/{account.id}/sentiment", {"value": "negatively"})
    assert (api.status_code, api.json()["field"]) == (400, "value")
    entries = await db_rows(
        portal.db.url, select(SentimentEntry.value, SentimentEntry.recorded_by, SentimentEntry.recorded_on)
    )
    assert [tuple(e) for e in entries] == [("positive", me, AS_OF)]

    engine = create_engine(portal.db.url)
    try:
        await run_in_process(
            session_factory(engine), RunRequest(folder=portal.portfolio.snapshot, policy_dir=POLICY_DIR, force=True)
        )
    finally:
        await engine.dispose()
    after = await account_of(portal, account.id)
    assert after.facts["latest_sentiment"] == "positive"
    assert after.sections["sentiment"] == 100
    assert after.chi is not None and chi_before is not None and after.chi > chi_before
    page = await csm.get(f"/customers/{account.id}/activity")
    assert "waiting for the next run" not in page.text
    assert ("customer.sentiment_recorded",) in [
        tuple(r) for r in await db_rows(portal.db.url, select(AuditEvent.action))
    ]
    # A second entry the same day is the latest, as the engine reads it.
    again = await csm.htmx("POST", f"/customers/{account.id}/sentiment", "activity-entries", data={"value": "neutral"})
    assert "Neutral" in again.text.split('id="sentiment-card"', 1)[1].split("</div>", 1)[0]


async def test_a_meeting_outcome_resolves_its_task_on_the_next_run(portal: Portal) -> None:
    me_tasks = await db_rows(
        portal.db.url, select(Task).where(Task.rule == "meeting-outcome-missing", Task.active.is_(True))
    )
    assert me_tasks, "the demo data has a meeting without an outcome"
    task = me_tasks[0][0]
    owner = (await account_of(portal, task.account_id)).csm
    csm = await portal.as_user(owner)
    saved = await csm.put_json(
        f"/api/customers/{task.account_id}/meetings/{task.key}/outcome", {"outcome": "Agreed a rollout plan for PC."}
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["recorded_by"] == owner
    page = await csm.get(f"/customers/{task.account_id}/activity")
    assert "Agreed a rollout plan for PC." in page.text
    assert (
        await csm.put_json(f"/api/customers/{task.account_id}/meetings/mtg-nope/outcome", {"outcome": "x"})
    ).status_code == 404
    assert (
        await csm.put_json(f"/api/customers/{task.account_id}/meetings/{task.key}/outcome", {"outcome": ""})
    ).status_code == 400
    form = await csm.post(
        f"/customers/{task.account_id}/meetings/{task.key}/outcome", {"outcome": "Agreed a rollout plan."}
    )
    assert (form.status_code, form.headers["location"]) == (303, f"/customers/{task.account_id}/activity")
    assert len(await db_rows(portal.db.url, select(MeetingOutcome))) == 1

    engine = create_engine(portal.db.url)
    try:
        await run_in_process(
            session_factory(engine), RunRequest(folder=portal.portfolio.snapshot, policy_dir=POLICY_DIR, force=True)
        )
    finally:
        await engine.dispose()
    resolved = (await db_rows(portal.db.url, select(Task).where(Task.id == task.id)))[0][0]
    assert resolved.active is False
    assert resolved.resolved_at is not None
    tab = (await csm.get(f"/api/customers/{task.account_id}/tasks")).json()
    assert task.id in [t["id"] for t in tab["resolved"]]


async def test_exports_follow_the_filter_and_are_audited(portal: Portal) -> None:
    admin = await portal.as_user("admin@test.csm")
    expected = sorted(row[0] for row in await db_rows(portal.db.url, select(Account.id).where(Account.tier == "T2")))
    response = await admin.get("/export/customers.csv?tier=T2&sort=name&page=3")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(row["account_id"] for row in rows) == expected  # every page of the filter, not page 3
    names = [row["name"].lower() for row in rows]
    assert names == sorted(names)
    assert all(row["tier"] == "T2" for row in rows)
    lines = (await admin.get("/export/customers.jsonl?tier=T2")).text.splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["account_id"] for r in records) == expected
    assert set(records[0]) >= {"account_id", "chi", "band", "acv", "currency", "reasons", "tags", "open_tasks"}
    audit = await db_rows(portal.db.url, select(AuditEvent).where(AuditEvent.action == "export.customers"))
    assert len(audit) == 2
    assert audit[0][0].detail["rows"] == len(expected)
    assert "tier=T2" in audit[0][0].detail["filter"]
    assert (await admin.get("/api/customers/export?format=xml")).json()["field"] == "format"
