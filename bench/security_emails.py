"""What the web server's security-email sender costs: its look at the audit log every 5 seconds.

    .venv/bin/python -m bench.security_emails [--events 1000000] [--days 30]

Builds an audit log of N events over D days (1 in 500 of a kind users are emailed about, each
already emailed: the steady state) on SQLite, and on PostgreSQL when it answers, then times:

- one look with nothing to send (what every `csm serve` process does every 5 seconds), median of 20;
- one look that finds 20 new events and emails them to a real SMTP server (aiosmtpd).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import time
from pathlib import Path

from sqlalchemy import func, insert, select

from server.db.base import utcnow
from server.db.migrate import upgrade
from server.db.models import AuditEvent, SecurityEmail, User
from server.db.session import create_engine, session_factory, session_scope
from server.services.security_emails import EMAILED, send_security_emails
from server.settings import Settings
from tests.services import POSTGRES_URL, PostgresTemplate, reachable
from tests.smtp import smtp_server

OUT = Path(__file__).resolve().parent / "out"
BATCH = 20_000
OTHER_ACTIONS = ("task.state_changed", "task.commented", "auth.login", "export.tasks", "tag.assigned")


async def fill(url: str, events: int, days: int) -> None:
    await upgrade(url)
    engine = create_engine(url)
    factory = session_factory(engine)
    emailed_kinds = sorted(EMAILED)
    rng = random.Random(7)
    now = utcnow()
    try:
        async with session_scope(factory) as session:
            session.add(User(email="user@bench.csm", role="csm", name="Bench", password_hash=None))
        for start in range(0, events, BATCH):
            rows = []
            for number in range(start, min(events, start + BATCH)):
                emailed = number % 500 == 0
                rows.append(
                    {
                        "at": now - dt.timedelta(seconds=rng.uniform(0, days * 86_400)),
                        "actor": "user@bench.csm",
                        "action": rng.choice(emailed_kinds) if emailed else rng.choice(OTHER_ACTIONS),
                        "object_type": "user",
                        "object_id": "user@bench.csm",
                        "outcome": "ok",
                        "detail": {"emailed": True},
                    }
                )
            async with session_scope(factory) as session:
                await session.execute(insert(AuditEvent), rows)
        async with session_scope(factory) as session:  # the steady state: all of them emailed already
            emailed_events = await session.execute(
                select(AuditEvent.id, AuditEvent.action).where(AuditEvent.action.in_(EMAILED))
            )
            marks = [
                {
                    "audit_event_id": event_id,
                    "recipient": "user@bench.csm",
                    "action": action,
                    "state": "sent",
                    "attempts": 1,
                    "created_at": now,
                }
                for event_id, action in emailed_events
            ]
            for start in range(0, len(marks), BATCH):
                await session.execute(insert(SecurityEmail), marks[start : start + BATCH])
    finally:
        await engine.dispose()


async def measure(url: str) -> tuple[float, float, int]:
    engine = create_engine(url)
    factory = session_factory(engine)
    try:
        with smtp_server() as mailbox:
            settings = Settings.from_env({"CSM_DATABASE_URL": url, "CSM_SECRET_KEY": "bench-secret", **mailbox.env()})
            looks = []
            for _ in range(20):
                started = time.perf_counter()
                assert await send_security_emails(factory, settings) == {}
                looks.append(time.perf_counter() - started)
            async with session_scope(factory) as session:
                await session.execute(
                    insert(AuditEvent),
                    [
                        {
                            "actor": None,
                            "action": "auth.new_device",
                            "object_type": "user",
                            "object_id": "user@bench.csm",
                            "outcome": "ok",
                            "detail": {},
                        }
                        for _ in range(20)
                    ],
                )
                total = await session.scalar(select(func.count()).select_from(AuditEvent)) or 0
            started = time.perf_counter()
            sent = await send_security_emails(factory, settings)
            sending = time.perf_counter() - started
            assert sent == {"sent": 20}
            assert len(mailbox.messages) == 20
    finally:
        await engine.dispose()
    return statistics.median(looks), sending, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    OUT.mkdir(parents=True, exist_ok=True)
    database = OUT / f"security-emails-{args.events}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    targets = [("SQLite", f"sqlite+aiosqlite:///{database}")]
    template = PostgresTemplate() if reachable(POSTGRES_URL) else None
    if template is not None:
        targets.append(("PostgreSQL", template.copy()))
    table = Table(title=f"Security-email sender: an audit log of {args.events:,} events over {args.days} days")
    for column in ("database", "events", "filling (s)", "a look, nothing to send (ms)", "a look sending 20 (ms)"):
        table.add_column(column, justify="left" if column == "database" else "right")
    try:
        for name, url in targets:
            started = time.perf_counter()
            asyncio.run(fill(url, args.events, args.days))
            filled = time.perf_counter() - started
            look, sending, total = asyncio.run(measure(url))
            table.add_row(name, f"{total:,}", f"{filled:.0f}", f"{look * 1000:.1f}", f"{sending * 1000:.0f}")
    finally:
        if template is not None:
            template.close()
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
