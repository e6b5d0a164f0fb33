"""Tags (create, rename, delete, bulk assign and remove, filter by), saved filters, column preferences
and the strip of open customer tabs."""

from __future__ import annotations

from sqlalchemy import select

from server.db.models import AccountTag, AuditEvent, UserPreference
from tests.portal.conftest import Portal, db_rows


async def test_tag_lifecycle_and_bulk_assign_remove(portal: Portal) -> None:
    me = portal.portfolio.csms[0]
    mine = portal.portfolio.of(me)
    csm = await portal.as_user(me)
    created = await csm.post_json("/api/tags", {"name": "  Expansion   2027 ", "colour": "teal"})
    assert created.status_code == 201
    tag = created.json()
    assert (tag["name"], tag["colour"]) == ("Expansion 2027", "#0f766e")
    duplicate = await csm.post_json("/api/tags", {"name": "expansion 2027"})
    assert (duplicate.status_code, duplicate.json()["field"]) == (409, "name")
    assert (await csm.post_json("/api/tags", {"name": "x", "colour": "mauve"})).json()["field"] == "colour"
    assert (await csm.post_json("/api/tags", {"name": ""})).status_code == 400

    added = await csm.post_json("/api/tags/assign", {"account_ids": mine[:3], "tag_ids": [tag["id"]]})
    assert added.json() == {"changed": 3}
    again = await csm.post_json("/api/tags/assign", {"account_ids": mine[:4], "tag_ids": [tag["id"]]})
    assert again.json() == {"changed": 1}  # the three already tagged stay as they are
    listed = (await csm.get(f"/api/customers?tag={tag['id']}&per_page=200")).json()
    assert sorted(item["id"] for item in listed["items"]) == sorted(mine[:4])
    assert all(tag["name"] in [t["name"] for t in item["tags"]] for item in listed["items"])
    assert next(t for t in (await csm.get("/api/tags")).json() if t["id"] == tag["id"])["customers"] == 4

    removed = await csm.post_json("/api/tags/remove", {"account_ids": mine[:2], "tag_ids": [tag["id"]]})
    assert removed.json() == {"changed": 2}
    renamed = await csm.patch_json(f"/api/tags/{tag['id']}", {"name": "Expansion FY27", "colour": "purple"})
    assert renamed.json()["name"] == "Expansion FY27"
    assert (await csm.delete(f"/api/tags/{tag['id']}")).status_code == 204
    assert await db_rows(portal.db.url, select(AccountTag)) == []
    actions = [row[0] for row in await db_rows(portal.db.url, select(AuditEvent.action).order_by(AuditEvent.id))]
    for action in ("tag.created", "tag.assigned", "tag.removed", "tag.renamed", "tag.deleted"):
        assert action in actions


async def test_filter_by_tags_any_and_all(portal: Portal) -> None:
    admin = await portal.as_user("admin@test.csm")
    ids = [a for csm in portal.portfolio.csms for a in portal.portfolio.of(csm)][:6]
    red = (await admin.post_json("/api/tags", {"name": "Red", "colour": "red"})).json()["id"]
    blue = (await admin.post_json("/api/tags", {"name": "Blue", "colour": "blue"})).json()["id"]
    await admin.post_json("/api/tags/assign", {"account_ids": ids[:4], "tag_ids": [red]})
    await admin.post_json("/api/tags/assign", {"account_ids": ids[2:6], "tag_ids": [blue]})
    any_of = (await admin.get(f"/api/customers?tag={red}&tag={blue}&per_page=200")).json()
    assert sorted(item["id"] for item in any_of["items"]) == sorted(ids)
    all_of = (await admin.get(f"/api/customers?tag={red}&tag={blue}&tag_mode=all&per_page=200")).json()
    assert sorted(item["id"] for item in all_of["items"]) == sorted(ids[2:4])


async def test_bulk_tag_from_the_overview_selection(portal: Portal) -> None:
    me = portal.portfolio.csms[0]
    mine = portal.portfolio.of(me)
    csm = await portal.as_user(me)
    tag = await csm.post("/tags", {"name": "Exec sponsor left", "colour": "amber"})
    assert tag.status_code == 303
    tag_id = (await csm.get("/api/tags")).json()[0]["id"]
    response = await csm.htmx(
        "POST",
        "/customers/tags",
        "results",
        data={"account_id": mine[:3], "tag_id": str(tag_id), "action": "assign", "next": "/?sort=name"},
    )
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="results"')
    assert "Tagged 3 customers" in response.text
    assert response.text.count("Exec sponsor left</span>") == 3
    rows = await db_rows(portal.db.url, select(AccountTag.account_id, AccountTag.added_by))
    assert sorted(rows) == sorted((account, me) for account in mine[:3])
    removed = await csm.post("/customers/tags", {"account_id": mine[:1], "tag_id": str(tag_id), "action": "remove"})
    assert (removed.status_code, removed.headers["location"]) == (303, "/")
    assert len(await db_rows(portal.db.url, select(AccountTag))) == 2
    nothing = await csm.post("/customers/tags", {"tag_id": str(tag_id), "action": "assign"})
    assert nothing.status_code == 400


