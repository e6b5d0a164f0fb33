"""CSM Dashboard (`/dashboard`): four counters and the task list; state, snooze, comments, bulk actions."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from litestar import get, post
from litestar.datastructures import FormMultiDict
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template
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
from server.services import tasks as task_service
from server.services.catalog import Catalog
from server.services.customers import csm_choices
from server.services.preferences import list_filters
from server.services.tasks import (
    DUE_CHOICES,
    SEVERITY_ORDER,
    STATUS_LABELS,
    TaskQuery,
    TaskStatus,
    parse_task_query,
    task_query_params,
)
from server.web.access import Capability, requires

READ = [requires(Capability.READ_CUSTOMERS)]
EDIT = [requires(Capability.EDIT_TASKS)]
DUE_LABELS = {"overdue": "Overdue", "today": "Due today", "week": "Due this week"}
SORT_LABELS = {
    "severity": "Severity",
    "due": "Due date",
    "customer": "Customer",
    "rule": "Rule",
    "state": "State",
    "opened": "Opened",
    "chi": "Customer CHI",
}


def dashboard_url(query: TaskQuery, **changes: Any) -> str:
    pairs = task_query_params(query, **changes)
    return f"/dashboard?{urlencode(pairs)}" if pairs else "/dashboard"


async def dashboard_context(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], query: TaskQuery, cat: Catalog
) -> dict[str, Any]:
    user = current_user(request)
    day = today(request)
    page = await task_service.list_tasks(db_session, user, query, day, cat.rule_names())
    counters = await task_service.counters(db_session, user, day, query.csm)
    return {
        "query": query,
        "page": page,
        "counters": counters,
        "catalog": cat,
        "url": lambda **changes: dashboard_url(query, **changes),
        "severities": list(SEVERITY_ORDER),
        "state_labels": STATUS_LABELS,
        "due_labels": DUE_LABELS,
        "sort_labels": SORT_LABELS,
        "can_edit_tasks": user.can(Capability.EDIT_TASKS),
        "bulk_actions": task_service.BULK_ACTIONS,
    }


@get("/dashboard", guards=READ, name="dashboard")
async def dashboard(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Template:
    user = current_user(request)
    cat = await catalog(request, db_session)
    query = parse_task_query(query_lists(request), cat, user)
    context = await dashboard_context(request, db_session, query, cat)
    if is_htmx(request) and htmx_target(request) == "task-results":
        return await render(
            request,
            db_session,
            "portal/partials/task_results.html",
            context,
            with_tabs=False,
            headers={"HX-Push-Url": dashboard_url(query)},
        )
    context["csms"] = await csm_choices(db_session, user) if user.sees_every_customer else []
    context["saved_filters"] = await list_filters(db_session, user, "dashboard")
    context["due_choices"] = DUE_CHOICES
    return await render(request, db_session, "portal/dashboard.html", context)


# ── one task ────────────────────────────────────────────────────────────────────────────


def _version(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput("'version' must be a number", field="version") from None


def _date(value: str | None, field: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"'{field}' must be a date (YYYY-MM-DD)", field=field) from None


async def _changed_task(
    request: AnyRequest,
    db_session: NamedDependency[AsyncSession],
    form: FormMultiDict,
    task: task_service.TaskView,
    message: str,
) -> Template | Redirect:
    """The changed task's fragment for htmx (with a confirmation), else back to the form's page."""
    if not is_htmx(request):
        return Redirect(safe_next(form.get("next"), f"/customers/{task.account_id}/tasks"), status_code=303)
    cat = await catalog(request, db_session)
    task.rule_name = cat.rule_name(task.rule)
    show_customer = form.get("context") == "dashboard"
    return await render(
        request,
        db_session,
        "portal/partials/task_changed.html",
        {
            "task": task,
            "show_customer": show_customer,
            "selectable": show_customer,
            "flash": message,
            "can_edit_tasks": True,
            "catalog": cat,
            "back": safe_next(form.get("next"), "/dashboard") if show_customer else "",
        },
        with_tabs=False,
    )


@post("/tasks/{task_id:str}/state", guards=EDIT, name="task_state", status_code=200)
async def task_state(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], task_id: FromPath[str]
) -> Template | Redirect:
    user = current_user(request)
    form = await request.form()
    task = await task_service.change_state(
        db_session,
        user,
        task_id,
        form.get("to") or "",
        today=today(request),
        snooze_until=_date(form.get("snooze_until"), "snooze_until"),
        expected_version=_version(form.get("version")),
    )
    if task.status == TaskStatus.SNOOZED and task.snoozed_until:
        message = f"“{task.title}” snoozed until {task.snoozed_until.isoformat()}."
    else:
        message = f"“{task.title}” is now {task.status.label.lower()}."
    return await _changed_task(request, db_session, form, task, message)


@post("/tasks/{task_id:str}/comment", guards=EDIT, name="task_comment", status_code=200)
async def task_comment(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], task_id: FromPath[str]
) -> Template | Redirect:
    user = current_user(request)
    form = await request.form()
    task = await task_service.add_comment(
        db_session,
        user,
        task_id,
        form.get("text") or "",
        today=today(request),
        expected_version=_version(form.get("version")),
    )
    return await _changed_task(request, db_session, form, task, "Comment saved.")


@get("/tasks/{task_id:str}/history", guards=READ, name="task_history")
async def task_history(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], task_id: FromPath[str]
) -> Template:
    events = await task_service.history(db_session, current_user(request), task_id)
    return await render(request, None, "portal/partials/task_history.html", {"events": events}, with_tabs=False)


@post("/tasks/bulk", guards=EDIT, name="task_bulk", status_code=200)
async def task_bulk(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Template | Redirect:
    """One action on the selected tasks; htmx gets the refreshed list and a summary."""
    user = current_user(request)
    form = await request.form()
    action = form.get("action") or ""
    result = await task_service.bulk_change(
        db_session,
        user,
        [value for value in form.getall("task_id", []) if value],
        action,
        today=today(request),
        snooze_until=_date(form.get("snooze_until"), "snooze_until"),
        comment=form.get("comment") or "",
    )
    verbs = {
        "start": "started",
        "progress": "in progress",
        "finish": "finished",
        "reopen": "reopened",
        "snooze": "snoozed",
        "comment": "commented",
    }
    back = safe_next(form.get("next"), "/dashboard")
    if not is_htmx(request):
        return Redirect(back, status_code=303)
    cat = await catalog(request, db_session)
    query = parse_task_query(url_query_lists(back), cat, user)
    context = await dashboard_context(request, db_session, query, cat)
    context["flash"] = result.summary(verbs.get(action, action))
    context["flash_level"] = "ok" if not result.skipped else "warn"
    return await render(request, db_session, "portal/partials/task_results.html", context, with_tabs=False)


ROUTES = [dashboard, task_state, task_comment, task_history, task_bulk]
