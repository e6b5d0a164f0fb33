"""Build a demo database with CHI history and the demo users (for the portal benchmark and browser tests).

    .venv/bin/python -m bench.demo_db var/portal-demo.db --accounts 600 --weeks 8

The database is migrated, filled by one engine run per week of demo snapshots (oldest first),
and gets the demo users of `csm demo` (password `csm-demo-2026!`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import time
from pathlib import Path

import msgspec

from server.db.migrate import upgrade
from server.db.session import create_engine, session_factory, session_scope
from server.errors import Conflict
from server.services.demo_history import run_demo_history, snapshot_folder
from server.services.users import create_user

ROOT = Path(__file__).resolve().parents[1]
POLICY_DIR = ROOT / "policies"
PASSWORD = "csm-demo-2026!"
STAFF = (
    ("admin@demo.csm", "admin", "Ada Admin"),
    ("ops@demo.csm", "ops", "Otto Ops"),
    ("manager@demo.csm", "manager", "Mia Manager"),
    ("viewer@demo.csm", "viewer", "Vic Viewer"),
)


async def build(
    url: str, snapshots: Path, *, accounts: int, weeks: int, as_of: dt.date, users: bool = True
) -> dict[str, str]:
    """Migrate and fill the database at `url`; returns {email: role} of the users created."""
    await upgrade(url)
    engine = create_engine(url)
    try:
        factory = session_factory(engine)
        await run_demo_history(factory, snapshots, accounts=accounts, as_of=as_of, weeks=weeks, policy_dir=POLICY_DIR)
        if not users:
            return {}
        csms: list[str] = []
        latest = snapshot_folder(snapshots, accounts, as_of)
        with (latest / "accounts.jsonl").open("rb") as handle:
            for line in handle:
                email = msgspec.json.decode(line)["csm"]
                if email not in csms:
                    csms.append(email)
        wanted = [*((email, role, name) for email, role, name in STAFF), *((email, "csm", "") for email in csms[:3])]
        async with session_scope(factory) as session:
            for email, role, name in wanted:
                with contextlib.suppress(Conflict):
                    await create_user(session, email, role, PASSWORD, name)
        return {email: role for email, role, _ in wanted}
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database", type=Path)
    parser.add_argument("--accounts", type=int, default=600)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument(
        "--snapshots", type=Path, default=None, help="Where to keep the snapshots (default: beside the database)."
    )
    args = parser.parse_args()
    started = time.perf_counter()
    snapshots = args.snapshots or args.database.parent / "snapshots"
    today = dt.datetime.now(dt.UTC).date()
    users = asyncio.run(
        build(f"sqlite+aiosqlite:///{args.database}", snapshots, accounts=args.accounts, weeks=args.weeks, as_of=today)
    )
    print(f"{args.database}: {args.accounts} customers, {args.weeks + 1} runs in {time.perf_counter() - started:.1f} s")
    for email, role in users.items():
        print(f"  {email} ({role}) / {PASSWORD}")


if __name__ == "__main__":
    main()
