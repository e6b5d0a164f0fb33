"""How fast the portal's pages are at 10,000 customers on SQLite.

    .venv/bin/python -m bench.portal [--accounts 10000] [--weeks 4] [--requests 50] [--rebuild]

Builds (once; cached under bench/out/) a SQLite database with `--accounts` demo customers and
`--weeks + 1` weekly engine runs (so CHI has history), then signs in and times each page.

What is timed: the whole ASGI request inside the process, through Litestar's AsyncTestClient
(no network, no browser): session authentication, CSRF, the database queries and the template
rendering, i.e. the server's time. Each page gets a few warm-up requests, then `--requests`
timed ones; the table shows p50 / p95 / max in milliseconds against the 300 ms target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from bench.demo_db import build
from server.app import create_app
from server.db.models import Account, ChiPoint, Task
from server.db.session import create_engine, session_factory, session_scope
from server.errors import Conflict
from server.services.demo_history import DEMO_PASSWORD
from server.services.users import create_user
from server.settings import Settings

OUT = Path(__file__).resolve().parent / "out"
TARGET_MS = 300.0
WARMUP = 3


async def ensure_database(accounts: int, weeks: int, rebuild: bool) -> tuple[Path, dt.date]:
    path = OUT / f"portal-{accounts}-{weeks}w.db"
    stamp = path.with_suffix(".as_of")
    if rebuild:
        for candidate in (path, stamp, path.with_suffix(".db-wal"), path.with_suffix(".db-shm")):
            candidate.unlink(missing_ok=True)
    if path.exists() and stamp.exists():
        return path, dt.date.fromisoformat(stamp.read_text().strip())
    OUT.mkdir(parents=True, exist_ok=True)
    as_of = dt.datetime.now(dt.UTC).date()
    started = time.perf_counter()
    print(f"building {path.name}: {accounts:,} customers, {weeks + 1} weekly runs ...", flush=True)
    await build(f"sqlite+aiosqlite:///{path}", OUT / "snapshots", accounts=accounts, weeks=weeks, as_of=as_of)
    stamp.write_text(as_of.isoformat())
    print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
    return path, as_of


async def describe(url: str) -> tuple[dict[str, int], str, str, str]:
    engine = create_engine(url)
    try:
        async with session_scope(session_factory(engine)) as session:
            counts = {
                "customers": await session.scalar(select(func.count()).select_from(Account)) or 0,
                "active tasks": await session.scalar(
                    select(func.count()).select_from(Task).where(Task.active.is_(True))
                )
                or 0,
                "CHI points": await session.scalar(select(func.count()).select_from(ChiPoint)) or 0,
            }
            # a busy customer for the detail tabs, and the CSM with the most customers
            account = await session.scalar(
                select(Task.account_id)
                .where(Task.active.is_(True))
                .group_by(Task.account_id)
                .order_by(func.count().desc(), Task.account_id)
                .limit(1)
            )
            csm = await session.scalar(
                select(Account.csm).group_by(Account.csm).order_by(func.count().desc(), Account.csm).limit(1)
            )
            task_csm = await session.scalar(select(Account.csm).where(Account.id == account))
        return counts, str(account), str(csm), str(task_csm)
    finally:
        await engine.dispose()


async def ensure_users(url: str, emails: set[str]) -> None:
    engine = create_engine(url)
    try:
        async with session_scope(session_factory(engine)) as session:
            for email in sorted(emails):
                with contextlib.suppress(Conflict):
                    await create_user(session, email, "csm", DEMO_PASSWORD)
    finally:
        await engine.dispose()


async def sign_in(client: AsyncTestClient, email: str) -> None:  # type: ignore[type-arg]
    client.cookies.clear()
    page = await client.get("/login")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert token, "sign-in form"
    response = await client.post(
        "/login", data={"email": email, "password": DEMO_PASSWORD, "_csrf_token": token[1]}, follow_redirects=False
    )
    assert response.status_code == 303, f"sign-in as {email} failed: {response.status_code}"


async def measure(client: AsyncTestClient, path: str, count: int, htmx: str = "") -> list[float]:  # type: ignore[type-arg]
    headers = {"HX-Request": "true", "HX-Target": htmx} if htmx else {}
    for _ in range(WARMUP):
        response = await client.get(path, headers=headers, follow_redirects=False)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get(path, headers=headers, follow_redirects=False)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return times


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


async def main_async(args: argparse.Namespace) -> int:
    path, as_of = await ensure_database(args.accounts, args.weeks, args.rebuild)
    url = f"sqlite+aiosqlite:///{path}"
    counts, account, csm, task_csm = await describe(url)
    await ensure_users(url, {csm, task_csm})
    print(", ".join(f"{value:,} {name}" for name, value in counts.items()) + f"; data as of {as_of}")
    settings = Settings.from_env(
        {**os.environ, "CSM_DATABASE_URL": url, "CSM_SECRET_KEY": "bench-secret-key-0123456789abcdef"}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = create_app(settings)
    app.state["today"] = lambda: as_of
    plan: list[tuple[str, str, str, str]] = [
        ("admin@demo.csm", "Overview, all customers (default)", "/", ""),
        (
            "admin@demo.csm",
            "Overview, filter + sort",
            "/?tier=T1&tier=T2&band=At-Risk&band=Critical&sort=acv&dir=desc",
            "",
        ),
        ("admin@demo.csm", "Overview, text + product + renewal", "/?q=tele&product=WAS&renewal=180&sort=renewal", ""),
        ("admin@demo.csm", "Overview, htmx results fragment", "/?band=Critical&sort=name", "results"),
        ("admin@demo.csm", "API /api/customers (50 rows)", "/api/customers?sort=chi", ""),
        ("admin@demo.csm", "Dashboard, all tasks (default)", "/dashboard", ""),
        ("admin@demo.csm", "Dashboard, High + due this week", "/dashboard?severity=High&due=week&sort=due", ""),
        (csm, f"Overview as a CSM ({csm.split('@')[0]})", "/", ""),
        (csm, "Dashboard as a CSM", "/dashboard", ""),
        *(
            (task_csm, f"Detail tab: {tab}", f"/customers/{account}/{tab}", "")
            for tab in ("tasks", "chi", "commercial", "usage", "activity", "retention")
        ),
    ]
    results: list[tuple[str, str, list[float]]] = []
    async with AsyncTestClient(app=app, base_url="http://bench.local") as client:
        signed_in = None
        for user, label, page, htmx in plan:
            if user != signed_in:
                await sign_in(client, user)
                signed_in = user
            results.append((label, page, await measure(client, page, args.requests, htmx)))
    width = max(len(label) for label, _, _ in results)
    print()
    print(
        f"Server time per request, {args.requests} requests each ({WARMUP} warm-up), SQLite, "
        f"{counts['customers']:,} customers; target < {TARGET_MS:.0f} ms"
    )
    print(f"{'page':<{width}}  {'p50 ms':>8}  {'p95 ms':>8}  {'max ms':>8}  ok")
    print("-" * (width + 36))
    slow = 0
    for label, _page, times in results:
        p50, p95 = statistics.median(times), percentile(times, 0.95)
        ok = p95 < TARGET_MS
        slow += not ok
        print(f"{label:<{width}}  {p50:8.1f}  {p95:8.1f}  {max(times):8.1f}  {'yes' if ok else 'NO'}")
    print()
    print(f"customer for the detail tabs: {account}")
    return 1 if slow else 0


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("csm.security").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--weeks", type=int, default=4, help="weeks of history (one run per week)")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rebuild", action="store_true", help="build the database again")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
