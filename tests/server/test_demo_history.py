"""`csm demo`'s history: weekly runs over look-back snapshots, with the demo CSMs working in between."""

from __future__ import annotations

import collections
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Account, AuditEvent, ChiPoint, Run, Task, TaskEvent, TaskState
from server.db.session import create_engine, session_factory, session_scope
from server.services.demo_history import run_demo_history, snapshot_folder
from tests.conftest import POLICY_DIR

AS_OF = dt.date(2026, 12, 4)
WEEKS = 3


@pytest.fixture
async def factory(database_url: str) -> Any:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


async def history(factory: async_sessionmaker[AsyncSession], root: Path) -> Run:
    return await run_demo_history(
        factory, root, accounts=90, as_of=AS_OF, weeks=WEEKS, policy_dir=POLICY_DIR, chunk_size=40, work=True
    )


async def test_weekly_runs_give_every_customer_a_moving_chi_history(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    root = tmp_path / "snapshots"
    last = await history(factory, root)
    days = [AS_OF - dt.timedelta(days=7 * back) for back in range(WEEKS, -1, -1)]
    assert sorted(p.name for p in root.iterdir()) == sorted(snapshot_folder(root, 90, day, AS_OF).name for day in days)
    assert snapshot_folder(root, 90, AS_OF, AS_OF).name == "demo-90-2026-12-04"  # today's is the plain one
    async with session_scope(factory) as session:
        runs = (await session.scalars(select(Run).order_by(Run.id))).all()
        points = (await session.scalars(select(ChiPoint))).all()
    assert [run.state for run in runs] == ["succeeded"] * (WEEKS + 1)
    assert runs[-1].id == last.id
    by_account: dict[str, dict[dt.date, int]] = collections.defaultdict(dict)
    for point in points:
        by_account[point.account_id][point.as_of] = point.chi
    assert len(by_account) == 90
    assert all(sorted(series) == days for series in by_account.values())
    moved = [series for series in by_account.values() if len(set(series.values())) > 1]
    fell = [series for series in moved if series[days[-1]] < series[days[0]]]
    assert len(moved) >= 20, "the customers' scores move from week to week"
    assert fell, "some customers decline over the weeks"


async def test_the_demo_csms_work_their_tasks_between_runs(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await history(factory, tmp_path)
    async with session_scope(factory) as session:
        owner = dict((await session.execute(select(Task.id, Account.csm).join(Account))).all())
        states = collections.Counter((await session.scalars(select(TaskState.state))).all())
        by_people = select(TaskEvent).where(TaskEvent.actor.not_in(("engine", "system")))
        csm_events = (await session.scalars(by_people)).all()
        audit = (await session.scalars(select(AuditEvent).where(AuditEvent.object_type == "task"))).all()
        untouched = await session.scalar(
            select(Task.id).outerjoin(TaskState).where(Task.active.is_(True), TaskState.task_id.is_(None)).limit(1)
        )
    assert states["finished"] > 0 and states["in_progress"] > 0 and states["snoozed"] > 0
    assert untouched is not None, "some tasks are still waiting for their CSM"
    # Every change is made by the customer's own CSM, through the task service: history and audit.
    assert csm_events and all(event.actor == owner[event.task_id] for event in csm_events)
    assert {event.object_id for event in audit} == {event.task_id for event in csm_events}


async def test_a_second_demo_reuses_the_snapshots_and_runs(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    root = tmp_path / "snapshots"
    first = await history(factory, root)
    written = modified_times(root)
    again = await history(factory, root)
    assert again.id == first.id
    assert modified_times(root) == written


def modified_times(root: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in root.rglob("*.jsonl")}
