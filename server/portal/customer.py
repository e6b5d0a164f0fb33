"""Customer Detail: one customer per tab of the strip, six sub-tabs each at its own URL.

`/customers/{id}` opens the customer on the sub-tab the user last had open for it;
`/customers/{id}/{tasks|chi|commercial|usage|activity|retention}` shows one sub-tab (htmx
swaps only the body when the user clicks through the sub-tabs). Visiting a customer opens its
tab in the strip (a per-user preference); closing it is a POST.
"""

from __future__ import annotations

from typing import Any

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Response, Template
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import InvalidInput, NotFound
from server.portal.common import (
    AnyRequest,
    catalog,
    current_user,
    htmx_target,
    is_htmx,
    render,
    safe_next,
    today,
)
from server.services import customer_tabs
from server.services.customer_tabs import TAB_LABELS
from server.services.customers import STATUSES, customer_row, get_account
from server.services.engagement import SENTIMENTS, record_outcome, record_sentiment
from server.services.preferences import DETAIL_TABS, close_all_tabs, close_tab, open_tabs, remember_tab
from server.services.tags import PALETTE, assign_tags, create_tag, list_tags, remove_tags
from server.services.tasks import STATUS_LABELS, TaskStatus
from server.web.access import Capability, requires

READ = [requires(Capability.READ_CUSTOMERS)]
EDIT = [requires(Capability.EDIT_CUSTOMERS)]


async def tab_context(request: AnyRequest, db_session: AsyncSession, account_id: str, tab: str) -> dict[str, Any]:
    if tab not in DETAIL_TABS:
        raise NotFound(f"no tab {tab!r}; the tabs are {', '.join(DETAIL_TABS)}")
    user = current_user(request)
    cat = await catalog(request, db_session)
    day = today(request)
    account = await get_account(db_session, user, account_id)
    # The CHI and retention tabs show the history; the header's trend is then drawn from it, not read again.
    history = await customer_tabs.chi_history(db_session, account.id) if tab in ("chi", "retention") else None
    trend = customer_tabs.header_trend(history, day) if history is not None else None
    row = await customer_row(db_session, account, cat, day, trend)
    params = request.query_params
    context: dict[str, Any] = {
        "account": account,
        "row": row,
        "tab": tab,
        "tab_labels": TAB_LABELS,
        "catalog": cat,
        "statuses": STATUSES,
        "current_customer": account.id,
        "can_edit": user.can(Capability.EDIT_CUSTOMERS),
        "can_edit_tasks": user.can(Capability.EDIT_TASKS),
        "all_tags": await list_tags(db_session, user),
        "palette": PALETTE,
        "state_labels": STATUS_LABELS,
        "TaskStatus": TaskStatus,
    }
    if tab == "tasks":
        context["data"] = await customer_tabs.tasks_tab(db_session, user, account, cat, day)
    elif tab == "chi":
        context["data"] = await customer_tabs.chi_tab(db_session, account, cat, history)
    elif tab == "commercial":
        context["data"] = await customer_tabs.commercial_tab(db_session, account, day)
    elif tab == "usage":
        context["data"] = await customer_tabs.usage_tab(
            db_session,
            account,
            cat,
            day,
            params.get("from") or "",
            params.get("to") or "",
            params.get("days") or "",
            await customer_tabs.open_tasks_by_key(db_session, account.id),
        )
        context["presets"] = customer_tabs.RANGE_PRESETS
    elif tab == "activity":
        context["data"] = await customer_tabs.activity_tab(
            db_session, account, day, params.get("from") or "", params.get("to") or "", params.get("days") or ""
        )
        context["presets"] = customer_tabs.RANGE_PRESETS
        context["sentiments"] = SENTIMENTS
    else:
        tasks = await customer_tabs.tasks_tab(db_session, user, account, cat, day)
        context["data"] = await customer_tabs.retention_tab(db_session, account, cat, tasks.active, day, history)
    return context


@get("/customers/{account_id:str}", guards=READ, name="customer")
async def customer_home(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str]
) -> Redirect:
    user = current_user(request)
    account = await get_account(db_session, user, account_id)
    remembered = next((tab.tab for tab in await open_tabs(db_session, user) if tab.id == account.id), "tasks")
    return Redirect(f"/customers/{account.id}/{remembered}", status_code=302)


@get("/customers/{account_id:str}/{tab:str}", guards=READ, name="customer_tab")
async def customer_tab(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str], tab: FromPath[str]
) -> Template:
    context = await tab_context(request, db_session, account_id, tab)
    user = current_user(request)
    await remember_tab(db_session, user, context["account"].id, tab)
    if is_htmx(request) and htmx_target(request) == "customer-body":
        context["open_tabs"] = await open_tabs(db_session, user)
        return await render(request, db_session, "portal/partials/customer_body.html", context)
    return await render(request, db_session, "portal/customer.html", context)