async def test_only_the_creator_or_a_manager_renames_or_deletes_a_tag(portal: Portal) -> None:
    first, second = portal.portfolio.csms[0], portal.portfolio.csms[1]
    owner = await portal.as_user(first)
    other = await portal.as_user(second)
    tag = (await owner.post_json("/api/tags", {"name": "Mine"})).json()
    assert (await other.patch_json(f"/api/tags/{tag['id']}", {"name": "Theirs"})).status_code == 403
    assert (await other.delete(f"/api/tags/{tag['id']}")).status_code == 403
    # but anyone may put it on their own customers
    assign = await other.post_json(
        "/api/tags/assign", {"account_ids": portal.portfolio.of(second)[:1], "tag_ids": [tag["id"]]}
    )
    assert assign.status_code == 200
    manager = await portal.as_user("manager@test.csm")
    assert (await manager.patch_json(f"/api/tags/{tag['id']}", {"name": "Team"})).status_code == 200
    assert (await manager.delete(f"/api/tags/{tag['id']}")).status_code == 204


async def test_a_customer_page_adds_creates_and_removes_tags(portal: Portal) -> None:
    me = portal.portfolio.csms[0]
    account = portal.portfolio.of(me)[0]
    csm = await portal.as_user(me)
    created = await csm.htmx(
        "POST",
        f"/customers/{account}/tags",
        "customer-tags",
        data={"action": "create", "name": "Pilot", "colour": "green"},
    )
    assert created.status_code == 200
    assert 'id="customer-tags"' in created.text
    assert "Pilot" in created.text
    tag_id = (await csm.get("/api/tags")).json()[0]["id"]
    removed = await csm.htmx(
        "POST", f"/customers/{account}/tags", "customer-tags", data={"action": "remove", "tag_id": str(tag_id)}
    )
    assert 'class="tag tag-green' not in removed.text


async def test_saved_filters_are_private_unless_shared(portal: Portal) -> None:
    first, second = portal.portfolio.csms[0], portal.portfolio.csms[1]
    owner = await portal.as_user(first)
    other = await portal.as_user(second)
    private = await owner.post_json("/api/filters", {"name": "My T1s", "query": "?tier=T1&page=3&sort=acv"})
    assert private.status_code == 201
    assert private.json()["query"] == "tier=T1&sort=acv"  # paging is not part of a saved filter
    assert private.json()["url"] == "/?tier=T1&sort=acv"
    shared = (
        await owner.post_json("/api/filters", {"name": "Critical", "query": "band=Critical", "shared": True})
    ).json()
    assert [f["name"] for f in (await other.get("/api/filters")).json()] == ["Critical"]
    # the short link works for whoever may see it
    link = await other.get(f"/filters/{shared['id']}")
    assert (link.status_code, link.headers["location"]) == (302, "/?band=Critical")
    assert (await other.get(f"/filters/{private.json()['id']}")).status_code == 404
    assert (await other.delete(f"/api/filters/{shared['id']}")).status_code == 403
    # saving the same name again replaces it
    replaced = await owner.post_json("/api/filters", {"name": "My T1s", "query": "tier=T1&tier=T2"})
    assert replaced.json()["id"] == private.json()["id"]
    # the page form saves and sends you to the view
    form = await owner.post("/filters", {"name": "Renewals", "query": "renewal=90", "page": "overview"})
    assert (form.status_code, form.headers["location"]) == (303, "/?renewal=90")
    overview = await owner.get("/")
    assert "Renewals" in overview.text
    assert (await owner.post_json("/api/filters", {"name": "", "query": "x"})).status_code == 400
    assert (await owner.post_json("/api/filters", {"name": "x", "page": "admin"})).json()["field"] == "page"
    assert (await owner.delete(f"/api/filters/{shared['id']}")).status_code == 204
    actions = {row[0] for row in await db_rows(portal.db.url, select(AuditEvent.action))}
    assert {"filter.saved", "filter.deleted"} <= actions


