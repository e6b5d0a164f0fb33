"""Exports as JSON Lines, in the row shapes of PRODUCT.md."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Account, Task, TaskState
from server.services.tasks import effective_state_sql

EXPORT_BATCH = 1000


async def export_health(session: AsyncSession) -> AsyncIterator[dict[str, Any]]:
    """`{"account_id", "chi", "band", "sections": {name: score}, "reasons": [..]}` per scored customer."""
    statement = (
        select(Account).where(Account.chi.is_not(None)).order_by(Account.id).execution_options(yield_per=EXPORT_BATCH)
    )
    async for account in await session.stream_scalars(statement):
        yield {
            "account_id": account.id,
            "chi": account.chi,
            "band": account.band,
            "sections": account.sections,
            "reasons": [reason["text"] for reason in account.reasons],
        }


async def export_tasks(
    session: AsyncSession, today: dt.date, include_inactive: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """`{"task_id", "rule", "account_id", "key", "category", "severity", "active", "state", "title"}` per task;
    the state as of `today` (a snooze whose date has come reads as the state it was snoozed from)."""
    statement = (
        select(Task, effective_state_sql(today))
        .outerjoin(TaskState, TaskState.task_id == Task.id)
        .order_by(Task.account_id, Task.rule, Task.key)
        .execution_options(yield_per=EXPORT_BATCH)
    )
    if not include_inactive:
        statement = statement.where(Task.active.is_(True))
    async for task, state in await session.stream(statement):
        yield {
            "task_id": task.id,
            "rule": task.rule,
            "account_id": task.account_id,
            "key": task.key,
            "category": task.category,
            "severity": task.severity,
            "active": task.active,
            "state": state,
            "title": task.title,
        }
