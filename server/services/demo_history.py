"""A demo database with history: weekly demo snapshots run oldest first, so CHI has a trend.

Used by `csm demo`, the portal's browser tests and benchmark: one run per week up to `as_of`,
each over a deterministic demo snapshot of the same customers seen that many weeks earlier
(`write_demo_snapshot(..., world_as_of=as_of)`), so the trends move as the customers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from pathlib import Path

import msgspec
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.demo import write_demo_snapshot
from server.db.models import Account, Run, Task, TaskState
from server.db.session import session_scope
from server.errors import Conflict
from server.services.audit import CLI
from server.services.runs import RunRequest, run_in_process
from server.services.tasks import TaskStatus, change_state, effective_status
from server.services.users import create_user
from server.web.access import CurrentUser, Role

DEMO_PASSWORD = "csm-demo-2026!"  # noqa: S105  (printed for the demo's users; a demo has no secrets)
DEMO_STAFF = (
    ("admin@demo.csm", "admin", "Ada Admin"),
    ("ops@demo.csm", "ops", "Otto Ops"),
    ("manager@demo.csm", "manager", "Mia Manager"),
    ("viewer@demo.csm", "viewer", "Vic Viewer"),
)


def snapshot_folder(root: Path, accounts: int, day: dt.date, world: dt.date | None = None) -> Path:
    """Where the demo snapshot of `day` goes; a look back from a later `world` day is kept apart."""
    suffix = f"-seen-{world.isoformat()}" if world is not None and world != day else ""
    return root / f"demo-{accounts}-{day.isoformat()}{suffix}"


async def run_demo_history(
    factory: async_sessionmaker[AsyncSession],
    root: Path,
    *,
    accounts: int,
    as_of: dt.date,
    weeks: int,
    policy_dir: Path,
    seed: int = 1,
    chunk_size: int = 1000,
    work: bool = False,
) -> Run:
    """Write (or reuse) a demo snapshot per week and run the engine over each; returns the last run.

    With `work`, the demo's CSMs work on the open tasks between two runs (see `simulate_csm_work`).
    """
    run: Run | None = None
    for back in range(weeks, -1, -1):
        day = as_of - dt.timedelta(days=7 * back)
        folder = snapshot_folder(root, accounts, day, as_of)
        if not (folder / "manifest.json").is_file():
            await asyncio.to_thread(
                write_demo_snapshot, folder, accounts=accounts, seed=seed, as_of=day, world_as_of=as_of
            )
        if work and run is not None:
            async with session_scope(factory) as session:
                await simulate_csm_work(session, day, seed)
        request = RunRequest(folder=folder, policy_dir=policy_dir, trigger="cli", chunk_size=chunk_size)
        run, _ = await run_in_process(factory, request)
    assert run is not None
    return run


# What the demo's CSMs do in a week with a task that is open, by the state it is in: (share of the
# tasks, the state they take it to); the rest stay where they are. Most work gets done within two
# or three weeks, a little lingers and goes overdue, as in a real team.
DEMO_WORK: dict[TaskStatus, tuple[tuple[float, TaskStatus], ...]] = {
    TaskStatus.NOT_STARTED: (
        (0.40, TaskStatus.FINISHED),
        (0.15, TaskStatus.IN_PROGRESS),
        (0.10, TaskStatus.STARTED),
        (0.05, TaskStatus.SNOOZED),
    ),
    TaskStatus.STARTED: ((0.50, TaskStatus.FINISHED), (0.25, TaskStatus.IN_PROGRESS)),
    TaskStatus.IN_PROGRESS: ((0.65, TaskStatus.FINISHED),),
}
DEMO_SNOOZE_DAYS = 10
_PATH = (TaskStatus.NOT_STARTED, TaskStatus.STARTED, TaskStatus.IN_PROGRESS, TaskStatus.FINISHED)


async def simulate_csm_work(session: AsyncSession, day: dt.date, seed: int = 1) -> int:
    """A week of the demo CSMs' work on the open tasks, done on `day` through the task service (so it
    leaves the same history and audit records as a person's). Returns how many tasks changed."""
    rng = random.Random(f"{seed}:work:{day.isoformat()}")  # noqa: S311 (demo data, not cryptography)
    open_states = [status.value for status in (*DEMO_WORK, TaskStatus.SNOOZED)]
    rows = await session.execute(
        select(Task.id, Account.csm, TaskState.state, TaskState.snoozed_until, TaskState.state_before_snooze)
        .join(Account, Account.id == Task.account_id)
        .outerjoin(TaskState, TaskState.task_id == Task.id)
        .where(Task.active.is_(True), or_(TaskState.state.is_(None), TaskState.state.in_(open_states)))
        .order_by(Task.id)
    )
    changed = 0
    for task_id, csm, state, snoozed_until, before in rows.all():
        current = effective_status(state, snoozed_until, before, day)
        if current not in DEMO_WORK:
            continue  # still snoozed
        target = _pick_work(rng, DEMO_WORK[current])
        if target is None:
            continue
        user = CurrentUser(id=0, email=csm, name=csm, role=Role.CSM)
        if target == TaskStatus.SNOOZED:
            until = day + dt.timedelta(days=DEMO_SNOOZE_DAYS)
            await change_state(session, user, task_id, target, today=day, snooze_until=until)
        else:
            for step in _PATH[_PATH.index(current) + 1 : _PATH.index(target) + 1]:
                await change_state(session, user, task_id, step, today=day)
        changed += 1
    return changed


def _pick_work(rng: random.Random, choices: tuple[tuple[float, TaskStatus], ...]) -> TaskStatus | None:
    draw = rng.random()
    for share, target in choices:
        if draw < share:
            return target
        draw -= share
    return None


async def create_demo_users(session: AsyncSession, snapshot: Path) -> list[tuple[str, str]]:
    """The demo staff and the first three CSMs of `snapshot`'s customers, all with DEMO_PASSWORD;
    returns (email, role) of each. A user made by an earlier demo is left as it is."""
    csms: list[str] = []
    with (snapshot / "accounts.jsonl").open("rb") as handle:
        for line in handle:
            email = msgspec.json.decode(line)["csm"]
            if email not in csms:
                csms.append(email)
    wanted = [*DEMO_STAFF, *((email, "csm", "") for email in csms[:3])]
    for email, role, name in wanted:
        with contextlib.suppress(Conflict):  # checked before anything is written
            await create_user(session, email, role, DEMO_PASSWORD, name, who=CLI)
    return [(email, role) for email, role, _ in wanted]
