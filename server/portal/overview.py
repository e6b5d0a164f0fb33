"""Customer Overview (`/`): portfolio totals, the filterable customer table, bulk tagging, exports."""

from __future__ import annotations

from typing import Any

from litestar import get, post
from litestar.di import NamedDependency
from litestar.response import Redirect, Stream, Template
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import InvalidInput
from server.portal.common import (
    AnyRequest,
    catalog,
    current_user,
    htmx_target,
    is_htmx,
    query_lists,
    render,
    safe_next,
    today,
    url_query_lists,
)
from server.services.catalog import Catalog
from server.services.customers import (
    COLUMN_SORT,
    COLUMNS,
    PAGE_SIZES,
    RENEWAL_CHOICES,
    SORTS,
    STATUSES,
    CustomerQuery,
    csm_choices,
    list_customers,
    parse_customer_query,
    portfolio_totals,
)
from server.services.preferences import get_columns, list_filters
from server.services.tags import PALETTE, assign_tags, list_tags, remove_tags
from server.web.access import Capability, requires
from server.web.portal_helpers import export_stream

READ = [requires(Capability.READ_CUSTOMERS)]
EDIT = [requires(Capability.EDIT_CUSTOMERS)]


async def overview_context(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], query: CustomerQuery, cat: Catalog
) -> dict[str, Any]:
    user = current_user(request)
    day = today(request)
    page = await list_customers(db_session, user, query, cat, day)
    totals = await portfolio_totals(db_session, user, query, cat, day)
    return {
        "query": query,
        "page": page,
        "totals": totals,
        "catalog": cat,
        "columns": await get_columns(db_session, user),
        "column_labels": COLUMNS,
        "column_sort": COLUMN_SORT,
        "tags": await list_tags(db_session, user),
        "statuses": STATUSES,
        "sorts": SORTS,
        "page_sizes": PAGE_SIZES,
        "renewal_choices": RENEWAL_CHOICES,
        "can_edit": user.can(Capability.EDIT_CUSTOMERS),
    }


@get("/", guards=READ, name="overview")
async def overview(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Template:
    user = current_user(request)
    cat = await catalog(request, db_session)
    query = parse_customer_query(query_lists(request), cat)
    context = await overview_context(request, db_session, query, cat)
    if is_htmx(request) and htmx_target(request) == "results":
        return await render(
            request,
            db_session,
            "portal/partials/overview_results.html",
            context,
            with_tabs=False,
            headers={"HX-Push-Url": query.url("/")},
        )
    context["csms"] = await csm_choices(db_session, user) if user.sees_every_customer else []
    context["saved_filters"] = await list_filters(db_session, user, "overview")
    context["palette"] = PALETTE
    return await render(request, db_session, "portal/overview.html", context)


# ── exports ─────────────────────────────────────────────────────────────────────────────


@get("/export/customers.csv", guards=READ, name="export_csv")
async def export_csv(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Stream:
    cat = await catalog(request, db_session)
    return await export_stream(request, db_session, parse_customer_query(query_lists(request), cat), cat, "csv")


@get("/export/customers.jsonl", guards=READ, name="export_jsonl")
async def export_jsonl(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Stream:
    cat = await catalog(request, db_session)
    return await export_stream(request, db_session, parse_customer_query(query_lists(request), cat), cat, "jsonl")


# ── bulk tagging from the overview selection ────────────────────────────────────────────


def _tag_ids(values: list[str]) -> list[int]:
    ids = []
    for value in values:
        if value.strip():
            try:
                ids.append(int(value))
            except ValueError:
                raise InvalidInput(f"'tag_id' must be a number, not {value[:20]!r}", field="tag_id") from None
    return ids


@post("/customers/tags", guards=EDIT, name="bulk_tags", status_code=200)
async def bulk_tags(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Template | Redirect:
    """Assign or remove tags on the selected customers; htmx gets the refreshed table back."""
    user = current_user(request)
    form = await request.form()
    account_ids = [value for value in form.getall("account_id", []) if value]
    tag_ids = _tag_ids(form.getall("tag_id", []))
    action = form.get("action") or "assign"
    if action == "assign":
        changed = await assign_tags(db_session, user, account_ids, tag_ids)
        message = f"Tagged {len(set(account_ids))} customer{'s' if len(set(account_ids)) != 1 else ''} ({changed} new)."
    elif action == "remove":
        changed = await remove_tags(db_session, user, account_ids, tag_ids)
        message = f"Removed the tag from {changed} customer{'s' if changed != 1 else ''}."
    else:
        raise InvalidInput(f"unknown action {action[:20]!r}; expected assign or remove", field="action")
    back = safe_next(form.get("next"), "/")
    if not is_htmx(request):
        return Redirect(back, status_code=303)
    cat = await catalog(request, db_session)
    query = parse_customer_query(url_query_lists(back), cat)
    context = await overview_context(request, db_session, query, cat)
    context["flash"] = message
    return await render(request, db_session, "portal/partials/overview_results.html", context, with_tabs=False)


ROUTES = [overview, export_csv, export_jsonl, bulk_tags]
