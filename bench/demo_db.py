"""A demo database with CHI history and the demo users, for the portal benchmark and browser tests.

The database is migrated, filled by one engine run per week of demo snapshots (oldest first, as
`csm demo` does, without the CSMs' simulated work so the figures do not depend on it), and gets the
demo users of `csm demo` (password `DEMO_PASSWORD`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from server.db.migrate import upgrade
from server.db.session import create_engine, session_factory, session_scope
from server.services.demo_history import create_demo_users, run_demo_history, snapshot_folder

ROOT = Path(__file__).resolve().parents[1]
POLICY_DIR = ROOT / "policies"


async def build(url: str, snapshots: Path, *, accounts: int, weeks: int, as_of: dt.date) -> dict[str, str]:
    """Migrate and fill the database at `url`; returns {email: role} of the demo users."""
    await upgrade(url)
    engine = create_engine(url)
    try:
        factory = session_factory(engine)
        await run_demo_history(factory, snapshots, accounts=accounts, as_of=as_of, weeks=weeks, policy_dir=POLICY_DIR)
        async with session_scope(factory) as session:
            return dict(await create_demo_users(session, snapshot_folder(snapshots, accounts, as_of)))
    finally:
        await engine.dispose()
