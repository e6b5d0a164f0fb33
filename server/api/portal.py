"""The JSON twin of the portal: customers (with the overview's filters), their tabs, tasks, tags,
saved filters and preferences. The same services and the same access filter as the pages."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from server.api.models import (
    ActivityTabOut,
    BulkIn,
    BulkOut,
    CatalogOut,
    ChangedOut,
    ChiTabOut,
    ColumnsIn,
    ColumnsOut,
    CommentIn,
    CommercialTabOut,
    CountersOut,
    CustomerDetailOut,
    CustomerList,
    CustomerOut,
    EventOut,
    FilterIn,
    FilterOut,
    OpenTabOut,
    OutcomeIn,
    OutcomeOut,
    RetentionTabOut,
    SentimentIn,
    SentimentOut,
    SignalOut,
    SkippedOut,
    TagAssignIn,
    TagIn,
    TagOut,
    TagPatch,
    TagSummaryOut,
    TaskDetail,
    TaskList,
    TaskOut,
    TasksTabOut,
    TotalsOut,
    TransitionIn,
    TrendOut,
    UsageTabOut,
    convert,
)
from server.db.models import Account, SavedFilter
from server.services import customer_tabs, preferences
from server.services import tasks as task_service
from server.services.catalog import Catalog
from server.services.customer_tabs import TAB_LABELS
from server.services.customers import (
    COLUMNS,
    get_account,
    get_customer_row,
    list_customers,
    parse_customer_query,
    portfolio_totals,
)
from server.services.engagement import record_outcome, record_sentiment
from server.services.tags import assign_tags, create_tag, delete_tag, list_tags, remove_tags, update_tag
from server.services.tasks import TaskView, parse_task_query
from server.web.access import SIGNED_IN, Capability, requires
from server.web.portal_helpers import catalog, current_user, export_stream, query_lists, today

AnyRequest = Request[Any, Any, Any]
READ = [requires(Capability.READ_CUSTOMERS)]
EDIT_TASKS = [requires(Capability.EDIT_TASKS)]
EDIT = [requires(Capability.EDIT_CUSTOMERS)]
TAGS = ["customers"]
TASKS = ["tasks"]
ME = ["preferences"]

# The overview's filters, documented for OpenAPI; the same parser as the page reads them.
Multi = Annotated[list[str] | None, QueryParameter(required=False)]


# ── customers ───────────────────────────────────────────────────────────────────────────


@get("/api/customers", guards=READ, tags=TAGS, summary="List customers (the overview's filters, sort and paging)")
async def api_customers(
    request: AnyRequest,
    db_session: NamedDependency[AsyncSession],
    q: FromQuery[str | None] = None,
    tier: Multi = None,
    band: Multi = None,
    segment: Multi = None,
    renewal: Annotated[int | None, QueryParameter(ge=0, le=3650, description="renewal within this many days")] = None,
    product: Multi = None,
    product_mode: Annotated[str | None, QueryParameter(description="any | all")] = None,
    tag: Multi = None,
    tag_mode: Annotated[str | None, QueryParameter(description="any | all")] = None,
    csm: Multi = None,
    status: Multi = None,
    sort: Annotated[str | None, QueryParameter(description="chi | name | tier | acv | renewal | csm | region")] = None,
    dir: Annotated[str | None, QueryParameter(description="asc | desc")] = None,
    page: Annotated[int | None, QueryParameter(ge=1)] = None,
    per_page: Annotated[int | None, QueryParameter(ge=1, le=200)] = None,
) -> CustomerList:
    cat = await catalog(request, db_session)
    query = parse_customer_query(query_lists(request), cat)
    result = await list_customers(db_session, current_user(request), query, cat, today(request))
    return CustomerList(
        items=[convert(row, CustomerOut) for row in result.rows],
        total=result.total,
        page=result.page,
        per_page=result.per_page,
        pages=result.pages,
        sort=query.sort,
        dir="desc" if query.descending else "asc",
    )


@get("/api/customers/totals", guards=READ, tags=TAGS, summary="Portfolio totals for the same filters")
async def api_customer_totals(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> TotalsOut:
    cat = await catalog(request, db_session)
    query = parse_customer_query(query_lists(request), cat)
    totals = await portfolio_totals(db_session, current_user(request), query, cat, today(request))
    return convert(totals, TotalsOut)  # type: ignore[no-any-return]


@get("/api/customers/export", guards=READ, tags=TAGS, summary="Export the filtered customers (CSV or JSON Lines)")
async def api_customer_export(
    request: AnyRequest,
    db_session: NamedDependency[AsyncSession],
    format: Annotated[str, QueryParameter(description="jsonl | csv")] = "jsonl",
) -> Stream:
    cat = await catalog(request, db_session)
    query = parse_customer_query(query_lists(request), cat)
    return await export_stream(request, db_session, query, cat, format)


@get("/api/catalog", guards=READ, tags=TAGS, summary="Bands, CHI sections, segments, rules, products and tiers")
async def api_catalog(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> CatalogOut:
    cat: Catalog = await catalog(request, db_session)
    return CatalogOut(
        policy_hash=cat.content_hash,
        version_id=cat.version_id,
        bands=[{"name": b.name, "min": b.min, "colour": b.colour} for b in cat.bands],
        sections=[
            {
                "id": s.id,
                "name": s.name,
                "weight": s.weight,
                "parts": [{"id": p, "name": n, "weight": w} for p, n, w in s.parts],
            }
            for s in cat.sections
        ],
        segments=[{"id": sid, "name": name} for sid, name in cat.segments],
        rules=[{"id": r.id, "name": r.name, "category": r.category, "params": r.params} for r in cat.rules],
        categories=list(cat.categories),
        products=[{"code": code, "name": name, "label": label} for code, (name, label) in cat.products.items()],
        tiers=[{"code": code, "name": name} for code, name in cat.tiers.items()],
    )


async def _account(request: AnyRequest, db_session: AsyncSession, account_id: str) -> Account:
    """The customer of a tab, through the access filter (404 for one the user may not see)."""
    return await get_account(db_session, current_user(request), account_id)


@get("/api/customers/{account_id:str}", guards=READ, tags=TAGS, summary="One customer (the detail page's header)")
async def api_customer(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str]
) -> CustomerDetailOut:
    cat = await catalog(request, db_session)
    _account, row = await get_customer_row(db_session, current_user(request), account_id, cat, today(request))
    return CustomerDetailOut(
        customer=convert(row, CustomerOut),
        tabs={tab: f"/api/customers/{row.id}/{tab}" for tab in TAB_LABELS},
    )


def task_out(view: TaskView) -> TaskOut:
    return TaskOut(
        id=view.id,
        rule=view.rule,
        rule_name=view.rule_name,
        account_id=view.account_id,
        account_name=view.account_name,
        csm=view.csm,
        key=view.key,
        category=view.category,
        severity=view.severity,
        title=view.title,
        description=view.description,
        due_on=view.due_on,
        active=view.active,
        state=view.status.value,
        stored_state=view.stored_status.value,
        snoozed_until=view.snoozed_until,
        comment=view.comment,
        version=view.version,
        updated_by=view.updated_by,
        updated_at=view.updated_at,
        allowed=[status.value for status in view.allowed],
        overdue=view.overdue,
        evidence=view.evidence,
        thresholds=view.thresholds,
        condition=view.condition,
        severity_case=view.severity_case,
        policy_hash=view.policy_hash,
        policy_version_id=view.policy_version_id,
        opened_at=view.opened_at,
        resolved_at=view.resolved_at,
        reopened_at=view.reopened_at,
    )


@get("/api/customers/{account_id:str}/tasks", guards=READ, tags=TAGS, summary="Tasks tab: active and resolved tasks")
async def api_customer_tasks(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str]
) -> TasksTabOut:
    cat = await catalog(request, db_session)
    account = await _account(request, db_session, account_id)
    data = await customer_tabs.tasks_tab(db_session, current_user(request), account, cat, today(request))
    return TasksTabOut(active=[task_out(t) for t in data.active], resolved=[task_out(t) for t in data.resolved])


@get(
    "/api/customers/{account_id:str}/chi",
    guards=READ,
    tags=TAGS,
    summary="CHI tab: sections, weights, reasons, history",
)
async def api_customer_chi(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str]
) -> ChiTabOut:
    cat = await catalog(request, db_session)
    account = await _account(request, db_session, account_id)
    return convert(await customer_tabs.chi_tab(db_session, account, cat), ChiTabOut)  # type: ignore[no-any-return]


@get(
    "/api/customers/{account_id:str}/commercial",
    guards=READ,
    tags=TAGS,
    summary="Commercial tab: ACV, orders, renewal, invoices",
)
async def api_customer_commercial(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str]
) -> CommercialTabOut:
    account = await _account(request, db_session, account_id)
    data = await customer_tabs.commercial_tab(db_session, account, today(request))
    return convert(data, CommercialTabOut)  # type: ignore[no-any-return]


@get("/api/customers/{account_id:str}/usage", guards=READ, tags=TAGS, summary="Product usage tab over a date range")
async def api_customer_usage(
    request: AnyRequest,
    db_session: NamedDependency[AsyncSession],
    account_id: FromPath[str],
    start: Annotated[str | None, QueryParameter(name="from", description="first day (YYYY-MM-DD)")] = None,
    end: Annotated[str | None, QueryParameter(name="to", description="last day (YYYY-MM-DD)")] = None,
    days: Annotated[str | None, QueryParameter(description="a preset: the last N days of data")] = None,
) -> UsageTabOut:
    cat = await catalog(request, db_session)
    account = await _account(request, db_session, account_id)
    data = await customer_tabs.usage_tab(
        db_session,
        account,
        cat,
        today(request),
        start or "",
        end or "",
        days or "",
        await customer_tabs.open_tasks_by_key(db_session, account.id),
    )
    return convert(data, UsageTabOut)  # type: ignore[no-any-return]


@get("/api/customers/{account_id:str}/activity", guards=READ, tags=TAGS, summary="Activity tab over a date range")
async def api_customer_activity(
    request: AnyRequest,
    db_session: NamedDependency[AsyncSession],
    account_id: FromPath[str],
    start: Annotated[str | None, QueryParameter(name="from")] = None,
    end: Annotated[str | None, QueryParameter(name="to")] = None,
    days: FromQuery[str | None] = None,
) -> ActivityTabOut:
    account = await _account(request, db_session, account_id)
    data = await customer_tabs.activity_tab(db_session, account, today(request), start or "", end or "", days or "")
    return convert(data, ActivityTabOut)  # type: ignore[no-any-return]


@get(
    "/api/customers/{account_id:str}/retention",
    guards=READ,
    tags=TAGS,
    summary="Retention signals: churn-risk rules against thresholds, with trends",
)
async def api_customer_retention(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str]
) -> RetentionTabOut:
    cat = await catalog(request, db_session)
    account = await _account(request, db_session, account_id)
    day = today(request)
    tasks = await customer_tabs.tasks_tab(db_session, current_user(request), account, cat, day)
    data = await customer_tabs.retention_tab(db_session, account, cat, tasks.active, day)
    return RetentionTabOut(
        signals=[
            SignalOut(
                rule=signal.rule.id,
                rule_name=signal.rule.name,
                category=signal.rule.category,
                condition=signal.rule.condition,
                item=signal.item,
                firing=signal.firing,
                severity=signal.severity,
                task_id=signal.task_id,
                values=dict(signal.values),
                thresholds=dict(signal.thresholds),
                trend=convert(signal.trend, TrendOut) if signal.trend else None,
            )
            for signal in data.signals
        ],
        trends=[convert(trend, TrendOut) for trend in data.trends],
    )


@post(
    "/api/customers/{account_id:str}/sentiment",
    guards=EDIT,
    tags=TAGS,
    summary="Record the CSM's sentiment (read by the next run)",
)
async def api_record_sentiment(
    request: AnyRequest,
    db_session: NamedDependency[AsyncSession],
    account_id: FromPath[str],
    data: JSONBody[SentimentIn],
) -> SentimentOut:
    entry = await record_sentiment(db_session, current_user(request), account_id, data.value, data.note, today(request))
    return SentimentOut(entry.id, entry.account_id, entry.recorded_on, entry.value, entry.note, entry.recorded_by)


@put(
    "/api/customers/{account_id:str}/meetings/{meeting_id:str}/outcome",
    guards=EDIT,
    tags=TAGS,
    summary="Record a meeting's outcome (read by the next run)",
)
async def api_record_outcome(
    request: AnyRequest,
    db_session: NamedDependency[AsyncSession],
    account_id: FromPath[str],
    meeting_id: FromPath[str],
    data: JSONBody[OutcomeIn],
) -> OutcomeOut:
    saved = await record_outcome(
        db_session, current_user(request), account_id, meeting_id, data.outcome, today(request)
    )
    return OutcomeOut(saved.meeting_id, saved.account_id, saved.outcome, saved.recorded_by, saved.recorded_at)


# ── tasks ───────────────────────────────────────────────────────────────────────────────


@get("/api/tasks", guards=READ, tags=TASKS, summary="The dashboard's task list and counters")
async def api_tasks(
    request: AnyRequest,
    db_session: NamedDependency[AsyncSession],
    severity: Multi = None,
    category: Multi = None,
    rule: Multi = None,
    task_state: Annotated[list[str] | None, QueryParameter(name="state", required=False)] = None,
    due: Annotated[str | None, QueryParameter(description="overdue | today | week")] = None,
    csm: Annotated[
        str | None, QueryParameter(description="one CSM's portfolio (managers, admins, ops, viewers)")
    ] = None,
    q: FromQuery[str | None] = None,
    resolved: Annotated[bool | None, QueryParameter(description="include tasks the engine resolved")] = None,
    sort: Annotated[
        str | None, QueryParameter(description="severity | due | customer | rule | state | opened | chi")
    ] = None,
    dir: FromQuery[str | None] = None,
    page: Annotated[int | None, QueryParameter(ge=1)] = None,
    per_page: Annotated[int | None, QueryParameter(ge=1, le=200)] = None,
) -> TaskList:
    user = current_user(request)
    cat = await catalog(request, db_session)
    query = parse_task_query(query_lists(request), cat, user)
    day = today(request)
    result = await task_service.list_tasks(db_session, user, query, day, cat.rule_names())
    counts = await task_service.counters(db_session, user, day, query.csm)
    return TaskList(
        items=[task_out(item) for item in result.items],
        total=result.total,
        page=result.page,
        per_page=result.per_page,
        pages=result.pages,
        counters=CountersOut(counts.high, counts.medium, counts.low, counts.total, counts.snoozed, counts.overdue),
    )


@get("/api/tasks/counters", guards=READ, tags=TASKS, summary="High / Medium / Low / Total open tasks")
async def api_task_counters(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], csm: FromQuery[str | None] = None
) -> CountersOut:
    user = current_user(request)
    counts = await task_service.counters(
        db_session, user, today(request), (csm or "") if user.sees_every_customer else ""
    )
    return CountersOut(counts.high, counts.medium, counts.low, counts.total, counts.snoozed, counts.overdue)


async def _task_detail(request: AnyRequest, db_session: AsyncSession, task_id: str) -> TaskDetail:
    user = current_user(request)
    cat = await catalog(request, db_session)
    view = await task_service.get_task(db_session, user, task_id, today(request), cat.rule_names())
    events = await task_service.history(db_session, user, task_id)
    return TaskDetail(
        task=task_out(view),
        history=[EventOut(e.at, e.actor, e.kind, e.from_value, e.to_value, e.text, e.run_id) for e in events],
    )


@get("/api/tasks/{task_id:str}", guards=READ, tags=TASKS, summary="One task with its history")
async def api_task(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], task_id: FromPath[str]
) -> TaskDetail:
    return await _task_detail(request, db_session, task_id)


@post(
    "/api/tasks/{task_id:str}/transitions",
    guards=EDIT_TASKS,
    tags=TASKS,
    summary="Change a task's state (409 with the allowed states when the state machine refuses)",
)
async def api_task_transition(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], task_id: FromPath[str], data: JSONBody[TransitionIn]
) -> TaskDetail:
    await task_service.change_state(
        db_session,
        current_user(request),
        task_id,
        data.to,
        today=today(request),
        snooze_until=data.snooze_until,
        expected_version=data.version,
    )
    return await _task_detail(request, db_session, task_id)


@post("/api/tasks/{task_id:str}/comments", guards=EDIT_TASKS, tags=TASKS, summary="Comment on a task")
async def api_task_comment(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], task_id: FromPath[str], data: JSONBody[CommentIn]
) -> TaskDetail:
    await task_service.add_comment(
        db_session, current_user(request), task_id, data.text, today=today(request), expected_version=data.version
    )
    return await _task_detail(request, db_session, task_id)


@post(
    "/api/tasks/bulk",
    guards=EDIT_TASKS,
    tags=TASKS,
    summary="One action on many tasks (start, progress, finish, reopen, snooze, comment)",
)
async def api_task_bulk(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], data: JSONBody[BulkIn]
) -> BulkOut:
    result = await task_service.bulk_change(
        db_session,
        current_user(request),
        data.task_ids,
        data.action,
        today=today(request),
        snooze_until=data.snooze_until,
        comment=data.comment,
    )
    return BulkOut(
        done=result.done,
        skipped=[SkippedOut(s["task_id"], s["reason"], list(s["allowed"])) for s in result.skipped],
    )


# ── tags ────────────────────────────────────────────────────────────────────────────────


@get("/api/tags", guards=READ, tags=TAGS, summary="Every tag, with how many of your customers carry it")
async def api_tags(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> list[TagSummaryOut]:
    return [convert(tag, TagSummaryOut) for tag in await list_tags(db_session, current_user(request))]


@post("/api/tags", guards=EDIT, tags=TAGS, summary="Create a tag")
async def api_tag_create(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], data: JSONBody[TagIn]
) -> TagOut:
    tag = await create_tag(db_session, current_user(request), data.name, data.colour)
    return TagOut(tag.id, tag.name, tag.colour)


@patch("/api/tags/{tag_id:int}", guards=EDIT, tags=TAGS, summary="Rename or recolour a tag")
async def api_tag_update(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], tag_id: FromPath[int], data: JSONBody[TagPatch]
) -> TagOut:
    tag = await update_tag(db_session, current_user(request), tag_id, data.name, data.colour)
    return TagOut(tag.id, tag.name, tag.colour)


@delete("/api/tags/{tag_id:int}", guards=EDIT, tags=TAGS, summary="Delete a tag (from every customer)", status_code=204)
async def api_tag_delete(request: AnyRequest, db_session: NamedDependency[AsyncSession], tag_id: FromPath[int]) -> None:
    await delete_tag(db_session, current_user(request), tag_id)


@post("/api/tags/assign", guards=EDIT, tags=TAGS, summary="Put tags on customers", status_code=200)
async def api_tag_assign(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], data: JSONBody[TagAssignIn]
) -> ChangedOut:
    return ChangedOut(await assign_tags(db_session, current_user(request), data.account_ids, data.tag_ids))


@post("/api/tags/remove", guards=EDIT, tags=TAGS, summary="Take tags off customers", status_code=200)
async def api_tag_remove(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], data: JSONBody[TagAssignIn]
) -> ChangedOut:
    return ChangedOut(await remove_tags(db_session, current_user(request), data.account_ids, data.tag_ids))


# ── saved filters and preferences ───────────────────────────────────────────────────────


def filter_out(saved: SavedFilter) -> FilterOut:
    return FilterOut(
        id=saved.id,
        name=saved.name,
        page=saved.page,
        query=saved.query,
        owner=saved.owner,
        shared=saved.shared,
        url=preferences.filter_url(saved),
    )


@get("/api/filters", guards=READ, tags=ME, summary="Your saved filters and those shared with you")
async def api_filters(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> list[FilterOut]:
    return [filter_out(saved) for saved in await preferences.list_filters(db_session, current_user(request))]


@post("/api/filters", guards=READ, tags=ME, summary="Save a filter (by name; saving a name again replaces it)")
async def api_filter_save(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], data: JSONBody[FilterIn]
) -> FilterOut:
    saved = await preferences.save_filter(
        db_session, current_user(request), data.name, data.query, data.page, data.shared
    )
    return filter_out(saved)


@delete(
    "/api/filters/{filter_id:int}", guards=READ, tags=ME, summary="Delete one of your saved filters", status_code=204
)
async def api_filter_delete(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], filter_id: FromPath[int]
) -> None:
    await preferences.delete_filter(db_session, current_user(request), filter_id)


@get("/api/preferences/columns", opt=SIGNED_IN, tags=ME, summary="Your overview columns, in order")
async def api_columns(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> ColumnsOut:
    return ColumnsOut(await preferences.get_columns(db_session, current_user(request)), COLUMNS)


@put("/api/preferences/columns", opt=SIGNED_IN, tags=ME, summary="Choose and order your overview columns")
async def api_set_columns(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], data: JSONBody[ColumnsIn]
) -> ColumnsOut:
    return ColumnsOut(await preferences.set_columns(db_session, current_user(request), data.columns), COLUMNS)


@delete(
    "/api/preferences/columns", opt=SIGNED_IN, tags=ME, summary="Back to the default overview columns", status_code=200
)
async def api_reset_columns(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> ColumnsOut:
    return ColumnsOut(await preferences.reset_columns(db_session, current_user(request)), COLUMNS)


@get("/api/preferences/tabs", opt=SIGNED_IN, tags=ME, summary="Your open customer tabs")
async def api_tabs(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> list[OpenTabOut]:
    return [convert(tab, OpenTabOut) for tab in await preferences.open_tabs(db_session, current_user(request))]


@delete(
    "/api/preferences/tabs/{account_id:str}", opt=SIGNED_IN, tags=ME, summary="Close a customer's tab", status_code=204
)
async def api_close_tab(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], account_id: FromPath[str]
) -> None:
    await preferences.close_tab(db_session, current_user(request), account_id)


@delete("/api/preferences/tabs", opt=SIGNED_IN, tags=ME, summary="Close every customer tab", status_code=204)
async def api_close_all_tabs(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> None:
    await preferences.close_all_tabs(db_session, current_user(request))


ROUTES = [
    api_customers,
    api_customer_totals,
    api_customer_export,
    api_catalog,
    api_customer,
    api_customer_tasks,
    api_customer_chi,
    api_customer_commercial,
    api_customer_usage,
    api_customer_activity,
    api_customer_retention,
    api_record_sentiment,
    api_record_outcome,
    api_tasks,
    api_task_counters,
    api_task,
    api_task_transition,
    api_task_comment,
    api_task_bulk,
    api_tags,
    api_tag_create,
    api_tag_update,
    api_tag_delete,
    api_tag_assign,
    api_tag_remove,
    api_filters,
    api_filter_save,
    api_filter_delete,
    api_columns,
    api_set_columns,
    api_tabs,
    api_close_tab,
    api_close_all_tabs,
    api_reset_columns,
]
