"""A demo database with history: weekly demo snapshots run oldest first, so CHI has a trend.

Used by the portal's browser tests and benchmark (and meant for `csm demo --history N`): one run
per week up to `as_of`, each over a deterministic demo snapshot of the same customers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.demo import write_demo_snapshot
from server.db.models import Run
from server.services.runs import RunRequest, run_in_process


def snapshot_folder(root: Path, accounts: int, day: dt.date) -> Path:
    return root / f"demo-{accounts}-{day.isoformat()}"


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
) -> Run:
    """Write (or reuse) a demo snapshot per week and run the engine over each; returns the last run."""
    run: Run | None = None
    for back in range(weeks, -1, -1):
        day = as_of - dt.timedelta(days=7 * back)
        folder = snapshot_folder(root, accounts, day)
        if not (folder / "manifest.json").is_file():
            await asyncio.to_thread(write_demo_snapshot, folder, accounts=accounts, seed=seed, as_of=day)
        request = RunRequest(folder=folder, policy_dir=policy_dir, trigger="cli", chunk_size=chunk_size)
        run, _ = await run_in_process(factory, request)
    assert run is not None
    return run
