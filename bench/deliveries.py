"""How long what goes out after a run takes, at one team's scale (10,000 customers, SQLite).

    .venv/bin/python -m bench.deliveries [--accounts 10000] [--weeks 4] [--rebuild]

Uses the portal benchmark's database (built once, cached under bench/out/), makes every CSM of
the data a user, then times, against local servers on 127.0.0.1:

- the digests: every CSM's email built (the dashboard's queries, templates, CSS inlining) and
  handed to a real SMTP server (aiosmtpd), then the same job again (everything already sent);
- the CRM write-back: every scored customer's score to a fake HubSpot speaking the v3 batch API
  over HTTP (batches of 100), then again with nothing changed.

Each is timed from the call to its return, database writes included; the database is copied
first, so the cached one stays as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import time
import warnings
from pathlib import Path

from sqlalchemy import func, select

from bench.portal import OUT, ensure_database, ensure_users
from server.db.models import Account, Digest, Run, Task
from server.db.session import create_engine, session_factory, session_scope
from server.services.crm import push_health
from server.services.digests import send_digests
from server.settings import Settings
from tests.hubspot_fake import FakeHubSpot, serving
from tests.smtp import smtp_server


async def main_async(args: argparse.Namespace) -> None:
    cached, as_of = await ensure_database(args.accounts, args.weeks, args.rebuild)
    path = OUT / f"deliveries-{args.accounts}.db"
    shutil.copyfile(cached, path)
    url = f"sqlite+aiosqlite:///{path}"
    engine = create_engine(url)
    factory = session_factory(engine)
    try:
        async with session_scope(factory) as session:
            csms = set(await session.scalars(select(Account.csm).distinct()))
            companies = {crm_id for crm_id in await session.scalars(select(Account.crm_id)) if crm_id}
            run_id = await session.scalar(select(func.max(Run.id)))
            active = await session.scalar(select(func.count()).select_from(Task).where(Task.active.is_(True)))
        assert run_id is not None
        await ensure_users(url, csms)
        print(f"{args.accounts:,} customers, {len(csms)} CSMs, {active:,} active tasks; data as of {as_of}")
        rows: list[tuple[str, float, str]] = []
        with smtp_server() as mailbox, serving(FakeHubSpot(companies=companies)) as hubspot:
            env = {**os.environ, "CSM_DATABASE_URL": url, "CSM_SECRET_KEY": "bench-secret-key-0123456789abcdef"}
            env.update(mailbox.env(), CSM_CRM_URL=hubspot.url, CSM_CRM_TOKEN=hubspot.token)
            settings = Settings.from_env(env)
            started = time.perf_counter()
            outcomes = await send_digests(factory, run_id, settings, as_of)
            seconds = time.perf_counter() - started
            sizes = [len(message.as_bytes()) for message in mailbox.messages]
            rows.append(
                (
                    f"digests, {outcomes['sent']} sent",
                    seconds,
                    f"{seconds / max(1, outcomes['sent']) * 1000:.0f} ms each; "
                    f"email {statistics.median(sizes) / 1024:.0f} KB median",
                )
            )
            started = time.perf_counter()
            again = await send_digests(factory, run_id, settings, as_of)
            rows.append(("digests again (all sent already)", time.perf_counter() - started, f"{dict(again)}"))
            started = time.perf_counter()
            pushed = await push_health(factory, run_id, settings)
            seconds = time.perf_counter() - started
            rows.append(
                (
                    f"CRM write-back, {pushed['pushed']:,} companies",
                    seconds,
                    f"{pushed['requests']} requests; {pushed['pushed'] / seconds:,.0f} companies/s",
                )
            )
            started = time.perf_counter()
            unchanged = await push_health(factory, run_id, settings)
            rows.append(
                (
                    "CRM write-back again (nothing changed)",
                    time.perf_counter() - started,
                    f"{unchanged['requests']} requests, {unchanged['unchanged']:,} unchanged",
                )
            )
        async with session_scope(factory) as session:
            sent = await session.scalar(select(func.count()).select_from(Digest).where(Digest.state == "sent"))
        assert sent == len(mailbox.messages), "every digest sent once"
    finally:
        await engine.dispose()
        remove_database(path)
    width = max(len(label) for label, _, _ in rows)
    print()
    print(f"{'after a run':<{width}}  {'seconds':>8}  notes")
    print("-" * (width + 60))
    for label, seconds, note in rows:
        print(f"{label:<{width}}  {seconds:8.2f}  {note}")


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--weeks", type=int, default=4, help="weeks of history (one run per week)")
    parser.add_argument("--rebuild", action="store_true", help="build the database again")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