# ── the tab strip ───────────────────────────────────────────────────────────────────────


@post("/customers/{account_id:str}/close", guards=READ, name="close_tab", status_code=200)
async def close_customer_tab(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str]
) -> Response[Any]:
    user = current_user(request)
    form = await request.form()
    current = form.get("current") or ""
    following = await close_tab(db_session, user, account_id)
    remembered = {tab.id: tab.tab for tab in await open_tabs(db_session, user)}
    target = f"/customers/{following}/{remembered.get(following, 'tasks')}" if following else "/"
    if current == account_id:
        if is_htmx(request):
            return Response(content="", status_code=200, headers={"HX-Redirect": target})
        return Redirect(target, status_code=303)
    if not is_htmx(request):
        return Redirect(f"/customers/{current}" if current else "/", status_code=303)
    return await render(
        request,
        db_session,
        "portal/partials/tab_strip.html",
        {"current_customer": current} if current else {},
    )


@post("/customers/tabs/close-all", guards=READ, name="close_all_tabs", status_code=303)
async def close_every_tab(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Redirect:
    await close_all_tabs(db_session, current_user(request))
    return Redirect("/", status_code=303)


# ── tags on one customer ────────────────────────────────────────────────────────────────


@post("/customers/{account_id:str}/tags", guards=EDIT, name="customer_tags", status_code=200)
async def customer_tags(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str]
) -> Template | Redirect:
    """Add an existing tag, create-and-add a new one, or remove one."""
    user = current_user(request)
    form = await request.form()
    action = form.get("action") or "add"
    account = await get_account(db_session, user, account_id)
    if action == "create":
        tag = await create_tag(db_session, user, form.get("name") or "", form.get("colour") or None)
        await assign_tags(db_session, user, [account.id], [tag.id])
    else:
        raw = form.get("tag_id") or ""
        if not raw.isdigit():
            raise InvalidInput("choose a tag", field="tag_id")
        if action == "add":
            await assign_tags(db_session, user, [account.id], [int(raw)])
        elif action == "remove":
            await remove_tags(db_session, user, [account.id], [int(raw)])
        else:
            raise InvalidInput(f"unknown action {action[:20]!r}; expected add, create or remove", field="action")
    if not is_htmx(request):
        return Redirect(safe_next(form.get("next"), f"/customers/{account.id}"), status_code=303)
    cat = await catalog(request, db_session)
    row = await customer_row(db_session, account, cat, today(request))
    return await render(
        request,
        db_session,
        "portal/partials/customer_tags.html",
        {
            "row": row,
            "all_tags": await list_tags(db_session, user),
            "palette": PALETTE,
            "can_edit": True,
            "catalog": cat,
        },
        with_tabs=False,
    )


# ── activity entries ────────────────────────────────────────────────────────────────────


async def _activity_fragment(request: AnyRequest, db_session: AsyncSession, account_id: str, message: str) -> Template:
    context = await tab_context(request, db_session, account_id, "activity")
    context["flash"] = message
    return await render(request, db_session, "portal/partials/activity_entries.html", context, with_tabs=False)


@post("/customers/{account_id:str}/sentiment", guards=EDIT, name="record_sentiment", status_code=200)
async def post_sentiment(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str]
) -> Template | Redirect:
    user = current_user(request)
    form = await request.form()
    entry = await record_sentiment(
        db_session, user, account_id, form.get("value") or "", form.get("note") or "", today(request)
    )
    if not is_htmx(request):
        return Redirect(f"/customers/{entry.account_id}/activity", status_code=303)
    return await _activity_fragment(
        request, db_session, entry.account_id, f"Sentiment recorded as {entry.value}; the next run will use it."
    )


@post(
    "/customers/{account_id:str}/meetings/{meeting_id:str}/outcome",
    guards=EDIT,
    name="record_outcome",
    status_code=200,
)
async def post_outcome(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str], meeting_id: FromPath[str]
) -> Template | Redirect:
    user = current_user(request)
    form = await request.form()
    saved = await record_outcome(db_session, user, account_id, meeting_id, form.get("outcome") or "", today(request))
    if not is_htmx(request):
        return Redirect(f"/customers/{saved.account_id}/activity", status_code=303)
    return await _activity_fragment(
        request, db_session, saved.account_id, "Meeting outcome saved; the next run will use it."
    )


ROUTES = [
    customer_home,
    customer_tab,
    close_customer_tab,
    close_every_tab,
    customer_tags,
    post_sentiment,
    post_outcome,
]
