"""A CSM sees only their own customers: in lists, counts, totals, tabs, the API, exports and every write.

Someone else's customer answers exactly like a customer that does not exist (404), so ids
cannot be probed. Read-only roles may read but not write.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from server.db.models import Account, AccountTag, TaskState
from tests.portal.conftest import Portal, db_rows, tasks_of

TABS = ("tasks", "chi", "commercial", "usage", "activity", "retention")


async def test_lists_counts_and_totals_hold_only_the_csms_customers(portal: Portal) -> None:
    me, other = portal.portfolio.csms[0], portal.portfolio.csms[1]
    mine = set(portal.portfolio.of(me))
    csm = await portal.as_user(me)
    body = (await csm.get("/api/customers?per_page=200")).json()
    assert {item["id"] for item in body["items"]} == mine
    assert body["total"] == len(mine)
    # Asking for another CSM's book gives nothing, not their customers.
    assert (await csm.get(f"/api/customers?csm={other}")).json()["total"] == 0
    totals = (await csm.get("/api/customers/totals")).json()
    assert totals["customers"] == len(mine)
    rows = await db_rows(portal.db.url, select(Account.acv, Account.currency).where(Account.csm == me))
    for currency in {currency for _, currency in rows}:
        assert round(totals["acv"][currency], 2) == round(sum(a for a, c in rows if c == currency), 2)
    page = await csm.get("/?per_page=200")
    assert page.text.count('data-account="') == len(mine)
    assert all(f'data-account="{account_id}"' not in page.text for account_id in portal.portfolio.of(other))
    # the CSM filter is not even offered to a CSM
    assert 'name="csm"' not in page.text


async def test_task_counts_and_lists_hold_only_the_csms_tasks(portal: Portal) -> None:
    me = portal.portfolio.csms[0]
    mine = portal.portfolio.of(me)
    csm = await portal.as_user(me)
    body = (await csm.get("/api/tasks?per_page=200&resolved=1&state=not_started")).json()
    expected = {task.id for task in await tasks_of(portal.db.url, mine)}
    assert {item["id"] for item in body["items"]} == expected
    assert all(item["account_id"] in mine for item in body["items"])
    manager = await portal.as_user("manager@test.csm")
    everyone = (await manager.get("/api/tasks/counters")).json()
    own = (await csm.get("/api/tasks/counters")).json()
    assert own["total"] < everyone["total"]
    # a CSM cannot widen the scope with ?csm=
    assert (await csm.get(f"/api/tasks/counters?csm={portal.portfolio.csms[1]}")).json() == own
    scoped = (await manager.get(f"/api/tasks/counters?csm={me}")).json()
    assert scoped == own


async def test_someone_elses_customer_is_404_everywhere(portal: Portal) -> None:
    me, other = portal.portfolio.csms[0], portal.portfolio.csms[1]
    foreign = portal.portfolio.of(other)[0]
    csm = await portal.as_user(me)
    for path in (
        f"/customers/{foreign}",
        *(f"/customers/{foreign}/{tab}" for tab in TABS),
        f"/api/customers/{foreign}",
        *(f"/api/customers/{foreign}/{tab}" for tab in TABS),
    ):
        response = await csm.get(path)
        assert response.status_code == 404, path
        assert foreign not in json.dumps(dict(response.headers))
    # ... exactly like an id that does not exist
    unknown = await csm.get("/api/customers/acc-does-not-exist")
    assert unknown.status_code == 404
    assert (await csm.get(f"/api/customers/{foreign}")).json()["detail"].replace(foreign, "X") == unknown.json()[
        "detail"
    ].replace("acc-does-not-exist", "X")
    # and nothing of it reached their open tabs
    assert foreign not in {tab["id"] for tab in (await csm.get("/api/preferences/tabs")).json()}


async def test_writes_on_someone_elses_customer_are_refused_and_change_nothing(portal: Portal) -> None:
    me, other = portal.portfolio.csms[0], portal.portfolio.csms[1]
    foreign = portal.portfolio.of(other)[0]
    mine = portal.portfolio.of(me)[0]
    foreign_task = (await tasks_of(portal.db.url, portal.portfolio.of(other)))[0]
    my_task = (await tasks_of(portal.db.url, portal.portfolio.of(me)))[0]
    csm = await portal.as_user(me)
    tag = (await csm.post_json("/api/tags", {"name": "Mine only"})).json()

    assert (await csm.post_json(f"/api/tasks/{foreign_task.id}/transitions", {"to": "started"})).status_code == 404
    assert (await csm.post_json(f"/api/tasks/{foreign_task.id}/comments", {"text": "hello"})).status_code == 404
    assert (await csm.get(f"/api/tasks/{foreign_task.id}")).status_code == 404
    assert (await csm.get(f"/tasks/{foreign_task.id}/history")).status_code == 404
    # one foreign id in a bulk request: 404 and nothing changes, not even the CSM's own task
    bulk = await csm.post_json("/api/tasks/bulk", {"task_ids": [my_task.id, foreign_task.id], "action": "start"})
    assert bulk.status_code == 404
    assert await db_rows(portal.db.url, select(TaskState)) == []
    page_bulk = await csm.post(
        "/tasks/bulk", [("task_id", my_task.id), ("task_id", foreign_task.id), ("action", "start")]
    )
    assert page_bulk.status_code == 404
    assert await db_rows(portal.db.url, select(TaskState)) == []

    assign = await csm.post_json("/api/tags/assign", {"account_ids": [mine, foreign], "tag_ids": [tag["id"]]})
    assert assign.status_code == 404
    form = await csm.post(
        "/customers/tags", [("account_id", foreign), ("tag_id", str(tag["id"])), ("action", "assign")]
    )
    assert form.status_code == 404
    assert await db_rows(portal.db.url, select(AccountTag)) == []

    assert (await csm.post_json(f"/api/customers/{foreign}/sentiment", {"value": "positive"})).status_code == 404
    assert (
        await csm.put_json(f"/api/customers/{foreign}/meetings/any/outcome", {"outcome": "Went well"})
    ).status_code == 404


async def test_exports_hold_only_the_csms_customers(portal: Portal) -> None:
    me = portal.portfolio.csms[0]
    csm = await portal.as_user(me)
    response = await csm.get("/export/customers.jsonl")
    assert response.status_code == 200
    ids = {json.loads(line)["account_id"] for line in response.text.splitlines()}
    assert ids == set(portal.portfolio.of(me))
    api = await csm.get(f"/api/customers/export?format=csv&csm={portal.portfolio.csms[1]}")
    assert api.status_code == 200
    assert api.text.splitlines()[1:] == []  # the header only


async def test_read_only_roles_read_but_do_not_write(portal: Portal) -> None:
    viewer = await portal.as_user("viewer@test.csm")
    task = (await tasks_of(portal.db.url, portal.portfolio.of(portal.portfolio.csms[0])))[0]
    assert (await viewer.get("/api/customers")).json()["total"] == 60
    assert (await viewer.get(f"/api/tasks/{task.id}")).status_code == 200
    refused = await viewer.post_json(f"/api/tasks/{task.id}/transitions", {"to": "started"})
    assert refused.status_code == 403
    assert (await viewer.post_json("/api/tags", {"name": "x"})).status_code == 403
    assert (await viewer.post(f"/tasks/{task.id}/state", {"to": "started"})).status_code == 403
    page = await viewer.get(f"/customers/{task.account_id}/tasks")
    assert page.status_code == 200
    assert 'action="/tasks/' not in page.text  # no state buttons for a viewer
    ops = await portal.as_user("ops@test.csm")
    assert (await ops.post_json(f"/api/tasks/{task.id}/transitions", {"to": "started"})).status_code == 403
    assert await db_rows(portal.db.url, select(TaskState)) == []


async def test_anonymous_requests_are_sent_to_sign_in(portal: Portal) -> None:
    response = await portal.client.get("/api/customers", follow_redirects=False)
    assert response.status_code == 401
    page = await portal.client.get("/dashboard?severity=High", follow_redirects=False)
    assert page.status_code in (302, 303)
    assert page.headers["location"].startswith("/login?next=")
    assert "Task" not in response.text
