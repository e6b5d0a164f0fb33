"""Tasks as CSMs work them: the list and its counters, the state machine, snooze, comments, bulk actions.

The engine owns `task` (what fired and why); people own `task_state`. Nothing here writes an
engine-owned column. The state machine (PRODUCT.md):

    not_started -> started -> in_progress -> finished
    finished    -> started | not_started          (reopen)
    any state   -> snoozed until a date            (wakes by itself on that date)
    snoozed     -> the state it was snoozed from   (wake early), or snoozed again (new date)

A snoozed task wakes by itself: readers compute the *effective* state (a snooze whose date has
come is read as the state before it), and `wake_snoozed_tasks` writes the wake-up as a
transition by "system" (the worker calls it daily; a person's next edit of the task does it
too). Every change is a `task_event` with who and when, and an audit record. `task_state.version`
gives optimistic concurrency: a change based on an older version is refused with 409.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.base import utcnow
from server.db.models import Account, PolicyVersion, Task, TaskEvent, TaskState
from server.errors import Conflict, Forbidden, InvalidInput, NotFound
from server.services import audit
from server.services.catalog import Catalog
from server.services.paging import Paging
from server.services.query_params import choices, contains_pattern, last_value, whole_number
from server.web.access import Capability, CurrentUser

SYSTEM = "system"
MAX_COMMENT = 2000
MAX_BULK = 500
MAX_SNOOZE_DAYS = 365


class TaskStatus(StrEnum):
    NOT_STARTED = "not_started"
    STARTED = "started"
    IN_PROGRESS = "in_progress"
    FINISHED = "finished"
    SNOOZED = "snoozed"

    @property
    def label(self) -> str:
        return STATUS_LABELS[self]


STATUS_LABELS = {
    TaskStatus.NOT_STARTED: "Not started",
    TaskStatus.STARTED: "Started",
    TaskStatus.IN_PROGRESS: "In progress",
    TaskStatus.FINISHED: "Finished",
    TaskStatus.SNOOZED: "Snoozed",
}
OPEN_STATES = (TaskStatus.NOT_STARTED, TaskStatus.STARTED, TaskStatus.IN_PROGRESS)
FORWARD: dict[TaskStatus, tuple[TaskStatus, ...]] = {
    TaskStatus.NOT_STARTED: (TaskStatus.STARTED,),
    TaskStatus.STARTED: (TaskStatus.IN_PROGRESS,),
    TaskStatus.IN_PROGRESS: (TaskStatus.FINISHED,),
    TaskStatus.FINISHED: (TaskStatus.STARTED, TaskStatus.NOT_STARTED),
}
# What a button says for each target state (from a given state where it matters).
ACTION_LABELS = {
    TaskStatus.STARTED: "Start",
    TaskStatus.IN_PROGRESS: "Mark in progress",
    TaskStatus.FINISHED: "Finish",
    TaskStatus.NOT_STARTED: "Reopen as not started",
    TaskStatus.SNOOZED: "Snooze",
}
SEVERITY_ORDER = {"High": 0, "Medium": 1, "Low": 2}
DUE_CHOICES = ("overdue", "today", "week")
SORTS = ("severity", "due", "customer", "rule", "state", "opened", "chi")


def parse_status(value: str, field_name: str = "to") -> TaskStatus:
    try:
        return TaskStatus(value)
    except ValueError:
        raise InvalidInput(
            f"'{value}' is not a task state; expected one of {', '.join(TaskStatus)}", field=field_name
        ) from None


def effective_status(
    state: str | None, snoozed_until: dt.date | None, before: str | None, today: dt.date
) -> TaskStatus:
    """The state as of `today`: a snooze whose date has come reads as the state it was snoozed from."""
    status = TaskStatus(state or TaskStatus.NOT_STARTED)
    if status == TaskStatus.SNOOZED and (snoozed_until is None or snoozed_until <= today):
        return TaskStatus(before or TaskStatus.NOT_STARTED)
    return status


def allowed_transitions(status: TaskStatus, before_snooze: str | None = None) -> list[TaskStatus]:
    if status == TaskStatus.SNOOZED:
        return [TaskStatus(before_snooze or TaskStatus.NOT_STARTED), TaskStatus.SNOOZED]
    return [*FORWARD[status], TaskStatus.SNOOZED]


def action_label(current: TaskStatus, target: TaskStatus) -> str:
    if current == TaskStatus.SNOOZED and target != TaskStatus.SNOOZED:
        return "Wake now"
    if current == TaskStatus.SNOOZED:
        return "Change snooze"
    if current == TaskStatus.FINISHED and target == TaskStatus.STARTED:
        return "Reopen"
    return ACTION_LABELS[target]


def effective_state_sql(today: dt.date) -> ColumnElement[str]:
    """The effective state in SQL (the task_state row may be missing: not started)."""
    return case(
        (
            and_(TaskState.state == TaskStatus.SNOOZED.value, TaskState.snoozed_until <= today),
            func.coalesce(TaskState.state_before_snooze, TaskStatus.NOT_STARTED.value),
        ),
        else_=func.coalesce(TaskState.state, TaskStatus.NOT_STARTED.value),
    )


def open_task_sql(today: dt.date) -> ColumnElement[bool]:
    """An active task that is neither finished nor (still) snoozed."""
    return and_(Task.active.is_(True), effective_state_sql(today).in_([s.value for s in OPEN_STATES]))


# ── reading ─────────────────────────────────────────────────────────────────────────────


@dataclass
class TaskQuery:
    severities: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)  # empty: the open states
    due: str = ""
    csm: str = ""  # "" = everyone the user may see
    account_id: str | None = None
    q: str = ""
    resolved: bool = False  # include tasks the engine resolved
    sort: str = "severity"
    descending: bool = False
    page: int = 1
    per_page: int = 50


@dataclass
class TaskView:
    id: str
    rule: str
    rule_name: str
    account_id: str
    account_name: str
    account_chi: int | None
    account_band: str | None
    csm: str
    key: str
    category: str
    severity: str
    title: str
    description: str
    due_on: dt.date
    active: bool
    opened_at: dt.datetime
    resolved_at: dt.datetime | None
    reopened_at: dt.datetime | None
    evidence: dict[str, Any]
    thresholds: dict[str, Any]
    condition: str
    severity_case: str | None
    policy_hash: str
    status: TaskStatus
    stored_status: TaskStatus
    snoozed_until: dt.date | None
    state_before_snooze: str | None
    comment: str
    version: int
    updated_by: str | None
    updated_at: dt.datetime | None
    allowed: list[TaskStatus]
    overdue: bool
    policy_version_id: int | None = None

    @property
    def snoozed(self) -> bool:
        return self.status == TaskStatus.SNOOZED


@dataclass
class TaskPage(Paging):
    items: list[TaskView]


@dataclass
class Counters:
    high: int = 0
    medium: int = 0
    low: int = 0
    snoozed: int = 0
    overdue: int = 0

    @property
    def total(self) -> int:
        return self.high + self.medium + self.low


def _view(
    task: Task,
    state: TaskState | None,
    account: tuple[str, int | None, str | None, str],
    today: dt.date,
    rule_names: dict[str, str],
) -> TaskView:
    stored = TaskStatus(state.state) if state else TaskStatus.NOT_STARTED
    before = state.state_before_snooze if state else None
    until = state.snoozed_until if state else None
    status = effective_status(stored, until, before, today)
    return TaskView(
        id=task.id,
        rule=task.rule,
        rule_name=rule_names.get(task.rule, task.rule),
        account_id=task.account_id,
        account_name=account[0],
        account_chi=account[1],
        account_band=account[2],
        csm=account[3],
        key=task.key,
        category=task.category,
        severity=task.severity,
        title=task.title,
        description=task.description,
        due_on=task.due_on,
        active=task.active,
        opened_at=task.opened_at,
        resolved_at=task.resolved_at,
        reopened_at=task.reopened_at,
        evidence=task.evidence,
        thresholds=task.thresholds,
        condition=task.condition,
        severity_case=task.severity_case,
        policy_hash=task.policy_hash,
        status=status,
        stored_status=stored,
        snoozed_until=until if status == TaskStatus.SNOOZED else None,
        state_before_snooze=before,
        comment=state.comment if state else "",
        version=state.version if state else 0,
        updated_by=state.updated_by if state else None,
        updated_at=state.updated_at if state else None,
        allowed=allowed_transitions(status, before) if task.active else [],
        overdue=task.active and status in OPEN_STATES and task.due_on < today,
    )


def _scope(user: CurrentUser, csm: str) -> list[ColumnElement[bool]]:
    """The tasks of the customers this user sees (and of one CSM's, when chosen).

    Written as `task.account_id IN (the visible customers)`, so that the database starts from
    the CSM's customers (index on account.csm) rather than from every active task.
    """
    conditions = [user.customer_filter()]
    if csm:
        conditions.append(Account.csm == csm)
    if user.sees_every_customer and not csm:
        return conditions
    visible = select(Account.id).where(*conditions).correlate(None).scalar_subquery()
    return [Task.account_id.in_(visible)]


def _task_conditions(user: CurrentUser, query: TaskQuery, today: dt.date) -> list[ColumnElement[bool]]:
    conditions = _scope(user, query.csm)
    effective = effective_state_sql(today)
    if query.account_id is not None:
        conditions.append(Task.account_id == query.account_id)
    if not query.resolved:
        conditions.append(Task.active.is_(True))
    if query.severities:
        conditions.append(Task.severity.in_(query.severities))
    if query.categories:
        conditions.append(Task.category.in_(query.categories))
    if query.rules:
        conditions.append(Task.rule.in_(query.rules))
    states = query.states or ([s.value for s in OPEN_STATES] if query.account_id is None else [])
    if states:
        conditions.append(effective.in_(states))
    if query.due == "overdue":
        conditions.append(Task.due_on < today)
    elif query.due == "today":
        conditions.append(Task.due_on == today)
    elif query.due == "week":
        end_of_week = today + dt.timedelta(days=6 - today.weekday())
        conditions.append(and_(Task.due_on >= today, Task.due_on <= end_of_week))
    if query.q:
        pattern = contains_pattern(query.q)
        conditions.append(
            or_(
                Task.title.ilike(pattern, escape="\\"),
                Account.name.ilike(pattern, escape="\\"),
                Account.id.ilike(pattern, escape="\\"),
            )
        )
    return conditions


def severity_rank_sql() -> ColumnElement[int]:
    """High first, then Medium, then Low (the names' alphabetical order is not theirs)."""
    return case(*((Task.severity == name, rank) for name, rank in SEVERITY_ORDER.items()), else_=len(SEVERITY_ORDER))


def _order(query: TaskQuery, today: dt.date) -> list[Any]:
    severity = severity_rank_sql()
    keys: dict[str, Any] = {
        "severity": severity,
        "due": Task.due_on,
        "customer": func.lower(Account.name),
        "rule": Task.rule,
        "state": effective_state_sql(today),
        "opened": Task.opened_at,
        "chi": Account.chi,
    }
    primary = keys[query.sort]
    primary = primary.desc() if query.descending else primary.asc()
    if query.sort == "chi":
        primary = primary.nulls_last()
    return [primary, severity, Task.due_on, Account.name, Task.id]


def _base_select() -> Select[Task, TaskState, str, int | None, str | None, str]:
    return (
        select(Task, TaskState, Account.name, Account.chi, Account.band, Account.csm)
        .join(Account, Account.id == Task.account_id)
        .outerjoin(TaskState, TaskState.task_id == Task.id)
        .execution_options(populate_existing=True)
    )


async def list_tasks(
    session: AsyncSession,
    user: CurrentUser,
    query: TaskQuery,
    today: dt.date,
    rule_names: dict[str, str] | None = None,
) -> TaskPage:
    conditions = _task_conditions(user, query, today)
    count_statement = (
        select(func.count())
        .select_from(Task)
        .join(Account, Account.id == Task.account_id)
        .outerjoin(TaskState, TaskState.task_id == Task.id)
        .where(*conditions)
    )
    total = await session.scalar(count_statement) or 0
    statement = (
        _base_select()
        .where(*conditions)
        .order_by(*_order(query, today))
        .limit(query.per_page)
        .offset((query.page - 1) * query.per_page)
    )
    names = rule_names or {}
    rows = (await session.execute(statement)).all()
    items = [_view(task, state, (name, chi, band, csm), today, names) for task, state, name, chi, band, csm in rows]
    await _attach_policy_versions(session, items)
    return TaskPage(items=items, total=total, page=query.page, per_page=query.per_page)


async def _attach_policy_versions(session: AsyncSession, items: Sequence[TaskView]) -> None:
    hashes = {item.policy_hash for item in items}
    if not hashes:
        return
    versions = dict(
        (
            await session.execute(
                select(PolicyVersion.content_hash, PolicyVersion.id).where(PolicyVersion.content_hash.in_(hashes))
            )
        ).all()
    )
    for item in items:
        item.policy_version_id = versions.get(item.policy_hash)


async def counters(session: AsyncSession, user: CurrentUser, today: dt.date, csm: str = "") -> Counters:
    """High / Medium / Low / Total open tasks over the user's portfolio (or one CSM's)."""
    effective = effective_state_sql(today)
    statement = (
        select(
            Task.severity,
            func.count().filter(effective.in_([s.value for s in OPEN_STATES])),
            func.count().filter(effective == TaskStatus.SNOOZED.value),
            func.count().filter(and_(effective.in_([s.value for s in OPEN_STATES]), Task.due_on < today)),
        )
        .select_from(Task)
        .join(Account, Account.id == Task.account_id)
        .outerjoin(TaskState, TaskState.task_id == Task.id)
        .where(Task.active.is_(True), *_scope(user, csm))
        .group_by(Task.severity)
    )
    result = Counters()
    for severity, open_count, snoozed, overdue in await session.execute(statement):
        if severity == "High":
            result.high = open_count
        elif severity == "Medium":
            result.medium = open_count
        elif severity == "Low":
            result.low = open_count
        result.snoozed += snoozed
        result.overdue += overdue
    return result


async def get_task(
    session: AsyncSession, user: CurrentUser, task_id: str, today: dt.date, rule_names: dict[str, str] | None = None
) -> TaskView:
    row = (await session.execute(_base_select().where(Task.id == task_id, user.customer_filter()))).one_or_none()
    if row is None:
        raise NotFound(f"no task {task_id!r}")
    task, state, name, chi, band, csm = row
    view = _view(task, state, (name, chi, band, csm), today, rule_names or {})
    await _attach_policy_versions(session, [view])
    return view


@dataclass
class EventView:
    at: dt.datetime
    actor: str
    kind: str
    from_value: str | None
    to_value: str | None
    run_id: int | None

    @property
    def text(self) -> str:
        return describe_event(self.kind, self.from_value, self.to_value)


def _state_label(value: str | None) -> str:
    if value is None:
        return "?"
    try:
        return TaskStatus(value).label.lower()
    except ValueError:
        return value


def describe_event(kind: str, before: str | None, after: str | None) -> str:
    """One line of a task's history, in plain words."""
    if kind == "opened":
        return f"Opened by the engine ({after} severity)"
    if kind == "reopened":
        return "Fired again: reopened by the engine"
    if kind == "resolved":
        return "No longer fires: resolved by the engine"
    if kind == "severity":
        return f"Severity changed from {before} to {after}"
    if kind == "state":
        return f"State changed from {_state_label(before)} to {_state_label(after)}"
    if kind == "snooze":
        return f"Snoozed until {after} (was {_state_label(before)})"
    if kind == "wake":
        return f"Woke up from snooze: {_state_label(after)}"
    if kind == "comment":
        return f"Comment: {after}"
    return f"{kind}: {before or ''} → {after or ''}"


async def history(session: AsyncSession, user: CurrentUser, task_id: str) -> list[EventView]:
    visible = await session.scalar(
        select(Task.id).join(Account, Account.id == Task.account_id).where(Task.id == task_id, user.customer_filter())
    )
    if visible is None:
        raise NotFound(f"no task {task_id!r}")
    events = await session.scalars(select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id.desc()))
    return [EventView(e.at, e.actor, e.kind, e.from_value, e.to_value, e.run_id) for e in events]


# ── changing ────────────────────────────────────────────────────────────────────────────


def _require_edit(user: CurrentUser) -> None:
    if not user.can(Capability.EDIT_TASKS):
        raise Forbidden(f"your role ({user.role}) may not edit tasks")


async def _load_for_edit(session: AsyncSession, user: CurrentUser, task_id: str) -> tuple[Task, TaskState | None]:
    _require_edit(user)
    task = await session.scalar(
        select(Task).join(Account, Account.id == Task.account_id).where(Task.id == task_id, user.customer_filter())
    )
    if task is None:
        raise NotFound(f"no task {task_id!r}")
    state = await session.get(TaskState, task_id, populate_existing=True)
    return task, state


def _event(task_id: str, actor: str, kind: str, before: str | None, after: str | None, at: dt.datetime) -> TaskEvent:
    return TaskEvent(task_id=task_id, actor=actor, kind=kind, from_value=before, to_value=after, at=at)


def _check_version(current: TaskState | None, expected_version: int | None) -> None:
    """Refuse a change made on an older view of the task (someone else changed it meanwhile)."""
    version = current.version if current else 0
    if expected_version is not None and expected_version != version:
        who = (current.updated_by if current else None) or "someone else"
        raise Conflict(
            f"This task was changed by {who} meanwhile; reload it and try again.",
            field="version",
            extra={"current_version": version},
        )


async def _write_state(session: AsyncSession, task_id: str, current: TaskState | None, values: dict[str, Any]) -> int:
    """Write the CSM-owned columns; returns the new version.

    The caller has checked the version the user saw (`_check_version`); the `WHERE version`
    refuses a change that another request wrote since this one read the state.
    """
    if current is None:
        await session.execute(insert(TaskState).values(task_id=task_id, version=1, **values))
        return 1
    version = current.version
    result = await session.execute(
        update(TaskState)
        .where(TaskState.task_id == task_id, TaskState.version == version)
        .values(version=version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise Conflict("This task was changed by someone else meanwhile; reload it and try again.")
    return version + 1


def _check_snooze_date(snooze_until: dt.date | None, today: dt.date) -> dt.date:
    if snooze_until is None:
        raise InvalidInput("snoozing needs a date to wake up on", field="snooze_until")
    if snooze_until <= today:
        raise InvalidInput(f"the snooze date must be after today ({today.isoformat()})", field="snooze_until")
    if snooze_until > today + dt.timedelta(days=MAX_SNOOZE_DAYS):
        raise InvalidInput(f"a task may be snoozed for at most {MAX_SNOOZE_DAYS} days", field="snooze_until")
    return snooze_until


async def change_state(
    session: AsyncSession,
    user: CurrentUser,
    task_id: str,
    to: TaskStatus | str,
    *,
    today: dt.date,
    snooze_until: dt.date | None = None,
    expected_version: int | None = None,
    reopen: bool = False,
) -> TaskView:
    """Move a task to state `to` (409 naming the allowed states when the machine does not allow it).

    `reopen`: the move is a reopening, so only a finished task may make it."""
    target = parse_status(to) if isinstance(to, str) else to
    task, state = await _load_for_edit(session, user, task_id)
    if not task.active:
        raise Conflict(
            "The engine resolved this task (it no longer fires); it cannot change state.",
            field="to",
            extra={"allowed": [], "state": state.state if state else TaskStatus.NOT_STARTED.value},
        )
    _check_version(state, expected_version)
    now = utcnow()
    stored = TaskStatus(state.state) if state else TaskStatus.NOT_STARTED
    before = state.state_before_snooze if state else None
    current = effective_status(stored, state.snoozed_until if state else None, before, today)
    events: list[TaskEvent] = []
    if stored == TaskStatus.SNOOZED and current != TaskStatus.SNOOZED:
        # The snooze ran out before the worker woke it: record the wake-up first, by "system".
        events.append(_event(task_id, SYSTEM, "wake", stored.value, current.value, now))
    allowed = allowed_transitions(current, before)
    if reopen and current != TaskStatus.FINISHED:
        raise Conflict(
            f"Only a finished task can be reopened; this one is {current.label.lower()}.",
            field="to",
            extra={"state": current.value, "allowed": [s.value for s in allowed]},
        )
    if target not in allowed:
        names = ", ".join(s.label.lower() for s in allowed)
        raise Conflict(
            f"A task that is {current.label.lower()} cannot move to {target.label.lower()}; allowed: {names}.",
            field="to",
            extra={"state": current.value, "allowed": [s.value for s in allowed]},
        )
    values: dict[str, Any] = {"updated_by": user.email, "updated_at": now}
    if target == TaskStatus.SNOOZED:
        until = _check_snooze_date(snooze_until, today)
        keep = before if current == TaskStatus.SNOOZED else current.value
        values.update(state=TaskStatus.SNOOZED.value, snoozed_until=until, state_before_snooze=keep)
        events.append(_event(task_id, user.email, "snooze", keep, until.isoformat(), now))
    else:
        values.update(state=target.value, snoozed_until=None, state_before_snooze=None)
        kind = "wake" if current == TaskStatus.SNOOZED else "state"
        events.append(_event(task_id, user.email, kind, current.value, target.value, now))
    await _write_state(session, task_id, state, values)
    session.add_all(events)
    await audit.record(
        session,
        "task.snoozed" if target == TaskStatus.SNOOZED else "task.state_changed",
        actor=user.email,
        object_type="task",
        object_id=task_id,
        before={"state": current.value},
        after={"state": target.value, "snoozed_until": _iso(values.get("snoozed_until"))},
        detail={"account_id": task.account_id, "rule": task.rule},
    )
    return await get_task(session, user, task_id, today)


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def clean_comment(text: str) -> str:
    cleaned = "".join(char for char in text.strip() if char.isprintable() or char in "\n\t")
    if not cleaned:
        raise InvalidInput("the comment is empty", field="text")
    if len(cleaned) > MAX_COMMENT:
        raise InvalidInput(f"a comment may be at most {MAX_COMMENT} characters long", field="text")
    return cleaned


async def add_comment(
    session: AsyncSession,
    user: CurrentUser,
    task_id: str,
    text: str,
    *,
    today: dt.date,
    expected_version: int | None = None,
) -> TaskView:
    comment = clean_comment(text)
    _task, state = await _load_for_edit(session, user, task_id)
    _check_version(state, expected_version)
    now = utcnow()
    values: dict[str, Any] = {"comment": comment, "updated_by": user.email, "updated_at": now}
    await _write_state(session, task_id, state, values)
    session.add(_event(task_id, user.email, "comment", None, comment, now))
    await audit.record(
        session,
        "task.commented",
        actor=user.email,
        object_type="task",
        object_id=task_id,
        after={"comment": comment[:300]},
    )
    return await get_task(session, user, task_id, today)


@dataclass
class BulkResult:
    done: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def summary(self, verb: str) -> str:
        text = f"{len(self.done)} task{'s' if len(self.done) != 1 else ''} {verb}"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped ({self.skipped[0]['reason']})"
        return text + "."


BULK_ACTIONS = {
    "start": TaskStatus.STARTED,
    "progress": TaskStatus.IN_PROGRESS,
    "finish": TaskStatus.FINISHED,
    "reopen": TaskStatus.STARTED,
    "snooze": TaskStatus.SNOOZED,
}


async def bulk_change(
    session: AsyncSession,
    user: CurrentUser,
    task_ids: Iterable[str],
    action: str,
    *,
    today: dt.date,
    snooze_until: dt.date | None = None,
    comment: str = "",
) -> BulkResult:
    """Apply one action to many tasks. Any id the user may not see: 404 and nothing changes.

    Tasks the state machine does not allow the action for are skipped, each with the reason.
    """
    _require_edit(user)
    ids = list(dict.fromkeys(task_ids))
    if not ids:
        raise InvalidInput("select at least one task", field="task_ids")
    if len(ids) > MAX_BULK:
        raise InvalidInput(f"at most {MAX_BULK} tasks at once", field="task_ids")
    if action not in (*BULK_ACTIONS, "comment"):
        raise InvalidInput(
            f"unknown action '{action}'; expected one of {', '.join([*BULK_ACTIONS, 'comment'])}", field="action"
        )
    visible = set(
        await session.scalars(
            select(Task.id).join(Account, Account.id == Task.account_id).where(Task.id.in_(ids), user.customer_filter())
        )
    )
    missing = [task_id for task_id in ids if task_id not in visible]
    if missing:
        raise NotFound(f"no task {missing[0]!r}", extra={"missing": missing[:20]})
    if action == "snooze":
        _check_snooze_date(snooze_until, today)
    if action == "comment":
        clean_comment(comment)
    result = BulkResult()
    for task_id in ids:
        try:
            if action == "comment":
                await add_comment(session, user, task_id, comment, today=today)
            else:
                await change_state(
                    session,
                    user,
                    task_id,
                    BULK_ACTIONS[action],
                    today=today,
                    snooze_until=snooze_until,
                    reopen=action == "reopen",
                )
        except Conflict as exc:
            result.skipped.append({"task_id": task_id, "reason": exc.message, "allowed": exc.extra.get("allowed", [])})
        else:
            result.done.append(task_id)
    return result


async def wake_snoozed_tasks(session: AsyncSession, today: dt.date) -> int:
    """Wake every task whose snooze date has come, as a transition by "system". Returns how many."""
    rows = (
        await session.execute(
            select(TaskState.task_id, TaskState.state_before_snooze, TaskState.version).where(
                TaskState.state == TaskStatus.SNOOZED.value, TaskState.snoozed_until <= today
            )
        )
    ).all()
    now = utcnow()
    woken = 0
    for task_id, before, version in rows:
        target = before or TaskStatus.NOT_STARTED.value
        result = await session.execute(
            update(TaskState)
            .where(TaskState.task_id == task_id, TaskState.version == version)
            .values(
                state=target,
                snoozed_until=None,
                state_before_snooze=None,
                version=version + 1,
                updated_by=SYSTEM,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            session.add(_event(task_id, SYSTEM, "wake", TaskStatus.SNOOZED.value, target, now))
            woken += 1
    await session.flush()
    return woken


async def open_counts_by_account(
    session: AsyncSession, account_ids: Sequence[str], today: dt.date
) -> dict[str, dict[str, int]]:
    """Open tasks per customer and severity (for the overview's rows)."""
    if not account_ids:
        return {}
    statement = (
        select(Task.account_id, Task.severity, func.count())
        .outerjoin(TaskState, TaskState.task_id == Task.id)
        .where(Task.account_id.in_(account_ids), open_task_sql(today))
        .group_by(Task.account_id, Task.severity)
    )
    counts: dict[str, dict[str, int]] = {}
    for account_id, severity, count in await session.execute(statement):
        counts.setdefault(account_id, {})[severity] = count
    return counts


# ── the dashboard's filter in the URL ───────────────────────────────────────────────────


def _choices(values: Sequence[str], allowed: Iterable[str], name: str) -> list[str]:
    return choices(values, allowed, name, listed=15)


def parse_task_query(params: Mapping[str, list[str]], catalog: Catalog, user: CurrentUser) -> TaskQuery:
    """A `TaskQuery` from URL parameters; anything invalid is a 400 naming the parameter."""
    query = TaskQuery()
    query.severities = _choices(params.get("severity", []), SEVERITY_ORDER, "severity")
    query.categories = _choices(params.get("category", []), catalog.categories, "category")
    query.rules = _choices(params.get("rule", []), [rule.id for rule in catalog.rules], "rule")
    query.states = _choices(params.get("state", []), [s.value for s in TaskStatus], "state")
    due = last_value(params, "due")
    query.due = _choices([due], DUE_CHOICES, "due")[0] if due else ""
    query.csm = last_value(params, "csm")[:320] if user.sees_every_customer else ""
    query.q = "".join(char for char in last_value(params, "q") if char.isprintable())[:200]
    query.resolved = last_value(params, "resolved") in ("1", "true", "yes")
    query.sort = _choices([last_value(params, "sort") or "severity"], SORTS, "sort")[0]
    query.descending = _choices([last_value(params, "dir") or "asc"], ("asc", "desc"), "dir")[0] == "desc"
    page = last_value(params, "page")
    query.page = whole_number(page, "page", 1, 100_000) if page else 1
    per_page = last_value(params, "per_page")
    query.per_page = whole_number(per_page, "per_page", 1, 200) if per_page else 50
    return query


def task_query_params(query: TaskQuery, **changes: Any) -> list[tuple[str, str]]:
    values = {**query.__dict__, **changes}
    pairs: list[tuple[str, str]] = []
    pairs += [("severity", v) for v in values["severities"]]
    pairs += [("category", v) for v in values["categories"]]
    pairs += [("rule", v) for v in values["rules"]]
    pairs += [("state", v) for v in values["states"]]
    if values["due"]:
        pairs.append(("due", values["due"]))
    if values["csm"]:
        pairs.append(("csm", values["csm"]))
    if values["q"]:
        pairs.append(("q", values["q"]))
    if values["resolved"]:
        pairs.append(("resolved", "1"))
    if values["sort"] != "severity" or values["descending"]:
        pairs += [("sort", values["sort"]), ("dir", "desc" if values["descending"] else "asc")]
    if values["per_page"] != 50:
        pairs.append(("per_page", str(values["per_page"])))
    if values["page"] != 1:
        pairs.append(("page", str(values["page"])))
    return pairs