async def test_column_preferences_persist_per_user(portal: Portal) -> None:
    admin = await portal.as_user("admin@test.csm")
    manager = await portal.as_user("manager@test.csm")
    default = (await admin.get("/api/preferences/columns")).json()
    assert default["columns"][:2] == ["chi", "trend"]
    chosen = await admin.put_json("/api/preferences/columns", {"columns": ["acv", "chi", "tags", "acv"]})
    assert chosen.json()["columns"] == ["acv", "chi", "tags"]
    bad = await admin.put_json("/api/preferences/columns", {"columns": ["chi", "favourite_colour"]})
    assert (bad.status_code, bad.json()["field"]) == (400, "columns")
    page = await admin.get("/")
    header = page.text[page.text.index("<thead>") : page.text.index("</thead>")]
    assert header.index("col-acv") < header.index("col-chi") < header.index("col-tags")
    assert "col-trend" not in header
    # another user keeps the default
    assert (await manager.get("/api/preferences/columns")).json()["columns"] == default["columns"]
    # the settings page moves, hides and shows columns
    moved = await admin.htmx(
        "POST", "/settings/columns", "settings-columns", data={"column": ["acv", "chi", "tags"], "move": "tags:up"}
    )
    assert moved.status_code == 200
    assert (await admin.get("/api/preferences/columns")).json()["columns"] == ["acv", "tags", "chi"]
    reset = await admin.delete("/api/preferences/columns")
    assert (reset.status_code, reset.json()["columns"]) == (200, default["columns"])
    await admin.post("/settings/columns", {"column": ["acv", "tags", "chi"], "hide": "acv"})
    await admin.post("/settings/columns", {"column": ["tags", "chi"], "show": "renewal"})
    assert (await admin.get("/api/preferences/columns")).json()["columns"] == ["tags", "chi", "renewal"]
    await admin.post("/settings/columns", {"reset": "1"})
    assert (await admin.get("/api/preferences/columns")).json()["columns"] == default["columns"]
    settings = await admin.get("/settings")
    assert settings.status_code == 200
    assert 'id="security"' in settings.text  # the block the sign-in settings fill


async def test_open_customer_tabs_survive_and_close(portal: Portal) -> None:
    me = portal.portfolio.csms[0]
    first, second, third = portal.portfolio.of(me)[:3]
    csm = await portal.as_user(me)
    assert (await csm.get(f"/customers/{first}/chi")).status_code == 200
    assert (await csm.get(f"/customers/{second}")).headers["location"] == f"/customers/{second}/tasks"
    await csm.get(f"/customers/{second}/tasks")
    await csm.get(f"/customers/{third}/usage")
    tabs = (await csm.get("/api/preferences/tabs")).json()
    assert [(t["id"], t["tab"]) for t in tabs] == [(first, "chi"), (second, "tasks"), (third, "usage")]
    # a customer opens on the tab it was left on
    assert (await csm.get(f"/customers/{first}")).headers["location"] == f"/customers/{first}/chi"
    # every page shows the strip
    page = await csm.get("/dashboard")
    assert all(f'data-customer-tab="{account}"' in page.text for account in (first, second, third))
    # closing the tab you are on sends you to its neighbour
    closing = await csm.htmx("POST", f"/customers/{second}/close", "tabstrip", data={"current": second})
    assert closing.headers["HX-Redirect"] == f"/customers/{third}/usage"
    other = await csm.htmx("POST", f"/customers/{first}/close", "tabstrip", data={"current": third})
    assert 'id="tabstrip"' in other.text
    assert f'data-customer-tab="{first}"' not in other.text
    assert [t["id"] for t in (await csm.get("/api/preferences/tabs")).json()] == [third]
    assert (await csm.delete(f"/api/preferences/tabs/{third}")).status_code == 204
    assert (await csm.get("/api/preferences/tabs")).json() == []
    await csm.get(f"/customers/{first}/tasks")
    await csm.get(f"/customers/{second}/tasks")
    assert len((await csm.get("/api/preferences/tabs")).json()) == 2
    assert (await csm.delete("/api/preferences/tabs")).status_code == 204  # close them all
    assert (await csm.get("/api/preferences/tabs")).json() == []
    rows = await db_rows(portal.db.url, select(UserPreference.key).where(UserPreference.user_email == me))
    assert ("customer.tabs",) in [tuple(row) for row in rows]
